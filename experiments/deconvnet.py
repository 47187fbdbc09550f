r"""DeconvNet: Noh, Hong & Han, "Learning Deconvolution Network for Semantic Segmentation", ICCV
2015, Table 1 (PASCAL VOC 2012 test, mean IU): FCN-8s, DeconvNet, EDeconvNet.

Rows, each a run of the table (`init_from_runs`: a run starts from earlier ones):
- FCN-8s: experiments/fcn.py's FCN-8s row, on whole images.
- DeconvNet-stage1: the paper's first training stage, from VGG16's ImageNet weights (at mini
  scale the mini rows' pretrained VGG16): crops centred on one object each (`object_crop`, its
  box enlarged 1.2-1.5x), the easy examples.
- DeconvNet: the second stage, from stage 1: looser, off-centre crops with more context and
  other objects, the harder examples.
- EDeconvNet: DeconvNet and FCN-8s's trained runs, their class probabilities averaged; nothing
  is trained (`evaluate_only`: config.init_from's weights are evaluated).
The DeconvNet rows label each image the paper's way: the network on every object proposal (each
seen through a square window around it, framed as the training crops frame their objects), the
score maps merged by a pixel-wise max (the metrics); the same network on the whole image is
reported beside it ('whole_image/'). Add ',mini' for the CPU-sized variant on the embedded `shapes`
scenes (64x64, 8 shape classes + background).

  python -m segattn_jax.main table --config experiments/deconvnet.py:mini --workdir runs/deconvnet_table

or one run at a time (each names the run it starts from):

  python -m segattn_jax.main train --config experiments/localization.py:SCR,mini --workdir runs/vgg16_mini
  python -m segattn_jax.main train --config experiments/deconvnet.py:DeconvNet-stage1,mini \
      --workdir runs/deconvnet_stage1_mini --config.init_from=runs/vgg16_mini
  python -m segattn_jax.main train --config experiments/deconvnet.py:DeconvNet,mini \
      --workdir runs/deconvnet_mini --config.init_from=runs/deconvnet_stage1_mini

The paper's points: DeconvNet > FCN-8s mean IU, and EDeconvNet >= both. Both reproduce on mini
(README, from the mini rows' pretrained VGG16, mean IU in three seeds: FCN-8s 50.9 / 50.3 /
51.3, DeconvNet 60.3 / 51.6 / 53.7, EDeconvNet 61.5 / 59.4 / 60.8). The mini FCN-8s row
trains 3000 steps, its plateau, where fcn.py's row stops at 1500 (39.8, still gaining).
Stage 1 and the table's FCN-8s start from that VGG16 (experiments/localization.py:SCR,mini),
which the table trains first.

Paper scale (`voc_segmentation`, manual download: data/voc_segmentation.py): trained on SBD train,
evaluated on VOC2012 val (the paper's numbers are on VOC2012 test, whose labels are not public),
224x224 crops, the full-width VGG16 encoder with batch norm, SGD (momentum 0.9, weight decay
5e-4, lr 0.01) in batches of 64. Stage 1 needs VGG16's ImageNet weights:

  python -m segattn_jax.main train --config experiments/deconvnet.py:DeconvNet-stage1 \
      --workdir runs/deconvnet_stage1 --config.init_from=weights/vgg16
  python -m segattn_jax.main train --config experiments/deconvnet.py:DeconvNet \
      --workdir runs/deconvnet --config.init_from=runs/deconvnet_stage1
  python -m segattn_jax.main train --config experiments/deconvnet.py:EDeconvNet \
      --workdir runs/edeconvnet --config.init_from=runs/fcn8s,runs/deconvnet

(runs/fcn8s: experiments/fcn.py's FCN-8s paper row, after its 32s and 16s stages.) This
codebase's choices where the paper differs or is silent: selective search's first 50 boxes stand
in for its 50 EdgeBox proposals; the crops are resized windows around the objects that the
label maps' connected regions give (the paper crops instance boxes for stage 1 and proposals
overlapping the ground truth for stage 2); each proposal is seen through a square 1.2x its
longer side (`model.proposal_context`; the authors' inference code crops "extended" boxes
without saying by how much); no CRF.
"""
from pathlib import Path

from segattn_jax.data.labels import SHAPES_SEMANTIC_CLASSES as NUM_SEMANTIC_CLASSES
from segattn_jax.data.labels import VOC_CLASSES
from segattn_jax.train.config import (adam_cosine, base_config, imagenet_weights,
                                      load_experiment, parse_arg,
                                      start_from_mini_pretrained_vgg16, table_cells)

# Paper, Table 1 (VOC 2012 test): mean IU (%). The first training stage alone is not reported.
PAPER = {
    "FCN-8s": dict(mean_iou=62.2),
    "DeconvNet-stage1": {},
    "DeconvNet": dict(mean_iou=69.6),
    "EDeconvNet": dict(mean_iou=71.7),
}
ROWS = tuple(PAPER)
DEFAULT = {"row": "DeconvNet"}
# Each stage's crops: `object_crop`'s (min_context, max_context, max_shift) after the size (see
# data/preprocess.py). Stage 1 centres one object; stage 2 moves it off centre in a wider window.
_CROPS = {"DeconvNet-stage1": (1.2, 1.5, 0.0), "DeconvNet": (1.2, 3.0, 0.25)}


def table_runs(arg: str) -> list[str]:
    """The config arguments of the table's cells (all rows, or those `arg` names), e.g. 'mini'."""
    return table_cells(arg, {"row": ROWS})


