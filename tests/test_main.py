"""The command line: clear errors for bad input; `eval`, `predict` and `table` on a trained run."""
import json

import numpy as np
import pytest
from PIL import Image

from segattn_jax import predict, table
from segattn_jax.train import loop
from tests import cli
from tests.conftest import ROOT, cli_overrides, experiment_config, fast_overrides, without_timing


def test_unknown_row_lists_the_valid_ones(tmp_path):
    result = cli.run(["train", "--config", "experiments/fcn.py:FCN-9s,mini",
                      "--workdir", str(tmp_path)])
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "FCN-32s, FCN-16s, FCN-8s" in result.stderr


def test_unknown_config_key_fails_at_start_listing_valid_keys(tmp_path):
    result = cli.run(["train", "--config", "experiments/fcn.py:FCN-8s,mini",
                      "--workdir", str(tmp_path), "--config.train.num_stepz=3"])
    assert result.returncode != 0
    assert "error: Unknown config key --config.train.num_stepz" in result.stderr
    assert "batch_size, checkpoint_every, eval_every" in result.stderr
    assert not any(tmp_path.iterdir()), "nothing may be written before the config is valid"


def test_eval_without_checkpoint_says_to_train_first_and_writes_nothing(tfds_dir, tmp_path):
    config = experiment_config("fcn", "FCN-8s,mini", tfds_dir)
    with pytest.raises(FileNotFoundError, match="train first"):
        loop.evaluate(config, tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


@pytest.fixture(scope="module")
def trained_fcn(tfds_dir, tmp_path_factory):
    """A 2-step FCN-8s mini run, in the directory `table` uses for that cell."""
    workdir = tmp_path_factory.mktemp("table")
    run_dir = table.run_dir(workdir, "FCN-8s,mini")
    config = experiment_config("fcn", "FCN-8s,mini", tfds_dir, **{"train.num_steps": 2})
    result = loop.train_and_evaluate(config, run_dir)
    return workdir, run_dir, result


def test_eval_and_predict_commands(trained_fcn, tfds_dir, tmp_path):
    _, run_dir, result = trained_fcn
    args = ["--config", "experiments/fcn.py:FCN-8s,mini", "--workdir", str(run_dir),
            *cli_overrides("fcn", tfds_dir, **{"train.num_steps": 2})]
    evaluated = cli.run(["eval", *args])
    assert evaluated.returncode == 0, evaluated.stderr
    assert without_timing(json.loads(evaluated.stdout)) == without_timing(result["eval"])

    image, gray, rgba = tmp_path / "scene.png", tmp_path / "gray.png", tmp_path / "rgba.png"
    pixels = np.random.default_rng(0).integers(0, 255, (37, 41, 4), np.uint8)  # any size: FCN
    Image.fromarray(pixels[..., :3]).save(image)
    Image.fromarray(pixels[..., 0]).save(gray)
    Image.fromarray(pixels).save(rgba)
    predicted = cli.run(["predict", *args, "--images", str(image), "--images", str(gray),
                         "--images", str(rgba)])
    assert predicted.returncode == 0, predicted.stderr
    assert f"{gray}: grayscale image converted to RGB" in predicted.stderr
    assert f"{rgba}: RGBA image converted to RGB" in predicted.stderr
    overlay = np.asarray(Image.open(run_dir / "predictions" / "scene.png"))
    assert overlay.shape[0] == 37 * 7 + 4 and overlay.shape[1] > 41 * 7  # upscaled, with a legend
    for name in ("gray", "rgba"):
        assert (run_dir / "predictions" / f"{name}.png").is_file()


def test_predict_rejects_bad_files_before_any_work(trained_fcn, tfds_dir, tmp_path):
    _, run_dir, _ = trained_fcn
    config = experiment_config("fcn", "FCN-8s,mini", tfds_dir)
    gray, text = tmp_path / "unpredicted_gray.png", tmp_path / "notes.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(gray)
    text.write_text("not an image")
    with pytest.raises(ValueError, match="is not an image file"):
        predict.predict_files(config, run_dir, [str(gray), str(text)])
    assert not (run_dir / "predictions" / "unpredicted_gray.png").exists()


def test_match_channels_converts_gray_and_alpha_as_image_tools_do(caplog):
    rgb = np.random.default_rng(0).random((4, 5, 3), np.float32)
    gray = rgb[..., :1]
    caplog.set_level("INFO")
    np.testing.assert_array_equal(predict.match_channels("g.png", gray, 3), np.repeat(gray, 3, -1))
    assert "g.png: grayscale image converted to RGB" in caplog.text
    rgba = np.concatenate([rgb, np.ones_like(gray)], -1)
    np.testing.assert_array_equal(predict.match_channels("a.png", rgba, 3), rgb)
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(predict.match_channels("c.png", rgb, 1)[..., 0], luma, rtol=1e-6)
    assert predict.match_channels("same.png", rgb, 3) is rgb
    with pytest.raises(ValueError, match="has 5 channels but this model takes 3 .RGB."):
        predict.match_channels("five.tif", np.zeros((4, 5, 5), np.float32), 3)


def test_load_image_reads_8_and_16_bit(tmp_path):
    rgba, deep = tmp_path / "rgba.png", tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4, 4), 255, np.uint8)).save(rgba)
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(deep)
    assert predict.load_image(rgba).shape == (4, 4, 4) and predict.load_image(rgba).max() == 1.0
    assert predict.load_image(deep).max() == 1.0
    with pytest.raises(ValueError, match="does not exist"):
        predict.load_image(tmp_path / "missing.png")


