"""FCN-32s/16s/8s: output aligned with the input for any size, Caffe crop offsets, initialisation.

Alignment is checked two independent ways that fail on a crop off by one pixel: a delta-image probe
through a net of centre-tap kernels (the response must be centred on the coarse cell that saw the
delta), and mirror equivariance of a net with flip-symmetric kernels.
"""
import functools
import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segattn_jax.models.fcn import FCN, crop_offsets

SLIM = 1 / 16
NUM_CLASSES = 3
# Initialising with the default (partitionable threefry) key takes ~5x longer to compile on CPU;
# the initial values of the backbone do not matter here.
INIT_KEY = jax.random.key(0, impl="rbg")
LAYERS = {
    "32s": {"backbone", "score_fr"},
    "16s": {"backbone", "score_fr", "upscore2", "score_pool4"},
    "8s": {"backbone", "score_fr", "upscore2", "score_pool4", "upscore_pool4", "score_pool3"},
}
# The reference Caffe nets' Crop layers (fcn.berkeleyvision.org voc-fcn*s/train.prototxt).
CAFFE_OFFSETS = {
    "32s": {"score": 19},
    "16s": {"score_pool4c": 5, "score": 27},
    "8s": {"score_pool4c": 5, "score_pool3c": 9, "score": 31},
}
# torchvision/Caffe VGG16 without fc8 (4096 * 1000 + 1000 parameters).
VGG16_WITHOUT_FC8 = 138_357_544 - 4_097_000


@functools.cache
def jitted_apply(variant: str, **fields):
    return jax.jit(FCN(NUM_CLASSES, variant, width=SLIM, **fields).apply, static_argnames="train")


@pytest.fixture(scope="module")
def fcn8s_params():
    """Initial FCN-8s parameters; FCN-16s/32s use a subset (`params_for`)."""
    model = FCN(NUM_CLASSES, "8s", width=SLIM)
    init = jax.jit(model.init, static_argnames="train")
    return init(INIT_KEY, jnp.zeros((1, 1, 1, 3)), train=False)["params"]


def params_for(variant, params):
    return {name: params[name] for name in LAYERS[variant]}


def map_params(params, fn):
    """Apply fn(layer_name, param_name, value) to every parameter."""
    return jax.tree_util.tree_map_with_path(
        lambda path, value: fn(str(path[-2].key), str(path[-1].key), value), params)


def random_scores(params, seed=0):
    """Random (nonzero) class scoring layers, so the zero-initialised net produces something."""
    rng = np.random.default_rng(seed)
    return map_params(params, lambda layer, name, value: (
        rng.normal(size=value.shape).astype(np.float32) if layer.startswith("score") else value))


def images(shape, seed=1):
    return jax.random.normal(jax.random.key(seed), shape)


@pytest.mark.parametrize("variant", sorted(CAFFE_OFFSETS))
def test_crop_offsets_match_caffe_reference(variant):
    assert crop_offsets(variant) == CAFFE_OFFSETS[variant]
    assert FCN(21, variant).crop_offsets() == CAFFE_OFFSETS[variant]
    # The skip offsets do not depend on the first padding; the final one moves with it.
    assert crop_offsets(variant, first_padding=101)["score"] == CAFFE_OFFSETS[variant]["score"] + 1


def test_plain_vgg_padding_cannot_align():
    with pytest.raises(ValueError, match="first_padding=100"):
        crop_offsets("8s", first_padding=1)


def test_unknown_variant_lists_valid_ones():
    with pytest.raises(ValueError, match=r"'16s', '32s', '8s'"):
        jax.eval_shape(lambda: FCN(NUM_CLASSES, "4s").init(INIT_KEY, jnp.zeros((1, 8, 8, 3)),
                                                           train=False))


@pytest.mark.parametrize("variant", sorted(LAYERS))
def test_logits_have_the_input_size(variant, fcn8s_params):
    apply = jitted_apply(variant)
    params = {"params": params_for(variant, fcn8s_params)}
    for height, width in [(37, 53), (64, 64), (97, 101)]:
        logits = apply(params, images((1, height, width, 3)), train=False)
        assert logits.shape == (1, height, width, NUM_CLASSES)
        assert logits.dtype == jnp.float32


@pytest.mark.parametrize("variant", sorted(LAYERS))
def test_parameter_trees(variant):
    variables = jax.eval_shape(lambda: FCN(NUM_CLASSES, variant, width=SLIM).init(
        INIT_KEY, jnp.zeros((1, 1, 1, 3)), train=False))
    params = variables["params"]
    assert set(variables) == {"params"}
    assert set(params) == LAYERS[variant]  # the final upsampling is fixed: no parameters
    for name in LAYERS[variant] & {"upscore2", "upscore_pool4"}:
        assert {k: v.shape for k, v in params[name].items()} == {
            "kernel": (4, 4, NUM_CLASSES, NUM_CLASSES)}  # no bias, as in Caffe
    for name, channels in [("score_fr", 4096), ("score_pool4", 512), ("score_pool3", 256)]:
        if name in params:
            assert params[name]["kernel"].shape == (1, 1, int(channels * SLIM), NUM_CLASSES)
    fixed = jax.eval_shape(lambda: FCN(NUM_CLASSES, variant, width=SLIM,
                                       learn_intermediate_upsampling=False).init(
        INIT_KEY, jnp.zeros((1, 1, 1, 3)), train=False))["params"]
    assert set(fixed) == LAYERS[variant] - {"upscore2", "upscore_pool4"}


