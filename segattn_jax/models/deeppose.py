"""DeepPose (Toshev & Szegedy, CVPR 2014): joint coordinates regressed by a CNN, then refined by a
cascade of CNNs that each look at a crop around the previous stage's estimate of one joint.

Stage 1 reads the whole person crop, resized to `input_size` (the paper's 220x220), and regresses
the k joints normalized by the person box, N(y; b) = (y - b_centre) / b_size (eq. 1), with an L2
loss. Stage s > 1 crops, for each joint i, a box of side sigma * diam(y^{s-1}) centred on the
previous estimate y_i^{s-1} (diam: left shoulder to right hip, the torso's diagonal) from the
full-resolution image, through the bilinear sampler, and regresses the joint's displacement
normalized by that box (eq. 6-7). Each stage has its own network (the paper's architecture,
`PoseNet`); its i-th output pair is read for the crop around joint i.

Training differs from the paper in one way, so that one jitted step trains every stage: the
stages train together, each on the current estimates of the one before it (through
`stop_gradient`, so no stage trains another), instead of one after the other. The paper's
simulated predictions stay: half of a later stage's training crops (of visible joints) are centred
on the true joint displaced by a sample from a normal distribution with the mean and variance of
the previous stage's displacements of that joint (here of the current batch, not of the whole
training set). Every crop's side comes from the estimates it is centred among (simulated or
not), as at test time, where only estimates exist; the paper sizes training crops by the true
pose.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segattn_jax.backbones.vgg import scaled_features
from segattn_jax.layers.conv import Conv
from segattn_jax.layers.normalization import local_response_norm
from segattn_jax.layers.pooling import max_pool
from segattn_jax.layers.sampling import bilinear_at
from segattn_jax.metrics.pose import NUM_JOINTS, TORSO_DIAMETER_JOINTS


class PoseNet(nn.Module):
    """DeepPose's network (its Figure 2, AlexNet's layers): C(96, 11x11/4) - LRN - P - C(256, 5x5)
    - LRN - P - C(384, 3x3) - C(384, 3x3) - C(256, 3x3) - P - F(4096) - F(4096) - F(2k), ReLU
    everywhere but the output, dropout 0.5 after each hidden fc. Images (N, S, S, C) -> (N, k, 2).

    Attributes:
      num_joints: k.
      width: channel multiplier (fc layers included), < 1 for slim CPU runs.
      first_stride: the first conv's stride (4 in the paper at 220x220; 2 keeps detail on the
        small inputs of CPU runs).
      dropout_rate: after each hidden fc.
      dtype: compute dtype; parameters stay float32.
    """

    num_joints: int = NUM_JOINTS
    width: float = 1.0
    first_stride: int = 4
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
        def conv(x, features, kernel, stride=1, name=""):
            return nn.relu(Conv(scaled_features(features, self.width), (kernel, kernel),
                                strides=stride, padding="SAME", dtype=self.dtype,
                                param_dtype=jnp.float32, name=name)(x))

        def pool(x):
            return max_pool(x, 3, 2, padding="SAME")

        x = images.astype(self.dtype)
        x = pool(local_response_norm(conv(x, 96, 11, self.first_stride, "conv1")))
        x = pool(local_response_norm(conv(x, 256, 5, name="conv2")))
        x = conv(conv(conv(x, 384, 3, name="conv3"), 384, 3, name="conv4"), 256, 3, name="conv5")
        x = pool(x).reshape(x.shape[0], -1)
        for name in ("fc6", "fc7"):
            x = nn.relu(nn.Dense(scaled_features(4096, self.width), dtype=self.dtype,
                                 param_dtype=jnp.float32, name=name)(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        # Zero weights: every stage starts from "no change" (the box centre, or no displacement).
        out = nn.Dense(2 * self.num_joints, dtype=self.dtype, param_dtype=jnp.float32,
                       kernel_init=nn.initializers.zeros, name="fc8")(x)
        return out.astype(jnp.float32).reshape(-1, self.num_joints, 2)


def torso_diameter(joints: jax.Array) -> jax.Array:
    """diam(y): left shoulder to right hip (the metrics' torso diameter), (N, k, 2) -> (N,)."""
    a, b = TORSO_DIAMETER_JOINTS
    return jnp.linalg.norm(joints[:, a] - joints[:, b], axis=-1)


def crop_around(images: jax.Array, centres: jax.Array, side: jax.Array, size: int) -> jax.Array:
    """size x size bilinear crops of `images` (N, H, W, C), one per centre (N, k, 2) as (x, y)
    pixels (pixel centres at +0.5), of side `side` (N,) pixels -> (N, k, size, size, C); zeros
    outside the image."""
    steps = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size - 0.5  # sample points in [-.5, .5)
    offsets = side[:, None, None] * steps[None, None, :]                     # (N, 1, size)
    xs = centres[..., 0:1] - 0.5 + offsets                                   # (N, k, size)
    ys = centres[..., 1:2] - 0.5 + offsets
    grid_y = jnp.broadcast_to(ys[..., :, None], ys.shape + (size,))
    grid_x = jnp.broadcast_to(xs[..., None, :], xs.shape[:-1] + (size, size))
    return bilinear_at(images, grid_y, grid_x, outside="zeros")


class DeepPose(nn.Module):
    """The cascade: person crops (N, H, W, C) -> per-stage joint estimates, each (N, k, 2) as
    (x, y) in the crops' pixels.

    Attributes:
      stages: networks in the cascade (1 = stage 1 alone).
      input_size: stage 1's input side (the person crop is resized to it).
      crop_size: later stages' input side (each joint's crop is sampled at it).
      sigma: later stages' crop side in torso diameters (the paper's sigma).
      min_crop: smallest crop side, as a fraction of the image side, for a collapsed estimate
        whose torso diameter is near zero.
      width, first_stride, dropout_rate: every stage's `PoseNet`.
      num_joints: k.
      dtype: compute dtype; parameters stay float32.
    """

    stages: int = 3
    input_size: int = 220
    crop_size: int = 220
    sigma: float = 1.0
    min_crop: float = 0.1
    width: float = 1.0
    first_stride: int = 4
    dropout_rate: float = 0.5
    num_joints: int = NUM_JOINTS
    dtype: Any = jnp.float32

    def setup(self):
        if self.stages < 1:
            raise ValueError(f"model.stages must be at least 1; got {self.stages}.")
        self.networks = [PoseNet(self.num_joints, self.width, self.first_stride,
                                 self.dropout_rate, self.dtype, name=f"stage{s + 1}")
                         for s in range(self.stages)]

    def _stage1(self, images: jax.Array, train: bool) -> jax.Array:
        """Stage 1's normalized estimate (N, k, 2): 0 at the image centre, +-0.5 at its edges."""
        small = jax.image.resize(images, (images.shape[0], self.input_size, self.input_size,
                                          images.shape[-1]), method="bilinear", antialias=True)
        return self.networks[0](small, train=train)

    def _crops(self, images: jax.Array, estimates: jax.Array):
        """Each joint's crop around `estimates` (N, k, 2) and the crops' sides (N,)."""
        side = jnp.maximum(self.sigma * torso_diameter(estimates),
                           self.min_crop * images.shape[1])
        return crop_around(images, estimates, side, self.crop_size), side

    def _refine(self, s: int, images: jax.Array, estimates: jax.Array, train: bool):
        """Stage s (>= 1, 0-based) on crops around `estimates`: the normalized displacement of
        each joint from its crop (N, k, 2) and the crops' sides (N,)."""
        crops, side = self._crops(images, estimates)
        n, k = estimates.shape[:2]
        outputs = self.networks[s](crops.reshape((n * k,) + crops.shape[2:]), train=train)
        # The crop around joint i answers for joint i: its i-th output pair.
        outputs = outputs.reshape(n, k, k, 2)
        return jnp.take_along_axis(outputs, jnp.arange(k)[None, :, None, None], axis=2)[:, :, 0], side

    def __call__(self, images: jax.Array, *, train: bool = False) -> list[jax.Array]:
        size = jnp.array([images.shape[2], images.shape[1]], jnp.float32)
        estimates = [(self._stage1(images, train) + 0.5) * size]
        for s in range(1, self.stages):
            displacement, side = self._refine(s, images, jax.lax.stop_gradient(estimates[-1]),
                                              train)
            estimates.append(estimates[-1] + displacement * side[:, None, None])
        return estimates

    def losses(self, images: jax.Array, joints: jax.Array, visible: jax.Array
               ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        """Each stage's L2 loss on its normalized output over visible joints ({'stage1': ...}),
        and each stage's mean error in pixels on the crops it trained on ({'stage1_error_px':
        ...}). Needs the 'dropout' RNG stream and, past stage 1, 'sample' (simulated
        predictions). A later stage trains on the estimates that the stage before it made in
        this step (simulated ones included), so each stage runs once per step."""
        size = jnp.array([images.shape[2], images.shape[1]], jnp.float32)
        count = jnp.maximum(jnp.sum(visible), 1)
        # Unannotated joints may hold anything (NaN): nothing reads them past this line.
        joints = jnp.where(visible[..., None], joints, 0.0)

        def l2(predicted, target):  # sum over x, y; mean over visible joints
            return jnp.sum(jnp.where(visible[..., None], jnp.square(predicted - target), 0.0)
                           ) / count

        def error_px(estimates):
            distance = jnp.linalg.norm(estimates - joints, axis=-1)
            return jax.lax.stop_gradient(jnp.sum(jnp.where(visible, distance, 0.0)) / count)

        normalized = self._stage1(images, train=True)
        losses = {"stage1": l2(normalized, joints / size - 0.5)}
        estimates = jax.lax.stop_gradient((normalized + 0.5) * size)
        metrics = {"stage1_error_px": error_px(estimates)}
        for s in range(1, self.stages):
            centres = self._simulated(estimates, joints, visible, self.make_rng("sample"))
            displacement, side = self._refine(s, images, centres, train=True)
            losses[f"stage{s + 1}"] = l2(displacement, (joints - centres) / side[:, None, None])
            estimates = jax.lax.stop_gradient(centres + displacement * side[:, None, None])
            metrics[f"stage{s + 1}_error_px"] = error_px(estimates)
        return losses, metrics

    @staticmethod
    def _simulated(estimates: jax.Array, joints: jax.Array, visible: jax.Array,
                   rng: jax.Array) -> jax.Array:
        """Crop centres for training a later stage: per example and visible joint, the previous
        stage's estimate, or (probability 1/2) the true joint plus a displacement drawn from a
        normal with the mean and variance of that joint's displacements in this batch (eq. 8).
        Invisible joints keep the estimate (they train nothing)."""
        joints = jnp.where(visible[..., None], joints, 0.0)
        errors = jnp.where(visible[..., None], estimates - joints, 0.0)
        weight = visible.astype(jnp.float32)[..., None]
        count = jnp.maximum(jnp.sum(weight, axis=0), 1.0)
        mean = jnp.sum(weight * errors, axis=0) / count
        std = jnp.sqrt(jnp.sum(weight * jnp.square(errors - mean), axis=0) / count)
        coin_rng, noise_rng = jax.random.split(rng)
        simulated = joints + mean + std * jax.random.normal(noise_rng, joints.shape)
        use = jax.random.bernoulli(coin_rng, 0.5, joints.shape[:2])[..., None] & (weight > 0)
        return jax.lax.stop_gradient(jnp.where(use, simulated, estimates))