def test_table_collects_finished_runs(trained_fcn, tfds_dir):
    workdir, _, result = trained_fcn
    markdown = table.run_table(str(ROOT / "experiments" / "fcn.py"), "mini", workdir,
                               overrides=fast_overrides("fcn", tfds_dir, **{"train.num_steps": 2}),
                               collect_only=True)
    rows = {line.split("|")[1].strip(): line for line in markdown.splitlines() if "| FCN" in line}
    assert list(rows) == ["FCN-32s", "FCN-16s", "FCN-8s"]
    assert f"| 62.7 | {result['eval']['mean_iou']:.1f} |" in rows["FCN-8s"]
    assert "| 59.4 | - |" in rows["FCN-32s"]  # not trained: paper number, no measurement
    # Any cell can show its training time (the R-CNN family's table does).
    hours = table.finished_metrics(table.run_dir(workdir, "FCN-8s,mini"), 2)["train_hours"]
    assert hours == pytest.approx(result["train_seconds"] / 3600) and hours > 0


def fake_table_training(monkeypatch, error=lambda config, name: 1.0) -> list:
    """`table`'s trainer replaced by one that records (run directory name, config) and writes a
    finished run whose error_percent is `error(config, directory name)`."""
    trained = []

    def fake_train(config, directory):
        trained.append((directory.name, config))
        result = {"step": config.train.num_steps, "train_seconds": 1.0,
                  "eval": {"error_percent": error(config, directory.name)}}
        directory.mkdir(parents=True)
        (directory / loop.METRICS_FILE).write_text(json.dumps(result))
        return result

    monkeypatch.setattr(table, "train_and_evaluate", fake_train)
    return trained


def write_chain_experiment(directory, *config_lines: str):
    """directory/chain.py: a table of cells A and B on base_config, `config_lines` setting `c`."""
    (directory / "chain.py").write_text("\n".join([
        "from segattn_jax.train.config import base_config",
        "def table_runs(arg):",
        "    return ['A', 'B']",
        "def get_config(arg):",
        "    c = base_config()",
        *(f"    {line}" for line in config_lines),
        "    return c.lock()", ""]))


def test_table_cells_starting_from_other_runs_load_the_command_lines_init_from_first(
        tmp_path, monkeypatch):
    """A paper-scale table given ImageNet weights (`--config.init_from`): a cell that starts
    from an earlier cell (Faster R-CNN's step 2 starts from ImageNet and step 1) loads them,
    then that cell's run."""
    write_chain_experiment(tmp_path,
                           "c.row, c.paper, c.table_metrics = arg, {}, ('error_percent',)",
                           "c.init_from_runs = ('A',) if arg == 'B' else ()")
    trained = fake_table_training(monkeypatch)
    workdir = tmp_path / "runs"
    table.run_table(str(tmp_path / "chain.py"), "", workdir,
                    overrides={"init_from": "weights/vgg16"})
    assert [(name, config.init_from) for name, config in trained] == [
        ("A", "weights/vgg16"), ("B", f"weights/vgg16,{workdir / 'A'}")]


