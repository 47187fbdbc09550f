"""Test-session setup: 8 virtual CPU devices (multi-device tests), one XLA compilation cache for
the run, and quiet TensorFlow.

The environment must be set before jax is first imported, hence here. Single-device code is
unaffected: unsharded arrays live on device 0.
"""
import os
import shutil
import tempfile

# Half of the suite's time is XLA compiling (2216 of 4557 s, `tests/compile_report.py`), so the
# tests compile for less work, the product keeps XLA's defaults:
# - LLVM at -O1 instead of XLA's default: the mini FCN-8s train step compiles in 10 s instead of
#   16 s and runs within 5% as fast;
# - XLA:CPU's older fusion emitters instead of the MLIR ones: the mini rows' train steps compile
#   with 20-40% less CPU time (Inception-ResNet-v2 34 -> 20 s, Faster R-CNN 18.5 -> 10.4 s) and
#   run 0-55% slower (FCN-8s 70 -> 90 ms, Show, Attend and Tell 5.9 -> 9.2 ms), a good trade for
#   runs of a few steps.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {TEST_XLA_FLAGS}")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The CLI, resume and checkpoint tests compile the same programs again (a new Experiment, a CLI
# subprocess): one on-disk cache compiles each once. The process that starts the run makes it;
# xdist workers and subprocesses inherit it through the environment. Removed when the run ends;
# a cache the user set is used and kept.
_OWN_XLA_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_XLA_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="segattn_jax_xla_cache_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Small, fast variants of the experiments: tiny registered datasets, slim models, one device
# (the 8 virtual devices share 2 cores; only the sharding tests use them).
_FAST = {"train.batch_size": 8, "eval.batch_size": 8, "train.log_every": 2,
         "train.checkpoint_every": 2, "mesh.data": 1}
