"""DeconvNet: Noh, Hong & Han, "Learning Deconvolution Network for Semantic Segmentation",
ICCV 2015; and EDeconvNet, its ensemble with FCN-8s.

The encoder is VGG16 (backbones/vgg.py) through fc7, with batch norm after every convolution and
every pool's switches kept. The decoder mirrors it: a deconvolution turns fc7's 1x1 map back into
pool5's 7x7, then each pool is undone by max unpooling with that pool's switches
(layers/upsampling.py: each value goes back to where its max came from) followed by the mirrored
convolutions (3x3 "deconvolutions" of stride 1, which are convolutions), each with batch norm and
ReLU, and a 1x1 class score at the input's resolution. Unpooling restores the exact positions of
strong activations, which the paper credits for its fine object detail; the learned layers then
densify the sparse unpooled maps.

The paper runs it on object proposals, each one's window (`proposal_windows`: the box, or a
square around it) warped to 224x224, and merges the proposals' score maps by a pixel-wise max
(`paste_max`; given `proposals`, `__call__` does this); any input whose pool5 covers fc6's
window works too, so it also runs on whole images.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from segattn_jax.backbones.vgg import (VGG16, VGG16_BN_EPSILON, VGG16_BN_MOMENTUM,
                                       scaled_features)
from segattn_jax.layers.conv import Conv
from segattn_jax.layers.normalization import batch_norm
from segattn_jax.layers.sampling import bilinear_at
from segattn_jax.layers.upsampling import ConvTranspose, max_unpool
from segattn_jax.models.fcn import FCN
from segattn_jax.ops.boxes import center_size, from_center_size

Array = Any

# The decoder after deconv-fc6: (the pool it undoes, its convolutions' (name, VGG16 widths)).
DECODER = (
    ("pool5", (("deconv5_1", 512), ("deconv5_2", 512), ("deconv5_3", 512))),
    ("pool4", (("deconv4_1", 512), ("deconv4_2", 512), ("deconv4_3", 256))),
    ("pool3", (("deconv3_1", 256), ("deconv3_2", 256), ("deconv3_3", 128))),
    ("pool2", (("deconv2_1", 128), ("deconv2_2", 64))),
    ("pool1", (("deconv1_1", 64), ("deconv1_2", 64))),
)
# What each pool pooled: the map its unpooling restores the size of.
_POOLED = {"pool5": "conv5_3", "pool4": "conv4_3", "pool3": "conv3_3", "pool2": "conv2_2",
           "pool1": "conv1_2"}


def _batch_norm(train: bool, dtype: Any, name: str) -> nn.Module:
    """The decoder's batch norm, the encoder's settings (backbones/vgg.py)."""
    return batch_norm(frozen=False, train=train, use_scale=True, momentum=VGG16_BN_MOMENTUM,
                      epsilon=VGG16_BN_EPSILON, dtype=dtype, name=name)


class _ConvBNReLU(nn.Module):
    features: int
    kernel: int
    dtype: Any

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        x = Conv(self.features, (self.kernel, self.kernel), padding="SAME", dtype=self.dtype,
                 param_dtype=jnp.float32, kernel_init=nn.initializers.he_normal(), name="conv")(x)
        return nn.relu(_batch_norm(train, self.dtype, "bn")(x))


def crop_proposals(images: Array, boxes: Array, size: int) -> Array:
    """Each box's region resampled bilinearly to size x size: images (N, H, W, C), boxes
    (N, P, 4) in pixels (x1, y1, x2, y2) -> (N, P, size, size, C). Crop pixel u's centre is at
    y1 + (u + 0.5) (y2 - y1) / size, the mapping `paste_max` inverts."""
    n, count = boxes.shape[:2]
    steps = (jnp.arange(size) + 0.5) / size
    x1, y1, x2, y2 = (boxes[..., i, None].astype(jnp.float32) for i in range(4))  # (N, P, 1)
    # Pixel i's centre is at coordinate i + 0.5, bilinear_at's index i.
    rows = jnp.broadcast_to((y1 + steps * (y2 - y1) - 0.5)[..., :, None], (n, count, size, size))
    cols = jnp.broadcast_to((x1 + steps * (x2 - x1) - 0.5)[..., None, :], (n, count, size, size))
    crops = bilinear_at(images, rows.reshape(n, -1), cols.reshape(n, -1), outside="clamp")
    return crops.reshape(n, count, size, size, images.shape[-1])


def proposal_windows(boxes: Array, context: float) -> Array:
    """The windows the network sees proposals through: (N, P, 4) boxes (x1, y1, x2, y2) ->
    windows. context 0: the boxes themselves, warped to a square crop whatever their shape.
    context c > 0: a square of side c times each box's longer side around its centre, which is
    how the training crops (data/preprocess.py, `object_crop`) frame their objects: same aspect,
    same margin. The authors' inference code likewise crops "extended" EdgeBox boxes (its
    cached `boxes_padded`; inference/generate_EDeconvNet_CRF_results.m)."""
    if not context:
        return boxes
    cx, cy, box_width, box_height = center_size(boxes.astype(jnp.float32))
    side = context * jnp.maximum(box_width, box_height)
    return from_center_size(cx, cy, side, side)


def paste_max(scores: Array, boxes: Array, valid: Array, image_hw: tuple[int, int]) -> Array:
    """The paper's aggregation of instance-wise predictions: each proposal's score map resampled
    (bilinearly) into its box on the image and zero elsewhere, then the pixel-wise max over the
    proposals. scores (N, P, S, S, K), boxes (N, P, 4) in pixels (x1, y1, x2, y2), valid (N, P)
    -> (N, H, W, K). One proposal at a time (`lax.scan`), so memory holds one image-sized map."""
    n, _, size = scores.shape[:3]
    height, width = image_hw
    rows, cols = jnp.arange(height) + 0.5, jnp.arange(width) + 0.5  # pixel centres

    def paste(best, proposal):
        score, box, ok = proposal  # (N, S, S, K), (N, 4), (N,)
        x1, y1, x2, y2 = (box[:, i, None] for i in range(4))  # (N, 1) each
        # The crop's pixel u has its centre at y1 + (u + 0.5) * (y2 - y1) / S.
        u = (rows - y1) * size / jnp.maximum(y2 - y1, 1e-3) - 0.5  # (N, H)
        v = (cols - x1) * size / jnp.maximum(x2 - x1, 1e-3) - 0.5  # (N, W)
        sampled = bilinear_at(score, jnp.broadcast_to(u[:, :, None], (n, height, width)),
                              jnp.broadcast_to(v[:, None, :], (n, height, width)),
                              outside="clamp")
        inside = (((rows >= y1) & (rows < y2))[:, :, None] & ((cols >= x1) & (cols < x2))[:, None]
                  & ok[:, None, None])
        return jnp.maximum(best, jnp.where(inside[..., None], sampled, 0.0)), None

    best = jnp.zeros((n, height, width, scores.shape[-1]), jnp.float32)
    best, _ = lax.scan(paste, best, (jnp.moveaxis(scores.astype(jnp.float32), 1, 0),
                                     jnp.moveaxis(boxes.astype(jnp.float32), 1, 0),
                                     jnp.moveaxis(valid, 1, 0)))
    return best


class DeconvNet(nn.Module):
    """Images (N, H, W, 3) -> logits (N, H, W, K): on the whole image, or on `proposals`.

    Whole image: any size; it is padded to a multiple of 32 whose pool5 holds fc6's window
    (224x224 with the paper's 7). With proposals (N, P, 4) in pixels (x1, y1, x2, y2) and
    proposal_valid (N, P): each proposal's region warped to proposal_size x proposal_size and
    labelled, the score maps merged by `paste_max` (images of any size).

    Attributes:
      num_classes: K.
      width: channel multiplier of encoder and decoder (<1 for slim CPU runs).
      fc6_kernel: fc6's window on pool5 (7, VGG16's) and deconv-fc6's.
      proposal_size: the side proposals are warped to (the paper's 224: its training crops').
      proposal_context: what each proposal's crop covers (`proposal_windows`): 0, its box;
        c > 0, a square c times the box's longer side, framed as the training crops frame
        their objects.
      caffe_input: RGB [0, 1] images are converted to what ImageNet VGG16 weights expect.
      encoder_batch_norm: the paper's batch norm after every encoder conv and fc (True); False
        keeps the encoder as the batch-norm-free VGG16 whose weights it starts from.
      full_resolution_features: the width of deconv1_1 and deconv1_2, the convolutions after
        the last unpooling that carry the class evidence to the 1x1 score (0: VGG16's 64 times
        `width`, the paper's). No switches constrain them; a slim net's 8 channels are fewer
        than the classes it scores.
      dtype: compute dtype; parameters stay float32 and logits are returned in float32.
    """

    num_classes: int
    width: float = 1.0
    fc6_kernel: int = 7
    proposal_size: int = 224
    proposal_context: float = 0.0
    caffe_input: bool = False
    encoder_batch_norm: bool = True
    full_resolution_features: int = 0
    dtype: Any = jnp.float32

    def __call__(self, images: Array, *, train: bool, proposals: Array | None = None,
                 proposal_valid: Array | None = None) -> Array:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"DeconvNet expects RGB images (N, H, W, 3); got shape "
                             f"{images.shape}.")
        if proposals is None:
            return self._logits(images, train)
        n, count = proposals.shape[:2]
        size = self.proposal_size
        proposals = proposal_windows(proposals, self.proposal_context)
        crops = crop_proposals(images, proposals, size).reshape(n * count, size, size, 3)
        scores = self._logits(crops, train).reshape(n, count, size, size, self.num_classes)
        valid = jnp.ones((n, count), bool) if proposal_valid is None else proposal_valid
        return paste_max(scores, proposals, valid, images.shape[1:3])

    @nn.compact
    def _logits(self, images: Array, train: bool) -> Array:
        """The network on whole inputs, padded at the bottom and right (zeros) to a multiple of
        32 that pool5 can hold fc6's window in, the logits cropped back to the input's size."""
        height, width = images.shape[1:3]
        padded_size = [max(-(-side // 32) * 32, 32 * self.fc6_kernel) for side in (height, width)]
        images = jnp.pad(images, ((0, 0), (0, padded_size[0] - height),
                                  (0, padded_size[1] - width), (0, 0)))
        # The paper's net has no dropout: batch norm regularizes it.
        encoder = VGG16(width=self.width, first_padding=1, fc6_kernel=self.fc6_kernel,
                        dropout_rate=0.0, caffe_input=self.caffe_input,
                        batch_norm=self.encoder_batch_norm, pool_switches=True, dtype=self.dtype,
                        name="encoder")
        x, layers = encoder(images, train=train)
        # deconv-fc6: fc7's map back to pool5's size (the adjoint of fc6's VALID window).
        x = ConvTranspose(scaled_features(512, self.width), self.fc6_kernel, 1, padding="VALID",
                          dtype=self.dtype, kernel_init=nn.initializers.he_normal(),
                          name="deconv6")(x)
        x = nn.relu(_batch_norm(train, self.dtype, "deconv6_bn")(x))
        # VGG16's pools tile their input (2x2, stride 2): the unpooling's fast form.
        tiling = {spec.name: spec.kernel for spec in encoder.layer_specs()
                  if spec.kind == "pool" and spec.kernel == spec.stride}
        last_unpooling = DECODER[-1][0]
        for pool, convs in DECODER:
            x = max_unpool(x, layers[f"{pool}_switches"], layers[_POOLED[pool]].shape[1:3],
                           window=tiling.get(pool))
            for name, features in convs:
                features = scaled_features(features, self.width)
                if pool == last_unpooling and self.full_resolution_features:
                    features = self.full_resolution_features
                x = _ConvBNReLU(features, 3, self.dtype, name=name)(x, train)
        logits = Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=jnp.float32,
                      name="score")(x)
        return logits[:, :height, :width].astype(jnp.float32)


class EDeconvNet(nn.Module):
    """The paper's ensemble: DeconvNet and FCN-8s on the same image, their class probability
    maps averaged. Returns the log of the average, so that argmax, softmax and the pixel loss
    read it as logits. Each member's variables are a trained run's (`config.init_from`, one
    workdir per member); its own names ("deconvnet", "fcn") are where they load.

    Attributes:
      num_classes: K.
      width: both members' channel multiplier.
      deconvnet: DeconvNet's other fields (not num_classes, width, proposal_size, dtype).
      fcn: FCN's other fields (not num_classes, width, dtype); variant '8s' by default.
      proposal_size: DeconvNet's.
      dtype: both members' compute dtype.
    """

    num_classes: int
    width: float = 1.0
    deconvnet: Any = None
    fcn: Any = None
    proposal_size: int = 224
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: Array, *, train: bool, proposals: Array | None = None,
                 proposal_valid: Array | None = None) -> Array:
        """With proposals, DeconvNet labels them (the paper's instance-wise inference) and FCN-8s
        the whole image, as the paper ensembles them."""
        deconvnet = DeconvNet(self.num_classes, width=self.width,
                              proposal_size=self.proposal_size, dtype=self.dtype,
                              name="deconvnet", **dict(self.deconvnet or {}))
        fcn = FCN(self.num_classes, width=self.width, dtype=self.dtype, name="fcn",
                  **dict(self.fcn or {}))
        log_probabilities = jnp.stack([
            jax.nn.log_softmax(deconvnet(images, train=train, proposals=proposals,
                                         proposal_valid=proposal_valid)),
            jax.nn.log_softmax(fcn(images, train=train))])
        return jax.nn.logsumexp(log_probabilities, axis=0) - jnp.log(2.0)
