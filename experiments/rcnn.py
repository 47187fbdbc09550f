r"""The R-CNN family on PASCAL VOC 2007 test (mAP, VOC07 11-point metric) with VGG16:
R-CNN (Girshick et al., CVPR 2014, Table 2 "R-CNN VGG16 BB" in the journal version's Table 3),
Fast R-CNN (Girshick, ICCV 2015, Tables 1 and 4), Faster R-CNN (Ren et al., NeurIPS 2015,
Tables 3 and 5).

Rows: R-CNN, Fast-R-CNN and Faster-R-CNN train on VOC 2007 trainval (TFDS `voc/2007`) and test on
VOC 2007 test; the -07+12 rows (paper scale only) also train on VOC 2012 trainval (`voc/2012`,
through `config.dataset.extra_train`). Faster-R-CNN is the last of the paper's 4-step
alternating training (Section 3.2, which Table 3's numbers use), each step a run that starts
from the previous ones (`init_from_runs`): Faster-R-CNN-step1 trains the RPN from ImageNet;
-step2 a Fast R-CNN detector from ImageNet on step 1's proposals (two networks, nothing shared
yet); -step3 the RPN on step 2's conv layers, fixed; Faster-R-CNN the head on those layers and
step 3's proposals (`models.faster_rcnn.ALTERNATING_FROZEN`). Faster-R-CNN-joint is the same
network by approximate joint training (the released code's end-to-end variant) in one run.
',mini' runs on the embedded `shapes` scenes (64x64, upscaled to 256x256 as the papers upscale
VOC to 600; 128x128 for R-CNN, whose regions are warped to 56 px) with a slim VGG16 that starts
from the mini rows' pretrained VGG16 (experiments/localization.py:SCR,mini), which the table
trains first.

  python -m segattn_jax.main table --config experiments/rcnn.py:mini --workdir runs/rcnn_table
  python -m segattn_jax.main train --config experiments/localization.py:SCR,mini --workdir runs/vgg16_mini
  python -m segattn_jax.main train --config experiments/rcnn.py:Faster-R-CNN-joint,mini \
      --workdir runs/faster_joint_mini --config.init_from=runs/vgg16_mini
  # the 4-step alternating training, one run a step:
  python -m segattn_jax.main train --config experiments/rcnn.py:Faster-R-CNN-step1,mini \
      --workdir runs/faster_step1 --config.init_from=runs/vgg16_mini
  python -m segattn_jax.main train --config experiments/rcnn.py:Faster-R-CNN-step2,mini \
      --workdir runs/faster_step2 --config.init_from=runs/vgg16_mini,runs/faster_step1
  python -m segattn_jax.main train --config experiments/rcnn.py:Faster-R-CNN-step3,mini \
      --workdir runs/faster_step3 --config.init_from=runs/faster_step2
  python -m segattn_jax.main train --config experiments/rcnn.py:Faster-R-CNN,mini \
      --workdir runs/faster_mini --config.init_from=runs/faster_step3

',two_tone' (with ',mini') trains on `shapes/two_tone`, whose objects have two colours that
selective search's boxes trace less well than the RPN's (README: there Faster R-CNN is ahead of
Fast R-CNN at an equal head budget, 79.7 / 80.0 over two seeds vs 79.4 / 79.0; on one-colour
scenes the two tie at that budget).

The papers' points: mAP Faster >= Fast >= R-CNN; test seconds per image R-CNN >> Fast R-CNN
(both without selective search), and Faster R-CNN's with its proposals below Fast R-CNN's plus
selective search. Measured on mini: README.
"""
from segattn_jax.data.labels import SHAPES_CLASSES as CLASS_NAMES
from segattn_jax.models.faster_rcnn import ALTERNATING_FROZEN
from segattn_jax.train.config import (SCENE_FLAGS, adam_cosine, base_config, detection_images,
                                      imagenet_weights, mini_rpn, mini_scenes, parse_arg,
                                      start_from_mini_pretrained_vgg16, table_cells)

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
    # The 4-step alternating training's first three steps: the paper reports none of them.
    "Faster-R-CNN-step1": {}, "Faster-R-CNN-step2": {}, "Faster-R-CNN-step3": {},
    "Faster-R-CNN": dict(mAP=69.9, seconds_per_image=0.198,   # Faster R-CNN, Tables 3 and 5
                         proposal_seconds_per_image=0.01),
    # Approximate joint training: the paper reports its time saving, not its VOC07 mAP; the
    # network, so its test time, is Faster-R-CNN's.
    "Faster-R-CNN-joint": dict(seconds_per_image=0.198, proposal_seconds_per_image=0.01),
    # Trained on VOC 2007 + 2012 trainval: Fast R-CNN Table 1, Faster R-CNN Table 3 (the same
    # networks, so the same test times).
    "Fast-R-CNN-07+12": dict(mAP=70.0, seconds_per_image=0.32, proposal_seconds_per_image=1.51),
    "Faster-R-CNN-step1-07+12": {}, "Faster-R-CNN-step2-07+12": {},
    "Faster-R-CNN-step3-07+12": {},
    "Faster-R-CNN-07+12": dict(mAP=73.2, seconds_per_image=0.198,
                               proposal_seconds_per_image=0.01),
    "Faster-R-CNN-joint-07+12": dict(seconds_per_image=0.198, proposal_seconds_per_image=0.01),
}
ROWS = tuple(PAPER)
MINI_ROWS = tuple(row for row in ROWS if not row.endswith("-07+12"))  # no embedded 07+12
DEFAULT = {"row": "Faster-R-CNN-joint"}  # the Faster R-CNN that trains in one run
# Each Faster R-CNN row's `alternating_step` (0: approximate joint training).
_FASTER_STEPS = {"Faster-R-CNN-step1": 1, "Faster-R-CNN-step2": 2, "Faster-R-CNN-step3": 3,
                 "Faster-R-CNN": 4, "Faster-R-CNN-joint": 0}
