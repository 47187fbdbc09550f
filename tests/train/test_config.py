"""Experiment configs: every row builds, bad names fail listing valid ones, keys are locked."""
import pytest

from segattn_jax.models import MODELS
from segattn_jax.train.config import load_experiment
from segattn_jax.tasks import TASKS
from segattn_jax.train.config import parse_arg, table_cells
from tests.conftest import ROOT

EXPERIMENTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.py"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_table_cell_has_a_valid_config(name):
    module = load_experiment(ROOT / "experiments" / f"{name}.py")
    runs = module.table_runs("mini")
    assert runs
    for run in runs:
        config = module.get_config(run)
        assert config.model.name in MODELS and config.task.name in TASKS
        # Every paper number is shown; a table may add measured-only columns (e.g. CIDEr,
        # which Show, Attend and Tell's paper does not report).
        assert set(config.paper) <= set(config.table_metrics), run
        assert config.row in module.ROWS


def test_parse_arg_lists_valid_names():
    axes = {"row": ("A", "B"), "column": ("X", "Y")}
    assert parse_arg("B,Y,mini", axes) == ({"row": "B", "column": "Y"}, {"mini"})
    assert parse_arg("mini", axes, defaults={"row": "A", "column": "X"})[0] == {"row": "A", "column": "X"}
    with pytest.raises(ValueError, match="rows: A, B; columns: X, Y"):
        parse_arg("C,X", axes)
    with pytest.raises(ValueError, match="names no column"):
        parse_arg("A", axes)
    with pytest.raises(ValueError, match="not a valid name"):
        parse_arg("A,B,X", axes)


def test_configs_are_locked():
    config = load_experiment(ROOT / "experiments" / "fcn.py").get_config("FCN-8s,mini")
    with pytest.raises(AttributeError):
        config.train.num_stepz = 3


def test_table_cells_selects_rows_and_columns():
    axes = {"row": ("A", "B"), "column": ("X", "Y")}
    assert table_cells("mini", axes) == ["A,X,mini", "A,Y,mini", "B,X,mini", "B,Y,mini"]
    assert table_cells("Y,mini", axes) == ["A,Y,mini", "B,Y,mini"]
    assert table_cells("B", axes) == ["B,X", "B,Y"]
    with pytest.raises(ValueError, match="rows: A, B; columns: X, Y"):
        table_cells("Z,mini", axes)


def test_proposal_tables_run_on_two_tone_scenes_with_the_flag():
    """The R-CNN family's, SDS's and MNC's mini tables on `shapes/two_tone`: every cell, and the
    runs a cell starts from (MNC-5-stage's MNC run, each alternating step's previous step),
    carries the flag; without ',mini' it is refused."""
    for name in ("rcnn", "sds", "mnc"):
        module = load_experiment(ROOT / "experiments" / f"{name}.py")
        for run in module.table_runs("mini,two_tone"):
            assert run.endswith(",mini,two_tone")
            assert module.get_config(run).dataset.name == "shapes/two_tone"
        for run in module.table_runs("mini"):
            assert module.get_config(run).dataset.name == "shapes/default"
        with pytest.raises(ValueError, match="add ',mini'"):
            module.get_config(f"{module.ROWS[0]},two_tone")
    mnc = load_experiment(ROOT / "experiments" / "mnc.py")
    assert mnc.get_config("MNC-5-stage,mini,two_tone").init_from_runs == ("MNC,mini,two_tone",)
    rcnn = load_experiment(ROOT / "experiments" / "rcnn.py")
    assert rcnn.get_config("Faster-R-CNN-step2,mini,two_tone").init_from_runs == (
        "localization:SCR,mini", "Faster-R-CNN-step1,mini,two_tone")
    assert rcnn.get_config("Faster-R-CNN,two_tone,mini").init_from_runs == (
        "Faster-R-CNN-step3,mini,two_tone",)
    assert rcnn.get_config("Faster-R-CNN,mini").init_from_runs == ("Faster-R-CNN-step3,mini",)


def test_init_from_without_converted_weights_fails_at_start_saying_how_to_convert(tmp_path):
    from segattn_jax.train.config import validate

    config = load_experiment(ROOT / "experiments" / "inception.py").get_config(
        "Inception-v4,mini")
    config.init_from = str(tmp_path / "weights")
    with pytest.raises(FileNotFoundError, match=r"config.init_from=.*weights.*python -m "
                                                r"segattn_jax.backbones.pretrained"):
        validate(config)


def test_an_evaluate_only_run_without_weights_names_the_flag():
    from segattn_jax.train.config import steps_to_train, validate

    config = load_experiment(ROOT / "experiments" / "deconvnet.py").get_config("EDeconvNet,mini")
    assert config.evaluate_only and steps_to_train(config) == 0 < config.train.num_steps
    with pytest.raises(ValueError, match=r"evaluate_only .*--config.init_from"):
        validate(config)


