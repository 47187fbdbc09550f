"""Single-shot detectors' train steps at the papers' sizes, batch 2, 21 classes: SSD300 (full
VGG16 with the atrous fc6/fc7, the extra layers, 8732 default boxes, matching + hard negative
mining, SGD momentum) beside the same architecture, loss and optimizer written in PyTorch; and
YOLO (24 conv layers + 2 fc, 448x448).

Reported: images/s, XLA's FLOP count as a fraction of this machine's measured fp32 matmul
FLOP/s, XLA's temporary memory, the process's peak RSS, and (SSD300) PyTorch's images/s and
the ratio, timed in interleaved rounds; then SSD300's network alone, forward and backward, ours
and PyTorch's (`network_passes`).

Run: `.venv/bin/python benchmarks/single_shot_train_step.py` (a few minutes on 2 CPU cores).
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from report import (best_seconds, config_train_step, import_torch, machine, markdown_table,
                    matmul_gflops, timed_row)
from segattn_jax import compilation
from segattn_jax.models import build_model
from segattn_jax.models.ssd import ASPECT_RATIOS, EXTRA_LAYERS, default_box_scales, default_boxes
from segattn_jax.tasks import build_task
from segattn_jax.train.config import load_experiment
from segattn_jax.train.state import initial_variables

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "single_shot.py"
BATCH, OBJECTS, MAX_BOXES, CLASSES = 2, 3, 64, 20
ROWS = ("SSD300", "YOLO")


def _config(row: str):
    config = load_experiment(EXPERIMENT).get_config(row).unlock()
    config.model.dtype = "float32"
    return config


def _batch(size: int) -> dict[str, np.ndarray]:
    """Random images with OBJECTS boxes each, padded to MAX_BOXES as the pipeline pads them."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, size * 0.6, (BATCH, MAX_BOXES, 2))
    wh = rng.uniform(size * 0.1, size * 0.4, (BATCH, MAX_BOXES, 2))
    valid = np.arange(MAX_BOXES)[None].repeat(BATCH, 0) < OBJECTS
    return {"image": rng.uniform(size=(BATCH, size, size, 3)).astype(np.float32),
            "image_hw": np.full((BATCH, 2), size, np.int32),
            "boxes": np.concatenate([xy, xy + wh], -1).astype(np.float32),
            "classes": rng.integers(0, CLASSES, (BATCH, MAX_BOXES)).astype(np.int32),
            "difficult": np.zeros((BATCH, MAX_BOXES), bool), "box_valid": valid}


def jax_step(row: str):
    config = _config(row)
    return config_train_step(config, _batch(config.model.input_size))


def torch_ssd300(torch):
    """SSD300 in PyTorch: NCHW, `nn.Conv2d`, ceil-mode pool3, L2Norm, the extras and 3x3 heads."""
    nn, F = torch.nn, torch.nn.functional
    ratios = ASPECT_RATIOS["ssd300"]

    class SSD300(nn.Module):
        def __init__(self):
            super().__init__()
            layers, channels = [], 3
            for stage, widths in enumerate(((64, 64), (128, 128), (256, 256, 256),
                                            (512, 512, 512), (512, 512, 512))):
                for features in widths:
                    layers += [nn.Conv2d(channels, features, 3, padding=1), nn.ReLU()]
                    channels = features
                if stage == 3:
                    self.conv4_3 = nn.Sequential(*layers)
                    layers = []
                if stage < 4:
                    layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            self.conv5 = nn.Sequential(  # pool4, conv5_1-3, pool5 3x3/1, fc6, fc7
                *layers, nn.MaxPool2d(3, 1, padding=1),
                nn.Conv2d(512, 1024, 3, padding=6, dilation=6), nn.ReLU(),
                nn.Conv2d(1024, 1024, 1), nn.ReLU())
            self.scale = nn.Parameter(torch.full((512,), 20.0))
            self.extras = nn.ModuleList()
            channels = 1024
            for reduce, features, kernel, stride, padding in EXTRA_LAYERS["ssd300"]:
                self.extras.append(nn.Sequential(
                    nn.Conv2d(channels, reduce, 1), nn.ReLU(),
                    nn.Conv2d(reduce, features, kernel, stride, padding), nn.ReLU()))
                channels = features
            sources = (512, 1024, *(spec[1] for spec in EXTRA_LAYERS["ssd300"]))
            boxes = [2 + 2 * len(r) for r in ratios]
            self.classes = nn.ModuleList(nn.Conv2d(c, a * (CLASSES + 1), 3, padding=1)
                                         for c, a in zip(sources, boxes))
            self.offsets = nn.ModuleList(nn.Conv2d(c, a * 4, 3, padding=1)
                                         for c, a in zip(sources, boxes))

        def forward(self, x):
            x = self.conv4_3(x)
            sources = [F.normalize(x, dim=1) * self.scale[None, :, None, None]]
            x = self.conv5(x)
            sources.append(x)
            for extra in self.extras:
                x = extra(x)
                sources.append(x)
            flat = lambda head, s, k: head(s).permute(0, 2, 3, 1).reshape(s.shape[0], -1, k)
            return (torch.cat([flat(h, s, CLASSES + 1) for h, s in zip(self.classes, sources)], 1),
                    torch.cat([flat(h, s, 4) for h, s in zip(self.offsets, sources)], 1))

    return SSD300()