def test_full_fcn8s_parameter_count():
    """The paper's Table 1 lists FCN-VGG16 at 134M parameters."""
    params = jax.eval_shape(lambda: FCN(21, "8s").init(
        INIT_KEY, jnp.zeros((1, 1, 1, 3)), train=False))["params"]
    heads = (4096 + 512 + 256 + 3) * 21 + 2 * 4 * 4 * 21 * 21
    count = sum(x.size for x in jax.tree.leaves(params))
    assert count == VGG16_WITHOUT_FC8 + heads
    assert round(count / 1e6) == 134


def caffe_bilinear_filter(size):
    """fcn.berkeleyvision.org surgery.upsample_filt: the 2D bilinear kernel."""
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    grid = np.ogrid[:size, :size]
    return (1 - abs(grid[0] - centre) / factor) * (1 - abs(grid[1] - centre) / factor)


def test_initialisation_follows_the_paper(fcn8s_params):
    for name in ("score_fr", "score_pool4", "score_pool3"):
        assert not np.any(fcn8s_params[name]["kernel"]) and not np.any(fcn8s_params[name]["bias"])
    expected = np.zeros((4, 4, NUM_CLASSES, NUM_CLASSES), np.float32)
    for c in range(NUM_CLASSES):
        expected[:, :, c, c] = caffe_bilinear_filter(4)
    for name in ("upscore2", "upscore_pool4"):
        np.testing.assert_allclose(fcn8s_params[name]["kernel"], expected, atol=1e-7)


def test_upscore2_is_a_bilinear_upsampler_at_init(fcn8s_params):
    """Inside the net, upscore2's output equals bilinear resizing of score_fr away from borders."""
    model = FCN(NUM_CLASSES, "8s", width=SLIM)
    capture = jax.jit(lambda variables, x: model.apply(
        variables, x, train=False, capture_intermediates=True, mutable=["intermediates"])[1])
    outputs = capture({"params": random_scores(fcn8s_params)}, images((2, 97, 101, 3)))
    scores = outputs["intermediates"]["score_fr"]["__call__"][0]
    upscored = outputs["intermediates"]["upscore2"]["__call__"][0]
    n, h, w, k = scores.shape
    assert h >= 3 and w >= 3 and upscored.shape == (n, 2 * h + 2, 2 * w + 2, k)
    resized = jax.image.resize(scores, (n, 2 * h, 2 * w, k), "linear")
    # Caffe's deconvolution output u is the resized pixel u - 1 (half-pixel centres); the outer
    # ring of each has only one input tap (deconvolution) or clamps (resize).
    np.testing.assert_allclose(upscored[:, 2:2 * h - 1, 2:2 * w - 1],
                               resized[:, 1:2 * h - 2, 1:2 * w - 2], rtol=1e-5, atol=1e-5)


def test_fixed_and_learned_upsampling_agree_at_init(fcn8s_params):
    params = random_scores(fcn8s_params)
    x = images((1, 37, 53, 3))
    learned = jitted_apply("8s")({"params": params}, x, train=False)
    fixed_params = {k: v for k, v in params.items() if k not in ("upscore2", "upscore_pool4")}
    fixed = jitted_apply("8s", learn_intermediate_upsampling=False)(
        {"params": fixed_params}, x, train=False)
    np.testing.assert_allclose(learned, fixed, rtol=1e-5, atol=1e-5)
    assert np.abs(learned).max() > 0


