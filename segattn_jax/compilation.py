"""`jit`: `jax.jit` with the XLA:CPU compile options the codebase's CPU speed is measured with;
`materialized_on_cpu`: the barrier one of those options asks of the train step;
`fusion_boundary_on_cpu`: where XLA:CPU's fusion would recompute a residual stream.

Why: XLA:CPU (jax 0.10) hands convolutions to YNNPACK by default, and on the narrow layers of the
mini rows YNNPACK's convolutions are 1.5-3x slower than XLA's Eigen ones (VGG16 at width 1/8:
conv3_1's kernel gradient 7.5 -> 3.1 ms, conv4_2's 13.0 -> 3.1 ms; `benchmarks/conv_passes.py`),
which made FCN-8s mini's train step 0.6-0.7x PyTorch's. So on CPU only YNNPACK's dot and
reduction fusions are kept: without YNNPACK's reductions, XLA:CPU sums a channels-last array over
its leading axes 7-10x slower (a (8, 56, 56, 256) sum: 8.8 ms, with them 0.9-1.2 ms, PyTorch's
1.1 ms), which batch norm's statistics and every bias gradient do. Options are set per
compilation, so GPU and TPU compile with XLA's defaults, and a choice the user made in XLA_FLAGS
wins.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}


def compiler_options(**extra_cpu: Any) -> dict[str, Any]:
    """The options for a compilation on the default backend: on CPU, `CPU_COMPILER_OPTIONS`
    less those the user set in XLA_FLAGS, then the caller's `extra_cpu`; elsewhere none."""
    if jax.default_backend() != "cpu":
        return {}
    user_flags = os.environ.get("XLA_FLAGS", "")
    return {**{name: value for name, value in CPU_COMPILER_OPTIONS.items()
               if f"--{name}=" not in user_flags}, **extra_cpu}


def jit(fn: Callable[..., Any], **jit_kwargs: Any) -> Any:
    """`jax.jit(fn, **jit_kwargs)` compiled with `compiler_options()`."""
    return jax.jit(fn, compiler_options=compiler_options() or None, **jit_kwargs)


def materialized_on_cpu(tree: Any) -> Any:
    """`tree` unchanged, behind an optimization barrier on CPU (GPU/TPU: no barrier).

    Why: with YNNPACK's reduction fusions kept (`CPU_COMPILER_OPTIONS`), XLA:CPU fuses a
    reduction with the convolution that produces its input, and YNNPACK then runs that
    convolution far below XLA's own speed. The gradient norm (the train step's metric, and
    `clip_by_global_norm`'s) is such a reduction over every kernel gradient: in the
    classification + localization VGG16 step (224x224, batch 2) conv1_2's kernel gradient took
    200 ms inside it, and the step 1670 ms against 1347 ms with the gradients behind a barrier
    (FCN-8s and SSD300, whose steps had no such fusion, unchanged)."""
    return jax.lax.platform_dependent(tree, cpu=jax.lax.optimization_barrier,
                                      default=lambda tree: tree)


def fusion_boundary_on_cpu(x: jax.Array) -> jax.Array:
    """`x` unchanged; on CPU, computed once, by a kernel of its own (GPU/TPU: no-op).

    Why: XLA:CPU fuses a cheap elementwise producer into each of its consumers, duplicating it.
    Along a residual stream, x_k+1 = relu(x_k + f_k(x_k)) with every x_k also read by f_k+1's
    GEMMs, the duplicates nest: the fusion that writes x_k recomputes x_1 .. x_k-1 from their
    branch outputs, so n blocks cost O(n^2) passes over the stream: Inception-ResNet-v2's 20
    block17 updates became fusions of 3 to 41 operands, ResNet-101's widest took 120. Behind
    this boundary (fresh processes, batch 8, old / new, ms): Inception-ResNet-v2's forward 1305-
    1322 / 1130-1133 and train step 4819-4882 / 4271-4453, ResNet-101's forward 819-826 /
    652-657, ResNet-50's level. An optimization barrier does not stop it (the compiled program
    keeps no barrier and the same fusions); a conditional does, as nothing fuses across one.
    Its predicate, probe == probe or probe != probe, holds for every value (NaN included) but is
    not a constant, so XLA keeps it and always takes the identity branch. Under sharding the
    probe costs one scalar all-reduce."""

    def behind_conditional(x):
        if x.size == 0:
            return x
        probe = x.reshape(-1)[0]
        return jax.lax.cond((probe == probe) | (probe != probe), lambda x: x, jnp.zeros_like, x)

    return jax.lax.platform_dependent(x, cpu=behind_conditional, default=lambda x: x)