def torch_ssd300_step(torch):
    """`torch_ssd300`, the MultiBox loss (best default box per object + IoU >= 0.5, variances
    0.1 / 0.2, smooth L1, softmax loss with 3:1 hard negatives over N) and SGD momentum."""
    F = torch.nn.functional
    model_config = build_model(_config("SSD300").model)
    ratios = ASPECT_RATIOS["ssd300"]
    defaults = torch.from_numpy(np.array(default_boxes(
        [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)], 300,
        default_box_scales(len(ratios)), ratios)))

    def iou(a, b):
        top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
        bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
        overlap = (bottom_right - top_left).clamp(min=0).prod(-1)
        area = lambda x: (x[:, 2:] - x[:, :2]).clamp(min=0).prod(-1)
        return overlap / (area(a)[:, None] + area(b)[None] - overlap)

    def encode(gt, anchors):
        wh, gwh = anchors[:, 2:] - anchors[:, :2], gt[:, 2:] - gt[:, :2]
        center = (anchors[:, :2] + anchors[:, 2:]) / 2
        gcenter = (gt[:, :2] + gt[:, 2:]) / 2
        return torch.cat([(gcenter - center) / wh / 0.1, torch.log(gwh / wh) / 0.2], 1)

    def multibox_loss(logits, offsets, batch):
        labels, targets = [], []
        for i in range(BATCH):
            valid = batch["box_valid"][i]
            gt, gt_classes = batch["boxes"][i][valid], batch["classes"][i][valid]
            overlaps = iou(defaults, gt)
            best, matched = overlaps.max(1)
            best[overlaps.argmax(0)] = 1.0  # each object's best default box
            matched[overlaps.argmax(0)] = torch.arange(len(gt))
            labels.append(torch.where(best >= model_config.match_threshold,
                                      gt_classes[matched] + 1, 0))
            targets.append(encode(gt[matched], defaults))
        labels, targets = torch.stack(labels), torch.stack(targets)
        positive = labels > 0
        count = positive.sum().clamp(min=1)
        box = F.smooth_l1_loss(offsets[positive], targets[positive], reduction="sum")
        ce = F.cross_entropy(logits.reshape(-1, CLASSES + 1), labels.reshape(-1),
                             reduction="none").reshape(labels.shape)
        ranked = ce.detach().masked_fill(positive, -1.0)
        rank = ranked.argsort(1, descending=True).argsort(1)
        negatives = rank < 3 * positive.sum(1, keepdim=True)
        return (ce[positive | negatives].sum() + box) / count

    model = torch_ssd300(torch)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    numpy_batch = _batch(300)
    batch = {k: torch.from_numpy(v) for k, v in numpy_batch.items()}
    batch["classes"] = batch["classes"].long()
    images = batch["image"].permute(0, 3, 1, 2).contiguous()

    def step():
        logits, offsets = model(images)
        loss = multibox_loss(logits, offsets, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def run(repeats: int = 3) -> list[dict]:
    peak = matmul_gflops()
    torch = import_torch()
    rows = []
    for row in ROWS:
        ours, info = jax_step(row)
        reference = torch_ssd300_step(torch) if torch and row == "SSD300" else None
        rows.append(timed_row(f"{row} (batch {BATCH})", ours, info, reference, batch=BATCH,
                              peak_gflops=peak, repeats=repeats))
    return rows


def network_passes(repeats: int = 3) -> list[dict]:
    """SSD300's network alone (no loss, no optimizer), ours and PyTorch's, ms: the forward, and
    forward + backward of a weighted sum of its outputs, timed in interleaved rounds. Says
    whether the step's gap is in the forward, the backward, or outside the network."""
    torch = import_torch()
    task = build_task(_config("SSD300"))
    inputs = task.inputs(jax.tree.map(jnp.asarray, _batch(300)))
    images, variables = inputs["image"], initial_variables(task, jax.random.key(0), inputs)

    def outputs_sum(params, images):
        logits, offsets, _ = task.model.apply({**variables, "params": params}, images,
                                              method="raw_outputs")
        return 1e-3 * (jnp.sum(logits) + jnp.sum(offsets))

    forward = compilation.jit(lambda params: outputs_sum(params, images))
    backward = compilation.jit(jax.grad(lambda params: outputs_sum(params, images)))
    steps = {"ours_fwd": lambda: forward(variables["params"]).block_until_ready(),
             "ours_fwd_bwd": lambda: jax.block_until_ready(backward(variables["params"]))}
    if torch is not None:
        model = torch_ssd300(torch)
        torch_images = torch.from_numpy(np.asarray(images).transpose(0, 3, 1, 2).copy())

        def torch_forward():
            with torch.no_grad():
                model(torch_images)

        def torch_forward_backward():
            model.zero_grad()
            logits, offsets = model(torch_images)
            (1e-3 * (logits.sum() + offsets.sum())).backward()

        steps.update(torch_fwd=torch_forward, torch_fwd_bwd=torch_forward_backward)
    return [{"pass": name, "ms": 1e3 * seconds}
            for name, seconds in best_seconds(steps, repeats).items()]


def main() -> None:
    print(machine())
    print(f"Single-shot detectors' train steps (SSD300 on VGG16, 300x300; YOLO, 448x448; batch "
          f"{BATCH}, {CLASSES} classes, float32); PyTorch's SSD300 side by side:")
    print(markdown_table(run()))
    print(f"SSD300's network alone, batch {BATCH}, ms (best of 3):")
    print(markdown_table(network_passes(), digits=0))


if __name__ == "__main__":
    main()