def test_table_with_seeds_trains_each_cell_per_seed_chains_same_seeds_and_shows_the_range(
        tmp_path, monkeypatch):
    """`--seeds=3`: every cell three times (config.seed + 0, 1, 2; seed 0 in the one-seed
    directory), a chained cell's run k from its parent's run k and the shared pretraining once;
    each metric is the mean with the seeds' range; a second call (or --collect_only) trains
    nothing."""
    (tmp_path / "stage.py").write_text(
        "from segattn_jax.train.config import base_config\n"
        "def get_config(arg):\n"
        "    return base_config().lock()\n")
    write_chain_experiment(
        tmp_path,
        "c.row, c.paper, c.table_metrics = arg, {'error_percent': 5.0}, ('error_percent',)",
        "c.seed = 10", "c.init_from_runs = ('stage:X', 'A') if arg == 'B' else ('stage:X',)")
    trained = fake_table_training(
        monkeypatch, error=lambda config, name: float(config.seed) + (name[0] == "B"))
    workdir = tmp_path / "runs"
    markdown = table.run_table(str(tmp_path / "chain.py"), "", workdir, seeds=3)
    stage = str(workdir / "stage_X")
    assert [(name, config.seed, config.init_from) for name, config in trained] == [
        ("stage_X", 0, ""),
        ("A", 10, stage), ("A_seed1", 11, stage), ("A_seed2", 12, stage),
        ("B", 10, f"{stage},{workdir / 'A'}"),
        ("B_seed1", 11, f"{stage},{workdir / 'A_seed1'}"),
        ("B_seed2", 12, f"{stage},{workdir / 'A_seed2'}")]
    assert "| A | 5.0 | 11.0 (10.0-12.0) |" in markdown
    assert "| B | 5.0 | 12.0 (11.0-13.0) |" in markdown
    trained.clear()
    assert table.run_table(str(tmp_path / "chain.py"), "", workdir, seeds=3) == markdown
    assert table.run_table(str(tmp_path / "chain.py"), "", workdir, seeds=3,
                           collect_only=True) == markdown
    assert trained == []
    # Seed 0 alone is the one-seed table; a seed that has not run leaves the cell unmeasured.
    assert "| A | 5.0 | 10.0 |" in table.run_table(str(tmp_path / "chain.py"), "", workdir,
                                                   collect_only=True)
    assert "| A | 5.0 | - |" in table.run_table(str(tmp_path / "chain.py"), "", workdir,
                                                 seeds=4, collect_only=True)
    with pytest.raises(ValueError, match="at least 1"):
        table.run_table(str(tmp_path / "chain.py"), "", workdir, seeds=0)


def test_format_table_grid_for_experiments_with_columns():
    from ml_collections import ConfigDict

    def cell(row, column, paper):
        return ConfigDict({"row": row, "column": column, "paper": {"error_percent": paper},
                           "table_metrics": ("error_percent",)})

    markdown = table.format_table([(cell("CNN", "R", 1.2), {"error_percent": 20.24}),
                                   (cell("CNN", "RTS", 0.8), None),
                                   (cell("ST-CNN-Aff", "R", 0.7), {"error_percent": 2.1})])
    assert markdown.splitlines()[1:] == [
        "error_percent (paper / measured)", "",
        "| model | R | RTS |", "|---|---|---|",
        "| CNN | 1.2 / 20.2 | 0.8 / - |",
        "| ST-CNN-Aff | 0.7 / 2.1 | - / - |"]


def test_table_trains_another_experiments_run_once_before_the_cells_that_start_from_it(
        tmp_path, monkeypatch):
    """A cell's `init_from_runs` entry '<experiment>:<arg>' (the mini rows' pretraining) is a run
    of the experiment file beside the table's, trained first into the table's workdir, once, with
    the table's overrides where its config has the field; the cells start from its directory."""
    (tmp_path / "stage.py").write_text(
        "from segattn_jax.train.config import base_config\n"
        "def get_config(arg):\n"
        "    c = base_config()\n"
        "    c.train.num_steps = 7\n"
        "    return c.lock()\n")
    (tmp_path / "final.py").write_text(
        "from segattn_jax.train.config import base_config\n"
        "def table_runs(arg):\n"
        "    return ['A,mini', 'B,mini']\n"
        "def get_config(arg):\n"
        "    c = base_config()\n"
        "    c.row = arg.split(',')[0]\n"
        "    c.paper, c.table_metrics = {}, ('error_percent',)\n"
        "    c.model.width = 0.5\n"
        "    c.init_from_runs = ('stage:X,mini',)\n"
        "    return c.lock()\n")
    trained = fake_table_training(monkeypatch)
    workdir = tmp_path / "runs"
    table.run_table(str(tmp_path / "final.py"), "mini", workdir,
                    overrides={"train.num_steps": 3, "model.width": 0.25})
    stage = str(workdir / "stage_X_mini")
    assert [(name, config.train.num_steps, config.get("init_from", ""))
            for name, config in trained] == [
        ("stage_X_mini", 3, ""), ("A_mini", 3, stage), ("B_mini", 3, stage)]
    trained.clear()  # a second table run finds every run finished
    table.run_table(str(tmp_path / "final.py"), "mini", workdir,
                    overrides={"train.num_steps": 3})
    assert trained == []