FAST_OVERRIDES = {
    "fcn": {**_FAST, "dataset.name": "shapes/tiny", "model.width": 0.0625},
    # shapes/tiny's 32 test scenes, all of them (the mini row slides over the first 64 of 500).
    "patch_classifier": {**_FAST, "dataset.name": "shapes/tiny", "dataset.eval_split": "test"},
    "farabet": {**_FAST, "dataset.name": "shapes/tiny", "model.features": (4, 8, 8)},
    "pinheiro": {**_FAST, "dataset.name": "shapes/tiny", "model.features": ((4,), (8,))},
    # shapes/tiny, 8 proposals per image, 1/16 width (FCN-8s, DeconvNet and their ensemble);
    # from scratch (the mini rows: from the pretrained VGG16).
    "deconvnet": {**_FAST, "requires_init_from": "", "dataset.name": "shapes/tiny",
                  "dataset.proposals.max_proposals": 8,
                  "model.width": 0.0625},
    "stn": {**_FAST, "dataset.name": "distorted_digits/tiny_rts"},
    "inception": {**_FAST, "dataset.name": "distorted_digits/tiny_rts", "model.width": 0.0625,
                  "model.repeats": (1, 1, 1)},
    # shapes/tiny's 32x32 scenes at 64x64 (the mini rows' 2x), 16 selective-search boxes each;
    # from scratch (the mini rows: from the pretrained VGG16).
    "rcnn": {**_FAST, "requires_init_from": "", "dataset.name": "shapes/tiny",
             "dataset.preprocess.canvas": (64, 64),
             "dataset.preprocess.min_side": 64.0, "dataset.preprocess.max_side": 64.0,
             "dataset.proposals.max_proposals": 16, "model.width": 0.0625},
    # Java-free metrics (BLEU, CIDEr; METEOR has its own test) and a small decoder.
    "show_attend_tell": {**_FAST, "dataset.name": "shapes/tiny", "task.java_metrics": False,
                         "model.encoder_channels": (8, 16, 16), "model.embed_dim": 32,
                         "model.lstm_dim": 64, "model.attention_dim": 32},
    # shapes/tiny at 64x64 (2x) from scratch, anchors of 8-64 px, a slim FCLN, Java-free
    # phrase scores.
    "densecap": {**_FAST, "requires_init_from": "", "dataset.name": "shapes/tiny",
                 "dataset.preprocess.canvas": (64, 64), "dataset.preprocess.min_side": 64.0,
                 "dataset.preprocess.max_side": 64.0, "model.anchor_scales": (0.5, 1.0, 2.0, 4.0),
                 "task.phrase_score": "unigram_f1", "model.width": 0.0625, "model.samples": 32,
                 "model.proposals": 20, "model.max_detections": 10, "model.embed_dim": 32,
                 "model.lstm_dim": 64},
    # shapes/tiny's 32x32 scenes at 64x64 (the mini rows' 2x), ResNet-26-FPN at 1/8 width.
    "mask_rcnn": {**_FAST, "dataset.name": "shapes/tiny", "dataset.preprocess.canvas": (64, 64),
                  "dataset.preprocess.min_side": 64.0, "dataset.preprocess.max_side": 64.0,
                  "dataset.preprocess.mask_size": 16, "model.width": 0.125},
    # shapes/tiny's 32x32 scenes at 64x64 with anchors of 16-64 px, VGG16 at 1/16 width, from
    # scratch (the mini rows: 4x, from the pretrained VGG16).
    "mnc": {**_FAST, "requires_init_from": "", "dataset.name": "shapes/tiny",
            "dataset.preprocess.canvas": (64, 64),
            "dataset.preprocess.min_side": 64.0, "dataset.preprocess.max_side": 64.0,
            "dataset.preprocess.mask_size": 16, "model.width": 0.0625,
            "model.anchor_scales": (1.0, 2.0, 4.0), "model.min_proposal_size": 4.0},
    # shapes/tiny's 32x32 scenes at 64x64, 32 grouping regions each, VGG16 at 1/16 on 32 px
    # warps; the test-time CNN in two chunks of 16 regions; from scratch.
    "sds": {**_FAST, "requires_init_from": "", "dataset.name": "shapes/tiny",
            "dataset.preprocess.canvas": (64, 64),
            "dataset.preprocess.min_side": 64.0, "dataset.preprocess.max_side": 64.0,
            "dataset.preprocess.mask_size": 16, "dataset.proposals.max_proposals": 32,
            "model.width": 0.0625, "model.warp_size": 32, "model.context_padding": 2.0,
            "model.rois_per_image": 8, "model.mask_size": 14, "model.overlap_grid": 32,
            "model.proposals_per_chunk": 16, "model.max_detections": 10},
    # shapes/tiny's 32x32 scenes warped to the mini rows' 128x128, detectors at 1/16 width,
    # from scratch (the mini rows: from the pretrained VGG16 or Darknet).
    "single_shot": {**_FAST, "requires_init_from": "", "dataset.name": "shapes/tiny",
                    "model.width": 0.0625},
    # The class of shapes/tiny's largest object, YOLO's first 20 convs at 1/16 width.
    "darknet": {**_FAST, "dataset.name": "shapes/tiny", "model.width": 0.0625},
    # shapes/tiny's 32x32 scenes as they are (the mini rows warp 64x64 ones), VGG16 at 1/16.
    "localization": {**_FAST, "dataset.name": "shapes/tiny", "dataset.preprocess.size": 32,
                     "model.input_size": 32, "model.width": 0.0625},
    # poses/tiny's 48x48 figures, stage 1 at 32x32 and 16x16 joint crops, PoseNets at 1/16.
    "deeppose": {**_FAST, "dataset.name": "poses/tiny", "dataset.preprocess.size": 48,
                 "model.input_size": 32, "model.crop_size": 16, "model.width": 0.0625},
    # The embedded digits' first 360 (tiny_none is 28x28 like the mini rows), 4 glimpses.
    "draw": {**_FAST, "dataset.name": "distorted_digits/tiny_none", "model.steps": 4,
             "model.hidden": 32, "model.latent": 8},
    # The first 360 embedded digits cluttered in 60x60 (as the mini rows), 3 glimpses.
    "draw_cluttered": {**_FAST, "dataset.name": "distorted_digits/tiny_cluttered",
                       "model.steps": 3},
    # The tiny synthetic pair (sentences of 5-20 words), a small RNNsearch, beams of 2.
    "rnnsearch": {**_FAST, "dataset.name": "synthetic_translation/tiny", "task.max_length": 20,
                  "task.beam_size": 2, "model.embed": 16, "model.hidden": 32, "model.maxout": 8,
                  "model.alignment": 16},
    # synthetic_handwriting/tiny (lines of at most 10 characters) cut to 120 points, LSTMs of 16.
    "handwriting": {**_FAST, "dataset.name": "synthetic_handwriting/tiny",
                    "dataset.preprocess.max_points": 120, "dataset.preprocess.max_chars": 10,
                    "task.sample_points": 120, "model.hidden": 16},
}


