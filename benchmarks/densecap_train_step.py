"""DenseCap (FCLN) train step at the paper's size: full-width VGG16 to conv5_3 on a 720x720 canvas
(longest side 720), one image per step, 12 anchors per position, 256 sampled regions bilinearly
interpolated to 7x7, fc6/fc7, an LSTM of 512 over phrases of 10 words from a 10k vocabulary
(`experiments/densecap.py:FCLN`).

Reported: step time, images/s, XLA's FLOP count and the achieved fraction of this machine's
measured fp32 matmul FLOP/s, XLA's temporary memory and the process's peak RSS, and the share of
the step outside the convolutions: the VGG16 convolutions' forward + backward timed alone (jitted,
the same input) against the whole step.

Run: `.venv/bin/python benchmarks/densecap_train_step.py` (several minutes on 2 CPU cores).
"""
from __future__ import annotations

import resource
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from report import best_seconds, compiled_train_step, machine, markdown_table, matmul_gflops
from segattn_jax import compilation
from segattn_jax.backbones.vgg import VGG16
from segattn_jax.data.captions import SPECIAL, Vocabulary
from segattn_jax.models import build_model
from segattn_jax.tasks import build_task
from segattn_jax.train.config import load_experiment
from segattn_jax.train.optimizers import make_optimizer
from segattn_jax.train.state import create_train_state

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "densecap.py"
SIDE, REGIONS, MAX_BOXES, VOCAB, WORDS = 720, 30, 64, 10_000, 10


def _config(side: int):
    config = load_experiment(EXPERIMENT).get_config("FCLN").unlock()
    config.dataset.preprocess.canvas = (side, side)
    config.model.dtype = "float32"
    config.task.max_length = WORDS
    return config


def _batch(side: int) -> dict[str, np.ndarray]:
    """A random image with REGIONS region boxes and phrases, padded as the pipeline pads them."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, side * 0.7, (1, MAX_BOXES, 2))
    wh = rng.uniform(32, side * 0.3, (1, MAX_BOXES, 2))
    phrases = rng.integers(len(SPECIAL), VOCAB, (1, MAX_BOXES, WORDS + 2)).astype(np.int32)
    phrases[..., 0], phrases[..., -1] = SPECIAL.index("<start>"), SPECIAL.index("<end>")
    valid = np.arange(MAX_BOXES)[None] < REGIONS
    return {"image": rng.uniform(size=(1, side, side, 3)).astype(np.float32),
            "image_hw": np.array([[side, side]], np.int32),
            "boxes": np.concatenate([xy, xy + wh], -1).astype(np.float32), "box_valid": valid,
            "phrases": phrases, "phrase_truncated": np.zeros((1, MAX_BOXES), bool)}


def steps(side: int = SIDE) -> tuple[dict, dict]:
    """The codebase's train step (compiled, state donated) and the VGG16 convolutions alone."""
    config = _config(side)
    task = build_task(config)
    # What `prepare` derives from a dataset: a vocabulary of VOCAB entries, and the model's size.
    task.vocabulary = Vocabulary(SPECIAL + tuple(f"w{i}" for i in range(VOCAB - len(SPECIAL))))
    task.model = build_model(config.model, vocab_size=VOCAB)
    tx = make_optimizer(config.optimizer, config.train.num_steps)
    batch = jax.tree.map(jnp.asarray, _batch(side))
    state = jax.jit(lambda: create_train_state(task.init_variables(
        jax.random.key(2), task.inputs(batch)), tx))()
    step, info = compiled_train_step(task, tx, state, batch)

    vgg = VGG16(width=task.model.width, first_padding=1, last_layer=task.model.feature_layer)
    params = jax.jit(vgg.init)(jax.random.key(3), batch["image"], train=False)
    convs = compilation.jit(jax.grad(lambda p, x: jnp.sum(vgg.apply(p, x, train=False)[0] ** 2)))
    return ({"step": step, "convolutions": lambda: jax.block_until_ready(
        convs(params, batch["image"]))}, info)


def run(repeats: int = 2, side: int = SIDE) -> list[dict]:
    peak = matmul_gflops()
    fns, info = steps(side)
    seconds = best_seconds(fns, repeats)
    step = seconds["step"]
    return [{"part": "train step", "ms": 1e3 * step, "images_per_s": 1 / step,
             "GFLOP": info["gflop"], "fraction_of_matmul": info["gflop"] / step / peak,
             "xla_temp_MiB": info["xla_temp_mib"],
             "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
            {"part": "VGG16 convolutions fwd + bwd", "ms": 1e3 * seconds["convolutions"],
             "share_of_step": seconds["convolutions"] / step},
            {"part": "outside the convolutions", "ms": 1e3 * (step - seconds["convolutions"]),
             "share_of_step": 1 - seconds["convolutions"] / step}]


def main() -> None:
    print(machine())
    print(f"DenseCap FCLN train step (VGG16 conv5_3, {SIDE}x{SIDE}, 1 image, 256 regions, LSTM "
          f"512, vocabulary {VOCAB}):")
    print(markdown_table(run()))


if __name__ == "__main__":
    main()
