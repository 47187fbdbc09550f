"""VGG16 (Simonyan & Zisserman 2015), convolutionalized as in FCN (Long, Shelhamer & Darrell 2015).

fc6/fc7 are the classifier's fully connected layers recast as a 7x7 VALID conv and a 1x1 conv, so
the net slides over any input size and yields a coarse map of fc7 features. FCN's reference Caffe
net pads conv1_1 by 100 and pools in Caffe's ceil mode so that every input size, however small or
odd, still has a fc7 map whose upsampled scores cover the whole image.

The layers are one table (`vgg16_layer_specs`) that both builds the net and gives its geometry
(`CoordMap`), so the crop offsets heads compute from it cannot drift from the layers actually run.
"""
from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any, Literal

import flax.linen as nn
import jax.numpy as jnp

from segattn_jax.layers.conv import Conv
from segattn_jax.layers.normalization import batch_norm
from segattn_jax.layers.pooling import max_pool
from segattn_jax.layers.upsampling import max_pool_with_argmax

Array = Any
# Batch norm's settings with `batch_norm=True` (DeconvNet's; Caffe's and PyTorch's defaults).
VGG16_BN_MOMENTUM, VGG16_BN_EPSILON = 0.9, 1e-5

# Channels per conv stage at width 1; a 2x2/2 max pool closes each stage.
_VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
_FC_FEATURES = 4096
_FC6_KERNEL = 7


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One spatial layer: its kind, square kernel, stride, symmetric padding and width-1 channels."""

    name: str
    kind: Literal["conv", "pool"]
    kernel: int
    stride: int = 1
    padding: int = 0
    features: int = 0  # conv only


def vgg16_layer_specs(first_padding: int = 100, fc6_kernel: int = _FC6_KERNEL
                      ) -> tuple[LayerSpec, ...]:
    """VGG16's spatial layers in order, conv1_1 padded by `first_padding`, ending with fc6 and fc7."""
    specs = []
    for stage, widths in enumerate(_VGG16_STAGES, start=1):
        for index, features in enumerate(widths, start=1):
            padding = first_padding if (stage, index) == (1, 1) else 1
            specs.append(LayerSpec(f"conv{stage}_{index}", "conv", 3, 1, padding, features))
        specs.append(LayerSpec(f"pool{stage}", "pool", 2, 2))
    specs.append(LayerSpec("fc6", "conv", fc6_kernel, 1, 0, _FC_FEATURES))
    specs.append(LayerSpec("fc7", "conv", 1, 1, 0, _FC_FEATURES))
    return tuple(specs)


@dataclasses.dataclass(frozen=True)
class CoordMap:
    """Affine map x -> scale * x + shift from input pixel coordinates to a layer's coordinates.

    Coordinates are receptive-field centres, exactly as Caffe's `coord_map` computes them to place
    FCN's crops: composing the maps of a path of layers and comparing two paths gives the offset
    that aligns their outputs. Exact rational arithmetic, so offsets are checked to be integers.
    """

    scale: Fraction = Fraction(1)
    shift: Fraction = Fraction(0)

    @classmethod
    def conv(cls, kernel: int, stride: int = 1, padding: int = 0) -> CoordMap:
        """A convolution or pooling window: output y is centred on input s*y - p + (k-1)/2."""
        return cls(Fraction(1, stride), Fraction(2 * padding - (kernel - 1), 2 * stride))

    @classmethod
    def deconv(cls, kernel: int, stride: int = 1, padding: int = 0) -> CoordMap:
        """A transposed convolution, the inverse geometry of `conv`."""
        return cls(Fraction(stride), Fraction(kernel - 1, 2) - padding)

    def then(self, later: CoordMap) -> CoordMap:
        """This map followed by `later`."""
        return CoordMap(later.scale * self.scale, later.scale * self.shift + later.shift)

    def crop_offset_into(self, reference: CoordMap) -> int:
        """Start index in this layer's output of the window aligned with `reference`'s output.

        Caffe's Crop layer: `reference[i]` and `self[i + offset]` see the same input pixel centre.
        """
        if self.scale != reference.scale:
            raise ValueError(f"Cannot align layers of different strides ({self.scale} vs "
                             f"{reference.scale}); crop only between maps of the same resolution.")
        offset = self.shift - reference.shift
        if offset.denominator != 1 or offset < 0:
            raise ValueError(f"Layers are misaligned by {offset} pixels, so no crop can align them; "
                             "pad the first conv more (FCN uses first_padding=100).")
        return int(offset)


def layer_coord_maps(specs: tuple[LayerSpec, ...]) -> dict[str, CoordMap]:
    """Input-to-layer coordinate map after each layer in `specs`, by layer name."""
    maps, current = {}, CoordMap()
    for spec in specs:
        current = current.then(CoordMap.conv(spec.kernel, spec.stride, spec.padding))
        maps[spec.name] = current
    return maps


def max_pool_ceil(x: Array, window: int = 2, stride: int = 2) -> Array:
    """Max pooling in Caffe's ceil mode: a partial window at the bottom/right edge still pools.

    Odd sizes keep their last row and column (sizes: `pooled_size` with ceil_mode=True).
    """
    return max_pool(x, window, stride, ceil_mode=True)


def scaled_features(features: int, width: float) -> int:
    """Channel count under a width multiplier (at least one channel)."""
    return max(1, int(round(features * width)))


