"""Pinheiro & Collobert's recurrent convolutional network train step at the paper's size: the
3-instance row of experiments/pinheiro.py (f: 8x8 convolutions of 25 and 50 channels, 2x2 max
pooling and tanh, a linear classifier of 8 classes, applied 3 times to the image and the previous
instance's class probabilities, every pixel labelled in one dense pass) on 320x240 scenes, the
loss on every instance, SGD momentum.

Rows: our train step (the recurrent segmentation task; the codebase's own jitted step) beside the
same network, dense pass and loss in PyTorch (CPU, autograd, SGD momentum): images/s, XLA's FLOP
count as a fraction of this machine's measured fp32 matmul FLOP/s, XLA's temporary memory, and the
ratio. Batch 2, not the recipe's 8: a step of 8 would take about 10 s on 2 CPU cores.

Run: `.venv/bin/python benchmarks/pinheiro_train_step.py` (about a minute on 2 CPU cores).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from report import (config_train_step, import_torch, machine, markdown_table, matmul_gflops,
                    segmentation_batch, timed_row)
from segattn_jax.models.patch_classifier import patch_size
from segattn_jax.train.config import load_experiment

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "pinheiro.py"
BATCH, HEIGHT, WIDTH = 2, 240, 320


def _config():
    config = load_experiment(EXPERIMENT).get_config("3-instances").unlock()
    config.model.dtype = "float32"
    return config


def torch_network(torch, m):
    """Model config `m`'s network in PyTorch, convolutionalized as ours
    (models/patch_classifier.py): the image padded by the patch's half, valid convolutions,
    stride-1 pools whose taps (and the later layers' taps) are dilated by the strides before
    them. Its forward gives every instance's logits (N, K, H, W)."""
    nn, functional = torch.nn, torch.nn.functional
    (width1,), (width2,) = m.features
    size = patch_size(m.features, m.fc6_kernel, m.conv_kernel, m.pool_window)
    frame = ((size - 1) // 2, size // 2)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3 + m.num_classes, width1, m.conv_kernel)
            self.conv2 = nn.Conv2d(width1, width2, m.conv_kernel, dilation=2)
            self.score = nn.Conv2d(width2, m.num_classes, m.fc6_kernel, dilation=4)

        def f(self, x):
            x = functional.pad(x, (frame[0], frame[1], frame[0], frame[1]))
            x = functional.max_pool2d(torch.tanh(self.conv1(x)), m.pool_window, stride=1)
            x = functional.max_pool2d(torch.tanh(self.conv2(x)), m.pool_window, stride=1,
                                      dilation=2)
            return self.score(x)

        def forward(self, images):
            planes = images.new_zeros((images.shape[0], m.num_classes, *images.shape[2:]))
            outputs = []
            for _ in range(m.instances):
                logits = self.f(torch.cat([images, planes], 1))
                outputs.append(logits)
                planes = torch.softmax(logits, 1)
            return outputs

    return Net()


def torch_train_step(torch):
    """The same network, loss (every instance's pixel cross-entropy, summed) and SGD in PyTorch."""
    functional = torch.nn.functional
    config = _config()
    m, optimizer_config = config.model, config.optimizer
    model = torch_network(torch, m)
    optimizer = torch.optim.SGD(model.parameters(), lr=optimizer_config.learning_rate,
                                momentum=optimizer_config.momentum,
                                weight_decay=optimizer_config.weight_decay)
    batch = segmentation_batch(BATCH, HEIGHT, WIDTH, m.num_classes)
    images = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(batch["label"].astype(np.int64))

    def step():
        loss = sum(functional.cross_entropy(logits, labels) for logits in model(images))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def run(repeats: int = 5) -> list[dict]:
    torch = import_torch()
    config = _config()
    ours, info = config_train_step(
        config, segmentation_batch(BATCH, HEIGHT, WIDTH, config.model.num_classes))
    return [timed_row("recurrent convnet, 3 instances", ours, info,
                      torch_train_step(torch) if torch else None, batch=BATCH,
                      peak_gflops=matmul_gflops(), repeats=repeats)]


def main() -> None:
    print(machine())
    print(f"Pinheiro & Collobert's recurrent convnet train step ({WIDTH}x{HEIGHT}, 3 instances, "
          f"batch {BATCH}, float32); PyTorch side by side:")
    print(markdown_table(run()))


if __name__ == "__main__":
    main()
