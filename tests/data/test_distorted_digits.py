import numpy as np
import pytest
import scipy.ndimage
import tensorflow_datasets as tfds

from segattn_jax.data import distorted_digits as dd


@pytest.fixture(scope="module")
def digits():
    images, labels = dd.load_sklearn_digits()
    return images[:40], labels[:40]


def test_mnist_layout(digits):
    images, labels = digits
    assert images.shape == (40, 28, 28) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    for image in images:
        rows, cols = np.nonzero(image > 0.05)
        longer = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
        assert 18 <= longer <= 22  # MNIST: the digit fits a 20x20 box
        np.testing.assert_allclose(scipy.ndimage.center_of_mass(image), (13.5, 13.5), atol=1.0)
    assert labels.tolist()[:10] == list(range(10))


@pytest.mark.parametrize("angle", [90.0, -37.0, 12.5])
def test_rotation_matches_scipy(digits, angle):
    image = digits[0][3]
    c = 13.5
    ours = dd.warp(image, dd.similarity_inverse(angle, 1.0, (c, c), (c, c)), 28)
    # scipy rotates about the array centre too, counter-clockwise for positive angles.
    reference = scipy.ndimage.rotate(image, angle, reshape=False, order=1, mode="constant")
    np.testing.assert_allclose(ours, reference, atol=1e-4)
    if angle == 90.0:
        np.testing.assert_allclose(ours, np.rot90(image), atol=1e-6)


def test_homography_maps_points_and_identity_warp(digits):
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 27, size=(4, 2))
    dst = src + rng.normal(0, 3, size=(4, 2))
    h = dd.homography(src, dst)
    mapped = np.c_[src, np.ones(4)] @ h.T
    np.testing.assert_allclose(mapped[:, :2] / mapped[:, 2:], dst, atol=1e-9)
    np.testing.assert_allclose(dd.warp(digits[0][0], np.eye(3), 28), digits[0][0], atol=1e-6)


def test_thin_plate_spline_interpolates_and_is_identity_on_fixed_points(digits):
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 27, size=(16, 2))
    values = points + rng.normal(0, 1.5, size=(16, 2))
    w, a = dd.tps_fit(points, values)
    np.testing.assert_allclose(dd.tps_apply(points, w, a, points), values, atol=1e-8)
    np.testing.assert_allclose(dd.tps_warp(digits[0][5], points, points, 28), digits[0][5], atol=1e-5)


def _params(kind, image, n=400):
    outs, params = zip(*(dd.DISTORT[kind](np.random.default_rng(i), image) for i in range(n)))
    return np.stack(outs), params


def test_r_rotation_range(digits):
    outs, params = _params("r", digits[0][0])
    angles = np.array([p["angle"] for p in params])
    assert outs.shape == (400, 28, 28)
    assert angles.min() >= -90 and angles.max() <= 90
    assert angles.min() < -85 and angles.max() > 85


def test_rts_stays_inside_42_canvas(digits):
    image = digits[0][2]
    outs, params = _params("rts", image)
    assert outs.shape == (400, 42, 42)
    scales = np.array([p["scale"] for p in params])
    angles = np.array([p["angle"] for p in params])
    assert 0.7 <= scales.min() < 0.75 and 1.15 < scales.max() <= 1.2
    assert -45 <= angles.min() < -40 and 40 < angles.max() <= 45
    # Nothing is cropped: ink scales with area, wherever the digit lands.
    np.testing.assert_allclose(outs.sum((1, 2)), scales ** 2 * image.sum(), rtol=0.05)
    centers = np.array([p["center"] for p in params])
    assert centers.min() < 12 and centers.max() > 29  # digits move around the canvas


def test_p_and_e_perturbation_scales(digits):
    image = digits[0][4]
    outs, params = _params("p", image)
    assert outs.shape == (400, 28, 28)
    scales = np.array([p["scale"] for p in params])
    assert 0.75 <= scales.min() and scales.max() <= 1.0
    corners = np.array([[0, 0], [0, 27], [27, 27], [27, 0]])
    noise = np.stack([p["corners"] - (13.5 + s * (corners - 13.5)) for p, s in zip(params, scales)])
    assert abs(noise.std() - 5.0) < 0.3
    outs, params = _params("e", image)
    assert outs.shape == (400, 28, 28)
    moved = np.stack([p["control_points"] for p in params])
    assert moved.shape == (400, 16, 2)


@pytest.mark.parametrize("kind", dd.DISTORTIONS)
def test_distortions_are_deterministic(digits, kind):
    """Each distortion is a function of its RNG; 'none' returns the digit itself."""
    image = digits[0][7]
    a, _ = dd.DISTORT[kind](np.random.default_rng(5), image)
    b, _ = dd.DISTORT[kind](np.random.default_rng(5), image)
    c, _ = dd.DISTORT[kind](np.random.default_rng(6), image)
    assert a.shape == (dd.OUTPUT_SIZE[kind],) * 2
    np.testing.assert_array_equal(a, b)
    if kind == "none":
        np.testing.assert_array_equal(a, image)
    else:
        assert not np.array_equal(a, c)


