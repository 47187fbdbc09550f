"""Fully convolutional networks FCN-32s/16s/8s (Long, Shelhamer & Darrell, CVPR 2015 / PAMI 2016).

A convolutionalized VGG16 scores each coarse fc7 cell (stride 32); FCN-16s and FCN-8s fuse in finer
scores from pool4 (stride 16) and pool3 (stride 8) through 2x upsampling, and a last bilinear
upsampling returns to the input resolution. As in the reference Caffe nets (voc-fcn*s/net.py),
conv1_1 pads by 100 so that any input size yields enough coarse cells, and every fusion and the
final output are *cropped* to align with the input. The crop offsets are computed from the layer
geometry (`CoordMap`, Caffe's coord_map arithmetic) rather than hard-coded, and equal the reference
numbers for the standard net: 19 (32s); 5, 27 (16s); 5, 9, 31 (8s).

Initialisation follows the paper: class scoring layers (score_fr, score_pool4, score_pool3) start at
zero, 2x upsampling layers start as bilinear interpolation and are learned, and the final stride-8/16/32
upsampling is fixed bilinear interpolation. (The later reference nets also fix the 2x layers;
`learn_intermediate_upsampling=False` reproduces that.)
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from segattn_jax.backbones.vgg import VGG16, CoordMap, layer_coord_maps, vgg16_layer_specs
from segattn_jax.layers.conv import Conv
from segattn_jax.layers.upsampling import ConvTranspose, bilinear_init, bilinear_kernel, conv_transpose

Array = Any


@dataclasses.dataclass(frozen=True)
class _Fusion:
    """A skip: upsample the running scores 2x, add 1x1 scores of `skip` cropped to match."""

    upsample: str  # 2x upsampling layer applied to the running scores
    score: str  # 1x1 scoring layer on the skip features
    skip: str  # backbone intermediate


# In order of use; FCN-16s uses the first, FCN-8s both (the paper's Fig. 3).
_FUSIONS = (
    _Fusion(upsample="upscore2", score="score_pool4", skip="pool4"),
    _Fusion(upsample="upscore_pool4", score="score_pool3", skip="pool3"),
)
# Variant -> (number of fusions, stride of the final upsampling).
VARIANTS = {"32s": (0, 32), "16s": (1, 16), "8s": (2, 8)}
_FUSION_UPSAMPLING = 2  # the skips' learnable upsampling: kernel 2 * factor, stride factor
_FINAL_CROP = "score"  # Caffe's name for the final crop, aligned with the input image


def _check_variant(variant: str) -> tuple[int, int]:
    if variant not in VARIANTS:
        raise ValueError(f"Unknown FCN variant {variant!r}; choose one of {sorted(VARIANTS)}.")
    return VARIANTS[variant]


def _upsampling_kernel_size(factor: int) -> int:
    """Bilinear upsampling by `factor` needs a kernel of twice the stride (Caffe's upscore layers)."""
    return 2 * factor


def crop_offsets(variant: str, first_padding: int = 100, fc6_kernel: int = 7) -> dict[str, int]:
    """Crop offsets, named after the reference net's Crop layers (score_pool4c, score_pool3c, score).

    `score_pool4c` is where pool4's scores start to align with upscore2's output, and so on; `score`
    is where the final upsampled scores start to align with the input image. They follow from
    composing each path's coordinate map (receptive-field centres), so they hold for every input size.
    """
    num_fusions, final_stride = _check_variant(variant)
    maps = layer_coord_maps(vgg16_layer_specs(first_padding, fc6_kernel))
    scores = maps["fc7"]  # score_fr is 1x1: same geometry as fc7
    offsets = {}
    for fusion in _FUSIONS[:num_fusions]:
        scores = scores.then(CoordMap.deconv(
            _upsampling_kernel_size(_FUSION_UPSAMPLING), _FUSION_UPSAMPLING))
        offsets[fusion.score + "c"] = maps[fusion.skip].crop_offset_into(scores)
    final = scores.then(CoordMap.deconv(_upsampling_kernel_size(final_stride), final_stride))
    offsets[_FINAL_CROP] = final.crop_offset_into(CoordMap())
    return offsets


def _crop(x: Array, offset: int, size: tuple[int, int], what: str) -> Array:
    """Caffe's Crop on H and W: the `size` window of `x` starting at (offset, offset)."""
    height, width = size
    if x.shape[1] < offset + height or x.shape[2] < offset + width:
        raise ValueError(
            f"{what}: cannot crop {size} at offset {offset} from {tuple(x.shape[1:3])}; the "
            "first conv's padding is too small for this input (FCN uses first_padding=100).")
    return x[:, offset:offset + height, offset:offset + width, :]


def _bilinear_upsample(x: Array, factor: int) -> Array:
    """Fixed (non-learned) bilinear upsampling, channel by channel, as a transposed convolution."""
    kernel = bilinear_kernel(_upsampling_kernel_size(factor), x.shape[-1])
    return conv_transpose(x, jnp.asarray(kernel, x.dtype), strides=factor)


class FCN(nn.Module):
    """FCN-32s/16s/8s on a convolutionalized VGG16: images (N, H, W, C) -> logits (N, H, W, K).

    Attributes:
      num_classes: K, the number of classes scored per pixel.
      variant: '32s', '16s' or '8s': the finest skip fused in (none, pool4, pool4 and pool3).
      width: channel multiplier for the backbone (<1 for slim CPU runs).
      first_padding: conv1_1's padding; 100 (the paper's) aligns the output with any input size.
      fc6_kernel: fc6's kernel, 7 as in VGG16; smaller for CPU-sized runs on small images.
      dropout_rate: dropout after fc6 and fc7 when training.
      learn_intermediate_upsampling: learn the 2x upsampling layers (bilinear init), as in the CVPR
        paper; False fixes them to bilinear as in the later reference nets.
      caffe_input: RGB [0, 1] images are converted to the input VGG16's released weights expect
        (`VGG16.caffe_input`); for rows that start from them.
      dtype: compute dtype; parameters stay float32 and logits are returned in float32.
    """

    num_classes: int
    variant: str = "8s"
    width: float = 1.0
    first_padding: int = 100
    fc6_kernel: int = 7
    dropout_rate: float = 0.5
    learn_intermediate_upsampling: bool = True
    caffe_input: bool = False
    dtype: Any = jnp.float32

    def crop_offsets(self) -> dict[str, int]:
        """This net's crop offsets (see the module-level `crop_offsets`)."""
        return crop_offsets(self.variant, self.first_padding, self.fc6_kernel)

    def _score(self, name: str) -> nn.Conv:
        """A class scoring layer: 1x1 conv, zero-initialised as in the paper."""
        return Conv(self.num_classes, (1, 1), kernel_init=nn.initializers.zeros,
                    dtype=self.dtype, param_dtype=jnp.float32, name=name)

    def _upsample2x(self, x: Array, name: str) -> Array:
        if not self.learn_intermediate_upsampling:
            return _bilinear_upsample(x, _FUSION_UPSAMPLING)
        size = _upsampling_kernel_size(_FUSION_UPSAMPLING)
        return ConvTranspose(self.num_classes, (size, size),
                             (_FUSION_UPSAMPLING, _FUSION_UPSAMPLING), use_bias=False,
                             kernel_init=bilinear_init, dtype=self.dtype,
                             param_dtype=jnp.float32, name=name)(x)

    @nn.compact
    def __call__(self, images: Array, *, train: bool) -> Array:
        num_fusions, final_stride = _check_variant(self.variant)
        if images.ndim != 4:
            raise ValueError(f"FCN expects images of shape (N, H, W, C); got shape {images.shape}.")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1; got {self.num_classes}.")
        offsets = self.crop_offsets()

        fc7, features = VGG16(width=self.width, first_padding=self.first_padding,
                              fc6_kernel=self.fc6_kernel,
                              dropout_rate=self.dropout_rate, caffe_input=self.caffe_input,
                              dtype=self.dtype, name="backbone")(images, train=train)
        scores = self._score("score_fr")(fc7)
        for fusion in _FUSIONS[:num_fusions]:
            scores = self._upsample2x(scores, fusion.upsample)
            skip_scores = self._score(fusion.score)(features[fusion.skip])
            crop_name = fusion.score + "c"
            scores = scores + _crop(skip_scores, offsets[crop_name], scores.shape[1:3], crop_name)
        scores = _bilinear_upsample(scores, final_stride)
        logits = _crop(scores, offsets[_FINAL_CROP], images.shape[1:3], _FINAL_CROP)
        return logits.astype(jnp.float32)
