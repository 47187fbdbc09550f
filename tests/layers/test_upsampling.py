"""Upsampling layers against the lecture's worked examples, numpy references and the vjp identity."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from segattn_jax.layers import (
    ConvTranspose,
    bed_of_nails,
    bilinear_init,
    bilinear_kernel,
    conv2d_transpose,
    conv_transpose,
    conv_transpose_lax,
    max_pool_with_argmax,
    max_unpool,
    nearest_upsample,
    pooled_size,
)
from segattn_jax.layers.upsampling import pad_for_pooling

DN = ("NHWC", "HWIO", "NHWC")


def as_nhwc(rows) -> jax.Array:
    return jnp.asarray(rows, jnp.float32)[None, :, :, None]


def plane(x) -> np.ndarray:
    return np.asarray(x)[0, :, :, 0]


# --- fixed upsampling: lecture worked examples -------------------------------------------------


def test_nearest_upsample_lecture_example():
    expected = [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    np.testing.assert_array_equal(plane(nearest_upsample(as_nhwc([[1, 2], [3, 4]]), 2)), expected)


def test_bed_of_nails_lecture_example():
    expected = [[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]
    np.testing.assert_array_equal(plane(bed_of_nails(as_nhwc([[1, 2], [3, 4]]), 2)), expected)


def test_fixed_upsampling_matches_numpy_for_rectangular_factors():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(nearest_upsample(x, (2, 3)), x.repeat(2, axis=1).repeat(3, axis=2))
    nails = np.zeros((2, 6, 12, 5), np.float32)
    nails[:, ::2, ::3] = x
    np.testing.assert_array_equal(bed_of_nails(x, (2, 3)), nails)


# --- max pooling switches and unpooling --------------------------------------------------------

LECTURE_POOL_INPUT = [[1, 2, 6, 3], [3, 5, 2, 1], [1, 2, 2, 1], [7, 3, 4, 8]]


def test_max_pool_and_unpool_lecture_example():
    pooled, argmax = max_pool_with_argmax(as_nhwc(LECTURE_POOL_INPUT), 2, 2)
    np.testing.assert_array_equal(plane(pooled), [[5, 6], [7, 8]])
    np.testing.assert_array_equal(plane(argmax), [[1 * 4 + 1, 0 * 4 + 2], [3 * 4 + 0, 3 * 4 + 3]])
    unpooled = max_unpool(as_nhwc([[1, 2], [3, 4]]), argmax, (4, 4))
    np.testing.assert_array_equal(plane(unpooled), [[0, 0, 2, 0], [0, 1, 0, 0], [0, 0, 0, 0], [3, 0, 0, 4]])


def numpy_max_pool_with_argmax(x, window, stride):
    """Loop reference: per window, first max in row-major order, flat index into H*W."""
    n, h, w, c = x.shape
    out_h, out_w = (h - window) // stride + 1, (w - window) // stride + 1
    pooled = np.zeros((n, out_h, out_w, c), x.dtype)
    argmax = np.zeros((n, out_h, out_w, c), np.int64)
    for b in range(n):
        for i in range(out_h):
            for j in range(out_w):
                for ch in range(c):
                    win = x[b, i * stride : i * stride + window, j * stride : j * stride + window, ch]
                    a, bb = np.unravel_index(np.argmax(win), win.shape)
                    pooled[b, i, j, ch] = win[a, bb]
                    argmax[b, i, j, ch] = (i * stride + a) * w + j * stride + bb
    return pooled, argmax


@pytest.mark.parametrize("window,stride", [(2, 2), (3, 2), (3, 1)])
def test_max_pool_with_argmax_matches_loop_reference(window, stride):
    x = np.random.default_rng(1).standard_normal((2, 7, 6, 3)).astype(np.float32)
    pooled, argmax = jax.jit(max_pool_with_argmax, static_argnums=(1, 2))(x, window, stride)
    want_pooled, want_argmax = numpy_max_pool_with_argmax(x, window, stride)
    np.testing.assert_array_equal(pooled, want_pooled)
    np.testing.assert_array_equal(argmax, want_argmax)


def test_max_pool_ceil_mode_keeps_partial_windows():
    x = jnp.arange(25.0).reshape(1, 5, 5, 1)
    pooled, argmax = max_pool_with_argmax(x, 2, 2, ceil_mode=True)
    np.testing.assert_array_equal(plane(pooled), [[6, 8, 9], [16, 18, 19], [21, 23, 24]])
    np.testing.assert_array_equal(plane(argmax), plane(pooled).astype(int))  # value == its flat index
    assert max_pool_with_argmax(x, 2, 2)[0].shape == (1, 2, 2, 1)


def caffe_pooled_size(size: int, window: int, stride: int) -> int:
    """Caffe's PoolingLayer::Reshape without padding: float ceil, no clipping."""
    return int(math.ceil(float(size - window) / stride)) + 1


