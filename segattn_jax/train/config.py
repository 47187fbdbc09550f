"""The config schema every experiment fills in: one home for the loop's keys and their defaults.

Experiments (experiments/*.py) start from `base_config()`, set their dataset/model/optimizer and
paper numbers, and return `config.lock()`-ed configs so a misspelt key fails at start.
"""
from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from types import ModuleType
from typing import Sequence

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.experiment = ""          # e.g. 'fcn'; with row/column, names a cell of the paper's table
    c.row = ""                 # table row, e.g. 'FCN-8s'
    c.column = ""              # table column for grid tables, e.g. 'RTS' ('' = metrics are columns)
    c.paper = ml_collections.ConfigDict()   # metric name -> the paper's number for this cell
    c.table_metrics = ()       # metrics shown by `table`, in order
    # Cells with the same table_run share one training run (e.g. every stage of a cascade);
    # such a cell shows the run's metrics under table_metric_prefix (e.g. 'stage1/').
    c.table_run = ""
    c.table_metric_prefix = ""
    c.seed = 0

    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = ""        # TFDS name, e.g. 'shapes/default'
    c.dataset.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.dataset.train_split = "train"
    c.dataset.eval_split = "test"
    # More training data from other datasets, as 'dataset:split' (the papers' VOC 07+12:
    # ('voc/2012:train+validation',) beside voc/2007 trainval).
    c.dataset.extra_train = ()
    # Keyword options of the task's preprocessor (data/preprocess.py), e.g. max_boxes, canvas.
    c.dataset.preprocess = ml_collections.ConfigDict()
    # Cached region proposals attached to each example (R-CNN, Fast R-CNN, SDS):
    # data/proposals.py. 'selective_search': OpenCV's boxes; 'hierarchical_grouping': regions
    # with their masks (SDS), segmented at scale base_k with segments of >= min_size pixels,
    # masks at mask_size x mask_size over their boxes.
    c.dataset.proposals = ml_collections.ConfigDict()
    c.dataset.proposals.method = ""  # '' (none) | 'selective_search' | 'hierarchical_grouping'
    c.dataset.proposals.upscale = 1.0
    c.dataset.proposals.base_k = 150
    c.dataset.proposals.max_proposals = 2000
    c.dataset.proposals.min_size = 20
    c.dataset.proposals.mask_size = 16

    c.task = ml_collections.ConfigDict()
    c.task.name = ""           # see segattn_jax.tasks.TASKS
    c.task.ignore_label = 255

    c.model = ml_collections.ConfigDict()  # name (segattn_jax.models.MODELS) + constructor args
    # Start from converted pretrained weights (a directory written by
    # `python -m segattn_jax.backbones.pretrained`) or a trained run's workdir: the model subtree
    # they match is loaded when a run starts from scratch; several, comma-separated, each into its
    # subtree (an ensemble's members). init_from_skip: regex of variable paths not to load (e.g.
    # "Logits" to fine-tune an ImageNet classifier on other classes). evaluate_only: a run that
    # trains nothing (whatever train.num_steps says): it evaluates these weights as its step 0
    # (an ensemble of trained runs).
    c.init_from = ""
    c.evaluate_only = False
    c.init_from_skip = ""
    # What a row must start from (e.g. "VGG16's ImageNet weights"): training it from scratch
    # without init_from stops at start, saying so. '' = nothing required.
    c.requires_init_from = ""

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "sgd"   # sgd | adam | adamw
    c.optimizer.learning_rate = 0.01
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 0.0
    c.optimizer.weight_decay_skip = ""  # regex of parameter paths without decay, e.g. "bias$"
    c.optimizer.grad_clip_norm = 0.0
    c.optimizer.schedule = "constant"  # constant | cosine | step
    c.optimizer.warmup_steps = 0
    c.optimizer.decay_at = (0.5, 0.75)  # 'step' schedule: fractions of training
    c.optimizer.decay_factor = 0.1
    # Per-parameter learning-rate factors, ((regex, factor), ...): the first regex found in a
    # parameter's path ('backbone/conv1_1/kernel') gives its factor; 0 freezes it.
    c.optimizer.lr_multipliers = ()

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 16    # global: the same whatever the number of devices
    c.train.num_steps = 1000
    c.train.log_every = 50
    c.train.eval_every = 0     # 0: only at the end
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 3
    # When every checkpoint in the workdir is unreadable: False stops with what failed; True
    # moves them to checkpoints_unreadable/ and starts from scratch.
    c.train.restart_if_no_intact_checkpoint = False
    c.train.num_pictures = 8

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 64

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1           # data-parallel devices; -1 = all
    return c


