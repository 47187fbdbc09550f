r"""Mask R-CNN (He, Gkioxari, Dollár & Girshick, ICCV 2017) on COCO: mask AP (COCO's
AP@[.5:.95], AP50, AP75), with Table 2's backbones and two ablations of the mask branch.

Rows: R-50-C4 and R-101-C4 (ResNet up to conv4, conv5 as the RoI head: Table 2a), R-50-FPN,
R-101-FPN and X-101-FPN (the paper's ResNet- and ResNeXt-FPN Mask R-CNN; ResNeXt-101 32x8d,
with the stride in the 3x3 as its released weights have it); R-50-C4-RoIPool (Table 2c: RoIPool
instead of RoIAlign) and R-50-C4-softmax (Table 2b: one multinomial per-pixel softmax over the
classes instead of a per-class sigmoid), the paper's ablations on its C4 model; R-50-FPN-RoIPool
and R-50-FPN-softmax, the same two ablations of the FPN model (this codebase's; no paper
numbers). ',mini' trains on the embedded `shapes` scenes (64x64 upscaled to 128x128, their
per-object masks) with a slim ResNet-26 trained from scratch.

  python -m segattn_jax.main train --config experiments/mask_rcnn.py:R-50-FPN,mini --workdir runs/mask_rcnn_mini
  python -m segattn_jax.main table --config experiments/mask_rcnn.py:mini --workdir runs/mask_rcnn_table
  python -m segattn_jax.main train --config experiments/mask_rcnn.py:R-50-C4-RoIPool,mini --workdir runs/mask_rcnn_table/R-50-C4-RoIPool_mini

The paper's points on mini (measured, see README): mask AP with RoIAlign > with RoIPool, the
gap larger at AP75 than at AP50; per-class sigmoid >= multinomial softmax; FPN > C4.
"""
from segattn_jax.data.labels import SHAPES_CLASSES as CLASS_NAMES
from segattn_jax.train.config import (adam_cosine, base_config, detection_images,
                                      imagenet_weights, parse_arg, table_cells)

# COCO mask AP / AP50 / AP75 (%). R-101-FPN and X-101-FPN: Table 1 (test-dev; the table names
# ResNeXt-101 without its cardinality: 32x8d is the one whose ImageNet weights Detectron and
# torchvision release). R-50-C4, R-101-C4, R-50-FPN: Table 2a (minival; Table 1 has no R-50
# rows). The ablations are Table 2b/2c's, measured with ResNet-50-C4 on minival (RoIAlign with
# average pooling and sigmoid masks is the R-50-C4 row itself). Written down from the paper
# without a copy of it on this offline machine to check against: verify them before quoting.
PAPER = {
    "R-50-C4": dict(mask_AP=30.3, mask_AP50=51.2, mask_AP75=31.5),
    "R-101-C4": dict(mask_AP=32.7, mask_AP50=54.2, mask_AP75=34.3),
    "R-50-FPN": dict(mask_AP=33.6, mask_AP50=55.2, mask_AP75=35.3),
    "R-101-FPN": dict(mask_AP=35.7, mask_AP50=58.0, mask_AP75=37.8),
    "X-101-FPN": dict(mask_AP=37.1, mask_AP50=60.0, mask_AP75=39.4),
    "R-50-C4-RoIPool": dict(mask_AP=26.9, mask_AP50=48.8, mask_AP75=26.4),
    "R-50-C4-softmax": dict(mask_AP=24.8, mask_AP50=44.1, mask_AP75=25.1),
    "R-50-FPN-RoIPool": {},
    "R-50-FPN-softmax": {},
}
ROWS = tuple(PAPER)
MINI_ROWS = ("R-50-C4", "R-50-C4-RoIPool", "R-50-C4-softmax", "R-50-FPN", "R-50-FPN-RoIPool",
             "R-50-FPN-softmax")
DEFAULT = {"row": "R-50-FPN"}
COCO_CLASSES = 80


def table_runs(arg: str) -> list[str]:
    """The config arguments of the table's cells (all rows, or those `arg` names), e.g. 'mini'."""
    mini = "mini" in [part.strip() for part in arg.split(",")]
    return table_cells(arg, {"row": MINI_ROWS if mini else ROWS})


