"""DeconvNet at the paper's size, ours (JAX) beside the same network in PyTorch.

- Train step: the full-width VGG16 encoder with batch norm, fc6/fc7 as 7x7 and 1x1
  convolutions, the mirrored decoder of max unpooling and 3x3 convolutions with batch norm,
  224x224 crops, batch 2, 21 classes; the segmentation task's pixel cross-entropy and SGD
  momentum (the codebase's own jitted step) vs PyTorch's autograd (CPU): images/s, XLA's FLOP
  count as a fraction of this machine's measured fp32 matmul FLOP/s (floor 0.40), XLA's
  temporary memory, and the ratio (floor 1.0).
- Pooling with switches and unpooling, forward + backward (the gradient w.r.t. the input, for a
  random cotangent), at each of DeconvNet's five pool/unpool pairs at 224x224, batch 2: ours
  (`layers/upsampling.py`: `max_pool_with_argmax` -> `max_unpool(..., window=2)`, as DeconvNet
  calls them) vs `max_pool2d(..., return_indices=True)` -> `max_unpool2d` (ratio, floor 1.0).

Run: `.venv/bin/python benchmarks/deconvnet_train_step.py` (a few minutes on 2 CPU cores).
PyTorch is optional (a reference, never a dependency): without it the torch columns are empty.
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from report import (best_seconds, config_train_step, import_torch, machine, markdown_table,
                    matmul_gflops, segmentation_batch, timed_row)
from segattn_jax import compilation
from segattn_jax.layers.upsampling import max_pool_with_argmax, max_unpool
from segattn_jax.models.deconvnet import DECODER
from segattn_jax.train.config import load_experiment

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "deconvnet.py"
BATCH, SIZE = 2, 224
# VGG16's blocks: (convolutions, width); each ends in a 2x2/2 pool with switches.
ENCODER = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
# (name, batch, size, channels) of the maps each of DeconvNet's pools reduces at 224x224.
POOLS = tuple((f"pool{i}", BATCH, SIZE >> (i - 1), width)
              for i, (_, width) in enumerate(ENCODER, start=1))


def _config():
    config = load_experiment(EXPERIMENT).get_config("DeconvNet").unlock()
    config.model.update(dtype="float32", caffe_input=False)
    config.dataset.proposals.method = ""
    config.optimizer.update(weight_decay=0.0, schedule="constant")
    return config


def jax_step():
    config = _config()
    return config_train_step(config,
                             segmentation_batch(BATCH, SIZE, SIZE, config.model.num_classes))


def torch_train_step(torch):
    """The same network, loss and optimizer in PyTorch (NCHW)."""
    nn, functional = torch.nn, torch.nn.functional
    classes = _config().model.num_classes

    def conv_bn(cin, cout, kernel, padding):
        return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=padding),
                             nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5), nn.ReLU())

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            blocks, cin = [], 3
            for convs, width in ENCODER:
                blocks.append(nn.Sequential(*[conv_bn(cin if i == 0 else width, width, 3, 1)
                                              for i in range(convs)]))
                cin = width
            self.encoder = nn.ModuleList(blocks)
            self.fc = nn.Sequential(conv_bn(512, 4096, 7, 0), conv_bn(4096, 4096, 1, 0))
            self.deconv6 = nn.Sequential(nn.ConvTranspose2d(4096, 512, 7), nn.BatchNorm2d(512),
                                         nn.ReLU())
            decoder, cin = [], 512
            for _, convs in DECODER:
                layers = []
                for _, width in convs:
                    layers.append(conv_bn(cin, width, 3, 1))
                    cin = width
                decoder.append(nn.Sequential(*layers))
            self.decoder = nn.ModuleList(decoder)
            self.score = nn.Conv2d(64, classes, 1)

        def forward(self, x):
            switches = []
            for block in self.encoder:
                x = block(x)
                x, indices = functional.max_pool2d(x, 2, 2, return_indices=True)
                switches.append(indices)
            x = self.deconv6(self.fc(x))
            for block, indices in zip(self.decoder, reversed(switches)):
                x = block(functional.max_unpool2d(x, indices, 2, 2))
            return self.score(x)

    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    batch = segmentation_batch(BATCH, SIZE, SIZE, classes)
    images = torch.from_numpy(batch["image"].transpose(0, 3, 1, 2).copy())
    labels = torch.from_numpy(batch["label"].astype(np.int64))

    def step():
        loss = functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def unpool_rows(torch, repeats: int) -> list[dict]:
    """Pool with switches + unpool, forward and backward, at each DeconvNet pool."""
    rows = []
    for name, batch, size, channels in POOLS:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(batch, size, size, channels)).astype(np.float32)
        cotangent = rng.normal(size=x.shape).astype(np.float32)

        def pool_unpool(x):
            pooled, switches = max_pool_with_argmax(x, 2, 2)
            return max_unpool(pooled, switches, x.shape[1:3], window=2)

        @compilation.jit
        def fwd_bwd(x, cotangent):
            y, vjp = jax.vjp(pool_unpool, x)
            return y, vjp(cotangent)

        xj, cj = jnp.asarray(x), jnp.asarray(cotangent)
        steps = {"ours": lambda: jax.block_until_ready(fwd_bwd(xj, cj))}
        if torch is not None:
            xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
            ct = torch.tensor(cotangent.transpose(0, 3, 1, 2).copy())

            def torch_step():
                pooled, indices = torch.nn.functional.max_pool2d(xt, 2, 2, return_indices=True)
                y = torch.nn.functional.max_unpool2d(pooled, indices, 2, 2)
                (grad,) = torch.autograd.grad(y, xt, ct)
                return grad

            steps["torch"] = torch_step
        seconds = best_seconds(steps, repeats)
        rows.append({"pool": f"{name} {batch}x{size}x{size}x{channels}",
                     "ours_ms": 1e3 * seconds["ours"],
                     "torch_ms": 1e3 * seconds["torch"] if torch is not None else None,
                     "ratio_vs_torch": seconds["torch"] / seconds["ours"]
                     if torch is not None else None})
    return rows


def run(repeats: int = 3) -> tuple[list[dict], list[dict]]:
    torch = import_torch()
    ours, info = jax_step()
    step_rows = [timed_row("DeconvNet", ours, info, torch_train_step(torch) if torch else None,
                           batch=BATCH, peak_gflops=matmul_gflops(), repeats=repeats)]
    return step_rows, unpool_rows(torch, repeats=10)


def main() -> None:
    print(machine())
    step_rows, pool_rows = run()
    print(f"DeconvNet train step ({SIZE}x{SIZE}, batch {BATCH}, full width, float32); PyTorch "
          "side by side (floors: fraction of matmul 0.40, ratio 1.0):")
    print(markdown_table(step_rows))
    print()
    print("max_pool_with_argmax + max_unpool, fwd+bwd, at DeconvNet's pools (floor: ratio 1.0):")
    print(markdown_table(pool_rows))


if __name__ == "__main__":
    main()
