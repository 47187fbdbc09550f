"""Where convolution time goes, per VGG16 layer and per pass: XLA's native convolution
(`lax.conv_general_dilated`), ours (`segattn_jax.layers.conv.conv2d`) and PyTorch's `conv2d`.

Passes: forward, gradient w.r.t. the input (dx), gradient w.r.t. the kernel (dw); PyTorch is timed
as forward and forward+backward (its autograd computes dx and dw together). Layers are FCN-8s's at
the paper size (224x224 + pad 100, batch 2) and at the mini size (width 1/8, 64x64 + pad 60,
batch 8), then SSD300's (VGG16 at 300x300, the atrous fc6, extras and heads). Milliseconds, best
of `repeats`. This profile is what `layers/conv.py` was built from: XLA:CPU's dw with the padding
inside the convolution is 3-10x its own forward (on an input padded beforehand it is not),
large-kernel/few-pixel layers (fc6) are slow in every pass, and so are passes that produce 8 or
fewer features. Isolated passes overstate some differences: XLA shares one patch matrix between
SSD's class and box heads inside the step, and the 2x2-block passes' transposes cost more inside
the step than alone.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax import lax

from report import best_seconds, import_torch, machine, markdown_table
from segattn_jax import compilation
from segattn_jax.layers.conv import conv2d

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


@dataclasses.dataclass(frozen=True)
class Layer:
    name: str
    batch: int
    size: int  # input height = width
    in_features: int
    out_features: int
    kernel: int
    padding: int
    stride: int = 1
    dilation: int = 1


# Distinct layer shapes of FCN-8s's VGG16 (conv3_3 = conv3_2, etc.), input sizes from the geometry.
PAPER = (
    Layer("conv1_1", 2, 224, 3, 64, 3, 100), Layer("conv1_2", 2, 422, 64, 64, 3, 1),
    Layer("conv2_1", 2, 211, 64, 128, 3, 1), Layer("conv2_2", 2, 211, 128, 128, 3, 1),
    Layer("conv3_1", 2, 106, 128, 256, 3, 1), Layer("conv3_2", 2, 106, 256, 256, 3, 1),
    Layer("conv4_1", 2, 53, 256, 512, 3, 1), Layer("conv4_2", 2, 53, 512, 512, 3, 1),
    Layer("conv5_1", 2, 27, 512, 512, 3, 1), Layer("fc6", 2, 14, 512, 4096, 7, 0),
    Layer("fc7", 2, 8, 4096, 4096, 1, 0),
)
MINI = (
    Layer("conv1_1", 8, 64, 3, 8, 3, 60), Layer("conv1_2", 8, 182, 8, 8, 3, 1),
    Layer("conv2_1", 8, 91, 8, 16, 3, 1), Layer("conv2_2", 8, 91, 16, 16, 3, 1),
    Layer("conv3_1", 8, 46, 16, 32, 3, 1), Layer("conv3_2", 8, 46, 32, 32, 3, 1),
    Layer("conv4_1", 8, 23, 32, 64, 3, 1), Layer("conv4_2", 8, 23, 64, 64, 3, 1),
    Layer("conv5_1", 8, 12, 64, 64, 3, 1), Layer("fc6", 8, 6, 64, 512, 5, 0),
    Layer("fc7", 8, 2, 512, 512, 1, 0),
)
# SSD300's distinct layers (batch 2, 300x300): VGG16's at SSD's sizes, the atrous fc6, fc7, the
# extra layers, and the class/box heads on conv4_3 (38x38), fc7 (19x19) and conv8_2 (10x10).
SSD300 = (
    Layer("conv1_1", 2, 300, 3, 64, 3, 1), Layer("conv1_2", 2, 300, 64, 64, 3, 1),
    Layer("conv2_1", 2, 150, 64, 128, 3, 1), Layer("conv2_2", 2, 150, 128, 128, 3, 1),
    Layer("conv3_1", 2, 75, 128, 256, 3, 1), Layer("conv3_2", 2, 75, 256, 256, 3, 1),
    Layer("conv4_1", 2, 38, 256, 512, 3, 1),
    Layer("conv4_2", 2, 38, 512, 512, 3, 1), Layer("conv5_1", 2, 19, 512, 512, 3, 1),
    Layer("fc6", 2, 19, 512, 1024, 3, 6, dilation=6), Layer("fc7", 2, 19, 1024, 1024, 1, 0),
    Layer("conv8_1", 2, 19, 1024, 256, 1, 0), Layer("conv8_2", 2, 19, 256, 512, 3, 1, stride=2),
    Layer("conv9_2", 2, 10, 128, 256, 3, 1, stride=2), Layer("conv10_2", 2, 5, 128, 256, 3, 0),
    Layer("cls4_3", 2, 38, 512, 84, 3, 1), Layer("loc4_3", 2, 38, 512, 16, 3, 1),
    Layer("cls_fc7", 2, 19, 1024, 126, 3, 1), Layer("cls8_2", 2, 10, 512, 126, 3, 1),
)


def _best_ms(fn, repeats: int) -> float:
    return 1e3 * best_seconds({"fn": fn}, repeats)["fn"]


def _jax_passes(conv, x, kernel, g, repeats: int) -> dict[str, float]:
    fwd = compilation.jit(conv)
    dx = compilation.jit(lambda x, k, g: jax.vjp(lambda x: conv(x, k), x)[1](g)[0])
    dw = compilation.jit(lambda x, k, g: jax.vjp(lambda k: conv(x, k), kernel)[1](g)[0])
    return {"fwd": _best_ms(lambda: fwd(x, kernel).block_until_ready(), repeats),
            "dx": _best_ms(lambda: dx(x, kernel, g).block_until_ready(), repeats),
            "dw": _best_ms(lambda: dw(x, kernel, g).block_until_ready(), repeats)}


def _torch_passes(torch, x, kernel, g, layer: Layer, repeats: int) -> dict[str, float]:
    xt = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2).copy(), requires_grad=True)
    wt = torch.tensor(np.asarray(kernel).transpose(3, 2, 0, 1).copy(), requires_grad=True)
    gt = torch.tensor(np.asarray(g).transpose(0, 3, 1, 2).copy())

    def conv(x, w):
        return torch.nn.functional.conv2d(x, w, stride=layer.stride, padding=layer.padding,
                                          dilation=layer.dilation)

    def fwd():
        with torch.no_grad():
            conv(xt, wt)

    def fwd_bwd():
        xt.grad = wt.grad = None
        conv(xt, wt).backward(gt)

    return {"fwd": _best_ms(fwd, repeats), "fwd_bwd": _best_ms(fwd_bwd, repeats)}


def run(layers=PAPER + MINI, repeats: int = 3) -> list[dict]:
    torch = import_torch()
    rows = []
    for layer in layers:
        keys = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(keys[0], (layer.batch, layer.size, layer.size, layer.in_features))
        kernel = 0.01 * jax.random.normal(
            keys[1], (layer.kernel, layer.kernel, layer.in_features, layer.out_features))
        pads = [(layer.padding, layer.padding)] * 2
        strides, dilation = (layer.stride,) * 2, (layer.dilation,) * 2

        def native(x, k):
            return lax.conv_general_dilated(x, k, strides, pads, rhs_dilation=dilation,
                                            dimension_numbers=_DIMENSIONS)

        def ours(x, k):
            return conv2d(x, k, strides, pads, dilation)

        g = jax.random.normal(keys[2], jax.eval_shape(native, x, kernel).shape)
        lax_ms = _jax_passes(native, x, kernel, g, repeats)
        ours_ms = _jax_passes(ours, x, kernel, g, repeats)
        row = {"layer": layer.name, "input": f"{layer.batch}x{layer.size}x{layer.size}x"
               f"{layer.in_features}", "kernel": f"{layer.kernel}x{layer.kernel}"
               f"{f'/{layer.stride}' if layer.stride > 1 else ''}"
               f"{f' dil {layer.dilation}' if layer.dilation > 1 else ''}->{layer.out_features}"}
        row.update({f"lax_{k}": v for k, v in lax_ms.items()})
        row.update({f"ours_{k}": v for k, v in ours_ms.items()})
        row["lax_total"], row["ours_total"] = sum(lax_ms.values()), sum(ours_ms.values())
        if torch is not None:
            torch_ms = _torch_passes(torch, x, kernel, g, layer, repeats)
            row.update(torch_fwd=torch_ms["fwd"], torch_fwd_bwd=torch_ms["fwd_bwd"],
                       torch_over_ours=torch_ms["fwd_bwd"] / row["ours_total"])
        rows.append(row)
    return rows


def main() -> None:
    print(machine())
    print("Convolution passes per FCN-8s VGG16 layer, ms (paper size rows, then mini size rows):")
    print(markdown_table(run(), digits=1))
    print("SSD300's layers, ms (batch 2, 300x300):")
    print(markdown_table(run(SSD300), digits=1))


if __name__ == "__main__":
    main()
