r"""Recurrent convolutional network: Pinheiro & Collobert, "Recurrent Convolutional Neural Networks
for Scene Labeling", ICML 2014 (Stanford Background, pixel and class accuracy).

Rows: 1, 2 and 3 instances of the network (f, f∘f, f∘f∘f), each its own run trained with the loss
on every instance's output. Each run also reports every instance's metrics ('instance_<t>/').
Add ',mini' for the CPU-sized variant on the embedded `shapes` scenes (64x64, 8 shape classes +
background).

  python -m segattn_jax.main train --config experiments/pinheiro.py:2-instances,mini --workdir runs/pinheiro_mini
  python -m segattn_jax.main table --config experiments/pinheiro.py:mini --workdir runs/pinheiro_table --seeds=3

The paper's point: 2 instances > 1 instance in pixel accuracy, 3 >= 2. Measured on mini (README,
three seeds, mean): 89.0 < 89.7 < 89.9, in every seed (the lowest 2-instance run above the highest
1-instance run); mean IU 18.4 < 21.3 < 22.4.

Paper scale: `stanford_background` (manual download: data/stanford_background.py), folds 2-5
(572 images) for training and fold 1 (143) for testing at 320x240, with the paper's f (8x8
convolutions, 2x2 pooling, tanh, twice, and a linear classifier of the classes). The widths, the
optimizer and the schedule are this codebase's choices.

  python -m segattn_jax.main train --config experiments/pinheiro.py:3-instances --workdir runs/pinheiro

PAPER holds Table 1's "rCNN2 (3 instances)" (80.2 pixel / 69.9 class accuracy), read offline
from a secondary source (see PAPER); the 1- and 2-instance rows' numbers were not found, so those
cells print '-' rather than a guess.
"""
from pathlib import Path

from segattn_jax.data.labels import SHAPES_SEMANTIC_CLASSES as NUM_SEMANTIC_CLASSES
from segattn_jax.train.config import (adam_cosine, base_config, load_experiment, parse_arg,
                                      table_cells)

INSTANCES = {"1-instance": 1, "2-instances": 2, "3-instances": 3}
# Table 1, Stanford Background, "rCNN2 (3 instances)": pixel / class accuracy, read offline from a
# secondary source (a 2016 survey table, lijiancheng0614.github.io "Scene Parsing", whose Pinheiro
# SIFT Flow row 77.7 / 29.8 matches FCN's SIFT Flow table), not from the paper's PDF. The 1- and
# 2-instance rows' numbers were not found, so their cells stay empty rather than guessed.
PAPER = {"1-instance": {}, "2-instances": {},
         "3-instances": dict(pixel_accuracy=80.2, mean_accuracy=69.9)}
ROWS = tuple(INSTANCES)
DEFAULT = {"row": "3-instances"}


def table_runs(arg: str) -> list[str]:
    """The config arguments of the table's cells (all rows, or those `arg` names), e.g. 'mini'."""
    return table_cells(arg, {"row": ROWS})


def get_config(arg: str = "3-instances,mini"):
    names, flags = parse_arg(arg, {"row": ROWS}, defaults=DEFAULT)
    row = names["row"]
    mini = "mini" in flags
    c = base_config()
    c.experiment, c.row = "pinheiro", row
    c.paper = PAPER[row]
    c.table_metrics = ("pixel_accuracy", "mean_accuracy", "mean_iou")
    c.task.name = "recurrent_segmentation"
    c.model.name = "pinheiro"
    c.model.instances = INSTANCES[row]
    c.model.conv_kernel = 8
    c.model.pool_window = 2
    c.model.activation = "tanh"
    c.model.fc6_kernel = 1
    c.model.hidden = 0  # f ends in a linear classifier
    c.model.dtype = "auto"  # bfloat16 on GPU/TPU, float32 on CPU
    if mini:
        c.dataset.name = "shapes/default"
        c.model.num_classes = NUM_SEMANTIC_CLASSES
        # 5x5 convolutions: 16x16 patches, so each instance adds 15 pixels of context (the
        # paper's 8x8 take 4x the time here).
        c.model.conv_kernel = 5
        # A hidden layer before the classifier and 32/64 channels: with 8/16 channels and a
        # linear classifier (README) every row sat within the seed spread of the others.
        c.model.features = ((32,), (64,))
        c.model.hidden = 64
        adam_cosine(c, 3e-3, warmup_steps=50, grad_clip_norm=1.0)
        c.train.batch_size = 8
        c.train.num_steps = 3000
        c.train.checkpoint_every = 500
        c.train.eval_every = 1000  # the table's training curves
        c.eval.batch_size = 50
    else:  # Farabet et al.'s protocol and recipe
        load_experiment(Path(__file__).with_name("farabet.py")).stanford_background_recipe(c)
        c.model.features = ((25,), (50,))
    c.train.log_every = 50
    return c.lock()
