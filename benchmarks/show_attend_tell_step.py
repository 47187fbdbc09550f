"""Show, Attend and Tell's soft-attention decoder at the paper's size: 14x14x512 annotations
(VGG conv features, precomputed as the reference code trains), LSTM 1800, word and context size
512, vocabulary 10k, captions of 20 words (+ <end>), batch 64.

Rows: the train step (the captioning task's loss with the doubly stochastic penalty, Adam; ours
is the codebase's own jitted train step, the decoder under `lax.scan`) beside the same decoder in
PyTorch (CPU, a Python loop over time steps as the reference code's Theano scan unrolls it,
autograd, Adam): sequences/s, the step's FLOPs (counted by hand) as a fraction of this machine's
measured fp32 matmul FLOP/s, XLA's temporary memory, and the ratio (floor: 1.0). Then beam-search decoding
(beam 3, 21 steps, batch 64): captions/s.

Run: `.venv/bin/python benchmarks/show_attend_tell_step.py` (a few minutes on 2 CPU cores).
"""
from __future__ import annotations

import resource
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from report import (best_seconds, compiled_train_step, import_torch, machine, markdown_table,
                    matmul_gflops)
from segattn_jax import compilation
from segattn_jax.data.captions import SPECIAL, Vocabulary
from segattn_jax.models import build_model
from segattn_jax.tasks import build_task
from segattn_jax.train.config import load_experiment
from segattn_jax.train.optimizers import make_optimizer
from segattn_jax.train.state import create_train_state

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "show_attend_tell.py"
BATCH, GRID, CHANNELS, VOCAB, WORDS = 64, 14, 512, 10_000, 20
LSTM, EMBED, ATTENTION = 1800, 512, 512


def decoder_gflop() -> float:
    """FLOPs of one train step, counted by hand (2 per multiply-add, backward = 2x forward): XLA's
    cost analysis counts a scan's body once, not once per step."""
    locations, steps = GRID * GRID, WORDS + 1
    per_step = (2 * LSTM * ATTENTION + 2 * locations * ATTENTION + 2 * locations * CHANNELS
                + 2 * LSTM + 2 * (EMBED + CHANNELS + LSTM) * 4 * LSTM
                + 2 * (LSTM + CHANNELS) * EMBED + 2 * EMBED * VOCAB)
    per_sequence = 2 * locations * CHANNELS * ATTENTION + 2 * 2 * CHANNELS * LSTM
    return 3 * BATCH * (steps * per_step + per_sequence) / 1e9


def _batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    caption = rng.integers(len(SPECIAL), VOCAB, (BATCH, WORDS + 2)).astype(np.int32)
    caption[:, 0], caption[:, -1] = SPECIAL.index("<start>"), SPECIAL.index("<end>")
    return {"image": rng.standard_normal((BATCH, GRID, GRID, CHANNELS)).astype(np.float32),
            "caption": caption}


def jax_steps() -> tuple[dict, dict]:
    """Our train step and beam search on precomputed features (`model.encoder='features'`)."""
    config = load_experiment(EXPERIMENT).get_config("Soft-attention,COCO").unlock()
    config.model.update(encoder="features", dtype="float32")
    config.task.max_length = WORDS
    task = build_task(config)
    # What `prepare` derives from a dataset: a vocabulary of VOCAB entries, and the model's size.
    task.vocabulary = Vocabulary(SPECIAL + tuple(f"w{i}" for i in range(VOCAB - len(SPECIAL))))
    task.model = build_model(config.model, vocab_size=VOCAB)
    tx = make_optimizer(config.optimizer, config.train.num_steps)
    batch = jax.tree.map(jnp.asarray, _batch())
    key = jax.random.key(0, impl="rbg")
    state = jax.jit(lambda: create_train_state(task.init_variables(
        key, {"image": batch["image"][:1]}), tx))()
    variables = jax.tree.map(jnp.copy, state.variables)  # the train step donates the state's
    train, info = compiled_train_step(task, tx, state, batch)
    inputs = {"image": batch["image"]}
    decode = compilation.jit(task.predict).lower(variables, inputs).compile()
    return ({"train step": train,
             "beam search": lambda: jax.block_until_ready(decode(variables, inputs))}, info)


