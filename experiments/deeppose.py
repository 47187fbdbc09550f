r"""DeepPose: Toshev & Szegedy, "DeepPose: Human Pose Estimation via Deep Neural Networks", CVPR
2014, Table 1 (LSP, PCP at 0.5 per part group, "Ave" = our pcp) per stage of the cascade.

Rows: stage1, stage2, stage3: the estimates after that stage of one 3-stage cascade, trained
once and shared by the three rows (the stages train together, each on its own loss; see
models/deeppose.py). Paper scale trains on TFDS `flic` (FLIC's upper body in LSP's joint order:
legs and head top are unannotated, so their parts drop out of PCP; the paper reports FLIC as PDJ
curves, Figure 4, not in a table: the pdj/<group>@<f> metrics), or with ',lsp' on Table 1's
data: LSP + LSPET (11000 training images), tested on LSP's 1000 (data/lsp.py, `lsp/extended`,
from the manual download). ',mini' runs on the embedded `poses` stick figures (128x128, LSP's 14
joints), stage 1 reading the person crop at 64x64 and later stages 24x24 crops of the 128x128
one.

  python -m segattn_jax.main train --config experiments/deeppose.py:stage3,mini --workdir runs/deeppose_mini
  python -m segattn_jax.main table --config experiments/deeppose.py:mini --workdir runs/deeppose_table
  python -m segattn_jax.main table --config experiments/deeppose.py:lsp --workdir runs/deeppose_lsp

Expected on mini (measured, see README): pcp stage2 > stage1, stage3 >= stage2. Every row
trains the same cascade: `train` with any row gives all three stages.
"""
from segattn_jax.train.config import adam_cosine, base_config, parse_arg, table_cells

# Table 1, LSP (PCP at 0.5, in %): upper arm, forearm ("lower arm"), upper leg, lower leg, Ave.
_GROUPS = ("upper_arm", "forearm", "upper_leg", "lower_leg")


def _lsp(upper_arm, forearm, upper_leg, lower_leg, mean):
    values = dict(zip(_GROUPS, (upper_arm, forearm, upper_leg, lower_leg)))
    return {"pcp": mean, **{f"pcp/{group}": v for group, v in values.items()}}


PAPER = {
    "stage1": _lsp(50, 27, 74, 65, 54),
    "stage2": _lsp(56, 36, 78, 70, 60),
    "stage3": _lsp(56, 38, 77, 71, 61),
}
ROWS = tuple(PAPER)
DEFAULT = {"row": "stage3"}
FLAGS = ("mini", "lsp")  # the embedded poses, or Table 1's data; neither: FLIC


def table_runs(arg: str) -> list[str]:
    """The config arguments of the table's cells (all rows, or those `arg` names), e.g. 'mini'."""
    return table_cells(arg, {"row": ROWS}, flags=FLAGS)


def table_figures(cells, workdir):
    """DeepPose's PDJ figure: detection rate vs normalized distance to the true joint (fraction
    of the torso diameter), per joint group, one line per stage, to WORKDIR/pdj.png."""
    from segattn_jax.tasks.pose import PDJ_CURVE, PDJ_CURVE_GROUPS
    from segattn_jax.tasks.pictures import pyplot

    plt = pyplot()
    figure, axes = plt.subplots(1, len(PDJ_CURVE_GROUPS), figsize=(3 * len(PDJ_CURVE_GROUPS), 3),
                                dpi=100, sharey=True)
    for ax, group in zip(axes, PDJ_CURVE_GROUPS):
        for config, measured in cells:
            points = [(f, measured[f"pdj/{group}@{f:g}"]) for f in PDJ_CURVE
                      if measured and f"pdj/{group}@{f:g}" in measured]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=config.row)
        ax.set_title(group)
        ax.set_xlabel("normalized distance")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("detection rate (%)")
    axes[0].legend()
    figure.tight_layout()
    path = workdir / "pdj.png"
    with path.open("wb") as f:
        figure.savefig(f, format="png")
    plt.close(figure)
    return [path]


def _mini(c) -> None:
    c.dataset.name = "poses/default"
    c.dataset.preprocess.size = 128
    c.model.input_size = 64
    c.model.crop_size = 24
    c.model.width = 0.25
    c.model.first_stride = 2
    adam_cosine(c, 5e-4, warmup_steps=100, grad_clip_norm=5.0)
    c.train.batch_size = 16
    c.train.num_steps = 2000
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    c.eval.batch_size = 100


def _paper_scale(c, lsp: bool) -> None:
    """FLIC (TFDS flic/small: 3987 train / 1016 test) or LSP + LSPET (11000 train / 1000 test),
    person crops at 440 px (LSP: the whole image, square, as the paper starts there), stage 1
    at the paper's 220x220, later stages on 220x220 crops of the 440 px one; AdaGrad-era recipe
    replaced by SGD momentum (the paper trains with DistBelief; its optimizer settings are not
    given), random translations and flips as the paper's augmentation."""
    c.dataset.name = "lsp/extended" if lsp else "flic/small"
    if lsp:
        c.dataset.preprocess.margin = 0.0  # the person box is the whole image
    c.dataset.preprocess.size = 440
    c.dataset.preprocess.jitter = 0.1
    c.dataset.preprocess.flip = True
    c.model.input_size = 220
    c.model.crop_size = 220
    c.model.width = 1.0
    c.model.first_stride = 4
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.learning_rate = 5e-4
    c.optimizer.weight_decay = 5e-4
    c.optimizer.schedule = "step"
    c.optimizer.decay_at = (0.7, 0.9)
    c.optimizer.grad_clip_norm = 10.0
    c.train.batch_size = 64
    c.train.num_steps = 60_000
    c.train.log_every = 100
    c.train.eval_every = 5_000
    c.train.checkpoint_every = 2_500
    c.eval.batch_size = 64


def get_config(arg: str = "stage3,mini"):
    names, flags = parse_arg(arg, {"row": ROWS}, flags=FLAGS, defaults=DEFAULT)
    row, mini, lsp = names["row"], "mini" in flags, "lsp" in flags
    if mini and lsp:
        raise ValueError(f"Config argument {arg!r}: 'mini' runs on the embedded poses and 'lsp' "
                         "on the real LSP; choose one.")
    c = base_config()
    c.experiment, c.row = "deeppose", row
    # The paper's Table 1 is on LSP (14 joints, as `poses`); on FLIC it gives PDJ curves
    # (Figure 4) but no table, so the FLIC rows have no paper numbers beside them.
    c.paper = PAPER[row] if mini or lsp else {}
    c.table_metrics = ("pcp", *(f"pcp/{group}" for group in _GROUPS), "pdj/wrists@0.2")
    c.task.name = "pose"
    c.model.name = "deeppose"
    c.model.stages = len(ROWS)
    c.table_run = ",".join(["cascade", *sorted(flags)])
    c.table_metric_prefix = f"{row}/"
    c.model.sigma = 1.0       # a later stage's crop: one torso diameter wide
    c.model.dropout_rate = 0.5
    c.model.dtype = "auto"    # bfloat16 on GPU/TPU, float32 on CPU
    (_mini(c) if mini else _paper_scale(c, lsp))
    return c.lock()
