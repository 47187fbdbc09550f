"""Inception-v4 and Inception-ResNet-v2 at the paper's size: 299x299, batch 8, full width.

Rows: forward (inference) and train step (`experiments/inception.py` at paper scale: RMSProp,
weight decay, 1001 classes, without the auxiliary head so that both sides run the same network),
for ours in JAX and for Keras' `keras.applications.InceptionResNetV2` (TensorFlow CPU, a
`tf.function` forward and a GradientTape + RMSprop step, 1001 classes) side by side in the same
run: images/s, XLA's FLOP count and the achieved fraction of this machine's measured fp32 matmul
FLOP/s, XLA's temporary memory, and the ratio of our images/s to Keras' (the issue's floor: 1.0).

Run: `.venv/bin/python benchmarks/inception_step.py` (a few minutes on 2 CPU cores).
"""
from __future__ import annotations

import os
import resource
from pathlib import Path

# Before jaxlib loads: XLA warns once per array larger than a heap when a program's temporaries
# come in heaps (`compilation.jit`; Inception's stem), thousands of lines per compile.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from report import (best_seconds, compiled_train_step, machine,  # noqa: E402
                    markdown_table, matmul_gflops, xla_gflop)
from segattn_jax import compilation  # noqa: E402
from segattn_jax.tasks import build_task  # noqa: E402
from segattn_jax.train.config import load_experiment  # noqa: E402
from segattn_jax.train.optimizers import make_optimizer  # noqa: E402
from segattn_jax.train.state import create_train_state  # noqa: E402

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "inception.py"
BATCH, SIZE, CLASSES = 8, 299, 1001


def _batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"image": rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)).astype(np.float32),
            "label": rng.integers(0, CLASSES, BATCH).astype(np.int32)}


def jax_steps(row: str, width: float = 1.0) -> tuple[dict, dict]:
    """({"forward", "train step"}: blocking calls, {GFLOP per call}) for our network."""
    config = load_experiment(EXPERIMENT).get_config(row).unlock()
    config.model.update(dtype="float32", aux_logits=False, width=width)
    task = build_task(config)
    tx = make_optimizer(config.optimizer, config.train.num_steps)
    batch = jax.tree.map(jnp.asarray, _batch())
    key = jax.random.key(0, impl="rbg")  # the default key's init compiles ~5x longer on CPU
    state = jax.jit(lambda: create_train_state(task.init_variables(
        key, {"image": batch["image"][:1]}), tx))()
    variables = jax.tree.map(jnp.copy, state.variables)  # the train step donates the state's
    predict = compilation.jit(task.predict).lower(variables, {"image": batch["image"]}).compile()
    train, info = compiled_train_step(task, tx, state, batch)
    return ({"forward": lambda: jax.block_until_ready(predict(variables,
                                                              {"image": batch["image"]})),
             "train step": train},
            {"forward": xla_gflop(predict), "train step": info["gflop"],
             "xla_temp_MiB": info["xla_temp_mib"]})


def keras_steps() -> dict:
    """Keras' InceptionResNetV2 (random weights) forward and RMSprop train step, TF CPU."""
    import tensorflow as tf

    threads = len(os.sched_getaffinity(0))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    model = keras.applications.InceptionResNetV2(weights=None, classes=CLASSES,
                                                 classifier_activation=None)
    optimizer = keras.optimizers.RMSprop(0.045, rho=0.9, momentum=0.9, epsilon=1.0)
    batch = _batch()
    images, labels = tf.constant(batch["image"]), tf.constant(batch["label"])
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=False)
    def forward(x):
        return model(x, training=False)

    @tf.function(jit_compile=False)
    def train(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                      model.trainable_variables))
        return loss

    return {"forward": lambda: forward(images).numpy(),
            "train step": lambda: train(images, labels).numpy()}


def each_alone(steps: dict, repeats: int) -> dict[str, float]:
    """Each part's best time over `repeats` consecutive calls after an untimed one, one part at a
    time, as inference or training runs it. Alternating the forward with the train step
    (`best_seconds` on both at once, before 2026-12-07) timed each forward right after a step
    that freed 1.7 GiB of temporaries: our Inception-ResNet-v2 forward then took 1512 ms against
    1185 ms alone, Keras' about the same either way (6.59 and 6.37 images/s, two runs)."""
    return {part: best_seconds({part: step}, repeats)[part] for part, step in steps.items()}


def run(repeats: int = 2) -> list[dict]:
    peak = matmul_gflops()
    rows = []
    for row in ("Inception-v4", "Inception-ResNet-v2"):
        steps, info = jax_steps(row)
        seconds = each_alone(steps, repeats)
        reference = each_alone(keras_steps(), repeats) if row == "Inception-ResNet-v2" else None
        for part in steps:
            ours = BATCH / seconds[part]
            rows.append({
                "network": row, "part": part, "images_per_s": ours,
                "GFLOP": info[part],
                "fraction_of_matmul": info[part] / seconds[part] / peak,
                "xla_temp_MiB": info["xla_temp_MiB"] if part == "train step" else None,
                "keras_images_per_s": BATCH / reference[part] if reference else None,
                "ratio_vs_keras": ours * reference[part] / BATCH if reference else None})
    rows[-1]["peak_rss_MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return rows


def main() -> None:
    print(machine())
    print(f"Inception forward and train step ({SIZE}x{SIZE}, batch {BATCH}, full width, "
          "float32); Keras InceptionResNetV2 on TensorFlow CPU side by side (floor: ratio 1.0):")
    print(markdown_table(run()))


if __name__ == "__main__":
    main()
