r"""Multi-scale convnet: Farabet, Couprie, Najman & LeCun, "Learning Hierarchical Features for
Scene Labeling", PAMI 2013, Table 1 (Stanford Background, pixel and class accuracy).

Rows: single-scale, multi-scale, multi-scale+superpixels. The last two are one trained run
(`table_run`), evaluated per pixel and with the vote inside Felzenszwalb superpixels. Add ',mini'
for the CPU-sized variant on the embedded `shapes` scenes (64x64, 8 shape classes + background).

  python -m segattn_jax.main train --config experiments/farabet.py:multi-scale,mini --workdir runs/farabet_mini
  python -m segattn_jax.main table --config experiments/farabet.py:mini --workdir runs/farabet_table

Expected on mini (measured, see README): multi-scale > single-scale mean IU, and
multi-scale+superpixels >= multi-scale.

Paper scale: `stanford_background` (manual download: data/stanford_background.py), trained on
folds 2-5 (572 images) and tested on fold 1 (143), at the dataset's 320x240, with the paper's
network (3 scales, stages of 16, 64 and 256 7x7 filters, linear classifier on the 768
concatenated features) and per-pixel cross-entropy; the optimizer and the superpixel parameters
are this codebase's choices (the paper gives neither exactly):

  python -m segattn_jax.main train --config experiments/farabet.py:multi-scale --workdir runs/farabet
"""
from segattn_jax.data.labels import SHAPES_SEMANTIC_CLASSES as NUM_SEMANTIC_CLASSES
from segattn_jax.data.stanford_background import NUM_CLASSES as STANFORD_CLASSES
from segattn_jax.data.stanford_background import fold_split
from segattn_jax.train.config import adam_cosine, base_config, parse_arg, table_cells

# Paper, Table 1 (Stanford Background): pixel accuracy and class accuracy (%), i.e. the mean of
# the per-class accuracies, this codebase's mean_accuracy.
PAPER = {
    "single-scale": dict(pixel_accuracy=66.0, mean_accuracy=56.5),
    "multi-scale": dict(pixel_accuracy=78.8, mean_accuracy=72.4),
    "multi-scale+superpixels": dict(pixel_accuracy=80.4, mean_accuracy=74.56),
}
ROWS = tuple(PAPER)
DEFAULT = {"row": "multi-scale"}
TEST_FOLD = 1


def table_runs(arg: str) -> list[str]:
    """The config arguments of the table's cells (all rows, or those `arg` names), e.g. 'mini'."""
    return table_cells(arg, {"row": ROWS})


def get_config(arg: str = "multi-scale,mini"):
    names, flags = parse_arg(arg, {"row": ROWS}, defaults=DEFAULT)
    row = names["row"]
    mini = "mini" in flags
    c = base_config()
    c.experiment, c.row = "farabet", row
    c.paper = PAPER[row]
    c.table_metrics = ("pixel_accuracy", "mean_accuracy", "mean_iou")
    c.task.name = "segmentation"
    c.model.name = "farabet"
    c.model.scales = 1 if row == "single-scale" else 3
    c.model.kernel = 7
    c.model.hidden = 0
    c.model.lcn_size = 15
    c.model.dtype = "auto"  # bfloat16 on GPU/TPU, float32 on CPU
    if row != "single-scale":
        # One run for both multi-scale rows; the second reads its superpixel metrics.
        c.table_run = "multi-scale"
        c.table_metric_prefix = "superpixels/" if row.endswith("superpixels") else ""
        # (scale, sigma, min_size) of Felzenszwalb-Huttenlocher: on the mini scenes these give
        # ~18 segments of which 99.9% of pixels share their segment's majority class.
        c.dataset.preprocess.superpixels = (100.0, 0.5, 10) if mini else (200.0, 0.8, 50)
    if mini:
        c.dataset.name = "shapes/default"
        c.model.num_classes = NUM_SEMANTIC_CLASSES
        c.model.features = (16, 32, 64)
        adam_cosine(c, 3e-3, warmup_steps=50, grad_clip_norm=1.0)
        c.train.batch_size = 8
        c.train.num_steps = 2500
        c.train.checkpoint_every = 500
        c.eval.batch_size = 50
    else:
        stanford_background_recipe(c)
        c.model.features = (16, 64, 256)
        c.model.dropout_rate = 0.5
    c.train.log_every = 50
    return c.lock()


def stanford_background_recipe(c) -> None:
    """The scene-labeling papers' protocol on Stanford Background (fold 1 held out, 320x240) and
    this codebase's SGD recipe for it; Pinheiro & Collobert's rows (experiments/pinheiro.py)
    train with the same."""
    c.dataset.name = "stanford_background"
    c.dataset.train_split, c.dataset.eval_split = fold_split(TEST_FOLD)
    c.dataset.preprocess.canvas = (240, 320)  # "about 320x240": smaller ones padded, ignored
    c.model.num_classes = STANFORD_CLASSES
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.learning_rate = 1e-2
    c.optimizer.schedule = "step"
    c.optimizer.weight_decay = 1e-5
    c.train.batch_size = 8
    c.train.num_steps = 20_000
    c.train.eval_every = 5000
    c.train.checkpoint_every = 1000
    c.eval.batch_size = 11  # 143 = 13 x 11
