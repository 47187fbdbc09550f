"""Pictures: VOC palette against the VOC devkit's published colors, grid layout, PNG round trip."""
import numpy as np
import pytest
from PIL import Image

from segattn_jax.tasks import pictures as pics
from segattn_jax.tasks.pictures import colorize_mask, image_grid, overlay, save_png, to_uint8, voc_palette

# The 21 class colors of PASCAL VOC 2012 (VOCdevkit labelcolormap), background first.
VOC_COLORS = [
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128),
    (0, 128, 128), (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0),
    (64, 0, 128), (192, 0, 128), (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0),
    (0, 192, 0), (128, 192, 0), (0, 64, 128),
]


def test_palette_matches_voc_and_is_distinct():
    np.testing.assert_array_equal(voc_palette(21), np.array(VOC_COLORS, np.uint8))
    palette = voc_palette(256)
    assert tuple(palette[255]) == (224, 224, 192)  # VOC's void / boundary color
    assert len({tuple(color) for color in palette}) == 256
    assert len({tuple(color) for color in voc_palette(1000)}) == 1000


def test_colorize_mask_and_ignore_label():
    mask = np.array([[0, 1, 2], [15, 20, 255]])
    colors = colorize_mask(mask, num_classes=21)
    assert colors.shape == (2, 3, 3) and colors.dtype == np.uint8
    assert [tuple(c) for c in colors.reshape(-1, 3)] == [
        VOC_COLORS[0], VOC_COLORS[1], VOC_COLORS[2], VOC_COLORS[15], VOC_COLORS[20], (224, 224, 192)]
    with pytest.raises(ValueError, match="outside"):
        colorize_mask(np.array([[0, 21]]), num_classes=21)


def test_to_uint8_and_overlay():
    np.testing.assert_array_equal(to_uint8(np.array([-1.0, 0.0, 0.5, 1.0, 2.0])), [0, 0, 128, 255, 255])
    image = np.full((2, 2, 3), 0.5, np.float32)  # 128 gray
    mask = np.array([[0, 1], [2, 255]])
    blended = overlay(image, mask, num_classes=21, alpha=0.5)
    assert blended.dtype == np.uint8
    np.testing.assert_array_equal(blended[0, 0], [128, 128, 128])  # background kept
    np.testing.assert_array_equal(blended[0, 1], [128, 64, 64])  # (128 + (128, 0, 0)) / 2
    np.testing.assert_array_equal(blended[1, 0], [64, 128, 64])
    np.testing.assert_array_equal(blended[1, 1], [128, 128, 128])  # ignored kept
    with pytest.raises(ValueError, match="same height and width"):
        overlay(image, np.zeros((3, 3), int), num_classes=21)


def test_image_grid_layout():
    rgb = np.zeros((8, 6, 3), np.float32)
    gray = np.ones((4, 4), np.float32)  # resized by nearest to the row's height 8 -> 8x8
    mask_colors = colorize_mask(np.ones((8, 8), int), 21)
    grid = image_grid([[rgb, gray], [mask_colors]], pad=2)
    # Row 1: 2 + 6 + 2 + 8 + 2 wide = 20; row 2 (8 wide) is padded on the right to 16.
    assert grid.shape == (2 + 8 + 2 + 8 + 2, 2 + 6 + 2 + 8 + 2, 3) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[2:10, 2:8], 0)  # rgb tile, black
    np.testing.assert_array_equal(grid[2:10, 10:18], 255)  # gray tile, white, 8x8
    np.testing.assert_array_equal(grid[12:20, 2:10], np.broadcast_to(VOC_COLORS[1], (8, 8, 3)))
    np.testing.assert_array_equal(grid[:2], 255)  # frame
    assert image_grid([[rgb]], pad=0).shape == (8, 6, 3)


def test_save_png_roundtrip_creates_directories(tmp_path):
    picture = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    path = save_png(tmp_path / "pictures" / "step_10" / "grid.png", picture)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), picture)
    gray = save_png(tmp_path / "gray.png", np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4))
    np.testing.assert_array_equal(np.asarray(Image.open(gray)), to_uint8(np.linspace(0, 1, 12).reshape(3, 4)))


