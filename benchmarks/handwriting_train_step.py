"""Graves 2013's handwriting synthesis network, train step at the paper's size: three LSTMs of
400 units with peepholes and skips, the soft window (10 Gaussians) over a 40-character text,
a 20-component mixture output, lines of 700 points, batch 32; and the prediction network (no
window) at the same sizes.

Rows: our train step (the handwriting task's loss, Graves' centered RMSProp, derivatives clipped
at 10 / 100; the codebase's own jitted step, the recurrence under `lax.scan`) beside the same
network and loss in PyTorch (CPU, a Python loop over the 700 points, autograd, the clipping as
gradient hooks, centered RMSProp): sequences/s, the step's FLOPs counted by hand as a fraction of
this machine's measured fp32 matmul FLOP/s, XLA's temporary memory, and the ratio.

Run: `.venv/bin/python benchmarks/handwriting_train_step.py` (a few minutes on 2 CPU cores).
"""
from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from report import (compiled_train_step, import_torch, machine, markdown_table, matmul_gflops,
                    timed_row)
from segattn_jax.data.handwriting import SYMBOLS
from segattn_jax.tasks import build_task
from segattn_jax.train.config import load_experiment
from segattn_jax.train.optimizers import make_optimizer
from segattn_jax.train.state import create_train_state

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "handwriting.py"
BATCH, POINTS, CHARS, HIDDEN, LAYERS, MIXTURES, WINDOW = 32, 700, 40, 400, 3, 20, 10
ROWS = ("Synthesis", "Prediction")


def step_gflop(synthesis: bool) -> float:
    """FLOPs of one train step, counted by hand (2 per multiply-add, backward = 2x forward)."""
    symbols = len(SYMBOLS) if synthesis else 0
    gates = sum(2 * (3 + (HIDDEN if n else 0) + symbols + HIDDEN) * 4 * HIDDEN
                for n in range(LAYERS))
    window = (2 * HIDDEN * 3 * WINDOW + 2 * CHARS * symbols) if synthesis else 0
    output = 2 * (LAYERS * HIDDEN + symbols) * (1 + 6 * MIXTURES)
    return 3 * BATCH * POINTS * (gates + window + output) / 1e9


def _batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    strokes = rng.normal(size=(BATCH, POINTS, 3)).astype(np.float32)
    strokes[..., 2] = rng.random((BATCH, POINTS)) < 0.05
    return {"strokes": strokes, "points": np.full(BATCH, POINTS, np.int32),
            "text": rng.integers(1, len(SYMBOLS), (BATCH, CHARS)).astype(np.int32),
            "text_length": np.full(BATCH, CHARS, np.int32)}


def jax_step(row: str):
    config = load_experiment(EXPERIMENT).get_config(row).unlock()
    config.model.dtype = "float32"
    task = build_task(config)
    tx = make_optimizer(config.optimizer, config.train.num_steps)
    batch = {k: jnp.asarray(v) for k, v in _batch().items()}
    key = jax.random.key(0, impl="rbg")
    state = jax.jit(lambda: create_train_state(task.init_variables(
        key, {k: v[:1] for k, v in batch.items()}), tx))()
    return compiled_train_step(task, tx, state, batch)


