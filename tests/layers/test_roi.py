"""RoIAlign against tf.image.crop_and_resize (the same bilinear points) and a linear map; RoIPool
against a direct transcription of the reference Caffe loop; both differentiable."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from segattn_jax.layers.roi import roi_align, roi_pool, warp_regions


def _boxes_inside(rng, batch, count, height, width, scale):
    """Boxes (image pixels) whose RoIAlign samples stay within the feature map's pixel centres."""
    lo = rng.uniform(1.0, [width / 2, height / 2], (batch, count, 2))
    size = rng.uniform(1.0, [width / 2 - 1, height / 2 - 1], (batch, count, 2))
    return (np.concatenate([lo, lo + size], -1) / scale).astype(np.float32)


@pytest.mark.parametrize("sampling_ratio", [1, 2])
def test_roi_align_matches_crop_and_resize_then_average(sampling_ratio):
    rng = np.random.default_rng(sampling_ratio)
    features = rng.normal(size=(2, 16, 20, 3)).astype(np.float32)
    scale, out = 0.5, (4, 5)
    boxes = _boxes_inside(rng, 2, 6, 16, 20, scale)
    ours = roi_align(features, boxes, out, spatial_scale=scale, sampling_ratio=sampling_ratio)

    # The same points for crop_and_resize: the first and last sample of each axis, normalized by
    # (size - 1) (crop_and_resize puts its end points exactly on the box corners).
    s = sampling_ratio
    x1, y1, x2, y2 = np.moveaxis(boxes * scale - 0.5, -1, 0)
    half_h, half_w = (y2 - y1) / out[0] / s / 2, (x2 - x1) / out[1] / s / 2
    normalized = np.stack([(y1 + half_h) / 15, (x1 + half_w) / 19,
                           (y2 - half_h) / 15, (x2 - half_w) / 19], -1).reshape(-1, 4)
    crops = tf.image.crop_and_resize(features, normalized, np.repeat([0, 1], 6),
                                     (out[0] * s, out[1] * s)).numpy()
    expected = crops.reshape(2, 6, out[0], s, out[1], s, 3).mean(axis=(3, 5))
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_roi_align_on_a_linear_map_reads_each_bin_centre():
    # f(y, x) = 10 y + x at pixel centres: bilinear interpolation is exact, so each bin's average
    # is the value at its centre.
    features = (10 * np.arange(8)[:, None] + np.arange(8)[None]).astype(np.float32)
    box = np.array([[[2.0, 1.0, 6.0, 5.0]]], np.float32)  # x 2..6, y 1..5 (pixel edges)
    out = roi_align(features[None, :, :, None], box, 2, spatial_scale=1.0, sampling_ratio=2)
    # Bin centres in pixel-centre coordinates (edge e -> e - 0.5): x 2.5, 4.5; y 1.5, 3.5.
    np.testing.assert_allclose(out[0, 0, :, :, 0], [[17.5, 19.5], [37.5, 39.5]], atol=1e-5)


def test_roi_align_not_aligned_is_the_original_mask_rcnn_mapping():
    features = (10 * np.arange(8)[:, None] + np.arange(8)[None]).astype(np.float32)
    box = np.array([[[2.0, 1.0, 6.0, 5.0]]], np.float32)
    out = roi_align(features[None, :, :, None], box, 2, spatial_scale=1.0, aligned=False)
    np.testing.assert_allclose(out[0, 0, :, :, 0], [[23.0, 25.0], [43.0, 45.0]], atol=1e-5)


def _roi_pool_reference(features, boxes, pooled, scale):
    """The Fast R-CNN Caffe kernel (roi_pooling_layer.cpp), loop for loop, in its float32."""
    height, width, channels = features.shape
    out = np.zeros((len(boxes), pooled, pooled, channels), np.float32)
    c_round = lambda v: int(np.floor(v + 0.5)) if v >= 0 else -int(np.floor(-v + 0.5))
    for r, (x1, y1, x2, y2) in enumerate(boxes):
        start_w, start_h, end_w, end_h = (c_round(v * scale) for v in (x1, y1, x2, y2))
        roi_h, roi_w = max(end_h - start_h + 1, 1), max(end_w - start_w + 1, 1)
        bin_h, bin_w = np.float32(roi_h) / np.float32(pooled), np.float32(roi_w) / np.float32(pooled)
        for ph in range(pooled):
            for pw in range(pooled):
                hs = min(max(int(np.floor(np.float32(ph) * bin_h)) + start_h, 0), height)
                he = min(max(int(np.ceil(np.float32(ph + 1) * bin_h)) + start_h, 0), height)
                ws = min(max(int(np.floor(np.float32(pw) * bin_w)) + start_w, 0), width)
                we = min(max(int(np.ceil(np.float32(pw + 1) * bin_w)) + start_w, 0), width)
                if he > hs and we > ws:
                    out[r, ph, pw] = features[hs:he, ws:we].max(axis=(0, 1))
    return out


def test_roi_pool_matches_the_reference_loop():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 12, 17, 4)).astype(np.float32)
    scale = 1 / 16
    corners = rng.uniform(0, [17 * 16, 12 * 16], (2, 40, 2, 2))
    boxes = np.concatenate([corners.min(2), corners.max(2)], -1).astype(np.float32)
    boxes[0, 0] = [0, 0, 17 * 16, 12 * 16]  # the whole image: the largest bins
    boxes[0, 1] = [100, 100, 100, 100]  # a point
    ours = jax.jit(lambda f, b: roi_pool(f, b, 7, spatial_scale=scale, rois_per_chunk=16))(
        features, boxes)
    for i in range(2):
        np.testing.assert_array_equal(ours[i], _roi_pool_reference(features[i], boxes[i], 7, scale))