def get_config(arg: str = "DeconvNet,mini"):
    names, flags = parse_arg(arg, {"row": ROWS}, defaults=DEFAULT)
    row = names["row"]
    mini = "mini" in flags
    scale = ",mini" if mini else ""
    if row == "FCN-8s":
        c = load_experiment(Path(__file__).with_name("fcn.py")).get_config(f"FCN-8s{scale}")
        with c.unlocked():
            c.experiment, c.paper = "deconvnet", PAPER[row]
            c.table_metrics = ("pixel_accuracy", "mean_iou")
            if mini:  # from the pretrained VGG16, as DeconvNet; its 5x5 fc6 starts afresh
                start_from_mini_pretrained_vgg16(c)
                c.init_from_skip = r"fc[67]/"
                # To its plateau, as the baseline of a comparison must be (fcn.py's 1500 steps:
                # mean IU 39.8; 3000: 50.9, 50.7 at step 2500; README), in 4.7 minutes.
                c.train.num_steps = 3000
        return c

    c = base_config()
    c.experiment, c.row = "deconvnet", row
    c.paper = PAPER[row]
    c.table_metrics = ("pixel_accuracy", "mean_iou")
    c.task.name = "proposal_segmentation"
    size = 64 if mini else 224
    c.model.width = 0.125 if mini else 1.0  # encoder and decoder (and FCN-8s in the ensemble)
    deconvnet = dict(fc6_kernel=2) if mini else dict(fc6_kernel=7, caffe_input=True)
    # The paper's batch norm after every encoder conv; False keeps the encoder as the BN-free
    # VGG16 whose weights it starts from (an ablation: README, DeconvNet).
    deconvnet["encoder_batch_norm"] = True
    # deconv1_1/1_2 at 1/8 width would have 8 channels for 9 classes; the paper's 64 are 3x its
    # 21. Mini: 32 (stage 1, 400 steps: mean IU 20.0 against 12.4 at 8; README). 0: 64 x width.
    deconvnet["full_resolution_features"] = 32 if mini else 0
    # Test crops framed as the training crops frame their objects: a square 1.2x the proposal's
    # longer side (stage 1's tightest context), not the box warped to a square (mini, the two
    # seeds' stage 2: mean IU 60.3 / 51.6 against 51.4 / 45.4; README).
    deconvnet["proposal_context"] = 1.2
    if row == "EDeconvNet":
        fcn = load_experiment(Path(__file__).with_name("fcn.py")).get_config(f"FCN-8s{scale}")
        c.model.name = "edeconvnet"
        c.model.deconvnet = deconvnet
        c.model.fcn = {k: v for k, v in fcn.model.items()
                       if k not in ("name", "num_classes", "width", "dtype")}
        c.evaluate_only = True  # an ensemble of two trained runs: evaluated, not trained
        c.init_from_runs = (f"FCN-8s{scale}", f"DeconvNet{scale}")
    else:
        c.model.name = "deconvnet"
        c.model.update(deconvnet)
        c.dataset.preprocess.object_crop = (size, *_CROPS[row])
        if row == "DeconvNet":
            c.init_from_runs = (f"DeconvNet-stage1{scale}",)
            c.requires_init_from = "its first stage (a DeconvNet-stage1 run's workdir)"
        elif mini:  # the mini stand-in for ImageNet's VGG16, fc6 (2x2 on 64x64) and fc7 included
            start_from_mini_pretrained_vgg16(c)
        else:
            c.requires_init_from = imagenet_weights("VGG16", "vgg16")
    c.model.proposal_size = size
    c.model.dtype = "auto"  # bfloat16 on GPU/TPU, float32 on CPU
    c.dataset.proposals.method = "selective_search"
    if mini:
        c.dataset.name = "shapes/default"
        c.model.num_classes = NUM_SEMANTIC_CLASSES
        # The settings of the R-CNN mini rows (2x upscaled 64x64 scenes); the first 32 boxes.
        c.dataset.proposals.upscale = 2.0
        c.dataset.proposals.base_k = 75
        c.dataset.proposals.max_proposals = 32
        adam_cosine(c, 1e-3 if row == "DeconvNet" else 3e-3, warmup_steps=50, grad_clip_norm=1.0)
        # 32 crops a step: at 8 (one object each) neither stage learned the shape classes
        # (stage 1: 11.9 mean IU after 1000 steps, 11.7 after 3000; 21.9 at 32; README).
        c.train.batch_size = 32
        # Stage 2 is the slow one to converge (from the same stage 1, mean IU 33.7 at 1000
        # steps, 40.2 at 2000, 51.4 at 4000; README): 4000, about 17 minutes here.
        c.train.num_steps = 4000 if row == "DeconvNet" else 1000
        c.train.checkpoint_every = 250
        c.eval.batch_size = 20  # x 32 proposals: 640 crops per batch
    else:
        c.dataset.name = "voc_segmentation"
        c.dataset.train_split = "train"  # SBD train, 8498 images
        c.dataset.eval_split = "val"     # VOC2012 val, 1449 images
        c.dataset.preprocess.canvas = (500, 500)  # evaluation: every VOC image fits
        c.model.num_classes = len(VOC_CLASSES)
        c.dataset.proposals.max_proposals = 50
        c.optimizer.name = "sgd"
        c.optimizer.momentum = 0.9
        c.optimizer.weight_decay = 5e-4
        c.optimizer.learning_rate = 0.01
        c.optimizer.schedule = "step"
        c.train.batch_size = 64
        c.train.num_steps = 20_000 if row == "DeconvNet-stage1" else 40_000
        c.train.checkpoint_every = 1000
        c.train.eval_every = 10_000
        c.eval.batch_size = 2  # x 50 proposals
    c.train.log_every = 50
    return c.lock()