def caffe_max_pool(x: np.ndarray, window: int, stride: int):
    """Caffe's Forward_cpu (MAX, unpadded), one channel: windows clipped to the input, first max."""
    h, w = x.shape
    out_h, out_w = caffe_pooled_size(h, window, stride), caffe_pooled_size(w, window, stride)
    pooled, argmax = np.zeros((out_h, out_w), x.dtype), np.zeros((out_h, out_w), np.int64)
    for i in range(out_h):
        for j in range(out_w):
            win = x[i * stride : i * stride + window, j * stride : j * stride + window]
            a, b = np.unravel_index(np.argmax(win), win.shape)
            pooled[i, j], argmax[i, j] = win[a, b], (i * stride + a) * w + j * stride + b
    return pooled, argmax


def test_pooled_size_is_caffes_ceil_mode_and_whole_windows_in_floor_mode():
    for size in range(1, 12):
        for window in range(1, 5):
            for stride in range(1, window + 1):  # stride <= window: every Caffe net here
                if size >= window:
                    assert pooled_size(size, window, stride) == len(range(0, size - window + 1, stride))
                else:
                    with pytest.raises(ValueError, match="smaller than the pooling window"):
                        pooled_size(size, window, stride)
                caffe = caffe_pooled_size(size, window, stride)
                if caffe >= 1:
                    assert pooled_size(size, window, stride, ceil_mode=True) == caffe
                else:  # Caffe would make an empty (or negative) blob
                    with pytest.raises(ValueError, match="smaller than the pooling window"):
                        pooled_size(size, window, stride, ceil_mode=True)
    # stride > window: a last window starting past the input is dropped (PyTorch; Caffe when padded).
    assert pooled_size(5, 1, 3, ceil_mode=True) == 2


@pytest.mark.parametrize("hw,window,stride", [((1, 1), 2, 2), ((2, 3), 3, 2), ((1, 5), 2, 2),
                                              ((5, 7), 3, 2), ((6, 4), 2, 2)])
def test_ceil_mode_matches_caffe_including_inputs_smaller_than_the_window(hw, window, stride):
    x = np.random.default_rng(4).standard_normal(hw).astype(np.float32)
    pooled, argmax = max_pool_with_argmax(jnp.asarray(x)[None, :, :, None], window, stride,
                                          ceil_mode=True)
    want_pooled, want_argmax = caffe_max_pool(x, window, stride)
    np.testing.assert_array_equal(plane(pooled), want_pooled)
    np.testing.assert_array_equal(plane(argmax), want_argmax)
    if min(hw) < window:  # floor mode has no whole window to pool
        with pytest.raises(ValueError, match="smaller than the pooling window"):
            max_pool_with_argmax(jnp.asarray(x)[None, :, :, None], window, stride)


def test_unpool_of_pool_keeps_maxima_and_gradient_reaches_switches():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 6, 8, 3)), jnp.float32)
    pooled, argmax = max_pool_with_argmax(x, 2, 2)
    unpooled = jax.jit(max_unpool, static_argnums=2)(pooled, argmax, (6, 8))
    is_switch = unpooled != 0
    np.testing.assert_array_equal(np.asarray(unpooled)[is_switch], np.asarray(x)[is_switch])
    assert int(is_switch.sum()) == pooled.size

    cotangent = jnp.asarray(np.random.default_rng(3).standard_normal(unpooled.shape), jnp.float32)
    grad = jax.grad(lambda v: jnp.sum(max_unpool(v, argmax, (6, 8)) * cotangent))(pooled)
    flat = cotangent.reshape(2, 48, 3)
    want = jnp.take_along_axis(flat, argmax.reshape(2, -1, 3), axis=1).reshape(pooled.shape)
    np.testing.assert_allclose(grad, want)
    # And pooling sends its gradient to the same positions: grad of pool == unpool of the cotangent.
    pool_grad = jax.grad(lambda v: jnp.sum(max_pool_with_argmax(v, 2, 2)[0] * pooled))(x)
    np.testing.assert_allclose(pool_grad, unpooled)