def torch_train_step(torch, synthesis: bool):
    """The same network, loss and optimizer step in PyTorch."""
    nn = torch.nn
    symbols = len(SYMBOLS)

    def clip(tensor, bound):
        if tensor.requires_grad:
            tensor.register_hook(lambda g: g.clamp(-bound, bound))
        return tensor

    class Cell(nn.Module):  # Graves' peephole LSTM (eq. 7-11)
        def __init__(self, inputs):
            super().__init__()
            self.gates = nn.Linear(inputs + HIDDEN, 4 * HIDDEN)
            self.peephole = nn.Parameter(torch.zeros(3, HIDDEN))

        def forward(self, x, state):
            c, h = state
            i, f, g, o = clip(self.gates(torch.cat([x, h], -1)), 10.0).chunk(4, -1)
            c = (torch.sigmoid(f + self.peephole[1] * c) * c
                 + torch.sigmoid(i + self.peephole[0] * c) * torch.tanh(g))
            return c, torch.sigmoid(o + self.peephole[2] * c) * torch.tanh(c)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            extra = symbols if synthesis else 0
            self.cells = nn.ModuleList([Cell(3 + (HIDDEN if n else 0) + extra)
                                        for n in range(LAYERS)])
            self.window = nn.Linear(HIDDEN, 3 * WINDOW)
            self.output = nn.Linear(LAYERS * HIDDEN + extra, 1 + 6 * MIXTURES)

        def forward(self, strokes, text):
            batch = strokes.shape[0]
            inputs = torch.cat([torch.zeros_like(strokes[:, :1]), strokes[:, :-1]], 1)
            one_hot = nn.functional.one_hot(text, symbols).float()
            positions = torch.arange(1, CHARS + 1, dtype=torch.float32)
            states = [(torch.zeros(batch, HIDDEN), torch.zeros(batch, HIDDEN))] * LAYERS
            window = torch.zeros(batch, symbols)
            kappa = torch.zeros(batch, WINDOW)
            features = []
            for t in range(inputs.shape[1]):
                below, outputs = None, []
                for n, cell in enumerate(self.cells):
                    x = [inputs[:, t]] + ([below] if below is not None else [])
                    if synthesis:
                        x.append(window)
                    states[n] = cell(torch.cat(x, -1), states[n])
                    below = states[n][1]
                    outputs.append(below)
                    if synthesis and n == 0:
                        alpha, beta, step = torch.exp(self.window(below)).chunk(3, -1)
                        kappa = kappa + step
                        phi = (alpha[:, None] * torch.exp(
                            -beta[:, None] * (kappa[:, None] - positions[None, :, None]) ** 2)
                        ).sum(-1)
                        window = torch.einsum("bu,bus->bs", phi, one_hot)
                features.append(torch.cat(outputs + ([window] if synthesis else []), -1))
            y = clip(self.output(torch.stack(features, 1)), 100.0)
            return mixture_nll(y, strokes).sum(1).mean()

    def mixture_nll(y, target):
        m = MIXTURES
        e_hat, pi_hat, mu_x, mu_y, s_x, s_y, rho_hat = torch.split(y, [1, m, m, m, m, m, m], -1)
        rho = torch.tanh(rho_hat).clamp(-1 + 1e-6, 1 - 1e-6)
        zx = (target[..., :1] - mu_x) / torch.exp(s_x)
        zy = (target[..., 1:2] - mu_y) / torch.exp(s_y)
        z = zx ** 2 + zy ** 2 - 2 * rho * zx * zy
        log_gauss = (-z / (2 * (1 - rho ** 2)) - math.log(2 * math.pi) - s_x - s_y
                     - 0.5 * torch.log(1 - rho ** 2))
        offset = -torch.logsumexp(torch.log_softmax(pi_hat, -1) + log_gauss, -1)
        end = target[..., 2]
        eos = nn.functional.binary_cross_entropy_with_logits(-e_hat[..., 0], end,
                                                             reduction="none")
        return offset + eos

    model = Model()
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-4, alpha=0.95, eps=1e-4,
                                    momentum=0.9, centered=True)
    batch = {k: torch.from_numpy(v) for k, v in _batch().items()}

    def step():
        loss = model(batch["strokes"], batch["text"].long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def run(repeats: int = 4) -> list[dict]:
    peak = matmul_gflops()
    torch = import_torch()
    rows = []
    for row in ROWS:
        synthesis = row == "Synthesis"
        ours, info = jax_step(row)
        rows.append(timed_row(
            row, ours, info, torch_train_step(torch, synthesis) if torch else None,
            batch=BATCH, unit="sequences", gflop=step_gflop(synthesis), peak_gflops=peak,
            repeats=repeats))
    return rows


def main() -> None:
    print(machine())
    print(f"Graves handwriting train step ({LAYERS} LSTMs of {HIDDEN}, {MIXTURES} mixtures, "
          f"window of {WINDOW} over {CHARS} characters, {POINTS} points, batch {BATCH}, "
          "float32); PyTorch side by side:")
    print(markdown_table(run()))


if __name__ == "__main__":
    main()
