"""`jit`: `jax.jit` with the XLA:CPU compile options the codebase's CPU speed is measured with
(and, where most of a program's bytes fit one, the temporaries in small heaps);
`materialized_on_cpu`: the barrier one of those options asks of the train step;
`fusion_boundary_on_cpu`: where XLA:CPU's fusion would recompute a residual stream.

Why: XLA:CPU (jax 0.10) hands convolutions to YNNPACK by default, and on the narrow layers of the
mini rows YNNPACK's convolutions are 1.5-3x slower than XLA's Eigen ones (VGG16 at width 1/8:
conv3_1's kernel gradient 7.5 -> 3.1 ms, conv4_2's 13.0 -> 3.1 ms; `benchmarks/conv_passes.py`),
which made FCN-8s mini's train step 0.6-0.7x PyTorch's. So on CPU only YNNPACK's dot and
reduction fusions are kept: without YNNPACK's reductions, XLA:CPU sums a channels-last array over
its leading axes 7-10x slower (a (8, 56, 56, 256) sum: 8.8 ms, with them 0.9-1.2 ms, PyTorch's
1.1 ms), which batch norm's statistics and every bias gradient do.

XLA:CPU allocates a program's temporaries as one block per execution, on a worker thread, and
glibc's malloc serves a block that large (above its 32 MiB mmap threshold, and too big for a
thread arena's 64 MiB heaps) by mapping it fresh from the kernel on every call: FCN-8s mini's
train step page-faulted its 71 MiB afresh every step (18k faults, ~18% of the step). With the
temporaries in heaps of at most `HEAP_SIZE` (`HEAP_SIZE_OPTION`), malloc serves them again from
its free lists: 15 faults a step, 98-101 -> 78-86 ms. But an array larger than a heap gets a
heap of its own, mapped per call as before, and arrays in different heaps no longer share memory:
DeconvNet's paper-size step (2x224x224x64 maps throughout its first and last blocks) took 1.4x the
temporaries, 1.2x the faults and ran 2-23% slower; Inception-ResNet-v2's train step at 299x299
(its large arrays only in the stem) ran 6-13% faster (4321-4324 -> 3770-4071 ms, 481k -> 120k
faults). So `jit` uses small heaps only for programs that type at most `MAX_SHARE_ABOVE_HEAP`
of their bytes in arrays larger than a heap (the mini rows: none; Inception-ResNet-v2 13-19%;
ResNet-50, level either way, 33%; DeconvNet, FCN-8s, YOLO and SSD300 at the papers' sizes
55-85%), judged from the program lowered for the first call's arguments, and only without JAX's
persistent compilation cache: XLA:CPU cannot serialize a program with more than one temporary
block ("Multiple temp buffer allocations found"), so such programs would be compiled afresh in
every process, with a warning each time (the tests run with the cache).

Options are set per compilation, so GPU and TPU compile with XLA's defaults, and a choice the user
made in XLA_FLAGS wins.
"""
from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}
HEAP_SIZE_OPTION = "xla_multiheap_size_constraint_per_heap"
HEAP_SIZE = 16 * 2**20  # half of glibc's largest mmap threshold: see the module's docstring
MAX_SHARE_ABOVE_HEAP = 0.25  # measured: see the module's docstring
_TENSOR_TYPE = re.compile(r"tensor<((?:\d+x)*)[a-z]+(\d+)>")  # tensor<8x64x64x3xf32>


def compiler_options(**extra_cpu: Any) -> dict[str, Any]:
    """The options for a compilation on the default backend: on CPU, `CPU_COMPILER_OPTIONS`
    less those the user set in XLA_FLAGS, then the caller's `extra_cpu`; elsewhere none."""
    if jax.default_backend() != "cpu":
        return {}
    return {**{name: value for name, value in CPU_COMPILER_OPTIONS.items()
               if not _set_by_user(name)}, **extra_cpu}


def _set_by_user(option: str) -> bool:
    """Whether the user's XLA_FLAGS set `option`: their choice wins over the codebase's."""
    return f"--{option}=" in os.environ.get("XLA_FLAGS", "")


def jit(fn: Callable[..., Any], **jit_kwargs: Any) -> Any:
    """`jax.jit(fn, **jit_kwargs)` compiled with `compiler_options()`; on CPU with the
    temporaries in heaps of `HEAP_SIZE` if the program lowered for its first call (or first
    `lower`) types at most `MAX_SHARE_ABOVE_HEAP` of its bytes in larger arrays."""
    options = compiler_options()
    if not options or _set_by_user(HEAP_SIZE_OPTION) or persistent_cache_on():
        return jax.jit(fn, compiler_options=options or None, **jit_kwargs)
    return _SmallHeapsIfMostBytesFit(fn, options, jit_kwargs)


def persistent_cache_on() -> bool:
    """Whether JAX writes compiled programs to a persistent cache (`jax_compilation_cache_dir`)."""
    return bool(jax.config.jax_compilation_cache_dir)


def share_of_bytes_above(size: int, lowered_text: str) -> float:
    """Of the bytes of the arrays typed in a lowered (StableHLO) program's text, each counted as
    often as it is typed (by its producer and each consumer), the share in arrays larger than
    `size`: how much of the program's memory traffic small heaps would not serve."""
    sizes = [math.prod(int(dim) for dim in dims.split("x")[:-1]) * max(int(bits), 8) // 8
             for dims, bits in _TENSOR_TYPE.findall(lowered_text)]
    return sum(n for n in sizes if n > size) / max(sum(sizes), 1)


class _SmallHeapsIfMostBytesFit:
    """`jax.jit(fn)` with `options`, plus small heaps where most bytes fit one: decided once,
    on the first call's (or `lower`'s) arguments. Called inside another trace (`jax.eval_shape`,
    an enclosing `jit`), it is `jax.jit(fn)` alone: only a top-level jit takes compile options."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any], jit_kwargs: dict):
        self._one_block = jax.jit(fn, compiler_options=options, **jit_kwargs)
        self._heaps = jax.jit(fn, compiler_options={**options, HEAP_SIZE_OPTION: HEAP_SIZE},
                              **jit_kwargs)
        self._nested = jax.jit(fn, **jit_kwargs)
        self._chosen = None
        functools.update_wrapper(self, fn)

    def _choose(self, args: tuple, kwargs: dict) -> Any:
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs))):
            return self._nested
        if self._chosen is None:
            text = self._one_block.lower(*args, **kwargs).as_text()
            self._chosen = (self._heaps
                            if share_of_bytes_above(HEAP_SIZE, text) <= MAX_SHARE_ABOVE_HEAP
                            else self._one_block)
        return self._chosen

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._choose(args, kwargs)(*args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        return self._choose(args, kwargs).lower(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chosen or self._one_block, name)


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