def torch_train_step(torch):
    """The same decoder and loss in PyTorch, one Adam step per call."""
    nn = torch.nn

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.init_memory, self.init_hidden = nn.Linear(CHANNELS, LSTM), nn.Linear(CHANNELS, LSTM)
            self.embed = nn.Embedding(VOCAB, EMBED)
            self.keys = nn.Linear(CHANNELS, ATTENTION)
            self.query = nn.Linear(LSTM, ATTENTION, bias=False)
            self.score = nn.Linear(ATTENTION, 1)
            self.selector = nn.Linear(LSTM, 1)
            self.gates = nn.Linear(EMBED + CHANNELS + LSTM, 4 * LSTM)
            self.out_hidden, self.out_context = nn.Linear(LSTM, EMBED), nn.Linear(CHANNELS, EMBED)
            self.out_words = nn.Linear(EMBED, VOCAB)
            self.dropout = nn.Dropout(0.5)

        def forward(self, features, tokens):
            annotations = features.flatten(1, 2)
            mean = annotations.mean(1)
            memory, hidden = torch.tanh(self.init_memory(mean)), torch.tanh(self.init_hidden(mean))
            keys = self.keys(annotations)
            logits, alphas = [], []
            for t in range(tokens.shape[1]):
                previous = self.embed(tokens[:, t])
                scores = self.score(torch.tanh(keys + self.query(hidden)[:, None]))[..., 0]
                alpha = torch.softmax(scores, -1)
                context = torch.einsum("bl,bld->bd", alpha, annotations)
                context = context * torch.sigmoid(self.selector(hidden))
                i, f, o, g = self.gates(torch.cat([previous, context, hidden], -1)).chunk(4, -1)
                memory = torch.sigmoid(f) * memory + torch.sigmoid(i) * torch.tanh(g)
                hidden = torch.sigmoid(o) * torch.tanh(memory)
                deep = torch.tanh(self.out_hidden(hidden) + previous + self.out_context(context))
                logits.append(self.out_words(self.dropout(deep)))
                alphas.append(alpha)
            return torch.stack(logits, 1), torch.stack(alphas, 1)

    model = Decoder()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    batch = _batch()
    features = torch.from_numpy(batch["image"])
    caption = torch.from_numpy(batch["caption"]).long()

    def step():
        logits, alphas = model(features, caption[:, :-1])
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB),
                                                caption[:, 1:].reshape(-1), reduction="sum")
        penalty = ((1 - alphas.sum(1)) ** 2).sum(-1).mean()
        loss = nll / BATCH + penalty
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def run(repeats: int = 3) -> list[dict]:
    peak = matmul_gflops()
    steps, info = jax_steps()
    torch = import_torch()
    reference = {"torch train step": torch_train_step(torch)} if torch else {}
    seconds = best_seconds({**steps, **reference}, repeats)
    ours = BATCH / seconds["train step"]
    theirs = BATCH / seconds["torch train step"] if torch else None
    gflop = decoder_gflop()
    return [
        {"part": "train step", "sequences_per_s": ours, "GFLOP": gflop,
         "fraction_of_matmul": gflop / seconds["train step"] / peak,
         "torch_fraction_of_matmul": gflop / seconds["torch train step"] / peak if torch else None,
         "xla_temp_MiB": info["xla_temp_mib"], "torch_sequences_per_s": theirs,
         "ratio_vs_torch": ours / theirs if theirs else None},
        {"part": "beam search (3)", "sequences_per_s": BATCH / seconds["beam search"],
         "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
    ]


def main() -> None:
    print(machine())
    print(f"Show, Attend and Tell soft-attention decoder ({GRID}x{GRID}x{CHANNELS} features, "
          f"LSTM {LSTM}, vocabulary {VOCAB}, {WORDS} words, batch {BATCH}, float32); PyTorch "
          "side by side (floor: ratio 1.0):")
    print(markdown_table(run()))


if __name__ == "__main__":
    main()
