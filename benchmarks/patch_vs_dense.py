"""The patch classifier's inference, slid over the image vs convolutionalized (the lectures' point,
experiments/patch_classifier.py): the mini row's net (35x35 patches) labelling a batch of 8
64x64 scenes both ways with the same weights.

Rows: images/s, XLA's GFLOP per image and their fraction of this machine's measured fp32 matmul
FLOP/s, and the dense net's speedup over the sliding window. The sliding window's FLOPs are those
of the classifier on all H x W patches (XLA counts the body of its `lax.map` over rows once).
The two label maps are compared too (they must be identical).

Run: `.venv/bin/python benchmarks/patch_vs_dense.py` (about half a minute on 2 CPU cores).
"""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from report import best_seconds, machine, markdown_table, matmul_gflops, xla_gflop
from segattn_jax import compilation
from segattn_jax.models import build_model
from segattn_jax.models.patch_classifier import PatchClassifier, sliding_window_logits
from segattn_jax.train.config import load_experiment

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "patch_classifier.py"
BATCH, SIDE = 8, 64


def main(repeats: int = 3) -> None:
    config = load_experiment(EXPERIMENT).get_config("mini").unlock()
    config.model.dtype = "float32"
    model = build_model(config.model)
    images = jax.random.uniform(jax.random.key(0), (BATCH, SIDE, SIDE, 3))
    variables = jax.jit(lambda: model.init(jax.random.key(1), images[:1], train=False))()
    ways = {"sliding window": lambda v, x: sliding_window_logits(model, v, x),
            "convolutionalized": lambda v, x: model.apply(v, x, train=False)}
    compiled = {name: compilation.jit(f).lower(variables, images).compile()
                for name, f in ways.items()}
    patches = jax.ShapeDtypeStruct((BATCH * SIDE * SIDE, model.patch_size, model.patch_size, 3),
                                   images.dtype)
    every_patch = jax.jit(lambda v, x: model.apply(v, x, method=PatchClassifier.classify_patches))
    gflop = {"sliding window": xla_gflop(every_patch.lower(variables, patches)),
             "convolutionalized": xla_gflop(compiled["convolutionalized"])}
    logits = {name: f(variables, images) for name, f in compiled.items()}
    maps = [np.argmax(np.asarray(x), -1) for x in logits.values()]
    seconds = best_seconds({name: lambda f=f: f(variables, images).block_until_ready()
                            for name, f in compiled.items()}, repeats)
    peak = matmul_gflops()
    rows = [{"way": name, "patch": f"{model.patch_size}x{model.patch_size}",
             "images_per_s": BATCH / seconds[name],
             "GFLOP_per_image": gflop[name] / BATCH,
             "fraction_of_matmul": gflop[name] / seconds[name] / peak,
             "speedup": seconds["sliding window"] / seconds[name]} for name in ways]
    print(machine())
    print(f"Patch classifier inference, {BATCH} images of {SIDE}x{SIDE}, matmul peak "
          f"{peak:.0f} GFLOP/s; label maps identical: {bool(np.array_equal(*maps))}")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
