"""`compilation.jit`: the XLA:CPU options reach the compiled program, the user's XLA_FLAGS win,
and other backends get none."""
import jax
import jax.numpy as jnp
from jax import lax

from segattn_jax import compilation

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
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert compilation.compiler_options(xla_backend_optimization_level=0) == {}
