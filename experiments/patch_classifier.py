r"""The sliding-window patch classifier vs the same network convolutionalized: the lectures' first
segmentation idea, and FCN's answer to it (Long et al., CVPR 2015, Sec. 3.1-3.2).

One run trains the classifier of a 35x35 patch's centre pixel on the embedded `shapes` scenes
(64x64, 8 shape classes + background), convolutionalized so that each step trains on every patch
of its images. Evaluation labels the test images both ways with the same weights; the table's two
rows are those two evaluations of that one run.

  python -m segattn_jax.main train --config experiments/patch_classifier.py:mini --workdir runs/patch_mini
  python -m segattn_jax.main table --config experiments/patch_classifier.py:mini --workdir runs/patch_table

Expected (measured, see README): the two rows identical, 0 differing pixels; the speed of each
way is `benchmarks/patch_vs_dense.py`'s. No paper reports a table for this idea, so the paper
columns are empty, and there is no paper-scale row.
"""
from segattn_jax.data.labels import SHAPES_SEMANTIC_CLASSES as NUM_SEMANTIC_CLASSES
from segattn_jax.train.config import adam_cosine, base_config, parse_arg, table_cells

# Row -> the task's metric prefix for that way of labelling.
WAYS = {"sliding-window": "sliding_window", "convolutionalized": "convolutionalized"}
ROWS = tuple(WAYS)
DEFAULT = {"row": "convolutionalized"}


def table_runs(arg: str) -> list[str]:
    """The config arguments of the table's cells (all rows, or those `arg` names), e.g. 'mini'."""
    return table_cells(arg, {"row": ROWS})


def get_config(arg: str = "mini"):
    names, flags = parse_arg(arg, {"row": ROWS}, defaults=DEFAULT)
    row = names["row"]
    if "mini" not in flags:
        raise ValueError("The patch classifier has no paper-scale row (no paper reports a table "
                         "for it); use experiments/patch_classifier.py:mini.")
    c = base_config()
    c.experiment, c.row = "patch_classifier", row
    c.table_metrics = ("pixel_accuracy", "mean_iou", "differing_pixels")
    c.table_run = "patch_classifier"  # both rows evaluate the one trained run
    c.table_metric_prefix = WAYS[row] + "/"

    c.dataset.name = "shapes/default"
    # The sliding window runs the classifier 4096 times per 64x64 image (~1 s each here): the
    # first 64 test scenes keep its evaluation to about a minute.
    c.dataset.eval_split = "test[:64]"
    c.task.name = "patch_segmentation"
    c.model.name = "patch_classifier"
    c.model.num_classes = NUM_SEMANTIC_CLASSES  # background + the shape classes
    c.model.features = ((8, 8), (16, 16))  # with fc6_kernel 5: 35x35 patches
    c.model.fc6_kernel = 5
    c.model.hidden = 32
    c.model.dropout_rate = 0.0
    c.model.dtype = "auto"  # bfloat16 on GPU/TPU, float32 on CPU

    adam_cosine(c, 3e-3, warmup_steps=50, grad_clip_norm=1.0)

    c.train.batch_size = 8
    c.train.num_steps = 1500
    c.train.log_every = 50
    c.train.eval_every = 0
    c.train.checkpoint_every = 250
    c.eval.batch_size = 16
    return c.lock()
