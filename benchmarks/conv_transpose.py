"""Transposed-convolution speed: our ConvTranspose vs PyTorch's conv_transpose2d vs lax.conv_transpose.

Run: `.venv/bin/python benchmarks/conv_transpose.py` (about a minute on 2 CPU cores). Prints a
markdown table of warm fwd+bwd (output plus gradients w.r.t. input and kernel, random cotangent) and
forward-only times, best of `repeats`. torch_over_ours >= 1.0 means ours is at least as fast.

Shapes are FCN-8s's learnable upsampling layers at a 224x224 input with 21 classes (VOC), batch 2.
With FCN's pad 100 on conv1_1 the maps are 422 -> pools (ceil mode) 211, 106, 53 (pool3),
27 (pool4), 14 (pool5) -> fc6 7x7 valid -> 8x8 score_fr; upscore2 gives 18x18, to which score_pool4
is cropped; upscore_pool4 gives 38x38, to which score_pool3 is cropped; upscore8 gives 312x312,
cropped to 224. Plus the wide case of the original performance report (28x28, 256 -> 256, batch 8),
and a DCGAN / U-Net style 2x upsampling with an odd kernel (k3 s2 pad 1 output_padding 1, which
PyTorch writes that way and TF/Flax as "SAME" up to the crop side).
PyTorch is optional (a reference, never a dependency): without it the torch columns are empty.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from report import best_seconds, import_torch, machine, markdown_table
from segattn_jax import compilation
from segattn_jax.layers.upsampling import ConvTranspose, conv_transpose_lax


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    batch: int
    size: int  # input height = width
    kernel: int
    stride: int
    in_features: int
    out_features: int
    padding: int = 0
    output_padding: int = 0

    @property
    def out_size(self) -> int:
        return (self.size - 1) * self.stride + self.kernel - 2 * self.padding + self.output_padding


CASES = (
    Case("FCN-8s upscore2", 2, 8, 4, 2, 21, 21),
    Case("FCN-8s upscore_pool4", 2, 18, 4, 2, 21, 21),
    Case("FCN-8s upscore8", 2, 38, 16, 8, 21, 21),
    Case("wide (issue)", 8, 28, 4, 2, 256, 256),
    Case("2x odd kernel (DCGAN/U-Net)", 8, 32, 3, 2, 64, 64, padding=1, output_padding=1),
)


def _jax_steps(apply: Callable, params, x, cotangent):
    """(fwd+bwd, fwd) jitted steps; fwd+bwd returns the output too so XLA cannot drop the forward."""

    @compilation.jit
    def fwd_bwd(params, x, cotangent):
        y, vjp = jax.vjp(apply, params, x)
        return y, vjp(cotangent)

    fwd = compilation.jit(apply)
    return (
        lambda: jax.block_until_ready(fwd_bwd(params, x, cotangent)),
        lambda: jax.block_until_ready(fwd(params, x)),
        np.asarray(fwd(params, x)),
    )


def _torch_steps(torch, x: np.ndarray, kernel: np.ndarray, cotangent: np.ndarray, case: Case):
    """Same steps for torch.nn.functional.conv_transpose2d (NCHW, weight (in, out, kh, kw))."""
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    wt = torch.tensor(kernel.transpose(2, 3, 0, 1).copy(), requires_grad=True)
    ct = torch.tensor(cotangent.transpose(0, 3, 1, 2).copy())
    conv = functools.partial(torch.nn.functional.conv_transpose2d, stride=case.stride,
                             padding=case.padding, output_padding=case.output_padding)

    def fwd_bwd():
        xt.grad = wt.grad = None
        y = conv(xt, wt)
        y.backward(ct)
        return y

    def fwd():
        with torch.no_grad():
            return conv(xt, wt)

    return fwd_bwd, fwd, fwd().numpy().transpose(0, 2, 3, 1)


def run(repeats: int = 20, budget_s: float = 2.0, cases: tuple[Case, ...] = CASES) -> list[dict]:
    """One dict per case: milliseconds per step (best of `repeats`, see report.best_seconds) and ratios."""
    torch = import_torch()
    rows = []
    for case in cases:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((case.batch, case.size, case.size, case.in_features), np.float32)
        layer = ConvTranspose(case.out_features, case.kernel, case.stride, case.padding,
                              case.output_padding, use_bias=False)
        params = layer.init(jax.random.key(0), x)
        kernel = np.asarray(params["params"]["kernel"])
        cotangent = rng.standard_normal((case.batch, case.out_size, case.out_size, case.out_features),
                                        np.float32)

        def lax_apply(params, x, case=case):
            return conv_transpose_lax(x, params["params"]["kernel"], case.stride, case.padding,
                                      case.output_padding)

        steps, outputs = {}, {}
        steps["ours_fwd_bwd"], steps["ours_fwd"], outputs["ours"] = _jax_steps(
            layer.apply, params, jnp.asarray(x), jnp.asarray(cotangent)
        )
        steps["lax_fwd_bwd"], steps["lax_fwd"], outputs["lax"] = _jax_steps(
            lax_apply, params, jnp.asarray(x), jnp.asarray(cotangent)
        )
        if torch is not None:
            steps["torch_fwd_bwd"], steps["torch_fwd"], outputs["torch"] = _torch_steps(
                torch, x, kernel, cotangent, case
            )
        ms = {name: 1e3 * seconds
              for name, seconds in best_seconds(steps, repeats, budget_s).items()}
        row = {
            "case": case.name,
            "input": f"{case.batch}x{case.size}x{case.size}x{case.in_features}",
            "kernel/stride": f"k{case.kernel} s{case.stride} p{case.padding} op{case.output_padding} "
                             f"-> {case.out_features}",
        }
        for kind in ("fwd_bwd", "fwd"):
            for impl in ("ours", "torch", "lax"):
                row[f"{impl}_{kind}_ms"] = ms.get(f"{impl}_{kind}")
        for impl in ("torch", "lax"):
            diff = None if impl not in outputs else float(np.max(np.abs(outputs["ours"] - outputs[impl])))
            row[f"max_abs_diff_vs_{impl}"] = diff
        for impl in ("torch", "lax"):
            other = row[f"{impl}_fwd_bwd_ms"]
            row[f"{impl}_over_ours"] = None if other is None else other / row["ours_fwd_bwd_ms"]
        rows.append(row)
    return rows


def main() -> None:
    print(machine())
    if import_torch() is None:
        print("torch not installed: torch columns skipped (pip install torch==2.13.0)")
    print(markdown_table(run()))


if __name__ == "__main__":
    main()
