"""VGG16 backbone: Caffe geometry (sizes, ceil pooling, coordinate maps), parameters, dropout, dtype."""
import math
from fractions import Fraction

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segattn_jax.backbones.vgg import (VGG16, CoordMap, layer_coord_maps, max_pool_ceil,
                                       vgg16_layer_specs)
from segattn_jax.layers.upsampling import max_pool_with_argmax

SLIM = 1 / 16
# torchvision/Caffe VGG16 has 138,357,544 parameters; fc8 (4096*1000 + 1000) is not part of the
# convolutionalized backbone.
VGG16_WITHOUT_FC8 = 138_357_544 - (4096 * 1000 + 1000)
# Initialising with the default (partitionable threefry) key takes ~5x longer to compile on CPU;
# the initial values do not matter here.
INIT_KEY = jax.random.key(0, impl="rbg")


def caffe_sizes(size: int, first_padding: int) -> dict[str, int]:
    """Each layer's output size by Caffe's own formulas (conv floor, pooling ceil)."""
    sizes = {}
    for spec in vgg16_layer_specs(first_padding):
        span = size + 2 * spec.padding - spec.kernel
        size = (math.ceil(span / spec.stride) if spec.kind == "pool" else span // spec.stride) + 1
        sizes[spec.name] = size
    return sizes


@pytest.fixture(scope="module")
def slim_vgg():
    model = VGG16(width=SLIM)
    variables = jax.jit(model.init, static_argnames="train")(
        INIT_KEY, jnp.zeros((1, 37, 53, 3)), train=False)
    return model, variables, jax.jit(model.apply, static_argnames="train")


def test_intermediate_sizes_match_caffe_for_odd_inputs(slim_vgg):
    _, variables, apply = slim_vgg
    images = jax.random.normal(jax.random.key(1), (2, 37, 53, 3))
    fc7, feats = apply(variables, images, train=False)
    rows, cols = caffe_sizes(37, 100), caffe_sizes(53, 100)
    assert {"pool3", "pool4", "pool5", "fc7"} <= set(feats)
    for name, feat in feats.items():
        assert feat.shape[1:3] == (rows[name], cols[name]), name
    assert feats["pool4"].shape[-1] == 512 * SLIM and fc7.shape[-1] == 4096 * SLIM
    np.testing.assert_array_equal(fc7, feats["fc7"])


def test_max_pool_ceil_matches_numpy_with_partial_windows():
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)  # negative values
    expected = np.full((2, 3, 4, 3), -np.inf, np.float32)
    for i in range(3):
        for j in range(4):
            expected[:, i, j] = x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max(axis=(1, 2))
    np.testing.assert_array_equal(max_pool_ceil(jnp.asarray(x)), expected)


@pytest.mark.parametrize("hw", [(1, 1), (1, 4), (3, 5), (6, 7)])
def test_max_pool_ceil_agrees_with_the_switch_pool_down_to_inputs_smaller_than_the_window(hw):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(1, *hw, 2)), jnp.float32)
    np.testing.assert_array_equal(max_pool_ceil(x), max_pool_with_argmax(x, 2, 2, ceil_mode=True)[0])


def test_coord_maps_are_receptive_field_centres():
    """Compose the maps, then check against receptive fields traced back layer by layer."""
    specs = vgg16_layer_specs(100)
    maps = layer_coord_maps(specs)
    for upto in ("pool3", "pool4", "pool5", "fc7"):
        path = specs[:[s.name for s in specs].index(upto) + 1]
        for y in range(4):
            lo, hi = y, y
            for spec in reversed(path):
                lo, hi = spec.stride * lo - spec.padding, spec.stride * hi - spec.padding + spec.kernel - 1
            centre = Fraction(lo + hi, 2)
            assert maps[upto].scale * centre + maps[upto].shift == y, (upto, y)
    # Caffe's coord_map numbers for the FCN net (pool4: x/16 + 5.71875, fc7: x/32 - 0.390625).
    assert maps["pool4"] == CoordMap(Fraction(1, 16), Fraction(183, 32))
    assert maps["fc7"] == CoordMap(Fraction(1, 32), Fraction(-25, 64))