def test_sklearn_builder_holds_out_test_digits(tiny_digits):
    train = list(tfds.as_numpy(tiny_digits.as_dataset(split="train")))
    test = list(tfds.as_numpy(tiny_digits.as_dataset(split="test")))
    assert len(train) == 50 * 2 and len(test) == 10
    assert train[0]["image"].shape == (42, 42, 1) and train[0]["image"].dtype == np.uint8
    train_ids = {int(e["source_id"]) for e in train}
    test_ids = {int(e["source_id"]) for e in test}
    assert not train_ids & test_ids and train_ids | test_ids == set(range(60))
    target = dd.load_sklearn_digits()[1]
    assert all(e["label"] == target[e["source_id"]] for e in train + test)
    # Stored images are the distortion of the source digit under the example's own RNG.
    assert len({e["image"].tobytes() for e in train}) == len(train)


def test_builder_is_deterministic_by_seed(tiny_digits, tmp_path):
    same = dd.DistortedDigits(config=tiny_digits.builder_config, data_dir=str(tmp_path))
    same.download_and_prepare()
    images = lambda b: {e["image"].tobytes() for e in tfds.as_numpy(b.as_dataset(split="test"))}
    assert images(same) == images(tiny_digits)


def test_registered_configs():
    for name, size in [("r", 28), ("rts", 42), ("p", 28), ("e", 28), ("mnist_rts", 42)]:
        builder = tfds.builder(f"distorted_digits/{name}", data_dir="/nonexistent")
        assert builder.info.features["image"].shape == (size, size, 1)
    assert tfds.builder("distorted_digits/r").generated_locally
    assert not tfds.builder("distorted_digits/mnist_r").generated_locally
    with pytest.raises(ValueError, match="distortion"):
        dd.DistortedDigitsConfig(name="bad", distortion="x")


def test_mnist_config_with_mocked_mnist(tmp_path):
    config = dd.DistortedDigitsConfig(name="test_mnist_e", distortion="e", source="mnist",
                                      train_copies=1, test_copies=1)
    builder = dd.DistortedDigits(config=config, data_dir=str(tmp_path))
    prepare = tfds.core.DatasetBuilder.download_and_prepare  # mock_data makes it a no-op
    with tfds.testing.mock_data(num_examples=12):
        prepare(builder)  # runs the real generation; only `tfds.load('mnist')` is mocked
    examples = list(tfds.as_numpy(builder.as_dataset(split="train")))
    assert len(examples) == 12 and builder.info.splits["test"].num_examples == 12
    assert examples[0]["image"].shape == (28, 28, 1)
    assert sorted(int(e["source_id"]) for e in examples) == list(range(12))


def test_missing_mnist_error_says_how_to_get_it(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise ConnectionError("no internet")

    monkeypatch.setattr(dd.tfds, "load", offline)
    with pytest.raises(ValueError, match="download_and_prepare") as error:
        dd.load_mnist("train", str(tmp_path))
    assert "mnist" in str(error.value) and "'r', 'rts', 'p', 'e'" in str(error.value)


def test_cluttered_digits_sit_whole_among_pieces_of_other_digits(digits):
    """The digit is pasted whole at its drawn place (clutter only brightens pixels); without
    clutter nothing else is drawn; with it, ink appears outside the digit's square, cut from
    the pool's digits."""
    image, pool = digits[0][3], digits[0][10:20]
    out, params = dd.distort_cluttered(np.random.default_rng(0), image, canvas=60, pieces=0)
    top, left = params["top_left"]
    assert out.shape == (60, 60)
    np.testing.assert_array_equal(out[top:top + 28, left:left + 28], image)
    assert out.sum() == pytest.approx(image.sum())
    placements, clutter = [], 0.0
    for seed in range(50):
        out, params = dd.DISTORT["cluttered"](np.random.default_rng(seed), image, pool=pool)
        top, left = params["top_left"]
        assert (out[top:top + 28, left:left + 28] >= image).all()
        outside = out.copy()
        outside[top:top + 28, left:left + 28] = 0
        assert outside.max() <= pool.max()
        clutter = max(clutter, float(outside.max()))
        placements.append((top, left))
    assert clutter > 0.5  # pieces of other digits lie outside the digit's square
    assert len(set(placements)) > 40  # the digit moves around the canvas
    big, _ = dd.DISTORT["cluttered100"](np.random.default_rng(0), image, pool=pool)
    assert big.shape == (100, 100)
