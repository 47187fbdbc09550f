"""ResNet and ResNeXt: stage strides, the two stride placements, batch-norm state, frozen batch
norm, and the released networks' parameter counts."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segattn_jax.backbones import build_backbone
from segattn_jax.backbones.resnet import ResNet
from segattn_jax.layers.normalization import FrozenBatchNorm

RBG = jax.random.key(0, impl="rbg")


def test_stage_strides_and_stride_placement():
    x = jnp.zeros((1, 64, 64, 3))
    msra, torchvision = ResNet(depth=50, width=1 / 16), ResNet(50, width=1 / 16,
                                                                stride_in_1x1=False)
    variables = jax.eval_shape(lambda: msra.init(RBG, x, train=False))
    assert jax.tree.map(lambda a: a.shape, variables) == jax.tree.map(
        lambda a: a.shape, jax.eval_shape(lambda: torchvision.init(RBG, x, train=False)))
    _, intermediates = jax.eval_shape(lambda v: msra.apply(v, x, train=False), variables)
    for stage, stride in {"conv2": 4, "conv3": 8, "conv4": 16, "conv5": 32}.items():
        assert intermediates[stage].shape[1] == 64 // stride, stage
    assert intermediates["conv5"].shape[-1] == 2048 // 16
    assert sum(1 for k in variables["params"] if k.startswith("conv4_block")) == 6
    assert sum(1 for k in jax.eval_shape(lambda: ResNet(101, width=1 / 16).init(
        RBG, x, train=False))["params"] if k.startswith("conv4_block")) == 23


def test_training_updates_running_statistics_and_frozen_bn_trains_nothing():
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3)) * 3 + 1
    model = ResNet(depth=50, width=1 / 16, last_stage="conv2", num_classes=0)
    variables = jax.jit(lambda: model.init(RBG, x, train=False))()
    _, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
    before = variables["batch_stats"]["conv1"]["bn"]["mean"]
    assert not np.allclose(updated["batch_stats"]["conv1"]["bn"]["mean"], before)

    frozen = ResNet(depth=50, width=1 / 16, last_stage="conv2", num_classes=0, frozen_bn=True)
    assert jax.tree.map(jnp.shape, jax.eval_shape(lambda: frozen.init(RBG, x, train=False))) == \
        jax.tree.map(jnp.shape, variables)  # the same checkpoint loads into either

    def loss(params):
        out, _ = frozen.apply({**variables, "params": params}, x, train=True)
        return jnp.sum(out ** 2)

    grads = jax.grad(loss)(variables["params"])
    assert np.all(grads["conv1"]["bn"]["scale"] == 0) and np.all(grads["conv1"]["bn"]["bias"] == 0)
    assert np.any(grads["conv1"]["conv"]["kernel"] != 0)


def test_frozen_batch_norm_is_batch_norm_with_running_averages():
    x = jax.random.normal(jax.random.key(2), (3, 5, 5, 8))
    variables = {"params": {"scale": jnp.linspace(0.5, 2, 8), "bias": jnp.linspace(-1, 1, 8)},
                 "batch_stats": {"mean": jnp.linspace(-0.3, 0.3, 8), "var": jnp.linspace(0.5, 3, 8)}}
    reference = nn.BatchNorm(use_running_average=True, epsilon=1e-5).apply(variables, x)
    np.testing.assert_allclose(FrozenBatchNorm(epsilon=1e-5).apply(variables, x), reference,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backbone, parameters", [
    ("resnet50", 25_557_032), ("resnet101", 44_549_160), ("resnext101_32x8d", 88_791_336)])
def test_parameter_counts_match_the_released_networks(backbone, parameters):
    """The counts torchvision documents for these ImageNet classifiers (convs, batch norm scale
    and offset, the 1000-way fc): ResNeXt's grouped 3x3 and widened bottlenecks included."""
    net = build_backbone(backbone, num_classes=1000)
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                             train=False))
    assert sum(x.size for x in jax.tree.leaves(shapes["params"])) == parameters


def test_resnext_groups_must_divide_the_slim_widths():
    with pytest.raises(ValueError, match="groups=32 must divide"):
        ResNet(depth=26, width=0.1, groups=32, width_per_group=8).init(
            jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)


def test_resnext_bottleneck_is_grouped_and_keeps_four_times_the_stage_width():
    net = ResNet(depth=26, num_classes=0, width=0.25, groups=4, width_per_group=16)
    variables = net.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
    block = variables["params"]["conv2_block1"]
    # inner width 64 * 16 / 64 * 4 = 64 at full width, 16 at 1/4, in 4 groups of 4 inputs;
    # output 4 x (64 at 1/4) = 64
    assert block["conv_bn_2"]["conv"]["kernel"].shape == (3, 3, 4, 16)
    assert block["conv_bn_3"]["conv"]["kernel"].shape == (1, 1, 16, 64)


def test_stages_run_part_of_the_network_with_the_same_variables():
    """conv1..conv4, then conv5 on that output (Mask R-CNN's C4 head), is the whole network,
    ImageNet head included; a bad stage range says which are valid."""
    model = ResNet(depth=26, num_classes=10, width=1 / 8)
    x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    variables = model.init(RBG, x, train=False)
    logits, whole = model.apply(variables, x, train=False)
    conv4, first = model.apply(variables, x, train=False, stages=("conv1", "conv4"))
    head_logits, second = model.apply(variables, conv4, train=False, stages=("conv5", "conv5"))
    np.testing.assert_allclose(conv4, whole["conv4"], rtol=1e-6)
    np.testing.assert_allclose(second["conv5"], whole["conv5"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(head_logits, logits, rtol=1e-5, atol=1e-4)
    assert "conv5" not in first and set(second) == {"conv5", "pre_logits"}
    assert conv4.shape[1] == 4 and logits.shape == (2, 10)
    with pytest.raises(ValueError, match="stages must be"):
        model.apply(variables, x, train=False, stages=("conv4", "conv3"))
