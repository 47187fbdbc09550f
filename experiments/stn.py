r"""Spatial Transformer Networks: Jaderberg, Simonyan, Zisserman, Kavukcuoglu, NIPS 2015,
Table 1 (left): distorted MNIST error %, models x distortions.

Rows: FCN, CNN, ST-FCN-Aff, ST-FCN-Proj, ST-FCN-TPS, ST-CNN-Aff, ST-CNN-Proj, ST-CNN-TPS.
Columns (distortions): R (rotation), RTS (rotation, translation, scale), P (projective), E (elastic).
Paper scale uses TFDS `mnist` as the source digits; ',mini' uses scikit-learn's embedded digits.

  python -m segattn_jax.main train --config experiments/stn.py:ST-CNN-Aff,RTS,mini --workdir runs/st_cnn_rts
  python -m segattn_jax.main table --config experiments/stn.py:RTS,mini --workdir runs/stn_table

Expected on mini (measured, see README): on RTS, ST-CNN error < CNN error.
"""
import ml_collections

from segattn_jax.train.config import base_config, parse_arg, table_cells

COLUMNS = ("R", "RTS", "P", "E")
# Paper, Table 1 (distorted MNIST), error % for R, RTS, P, E.
_PAPER = {
    "FCN": (2.1, 5.2, 3.1, 3.2),
    "CNN": (1.2, 0.8, 1.5, 1.4),
    "ST-FCN-Aff": (1.2, 0.8, 1.5, 2.7),
    "ST-FCN-Proj": (1.3, 0.9, 1.4, 2.6),
    "ST-FCN-TPS": (1.1, 0.8, 1.4, 2.4),
    "ST-CNN-Aff": (0.7, 0.5, 0.8, 1.2),
    "ST-CNN-Proj": (0.8, 0.6, 0.8, 1.3),
    "ST-CNN-TPS": (0.7, 0.5, 0.8, 1.1),
}
ROWS = tuple(_PAPER)
DEFAULT = {"row": "ST-CNN-Aff", "column": "RTS"}
_TRANSFORMS = {"Aff": "affine", "Proj": "projective", "TPS": "tps"}


def table_runs(arg: str) -> list[str]:
    """Every cell, or only the rows/columns `arg` names (e.g. 'RTS,mini': the RTS column)."""
    return table_cells(arg, {"row": ROWS, "column": COLUMNS})


def get_config(arg: str = "ST-CNN-Aff,RTS,mini"):
    names, flags = parse_arg(arg, {"row": ROWS, "column": COLUMNS}, defaults=DEFAULT)
    row, column, mini = names["row"], names["column"], "mini" in flags
    c = base_config()
    c.experiment, c.row, c.column = "stn", row, column
    c.paper = {"error_percent": _PAPER[row][COLUMNS.index(column)]}
    c.table_metrics = ("error_percent",)

    source = "" if mini else "mnist_"
    c.dataset.name = f"distorted_digits/{source}{column.lower()}"
    c.task.name = "classification"
    base, _, transform = row.removeprefix("ST-").partition("-")
    c.model.name = "stn"
    c.model.base = base.lower()
    # A typed reference, so --config.model.transform=affine also works on the FCN/CNN rows.
    c.model.transform = ml_collections.FieldReference(
        _TRANSFORMS[transform] if row.startswith("ST-") else None, field_type=str)
    c.model.num_classes = 10
    c.model.width = 1.0  # scales every hidden size (paper sizes at 1.0)
    c.model.dtype = "auto"  # bfloat16 on GPU/TPU, float32 on CPU

    if mini:
        c.optimizer.name = "adam"
        c.optimizer.learning_rate = 1e-3
        c.optimizer.schedule = "cosine"
        c.train.batch_size = 64
        c.train.num_steps = 600
        c.train.checkpoint_every = 200
        c.eval.batch_size = 128
    else:  # the paper's schedule
        c.optimizer.name = "sgd"
        c.optimizer.momentum = 0.0
        c.optimizer.learning_rate = 0.01
        c.optimizer.schedule = "step"  # divided by 10 every 50k steps
        c.optimizer.decay_at = (1 / 3, 2 / 3)
        c.train.batch_size = 256
        c.train.num_steps = 150_000
        c.train.checkpoint_every = 5000
        c.train.log_every = 200
        c.eval.batch_size = 512
    return c.lock()
