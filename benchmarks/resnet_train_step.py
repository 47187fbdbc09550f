"""ResNet-50 train step (224x224, batch 8, 1000 classes): ours (JAX) vs the same network in
PyTorch (`torch_resnet.py`), side by side, the issue's floor being 1.0x PyTorch.

Ours is the codebase's own train step (train/state.py) on `models.classifier.ImageClassifier`
with the `resnet50` backbone (batch norm in training mode), SGD momentum without weight decay on
both sides, one random batch; steps timed in interleaved rounds so both see the same load.
Reported: images/s, XLA's FLOP count and its fraction of this machine's measured matmul FLOP/s,
XLA's temporary memory, PyTorch's images/s and the ratio. PyTorch is optional.

Run: `.venv/bin/python benchmarks/resnet_train_step.py` (a few minutes on 2 CPU cores).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import torch_fcn
import torch_resnet
from report import (config_train_step, import_torch, machine, markdown_table, matmul_gflops,
                    timed_row, torch_device)
from segattn_jax.train.config import load_experiment

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "inception.py"
BATCH, SIZE, CLASSES = 8, 224, 1000


def _config():
    """The Inception table's classifier config with the ResNet-50 backbone and a plain SGD step."""
    config = load_experiment(EXPERIMENT).get_config("Inception-v4").unlock()
    config.model.update(backbone="resnet50", num_classes=CLASSES, aux_logits=False)
    config.optimizer.update(name="sgd", learning_rate=0.1, momentum=0.9, schedule="constant",
                            weight_decay=0.0, grad_clip_norm=0.0)
    return config


def _batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"image": rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)).astype(np.float32),
            "label": rng.integers(0, CLASSES, BATCH).astype(np.int32)}


def torch_step():
    """The same step in PyTorch (blocking fn), or None without torch."""
    torch = import_torch()
    if torch is None:
        return None
    device = torch_device(torch)
    model = torch_resnet.build(torch, num_classes=CLASSES).to(device)
    step = torch_fcn.train_step_fn(torch, model, learning_rate=0.1)
    batch = _batch()
    images = torch.tensor(batch["image"].transpose(0, 3, 1, 2).copy(), device=device)
    labels = torch.tensor(batch["label"].astype(np.int64), device=device)
    return lambda: step(images, labels).item()


def run(repeats: int = 3) -> list[dict]:
    peak = matmul_gflops()
    ours, info = config_train_step(_config(), _batch())
    return [timed_row(f"ResNet-50 {SIZE}x{SIZE} (batch {BATCH})", ours, info, torch_step(),
                      batch=BATCH, peak_gflops=peak, repeats=repeats)]


def main() -> None:
    print(machine())
    print(f"ResNet-50 train step, ours vs PyTorch ({SIZE}x{SIZE}, batch {BATCH}, {CLASSES} "
          "classes, SGD momentum; floor: ratio 1.0):")
    print(markdown_table(run()))


if __name__ == "__main__":
    main()
