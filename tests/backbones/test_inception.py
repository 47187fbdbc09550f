"""Inception-v4 / Inception-ResNet-v2: blocks against hand-written TensorFlow, geometry, heads.

The whole nets are checked against the authors' TF-Slim definitions through their variable names
and shapes, and against Keras' InceptionResNetV2 end to end, in test_pretrained.py.
"""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segattn_jax.backbones.inception import (Block, ConvSpec, PoolSpec, inception_resnet_v2,
                                             inception_resnet_v2_blocks, inception_v4,
                                             inception_v4_blocks)

RBG = jax.random.key(0, impl="rbg")  # the default key's init compiles ~5x longer on CPU


def _random_variables(module, x):
    variables = jax.jit(lambda: module.init(RBG, x, train=False))()
    rng = np.random.default_rng(0)
    flat = flax.traverse_util.flatten_dict(variables)
    for path, value in flat.items():
        if path[-1] == "var":
            flat[path] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
        elif path[-1] in ("mean", "bias"):
            flat[path] = rng.normal(0, 0.1, value.shape).astype(np.float32)
        else:
            flat[path] = rng.normal(0, 1 / np.sqrt(np.prod(value.shape[:-1])),
                                    value.shape).astype(np.float32)
    return flax.traverse_util.unflatten_dict(flat)


def _tf_block(block, variables, x):
    """The block written directly with tf.nn ops, reading our variables by their slim names."""
    import tensorflow as tf

    params, stats = variables["params"], variables["batch_stats"]

    def conv_bn(x, scope, spec):
        p, s = params[scope][spec.name], stats[scope][spec.name]
        y = tf.nn.conv2d(x, p["conv"]["kernel"], spec.stride, spec.padding)
        y = (y - s["bn"]["mean"]) / tf.sqrt(s["bn"]["var"] + 1e-3) + p["bn"]["bias"]
        return tf.nn.relu(y)

    outputs = []
    for i, branch in enumerate(block.branches):
        y, scope = x, f"Branch_{i}"
        for step in branch:
            if isinstance(step, PoolSpec):
                pool = tf.nn.max_pool2d if step.kind == "max" else tf.nn.avg_pool2d
                y = pool(y, step.window, step.stride, step.padding)
            elif isinstance(step, ConvSpec):
                y = conv_bn(y, scope, step)
            else:
                y = tf.concat([conv_bn(y, scope, s) for s in step], axis=-1)
        outputs.append(y)
    mixed = tf.concat(outputs, axis=-1)
    if not block.residual_scale:
        return mixed.numpy()
    up = tf.nn.conv2d(mixed, params["Conv2d_1x1"]["kernel"], 1, "SAME") + \
        params["Conv2d_1x1"]["bias"]
    return tf.nn.relu(x + block.residual_scale * up).numpy()


@pytest.mark.parametrize("blocks, name, channels", [
    (inception_v4_blocks, "Mixed_5b", 384),       # Inception-A (SAME average pool branch)
    (inception_v4_blocks, "Mixed_7b", 1536),      # Inception-C (split 1x3 / 3x1 branches)
    (inception_v4_blocks, "Mixed_6a", 384),       # Reduction-A
    (inception_resnet_v2_blocks, "block35_1", 320),  # residual, scale 0.17
])
def test_block_matches_hand_written_tensorflow(blocks, name, channels):
    spec = next(b for b in blocks() if b.name == name)
    x = np.random.default_rng(1).normal(size=(2, 7, 7, channels)).astype(np.float32)
    module = Block(spec)
    variables = _random_variables(module, x)
    ours = jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x)
    np.testing.assert_allclose(ours, _tf_block(spec, variables, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("factory, last", [(inception_v4, "Mixed_7d"),
                                           (inception_resnet_v2, "Conv2d_7b_1x1")])
def test_paper_geometry_at_299_and_slim_variants(factory, last):
    """35x35 / 17x17 / 8x8 grids at 299x299 (paper Figures 9 and 15), traced only."""
    model = factory(num_classes=1001)
    variables = jax.eval_shape(lambda: model.init(RBG, jnp.zeros((1, 299, 299, 3)), train=False))
    (logits, intermediates), _ = jax.eval_shape(
        lambda v: model.apply(v, jnp.zeros((2, 299, 299, 3)), train=True, rngs={"dropout": RBG},
                              mutable=["batch_stats"]), variables)
    assert logits.shape == (2, 1001) and intermediates["AuxLogits"].shape == (2, 1001)
    assert intermediates["Mixed_6a"].shape[1:3] == (17, 17)
    assert intermediates[last].shape[1:] == (8, 8, 1536)
    slim = factory(num_classes=10, width=1 / 8, aux=False, dtype=jnp.bfloat16)
    slim_vars = jax.eval_shape(lambda: slim.init(RBG, jnp.zeros((1, 75, 75, 3)), train=False))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(slim_vars))
    logits, intermediates = jax.eval_shape(
        lambda v: slim.apply(v, jnp.zeros((2, 75, 75, 3)), train=False), slim_vars)
    assert logits.shape == (2, 10) and intermediates[last].shape[-1] == 1536 // 8


def test_aux_head_on_a_too_small_input_says_what_to_do():
    model = inception_v4(num_classes=10, width=1 / 8)
    with pytest.raises(ValueError, match="17x17 map of a 299x299 input.*without the auxiliary head"):
        jax.eval_shape(lambda: model.init({"params": RBG, "dropout": RBG},
                                          jnp.zeros((1, 75, 75, 3)), train=True))