def test_mini_rows_whose_papers_start_from_imagenet_start_from_the_pretrained_vgg16(tmp_path):
    """DeconvNet's first stage and its table's FCN-8s, the R-CNN family's, SDS, Hypercolumns,
    MNC's, DenseCap's and the single-shot table's SSD trained mini rows start from the mini rows'
    ImageNet VGG16 (a run their tables train first; later stages start from earlier ones;
    YOLO's from its own pretrained convs; the single-shot table's Faster R-CNN, which it times,
    from scratch), and a lone `train` without it stops at start saying how to make it."""
    from segattn_jax.train import loop
    from segattn_jax.train.config import MINI_PRETRAINED_VGG16

    experiment, arg = MINI_PRETRAINED_VGG16.split(":")
    assert load_experiment(ROOT / "experiments" / f"{experiment}.py").get_config(arg)
    starts = {}
    for name in ("deconvnet", "rcnn", "sds", "mnc", "densecap"):
        module = load_experiment(ROOT / "experiments" / f"{name}.py")
        starts.update({run: module.get_config(run).get("init_from_runs")
                       for run in module.table_runs("mini")})
    assert starts == {"FCN-8s,mini": (MINI_PRETRAINED_VGG16,),
                      "DeconvNet-stage1,mini": (MINI_PRETRAINED_VGG16,),
                      "DeconvNet,mini": ("DeconvNet-stage1,mini",),
                      "EDeconvNet,mini": ("FCN-8s,mini", "DeconvNet,mini"),
                      "R-CNN,mini": (MINI_PRETRAINED_VGG16,),
                      "Fast-R-CNN,mini": (MINI_PRETRAINED_VGG16,),
                      "Faster-R-CNN-step1,mini": (MINI_PRETRAINED_VGG16,),
                      "Faster-R-CNN-step2,mini": (MINI_PRETRAINED_VGG16,
                                                  "Faster-R-CNN-step1,mini"),
                      "Faster-R-CNN-step3,mini": ("Faster-R-CNN-step2,mini",),
                      "Faster-R-CNN,mini": ("Faster-R-CNN-step3,mini",),
                      "Faster-R-CNN-joint,mini": (MINI_PRETRAINED_VGG16,),
                      "SDS,mini": (MINI_PRETRAINED_VGG16,),
                      "Hypercolumns,mini": (MINI_PRETRAINED_VGG16,),
                      "MNC,mini": (MINI_PRETRAINED_VGG16,),
                      "MNC-5-stage,mini": ("MNC,mini",),
                      "MNC-no-box-gradient,mini": (MINI_PRETRAINED_VGG16,),
                      **{f"{row},mini": (MINI_PRETRAINED_VGG16,)
                         for row in ("Full-image-RNN", "FCLN-RoI-pool", "FCLN-no-box-gradient",
                                     "FCLN-clipped-box-gradient", "FCLN")}}
    single_shot = load_experiment(ROOT / "experiments" / "single_shot.py")
    assert {run: single_shot.get_config(run).get("init_from_runs")
            for run in single_shot.table_runs("mini")} == {
        "Faster-R-CNN,mini": (), "YOLO,mini": ("darknet:YOLO,mini",),
        "Fast-YOLO,mini": ("darknet:Fast-YOLO,mini",),
        "SSD300,mini": (MINI_PRETRAINED_VGG16,), "SSD300-flip-only,mini": (MINI_PRETRAINED_VGG16,)}
    config = load_experiment(ROOT / "experiments" / "sds.py").get_config("SDS,mini")
    with pytest.raises(ValueError, match=r"localization.py:SCR,mini .*--config.init_from="):
        loop.Experiment(config, tmp_path, training=True)
    assert not any(tmp_path.iterdir())


def test_paper_scale_rows_that_fine_tune_imagenet_weights_require_them(tmp_path):
    """Every paper-scale row whose paper starts from an ImageNet backbone says so in
    `requires_init_from`, and a paper-scale table run without --config.init_from stops at its
    first cell naming the weights and their converter, instead of training VGG16 from
    scratch."""
    from segattn_jax import table

    unrequired = set()
    for name in ("fcn", "deconvnet", "rcnn", "sds", "mnc", "densecap", "mask_rcnn",
                 "localization", "single_shot"):
        module = load_experiment(ROOT / "experiments" / f"{name}.py")
        for run in module.table_runs(""):
            config = module.get_config(run)
            if not config.requires_init_from and not config.evaluate_only:
                unrequired.add(f"{name}:{run}")
    assert not unrequired
    with pytest.raises(ValueError, match=r"rcnn R-CNN starts from VGG16's ImageNet weights "
                                         r"\(python -m segattn_jax.backbones.pretrained "
                                         r"--backbone=vgg16"):
        table.run_table(str(ROOT / "experiments" / "rcnn.py"), "", tmp_path)
    assert not any(tmp_path.iterdir())