@pytest.mark.parametrize("hw,window,ceil_mode", [((8, 6), 2, False), ((9, 7), 2, True),
                                                  ((9, 7), 2, False), ((10, 11), 3, True)])
def test_tiling_pools_values_switches_and_gradients_equal_the_references(hw, window, ceil_mode):
    """window == stride takes `tiled_max` (and max_unpool(window=) its select form): the values
    and switches of the loop reference, XLA's select_and_scatter gradient (ties included), and
    the scatter-add unpooling's values and gradient."""
    rng = np.random.default_rng(5)
    # Rounded values and ReLU zeros: many tied maxima, whose gradient must go to the first one.
    x = jnp.asarray(np.maximum(np.round(rng.standard_normal((2, *hw, 3))), 0), jnp.float32)
    (pooled, argmax), pool_vjp = jax.vjp(
        lambda x: max_pool_with_argmax(x, window, window, ceil_mode=ceil_mode), x)
    padded = pad_for_pooling(x, window, window, ceil_mode=ceil_mode)
    want, want_vjp = jax.vjp(lambda x: nn.max_pool(x, (window,) * 2, (window,) * 2), padded)
    np.testing.assert_array_equal(pooled, want)
    cotangent = jnp.asarray(rng.standard_normal(pooled.shape), jnp.float32)
    zero_switches = np.zeros(argmax.shape, jax.dtypes.float0)
    np.testing.assert_array_equal(pool_vjp((cotangent, zero_switches))[0],
                                  want_vjp(cotangent)[0][:, :hw[0], :hw[1]])
    if not ceil_mode:
        np.testing.assert_array_equal(argmax, numpy_max_pool_with_argmax(
            np.asarray(x), window, window)[1])

    def unpool(v, **kwargs):
        return max_unpool(v, argmax, hw, **kwargs)

    tiled, tiled_vjp = jax.vjp(lambda v: unpool(v, window=window), cotangent)
    scattered, scattered_vjp = jax.vjp(unpool, cotangent)
    np.testing.assert_array_equal(tiled, scattered)
    unpooled_cotangent = jnp.asarray(rng.standard_normal(tiled.shape), jnp.float32)
    np.testing.assert_array_equal(tiled_vjp(unpooled_cotangent)[0],
                                  scattered_vjp(unpooled_cotangent)[0])


def test_tiled_unpool_rejects_a_size_its_pool_cannot_have_pooled():
    pooled, argmax = max_pool_with_argmax(jnp.ones((1, 8, 8, 1)), 2, 2)
    with pytest.raises(ValueError, match="maps no input of size"):
        max_unpool(pooled, argmax, (8, 8), window=3)
    with pytest.raises(ValueError, match="maps no input of size"):
        max_unpool(pooled, argmax, (10, 8), window=2)


def test_unpool_rejects_mismatched_switches():
    with pytest.raises(ValueError, match="argmax shape"):
        max_unpool(jnp.ones((1, 2, 2, 1)), jnp.zeros((1, 2, 2, 2), jnp.int32), (4, 4))


# --- bilinear kernel ---------------------------------------------------------------------------


def test_bilinear_kernel_known_values():
    np.testing.assert_allclose(
        bilinear_kernel(4, 1)[:, :, 0, 0], np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25])
    )
    np.testing.assert_allclose(bilinear_kernel(3, 1)[:, :, 0, 0], np.outer([0.5, 1, 0.5], [0.5, 1, 0.5]))
    kernel = bilinear_kernel(4, 3)
    assert kernel.shape == (4, 4, 3, 3) and kernel.dtype == jnp.float32
    off_diagonal = np.asarray(kernel) * (1 - np.eye(3))[None, None]
    assert not off_diagonal.any()


@pytest.mark.parametrize("size", [2, 4, 5, 8, 9, 16, 32])
def test_bilinear_kernel_equals_caffe_bilinear_filler(size):
    # Caffe's BilinearFiller (sizes of the form 2f - f % 2, where it is meant to be used).
    f = int(np.ceil(size / 2))
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    taps = 1 - np.abs(np.arange(size) / f - c)
    if size == 2 * f - f % 2:
        np.testing.assert_allclose(bilinear_kernel(size, 2)[:, :, 1, 1], np.outer(taps, taps), rtol=1e-6)


def test_bilinear_init_requires_square_kernel_and_equal_features():
    key = jax.random.key(0)
    np.testing.assert_array_equal(bilinear_init(key, (4, 4, 2, 2)), bilinear_kernel(4, 2))
    with pytest.raises(ValueError, match="in == out"):
        bilinear_init(key, (4, 4, 2, 3))


