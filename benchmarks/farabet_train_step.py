"""Farabet et al.'s multi-scale convnet train step at the paper's size: 320x240 Stanford Background
scenes, 3 scales, stages of 16, 64 and 256 7x7 filters, a linear classifier over the 768
concatenated features, 8 classes, batch 8.

Rows: our train step (the segmentation task's per-pixel cross-entropy, SGD momentum; the
codebase's own jitted step) beside the same network, input normalization and loss in PyTorch
(CPU, autograd, SGD momentum): images/s, XLA's FLOP count as a fraction of this machine's
measured fp32 matmul FLOP/s, XLA's temporary memory, and the ratio (floor: 1.0).

Run: `.venv/bin/python benchmarks/farabet_train_step.py` (about a minute on 2 CPU cores).
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from report import (compiled_train_step, import_torch, machine, markdown_table, matmul_gflops,
                    segmentation_batch, timed_row)
from segattn_jax.ops.images import RGB_TO_YUV
from segattn_jax.tasks import build_task
from segattn_jax.train.config import load_experiment
from segattn_jax.train.optimizers import make_optimizer
from segattn_jax.train.state import create_train_state

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "farabet.py"
BATCH, HEIGHT, WIDTH = 8, 240, 320


def _config():
    config = load_experiment(EXPERIMENT).get_config("multi-scale").unlock()
    config.model.dtype = "float32"
    config.model.dropout_rate = 0.0
    config.optimizer.weight_decay = 0.0
    return config


def jax_step():
    """Initialized on the image alone: the multi-scale row's task also takes superpixels among
    its inputs, which the network does not use."""
    config = _config()
    task = build_task(config)
    tx = make_optimizer(config.optimizer, config.train.num_steps)
    batch = {k: jnp.asarray(v) for k, v in segmentation_batch(
        BATCH, HEIGHT, WIDTH, config.model.num_classes).items()}
    state = jax.jit(lambda: create_train_state(task.init_variables(
        jax.random.key(0), {"image": batch["image"][:1]}), tx))()
    return compiled_train_step(task, tx, state, batch)


def torch_train_step(torch):
    """The same network, normalization and per-pixel loss in PyTorch."""
    nn, functional = torch.nn, torch.nn.functional
    m = _config().model
    yuv_matrix = torch.tensor(RGB_TO_YUV.T)
    taps = torch.arange(m.lcn_size, dtype=torch.float32) - m.lcn_size // 2
    gauss = torch.exp(-0.5 * (taps / (m.lcn_size / 4)) ** 2)
    gauss = gauss / gauss.sum()

    def blur(x):  # separable Gaussian, zero padding, one channel
        pad = m.lcn_size // 2
        x = functional.conv2d(x, gauss.view(1, 1, -1, 1), padding=(pad, 0))
        return functional.conv2d(x, gauss.view(1, 1, 1, -1), padding=(0, pad))

    def normalize(yuv):
        y = yuv[:, :1]
        mass = blur(torch.ones_like(y))
        centred = y - blur(y) / mass
        deviation = torch.sqrt(blur(centred ** 2) / mass)
        floor = deviation.mean(dim=(2, 3), keepdim=True)
        uv = yuv[:, 1:]
        uv = (uv - uv.mean(dim=(2, 3), keepdim=True)) / uv.std(
            dim=(2, 3), keepdim=True, unbiased=False).clamp_min(1e-4)
        return torch.cat([centred / torch.maximum(deviation, floor).clamp_min(1e-4), uv], 1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            widths, k = m.features, m.kernel
            self.convs = nn.ModuleList([nn.Conv2d(c, w, k, padding=k // 2)
                                        for c, w in zip((3, *widths[:-1]), widths)])
            self.classifier = nn.Conv2d(m.scales * widths[-1], m.num_classes, 1)

        def convnet(self, x):
            for i, conv in enumerate(self.convs):
                x = conv(x)
                if i < len(self.convs) - 1:
                    x = functional.max_pool2d(torch.tanh(x), 2)
            return x

        def forward(self, images):
            yuv = torch.einsum("nhwc,cd->ndhw", images, yuv_matrix)
            coarse = (HEIGHT // 4, WIDTH // 4)
            maps = []
            for s in range(m.scales):
                level = yuv if s == 0 else functional.interpolate(
                    yuv, size=(HEIGHT >> s, WIDTH >> s), mode="bilinear", antialias=True)
                features = self.convnet(normalize(level))
                maps.append(features if s == 0 else functional.interpolate(
                    features, size=coarse, mode="bilinear", antialias=True))
            logits = self.classifier(torch.cat(maps, 1))
            return functional.interpolate(logits, size=(HEIGHT, WIDTH), mode="bilinear")

    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    batch = segmentation_batch(BATCH, HEIGHT, WIDTH, m.num_classes)
    images = torch.from_numpy(batch["image"])
    labels = torch.from_numpy(batch["label"].astype(np.int64))

    def step():
        loss = functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def run(repeats: int = 5) -> list[dict]:
    torch = import_torch()
    ours, info = jax_step()
    return [timed_row("multi-scale convnet", ours, info,
                      torch_train_step(torch) if torch else None, batch=BATCH,
                      peak_gflops=matmul_gflops(), repeats=repeats)]


def main() -> None:
    print(machine())
    print(f"Farabet et al.'s multi-scale convnet train step ({WIDTH}x{HEIGHT}, 3 scales, "
          f"batch {BATCH}, float32); PyTorch side by side (floor: ratio 1.0):")
    print(markdown_table(run()))


if __name__ == "__main__":
    main()