def test_upscale_by_whole_factor_to_min_side():
    mask = np.arange(6).reshape(2, 3)
    big = pics.upscale(mask, min_side=5)  # factor ceil(5 / 2) = 3
    assert big.shape == (6, 9)
    np.testing.assert_array_equal(big[::3, ::3], mask)
    np.testing.assert_array_equal(big[2, 8], mask[0, 2])
    assert pics.upscale(np.zeros((64, 80, 3))).shape == (256, 320, 3)
    large = np.zeros((300, 500, 3))
    assert pics.upscale(large) is large


def has_color(panel: np.ndarray, color, tolerance: int = 40) -> bool:
    return bool(np.any(np.all(np.abs(panel.astype(int) - color) <= tolerance, axis=-1)))


def test_legend_shows_each_class_color_and_a_name_beside_it():
    names = ("background", "aeroplane", "bicycle", "bird")
    panel = pics.legend([0, 3, 255], names, height=120)  # 255 (void) is not a class: skipped
    assert panel.shape[0] == 120 and panel.dtype == np.uint8
    assert has_color(panel, VOC_COLORS[3], 0) and has_color(panel, VOC_COLORS[0], 0)
    assert not has_color(panel, VOC_COLORS[1], 0) and not has_color(panel, (224, 224, 192), 0)
    text_columns = np.where((panel[:, pics.FONT_SIZE + 12 :] < 100).all(-1).any(0))[0]
    assert text_columns.size > 20  # dark glyph pixels right of the swatches
    longer = pics.legend([0, 3], ("background", "a", "b", "a much longer class name"), height=120)
    assert longer.shape[1] > panel.shape[1]
    # More entries than fit in one column wrap into a second one; unnamed ids say "class k".
    assert pics.legend(range(12), names, height=60).shape[1] > 2 * pics.legend(range(2), names, 60).shape[1]
    assert pics.class_name(names, 7) == "class 7" and pics.class_name(names, 2) == "bicycle"


def test_text_panel_draws_lines_in_their_colors():
    panel = pics.text_panel([("true: 7", pics.TEXT_COLOR), ("predicted: 3", pics.WRONG_COLOR)], height=80)
    assert panel.shape[0] == 80
    top, bottom = panel[: 6 + pics.FONT_SIZE + 4], panel[6 + pics.FONT_SIZE + 4 :]
    assert has_color(top, (0, 0, 0)) and not has_color(top, pics.WRONG_COLOR)
    assert has_color(bottom, pics.WRONG_COLOR)
    assert pics.text_panel([("x", (0, 0, 0))], 40).shape[1] < panel.shape[1]


def test_image_grid_titles_caption_the_first_row():
    tile = np.zeros((30, 40, 3), np.uint8)
    plain = image_grid([[tile, tile], [tile, tile]], pad=0)
    titled = image_grid([[tile, tile], [tile, tile]], pad=0, titles=("input", "prediction"))
    assert titled.shape[0] > plain.shape[0] and titled.shape[1] == plain.shape[1]
    strip = titled[: titled.shape[0] - plain.shape[0]]
    assert (strip < 100).all(-1).any()  # the titles' glyphs
    with pytest.raises(ValueError, match="titles"):
        image_grid([[tile, tile]], titles=("one",))


def test_skeleton_draws_left_and_right_limbs_and_leaves_out_invisible_ones():
    from segattn_jax.metrics.pose import JOINT_NAMES, LIMBS

    joints = np.full((len(JOINT_NAMES), 2), 16.0)
    joints[JOINT_NAMES.index("left_elbow")] = (4.0, 4.0)    # left upper arm towards the top left
    joints[JOINT_NAMES.index("right_knee")] = (28.0, 28.0)  # right leg towards the bottom right
    image = np.zeros((32, 32, 3), np.float32)
    picture = pics.draw_skeleton(image, joints, LIMBS)
    assert picture.shape == (256, 256, 3)  # upscaled 8x
    top_left, bottom_right = picture[:110, :110], picture[146:, 146:]
    assert has_color(top_left, pics.SKELETON_COLORS["left"], 0)
    assert not has_color(top_left, pics.SKELETON_COLORS["right"], 0)
    assert has_color(bottom_right, pics.SKELETON_COLORS["right"], 0)
    visible = np.ones(len(JOINT_NAMES), bool)
    visible[JOINT_NAMES.index("right_knee")] = False
    hidden = pics.draw_skeleton(image, joints, LIMBS, visible)
    assert not has_color(hidden[146:, 146:], pics.SKELETON_COLORS["right"], 0)