# --- transposed convolution --------------------------------------------------------------------


def lecture_conv_matrix(kernel, stride, length=6):
    """The lecture's X: one row per output of a 1D conv over the padded input of `length` entries."""
    rows = (length - len(kernel)) // stride + 1
    matrix = np.zeros((rows, length))
    for row in range(rows):
        matrix[row, row * stride : row * stride + len(kernel)] = kernel
    return matrix


def line(values) -> jax.Array:
    """A 1D signal as NHWC (1, len, 1, 1)."""
    return jnp.asarray(values, jnp.float32)[None, :, None, None]


# x, y, z = 1, 2, 3 and a, b, c, d = 10, 20, 30, 40 turn the slides' symbols into numbers.
XYZ = np.array([1.0, 2.0, 3.0])
KERNEL_1D = XYZ[:, None, None, None]


def test_lecture_stride_1_pad_1_transpose():
    """X^T a = [ax, ay+bx, az+by+cx, bz+cy+dx, cz+dy, dz] over the padded input; pad 1 drops the ends."""
    a = np.array([10.0, 20.0, 30.0, 40.0])
    transposed = lecture_conv_matrix(XYZ, 1).T @ a
    np.testing.assert_array_equal(transposed, [10, 40, 100, 160, 170, 120])
    np.testing.assert_array_equal(conv_transpose(line(a), KERNEL_1D, 1)[0, :, 0, 0], transposed)
    np.testing.assert_array_equal(conv_transpose(line(a), KERNEL_1D, 1, (1, 0))[0, :, 0, 0], transposed[1:-1])
    adjoint = conv2d_transpose(line(a), KERNEL_1D, (4, 1), 1, [(1, 1), (0, 0)])
    np.testing.assert_array_equal(adjoint[0, :, 0, 0], transposed[1:-1])


def test_lecture_stride_2_pad_1_transpose_gives_four_outputs_from_two():
    """X^T [a, b] = [ax, ay, az+bx, by, bz, 0]; its unpadded part [ay, az+bx, by, bz] has 4 entries."""
    a = np.array([10.0, 20.0])
    transposed = lecture_conv_matrix(XYZ, 2).T @ a
    np.testing.assert_array_equal(transposed, [10, 20, 50, 40, 60, 0])
    unpadded = transposed[1:-1]  # the input of the forward conv is [a, b, c, d] without its pad
    np.testing.assert_array_equal(unpadded, [20, 50, 40, 60])
    pytorch_style = conv_transpose(line(a), KERNEL_1D, (2, 1), (1, 0), output_padding=(1, 0))
    np.testing.assert_array_equal(pytorch_style[0, :, 0, 0], unpadded)
    adjoint = conv2d_transpose(line(a), KERNEL_1D, (4, 1), (2, 1), [(1, 1), (0, 0)])
    np.testing.assert_array_equal(adjoint[0, :, 0, 0], unpadded)
    # Without output_padding it is the adjoint for a 3-entry input, which shares the 2 outputs.
    np.testing.assert_array_equal(conv_transpose(line(a), KERNEL_1D, (2, 1), (1, 0))[0, :, 0, 0], [20, 50, 40])
    np.testing.assert_array_equal(conv_transpose(line(a), KERNEL_1D, (2, 1))[0, :, 0, 0], transposed[:-1])


def test_lecture_3x3_stride_2_pad_1_upsamples_2x2_to_4x4():
    x = as_nhwc([[1.0, 2.0], [3.0, 4.0]])
    kernel = jnp.arange(1.0, 10.0).reshape(3, 3, 1, 1)
    got = conv_transpose(x, kernel, 2, 1, output_padding=1)
    assert got.shape == (1, 4, 4, 1)
    want = np.zeros((6, 6))  # scatter into the padded 6x6 plane, then drop the pad ring
    for i in range(2):
        for j in range(2):
            want[2 * i : 2 * i + 3, 2 * j : 2 * j + 3] += float(x[0, i, j, 0]) * np.asarray(kernel[:, :, 0, 0])
    np.testing.assert_array_equal(plane(got), want[1:-1, 1:-1])
    conv = lambda z: lax.conv_general_dilated(z, kernel, (2, 2), [(1, 1), (1, 1)], dimension_numbers=DN)
    _, vjp = jax.vjp(conv, jnp.zeros((1, 4, 4, 1)))
    np.testing.assert_array_equal(got, vjp(x)[0])