def test_roi_ops_are_differentiable():
    rng = np.random.default_rng(1)
    features = jnp.asarray(rng.normal(size=(1, 10, 10, 2)), jnp.float32)
    boxes = jnp.asarray([[[1.0, 2.0, 7.5, 8.0], [0.0, 0.0, 10.0, 10.0]]])
    grad_f = jax.grad(lambda f: roi_pool(f, boxes, 3, spatial_scale=1.0).sum())(features)
    # Max pooling routes each bin's gradient to one cell: 2 RoIs x 9 bins x 2 channels.
    assert float(grad_f.sum()) == pytest.approx(36.0)
    grad_f, grad_b = jax.grad(lambda f, b: (roi_align(f, b, 3, spatial_scale=1.0) ** 2).sum(),
                              argnums=(0, 1))(features, boxes)
    assert float(jnp.abs(grad_f).sum()) > 0 and np.all(np.isfinite(grad_b))
    assert float(jnp.abs(grad_b).sum()) > 0  # samples move with the box


def test_roi_align_box_gradient_matches_finite_differences():
    """The gradient DenseCap's and MNC's boxes receive through bilinear sampling: checked
    against central differences, with no sample point on a grid line (where bilinear
    interpolation has a kink and the two one-sided derivatives differ)."""
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.normal(size=(1, 12, 12, 3)), jnp.float32)
    boxes = np.asarray([[[1.35, 2.2, 7.7, 8.1], [0.4, 3.1, 11.2, 9.6]]], np.float32)
    weights = jnp.asarray(rng.normal(size=(1, 2, 7, 7, 3)), jnp.float32)
    loss = lambda b: jnp.sum(roi_align(features, b, 7, spatial_scale=1.0, sampling_ratio=1)
                             * weights)
    grad = np.asarray(jax.grad(loss)(jnp.asarray(boxes)))
    eps, numeric = 1e-3, np.zeros_like(boxes)
    for index in np.ndindex(boxes.shape):
        step = np.zeros_like(boxes)
        step[index] = eps
        numeric[index] = (loss(boxes + step) - loss(boxes - step)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=2e-2)
    assert np.abs(grad).min() > 1.0  # every coordinate moves the samples


def test_roi_ops_reject_unbatched_boxes():
    with pytest.raises(ValueError, match=r"boxes \(B, R, 4\)"):
        roi_align(np.zeros((1, 4, 4, 1)), np.zeros((3, 4)), 2, spatial_scale=1.0)


def test_warp_regions_adds_context_and_fills_outside_with_the_mean():
    """A 16 px white square warped to 20 px with 2 px of context: the inner 16x16 is white,
    the ring around it is the black image, and a box hanging off the image reads its mean."""
    image = jnp.zeros((1, 64, 64, 1)).at[0, 16:32, 16:32].set(1.0)
    mean = float(image.mean())
    boxes = jnp.array([[[16.0, 16.0, 32.0, 32.0], [-32.0, 16.0, 0.0, 48.0]]])
    warped = np.asarray(warp_regions(image, boxes, 20, context_padding=2.0))[0, ..., 0]
    np.testing.assert_allclose(warped[0, 3:17, 3:17], 1.0, atol=1e-6)
    assert np.abs(warped[0, 0]).max() < 1e-6 and np.abs(warped[0, :, 0]).max() < 1e-6
    np.testing.assert_allclose(warped[1, :, :8], mean, atol=1e-6)  # x < -1: off the image
    with pytest.raises(ValueError, match="context_padding"):
        warp_regions(image, boxes, 20, context_padding=10.0)


def test_pyramid_roi_align_reads_each_box_from_its_own_level():
    """One gather over the levels laid end to end gives what RoIAlign of each box's level gives;
    FPN's eq. 1 assigns 224 px boxes to P4, halves one level down, and clamps."""
    from segattn_jax.layers.rcnn import pyramid_levels
    from segattn_jax.layers.roi import pyramid_roi_align
    rng = np.random.default_rng(0)
    levels = [jnp.asarray(rng.normal(size=(2, s, s, 3)), jnp.float32) for s in (32, 16, 8, 4)]
    scales = (1 / 4, 1 / 8, 1 / 16, 1 / 32)
    boxes = jnp.asarray(np.concatenate([_boxes_inside(rng, 2, 6, 32, 32, 1 / 4)[..., :2]] * 2,
                                       -1) + rng.uniform(4, 120, (2, 6, 1)), jnp.float32)
    level = jnp.asarray(rng.integers(0, 4, (2, 6)), jnp.int32)
    out = pyramid_roi_align(levels, boxes, level, 5, spatial_scales=scales)
    for index, (features, scale) in enumerate(zip(levels, scales)):
        expected = roi_align(features, boxes, 5, spatial_scale=scale)
        chosen = np.asarray(level) == index
        np.testing.assert_allclose(np.asarray(out)[chosen], np.asarray(expected)[chosen],
                                   atol=1e-5)
    sides = jnp.array([[[0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 448, 448], [0, 0, 10, 10],
                        [0, 0, 2000, 2000]]], jnp.float32)
    np.testing.assert_array_equal(pyramid_levels(sides, 4), [[2, 1, 3, 0, 3]])
