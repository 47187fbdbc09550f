"""The R-CNN family's shared pieces: smooth L1 against optax's Huber loss, RPN targets and loss,
proposals, RoI sampling, the head's loss and test-time detection, on hand-made cases."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from segattn_jax.layers import rcnn
from segattn_jax.ops import boxes as box_ops

HW = jnp.array([[64, 64]])


def test_smooth_l1_is_huber_over_beta():
    """Fast R-CNN's smooth L1 with transition beta is the Huber loss with delta beta, / beta."""
    x = jnp.linspace(-3, 3, 61)
    for beta in (1.0, 1.0 / 9.0):
        np.testing.assert_allclose(rcnn.smooth_l1(x, beta), optax.huber_loss(x, delta=beta) / beta,
                                   rtol=1e-6, atol=1e-7)


def _anchors():
    return box_ops.anchors((4, 4), 16, 16, (1.0, 2.0), (1.0,))


def test_rpn_loss_favours_the_anchor_on_the_object_and_ignores_boundary_crossers():
    anchors = _anchors()  # 4x4 positions x 2 scales (index 2 * position + scale)
    gt = anchors[10][None, None]  # a ground truth exactly on anchor 10 (16 px at (24, 24))
    valid = jnp.array([[True]])
    deltas = jnp.zeros((1, len(anchors), 4))
    right = jnp.full((1, len(anchors)), -8.0).at[0, 10].set(8.0)
    losses = [rcnn.rpn_loss(jax.random.key(0), anchors, logits, deltas, gt, valid, HW,
                            num_samples=16)["rpn_class"] for logits in (right, -right)]
    assert losses[0] < 0.01 < 1.0 < losses[1]
    crossing = ~rcnn.inside_image(anchors[None], HW)[0]
    assert bool(crossing[1]) and not bool(crossing[10])  # anchor 1: 32 px centred at (8, 8)


def test_rpn_loss_with_no_objects_is_finite_and_has_no_box_term():
    anchors = _anchors()
    losses = rcnn.rpn_loss(jax.random.key(0), anchors, jnp.zeros((1, len(anchors))),
                           jnp.ones((1, len(anchors), 4)), jnp.zeros((1, 2, 4)),
                           jnp.zeros((1, 2), bool), HW, num_samples=8)
    assert float(losses["rpn_box"]) == 0.0 and np.isfinite(float(losses["rpn_class"]))


def test_proposals_are_clipped_big_enough_and_suppressed():
    anchors = _anchors()
    deltas = jax.random.normal(jax.random.key(1), (1, len(anchors), 4)) * 0.5
    scores = jax.random.normal(jax.random.key(2), (1, len(anchors)))
    boxes, valid = rcnn.propose(anchors, scores, deltas, HW, pre_nms=20, post_nms=10,
                                nms_threshold=0.5, min_size=4.0)
    kept = np.asarray(boxes[0])[np.asarray(valid[0])]
    assert 0 < len(kept) <= 10
    assert (kept >= 0).all() and (kept <= 64).all()
    assert (kept[:, 2:] - kept[:, :2] >= 4.0).all()
    iou = np.asarray(box_ops.pairwise_iou(kept, kept)) - np.eye(len(kept))
    assert iou.max() <= 0.5


def test_differentiable_proposals_clip_each_images_gradient_at_the_delta():
    """MNC's cascade: the proposals' gradient reaches the RPN's deltas, clipped elementwise at
    `gradient_clip` per image (the batch mean's share 1/B), and not at all when not
    differentiable."""
    anchors = _anchors()
    deltas = jax.random.normal(jax.random.key(1), (2, len(anchors), 4)) * 0.5
    scores = jax.random.normal(jax.random.key(2), (2, len(anchors)))
    weights = jax.random.normal(jax.random.key(3), (2, 10, 4)) * 50.0

    def grad(**kwargs):
        def loss(d):
            boxes, valid = rcnn.propose(anchors, scores, d, jnp.array([[64, 64]] * 2),
                                        pre_nms=20, post_nms=10, nms_threshold=0.5,
                                        min_size=4.0, **kwargs)
            return jnp.sum(boxes * weights * valid[..., None]) / 2  # a batch mean
        return np.asarray(jax.grad(loss)(deltas))

    free, clipped = grad(differentiable=True), grad(differentiable=True, gradient_clip=0.5)
    assert np.abs(free).max() > 0.25  # the bound binds somewhere
    np.testing.assert_allclose(clipped, np.clip(free, -0.25, 0.25), rtol=1e-6)
    assert not grad().any()


def test_sample_rois_adds_ground_truth_and_labels_its_class():
    gt = jnp.array([[[8.0, 8.0, 40.0, 40.0], [0, 0, 0, 0]]])
    proposals = jnp.array([[[50.0, 50.0, 60.0, 60.0], [9.0, 9.0, 40.0, 41.0], [0, 0, 1, 1]]])
    out = rcnn.sample_rois(jax.random.key(0), proposals, jnp.array([[True, True, False]]), gt,
                           jnp.array([[3, 0]]), jnp.array([[True, False]]), num=4,
                           foreground_fraction=0.5, background=(0.0, 0.5))
    labels, valid = np.asarray(out["labels"][0]), np.asarray(out["valid"][0])
    # Two foreground (the ground truth itself and the overlapping proposal): class 3 -> label 4.
    assert sorted(labels[valid].tolist()) == [0, 4, 4]
    at_gt = np.all(np.isclose(np.asarray(out["rois"][0]), gt[0, 0]), axis=1)
    np.testing.assert_allclose(np.asarray(out["targets"][0])[at_gt], 0.0, atol=1e-5)


def test_head_loss_of_images_without_foreground_is_finite():
    samples = {"labels": jnp.zeros((1, 4), jnp.int32), "valid": jnp.array([[True, True, False,
                                                                            False]]),
               "targets": jnp.full((1, 4, 4), 1e3)}
    losses = rcnn.box_head_loss(jnp.zeros((1, 4, 3)), jnp.zeros((1, 4, 3, 4)), samples)
    assert float(losses["head_box"]) == 0.0
    np.testing.assert_allclose(losses["head_class"], np.log(3.0), rtol=1e-6)


def test_detect_keeps_the_confident_class_once_and_places_its_box():
    rois = jnp.array([[[10.0, 10.0, 30.0, 30.0], [11.0, 10.0, 31.0, 30.0], [40, 40, 60, 60]]])
    logits = jnp.array([[[0.0, 9.0, 0.0], [0.0, 8.0, 0.0], [9.0, 0.0, 0.0]]])  # bg, c0, c1
    deltas = jnp.zeros((1, 3, 3, 4)).at[0, 0, 1].set(jnp.array([1.0, 0.0, 0.0, 0.0]))
    out = rcnn.detect(rois, jnp.ones((1, 3), bool), jax.nn.softmax(logits)[..., 1:],
                      deltas[:, :, 1:], HW, score_threshold=0.5, nms_threshold=0.3,
                      max_detections=5)
    assert int(out["valid"].sum()) == 1  # the second RoI is suppressed, the third is background
    assert int(out["classes"][0, 0]) == 0
    # dx = 1 at weight 10: shifted by a tenth of the width (2 px).
    np.testing.assert_allclose(out["boxes"][0, 0], [12.0, 10.0, 32.0, 30.0], atol=1e-4)
