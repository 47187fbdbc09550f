r"""Command line: train | eval | predict | table.

  python -m segattn_jax.main train   --config experiments/fcn.py:FCN-8s,mini --workdir runs/fcn8s
  python -m segattn_jax.main eval    --config experiments/fcn.py:FCN-8s,mini --workdir runs/fcn8s
  python -m segattn_jax.main predict --config experiments/fcn.py:FCN-8s,mini --workdir runs/fcn8s \
      --images a.png --images b.jpg   # writes overlays to WORKDIR/predictions/
  python -m segattn_jax.main predict --config experiments/handwriting.py:Synthesis,mini \
      --workdir runs/handwriting --text "hello world"   # writes the text by hand
  python -m segattn_jax.main table   --config experiments/fcn.py:mini --workdir runs/fcn_table
  python -m segattn_jax.main table   --config experiments/pinheiro.py:mini --workdir runs/p --seeds=3

Any config field can be overridden: --config.train.num_steps=100 --config.optimizer.learning_rate=3e-4.
"""
from __future__ import annotations

import json
import logging as std_logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow is only the input pipeline

from absl import app, flags, logging  # noqa: E402
from etils import epath  # noqa: E402
from ml_collections import config_flags  # noqa: E402

COMMANDS = ("train", "eval", "predict", "table")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment file and row, e.g. experiments/fcn.py:FCN-8s,mini "
    "(for `table`: experiments/fcn.py:mini).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and pictures go.")
_IMAGES = flags.DEFINE_multi_string("images", [], "`predict`: image files (PNG/JPEG/...).")
_TEXT = flags.DEFINE_multi_string("text", [], "`predict` with a handwriting synthesis network: "
                                  "text to write.")
_COLLECT_ONLY = flags.DEFINE_bool("collect_only", False,
                                  "`table`: only collect finished runs, train nothing.")
_SEEDS = flags.DEFINE_integer("seeds", 1, "`table`: runs per cell (config.seed, +1, ...); "
                              "cells show the mean and the range over them.")


def _train(config, workdir: epath.Path) -> None:
    from segattn_jax.train import loop
    result = loop.train_and_evaluate(config, workdir)
    if result is None:
        return
    print(f"\nFinished {config.experiment} {config.row} {config.column}".rstrip() + ":")
    for k, v in result["eval"].items():
        print(f"  {k}: {v:.4f}")
    print(f"metrics:     {workdir / loop.METRICS_FILE}")
    print(f"checkpoints: {workdir / 'checkpoints'}")
    print(f"pictures:    {workdir / 'pictures'}")
    print(f"tensorboard: tensorboard --logdir {workdir}")


def _eval(config, workdir: epath.Path) -> None:
    from segattn_jax.train import loop
    print(json.dumps(loop.evaluate(config, workdir), indent=2))


def _predict(config, workdir: epath.Path, images: list[str], texts: list[str]) -> None:
    from segattn_jax import predict
    if bool(images) == bool(texts):
        raise ValueError("predict needs image files (--images a.png --images b.jpg) or, for "
                         "handwriting synthesis, text to write (--text 'hello'): one of the two.")
    paths = (predict.write_texts(config, workdir, texts) if texts
             else predict.predict_files(config, workdir, images))
    for path in paths:
        print(f"wrote {path}")


def _table(workdir: epath.Path) -> None:
    from segattn_jax import table
    path, _, arg = config_flags.get_config_filename(flags.FLAGS["config"]).partition(":")
    print(table.run_table(path, arg, workdir,
                          overrides=config_flags.get_override_values(flags.FLAGS["config"]),
                          collect_only=_COLLECT_ONLY.value, seeds=_SEEDS.value))


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"Give one command: {' | '.join(COMMANDS)} (got {argv[1:]}).")
    if _WORKDIR.value is None:
        raise app.UsageError("--workdir is required: where checkpoints, metrics and pictures go.")
    # orbax logs every save step at INFO; keep its warnings, and all of our own INFO lines.
    logging.get_absl_handler().addFilter(
        lambda record: "/orbax/" not in record.pathname or record.levelno >= std_logging.WARNING)
    from segattn_jax.train.mesh import maybe_initialize_distributed
    maybe_initialize_distributed()
    workdir, command = epath.Path(_WORKDIR.value), argv[1]
    if command == "table":
        return _table(workdir)
    config = _CONFIG.value
    if command == "train":
        _train(config, workdir)
    elif command == "eval":
        _eval(config, workdir)
    else:
        _predict(config, workdir, _IMAGES.value, _TEXT.value)


def _explain_bad_config(argv: list[str]) -> str | None:
    """A one-line reason why --config or a --config.KEY override is invalid (None if not found).

    config_flags reports these as tracebacks from inside the config file; redo the two checks here
    to say plainly what is wrong and what is valid.
    """
    from segattn_jax.train.config import load_experiment, unknown_key
    values = {}  # flag name -> value, for --name=value and --name value
    for i, a in enumerate(argv):
        if a.startswith("--config"):
            name, eq, value = a.removeprefix("--").partition("=")
            values[name] = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
    if not values.get("config"):
        return None
    path, _, arg = values.pop("config").partition(":")
    try:
        config = load_experiment(path).get_config(arg) if arg else load_experiment(path).get_config()
    except ValueError as e:
        return str(e)
    for key in values:
        parts = key.split(".")[1:]
        unknown = unknown_key(config, ".".join(parts))
        if unknown:
            depth, node = unknown
            where = ".".join(["config", *parts[:depth]])
            valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(not a group)"
            return f"Unknown config key --{key}: valid keys of {where}: {valid}."
    return None


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001  (absl/config_flags raise many types here)
        sys.exit(f"error: {_explain_bad_config(argv) or str(e).strip().splitlines()[-1]}")


def run() -> None:
    from segattn_jax.train.errors import NoIntactCheckpointError, NonFiniteLossError

    flags.mark_flag_as_required("config")
    try:
        app.run(main, flags_parser=_parse_flags)
    except (ValueError, FileNotFoundError, NonFiniteLossError, NoIntactCheckpointError) as e:
        # Bad input or a diverged run: one clear line (the traceback only with --verbosity=1).
        logging.debug("", exc_info=True)
        logging.flush()
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    run()
