r"""Inception-v4 and Inception-ResNet-v2: Szegedy, Ioffe, Vanhoucke & Alemi, AAAI 2017, Table 2
(single model, single crop, ILSVRC 2012 validation): top-1 / top-5 error %.

Rows: Inception-v4, Inception-ResNet-v2 (the paper's table also has Inception-v3 and
Inception-ResNet-v1, which this codebase does not build).
Paper scale: TFDS `imagenet2012` (manual download: put ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar in <data_dir>/downloads/manual/), 299x299, the paper's recipe (RMSProp
decay 0.9, epsilon 1.0, learning rate 0.045 decayed by 0.94 every two epochs). To evaluate the
released TF-Slim checkpoints instead (their accuracy: 80.2 / 95.2 and 80.4 / 95.3 top-1 / top-5),
convert them (python -m segattn_jax.backbones.pretrained ... --output=weights/inception_v4) and
`eval` a new workdir with --config.init_from=weights/inception_v4 (no checkpoint there: the
imported weights are evaluated as they are).
',mini' trains a slim net (1/8 width, no auxiliary head) on the embedded distorted digits (RTS,
42x42 upscaled to 75x75, the smallest input the nets' valid convolutions take).

  python -m segattn_jax.main train --config experiments/inception.py:Inception-ResNet-v2,mini --workdir runs/irv2_mini
  python -m segattn_jax.main table --config experiments/inception.py:mini --workdir runs/inception_table

Expected on mini (the paper's Figures 23-26, measured, see README): at the same number of steps
Inception-ResNet-v2 has lower error than Inception-v4 (residual connections train faster).
"""
from segattn_jax.train.config import base_config, parse_arg, table_cells

# Table 2: top-1 / top-5 error % (single crop, single model).
PAPER = {
    "Inception-v4": dict(error_percent=20.0, top5_error_percent=5.0),
    "Inception-ResNet-v2": dict(error_percent=19.9, top5_error_percent=4.9),
}
# The TF-Slim checkpoints' published accuracy (top-1 / top-5 %), as error %.
RELEASED_CHECKPOINT = {
    "Inception-v4": dict(error_percent=100 - 80.2, top5_error_percent=100 - 95.2),
    "Inception-ResNet-v2": dict(error_percent=100 - 80.4, top5_error_percent=100 - 95.3),
}
ROWS = tuple(PAPER)
DEFAULT = {"row": "Inception-ResNet-v2"}
_BACKBONES = {"Inception-v4": "inception_v4", "Inception-ResNet-v2": "inception_resnet_v2"}
IMAGENET_TRAIN_IMAGES = 1_281_167


def table_runs(arg: str) -> list[str]:
    return table_cells(arg, {"row": ROWS})


def get_config(arg: str = "Inception-ResNet-v2,mini"):
    names, flags = parse_arg(arg, {"row": ROWS}, defaults=DEFAULT)
    row, mini = names["row"], "mini" in flags
    c = base_config()
    c.experiment, c.row = "inception", row
    c.paper = PAPER[row]
    c.released_checkpoint = RELEASED_CHECKPOINT[row]
    c.table_metrics = ("error_percent", "top5_error_percent")
    c.task.name = "classification"
    c.task.aux_loss_weight = 0.4  # TF-Slim's weight of the auxiliary classifier's loss
    c.model.name = "classifier"
    c.model.backbone = _BACKBONES[row]
    c.model.repeats = ()  # the paper's number of blocks of each kind
    c.model.bn_momentum = 0.0  # TF-Slim's 0.9997
    c.model.dtype = "auto"  # bfloat16 on GPU/TPU, float32 on CPU
    c.optimizer.name = "rmsprop"
    c.optimizer.rmsprop_decay = 0.9
    c.optimizer.rmsprop_epsilon = 1.0
    c.optimizer.momentum = 0.9
    c.optimizer.schedule = "exponential"
    c.optimizer.decay_factor = 0.94
    c.optimizer.weight_decay = 4e-5  # TF-Slim's inception arg scope

    if mini:
        c.dataset.name = "distorted_digits/rts"
        c.dataset.preprocess.size = 75
        c.dataset.preprocess.value_range = (-1.0, 1.0)
        c.model.num_classes = 10
        c.model.width = 0.125
        c.model.aux_logits = False
        c.model.bn_momentum = 0.99  # running averages over ~100 steps, not TF-Slim's ~3000
        c.optimizer.learning_rate = 0.045
        c.train.batch_size = 32
        c.train.num_steps = 1000
        c.optimizer.decay_every = 100
        c.train.checkpoint_every = 500
        c.train.eval_every = 100  # the training curves of the paper's Figures 23-26
        c.eval.batch_size = 128
    else:
        c.dataset.name = "imagenet2012"
        c.dataset.eval_split = "validation"
        c.dataset.preprocess.size = 299
        c.dataset.preprocess.central_fraction = 0.875
        c.dataset.preprocess.value_range = (-1.0, 1.0)
        c.dataset.preprocess.random_crop = True
        c.dataset.preprocess.flip = True
        c.dataset.preprocess.label_offset = 1  # class 0 is TF-Slim's "background"
        c.model.num_classes = 1001
        c.model.width = 1.0
        c.model.aux_logits = True
        c.optimizer.learning_rate = 0.045
        # The paper trains on 20 replicas; 32 images each is TF-Slim's default.
        c.train.batch_size = 640
        steps_per_epoch = IMAGENET_TRAIN_IMAGES // c.train.batch_size
        c.optimizer.decay_every = 2 * steps_per_epoch
        c.train.num_steps = 100 * steps_per_epoch  # Inception-v3's 100 epochs (v4's unstated)
        c.train.checkpoint_every = 2000
        c.train.log_every = 200
        c.eval.batch_size = 500
    return c.lock()