def cosine_schedule(c: ml_collections.ConfigDict, optimizer: str, learning_rate: float, *,
                    warmup_steps: int, grad_clip_norm: float) -> None:
    """`optimizer` (sgd keeps base_config's momentum 0.9) on a cosine schedule after a linear
    warmup, gradients clipped to a global norm."""
    c.optimizer.name = optimizer
    c.optimizer.learning_rate = learning_rate
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = warmup_steps
    c.optimizer.grad_clip_norm = grad_clip_norm


def adam_cosine(c: ml_collections.ConfigDict, learning_rate: float, *, warmup_steps: int,
                grad_clip_norm: float) -> None:
    """The mini rows' optimizer: Adam on `cosine_schedule` (from-scratch slim networks train
    stably with it on any family; YOLO's plain convs are the exception, experiments/darknet.py)."""
    cosine_schedule(c, "adam", learning_rate, warmup_steps=warmup_steps,
                    grad_clip_norm=grad_clip_norm)


def imagenet_weights(name: str, backbone: str, converter_flags: str = "") -> str:
    """What a paper-scale row that fine-tunes ImageNet weights says in `requires_init_from`: the
    weights and the command that converts them."""
    return (f"{name}'s ImageNet weights (python -m segattn_jax.backbones.pretrained "
            f"--backbone={backbone}{converter_flags} ...)")


# The mini rows' ImageNet VGG16, as a table's `init_from_runs`: the classification +
# localization net of VGG's own paper (experiments/localization.py), trained on other scenes
# than the rows' (`shapes/main_object`), with one class and box per image and no masks.
MINI_PRETRAINED_VGG16 = "localization:SCR,mini"


def start_from_mini_pretrained_vgg16(c: ml_collections.ConfigDict) -> None:
    """A mini row whose paper starts from ImageNet VGG16 starts from the mini stand-in for it:
    its table trains that run first; a lone `train` asks for it."""
    c.init_from_runs = (MINI_PRETRAINED_VGG16,)
    c.requires_init_from = (
        "the mini rows' pretrained VGG16 (python -m segattn_jax.main train --config "
        "experiments/localization.py:SCR,mini --workdir runs/vgg16_mini, then "
        "--config.init_from=runs/vgg16_mini; --config.requires_init_from='' trains from scratch)")


def detection_images(c: ml_collections.ConfigDict, *, max_boxes: int, canvas: int,
                     min_side: float | None = None, max_side: float | None = None) -> None:
    """The detection preprocess's image size: shorter side `min_side` (longer at most
    `max_side`; both default to the canvas, which then holds every image whole) in a canvas x
    canvas padded canvas, with up to `max_boxes` objects."""
    c.dataset.preprocess.max_boxes = max_boxes
    c.dataset.preprocess.canvas = (canvas, canvas)
    c.dataset.preprocess.min_side = float(canvas if min_side is None else min_side)
    c.dataset.preprocess.max_side = float(canvas if max_side is None else max_side)


# The flags of the experiments on `shapes` scenes with proposals (R-CNN family, SDS, MNC):
# 'two_tone' puts a mini row on the scenes whose objects have two colours (`shapes/two_tone`),
# which bottom-up grouping does not trace.
SCENE_FLAGS = ("mini", "two_tone")


def mini_scenes(c: ml_collections.ConfigDict, arg: str, flags: set[str]) -> None:
    """A mini row's `shapes` scenes: one-colour objects, or two-tone ones."""
    if "two_tone" in flags and "mini" not in flags:
        raise ValueError(f"Config argument {arg!r}: 'two_tone' picks the embedded scenes of a "
                         "mini row; add ',mini'.")
    if "mini" in flags:
        c.dataset.name = "shapes/two_tone" if "two_tone" in flags else "shapes/default"


