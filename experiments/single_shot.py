r"""Single-shot detectors on PASCAL VOC 2007 test (mAP, VOC07 11-point metric, trained on VOC
2007 + 2012 trainval) and their speed: YOLO (Redmon et al., CVPR 2016, Table 1) and SSD (Liu et
al., ECCV 2016, Tables 1, 2, 6 and 7), with Faster R-CNN VGG16 as the two papers' reference.

Rows: YOLO (24 conv layers, 448x448), Fast-YOLO (9 conv layers), SSD300 and SSD512 (the
paper's augmentation: photometric distortions and min-IoU crops), SSD300* and SSD512* (plus the
"zoom out" expansion, sec. 3.6), SSD300-flip-only (SSD300 with only horizontal flips: Table 2's
first column), and Faster-R-CNN (experiments/rcnn.py's Faster-R-CNN-joint-07+12 row: the
paper's network trained in one run by approximate joint training, timed beside them).
',mini' runs on the embedded `shapes` scenes warped to 128x128 (Faster R-CNN's mini row: the
same 128x128 input; SSD's rows train on the first 500 scenes, where the augmentation's gain
shows) with slim networks, each from the mini stand-in for its paper's ImageNet start, which
the table trains first: SSD from the mini rows' pretrained VGG16 (experiments/localization.py:
SCR,mini), YOLO and Fast YOLO from their pretrained first conv layers (experiments/darknet.py);
Faster R-CNN, the test-time reference, from scratch.

  python -m segattn_jax.main train --config experiments/localization.py:SCR,mini --workdir runs/vgg16_mini
  python -m segattn_jax.main train --config experiments/single_shot.py:SSD300,mini --workdir runs/ssd_mini \
      --config.init_from=runs/vgg16_mini
  python -m segattn_jax.main train --config experiments/darknet.py:YOLO,mini --workdir runs/darknet_yolo_mini
  python -m segattn_jax.main train --config experiments/single_shot.py:YOLO,mini --workdir runs/yolo_mini \
      --config.init_from=runs/darknet_yolo_mini
  python -m segattn_jax.main table --config experiments/single_shot.py:mini --workdir runs/single_shot_table

Expected on mini: test seconds per image of YOLO and SSD below Faster R-CNN's (one table run,
one machine), Fast YOLO the fastest; mAP SSD300 > YOLO; SSD300 > SSD300-flip-only.
"""
from pathlib import Path

from segattn_jax.data.labels import SHAPES_CLASSES as CLASS_NAMES
from segattn_jax.train.config import (base_config, cosine_schedule, detection_images,
                                      imagenet_weights, load_experiment, mini_rpn, parse_arg,
                                      start_from_mini_pretrained_vgg16, table_cells)

# VOC 2007 test mAP (%) and test seconds per image (1 / fps; Titan X). YOLO Table 1 (YOLO,
# Fast YOLO, Faster R-CNN VGG-16); SSD Table 7 (fps at batch 1: SSD300 46, SSD512 19; batch 8
# gives 59 and 22), Table 2 (no extended augmentation: 65.5) and Table 6 (with the expansion:
# SSD300* 77.2, SSD512* 79.8).
PAPER = {
    "YOLO": dict(mAP=63.4, seconds_per_image=1 / 45),
    "Fast-YOLO": dict(mAP=52.7, seconds_per_image=1 / 155),
    "SSD300": dict(mAP=74.3, seconds_per_image=1 / 46),
    "SSD300-flip-only": dict(mAP=65.5),
    "SSD300*": dict(mAP=77.2, seconds_per_image=1 / 46),
    "SSD512": dict(mAP=76.8, seconds_per_image=1 / 19),
    "SSD512*": dict(mAP=79.8, seconds_per_image=1 / 19),
    "Faster-R-CNN": dict(mAP=73.2, seconds_per_image=1 / 7),
}
ROWS = tuple(PAPER)
MINI_ROWS = ("Faster-R-CNN", "YOLO", "Fast-YOLO", "SSD300", "SSD300-flip-only")
DEFAULT = {"row": "SSD300"}
VOC_2012_TRAINVAL = "voc/2012:train+validation"
VOC_CLASSES = 20
MINI_SIZE = 128
SSD_MINI_TRAIN_SPLIT = "train[:12.5%]"  # the first 500 of shapes/default's 4000 scenes


def table_runs(arg: str) -> list[str]:
    """The config arguments of the table's cells (all rows, or those `arg` names), e.g. 'mini'."""
    mini = "mini" in [part.strip() for part in arg.split(",")]
    return table_cells(arg, {"row": MINI_ROWS if mini else ROWS})


def _augment(row: str) -> str:
    if row.startswith("SSD"):
        return "flip" if row.endswith("flip-only") else ("ssd_zoom" if "*" in row else "ssd")
    return "yolo"


def _model(c, row: str, mini: bool) -> None:
    if row in ("YOLO", "Fast-YOLO"):
        # The paper pretrains the first conv layers on ImageNet, then adds the detection layers.
        pretraining = f"darknet:{row}" + (",mini" if mini else "")
        if mini:  # the table trains the mini stand-in first
            c.init_from_runs = (pretraining,)
        c.requires_init_from = (
            f"its ImageNet-pretrained conv layers (python -m segattn_jax.main train --config "
            f"experiments/{pretraining.replace(':', '.py:')} --workdir DIR)")
        c.model.name = "yolo"
        c.model.network = "fast" if row == "Fast-YOLO" else "yolo"
        c.model.input_size = MINI_SIZE if mini else 448
        c.model.width = 1.0
        c.model.max_stride = 64   # 448 -> a 7x7 map
        c.model.hidden = 4096     # the first fully connected layer,
        c.model.dropout_rate = 0.5  # then dropout
        c.model.max_detections = 100
        if mini:  # the pretraining's quarter width, a 4x4 map (stride 32) into a 512-wide fc
            c.model.width = load_experiment(Path(__file__).with_name("darknet.py")).MINI_WIDTH
            c.model.max_stride = 32
            c.model.hidden = 512
            c.model.max_detections = 50
    else:
        c.model.name = "ssd"
        size = 512 if row.startswith("SSD512") else 300
        c.model.layout = "mini" if mini else f"ssd{size}"
        c.model.input_size = MINI_SIZE if mini else size
        c.model.width = 1.0
        c.model.max_detections = 200
        if mini:
            c.model.width = 0.125  # the R-CNN mini rows' slim VGG16
            c.model.max_detections = 50
            start_from_mini_pretrained_vgg16(c)  # the paper's ImageNet VGG16
    c.dataset.preprocess.warp_size = c.model.input_size
    c.dataset.preprocess.augment = _augment(row)


