"""`conv2d` / `Conv` against `lax.conv_general_dilated` (values and both gradients), on every path:
XLA's passes with the kernel gradient on the input padded beforehand (strided and unstrided), the
shifted-sum forward of few-tap layers, the 2x2-block passes of few-output layers, the all-GEMM path
of 1x1 and fc-like layers, the per-tap GEMMs of atrous layers, the kernel gradient without
padding-only outputs, and the lax fallback;
plus PyTorch's conv2d where torch is installed."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from segattn_jax.layers.conv import (Conv, conv2d, use_matmul_forward, use_shifted_sum_forward,
                                     use_space_to_depth, use_tap_gemms)

DN = ("NHWC", "HWIO", "NHWC")

# (x shape, kernel hw, out features, strides, padding, dilation); 3x3 over 3 features and 5x5
# over 1 take the shifted-sum forward.
CASES = [
    ((2, 9, 7, 3), (3, 3), 5, 1, "SAME", 1),           # odd sizes
    ((2, 11, 10, 1), (5, 5), 4, 2, ((4, 1), (2, 2)), (1, 2)),  # gray 5x5: strided, dilated
    ((2, 9, 8, 3), (3, 3), 6, 2, "SAME", 1),           # stride 2, SAME
    ((1, 10, 11, 4), (3, 3), 6, 2, "VALID", 2),        # stride + dilation
    ((1, 12, 9, 3), (4, 2), 4, (1, 3), ((2, 1), (0, 3)), 1),  # asymmetric everything
    ((2, 12, 12, 3), (5, 5), 4, 2, ((3, 3), (3, 3)), (2, 1)),
    ((2, 12, 10, 3), (3, 3), 4, 1, ((-1, 2), (0, 0)), 1),  # negative (cropping) padding
    ((2, 5, 5, 8), (1, 1), 4, 1, "VALID", 1),          # 1x1: all GEMM
    ((2, 9, 9, 8), (1, 1), 4, 2, "SAME", 1),           # strided 1x1
    ((2, 7, 7, 16), (7, 7), 4, 1, "VALID", 1),         # fc6-like: all GEMM
    # Few features at stride 1: passes on 2x2 blocks (odd sizes, even and 5x5 kernels).
    ((2, 9, 7, 8), (3, 3), 8, 1, "SAME", 1),
    ((2, 9, 8, 6), (3, 3), 12, 1, ((0, 2), (1, 1)), 1),  # the input gradient alone
    ((1, 10, 9, 16), (4, 2), 3, 1, ((2, 1), (0, 1)), 1),
    ((2, 8, 11, 5), (5, 5), 7, 1, ((1, 3), (2, 0)), 1),
    # FCN's pad 100, small: most outputs read only padding (dropped from the kernel gradient).
    ((2, 6, 5, 8), (3, 3), 8, 1, ((9, 9), (7, 8)), 1),
    ((1, 6, 7, 3), (3, 3), 64, 2, ((9, 9), (8, 7)), 1),
    ((1, 5, 6, 3), (3, 3), 4, 3, ((8, 10), (10, 8)), 2),
    # Atrous layers whose taps read mostly padding: one GEMM per tap over its image outputs.
    ((2, 9, 8, 4), (3, 3), 6, 1, ((3, 3), (3, 3)), 3),
    ((1, 10, 7, 5), (2, 3), 4, 1, ((4, 1), (2, 5)), (4, 2)),
    ((1, 6, 6, 3), (3, 3), 4, 1, ((8, 8), (-1, 4)), 2),  # a tap column reads no image
]


def _reference(x, kernel, strides, padding, dilation):
    strides = (strides, strides) if isinstance(strides, int) else strides
    dilation = (dilation, dilation) if isinstance(dilation, int) else dilation
    return lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=DN, precision=lax.Precision.HIGHEST)


def _values_and_grads(fn, x, kernel, cotangent):
    y, vjp = jax.vjp(fn, x, kernel)
    return (y, *vjp(cotangent))


@pytest.mark.parametrize("shape,kernel_hw,features,strides,padding,dilation", CASES)
def test_conv2d_equals_lax_values_and_gradients(shape, kernel_hw, features, strides, padding,
                                                dilation):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((*kernel_hw, shape[-1], features)), jnp.float32)
    expected_y = _reference(x, kernel, strides, padding, dilation)
    cotangent = jnp.asarray(rng.standard_normal(expected_y.shape), jnp.float32)
    expected = _values_and_grads(lambda x, k: _reference(x, k, strides, padding, dilation),
                                 x, kernel, cotangent)
    ours = jax.jit(lambda x, k, g: _values_and_grads(
        lambda x, k: conv2d(x, k, strides, padding, dilation), x, k, g))(x, kernel, cotangent)
    for name, a, b in zip(("output", "d/dx", "d/dkernel"), ours, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=name)
    # Undifferentiated (inference), the forward may take another formulation (_pixel_blocks).
    inference = jax.jit(lambda x, k: conv2d(x, k, strides, padding, dilation))(x, kernel)
    np.testing.assert_allclose(inference, expected_y, rtol=1e-4, atol=1e-4)


def test_cpu_paths_are_the_ones_described():
    """The GEMM forward is used exactly for 1x1 kernels and patch matrices of at most 512 rows,
    no taller than wide."""
    assert use_matmul_forward((2, 8, 8, 4096), (1, 1, 4096, 4096), (8, 8))
    assert use_matmul_forward((2, 14, 14, 512), (7, 7, 512, 4096), (8, 8))  # FCN's fc6
    assert use_matmul_forward((8, 7, 7, 512), (3, 3, 512, 512), (7, 7))  # 392 rows
    assert not use_matmul_forward((2, 422, 422, 64), (3, 3, 64, 64), (422, 422))
    assert not use_matmul_forward((2, 38, 38, 512), (3, 3, 512, 84), (38, 38))  # 2888 rows
    assert not use_matmul_forward((8, 8, 8, 32), (3, 3, 32, 32), (8, 8))  # wider than 288 cols
    x, kernel = jnp.ones((1, 16, 16, 8)), jnp.ones((1, 1, 8, 8))
    hlo = jax.jit(lambda x, k: conv2d(x, k, 1, "VALID")).lower(x, kernel).as_text()
    assert "convolution" not in hlo and "dot_general" in hlo


def test_atrous_layers_reading_mostly_padding_run_as_one_gemm_per_tap():
    """SSD300's fc6 (dilation 6, pad 6, 19x19: 62% of its multiply-adds read the image) takes
    the per-tap GEMMs in every pass; a VALID atrous layer and undilated ones do not."""
    fc6 = ((19, 19), (3, 3, 512, 1024), (1, 1), ((6, 6), (6, 6)), (6, 6), (19, 19))
    assert use_tap_gemms(*fc6)
    assert not use_tap_gemms((19, 19), (3, 3, 512, 1024), (1, 1), ((0, 0), (0, 0)), (6, 6),
                             (7, 7))
    assert not use_tap_gemms((19, 19), (3, 3, 512, 512), (1, 1), ((1, 1), (1, 1)), (1, 1),
                             (19, 19))
    assert not use_tap_gemms((19, 19), (3, 3, 512, 1024), (2, 2), ((6, 6), (6, 6)), (6, 6),
                             (10, 10))
    x, kernel = jnp.ones((1, 19, 19, 16)), jnp.ones((3, 3, 16, 32))
    step = jax.jit(jax.value_and_grad(lambda x, k: conv2d(x, k, 1, ((6, 6), (6, 6)), 6).sum(),
                                      argnums=(0, 1)))
    hlo = step.lower(x, kernel).as_text()
    assert not _convolutions(hlo) and hlo.count("stablehlo.dot_general") == 27


def test_few_tap_forward_is_a_shifted_sum_and_its_gradients_stay_xla_convolutions():
    assert use_shifted_sum_forward((3, 3, 3, 64)) and use_shifted_sum_forward((5, 5, 1, 32))
    assert not use_shifted_sum_forward((3, 3, 4, 8)) and not use_shifted_sum_forward((7, 7, 3, 64))
    x, kernel = jnp.ones((1, 16, 16, 3)), jnp.ones((3, 3, 3, 8))
    forward = jax.jit(lambda x, k: conv2d(x, k, 1, "SAME")).lower(x, kernel).compile().as_text()
    assert "convolution(" not in forward
    grads = jax.jit(jax.grad(lambda x, k: conv2d(x, k, 1, "SAME").sum(), argnums=(0, 1)))
    assert grads.lower(x, kernel).compile().as_text().count("convolution(") == 2  # dx and dk


def test_passes_producing_few_features_run_on_blocks_of_pixels_and_padding_outputs_are_dropped():
    """A stride-1 8 -> 8 layer's three passes are convolutions over 32 features (2x2 blocks), an
    8 -> 16 layer's input gradient alone (it produces 8 features), and FCN-like padding leaves the
    kernel gradient a convolution over the outputs that read the image."""
    assert use_space_to_depth(8, (3, 3, 8, 8), (1, 1), (1, 1))
    assert not use_space_to_depth(16, (3, 3, 8, 16), (1, 1), (1, 1))
    assert not use_space_to_depth(8, (3, 3, 8, 8), (2, 2), (1, 1))
    assert not use_space_to_depth(8, (3, 3, 8, 8), (1, 1), (2, 2))
    assert not use_space_to_depth(8, (1, 1, 8, 8), (1, 1), (1, 1))
    x = jnp.ones((1, 16, 16, 8))
    for features, blocked in ((8, 3), (16, 1)):
        kernel = jnp.ones((3, 3, 8, features))
        step = jax.jit(jax.value_and_grad(lambda x, k: conv2d(x, k, 1, "SAME").sum(),
                                          argnums=(0, 1)))
        convolutions = _convolutions(step.lower(x, kernel).as_text())
        assert len(convolutions) == 3
        assert sum(f"2x2x32x{4 * features}xf32" in c for c in convolutions) == blocked
    # Inference: the 8 -> 8 layer's blocks of pixels come from a 2x2/2 convolution, not a
    # transpose that XLA would fuse with the input's producer; 16 features keep the transpose.
    for features, convolutions in ((8, 2), (16, 1)):
        x, kernel = jnp.ones((1, 16, 16, features)), jnp.ones((3, 3, features, 8))
        forward = jax.jit(lambda x, k: conv2d(x, k, 1, "SAME")).lower(x, kernel).as_text()
        assert len(_convolutions(forward)) == convolutions
    # pad 30 around 16x16: 44x44 outputs, of which 18x18 read the image.
    x, kernel = jnp.ones((1, 16, 16, 16)), jnp.ones((3, 3, 16, 32))
    grad = jax.jit(jax.grad(lambda k: conv2d(x, k, 1, ((30, 30), (30, 30))).sum()))
    (convolution,) = _convolutions(grad.lower(kernel).as_text())
    assert "(tensor<1x20x20x16xf32>, tensor<1x18x18x32xf32>) -> tensor<3x3x16x32xf32>" in convolution


def _convolutions(stablehlo: str) -> list[str]:
    return [line for line in stablehlo.splitlines() if "stablehlo.convolution" in line]


def test_kernel_gradient_is_xla_convolution_of_the_input_padded_beforehand():
    x, kernel = jnp.ones((1, 16, 16, 16)), jnp.ones((3, 3, 16, 64))
    grad = jax.jit(jax.grad(lambda k: conv2d(x, k, 1, "SAME").sum()))
    (convolution,) = _convolutions(grad.lower(kernel).as_text())
    assert "pad = [[0, 0], [0, 0]]" in convolution
    assert "(tensor<1x18x18x16xf32>, tensor<1x16x16x64xf32>) -> tensor<3x3x16x64xf32>" in convolution


def test_conv_module_is_a_drop_in_flax_conv():
    """Same parameters (names, shapes, init) and outputs as flax.linen.Conv, all padding modes."""
    x = jax.random.normal(jax.random.key(0), (2, 11, 9, 3))
    for kwargs in (dict(padding="SAME", strides=2), dict(padding="VALID", kernel_dilation=2),
                   dict(padding=((1, 2), (0, 1))), dict(padding="CIRCULAR"),
                   dict(feature_group_count=3, features=6)):
        kwargs = {"features": 4, "kernel_size": (3, 3), **kwargs}
        ours, theirs = Conv(**kwargs), nn.Conv(**kwargs)
        params = theirs.init(jax.random.key(1), x)
        assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == jax.tree.map(
            jnp.shape, params)
        np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-5,
                                   atol=1e-5, err_msg=str(kwargs))


def test_bfloat16_gemm_paths_accumulate_in_float32():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 256)), jnp.bfloat16)
    kernel = jnp.asarray(rng.standard_normal((1, 1, 256, 8)), jnp.bfloat16)
    y = conv2d(x, kernel, 1, "VALID")
    assert y.dtype == jnp.bfloat16
    exact = _reference(x.astype(jnp.float32), kernel.astype(jnp.float32), 1, "VALID", 1)
    np.testing.assert_allclose(y.astype(jnp.float32), exact, rtol=2e-2, atol=0.25)


def test_bad_shapes_say_what_is_expected():
    with pytest.raises(ValueError, match=r"x \(N, H, W, C\) and kernel \(kh, kw, C, O\)"):
        conv2d(jnp.ones((8, 8, 3)), jnp.ones((3, 3, 3, 4)))
    with pytest.raises(ValueError, match="smaller than the"):
        conv2d(jnp.ones((1, 2, 2, 3)), jnp.ones((3, 3, 3, 4)), padding="VALID")


def test_matches_pytorch_conv2d():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 13, 11, 3)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 3, 5)).astype(np.float32)
    ours = conv2d(jnp.asarray(x), jnp.asarray(kernel), 2, ((1, 1), (1, 1)), 2)
    theirs = torch.nn.functional.conv2d(torch.tensor(x.transpose(0, 3, 1, 2)),
                                        torch.tensor(kernel.transpose(3, 2, 0, 1)),
                                        stride=2, padding=1, dilation=2)
    np.testing.assert_allclose(ours, theirs.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
