"""Tiny prepared datasets shared by the data tests (generated once per session, in tmp dirs)."""
import pytest
import tensorflow_datasets as tfds

from segattn_jax.data import distorted_digits, shapes

tfds.disable_progress_bar()


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory) -> tfds.core.DatasetBuilder:
    config = shapes.ShapesConfig(name="test32", image_size=32, num_train=16, num_test=8, seed=7)
    builder = shapes.Shapes(config=config, data_dir=str(tmp_path_factory.mktemp("shapes")))
    builder.download_and_prepare()
    return builder


@pytest.fixture(scope="session")
def tiny_digits(tmp_path_factory) -> tfds.core.DatasetBuilder:
    config = distorted_digits.DistortedDigitsConfig(
        name="test_rts", distortion="rts", num_source_digits=60, train_copies=2, test_copies=1)
    builder = distorted_digits.DistortedDigits(
        config=config, data_dir=str(tmp_path_factory.mktemp("digits")))
    builder.download_and_prepare()
    return builder
