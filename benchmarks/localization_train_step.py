"""Localization-as-regression train steps at the papers' sizes, batch 2, float32:
classification + localization (VGG16 at 224x224 with 1000-way fc8 and a per-class box layer,
softmax + L2 loss, SGD momentum) beside the same network, loss and optimizer in PyTorch; and
DeepPose (the AlexNet-style PoseNet at 220x220: stage 1 alone, beside PyTorch's, and the
3-stage cascade, whose later stages run on 14 joint crops per image).

Reported: images/s, XLA's FLOP count as a fraction of this machine's measured fp32 matmul
FLOP/s, XLA's temporary memory, the process's peak RSS, and PyTorch's images/s and the ratio
(timed in interleaved rounds).

Run: `.venv/bin/python benchmarks/localization_train_step.py` (a few minutes on 2 CPU cores).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from report import (config_train_step, import_torch, machine, markdown_table, matmul_gflops,
                    timed_row)
from segattn_jax.backbones.vgg import vgg16_layer_specs
from segattn_jax.metrics.pose import NUM_JOINTS
from segattn_jax.train.config import load_experiment

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
BATCH = 2


def _config(experiment: str, arg: str, **overrides):
    config = load_experiment(EXPERIMENTS / f"{experiment}.py").get_config(arg).unlock()
    config.model.dtype = "float32"
    config.update_from_flattened_dict(overrides)
    return config


def _localization_batch(size: int, classes: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, size / 2, (BATCH, 2))
    box = np.concatenate([corner, corner + rng.uniform(size / 8, size / 2, (BATCH, 2))], -1)
    return {"image": rng.uniform(size=(BATCH, size, size, 3)).astype(np.float32),
            "label": rng.integers(0, classes, BATCH).astype(np.int32),
            "box": box.astype(np.float32), "boxes": box[:, None].astype(np.float32),
            "box_valid": np.ones((BATCH, 1), bool), "has_box": np.ones(BATCH, bool)}


def _pose_batch(size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"image": rng.uniform(size=(BATCH, size, size, 3)).astype(np.float32),
            "joints": rng.uniform(size * 0.2, size * 0.8, (BATCH, NUM_JOINTS, 2)).astype(np.float32),
            "visible": np.ones((BATCH, NUM_JOINTS), bool)}


def _sgd_step(torch, model, loss_fn, images, lr: float = 1e-3):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    def step():
        loss = loss_fn(model(images))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def torch_localization_step(torch, batch: dict[str, np.ndarray], classes: int):
    """VGG16 (224x224, fc6 as a 7x7 fc over pool5), fc8 and a per-class box layer; softmax +
    10 x L2 on the true class's box."""
    nn = torch.nn

    class ClassLoc(nn.Module):
        def __init__(self):
            super().__init__()
            layers, channels = [], 3
            for spec in vgg16_layer_specs(first_padding=1):
                if spec.name.startswith("fc"):
                    break
                if spec.kind == "pool":
                    layers.append(nn.MaxPool2d(2, 2))
                else:
                    layers += [nn.Conv2d(channels, spec.features, 3, padding=1), nn.ReLU()]
                    channels = spec.features
            self.features = nn.Sequential(*layers)
            self.fc = nn.Sequential(nn.Flatten(), nn.Linear(512 * 7 * 7, 4096), nn.ReLU(),
                                    nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(),
                                    nn.Dropout(0.5))
            self.fc8 = nn.Linear(4096, classes)
            self.box = nn.Linear(4096, 4 * classes)

        def forward(self, x):
            features = self.fc(self.features(x))
            return self.fc8(features), self.box(features).view(-1, classes, 4)

    images = torch.tensor(batch["image"]).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor(batch["label"], dtype=torch.long)
    target = torch.tensor(batch["box"]) / 224.0

    def loss_fn(outputs):
        logits, boxes = outputs
        chosen = boxes[torch.arange(BATCH), labels]
        return (nn.functional.cross_entropy(logits, labels)
                + 10.0 * 0.5 * ((chosen - target) ** 2).sum(-1).mean())

    return _sgd_step(torch, ClassLoc(), loss_fn, images)


def torch_posenet_step(torch, batch: dict[str, np.ndarray]):
    """DeepPose's stage 1 (220x220): C(96, 11/4) LRN P C(256, 5) LRN P C(384) C(384) C(256) P
    F4096 F4096 F28, L2 on normalized joints. torch's LRN divides alpha by the window size, so
    it gets 5 x 1e-4 to match ours."""
    nn = torch.nn

    def conv(cin, cout, k, stride=1):
        return [nn.Conv2d(cin, cout, k, stride, padding=k // 2), nn.ReLU()]

    pool = [nn.MaxPool2d(3, 2, padding=1)]
    lrn = [nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)]
    model = nn.Sequential(*conv(3, 96, 11, 4), *lrn, *pool, *conv(96, 256, 5), *lrn, *pool,
                          *conv(256, 384, 3), *conv(384, 384, 3), *conv(384, 256, 3), *pool,
                          nn.Flatten(), nn.Linear(256 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(4096, 2 * NUM_JOINTS))
    images = torch.tensor(batch["image"]).permute(0, 3, 1, 2).contiguous()
    target = torch.tensor(batch["joints"]).view(BATCH, -1) / 220.0 - 0.5
    return _sgd_step(torch, model, lambda out: ((out - target) ** 2).sum(-1).mean(), images)


def run(repeats: int = 3) -> list[dict]:
    peak = matmul_gflops()
    torch = import_torch()
    classes = 1000
    loc_batch = _localization_batch(224, classes)
    pose_batch = _pose_batch(220)
    cases = [
        ("class+loc PCR, VGG16 224", _config("localization", "PCR"), loc_batch,
         (lambda: torch_localization_step(torch, loc_batch, classes)) if torch else None),
        # Stage 1 reads the 220 px crop as it is (no resize): the same input as PyTorch's.
        ("DeepPose stage 1, 220", _config("deeppose", "stage1", **{"model.stages": 1}),
         pose_batch, (lambda: torch_posenet_step(torch, pose_batch)) if torch else None),
        ("DeepPose 3 stages, 220", _config("deeppose", "stage3"), pose_batch, None),
    ]
    rows = []
    for name, config, batch, reference in cases:
        ours, info = config_train_step(config, batch)
        rows.append(timed_row(f"{name} (batch {BATCH})", ours, info,
                              reference() if reference else None, batch=BATCH, peak_gflops=peak,
                              repeats=repeats))
    return rows


def main() -> None:
    print(machine())
    print(f"Localization as regression, train steps (batch {BATCH}, float32, SGD momentum); "
          "PyTorch side by side:")
    print(markdown_table(run()))


if __name__ == "__main__":
    main()
