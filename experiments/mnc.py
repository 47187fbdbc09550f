r"""Multi-task Network Cascades (Dai, He & Sun, CVPR 2016) on PASCAL VOC 2012 val with SBD's
instance masks: APr at mask IoU 0.5 and 0.7, and test seconds per image.

Rows: MNC (the 3-stage cascade, trained), MNC-5-stage (the MNC run's weights evaluated with
stages 2 and 3 once more on stage 3's regressed boxes, both passes' instances merged by mask
voting: the paper's 5-stage inference as the reference code runs it) and
MNC-no-box-gradient (the cascade trained without the gradient through the RoI warping to stage
1's boxes, as Faster R-CNN's approximate joint training; this codebase's ablation). The box
gradient reaching the RPN is clipped as the reference code clips it (`model.box_gradient_clip`).
',mini' trains on the embedded `shapes` scenes (64x64 upscaled to 256x256, their per-object
masks) with a slim VGG16 (1/8 width, up to conv4_3) from the mini rows' ImageNet stand-in
(experiments/localization.py's SCR row, train/config.MINI_PRETRAINED_VGG16), which the table
trains first; SDS's table shares that run when both tables use one workdir.

  python -m segattn_jax.main table --config experiments/mnc.py:mini --workdir runs/instance_mini
  python -m segattn_jax.main train --config experiments/localization.py:SCR,mini --workdir runs/vgg16_mini
  python -m segattn_jax.main train --config experiments/mnc.py:MNC,mini --workdir runs/mnc_mini \
      --config.init_from=runs/vgg16_mini

',two_tone' (with ',mini') trains on `shapes/two_tone`, whose objects have two colours, as SDS's
table does (experiments/sds.py); there MNC-5-stage (APr50 / APr70 77.3 / 62.7) is ahead of
Hypercolumns and SDS, as in the paper, where on the one-colour scenes SDS leads (README).
"""
from segattn_jax.data.labels import SHAPES_CLASSES as CLASS_NAMES
from segattn_jax.data.labels import VOC_OBJECT_CLASSES as OBJECT_CLASSES
from segattn_jax.train.config import (SCENE_FLAGS, adam_cosine, base_config, detection_images,
                                      imagenet_weights, mini_scenes, mini_rpn, parse_arg,
                                      start_from_mini_pretrained_vgg16, table_cells)

# VOC 2012 val APr@0.5 / APr@0.7 (%) and test seconds per image: MNC's Table 3 (its 5-stage
# model, VGG16; the issue quotes the same). The 3-stage cascade's own numbers are left empty:
# no copy of the paper on this offline machine to take them from.
PAPER = {
    "MNC": {},
    "MNC-5-stage": {"APr50": 63.5, "APr70": 41.5, "seconds_per_image": 0.36},
    "MNC-no-box-gradient": {},
}
ROWS = tuple(PAPER)
DEFAULT = {"row": "MNC"}


def table_runs(arg: str) -> list[str]:
    """The config arguments of the table's cells (all rows, or those `arg` names), e.g. 'mini'."""
    return table_cells(arg, {"row": ROWS}, flags=SCENE_FLAGS)


def _mini(c) -> None:
    """shapes at 256x256 (box sides 22-134 px, 5th-95th percentile: 3-17 cells of the stride-8
    map; at 128x128 the box gradient collapses the proposals, README), VGG16 at 1/8 width up to conv4_3 from the
    mini rows' pretrained VGG16, anchors of 32-128 px."""
    detection_images(c, max_boxes=8, canvas=256)
    c.dataset.preprocess.mask_size = 32
    c.model.num_classes = len(CLASS_NAMES)
    c.model.width = 0.125
    c.model.feature_layer = "conv4_3"
    mini_rpn(c, canvas=256)  # anchors of 32-128 px
    c.model.post_nms_train = c.model.post_nms_test = 100
    c.model.max_detections = 50
    adam_cosine(c, 1e-3, warmup_steps=100, grad_clip_norm=5.0)
    c.train.batch_size = 8
    c.train.num_steps = 1500
    c.train.log_every = 50
    c.train.eval_every = 1500
    c.train.checkpoint_every = 500
    c.eval.batch_size = 50


def _paper_scale(c) -> None:
    """SBD instances of VOC 2012 train -> val; shorter side 600 (longer <= 1000) in a 1000x1000
    canvas; ImageNet VGG16 (conv1-2 frozen), SGD 1e-3 for 32k iterations then 1e-4 for 8k, 8
    images per batch (one per GPU in the paper), momentum 0.9, weight decay 5e-4."""
    c.dataset.name = "sbd_instances"
    c.dataset.train_split = "train"
    c.dataset.eval_split = "val"
    detection_images(c, max_boxes=64, canvas=1000, min_side=600.0, max_side=1000.0)
    c.dataset.preprocess.mask_size = 112
    c.model.num_classes = len(OBJECT_CLASSES)
    c.model.width = 1.0
    c.requires_init_from = imagenet_weights("VGG16", "vgg16")
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 5e-4
    c.optimizer.learning_rate = 1e-3
    c.optimizer.lr_multipliers = ((r"backbone/conv[12]_", 0.0),)
    c.optimizer.schedule = "step"
    c.optimizer.decay_factor = 0.1
    c.optimizer.decay_at = (0.8,)
    c.train.batch_size = 8
    c.train.num_steps = 40_000
    c.train.log_every = 100
    c.train.checkpoint_every = 5000
    c.eval.batch_size = 8


def get_config(arg: str = "MNC,mini"):
    names, flags = parse_arg(arg, {"row": ROWS}, flags=SCENE_FLAGS, defaults=DEFAULT)
    row = names["row"]
    c = base_config()
    c.experiment, c.row = "mnc", row
    c.paper = PAPER[row]
    c.table_metrics = ("APr50", "APr70", "seconds_per_image")
    c.task.name = "instance_segmentation"
    c.task.ap_metric = "voc"
    c.model.name = "mnc"
    c.model.stages = 5 if row == "MNC-5-stage" else 3
    c.model.mask_voting = row == "MNC-5-stage"  # the reference code's test-time mask merging
    c.model.box_gradient = row != "MNC-no-box-gradient"  # through the RoI warping to stage 1
    c.model.box_gradient_clip = 1.0 / 512  # per element and image, as the reference code
    c.model.dtype = "auto"  # bfloat16 on GPU/TPU, float32 on CPU
    (_mini if "mini" in flags else _paper_scale)(c)
    mini_scenes(c, arg, flags)
    if row == "MNC-5-stage":  # an inference variant: the MNC row's weights, evaluated
        c.evaluate_only = True
        c.init_from_runs = tuple(table_runs(",".join(["MNC", *flags])))  # the MNC cell's run
    elif "mini" in flags:
        start_from_mini_pretrained_vgg16(c)
    return c.lock()