def block_centre(x, stride, first_padding=100):
    """Centre (image coordinates) of the pixels whose stride-`stride` cell is the one x falls in.

    With centre-tap kernels, conv1_1 (3x3, pad p) moves pixel x to x + p - 1, later 3x3 pad-1
    convs keep it, and each 2x2 pool halves it (floor), so the cell is floor((x + p - 1) / stride).
    """
    shift = first_padding - 1
    return stride * ((x + shift) // stride) - shift + (stride - 1) / 2


def centre_tap_params(params, on_path_score):
    """Backbone of centre-tap kernels (channel means), one scoring layer on, bilinear upsampling."""
    def set_param(layer, name, value):
        if name == "bias" or layer.startswith("score") and layer != on_path_score:
            return np.zeros(value.shape, np.float32)
        if layer.startswith("upscore"):
            return value
        kernel = np.zeros(value.shape, np.float32)
        kh, kw, cin, _ = value.shape
        kernel[kh // 2, kw // 2] = 1.0 / cin
        return kernel
    return jax.tree.map(jnp.asarray, map_params(params, set_param))


@pytest.mark.parametrize("variant,score_layer,stride", [
    ("32s", "score_fr", 32), ("16s", "score_fr", 32), ("16s", "score_pool4", 16),
    ("8s", "score_fr", 32), ("8s", "score_pool4", 16), ("8s", "score_pool3", 8)])
def test_delta_response_is_centred_on_its_cell(variant, score_layer, stride, fcn8s_params):
    height, width = 97, 101  # odd: the last pooling windows are partial (ceil mode)
    deltas = [(40, 50), (13, 77), (88, 92), (0, 0), (61, 2)]
    x = np.zeros((len(deltas), height, width, 3), np.float32)
    for n, (p, q) in enumerate(deltas):
        x[n, p, q] = 1.0
    params = centre_tap_params(params_for(variant, fcn8s_params), score_layer)
    response = np.asarray(jitted_apply(variant)({"params": params}, x, train=False))[..., 0]
    for n, (p, q) in enumerate(deltas):
        centre = (block_centre(p, stride), block_centre(q, stride))
        r = response[n]
        assert centre[0] < height - 1 and centre[1] < width - 1  # else the test is vacuous
        peak = r[math.floor(centre[0]), math.floor(centre[1])]
        assert peak > 0 and np.isclose(peak, r.max(), rtol=1e-5), (p, q)
        # Mirror symmetric about the centre (a half-integer) along both axes, where both sides
        # are inside the image.
        for axis, c in enumerate(centre):
            size = r.shape[axis]
            inside = [j for j in range(size) if 0 <= 2 * c - j < size]
            mirrored = [int(2 * c - j) for j in inside]
            np.testing.assert_allclose(np.take(r, inside, axis), np.take(r, mirrored, axis),
                                       rtol=1e-5, atol=1e-6 * peak, err_msg=f"{(p, q)} axis {axis}")


@pytest.mark.parametrize("variant", sorted(LAYERS))
def test_flip_symmetric_weights_give_a_flip_equivariant_net(variant, fcn8s_params):
    """With every kernel mirror-symmetric, mirroring the image mirrors the logits: exactly when
    the crops are centred, i.e. at the right offsets. Sizes 58 and 90 make every pooling stage
    even-sized, so pooling windows map onto pooling windows under the mirror."""
    rng = np.random.default_rng(0)

    def symmetric(layer, name, value):
        noise = rng.normal(size=value.shape).astype(np.float32)
        if name == "bias":
            return 0.1 * noise
        noise = noise + noise[::-1] + noise[:, ::-1] + noise[::-1, ::-1]
        return noise * np.sqrt(0.5 / np.prod(value.shape[:3]))

    params = jax.tree.map(jnp.asarray, map_params(params_for(variant, fcn8s_params), symmetric))
    x = images((1, 58, 90, 3))
    apply = functools.partial(jitted_apply(variant), {"params": params}, train=False)
    logits = np.asarray(apply(x))
    scale = np.abs(logits).max()
    assert scale > 0
    for axis in (1, 2):
        np.testing.assert_allclose(np.asarray(apply(jnp.flip(x, axis))), np.flip(logits, axis),
                                   atol=1e-4 * scale, err_msg=f"axis {axis}")


def test_dropout_only_when_training(fcn8s_params):
    params = {"params": random_scores(fcn8s_params)}
    apply = jitted_apply("8s")
    x = images((1, 37, 53, 3))
    evaluation = apply(params, x, train=False)
    np.testing.assert_array_equal(evaluation, apply(params, x, train=False))
    with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
        apply(params, x, train=True)
    train_a = apply(params, x, train=True, rngs={"dropout": jax.random.key(1)})
    train_b = apply(params, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(train_a, evaluation) and not np.allclose(train_a, train_b)


def test_jit_matches_eager(fcn8s_params):
    params = {"params": random_scores(fcn8s_params)}
    x = images((1, 21, 27, 3))
    eager = FCN(NUM_CLASSES, "8s", width=SLIM).apply(params, x, train=False)
    np.testing.assert_allclose(jitted_apply("8s")(params, x, train=False), eager,
                               rtol=1e-5, atol=1e-5)


def test_scoring_and_2x_upsampling_layers_get_gradients(fcn8s_params):
    model = FCN(NUM_CLASSES, "8s", width=SLIM)
    params = {"params": random_scores(fcn8s_params)}
    x, target = images((1, 21, 27, 3)), images((1, 21, 27, NUM_CLASSES), seed=2)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, x, train=False) * target)))(params)
    for name in LAYERS["8s"] - {"backbone"}:
        assert np.abs(grads["params"][name]["kernel"]).max() > 0, name


def test_bfloat16_compute_returns_float32_logits(fcn8s_params):
    model = FCN(NUM_CLASSES, "8s", width=SLIM, dtype=jnp.bfloat16)
    out = jax.eval_shape(lambda: model.apply({"params": fcn8s_params}, jnp.zeros((1, 37, 53, 3)),
                                             train=False))
    assert out.dtype == jnp.float32 and out.shape == (1, 37, 53, NUM_CLASSES)
