r"""Graves 2013, "Generating Sequences With Recurrent Neural Networks", Tables 3 and 4: the
log-loss (nats per line, -log p(x)) of handwriting prediction and synthesis on IAM-OnDB's
validation set.

Rows: Prediction (three stacked LSTMs with skips and a 20-component mixture density output) and
Synthesis (the same, conditioned on the line's text through the soft window of 10 Gaussians).
Paper scale: IAM-OnDB (data/iam_ondb.py, manual download), trained on its training set, the test
set and the larger validation set, evaluated on the smaller validation set, as the paper; LSTMs of
400 units; Graves' RMSProp (decay 0.95, momentum 0.9, rate 1e-4, epsilon 1e-4); derivatives
clipped at 10 (LSTM) and 100 (output). ',mini' trains on the embedded synthetic_handwriting lines
(data/handwriting.py) with LSTMs of 128 units and Adam.

  python -m segattn_jax.main train --config experiments/handwriting.py:Synthesis,mini \
      --workdir runs/handwriting_mini
  python -m segattn_jax.main predict --config experiments/handwriting.py:Synthesis,mini \
      --workdir runs/handwriting_mini --text "the quick brown fox"
  python -m segattn_jax.main table --config experiments/handwriting.py:mini --workdir runs/hw
"""
from segattn_jax.train.config import base_config, parse_arg, table_cells

# Table 3 (prediction, 3 layers, no regularisation) and Table 4 (synthesis, no regularisation):
# log-loss in nats on the validation set.
PAPER = {
    "Prediction": dict(nll=-1041.0),
    "Synthesis": dict(nll=-1096.9),
}
ROWS = tuple(PAPER)
DEFAULT = {"row": "Synthesis"}


def table_runs(arg: str) -> list[str]:
    """The config arguments of the table's cells (all rows, or those `arg` names), e.g. 'mini'."""
    return table_cells(arg, {"row": ROWS})


def _mini(c) -> None:
    """The embedded lines (6000 train / 600 test, 40 / 10 writers; the 'short' set: up to 16
    characters, about 9 points each), LSTMs of 128 units."""
    c.dataset.name = "synthetic_handwriting/short"
    c.dataset.preprocess.max_points = 200   # longer lines are cut (counted in the log at start)
    c.dataset.preprocess.max_chars = 16
    c.model.hidden = 128
    c.model.window_speed = 0.11  # measured on the short lines: 0.11 characters per point
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "cosine"
    c.train.batch_size = 32
    c.train.num_steps = 3000
    c.train.log_every = 100
    c.train.eval_every = 0
    c.train.checkpoint_every = 500
    c.train.num_pictures = 4
    c.eval.batch_size = 100


def _paper_scale(c) -> None:
    """IAM-OnDB lines, the paper's sizes and optimizer."""
    c.dataset.name = "iam_ondb"
    c.dataset.train_split = "trainset+testset_t+testset_f"
    c.dataset.eval_split = "testset_v"
    c.dataset.preprocess.max_points = 2000  # longer lines are cut (counted in the log at start)
    c.dataset.preprocess.max_chars = 80
    c.model.hidden = 400
    c.model.window_speed = 0.04  # the paper: about 25 pen points per character
    c.optimizer.name = "rmsprop"
    c.optimizer.learning_rate = 1e-4
    c.optimizer.rmsprop_decay = 0.95
    c.optimizer.rmsprop_epsilon = 1e-4
    c.optimizer.rmsprop_centered = True
    c.optimizer.rmsprop_initial_scale = 0.0
    c.optimizer.momentum = 0.9
    c.train.batch_size = 32
    c.train.num_steps = 100_000  # the paper gives no update count
    c.train.log_every = 500
    c.train.eval_every = 10_000
    c.train.checkpoint_every = 5_000
    c.eval.batch_size = 32


def get_config(arg: str = "Synthesis,mini"):
    names, flags = parse_arg(arg, {"row": ROWS}, defaults=DEFAULT)
    row = names["row"]
    c = base_config()
    c.experiment, c.row = "handwriting", row
    c.paper = PAPER[row]
    c.table_metrics = ("nll", "nll_per_point", "window_reaches_end", "window_monotone",
                       "seconds_per_image")
    c.task.name = "handwriting"
    c.task.sample_bias = 1.0      # pictures and the window statistics (the paper shows 0 to 5)
    c.task.sample_points = 0      # set below: max_points
    c.task.prime_line = -1        # `predict --text`: prime with this eval line (-1: no priming)
    c.model.name = "handwriting"
    c.model.synthesis = row == "Synthesis"
    c.model.layers = 3
    c.model.mixtures = 20
    c.model.window_mixtures = 10
    c.model.lstm_gradient_clip = 10.0
    c.model.output_gradient_clip = 100.0
    c.model.dtype = "auto"
    (_mini if "mini" in flags else _paper_scale)(c)
    c.task.sample_points = c.dataset.preprocess.max_points
    return c.lock()
