r"""The R-CNN family on PASCAL VOC 2007 test (mAP, VOC07 11-point metric) with VGG16:
R-CNN (Girshick et al., CVPR 2014, Table 2 "R-CNN VGG16 BB" in the journal version's Table 3),
Fast R-CNN (Girshick, ICCV 2015, Tables 1 and 4), Faster R-CNN (Ren et al., NeurIPS 2015,
Tables 3 and 5).

Rows: R-CNN, Fast-R-CNN, Faster-R-CNN train on VOC 2007 trainval (TFDS `voc/2007`) and test on
VOC 2007 test; Fast-R-CNN-07+12 and Faster-R-CNN-07+12 (paper scale only) also train on VOC 2012
trainval (`voc/2012`, through `config.dataset.extra_train`).
',mini' runs on the embedded `shapes` scenes (64x64, upscaled to 256x256 as the papers upscale
VOC to 600; 128x128 for R-CNN, whose regions are warped to 56 px) with a slim VGG16 that starts
from the mini rows' pretrained VGG16 (experiments/localization.py:SCR,mini), which the table
trains first.

  python -m segattn_jax.main table --config experiments/rcnn.py:mini --workdir runs/rcnn_table
  python -m segattn_jax.main train --config experiments/localization.py:SCR,mini --workdir runs/vgg16_mini
  python -m segattn_jax.main train --config experiments/rcnn.py:Faster-R-CNN,mini --workdir runs/faster_mini \
      --config.init_from=runs/vgg16_mini

The papers' points: mAP Faster >= Fast >= R-CNN; test seconds per image R-CNN >> Fast R-CNN
(both without selective search), and Faster R-CNN's with its proposals below Fast R-CNN's plus
selective search. Measured on mini (README): the speed points and Fast (82.7) >= R-CNN (80.5)
hold; Faster (80.5) >= Fast does not (80.6 vs 82.8 again on a second seed).
"""
from segattn_jax.data.labels import SHAPES_CLASSES as CLASS_NAMES
from segattn_jax.train.config import (adam_cosine, base_config, detection_images, mini_rpn,
                                      parse_arg, start_from_mini_pretrained_vgg16, table_cells)

# VOC 2007 test mAP (%, trained on 07 trainval), test seconds per image (K40, VGG16; excluding
# selective search for Fast R-CNN, as its paper reports it; including the RPN for Faster R-CNN),
# proposal seconds per image (Faster R-CNN, Table 5: selective search 1.51 s on a CPU, the
# RPN 0.01 s, which its 0.198 s already holds; our Faster R-CNN rows time the RPN inside
# seconds_per_image only), and training hours (Fast R-CNN, Table 4, VGG16; the Faster R-CNN
# paper gives none).
PAPER = {
    "R-CNN": dict(mAP=66.0, seconds_per_image=47.0,           # Fast R-CNN, Tables 1 and 4
                  proposal_seconds_per_image=1.51, train_hours=84.0),
    "Fast-R-CNN": dict(mAP=66.9, seconds_per_image=0.32,      # Fast R-CNN, Tables 1 and 4
                       proposal_seconds_per_image=1.51, train_hours=9.5),
    "Faster-R-CNN": dict(mAP=69.9, seconds_per_image=0.198,   # Faster R-CNN, Tables 3 and 5
                         proposal_seconds_per_image=0.01),
    # Trained on VOC 2007 + 2012 trainval: Fast R-CNN Table 1, Faster R-CNN Table 3 (the same
    # networks, so the same test times).
    "Fast-R-CNN-07+12": dict(mAP=70.0, seconds_per_image=0.32, proposal_seconds_per_image=1.51),
    "Faster-R-CNN-07+12": dict(mAP=73.2, seconds_per_image=0.198,
                               proposal_seconds_per_image=0.01),
}
ROWS = tuple(PAPER)
MINI_ROWS = ("R-CNN", "Fast-R-CNN", "Faster-R-CNN")  # 07+12 has no embedded counterpart
DEFAULT = {"row": "Faster-R-CNN"}
_MODELS = {"R-CNN": "rcnn", "Fast-R-CNN": "fast_rcnn", "Faster-R-CNN": "faster_rcnn"}
VOC_2012_TRAINVAL = "voc/2012:train+validation"
VOC_CLASSES = 20


def table_runs(arg: str) -> list[str]:
    """The config arguments of the table's cells (all rows, or those `arg` names), e.g. 'mini'."""
    mini = "mini" in [part.strip() for part in arg.split(",")]
    return table_cells(arg, {"row": MINI_ROWS if mini else ROWS})