def mini_rpn(c: ml_collections.ConfigDict, canvas: int) -> None:
    """An RPN for the `shapes` scenes upscaled to `canvas` (their objects' boxes span about
    1/12 to 1/2 of it) on stride-8 features: anchors of 1/8, 1/4 and 1/2 of the canvas, every
    anchor of the map ranked before NMS, proposals at least 1/32 of the canvas wide."""
    c.model.anchor_scales = tuple(canvas / 128 * scale for scale in (1.0, 2.0, 4.0))
    c.model.pre_nms_train = c.model.pre_nms_test = 9 * (canvas // 8) ** 2
    c.model.min_proposal_size = canvas / 32


def unknown_key(config: ml_collections.ConfigDict, key: str
                ) -> tuple[int, ml_collections.ConfigDict] | None:
    """None if `config` has the dotted `key` ('train.num_steps'); else (how many of its parts
    exist, the group where the next one is missing), to say which keys are valid there."""
    node, parts = config, key.split(".")
    for depth, part in enumerate(parts):
        if not hasattr(node, "keys") or part not in node:
            return depth, node
        node = node[part]
    return None


def validate(config: ml_collections.ConfigDict) -> None:
    """Fails at start, with what to do, on values the loop cannot run with."""
    if config.get("evaluate_only") and not config.get("init_from"):
        raise ValueError("--config.evaluate_only evaluates the weights of --config.init_from: "
                         "set it (a run's workdir or converted weights; several, comma-separated).")
    positive = {"train.num_steps": config.train.num_steps, "train.log_every": config.train.log_every,
                "train.checkpoint_every": config.train.checkpoint_every,
                "train.keep_checkpoints": config.train.keep_checkpoints,
                "train.num_pictures": config.train.num_pictures,
                "train.batch_size": config.train.batch_size, "eval.batch_size": config.eval.batch_size}
    for key, value in positive.items():
        if value < 1:
            raise ValueError(f"--config.{key}={value} must be at least 1.")
    if config.get("init_from"):
        from segattn_jax.backbones.pretrained import check_converted

        for directory in init_from_dirs(config):
            check_converted(directory)
    if config.train.eval_every < 0:
        raise ValueError(f"--config.train.eval_every={config.train.eval_every} must be >= 0 "
                         "(0 = evaluate only at the end).")


def steps_to_train(config: ml_collections.ConfigDict) -> int:
    """train.num_steps, or 0 for an `evaluate_only` run."""
    return 0 if config.get("evaluate_only") else config.train.num_steps


def init_from_dirs(config: ml_collections.ConfigDict) -> list[str]:
    """`config.init_from`'s directories (comma-separated), in loading order."""
    return [d.strip() for d in config.get("init_from", "").split(",") if d.strip()]


def parse_arg(arg: str, axes: dict[str, Sequence[str]], flags: Sequence[str] = ("mini",),
              defaults: dict[str, str] | None = None) -> tuple[dict[str, str], set[str]]:
    """Splits e.g. 'ST-CNN-Aff,RTS,mini' into ({'row': 'ST-CNN-Aff', 'column': 'RTS'}, {'mini'}).

    Each axis (row, column, ...) takes at most one of its names, else its default; anything
    unknown fails at start with the valid names listed.
    """
    parts = [p.strip() for p in arg.split(",") if p.strip()]
    chosen: dict[str, str] = {}
    valid = "; ".join(f"{axis}s: {', '.join(names)}" for axis, names in axes.items())
    example = ",".join([names[0] for names in axes.values()] + list(flags[:1]))
    for part in parts:
        if part in flags:
            continue
        axis = next((a for a, names in axes.items() if part in names), None)
        if axis is None or axis in chosen:
            raise ValueError(f"Config argument {arg!r}: {part!r} is not a valid name here. "
                             f"Valid {valid}; optional flags: {', '.join(flags)} "
                             f"(e.g. --config experiments/<file>.py:{example}).")
        chosen[axis] = part
    chosen = {**(defaults or {}), **chosen}
    missing = [a for a in axes if a not in chosen]
    if missing:
        raise ValueError(f"Config argument {arg!r} names no {' or '.join(missing)}. Valid {valid}; "
                         f"optional flags: {', '.join(flags)} (e.g. :{example}).")
    return chosen, {p for p in parts if p in flags}


def table_cells(arg: str, axes: dict[str, Sequence[str]],
                flags: Sequence[str] = ("mini",)) -> list[str]:
    """The config arguments of a table's cells: every name of each axis, or only those `arg`
    names (e.g. 'RTS,mini' -> every row of the RTS column, at mini scale)."""
    parts = [p.strip() for p in arg.split(",") if p.strip()]
    every_name = [name for names in axes.values() for name in names]
    unknown = [p for p in parts if p not in every_name and p not in flags]
    if unknown:
        valid = "; ".join(f"{axis}s: {', '.join(names)}" for axis, names in axes.items())
        raise ValueError(f"Unknown {unknown} in table argument {arg!r}. Valid {valid}; "
                         f"flags: {', '.join(flags)}.")
    chosen = [[n for n in names if n in parts] or list(names) for names in axes.values()]
    used_flags = [f for f in flags if f in parts]
    return [",".join([*cell, *used_flags]) for cell in itertools.product(*chosen)]


def load_experiment(path: str | Path) -> ModuleType:
    """Imports an experiment file (experiments/<paper>.py) by path, as config_flags does."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Experiment file {path} does not exist (see experiments/).")
    spec = importlib.util.spec_from_file_location(f"experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