VOC_2012_TRAINVAL = "voc/2012:train+validation"
VOC_CLASSES = 20


def table_runs(arg: str) -> list[str]:
    """The config arguments of the table's cells (all rows, or those `arg` names), e.g. 'mini'."""
    mini = "mini" in [part.strip() for part in arg.split(",")]
    return table_cells(arg, {"row": MINI_ROWS if mini else ROWS}, flags=SCENE_FLAGS)


def _mini(c, system: str) -> None:
    """shapes upscaled to 256x256 (128x128 for R-CNN, which warps each region to its own
    size), VGG16 at 1/8 width up to conv4_3, anchors and proposal counts for its 32x32 maps."""
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
    c.requires_init_from = imagenet_weights("VGG16", "vgg16")  # every row fine-tunes it
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
    # Faster R-CNN's RPN: 60k at 1e-3, then 20k at 1e-4 (Section 4.1); the released alternating
    # training gives its detector steps (2 and 4) Fast R-CNN's 30k + 10k.
    c.optimizer.decay_at = (0.75,)
    c.train.num_steps = 80_000 if system == "Faster-R-CNN" else 40_000


def _alternating_training(c, row: str, step: int, flags: set[str]) -> None:
    """A step of the 4-step alternating training (0: approximate joint training, one run): the
    runs it starts from, the modules it freezes, its length (mini: 1000 steps for the RPN's
    steps and the last, 2000 for step 2's detector, Fast R-CNN's row's)."""
    c.model.alternating_step = step
    if not step:
        return
    # The released alternating code keeps Fast R-CNN's background IoU [0.1, 0.5) for its
    # detector steps (2 and 4); its end-to-end config sets 0.0.
    c.model.background_low = 0.1
    frozen = rf"^({'|'.join(ALTERNATING_FROZEN[step])})/"
    c.optimizer.lr_multipliers = ((frozen, 0.0), *c.optimizer.lr_multipliers)
    if "mini" in flags:
        c.train.num_steps = 2000 if step == 2 else 1000
    elif step == 2 or step == 4:
        c.train.num_steps = 40_000
    if step == 1:
        return  # from ImageNet, as the row's system starts
    previous_row = f"Faster-R-CNN-step{step - 1}" + ("-07+12" if row.endswith("-07+12") else "")
    previous = table_runs(",".join([previous_row, *flags]))[0]  # the previous step's cell
    if step == 2:  # its detector from ImageNet (mini: the mini stand-in), its proposals step 1's
        c.init_from_runs = (*c.get("init_from_runs", ()), previous)
        c.init_from_skip = r"^head/"  # step 1 trains no head
        c.requires_init_from = (
            "VGG16's ImageNet weights, then step 1's run: --config.init_from=weights/vgg16,"
            "runs/faster_step1 (mini: runs/vgg16_mini for the weights)")
    else:  # steps 3 and 4 start from the previous step's whole network
        c.init_from_runs = (previous,)
        c.requires_init_from = f"step {step - 1}'s run (--config.init_from=WORKDIR of {previous})"


def get_config(arg: str = "Faster-R-CNN-joint,mini"):
    names, flags = parse_arg(arg, {"row": ROWS}, flags=SCENE_FLAGS, defaults=DEFAULT)
    row = names["row"]
    name = row.removesuffix("-07+12")
    step = _FASTER_STEPS.get(name)
    system = name if step is None else "Faster-R-CNN"
    if "mini" in flags and row not in MINI_ROWS:
        raise ValueError(f"{row} trains on VOC 2007 + 2012 and exists at paper scale only; the "
                         f"mini rows are {', '.join(MINI_ROWS)}.")
    c = base_config()
    c.experiment, c.row = "rcnn", row
    c.paper = PAPER[row]
    c.table_metrics = ("mAP", "proposal_recall50", "seconds_per_image",
                       "proposal_seconds_per_image", "train_hours")
    c.task.name = "detection"
    c.task.ap_metric = "voc07"
    c.model.name = {"R-CNN": "rcnn", "Fast-R-CNN": "fast_rcnn",
                    "Faster-R-CNN": "faster_rcnn"}[system]
    if system in ("R-CNN", "Fast-R-CNN"):
        c.dataset.proposals.method = "selective_search"  # fast mode, ~2000 boxes per image
    c.model.dtype = "auto"  # bfloat16 on GPU/TPU, float32 on CPU
    (_mini if "mini" in flags else _paper_scale)(c, system)
    mini_scenes(c, arg, flags)
    if step is not None:
        _alternating_training(c, row, step, flags)
    if row != name:
        c.dataset.extra_train = (VOC_2012_TRAINVAL,)
    return c.lock()