def without_timing(metrics: dict) -> dict:
    """Eval metrics without the measured times (`seconds_per_image`, ...), which differ between
    runs: what must be identical across resumes, shardings and re-evaluations."""
    return {k: v for k, v in metrics.items() if not k.endswith("seconds_per_image")}


def traced_step(experiment, state, batch) -> tuple[dict, dict]:
    """The shapes of a train step's metrics and of the predictions on `batch`, traced without
    compiling: the check of a paper-scale row whose program differs from one its test compiles
    only in sizes and settings (a compile costs 10-50 s here, a trace a second or two)."""
    _, metrics = jax.eval_shape(experiment.train_step, state, batch)
    predictions = jax.eval_shape(experiment.task.predict, state.variables,
                                 experiment.task.inputs(batch))
    return metrics, predictions


def paper_scale_batch(experiment: str, row: str, data_dir, workdir, **overrides) -> tuple:
    """A paper-scale row's config on fixture data prepared in `data_dir` (batches of 2, one
    device, `overrides`): (its Experiment, not training, and its first training batch), for
    `traced_step`."""
    from segattn_jax.data import pipeline
    from segattn_jax.train import loop
    from segattn_jax.train.config import load_experiment

    config = load_experiment(ROOT / "experiments" / f"{experiment}.py").get_config(row)
    config.update_from_flattened_dict({"dataset.data_dir": str(data_dir), "train.batch_size": 2,
                                       "eval.batch_size": 2, "mesh.data": 1, **overrides})
    run = loop.Experiment(config, workdir, training=False)
    batch = next(pipeline.train_iterator(
        config.dataset.name, config.dataset.train_split, preprocess=run.preprocess,
        global_batch_size=2, seed=0, data_dir=config.dataset.data_dir))
    return run, batch


def step_on_mock_data(config, workdir, monkeypatch, *, training: bool = False,
                      compiled: bool = True):
    """One train step and an evaluation of `config` offline, on TFDS's mocked data (2 examples):
    what the paper-scale rows' tests check. Returns (the training batch, the step's metrics, the
    eval metrics, the Experiment); with `compiled=False` the step is `traced_step`'s: (batch,
    the metrics' shapes, the predictions' shapes, the Experiment)."""
    import tensorflow_datasets as tfds

    from segattn_jax.data import pipeline
    from segattn_jax.train import loop

    config.update_from_flattened_dict({"train.batch_size": 2, "eval.batch_size": 2,
                                       "mesh.data": 1})
    monkeypatch.setattr(pipeline, "num_examples", lambda builder, split: 2)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    with tfds.testing.mock_data(num_examples=2):
        experiment = loop.Experiment(config, workdir, training=training)
        state = experiment.new_state() if compiled else experiment.abstract_state
        batch = next(pipeline.train_iterator(
            config.dataset.name, config.dataset.train_split, preprocess=experiment.preprocess,
            global_batch_size=2, seed=0, data_dir=config.dataset.data_dir,
            extra=config.dataset.extra_train))
        if not compiled:
            return batch, *traced_step(experiment, state, batch), experiment
        state, metrics = experiment.train_step(state, batch)
        return batch, metrics, experiment.evaluate(state.variables), experiment


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> str:
    """One TFDS data_dir per test worker; embedded datasets are generated into it on first use."""
    return str(tmp_path_factory.mktemp("tensorflow_datasets"))


