"""DRAW's train step at the paper's MNIST size: 28x28 binary images, T = 64 glimpses, LSTMs of
256 units, 100 latent units per step, batch 100; with attention (2x2 read, 5x5 write) and
without (whole image read, whole canvas written).

Rows: our train step (the generation task's bound, Adam, gradient clipping; the codebase's own
jitted step, the recurrence under `lax.scan`) beside the same network and loss in PyTorch (CPU, a
Python loop over the glimpses, autograd, Adam): sequences/s, the step's FLOPs counted by hand as a
fraction of this machine's measured fp32 matmul FLOP/s, XLA's temporary memory, and the ratio
(floor: 1.0).

Run: `.venv/bin/python benchmarks/draw_train_step.py` (about a minute on 2 CPU cores).
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from report import (compiled_train_step, import_torch, machine, markdown_table, matmul_gflops,
                    timed_row)
from segattn_jax.tasks import build_task
from segattn_jax.train.config import load_experiment
from segattn_jax.train.optimizers import make_optimizer
from segattn_jax.train.state import create_train_state

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "draw.py"
BATCH, SIDE, STEPS, HIDDEN, LATENT = 100, 28, 64, 256, 100
ROWS = {"DRAW": (2, 5), "DRAW-no-attention": (0, 0)}  # (read N, write N); 0: whole image


def step_gflop(read: int, write: int) -> float:
    """FLOPs of one train step, counted by hand (2 per multiply-add, backward = 2x forward): XLA's
    cost analysis counts a scan's body once, not once per step."""
    pixels = SIDE * SIDE
    read_size = 2 * (read * read if read else pixels)
    write_size = write * write if write else pixels
    per_glimpse = (2 * (read_size + HIDDEN) * 4 * HIDDEN + 2 * HIDDEN * 2 * LATENT
                   + 2 * (LATENT + HIDDEN) * 4 * HIDDEN + 2 * HIDDEN * write_size)
    if read:  # window layers and the filterbank products (read x and x^; write the patch)
        per_glimpse += 2 * 2 * HIDDEN * 5 + 2 * 2 * (read * pixels + read * read * SIDE)
        per_glimpse += 2 * (write * write * SIDE + write * pixels)
    return 3 * BATCH * STEPS * per_glimpse / 1e9


def _images() -> np.ndarray:
    return (np.random.default_rng(0).uniform(size=(BATCH, SIDE, SIDE, 1)) > 0.8).astype(np.float32)


def jax_step(row: str):
    config = load_experiment(EXPERIMENT).get_config(row).unlock()
    config.model.dtype = "float32"
    task = build_task(config)
    tx = make_optimizer(config.optimizer, config.train.num_steps)
    batch = {"image": jnp.asarray(_images())}
    key = jax.random.key(0, impl="rbg")
    state = jax.jit(lambda: create_train_state(task.init_variables(
        key, {"image": batch["image"][:1]}), tx))()
    return compiled_train_step(task, tx, state, batch)


def torch_train_step(torch, read: int, write: int):
    """The same network, bound and Adam step in PyTorch."""
    nn, functional = torch.nn, torch.nn.functional

    def filterbank(params, n):
        gx_, gy_, log_sigma2, log_delta_, log_gamma = params.unbind(-1)
        gx, gy = (SIDE + 1) / 2 * (gx_ + 1), (SIDE + 1) / 2 * (gy_ + 1)
        delta = (SIDE - 1) / (n - 1) * torch.exp(log_delta_)
        offsets = torch.arange(n, dtype=torch.float32) - n / 2 + 0.5
        pixels = torch.arange(1, SIDE + 1, dtype=torch.float32)

        def bank(centre):
            means = centre[:, None] + offsets[None] * delta[:, None]
            return torch.softmax(-(pixels[None, None] - means[..., None]) ** 2
                                 / (2 * torch.exp(log_sigma2)[:, None, None]), -1)

        return bank(gx), bank(gy), torch.exp(log_gamma)

    class Draw(nn.Module):
        def __init__(self):
            super().__init__()
            read_size = 2 * (read * read if read else SIDE * SIDE)
            self.encoder = nn.LSTMCell(read_size + HIDDEN, HIDDEN)
            self.posterior = nn.Linear(HIDDEN, 2 * LATENT)
            self.decoder = nn.LSTMCell(LATENT, HIDDEN)
            self.writer = nn.Linear(HIDDEN, write * write if write else SIDE * SIDE)
            if read:
                self.read_window, self.write_window = nn.Linear(HIDDEN, 5), nn.Linear(HIDDEN, 5)

        def forward(self, x, noise):
            batch = x.shape[0]
            canvas = torch.zeros_like(x)
            encoder = (torch.zeros(batch, HIDDEN), torch.zeros(batch, HIDDEN))
            decoder = (torch.zeros(batch, HIDDEN), torch.zeros(batch, HIDDEN))
            kl = 0.0
            for t in range(STEPS):
                error = x - torch.sigmoid(canvas)
                if read:
                    fx, fy, gamma = filterbank(self.read_window(decoder[0]), read)
                    glimpse = [gamma[:, None, None] * fy @ image @ fx.transpose(1, 2)
                               for image in (x, error)]
                    r = torch.cat([g.flatten(1) for g in glimpse], -1)
                else:
                    r = torch.cat([x.flatten(1), error.flatten(1)], -1)
                encoder = self.encoder(torch.cat([r, decoder[0]], -1), encoder)
                mean, log_sigma = self.posterior(encoder[0]).chunk(2, -1)
                z = mean + torch.exp(log_sigma) * noise[t]
                kl = kl + 0.5 * (mean ** 2 + torch.exp(2 * log_sigma) - 2 * log_sigma - 1).sum(-1)
                decoder = self.decoder(z, decoder)
                patch = self.writer(decoder[0])
                if write:
                    fx, fy, gamma = filterbank(self.write_window(decoder[0]), write)
                    patch = patch.view(batch, write, write)
                    canvas = canvas + fy.transpose(1, 2) @ patch @ fx / gamma[:, None, None]
                else:
                    canvas = canvas + patch.view(batch, SIDE, SIDE)
            reconstruction = functional.binary_cross_entropy_with_logits(
                canvas, x, reduction="none").flatten(1).sum(-1)
            return (reconstruction + kl).mean()

    model = Draw()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.from_numpy(_images()[..., 0])

    def step():
        loss = model(x, torch.randn(STEPS, BATCH, LATENT))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        return loss.item()

    return step


def run(repeats: int = 5) -> list[dict]:
    peak = matmul_gflops()
    torch = import_torch()
    rows = []
    for row, (read, write) in ROWS.items():
        ours, info = jax_step(row)
        rows.append(timed_row(
            row, ours, info, torch_train_step(torch, read, write) if torch else None,
            batch=BATCH, unit="sequences", gflop=step_gflop(read, write), peak_gflops=peak,
            repeats=repeats))
    return rows


def main() -> None:
    print(machine())
    print(f"DRAW train step ({SIDE}x{SIDE} binary images, T {STEPS}, LSTM {HIDDEN}, z "
          f"{LATENT}, batch {BATCH}, float32); PyTorch side by side (floor: ratio 1.0):")
    print(markdown_table(run()))


if __name__ == "__main__":
    main()