def _mini(c) -> None:
    """shapes at 128x128 (objects 12-64 px), ResNet-26-FPN at 1/4 width from scratch (batch
    statistics), anchors and proposal counts for its 32x32..2x2 levels; Adam."""
    c.dataset.name = "shapes/default"
    detection_images(c, max_boxes=8, canvas=128)
    c.dataset.preprocess.mask_size = 32  # the 64x64 scenes' objects are at most ~32 px
    c.model.num_classes = len(CLASS_NAMES)
    c.model.depth = 26
    c.model.width = 0.25
    c.model.frozen_bn = False
    c.model.bn_momentum = 0.9  # running statistics that keep up with a short run from scratch
    c.model.anchor_sizes = (16.0, 32.0, 64.0, 128.0, 256.0)
    c.model.pre_nms_train = c.model.pre_nms_test = 4092  # every anchor of the five levels
    c.model.post_nms_train = 200
    c.model.post_nms_test = 100
    c.model.rois_per_image = 32  # 8 foreground slots: a scene has at most 6 objects
    c.model.mask_features = 256
    c.model.max_detections = 50
    adam_cosine(c, 1e-3, warmup_steps=100, grad_clip_norm=5.0)
    c.train.batch_size = 8
    c.train.num_steps = 1500
    c.train.log_every = 50
    c.train.eval_every = 1500
    c.train.checkpoint_every = 500
    c.eval.batch_size = 50


def _paper_scale(c, depth: int) -> None:
    """COCO 2017 train (= the paper's trainval35k), evaluated on val2017 (= minival; test-dev
    has no public annotations); shorter side 800, longer <= 1333, in a 1344x1344 canvas;
    ImageNet ResNet with frozen batch norm and its stem and conv2 frozen (Detectron's
    FREEZE_AT 2); SGD 0.02 (16 images per batch), momentum 0.9, weight decay 1e-4, 160k
    iterations with the rate divided by 10 at 120k."""
    c.dataset.name = "coco_instances/2017"
    c.dataset.train_split = "train"
    c.dataset.eval_split = "validation"
    detection_images(c, max_boxes=100, canvas=1344, min_side=800.0, max_side=1333.0)
    c.dataset.preprocess.mask_size = 112
    c.model.num_classes = COCO_CLASSES
    c.model.depth = depth
    c.model.frozen_bn = True
    c.requires_init_from = imagenet_weights(f"ResNet-{depth}", f"resnet{depth}")
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.optimizer.learning_rate = 0.02
    c.optimizer.lr_multipliers = ((r"backbone/(resnet/)?(conv1|conv2_)", 0.0),)  # C4 | FPN
    c.optimizer.schedule = "step"
    c.optimizer.decay_factor = 0.1
    c.optimizer.decay_at = (0.75,)
    c.optimizer.warmup_steps = 500  # Detectron's linear warm-up
    c.train.batch_size = 16
    c.train.num_steps = 160_000
    c.train.log_every = 100
    c.train.checkpoint_every = 5000
    c.eval.batch_size = 8


def get_config(arg: str = "R-50-FPN,mini"):
    names, flags = parse_arg(arg, {"row": ROWS}, defaults=DEFAULT)
    row = names["row"]
    if "mini" in flags and row not in MINI_ROWS:
        raise ValueError(f"{row} differs from a mini row only in its backbone's depth; the "
                         f"mini rows are {', '.join(MINI_ROWS)}.")
    c = base_config()
    c.experiment, c.row = "mask_rcnn", row
    c4 = "-C4" in row
    c.paper = PAPER[row]
    c.table_metrics = ("mask_AP", "mask_AP50", "mask_AP75", "AP")
    c.task.name = "instance_segmentation"
    c.task.ap_metric = "coco"
    c.model.name = "mask_rcnn"
    c.model.pooling = "roi_pool" if row.endswith("RoIPool") else "roi_align"
    c.model.mask_loss = "softmax" if row.endswith("softmax") else "sigmoid"
    if c4:  # conv5 on each RoI's 14x14 pooled conv4 features; 14x14 masks (Figure 4, left)
        c.model.architecture = "c4"
        c.model.mask_resolution = 14
    c.model.dtype = "auto"  # bfloat16 on GPU/TPU, float32 on CPU
    if "mini" in flags:
        _mini(c)
    else:
        _paper_scale(c, depth=50 if row.startswith("R-50") else 101)
        if c4:  # the paper: 64 RoIs per image for C4 (as Fast R-CNN), 300 test proposals
            c.model.rois_per_image = 64
            c.model.post_nms_test = 300
        if row == "X-101-FPN":
            c.model.update(groups=32, width_per_group=8, stride_in_1x1=False)
            c.requires_init_from = imagenet_weights("ResNeXt-101 32x8d", "resnext101_32x8d",
                                                     " --format=torchvision")
    return c.lock()