def fast_overrides(name: str, data_dir: str, **overrides) -> dict:
    """The fast overrides of experiment `name` ('a.b' -> value), then `overrides`."""
    return {**FAST_OVERRIDES[name], "dataset.data_dir": data_dir, **overrides}


def experiment_config(name: str, arg: str, data_dir: str, **overrides):
    """experiments/<name>.py:<arg> with `fast_overrides` applied."""
    from segattn_jax.train.config import load_experiment

    config = load_experiment(ROOT / "experiments" / f"{name}.py").get_config(arg)
    config.update_from_flattened_dict(fast_overrides(name, data_dir, **overrides))
    return config


def cli_overrides(name: str, data_dir: str, **overrides) -> list[str]:
    """The same overrides as command-line flags, for subprocess tests of the CLI."""
    return [f"--config.{k}={v}" for k, v in fast_overrides(name, data_dir, **overrides).items()]


def vgg_kernels(params) -> dict:
    """Host copies of the VGG16 backbone's kernels by layer name (the train step donates the
    state's buffers), to see which layers a step changed."""
    import numpy as np
    return {name: np.array(layer["kernel"]) for name, layer in params["backbone"].items()}


def pytest_sessionfinish(session):
    if _OWN_XLA_CACHE:  # the process that made it (xdist workers inherit it, so never own it)
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def coloured_boxes(rng, n: int, size: int = 32) -> dict:
    """Noisy scenes of red (class 1) and green (class 2) boxes: segmenting them needs a model
    to classify colour and to localise, but not to learn shapes, so it learns in seconds (the
    segmentation learning tests' data)."""
    import numpy as np

    images = rng.uniform(0.0, 0.4, (n, size, size, 3)).astype(np.float32)
    labels = np.zeros((n, size, size), np.int32)
    for i in range(n):
        for label in (1, 2):
            h, w = rng.integers(6, 14, 2)
            y, x = rng.integers(0, size - h), rng.integers(0, size - w)
            images[i, y:y + h, x:x + w] = (0.9, 0.1, 0.1) if label == 1 else (0.1, 0.9, 0.1)
            labels[i, y:y + h, x:x + w] = label
    return {"image": images, "label": labels, "valid": np.ones(n, bool)}


def trained_on_coloured_boxes(config, steps: int = 200):
    """(task, variables) after `steps` of the config's train step (train/state.py) on fresh
    batches of 8 coloured-box scenes, and a held-out batch of 32 to evaluate on."""
    import functools

    import numpy as np

    from segattn_jax.tasks import build_task
    from segattn_jax.train.optimizers import make_optimizer
    from segattn_jax.train.state import create_train_state, initial_variables, train_step

    task = build_task(config)
    tx = make_optimizer(config.optimizer, steps)
    rng = np.random.default_rng(0)
    state = create_train_state(
        initial_variables(task, jax.random.key(0), {"image": np.zeros((1, 32, 32, 3))}), tx)
    step = jax.jit(functools.partial(train_step, task, tx, config.seed))
    for _ in range(steps):
        batch = coloured_boxes(rng, 8)
        state, _ = step(state, {"image": batch["image"], "label": batch["label"]})
    return task, state.variables, coloured_boxes(np.random.default_rng(1), 32)
