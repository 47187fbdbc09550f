"""RNNsearch-50's train step at the paper's size: 30,000-word shortlists, 620-dim embeddings,
GRUs of 1000 units (each encoder direction and the decoder), alignment 1000, maxout 500,
batch 80, source and target of 50 words; and RNNencdec-50 at the same sizes.

Rows: our train step (the translation task's loss, Adadelta, gradient clipping; the codebase's
own jitted step, every recurrence under `lax.scan`) beside the same network and loss in PyTorch
(CPU, `nn.GRU` for the encoder, a Python loop over target words, autograd, Adadelta):
sequences/s, the step's FLOPs counted by hand as a fraction of this machine's measured fp32
matmul FLOP/s, XLA's temporary memory, and the ratio.

Run: `.venv/bin/python benchmarks/rnnsearch_train_step.py` (a few minutes on 2 CPU cores).
"""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from report import (compiled_train_step, import_torch, machine, markdown_table, matmul_gflops,
                    timed_row)
from segattn_jax.data.captions import SPECIAL, Vocabulary
from segattn_jax.models import build_model
from segattn_jax.tasks import build_task
from segattn_jax.train.config import load_experiment
from segattn_jax.train.optimizers import make_optimizer
from segattn_jax.train.state import create_train_state

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "rnnsearch.py"
BATCH, LENGTH, VOCAB, EMBED, HIDDEN, ALIGN, MAXOUT = 80, 50, 30_000, 620, 1000, 1000, 500
ROWS = ("RNNsearch-50", "RNNencdec-50")


def step_gflop(attention: bool) -> float:
    """FLOPs of one train step, counted by hand (2 per multiply-add, backward = 2x forward): XLA's
    cost analysis counts a scan's body once, not once per step."""
    t, h = LENGTH + 1, HIDDEN  # <start>/<end> around 50 words; teacher forcing reads 51
    gru = 2 * EMBED * 3 * h + 2 * 3 * h * h  # input projections + recurrent, per token
    context = 2 * h if attention else h
    encoder = (2 if attention else 1) * t * gru + (t * 2 * context * ALIGN if attention
                                                   else 2 * h * h)
    per_word = (gru + 2 * context * 3 * h  # decoder GRU and C c_i
                + 2 * (h + EMBED + context) * 2 * MAXOUT + 2 * MAXOUT * VOCAB)
    if attention:
        per_word += 2 * h * ALIGN + t * 2 * ALIGN + t * 2 * context  # W_a s, v_a, sum alpha h
    return 3 * BATCH * (encoder + t * per_word) / 1e9


def _batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    def sentences():
        words = rng.integers(len(SPECIAL), VOCAB, size=(BATCH, LENGTH))
        return np.concatenate([np.full((BATCH, 1), 1), words, np.full((BATCH, 1), 2)], 1)
    return {"source": sentences().astype(np.int32), "target": sentences().astype(np.int32)}


def jax_step(row: str):
    config = load_experiment(EXPERIMENT).get_config(row).unlock()
    config.model.dtype = "float32"
    task = build_task(config)
    vocabulary = Vocabulary(SPECIAL + tuple(f"w{i}" for i in range(VOCAB - len(SPECIAL))))
    task.source_vocabulary = task.target_vocabulary = vocabulary
    task.model = build_model(config.model, source_vocab_size=VOCAB, target_vocab_size=VOCAB)
    tx = make_optimizer(config.optimizer, config.train.num_steps)
    batch = {k: jnp.asarray(v) for k, v in _batch().items()}
    key = jax.random.key(0, impl="rbg")
    state = jax.jit(lambda: create_train_state(task.init_variables(
        key, {"source": batch["source"][:1]}), tx))()
    return compiled_train_step(task, tx, state, batch)


def torch_train_step(torch, attention: bool):
    """The same network, loss and Adadelta step in PyTorch."""
    nn, functional = torch.nn, torch.nn.functional
    context_size = 2 * HIDDEN if attention else HIDDEN

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.source_embedding = nn.Embedding(VOCAB, EMBED)
            self.target_embedding = nn.Embedding(VOCAB, EMBED)
            self.encoder = nn.GRU(EMBED, HIDDEN, batch_first=True, bidirectional=attention)
            if attention:
                self.U_a, self.W_a = nn.Linear(2 * HIDDEN, ALIGN, bias=False), nn.Linear(
                    HIDDEN, ALIGN, bias=False)
                self.v_a = nn.Linear(ALIGN, 1, bias=False)
            else:
                self.V = nn.Linear(HIDDEN, HIDDEN)
            self.W_s = nn.Linear(context_size // (2 if attention else 1), HIDDEN)
            self.decoder = nn.GRUCell(EMBED + context_size, HIDDEN)
            self.U_o = nn.Linear(HIDDEN, 2 * MAXOUT)
            self.V_o = nn.Linear(EMBED, 2 * MAXOUT, bias=False)
            self.C_o = nn.Linear(context_size, 2 * MAXOUT, bias=False)
            self.W_o = nn.Linear(MAXOUT, VOCAB)

        def forward(self, source, target):
            annotations, last = self.encoder(self.source_embedding(source))
            if attention:
                keys = self.U_a(annotations)
                s = torch.tanh(self.W_s(annotations[:, 0, HIDDEN:]))
            else:
                context = torch.tanh(self.V(last[0]))
                s = torch.tanh(self.W_s(context))
            words = self.target_embedding(target[:, :-1])
            outputs = []
            for i in range(words.shape[1]):
                if attention:
                    energy = self.v_a(torch.tanh(keys + self.W_a(s)[:, None]))[..., 0]
                    alpha = torch.softmax(energy, -1)
                    context = torch.einsum("bj,bja->ba", alpha, annotations)
                t = self.U_o(s) + self.V_o(words[:, i]) + self.C_o(context)
                outputs.append(t.view(-1, MAXOUT, 2).amax(-1))
                s = self.decoder(torch.cat([words[:, i], context], -1), s)
            logits = self.W_o(torch.stack(outputs, 1))
            return functional.cross_entropy(logits.reshape(-1, VOCAB), target[:, 1:].reshape(-1),
                                            reduction="sum") / source.shape[0]

    model = Model()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0, rho=0.95, eps=1e-6)
    batch = {k: torch.from_numpy(v.astype(np.int64)) for k, v in _batch().items()}

    def step():
        loss = model(batch["source"], batch["target"])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    return step


def run(repeats: int = 3) -> list[dict]:
    peak = matmul_gflops()
    torch = import_torch()
    rows = []
    for row in ROWS:
        attention = row.startswith("RNNsearch")
        ours, info = jax_step(row)
        rows.append(timed_row(
            row, ours, info, torch_train_step(torch, attention) if torch else None,
            batch=BATCH, unit="sequences", gflop=step_gflop(attention), peak_gflops=peak,
            repeats=repeats))
    return rows


def main() -> None:
    print(machine())
    print(f"RNNsearch / RNNencdec train step (vocabularies {VOCAB}, embed {EMBED}, GRU {HIDDEN}, "
          f"alignment {ALIGN}, maxout {MAXOUT}, batch {BATCH}, {LENGTH} words, float32); "
          "PyTorch side by side:")
    print(markdown_table(run()))


if __name__ == "__main__":
    main()