def _mini(c, system: str) -> None:
    """shapes upscaled to 256x256 (128x128 for R-CNN, which warps each region to its own
    size), VGG16 at 1/8 width up to conv4_3, anchors and proposal counts for its 32x32 maps."""
    c.dataset.name = "shapes/default"
    # The one-pass detectors pool stride-8 features: at 256x256 the objects' boxes (22-134 px,
    # 5th-95th percentile) span 3-17 cells, as VOC's objects at 600 px span conv5's; at 128x128
    # RoI pooling saw 1-8 cells (README). R-CNN's warps are 56 px whatever the canvas.
    detection_images(c, max_boxes=8, canvas=128 if system == "R-CNN" else 256)
    c.model.num_classes = len(CLASS_NAMES)
    c.model.width = 0.125
    # Stride 8: conv5_3's stride 16 leaves a 6 px object (in 64x64 scenes) under one cell.
    c.model.feature_layer = "conv4_3"
    c.model.max_detections = 50
    if system == "Faster-R-CNN":
        mini_rpn(c, canvas=256)
        c.model.post_nms_train = 200
        c.model.post_nms_test = 100
        c.model.rois_per_image = 64
        c.model.background_low = 0.0  # the released code's end-to-end value (Fast R-CNN: 0.1)
    if system == "Fast-R-CNN":
        c.model.background_low = 0.1  # the paper's: RoIs with IoU in [0.1, 0.5) are background
    if system == "R-CNN":
        # Regions warped to 56 px with 4 px of context (the paper's 16 at 227, scaled) give
        # conv4_3 a 7x7 map: the same fc6 input as Fast R-CNN's 7x7 RoI pooling of conv4_3.
        c.model.warp_size = 56
        c.model.context_padding = 4.0
        c.model.rois_per_image = 16
        c.model.svm_hard_negatives = 64
        c.model.proposals_per_chunk = 64
    if system in ("R-CNN", "Fast-R-CNN"):
        # 2x first: selective search's segmentation scale is in pixels (recall@0.5 95% vs 60%
        # at 1x on 30 test scenes; ~130 boxes per scene).
        c.dataset.proposals.upscale = 2.0
        c.dataset.proposals.base_k = 75
        c.dataset.proposals.max_proposals = 256
    # The papers fine-tune ImageNet's VGG16; the mini rows the mini stand-in for it.
    start_from_mini_pretrained_vgg16(c)
    adam_cosine(c, 1e-3, warmup_steps=100, grad_clip_norm=5.0)
    c.train.batch_size = 8
    c.train.num_steps = 2000
    c.train.log_every = 50
    c.train.eval_every = 1000
    c.train.checkpoint_every = 500
    c.eval.batch_size = 25 if system == "R-CNN" else 50  # R-CNN's test crops: 25 x 64 at once


def _paper_scale(c, system: str) -> None:
    """VOC 2007 trainval, shorter side 600 (longer <= 1000) in a 1000x1000 canvas, horizontal
    flips, SGD momentum 0.9, weight decay 5e-4, 2 images per batch."""
    c.dataset.name = "voc/2007"
    c.dataset.train_split = "train+validation"
    c.dataset.eval_split = "test"
    c.dataset.preprocess.max_boxes = 64
    c.dataset.preprocess.canvas = (1000, 1000)
    c.dataset.preprocess.min_side = 600.0  # the papers' single-scale protocol
    c.dataset.preprocess.max_side = 1000.0
    c.model.num_classes = VOC_CLASSES
    c.model.width = 1.0  # full VGG16
    # R-CNN's CNN reads pool5 of each 224x224 region; the others RoI-pool conv5_3 (stride 16).
    c.model.feature_layer = "pool5" if system == "R-CNN" else "conv5_3"
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 5e-4
    c.optimizer.learning_rate = 1e-3
    if system != "R-CNN":  # Fast R-CNN 4.5 / Faster R-CNN 3.2: VGG16 fine-tuned from conv3_1 up
        c.optimizer.lr_multipliers = ((r"backbone/conv[12]_", 0.0),)
    c.optimizer.schedule = "step"  # x0.1 once
    c.optimizer.decay_factor = 0.1
    c.train.batch_size = 2
    c.eval.batch_size = 8
    c.train.log_every = 100
    c.train.checkpoint_every = 5000
    # Fast R-CNN: 30k iterations at 1e-3, then 10k at 1e-4 (Section 3.1 / 4). R-CNN's paper
    # gives fine-tuning's 1e-3 but no iteration count, and neither paper a separate 07+12
    # schedule: those rows get the same one.
    if system != "Faster-R-CNN":
        c.train.num_steps = 40_000
        c.optimizer.decay_at = (0.75,)
    else:  # 60k at 1e-3, then 20k at 1e-4 (Section 4.1)
        c.train.num_steps = 80_000
        c.optimizer.decay_at = (0.75,)


def get_config(arg: str = "Faster-R-CNN,mini"):
    names, flags = parse_arg(arg, {"row": ROWS}, defaults=DEFAULT)
    row = names["row"]
    system = row.removesuffix("-07+12")
    if "mini" in flags and row not in MINI_ROWS:
        raise ValueError(f"{row} trains on VOC 2007 + 2012 and exists at paper scale only; the "
                         f"mini rows are {', '.join(MINI_ROWS)}.")
    c = base_config()
    c.experiment, c.row = "rcnn", row
    c.paper = PAPER[row]
    c.table_metrics = ("mAP", "seconds_per_image", "proposal_seconds_per_image", "train_hours")
    c.task.name = "detection"
    c.task.ap_metric = "voc07"
    c.model.name = _MODELS[system]
    if system in ("R-CNN", "Fast-R-CNN"):
        c.dataset.proposals.method = "selective_search"  # fast mode, ~2000 boxes per image
    c.model.dtype = "auto"  # bfloat16 on GPU/TPU, float32 on CPU
    (_mini if "mini" in flags else _paper_scale)(c, system)
    if row != system:
        c.dataset.extra_train = (VOC_2012_TRAINVAL,)
    return c.lock()