def test_deconv_map_inverts_conv_map():
    for kernel, stride, padding in [(4, 2, 0), (64, 32, 0), (3, 1, 1), (16, 8, 4)]:
        roundtrip = CoordMap.conv(kernel, stride, padding).then(CoordMap.deconv(kernel, stride, padding))
        assert roundtrip == CoordMap()


def test_crop_offset_rejects_misalignment():
    with pytest.raises(ValueError, match="stride"):
        CoordMap(Fraction(1, 2)).crop_offset_into(CoordMap())
    with pytest.raises(ValueError, match="first_padding"):
        CoordMap(shift=Fraction(-80)).crop_offset_into(CoordMap())
    with pytest.raises(ValueError, match="misaligned"):
        CoordMap(shift=Fraction(1, 2)).crop_offset_into(CoordMap())


def test_parameters_full_width_count_and_names():
    shapes = jax.eval_shape(lambda: VGG16().init(jax.random.key(0), jnp.zeros((1, 1, 1, 3)),
                                                 train=False))["params"]
    assert list(shapes) == [s.name for s in vgg16_layer_specs() if s.kind == "conv"]
    assert shapes["fc6"]["kernel"].shape == (7, 7, 512, 4096)
    assert shapes["fc7"]["kernel"].shape == (1, 1, 4096, 4096)
    assert sum(x.size for x in jax.tree.leaves(shapes)) == VGG16_WITHOUT_FC8
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes))


def test_dropout_only_when_training(slim_vgg):
    _, variables, apply = slim_vgg
    images = jax.random.normal(jax.random.key(1), (1, 37, 53, 3))
    evaluation = apply(variables, images, train=False)[0]
    np.testing.assert_array_equal(evaluation, apply(variables, images, train=False)[0])
    with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
        apply(variables, images, train=True)
    train_a = apply(variables, images, train=True, rngs={"dropout": jax.random.key(2)})[0]
    train_b = apply(variables, images, train=True, rngs={"dropout": jax.random.key(3)})[0]
    assert not np.allclose(train_a, evaluation) and not np.allclose(train_a, train_b)
    no_dropout = VGG16(width=SLIM, dropout_rate=0.0)
    no_dropout_apply = jax.jit(no_dropout.apply, static_argnames="train")
    np.testing.assert_array_equal(
        no_dropout_apply(variables, images, train=True, rngs={"dropout": jax.random.key(2)})[0],
        evaluation)


def test_compute_dtype_keeps_float32_params(slim_vgg):
    _, variables, _ = slim_vgg
    model = VGG16(width=SLIM, dtype=jnp.bfloat16)
    images = jnp.zeros((1, 37, 53, 3))
    shapes = jax.eval_shape(lambda: model.init(INIT_KEY, images, train=False))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes))
    fc7, feats = jax.jit(model.apply, static_argnames="train")(variables, images, train=False)
    assert fc7.dtype == jnp.bfloat16 and feats["pool3"].dtype == jnp.bfloat16


def test_bad_inputs_raise_clear_errors(slim_vgg):
    model, variables, _ = slim_vgg
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        model.apply(variables, jnp.zeros((37, 53, 3)), train=False)
    plain = VGG16(width=SLIM, first_padding=1)
    with pytest.raises(ValueError, match="first_padding=100"):
        jax.eval_shape(lambda: plain.init(INIT_KEY, jnp.zeros((1, 64, 64, 3)), train=False))


def test_caffe_input_is_keras_vgg16_preprocessing(slim_vgg):
    """RGB in [0, 1] through caffe_input equals Keras' own `vgg16.preprocess_input` (BGR, 0-255,
    minus the ImageNet mean) fed to the plain net: what the released weights were trained on."""
    from keras.applications import vgg16

    model, variables, apply = slim_vgg
    images = np.asarray(jax.random.uniform(jax.random.key(5), (2, 37, 53, 3)))
    ours, _ = model.clone(caffe_input=True).apply(variables, jnp.asarray(images), train=False)
    theirs, _ = apply(variables, jnp.asarray(vgg16.preprocess_input(images * 255.0)), train=False)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * float(np.abs(theirs).max()))
    with pytest.raises(ValueError, match="caffe_input converts RGB"):
        model.clone(caffe_input=True).apply(variables, jnp.zeros((1, 37, 53, 1)), train=False)
