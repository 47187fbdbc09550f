r"""FCN-32s / FCN-16s / FCN-8s: Long, Shelhamer, Darrell, "Fully Convolutional Networks for
Semantic Segmentation", CVPR 2015, Table 2 (PASCAL VOC 2011 seg11valid).

Rows: FCN-32s, FCN-16s, FCN-8s. Add ',mini' for the CPU-sized variant on the embedded `shapes` data
(slim VGG16, 64x64 scenes, 8 shape classes + background); the paper-scale VOC rows arrive with the VOC dataset.

  python -m segattn_jax.main train --config experiments/fcn.py:FCN-8s,mini --workdir runs/fcn8s_mini
  python -m segattn_jax.main table --config experiments/fcn.py:mini --workdir runs/fcn_table

Expected on mini (measured, see README): mean IU FCN-8s > FCN-16s > FCN-32s.
"""
from segattn_jax.data.shapes import NUM_SEMANTIC_CLASSES
from segattn_jax.train.config import base_config, parse_arg, table_cells

# Paper, Table 2 (seg11valid): pixel acc., mean acc., mean IU, f.w. IU (%).
PAPER = {
    "FCN-32s": dict(pixel_accuracy=89.1, mean_accuracy=73.3, mean_iou=59.4, frequency_weighted_iou=81.4),
    "FCN-16s": dict(pixel_accuracy=90.0, mean_accuracy=75.7, mean_iou=62.4, frequency_weighted_iou=83.0),
    "FCN-8s": dict(pixel_accuracy=90.3, mean_accuracy=75.9, mean_iou=62.7, frequency_weighted_iou=83.2),
}
ROWS = tuple(PAPER)
DEFAULT = {"row": "FCN-8s"}


def table_runs(arg: str) -> list[str]:
    """The config arguments of the table's cells (all rows, or those `arg` names), e.g. 'mini'."""
    return table_cells(arg, {"row": ROWS})


def get_config(arg: str = "FCN-8s,mini"):
    names, flags = parse_arg(arg, {"row": ROWS}, defaults=DEFAULT)
    row = names["row"]
    if "mini" not in flags:
        raise ValueError(f"{row} at paper scale needs the PASCAL VOC dataset, which is not in this "
                         f"codebase yet; use the CPU-sized variant: experiments/fcn.py:{row},mini.")
    c = base_config()
    c.experiment, c.row = "fcn", row
    c.paper = PAPER[row]
    c.table_metrics = ("pixel_accuracy", "mean_accuracy", "mean_iou", "frequency_weighted_iou")

    c.dataset.name = "shapes/default"
    c.task.name = "segmentation"
    c.model.name = "fcn"
    c.model.variant = row.removeprefix("FCN-")
    c.model.num_classes = NUM_SEMANTIC_CLASSES  # background + the shape classes
    c.model.width = 0.125             # VGG16 channels / 8
    # 64x64 scenes: a 5x5 fc6 on pool5 needs 60 px of padding instead of the paper's 100 for a
    # 7x7 fc6 (2x fewer pixels through VGG). Crop offsets follow from the geometry; this one
    # aligns any input of at least 16x16 (the paper's, any size at all).
    c.model.first_padding = 60
    c.model.fc6_kernel = 5
    c.model.dropout_rate = 0.5
    c.model.dtype = "auto"  # bfloat16 on GPU/TPU, float32 on CPU

    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 50
    c.optimizer.grad_clip_norm = 1.0

    c.train.batch_size = 8
    c.train.num_steps = 1500
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.checkpoint_every = 250
    c.eval.batch_size = 64
    return c.lock()
