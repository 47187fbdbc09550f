r"""FCN-32s / FCN-16s / FCN-8s: Long, Shelhamer, Darrell, "Fully Convolutional Networks for
Semantic Segmentation", CVPR 2015, Table 2 (PASCAL VOC 2011 seg11valid).

Rows: FCN-32s, FCN-16s, FCN-8s. Add ',mini' for the CPU-sized variant on the embedded `shapes` data
(slim VGG16, 64x64 scenes, 8 shape classes + background).

  python -m segattn_jax.main train --config experiments/fcn.py:FCN-8s,mini --workdir runs/fcn8s_mini
  python -m segattn_jax.main table --config experiments/fcn.py:mini --workdir runs/fcn_table

Expected on mini (measured, see README): mean IU FCN-8s > FCN-16s > FCN-32s.

Paper scale: `voc_segmentation` (VOC2012 + SBD, manual download: data/voc_segmentation.py),
trained on SBD train, evaluated on seg11valid, with the reference nets' recipe
(fcn.berkeleyvision.org voc-fcn*s): batch 1 at full resolution (padded into a 500x500 canvas,
padding ignored), the per-image sum of the pixel losses, SGD momentum 0.99, weight decay 5e-4,
fixed learning rates 1e-10 / 1e-12 / 1e-14 (biases 2x, without decay), 100k iterations a stage,
every upsampling fixed bilinear, and each stage started from the one before:

  python -m segattn_jax.backbones.pretrained --backbone=vgg16 --format=keras_h5 \
      --weights=vgg16_weights_tf_dim_ordering_tf_kernels.h5 --output=weights/vgg16
  python -m segattn_jax.main train --config experiments/fcn.py:FCN-32s --workdir runs/fcn32s \
      --config.init_from=weights/vgg16
  python -m segattn_jax.main train --config experiments/fcn.py:FCN-16s --workdir runs/fcn16s \
      --config.init_from=runs/fcn32s
  python -m segattn_jax.main train --config experiments/fcn.py:FCN-8s --workdir runs/fcn8s \
      --config.init_from=runs/fcn16s
"""
from segattn_jax.data.labels import SHAPES_SEMANTIC_CLASSES as NUM_SEMANTIC_CLASSES
from segattn_jax.data.labels import VOC_CLASSES
from segattn_jax.train.config import adam_cosine, base_config, imagenet_weights, parse_arg, table_cells

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


# Each stage's fixed learning rate (voc-fcn*s/solver.prototxt) and what it starts from.
_PAPER_LEARNING_RATE = {"FCN-32s": 1e-10, "FCN-16s": 1e-12, "FCN-8s": 1e-14}
_STARTS_FROM = {"FCN-32s": imagenet_weights("VGG16", "vgg16"),
                "FCN-16s": "a trained FCN-32s run (its workdir)",
                "FCN-8s": "a trained FCN-16s run (its workdir)"}


def get_config(arg: str = "FCN-8s,mini"):
    names, flags = parse_arg(arg, {"row": ROWS}, defaults=DEFAULT)
    row = names["row"]
    c = base_config()
    c.experiment, c.row = "fcn", row
    c.paper = PAPER[row]
    c.table_metrics = ("pixel_accuracy", "mean_accuracy", "mean_iou", "frequency_weighted_iou")
    c.task.name = "segmentation"
    c.model.name = "fcn"
    c.model.variant = row.removeprefix("FCN-")
    c.model.dropout_rate = 0.5
    c.model.dtype = "auto"  # bfloat16 on GPU/TPU, float32 on CPU
    if "mini" in flags:
        _mini(c)
    else:
        _paper_scale(c, row)
    return c.lock()


def _mini(c) -> None:
    c.dataset.name = "shapes/default"
    c.model.num_classes = NUM_SEMANTIC_CLASSES  # background + the shape classes
    c.model.width = 0.125             # VGG16 channels / 8
    # 64x64 scenes: a 5x5 fc6 on pool5 needs 60 px of padding instead of the paper's 100 for a
    # 7x7 fc6 (2x fewer pixels through VGG). Crop offsets follow from the geometry; this one
    # aligns any input of at least 16x16 (the paper's, any size at all).
    c.model.first_padding = 60
    c.model.fc6_kernel = 5

    adam_cosine(c, 1e-3, warmup_steps=50, grad_clip_norm=1.0)

    c.train.batch_size = 8
    c.train.num_steps = 1500
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.checkpoint_every = 250
    c.eval.batch_size = 64


def _paper_scale(c, row: str) -> None:
    c.dataset.name = "voc_segmentation"
    c.dataset.train_split = "train"        # SBD train, 8498 images
    c.dataset.eval_split = "seg11valid"    # VOC2011 val minus SBD train, 736 images
    c.dataset.preprocess.canvas = (500, 500)  # every VOC image fits; the padding is ignored
    c.task.loss_normalization = "images"   # Caffe's SoftmaxWithLoss, normalize: false
    c.model.num_classes = len(VOC_CLASSES)
    c.model.width = 1.0
    c.model.first_padding = 100
    c.model.fc6_kernel = 7
    c.model.learn_intermediate_upsampling = False  # the reference nets fix every deconvolution
    c.model.caffe_input = True  # the imported VGG16 expects Caffe's BGR, mean-subtracted input
    c.requires_init_from = _STARTS_FROM[row]

    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.99
    c.optimizer.weight_decay = 5e-4
    c.optimizer.learning_rate = _PAPER_LEARNING_RATE[row]
    c.optimizer.lr_multipliers = ((r"bias$", 2.0),)  # Caffe's lr_mult 2 and decay_mult 0
    c.optimizer.weight_decay_skip = r"bias$"
    c.optimizer.schedule = "constant"

    c.train.batch_size = 1
    c.train.num_steps = 100_000
    c.train.log_every = 100
    c.train.eval_every = 4000
    c.train.checkpoint_every = 1000
    c.eval.batch_size = 8