# (kernel, strides, padding, output_padding): k divisible by s, k not divisible, k < s, s = 1,
# FCN's k16 s8, rectangular, PyTorch's output_padding, and the TF/Flax strings.
CONV_T_CASES = [
    (4, 2, 0, 0),
    (4, 2, 1, 0),
    (3, 2, 1, 0),
    (3, 2, 1, 1),
    (5, 3, 2, 0),
    (5, 3, 2, 2),
    (2, 3, 0, 0),
    (1, 2, 0, 1),
    (3, 1, 0, 0),
    (3, 1, 1, 0),
    (16, 8, 4, 0),
    ((3, 4), (2, 1), (1, 0), (1, 0)),
    (3, 2, "SAME", 0),
    (4, 2, "SAME", 0),
    (5, 3, "SAME", 0),
    (2, 3, "SAME", 0),
    (3, 2, "VALID", 0),
    (2, 3, "VALID", 0),
    ((3, 4), (2, 3), "SAME", (1, 0)),
]


def random_conv_t_inputs(kernel_size, seed=0, in_features=3, out_features=4, hw=(5, 4)):
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((2, *hw, in_features)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((kh, kw, in_features, out_features)), jnp.float32)
    return x, kernel


@pytest.mark.parametrize("kernel_size,strides,padding,output_padding", CONV_T_CASES)
def test_fast_conv_transpose_equals_lax_reference_with_gradients(kernel_size, strides, padding, output_padding):
    x, kernel = random_conv_t_inputs(kernel_size, seed=1)
    fast, fast_vjp = jax.vjp(
        jax.jit(lambda x, k: conv_transpose(x, k, strides, padding, output_padding)), x, kernel
    )
    slow, slow_vjp = jax.vjp(lambda x, k: conv_transpose_lax(x, k, strides, padding, output_padding), x, kernel)
    assert fast.shape == slow.shape
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)
    cotangent = jnp.asarray(np.random.default_rng(2).standard_normal(fast.shape), jnp.float32)
    for got, want in zip(fast_vjp(cotangent), slow_vjp(cotangent)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# (input size, kernel, stride, forward padding): even and odd input sizes, uncovered last rows.
ADJOINT_CASES = [
    ((8, 8), 3, 2, "SAME"),
    ((7, 7), 3, 2, "SAME"),
    ((8, 7), 3, 2, [(1, 1), (1, 1)]),
    ((9, 10), 4, 2, [(1, 1), (1, 2)]),
    ((11, 12), 5, 3, "VALID"),
    ((12, 11), 5, 3, "SAME"),
    ((6, 9), (3, 2), (1, 2), [(0, 2), (1, 0)]),
    ((16, 15), 16, 8, [(4, 4), (4, 4)]),
]


@pytest.mark.parametrize("input_hw,kernel_size,strides,padding", ADJOINT_CASES)
def test_conv2d_transpose_is_vjp_of_strided_conv_for_even_and_odd_sizes(input_hw, kernel_size, strides, padding):
    z, kernel = random_conv_t_inputs(kernel_size, hw=input_hw)
    pair = strides if isinstance(strides, tuple) else (strides, strides)
    conv = lambda z: lax.conv_general_dilated(z, kernel, pair, padding, dimension_numbers=DN)
    y, vjp = jax.vjp(conv, z)
    cotangent = jnp.asarray(np.random.default_rng(3).standard_normal(y.shape), jnp.float32)
    got = jax.jit(conv2d_transpose, static_argnums=(2, 3, 4))(
        cotangent, kernel, input_hw, strides, padding if isinstance(padding, str) else tuple(map(tuple, padding))
    )
    assert got.shape == z.shape
    np.testing.assert_allclose(got, vjp(cotangent)[0], rtol=1e-5, atol=1e-5)


def test_conv2d_transpose_says_when_input_size_does_not_match():
    x, kernel = random_conv_t_inputs(3)
    with pytest.raises(ValueError, match="input_hw"):
        conv2d_transpose(x, jnp.swapaxes(kernel, 2, 3), (20, 20), 2, "SAME")


@pytest.mark.parametrize("kernel_size,strides,padding,output_padding", [(5, (3, 2), (1, 2), (2, 1)), (3, 2, 1, 1), (4, 2, 1, 0)])
def test_conv_transpose_matches_torch(kernel_size, strides, padding, output_padding):
    torch = pytest.importorskip("torch")
    x, kernel = random_conv_t_inputs(kernel_size)
    want = torch.nn.functional.conv_transpose2d(
        torch.tensor(np.asarray(x).transpose(0, 3, 1, 2)),
        torch.tensor(np.asarray(kernel).transpose(2, 3, 0, 1)),
        stride=strides,
        padding=padding,
        output_padding=output_padding,
    )
    got = conv_transpose(x, kernel, strides, padding, output_padding)
    np.testing.assert_allclose(got, want.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("kernel_size,strides", [(3, 2), (4, 2), (5, 3), (2, 3), ((3, 4), (2, 1))])
def test_conv_transpose_matches_flax_conv_transpose(padding, kernel_size, strides):
    """flax.linen.ConvTranspose correlates the dilated input with its kernel as is (transpose_kernel
    False): the same numbers as our scatter form with the kernel flipped in space."""
    x, _ = random_conv_t_inputs(kernel_size)
    layer = nn.ConvTranspose(4, kernel_size if isinstance(kernel_size, tuple) else (kernel_size,) * 2,
                             strides if isinstance(strides, tuple) else (strides,) * 2, padding, use_bias=False)
    params = layer.init(jax.random.key(0), x)
    flax_kernel = params["params"]["kernel"]
    got = conv_transpose(x, flax_kernel[::-1, ::-1], strides, padding)
    np.testing.assert_allclose(got, layer.apply(params, x), rtol=1e-5, atol=1e-5)


def test_conv_transpose_rejects_bad_arguments():
    x, kernel = random_conv_t_inputs(4)
    with pytest.raises(ValueError, match="in_features=3"):
        conv_transpose(x, kernel[:, :, :2], 2)
    with pytest.raises(ValueError, match="NHWC"):
        conv_transpose(x[0], kernel, 2)
    with pytest.raises(ValueError, match="strides"):
        conv_transpose(x, kernel, 0)
    with pytest.raises(ValueError, match="padding"):
        conv_transpose(x, kernel, 1, 5)
    with pytest.raises(ValueError, match="'SAME' or 'VALID'"):
        conv_transpose(x, kernel, 2, "FULL")
    with pytest.raises(ValueError, match="smaller than the strides"):
        conv_transpose(x, kernel, 2, 1, output_padding=2)


# --- ConvTranspose module ----------------------------------------------------------------------


@pytest.mark.parametrize("factor,kernel_size", [(2, 4), (8, 16), (2, 3)])
def test_bilinear_conv_transpose_upsamples_constant_to_constant_interior(factor, kernel_size):
    layer = ConvTranspose(2, kernel_size, factor, use_bias=False, kernel_init=bilinear_init)
    x = jnp.full((1, 5, 6, 2), 3.0)
    params = layer.init(jax.random.key(0), x)
    y = jax.jit(layer.apply)(params, x)
    assert y.shape == (1, 4 * factor + kernel_size, 5 * factor + kernel_size, 2)
    np.testing.assert_allclose(y[:, factor:-factor, factor:-factor], 3.0, rtol=1e-6)


def test_conv_transpose_module_params_bias_and_dtype():
    layer = ConvTranspose(7, (4, 3), (2, 1), (1, 0), dtype=jnp.bfloat16, bias_init=nn.initializers.ones)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 4, 3)), jnp.float32)
    params = layer.init(jax.random.key(0), x)
    assert params["params"]["kernel"].shape == (4, 3, 3, 7)
    assert params["params"]["kernel"].dtype == jnp.float32
    y = layer.apply(params, x)
    assert y.dtype == jnp.bfloat16 and y.shape == (2, 10, 6, 7)
    want = conv_transpose(x, params["params"]["kernel"], (2, 1), (1, 0)) + 1.0
    np.testing.assert_allclose(y.astype(jnp.float32), want, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("padding,output_padding", [(1, 1), ("SAME", 0)])
def test_conv_transpose_module_doubles_size_with_odd_kernel(padding, output_padding):
    """The DCGAN / U-Net 2x upsampling with a 3x3 kernel, in PyTorch's and in TF/Flax's terms."""
    layer = ConvTranspose(5, 3, 2, padding, output_padding)
    x = jnp.ones((1, 6, 7, 2))
    params = layer.init(jax.random.key(0), x)
    y = layer.apply(params, x)
    assert y.shape == (1, 12, 14, 5)
    want = conv_transpose(x, params["params"]["kernel"], 2, padding, output_padding)
    np.testing.assert_array_equal(y, want)