def _mini(c, row: str) -> None:
    c.dataset.name = "shapes/default"
    c.dataset.preprocess.max_boxes = 8
    c.model.num_classes = len(CLASS_NAMES)
    # YOLO: the paper's SGD momentum at its starting rate 1e-3. Its plain convs (no batch norm)
    # under Adam at 1e-3 or 3e-4, and under SGD at the paper's later 1e-2, collapse to
    # image-independent features within ~500 steps and predict the training set's mean (README,
    # "YOLO and SSD").
    yolo = c.model.name == "yolo"
    cosine_schedule(c, "sgd" if yolo else "adam", 1e-3, warmup_steps=100, grad_clip_norm=5.0)
    if not yolo:
        # SSD's augmentation is a regularizer: its gain (the paper's 65.5 -> 74.3) comes in the
        # paper's regime of ~230 passes over VOC 07+12. On all 4000 scenes (12 passes) the
        # augmented row trails the flip-only one; on 500 (96 passes) flips alone overfit and the
        # augmentation pays (README, "YOLO and SSD").
        c.dataset.train_split = SSD_MINI_TRAIN_SPLIT
    c.train.batch_size = 16
    c.train.num_steps = 3000
    c.train.log_every = 50
    c.train.eval_every = 1500
    c.train.checkpoint_every = 500
    c.eval.batch_size = 50


def _paper_scale(c, row: str) -> None:
    """VOC 2007 + 2012 trainval, SGD momentum 0.9, weight decay 5e-4, the papers' schedules.
    Both papers start from ImageNet-pretrained networks, which the rows require as init_from:
    YOLO its first 20 conv layers (experiments/darknet.py trains them), SSD VGG16
    (backbones/pretrained.py converts it)."""
    c.dataset.name = "voc/2007"
    c.dataset.train_split = "train+validation"
    c.dataset.eval_split = "test"
    c.dataset.extra_train = (VOC_2012_TRAINVAL,)
    c.dataset.preprocess.max_boxes = 64
    c.model.num_classes = VOC_CLASSES
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 5e-4
    c.optimizer.schedule = "step"
    c.optimizer.decay_factor = 0.1
    c.train.log_every = 100
    c.train.checkpoint_every = 5000
    c.eval.batch_size = 8
    if c.model.name == "yolo":
        # 135 epochs of 16551 images at batch 64 (~35k steps); 1e-2 after a warm-up (the paper
        # raises it from 1e-3 over the first epochs), 1e-3 from epoch 105, 1e-4 from 120;
        # dropout 0.5 after the first fc layer.
        c.train.batch_size = 64
        c.train.num_steps = 35_000
        c.optimizer.learning_rate = 1e-2
        c.optimizer.warmup_steps = 500
        c.optimizer.decay_at = (105 / 135, 120 / 135)
    else:
        c.requires_init_from = imagenet_weights("VGG16", "vgg16")
        # 1e-3 for 40k iterations, then 10k each at 1e-4 and 1e-5 (sec. 3.1), batch 32.
        c.train.batch_size = 32
        c.train.num_steps = 60_000
        c.optimizer.learning_rate = 1e-3
        c.optimizer.decay_at = (40 / 60, 50 / 60)


def _faster_rcnn(mini: bool):
    """experiments/rcnn.py's Faster R-CNN trained in one run (approximate joint training; mini:
    its mini row; else trained on 07+12), as a row of this table so its test time is measured
    in the same run."""
    rcnn = load_experiment(Path(__file__).with_name("rcnn.py"))
    c = rcnn.get_config("Faster-R-CNN-joint,mini" if mini else "Faster-R-CNN-joint-07+12")
    c.experiment, c.row = "single_shot", "Faster-R-CNN"
    if mini:  # on this table's 128x128 scenes, from scratch: this table times it (the R-CNN
        # table measures its accuracy from the pretrained VGG16)
        c.init_from_runs, c.requires_init_from = (), ""
        detection_images(c, max_boxes=8, canvas=128)
        mini_rpn(c, canvas=128)
    c.paper = PAPER["Faster-R-CNN"]
    c.table_metrics = ("mAP", "seconds_per_image")
    return c


def get_config(arg: str = "SSD300,mini"):
    names, flags = parse_arg(arg, {"row": ROWS}, defaults=DEFAULT)
    row, mini = names["row"], "mini" in flags
    if row == "Faster-R-CNN":
        return _faster_rcnn(mini)
    c = base_config()
    c.experiment, c.row = "single_shot", row
    c.paper = PAPER[row]
    c.table_metrics = ("mAP", "seconds_per_image")
    c.task.name = "detection"
    c.task.ap_metric = "voc07"
    c.model.dtype = "auto"  # bfloat16 on GPU/TPU, float32 on CPU
    _model(c, row, mini)
    (_mini if mini else _paper_scale)(c, row)
    return c.lock()
