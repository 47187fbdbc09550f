"""The tasks' pictures name their classes (legends, captions) from the dataset and are upscaled."""
import numpy as np
import pytest

from segattn_jax.data import pipeline
from segattn_jax.data.shapes import CLASS_NAMES
from segattn_jax.tasks import build_task
from segattn_jax.tasks import pictures as pics
from tests.conftest import experiment_config
from tests.tasks.test_pictures import VOC_COLORS, has_color


def test_label_names_come_from_the_dataset(tfds_dir):
    assert pipeline.label_names("shapes", "segmentation", tfds_dir) == ("background", *CLASS_NAMES)
    digits = pipeline.label_names("distorted_digits/tiny_rts", "classification", tfds_dir)
    assert digits == tuple(str(d) for d in range(10))
    assert pipeline.label_names("distorted_digits/tiny_rts", "segmentation", tfds_dir) == digits


@pytest.fixture(scope="module")
def segmentation_task(tfds_dir):
    return build_task(experiment_config("fcn", "FCN-8s,mini", tfds_dir))


def test_segmentation_pictures_have_a_legend_of_the_classes_present(segmentation_task):
    task = segmentation_task
    label = np.zeros((2, 32, 32), np.int32)
    label[0, :8, :8], label[1, 4:9, 4:9], label[1, -1] = 2, 5, 255  # square; ring; void
    prediction = label.clip(0, 8).copy()
    prediction[0, 20:, 20:] = 4  # a star only in the prediction
    batch = {"image": np.zeros((2, 32, 32, 3), np.float32), "label": label}
    grid = task.pictures(batch, {"label_map": prediction})
    # Four columns of 256-px tiles (32 x 8) plus a legend; two rows and a title strip.
    assert grid.shape[0] > 2 * 256 and grid.shape[1] > 3 * 256
    legend_area = grid[:, 3 * 256 + 8 :]
    for k in (0, 2, 4, 5):
        assert has_color(legend_area, VOC_COLORS[k], 0), k
    assert not has_color(legend_area, VOC_COLORS[1], 0)
    assert task.class_names[4] == "star"
    # With Farabet et al.'s superpixel vote, its map is one more column, its classes in the legend.
    voted = np.full_like(prediction, 7)
    with_vote = task.pictures(batch, {"label_map": prediction, "superpixel_label_map": voted})
    assert with_vote.shape[1] > grid.shape[1] + 200
    assert has_color(with_vote[:, 4 * 256 + 8:], VOC_COLORS[7], 0)


def test_segmentation_overlay_is_upscaled_with_a_legend_of_tinted_classes(segmentation_task):
    prediction = np.zeros((37, 41), np.int32)
    prediction[:10, :10] = 3
    picture = segmentation_task.overlay(np.full((37, 41, 3), 0.5, np.float32), {"label_map": prediction})
    assert picture.shape[0] == 37 * 7 + 4 and picture.shape[1] > 41 * 7  # factor ceil(256 / 37) = 7
    legend = picture[2:-2, 41 * 7 + 4 : -2]  # inside the grid's frame: background is not listed
    np.testing.assert_array_equal(legend, pics.legend([3], segmentation_task.class_names, 37 * 7))


def test_classification_pictures_say_true_and_predicted_class(tfds_dir):
    task = build_task(experiment_config("stn", "ST-CNN-Aff,RTS,mini", tfds_dir))
    images = np.zeros((2, 42, 42, 1), np.float32)
    batch = {"image": images, "label": np.array([3, 5])}
    predictions = {"label": np.array([3, 6]), "logits": np.zeros((2, 10)), "transformed": images[:, :21, :21]}
    grid = task.pictures(batch, predictions)
    row_height = 42 * 7  # upscaled to >= 256
    assert grid.shape[0] > 2 * row_height
    words = grid[:, 2 * row_height + 4 :]
    first, second = words[: grid.shape[0] // 2], words[grid.shape[0] // 2 :]
    assert has_color(first, pics.RIGHT_COLOR) and not has_color(first, pics.WRONG_COLOR)
    assert has_color(second, pics.WRONG_COLOR) and not has_color(second, pics.RIGHT_COLOR)
    one = task.overlay(images[0], {k: v[0] for k, v in predictions.items()})
    assert one.shape[0] == row_height + 4
