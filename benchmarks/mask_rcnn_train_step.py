"""Mask R-CNN R-50-FPN train step at the issue's size: an 800x800 padded input, batch 1, COCO's
80 classes (`experiments/mask_rcnn.py:R-50-FPN` with an 800x800 canvas), 2000 proposals, 512
RoIs of which up to 128 foreground ones train the mask head.

Reported: step time, images/s, XLA's FLOP count and its fraction of this machine's measured
matmul FLOP/s (float32 on CPU; on a GPU the step computes in bfloat16 and the peak is
bfloat16's), XLA's temporary memory and the process's peak RSS, and where the step goes: the
convolutional parts timed alone at the step's sizes (ResNet-50-FPN, the RPN head's convs
over P2-P6, the mask head's convs on 128 RoIs; each forward + backward) and the share of the
step outside them (proposal selection, target assignment, RoIAlign, the fc box head, losses,
optimizer).
On CPU no PyTorch reference runs beside it: torchvision's Mask R-CNN would be one, but PyPI's
torchvision wheels carry CUDA kernels that do not load with the CPU torch this machine installs.
On a GPU, torchvision's `maskrcnn_resnet50_fpn` (random weights, 81 classes, the same image and
objects, bfloat16 autocast, SGD momentum) is timed beside ours, and Detectron2's published training
throughput for this model is printed for scale (62 img/s on 8 V100s, fp32, 2 images of about
800x1333 per GPU: 7.75 img/s/GPU; docs/notes/benchmarks.md of facebookresearch/detectron2).

Run: `.venv/bin/python benchmarks/mask_rcnn_train_step.py` (several minutes on 2 CPU cores).
"""
from __future__ import annotations

import resource
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from report import (best_seconds, config_train_step, import_torch, machine, markdown_table,
                    matmul_gflops, step_breakdown, torch_device)
from segattn_jax import compilation
from segattn_jax.backbones.fpn import LEVEL_STRIDES, ResNetFPN
from segattn_jax.layers.rcnn import RegionProposalNetwork
from segattn_jax.models import build_model, compute_dtype
from segattn_jax.models.mask_rcnn import MaskHead
from segattn_jax.train.config import load_experiment

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "mask_rcnn.py"
BATCH, SIZE, OBJECTS, MAX_BOXES, MASK_SIZE = 1, 800, 4, 100, 112
DETECTRON2_IMAGES_PER_S_PER_GPU = 62 / 8  # published: 8 V100s, fp32, ~800x1333, 2 images/GPU


def _config():
    config = load_experiment(EXPERIMENT).get_config("R-50-FPN").unlock()
    config.dataset.preprocess.canvas = (SIZE, SIZE)
    return config


