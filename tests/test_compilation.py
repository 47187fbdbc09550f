"""`compilation.jit`: the XLA:CPU options reach the compiled program, the user's XLA_FLAGS win,
and other backends get none; temporaries come in heaps malloc can reuse where most of a
program's bytes fit one; gradients behind `materialized_on_cpu` keep their norm out of the
convolutions; a residual stream behind `fusion_boundary_on_cpu` is not recomputed block after
block."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from segattn_jax import compilation
from segattn_jax.layers.conv import conv2d

YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"


def _conv(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_convolutions_compile_outside_ynnpack_fusions():
    x, kernel = jnp.ones((2, 16, 16, 32)), jnp.ones((3, 3, 32, 32))
    hlo = compilation.jit(_conv).lower(x, kernel).compile().as_text()
    assert "convolution(" in hlo and "ynn_fusion" not in hlo  # XLA 0.10.2 default: in one
    assert jnp.allclose(compilation.jit(_conv)(x, kernel), _conv(x, kernel))


def test_users_xla_flags_win_and_other_backends_get_no_options(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert compilation.compiler_options() == compilation.CPU_COMPILER_OPTIONS
    assert compilation.compiler_options(xla_backend_optimization_level=0) == {
        **compilation.CPU_COMPILER_OPTIONS, "xla_backend_optimization_level": 0}
    monkeypatch.setenv("XLA_FLAGS", f"--{YNN_OPTION}=LIBRARY_FUSION_TYPE_DOT")
    assert YNN_OPTION not in compilation.compiler_options()
    monkeypatch.setattr(compilation, "persistent_cache_on", lambda: False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert type(compilation.jit(_conv)) is not type(jax.jit(_conv))  # heaps of our choosing
    monkeypatch.setenv("XLA_FLAGS", f"--{compilation.HEAP_SIZE_OPTION}=1048576")
    assert type(compilation.jit(_conv)) is type(jax.jit(_conv))  # the user's
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert compilation.compiler_options(xla_backend_optimization_level=0) == {}


def _mlp_gradient(rows: int):
    """The gradient of an 8-layer 1024-wide MLP over `rows` rows and its arguments: activations
    of rows x 4 KiB, all live at once."""
    def loss(kernels, x):
        for kernel in kernels:
            x = jnp.tanh(x @ kernel)
        return jnp.mean(x ** 2)

    return jax.grad(loss), ([jnp.ones((1024, 1024))] * 8, jnp.ones((rows, 1024)))


def _temporary_blocks(jitted, args, dump: Path) -> list[int]:
    """Bytes of each block XLA allocates for the temporaries of `jitted(*args)`, from the buffer
    assignment it dumps (the dump option joins the jitted function's own)."""
    jitted.lower(*args).compile(compiler_options={"xla_dump_to": str(dump)})
    assignment = next(dump.glob("*cpu_after_optimizations-buffer-assignment.txt")).read_text()
    return [int(line.split()[3].rstrip(",")) for line in assignment.splitlines()
            if line.startswith("allocation ") and "preallocated-temp" in line]


@pytest.fixture
def without_persistent_cache(monkeypatch):
    """As a run without JAX's persistent compilation cache (the tests run with one), where
    `compilation.jit` may choose heaps."""
    monkeypatch.setattr(compilation, "persistent_cache_on", lambda: False)


def test_temporaries_come_in_heaps_where_every_array_fits_one(tmp_path,
                                                              without_persistent_cache):
    """One block above glibc's largest mmap threshold (32 MiB) is mapped and faulted in afresh
    on every call; heaps of at most 16 MiB come back from malloc's free lists."""
    gradient, args = _mlp_gradient(rows=2048)  # 8 MiB activations, 72 MiB of temporaries
    plain = jax.jit(gradient, compiler_options=compilation.compiler_options())
    one_block = _temporary_blocks(plain, args, tmp_path / "one")
    assert len(one_block) == 1 and one_block[0] > 32 * 2**20  # what the heaps are for
    heaps = _temporary_blocks(compilation.jit(gradient), args, tmp_path / "heaps")
    assert len(heaps) > 1 and max(heaps) <= compilation.HEAP_SIZE
    assert sum(heaps) >= one_block[0]


def test_a_few_arrays_larger_than_a_heap_still_get_heaps(tmp_path, without_persistent_cache):
    """As Inception-ResNet-v2's stem among its blocks: each large array gets a heap of its own,
    the many small ones share reused heaps."""
    gradient, (kernels, x) = _mlp_gradient(rows=2048)

    def with_a_large_input(kernels, x, large):  # large @ kernel: a 32 MiB array
        return gradient(kernels, x + jnp.tanh(large @ kernels[0]).reshape(-1, 4, 1024)[:, 0])

    args = (kernels, x, jnp.ones((8192, 1024)))
    text = jax.jit(with_a_large_input).lower(*args).as_text()
    assert 0 < compilation.share_of_bytes_above(compilation.HEAP_SIZE, text) <= (
        compilation.MAX_SHARE_ABOVE_HEAP)
    heaps = _temporary_blocks(compilation.jit(with_a_large_input), args, tmp_path)
    assert len(heaps) > 2 and max(heaps) > compilation.HEAP_SIZE


def test_a_program_mostly_in_arrays_larger_than_a_heap_keeps_one_block(
        tmp_path, without_persistent_cache):
    """Each such array would get a heap of its own, mapped per call anyway, sharing memory with
    no other (DeconvNet's paper-size step: 1.4x the temporaries, and slower)."""
    gradient, args = _mlp_gradient(rows=8192)  # 32 MiB activations
    text = jax.jit(gradient).lower(*args).as_text()
    assert compilation.share_of_bytes_above(compilation.HEAP_SIZE, text) > (
        compilation.MAX_SHARE_ABOVE_HEAP)
    assert len(_temporary_blocks(compilation.jit(gradient), args, tmp_path)) == 1


def test_with_the_persistent_cache_every_program_keeps_one_block(tmp_path):
    """XLA:CPU cannot serialize a program with several temporary blocks (the cache would warn
    and compile it again in every process)."""
    assert compilation.persistent_cache_on()  # conftest's cache
    gradient, args = _mlp_gradient(rows=2048)
    assert len(_temporary_blocks(compilation.jit(gradient), args, tmp_path)) == 1


def test_inside_another_trace_jit_is_a_plain_nested_jit(without_persistent_cache):
    """Only a top-level jit takes compile options: under `jax.eval_shape`, `jax.grad` of an
    enclosing jit, the function is traced as `jax.jit(fn)`."""
    square_sum = compilation.jit(lambda x: jnp.sum(x ** 2))
    x = jnp.arange(3.0)
    assert jax.eval_shape(square_sum, x) == jax.ShapeDtypeStruct((), jnp.float32)
    np.testing.assert_allclose(jax.jit(jax.grad(square_sum))(x), 2 * x)
    assert square_sum(x) == 5.0


def test_share_of_bytes_above_counts_each_typed_array_by_its_element_size():
    text = "tensor<4xf32> (tensor<4xf32>) -> tensor<2x2xbf16>, tensor<8xi1>, tensor<f32>"
    assert compilation.share_of_bytes_above(8, text) == 32 / 52  # 16 + 16 + 8 + 8 + 4 bytes
    assert compilation.share_of_bytes_above(16, text) == 0.0
    assert compilation.share_of_bytes_above(0, "") == 0.0
    lowered = jax.jit(lambda x: (x > 0, x.astype(jnp.bfloat16))).lower(
        jnp.ones((3, 5, 7), jnp.int8)).as_text()
    assert compilation.share_of_bytes_above(3 * 5 * 7, lowered) > 0  # the bfloat16 result
    assert compilation.share_of_bytes_above(3 * 5 * 7 * 2, lowered) == 0


def _reductions_fused_with_convolutions(hlo: str) -> list[str]:
    """Names of the fused computations of `hlo` that run a convolution and end in a reduce."""
    found, name, has_convolution = [], None, False
    for line in hlo.splitlines():
        if line.startswith("%fused"):
            name, has_convolution = line.split()[0], False
        has_convolution |= name is not None and "convolution(" in line
        if "ROOT" in line and "reduce(" in line and has_convolution:
            found.append(name)
    return found


def test_gradient_norm_stays_out_of_the_kernel_gradient_convolutions():
    """Without the barrier XLA:CPU fuses the norm's sum of squares with each kernel-gradient
    convolution into a YNNPACK reduction (5x slower there at VGG16's sizes)."""
    params = {"k1": jnp.ones((3, 3, 16, 32)), "k2": jnp.ones((3, 3, 32, 32))}
    x = jnp.ones((2, 32, 32, 16))

    def gradient_norm(params, x, barrier):
        def loss(p):
            y = jax.nn.relu(conv2d(x, p["k1"], 1, "SAME"))
            return jnp.sum(conv2d(y, p["k2"], 1, "SAME") ** 2)
        grads = jax.grad(loss)(params)
        return optax.global_norm(compilation.materialized_on_cpu(grads) if barrier else grads)

    hlo = {barrier: compilation.jit(lambda p, x: gradient_norm(p, x, barrier)).lower(
        params, x).compile().as_text() for barrier in (False, True)}
    assert _reductions_fused_with_convolutions(hlo[False])  # what the barrier is for
    assert not _reductions_fused_with_convolutions(hlo[True])
    assert jnp.allclose(gradient_norm(params, x, True), gradient_norm(params, x, False))


def _widest_loop_fusion(hlo: str) -> int:
    """The most operands any loop fusion of `hlo` takes."""
    return max(line.split(" fusion(")[1].split("), kind=")[0].count("%")
               for line in hlo.splitlines() if " fusion(" in line and "kind=kLoop" in line)


def test_a_residual_stream_is_computed_once_per_block():
    """Without the boundary XLA:CPU fuses every earlier block's update into the fusion that
    writes x_k (it widens by two operands a block: O(blocks^2) work); with it, each update reads
    the stream once. Values, NaN included, and gradients pass unchanged."""
    blocks, rng = 8, np.random.default_rng(0)
    kernels = [(jnp.asarray(rng.normal(size=(64, 16)) * 0.1, jnp.float32),
                jnp.asarray(rng.normal(size=(16, 64)) * 0.1, jnp.float32)) for _ in range(blocks)]
    x = jnp.asarray(rng.normal(size=(256, 64)), jnp.float32)

    def stream(x, kernels, boundary):
        for a, b in kernels:
            x = jax.nn.relu(x + 0.1 * (jax.nn.relu(x @ a) @ b))
            x = compilation.fusion_boundary_on_cpu(x) if boundary else x
        return x

    widest = {boundary: _widest_loop_fusion(compilation.jit(
        lambda x, k: stream(x, k, boundary)).lower(x, kernels).compile().as_text())
        for boundary in (False, True)}
    assert widest[False] >= blocks  # what the boundary is for
    assert widest[True] <= 3
    with_nan = x.at[0, 0].set(jnp.nan)  # at the probe: the predicate still holds
    bounded = stream(with_nan, kernels, True)
    np.testing.assert_array_equal(bounded, stream(with_nan, kernels, False))
    assert jnp.isfinite(bounded[1:]).all()
    grads = [jax.grad(lambda k: jnp.sum(stream(x, k, boundary) ** 2))(kernels)
             for boundary in (False, True)]
    assert all(jnp.isfinite(g).all() and jnp.abs(g).max() > 0 for g in jax.tree.leaves(grads[0]))
    jax.tree.map(np.testing.assert_array_equal, *grads)
    assert compilation.fusion_boundary_on_cpu(jnp.zeros((0, 3))).shape == (0, 3)
