"""DenseCap runs: the full-image mini row trained, evaluated and predicting; the paper-scale row
on Visual Genome fixture data (truncated phrases, unknown words)."""
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from segattn_jax import predict
from segattn_jax.data import pipeline
from segattn_jax.data.visual_genome import VisualGenome
from segattn_jax.train import loop
from segattn_jax.train.config import load_experiment
from tests.conftest import ROOT, experiment_config, vgg_kernels
from tests.data.test_visual_genome import write_visual_genome


def test_full_image_row_trains_and_predicts(tfds_dir, tmp_path):
    """train (2 steps and an evaluation) -> predict on an image file on the full-image baseline
    row (FCLN's steps: the learning test; RoI pooling's: the gradient test)."""
    config = experiment_config("densecap", "Full-image-RNN,mini", tfds_dir,
                               **{"train.num_steps": 2})
    workdir = tmp_path / "run"
    loop.train_and_evaluate(config, workdir)
    assert (workdir / "vocabulary.txt").is_file()
    assert (workdir / "pictures" / "step_000002.png").is_file()
    image = tmp_path / "scene.png"
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(image)
    predict.predict_files(config, workdir, [str(image)])
    assert (workdir / "predictions" / "scene.png").is_file()


def test_paper_scale_row_trains_and_evaluates_on_visual_genome_fixture_data(tmp_path):
    """The paper-scale FCLN (full VGG16 conv5_3, 12 anchors, 256 sampled regions, 300
    proposals, LSTM 512, the paper's loss weights) on the Visual Genome builder's fixture: one
    step and an evaluation, at 128 px instead of 720 to keep the test short. Phrases longer than
    max_length (lowered to 3 here) are truncated and counted; rare words become <unk>."""
    manual = tmp_path / "data" / "downloads" / "manual"
    write_visual_genome(manual)
    config = load_experiment(ROOT / "experiments" / "densecap.py").get_config("FCLN")
    config.update_from_flattened_dict({
        "dataset.data_dir": str(tmp_path / "data"), "dataset.preprocess.canvas": (128, 128),
        "dataset.preprocess.min_side": 128.0, "dataset.preprocess.max_side": 128.0,
        "task.max_length": 3, "task.min_word_count": 2, "task.phrase_score": "unigram_f1",
        "train.batch_size": 1, "eval.batch_size": 1, "mesh.data": 1,
        "requires_init_from": ""})  # from scratch: no ImageNet weights in a test
    VisualGenome(data_dir=config.dataset.data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    experiment = loop.Experiment(config, tmp_path / "run", training=True)
    # Only "the" is seen twice in the training phrases: every other word is <unk>.
    assert experiment.task.vocabulary.tokens[4:] == ("the",)
    state = experiment.new_state()
    batch = next(pipeline.train_iterator(config.dataset.name, "train",
                                         preprocess=experiment.preprocess, global_batch_size=1,
                                         seed=0, data_dir=config.dataset.data_dir))
    before = vgg_kernels(state.params)
    state, metrics = experiment.train_step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    after = vgg_kernels(state.params)  # conv1-conv2 frozen as in the released code
    np.testing.assert_array_equal(after["conv2_2"], before["conv2_2"])
    assert not np.array_equal(after["conv3_1"], before["conv3_1"])
    assert int(metrics["truncated_phrases"]) == 1  # "the man s hat on the left"
    result = experiment.evaluate(state.variables)
    assert 0.0 <= result["detection_mAP"] <= 100.0
    model = experiment.task.model
    assert (model.samples, model.proposals, model.lstm_dim, model.width) == (256, 300, 512, 1.0)