# The ImageNet mean pixel VGG16 was trained with, in its BGR channel order (Keras' "caffe" mode).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


class VGG16(nn.Module):
    """Convolutionalized VGG16: conv1_1 ... pool5, fc6 (7x7 VALID conv), fc7 (1x1 conv).

    Attributes:
      width: multiplier on every channel count (fc6/fc7's 4096 included); <1 for slim CPU runs.
      first_padding: conv1_1's padding; 100 as in FCN, 1 for the plain classifier geometry.
      fc6_kernel: fc6's kernel (7 = VGG's fc6 on a 7x7 pool5); CPU-sized variants on small images
        use a smaller one, which needs far less padding.
      dropout_rate: dropout after fc6 and fc7 (Caffe's drop6/drop7), active only when training.
      last_layer: the layer the net stops after: 'fc7' (FCN), or e.g. 'conv5_3' for the R-CNN
        family's stride-16 feature map (their fc6/fc7 run on each RoI instead).
      num_classes: after fc7, the ImageNet classifier fc8 as a 1x1 conv whose score map is
        averaged over positions (VGG's dense evaluation; one position at 224x224 with
        first_padding=1); 0 leaves it out.
      caffe_input: images come in RGB in [0, 1] and are turned into what VGG16's released
        Caffe and Keras weights expect (BGR in 0-255 minus the ImageNet mean pixel, Keras'
        "caffe" preprocessing) before conv1_1 pads them, so its zero padding is Caffe's.
      batch_norm: batch norm between every convolution (fc6 and fc7 included) and its ReLU,
        as DeconvNet adds it ('<layer>_bn': params scale/bias, batch_stats mean/var); the
        convolutions keep their names, so ImageNet VGG16 weights still load.
      pool_switches: also return every pool's switches ('<pool>_switches': the argmax of
        `layers/upsampling.max_pool_with_argmax`), for a decoder's `max_unpool`.
      dtype: compute dtype; parameters stay float32.
    """

    width: float = 1.0
    first_padding: int = 100
    fc6_kernel: int = _FC6_KERNEL
    dropout_rate: float = 0.5
    last_layer: str = "fc7"
    num_classes: int = 0
    caffe_input: bool = False
    batch_norm: bool = False
    pool_switches: bool = False
    dtype: Any = jnp.float32

    def layer_specs(self) -> tuple[LayerSpec, ...]:
        specs = vgg16_layer_specs(self.first_padding, self.fc6_kernel)
        names = [spec.name for spec in specs]
        if self.last_layer not in names:
            raise ValueError(f"VGG16 has no layer {self.last_layer!r}; valid: {names}.")
        return specs[:names.index(self.last_layer) + 1]

    def coord_maps(self) -> dict[str, CoordMap]:
        """Input-to-layer coordinate maps for every layer (pool3, pool4, fc7, ...)."""
        return layer_coord_maps(self.layer_specs())

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> tuple[Array, dict[str, Array]]:
        """Images (N, H, W, C) -> (last layer's features, {every layer's name (conv1_1 ...
        pool5, fc6, fc7): its output (after ReLU)}, as far as `last_layer`)."""
        if x.ndim != 4:
            raise ValueError(f"VGG16 expects images of shape (N, H, W, C); got shape {x.shape}.")
        if self.width <= 0:
            raise ValueError(f"width must be positive; got {self.width}.")
        if self.caffe_input:
            if x.shape[-1] != 3:
                raise ValueError(f"caffe_input converts RGB images; got {x.shape[-1]} channels.")
            x = x[..., ::-1] * 255.0 - jnp.asarray(CAFFE_MEAN_BGR, x.dtype)
        x = x.astype(self.dtype)
        intermediates = {}
        for spec in self.layer_specs():
            if spec.kind == "pool":
                if self.pool_switches:
                    x, switches = max_pool_with_argmax(x, spec.kernel, spec.stride,
                                                       ceil_mode=True)
                    intermediates[f"{spec.name}_switches"] = switches
                else:
                    x = max_pool_ceil(x, spec.kernel, spec.stride)
                intermediates[spec.name] = x
                continue
            if spec.name == "fc6" and min(x.shape[1:3]) < spec.kernel:
                raise ValueError(
                    f"pool5 is {x.shape[1:3]}, smaller than fc6's {spec.kernel}x{spec.kernel} "
                    f"VALID kernel; use larger images or first_padding=100 (got "
                    f"{self.first_padding}).")
            x = Conv(
                scaled_features(spec.features, self.width),
                (spec.kernel, spec.kernel),
                strides=spec.stride,
                padding=spec.padding,
                kernel_init=nn.initializers.he_normal(),
                dtype=self.dtype,
                param_dtype=jnp.float32,
                name=spec.name,
            )(x)
            if self.batch_norm:
                x = batch_norm(frozen=False, train=train, use_scale=True,
                               momentum=VGG16_BN_MOMENTUM, epsilon=VGG16_BN_EPSILON,
                               dtype=self.dtype, name=f"{spec.name}_bn")(x)
            x = nn.relu(x)
            if spec.name.startswith("fc"):
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            intermediates[spec.name] = x
        if self.num_classes and self.last_layer == "fc7":
            scores = Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=jnp.float32,
                          name="fc8")(x)
            x = jnp.mean(scores.astype(jnp.float32), axis=(1, 2))
        return x, intermediates