def _batch() -> dict[str, np.ndarray]:
    """A random image with OBJECTS boxes and masks (ellipses in their boxes), padded to
    MAX_BOXES as the pipeline pads them."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, SIZE * 0.6, (BATCH, MAX_BOXES, 2))
    wh = rng.uniform(48, 300, (BATCH, MAX_BOXES, 2))
    grid = (np.arange(MASK_SIZE) + 0.5) / MASK_SIZE - 0.5
    ellipse = (grid[:, None] ** 2 + grid[None] ** 2 <= 0.25).astype(np.float32)
    return {"image": rng.uniform(size=(BATCH, SIZE, SIZE, 3)).astype(np.float32),
            "image_hw": np.array([[SIZE, SIZE]] * BATCH, np.int32),
            "boxes": np.concatenate([xy, xy + wh], -1).astype(np.float32),
            "classes": rng.integers(0, 80, (BATCH, MAX_BOXES)).astype(np.int32),
            "difficult": np.zeros((BATCH, MAX_BOXES), bool),
            "box_valid": np.arange(MAX_BOXES)[None].repeat(BATCH, 0) < OBJECTS,
            "masks": np.broadcast_to(ellipse, (BATCH, MAX_BOXES, MASK_SIZE, MASK_SIZE)).copy()}


def convolution_fns(model) -> dict:
    """The step's convolutional parts alone, forward + backward, at the step's sizes and in the
    step's compute dtype."""
    rng = np.random.default_rng(1)
    dtype = compute_dtype(model.dtype)
    images = jnp.asarray(rng.uniform(size=(BATCH, SIZE, SIZE, 3)), jnp.float32)
    backbone = ResNetFPN(model.depth, model.width, model.fpn_features, frozen_bn=True,
                         dtype=dtype)
    backbone_vars = backbone.init(jax.random.key(0), images[:, :64, :64], train=False)
    num_fg = int(round(model.rois_per_image * model.foreground_fraction)) * BATCH
    regions = jnp.asarray(rng.normal(size=(BATCH, num_fg // BATCH, model.mask_resolution // 2,
                                           model.mask_resolution // 2, model.fpn_features)),
                          jnp.float32)
    head = MaskHead(model.num_classes, model.mask_features, dtype=dtype)
    head_vars = head.init(jax.random.key(1), regions)

    def pyramid_loss(params):
        _, levels = backbone.apply({**backbone_vars, "params": params}, images, train=False)
        return sum(jnp.sum(levels[f"p{k}"] ** 2) for k in range(2, 7))

    levels = [jnp.asarray(rng.normal(size=(BATCH, SIZE // s, SIZE // s, model.fpn_features)),
                          jnp.float32) for s in LEVEL_STRIDES]
    rpn = RegionProposalNetwork(len(model.anchor_ratios), model.fpn_features, dtype=dtype)
    rpn_vars = rpn.init(jax.random.key(2), levels[0])

    def rpn_loss(params):
        outputs = [rpn.apply({"params": params}, level) for level in levels]
        return sum(jnp.sum(o ** 2) + jnp.sum(d ** 2) for o, d in outputs)

    pyramid = compilation.jit(jax.value_and_grad(pyramid_loss))
    proposal = compilation.jit(jax.value_and_grad(rpn_loss))
    mask = compilation.jit(jax.value_and_grad(
        lambda p: jnp.sum(head.apply({"params": p}, regions) ** 2)))
    return {"ResNet-50-FPN fwd + bwd": lambda: jax.block_until_ready(
                pyramid(backbone_vars["params"])),
            "RPN head convs fwd + bwd (P2-P6)": lambda: jax.block_until_ready(
                proposal(rpn_vars["params"])),
            f"mask head convs fwd + bwd ({num_fg} RoIs)": lambda: jax.block_until_ready(
                mask(head_vars["params"]))}


def torchvision_step():
    """torchvision's Mask R-CNN R-50-FPN train step on the same image and objects (blocking fn),
    on a GPU only (see the module docstring), or None."""
    torch = import_torch()
    if torch is None or torch_device(torch) != "cuda":
        return None
    try:
        import torchvision
    except ImportError:
        return None
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=81, min_size=SIZE,
        max_size=SIZE).cuda().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    batch = _batch()
    valid = batch["box_valid"][0]
    boxes = np.clip(batch["boxes"][0][valid], 0, SIZE - 1)
    rows, cols = np.mgrid[:SIZE, :SIZE] + 0.5
    centre, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2
    masks = (((cols[None] - centre[:, 0, None, None]) / half[:, 0, None, None]) ** 2
             + ((rows[None] - centre[:, 1, None, None]) / half[:, 1, None, None]) ** 2 <= 1)
    images = [torch.tensor(batch["image"][0].transpose(2, 0, 1).copy(), device="cuda")]
    targets = [{"boxes": torch.tensor(boxes, device="cuda"),
                "labels": torch.tensor(batch["classes"][0][valid] + 1, dtype=torch.int64,
                                          device="cuda"),
                "masks": torch.tensor(masks.astype(np.uint8), device="cuda")}]

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            losses = model(images, targets)
        loss = sum(losses.values())
        loss.backward()
        optimizer.step()
        return loss.item()

    try:  # an optional reference: a torchvision that cannot run here must not cost our rows
        step()
    except Exception as error:  # noqa: BLE001
        print(f"torchvision reference skipped: {type(error).__name__}: {error}")
        return None
    return step


def run(repeats: int = 2) -> list[dict]:
    config = _config()
    peak = matmul_gflops()
    step, info = config_train_step(config, _batch(), jax.random.key(2))
    convs = convolution_fns(build_model(config.model))  # the module's settings, defaults included
    reference = torchvision_step()
    steps = {"step": step, **convs, **({"torchvision": reference} if reference else {})}
    seconds = best_seconds(steps, repeats)
    rows = step_breakdown(seconds, list(convs), info, batch=BATCH, peak_gflops=peak)
    outside = seconds["step"] - sum(seconds[name] for name in convs)
    rows.append({"part": "outside the convolutions", "ms": 1e3 * outside,
                 "share_of_step": outside / seconds["step"],
                 "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    if reference:
        rows.append({"part": "torchvision maskrcnn_resnet50_fpn train step (same GPU)",
                     "ms": 1e3 * seconds["torchvision"],
                     "images_per_s": BATCH / seconds["torchvision"]})
    if jax.default_backend() == "gpu":
        rows.append({"part": "Detectron2, published (V100, fp32, ~800x1333)",
                     "images_per_s": DETECTRON2_IMAGES_PER_S_PER_GPU})
        rows.append({"part": "peak GPU memory (JAX)", "MiB": _peak_device_mib()})
    return rows


def _peak_device_mib() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return peak / 2**20 if peak is not None else None


def main() -> None:
    print(machine())
    print(f"Mask R-CNN R-50-FPN train step ({SIZE}x{SIZE}, batch {BATCH}, 80 classes); "
          "the convolutional parts timed alone at the step's sizes:")
    print(markdown_table(run()))


if __name__ == "__main__":
    main()
