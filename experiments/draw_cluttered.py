r"""DRAW: Gregor et al., ICML 2015, Table 1: classification error (%) on 100x100 cluttered
translated MNIST, DRAW's read attention (8 glimpses) against a two-layer convolutional network.

Rows: CNN (the two-layer convnet: 9x9 and 7x7 convolutions with 2x2 max pooling, as the Spatial
Transformer experiments' CNN baseline, models/stn.py without a transformer) and DRAW (an LSTM of
8 glimpses through DRAW's Gaussian read filterbank, models/draw.DrawClassifier). Paper scale:
`distorted_digits/mnist_cluttered100` (MNIST digits at random places in 100x100 with 8 8x8
pieces of clutter, generated from TFDS `mnist`). ',mini' trains on `distorted_digits/cluttered`:
the embedded digits in 60x60 with 4 pieces of clutter.

  python -m segattn_jax.main train --config experiments/draw_cluttered.py:DRAW,mini \
      --workdir runs/draw_cluttered_mini
  python -m segattn_jax.main table --config experiments/draw_cluttered.py:mini \
      --workdir runs/draw_cluttered_table
"""
import ml_collections

from segattn_jax.train.config import base_config, parse_arg, table_cells

# Table 1 (test error %, cluttered translated MNIST 100x100).
PAPER = {
    "CNN": dict(error_percent=14.35),  # "Convolutional, 2 layers"
    "DRAW": dict(error_percent=3.36),  # 8 glimpses
}
ROWS = tuple(PAPER)
DEFAULT = {"row": "DRAW"}


def table_runs(arg: str) -> list[str]:
    """The config arguments of the table's cells (all rows, or those `arg` names), e.g. 'mini'."""
    return table_cells(arg, {"row": ROWS})


def _mini(c) -> None:
    """The embedded digits cluttered in 60x60 (11,976 training images), LSTM of 128 units, the
    CNN at half width (32 filters per layer: 4x fewer FLOPs on this 2-core machine)."""
    c.dataset.name = "distorted_digits/cluttered"
    if c.model.name == "draw_classifier":
        c.model.hidden = 128
    else:
        c.model.width = 0.5
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "cosine"
    c.train.batch_size = 64
    c.train.num_steps = 1000  # about 5 epochs; the STN mini rows' budget, 600 steps, scaled
    c.train.log_every = 100
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    c.eval.batch_size = 100


def _paper_scale(c) -> None:
    """MNIST cluttered in 100x100 (60k / 10k), LSTM of 256 units. The paper gives no optimizer or
    schedule for this experiment: Adam 1e-4, batches of 100, 100k steps are our choice."""
    c.dataset.name = "distorted_digits/mnist_cluttered100"
    if c.model.name == "draw_classifier":
        c.model.hidden = 256
    c.optimizer.learning_rate = 1e-4
    c.train.batch_size = 100
    c.train.num_steps = 100_000
    c.train.log_every = 500
    c.train.eval_every = 10_000
    c.train.checkpoint_every = 10_000
    c.eval.batch_size = 500


def get_config(arg: str = "DRAW,mini"):
    names, flags = parse_arg(arg, {"row": ROWS}, defaults=DEFAULT)
    row = names["row"]
    c = base_config()
    c.experiment, c.row = "draw_cluttered", row
    c.paper = PAPER[row]
    c.table_metrics = ("error_percent", "seconds_per_image")
    c.task.name = "classification"
    if row == "DRAW":
        c.model.name = "draw_classifier"
        c.model.steps = 8
        c.model.read_size = 12
    else:
        c.model.name = "stn"
        c.model.base = "cnn"
        c.model.transform = ml_collections.FieldReference(None, field_type=str)
        c.model.width = 1.0  # 64 filters per layer
    c.model.num_classes = 10
    c.model.dtype = "auto"
    c.optimizer.name = "adam"
    c.optimizer.grad_clip_norm = 10.0
    (_mini if "mini" in flags else _paper_scale)(c)
    return c.lock()
