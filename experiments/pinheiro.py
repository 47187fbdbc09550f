r"""Recurrent convolutional network: Pinheiro & Collobert, "Recurrent Convolutional Neural Networks
for Scene Labeling", ICML 2014 (Stanford Background, pixel and class accuracy).

Rows: 1, 2 and 3 instances of the network (f, f∘f, f∘f∘f), each its own run trained with the loss
on every instance's output. Each run also reports every instance's metrics ('instance_<t>/').
Add ',mini' for the CPU-sized variant on the embedded `shapes` scenes (64x64, 8 shape classes +
background).

  python -m segattn_jax.main train --config experiments/pinheiro.py:2-instances,mini --workdir runs/pinheiro_mini
  python -m segattn_jax.main table --config experiments/pinheiro.py:mini --workdir runs/pinheiro_table

The paper's point: 2 instances > 1 instance in pixel accuracy, 3 >= 2. Measured on mini (README):
86.7 < 87.0 > 86.8; mean IU rises 12.9 < 13.7 < 14.1; over three seeds (`table ... --seeds=3`)
86.6 / 86.8 / 86.6, each row spread over 0.3-0.5 points: not measurable on mini.

Paper scale: `stanford_background` (manual download: data/stanford_background.py), folds 2-5
(572 images) for training and fold 1 (143) for testing at 320x240, with the paper's f (8x8
convolutions, 2x2 pooling, tanh, twice, and a linear classifier of the classes). The widths, the
optimizer and the schedule are this codebase's choices.

  python -m segattn_jax.main train --config experiments/pinheiro.py:3-instances --workdir runs/pinheiro

The paper's Table 1 numbers for its rCNN rows were not at hand offline when these rows were
written: PAPER leaves them empty (the table prints '-') rather than guess them.
"""
from pathlib import Path

from segattn_jax.data.labels import SHAPES_SEMANTIC_CLASSES as NUM_SEMANTIC_CLASSES
from segattn_jax.train.config import (adam_cosine, base_config, load_experiment, parse_arg,
                                      table_cells)

INSTANCES = {"1-instance": 1, "2-instances": 2, "3-instances": 3}
PAPER = {row: {} for row in INSTANCES}
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
        c.model.features = ((8,), (16,))
        adam_cosine(c, 3e-3, warmup_steps=50, grad_clip_norm=1.0)
        c.train.batch_size = 8
        c.train.num_steps = 1500
        c.train.checkpoint_every = 500
        c.eval.batch_size = 50
    else:  # Farabet et al.'s protocol and recipe
        load_experiment(Path(__file__).with_name("farabet.py")).stanford_background_recipe(c)
        c.model.features = ((25,), (50,))
    c.train.log_every = 50
    return c.lock()
