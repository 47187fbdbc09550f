"""Inception-v4 and Inception-ResNet-v2 (Szegedy, Ioffe, Vanhoucke & Alemi 2016).

Both nets are written as one table of blocks (`inception_v4_blocks`, `inception_resnet_v2_blocks`)
that builds the module and names every layer exactly as the authors' TF-Slim definitions scope
them (`Mixed_6a/Branch_1/Conv2d_0b_3x3`), so the released checkpoints map onto the parameters by
name (`backbones/pretrained.py`). Every conv is conv -> batch norm without scale (epsilon 1e-3,
decay 0.9997) -> ReLU, as the checkpoints were trained (`layers.conv.ConvBN`); the residual
blocks add their branches' 1x1 projection (with bias, no batch norm) scaled by 0.17 / 0.10 / 0.20
(the paper's "scaling of the residuals", Figure 20) before the ReLU. Input 299x299 in [-1, 1].
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

import flax.linen as nn
import jax.numpy as jnp

from segattn_jax import compilation
from segattn_jax.backbones.vgg import scaled_features
from segattn_jax.layers.conv import Conv, ConvBN
from segattn_jax.layers.pooling import max_pool

Array = Any


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One conv -> batch norm -> ReLU layer; `name` is its TF-Slim scope."""

    name: str
    features: int
    kernel: tuple[int, int]
    stride: int = 1
    padding: Literal["SAME", "VALID"] = "SAME"


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    """A pooling window (TF semantics: SAME average pooling does not count the padding)."""

    kind: Literal["max", "avg"]
    window: int
    stride: int
    padding: Literal["SAME", "VALID"] = "VALID"


# A branch is a sequence of steps; a step that is a tuple of convs applies them in parallel to the
# same input and concatenates them (Inception-C's 1x3 / 3x1 split).
Step = ConvSpec | PoolSpec | tuple[ConvSpec, ...]
BranchSpec = tuple[Step, ...]


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """A named block: parallel branches concatenated on channels, or one conv or pool (the stem).

    `residual_scale` > 0 makes it an Inception-ResNet block: the concatenation is projected back to
    the input's width by a 1x1 conv with bias (scope `Conv2d_1x1`), scaled and added to the input,
    then ReLU unless `final_activation` is False (IR-v2's last block).
    """

    name: str
    branches: tuple[BranchSpec, ...]
    residual_scale: float = 0.0
    final_activation: bool = True


@dataclasses.dataclass(frozen=True)
class AuxHeadSpec:
    """The auxiliary classifier on `source`: 5x5/3 average pool, 1x1 conv 128, a 5x5 VALID conv
    768 (the map at 299x299 input), and a fully connected layer; scope names as in TF-Slim."""

    source: str
    conv_name: str
    logits_name: str


def _conv(name: str, features: int, kernel: int | tuple[int, int], stride: int = 1,
          padding: Literal["SAME", "VALID"] = "SAME") -> ConvSpec:
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    return ConvSpec(name, features, kernel, stride, padding)


def _single(name: str, features: int, kernel: int, stride: int = 1, padding="SAME") -> BlockSpec:
    return BlockSpec(name, ((_conv(name, features, kernel, stride, padding),),))


MAX_3x3_S2 = PoolSpec("max", 3, 2, "VALID")
AVG_3x3_SAME = PoolSpec("avg", 3, 1, "SAME")


def _inception_a(name: str) -> BlockSpec:
    return BlockSpec(name, (
        (_conv("Conv2d_0a_1x1", 96, 1),),
        (_conv("Conv2d_0a_1x1", 64, 1), _conv("Conv2d_0b_3x3", 96, 3)),
        (_conv("Conv2d_0a_1x1", 64, 1), _conv("Conv2d_0b_3x3", 96, 3),
         _conv("Conv2d_0c_3x3", 96, 3)),
        (AVG_3x3_SAME, _conv("Conv2d_0b_1x1", 96, 1)),
    ))


def _inception_b(name: str) -> BlockSpec:
    return BlockSpec(name, (
        (_conv("Conv2d_0a_1x1", 384, 1),),
        (_conv("Conv2d_0a_1x1", 192, 1), _conv("Conv2d_0b_1x7", 224, (1, 7)),
         _conv("Conv2d_0c_7x1", 256, (7, 1))),
        (_conv("Conv2d_0a_1x1", 192, 1), _conv("Conv2d_0b_7x1", 192, (7, 1)),
         _conv("Conv2d_0c_1x7", 224, (1, 7)), _conv("Conv2d_0d_7x1", 224, (7, 1)),
         _conv("Conv2d_0e_1x7", 256, (1, 7))),
        (AVG_3x3_SAME, _conv("Conv2d_0b_1x1", 128, 1)),
    ))


def _inception_c(name: str) -> BlockSpec:
    return BlockSpec(name, (
        (_conv("Conv2d_0a_1x1", 256, 1),),
        (_conv("Conv2d_0a_1x1", 384, 1),
         (_conv("Conv2d_0b_1x3", 256, (1, 3)), _conv("Conv2d_0c_3x1", 256, (3, 1)))),
        (_conv("Conv2d_0a_1x1", 384, 1), _conv("Conv2d_0b_3x1", 448, (3, 1)),
         _conv("Conv2d_0c_1x3", 512, (1, 3)),
         (_conv("Conv2d_0d_1x3", 256, (1, 3)), _conv("Conv2d_0e_3x1", 256, (3, 1)))),
        (AVG_3x3_SAME, _conv("Conv2d_0b_1x1", 256, 1)),
    ))


INCEPTION_V4_REPEATS = (4, 7, 3)
INCEPTION_RESNET_V2_REPEATS = (10, 20, 9)


def inception_v4_blocks(repeats: tuple[int, int, int] = INCEPTION_V4_REPEATS
                        ) -> tuple[BlockSpec, ...]:
    """Inception-v4 (paper Figures 3-9): stem, 4 x A, Reduction-A, 7 x B, Reduction-B, 3 x C
    (`repeats` other than the paper's only to make small test nets)."""
    stem = (
        _single("Conv2d_1a_3x3", 32, 3, 2, "VALID"),
        _single("Conv2d_2a_3x3", 32, 3, 1, "VALID"),
        _single("Conv2d_2b_3x3", 64, 3),
        BlockSpec("Mixed_3a", ((MAX_3x3_S2,), (_conv("Conv2d_0a_3x3", 96, 3, 2, "VALID"),))),
        BlockSpec("Mixed_4a", (
            (_conv("Conv2d_0a_1x1", 64, 1), _conv("Conv2d_1a_3x3", 96, 3, padding="VALID")),
            (_conv("Conv2d_0a_1x1", 64, 1), _conv("Conv2d_0b_1x7", 64, (1, 7)),
             _conv("Conv2d_0c_7x1", 64, (7, 1)), _conv("Conv2d_1a_3x3", 96, 3, padding="VALID")),
        )),
        BlockSpec("Mixed_5a", ((_conv("Conv2d_1a_3x3", 192, 3, 2, "VALID"),), (MAX_3x3_S2,))),
    )
    reduction_a = BlockSpec("Mixed_6a", (
        (_conv("Conv2d_1a_3x3", 384, 3, 2, "VALID"),),
        (_conv("Conv2d_0a_1x1", 192, 1), _conv("Conv2d_0b_3x3", 224, 3),
         _conv("Conv2d_1a_3x3", 256, 3, 2, "VALID")),
        (MAX_3x3_S2,),
    ))
    reduction_b = BlockSpec("Mixed_7a", (
        (_conv("Conv2d_0a_1x1", 192, 1), _conv("Conv2d_1a_3x3", 192, 3, 2, "VALID")),
        (_conv("Conv2d_0a_1x1", 256, 1), _conv("Conv2d_0b_1x7", 256, (1, 7)),
         _conv("Conv2d_0c_7x1", 320, (7, 1)), _conv("Conv2d_1a_3x3", 320, 3, 2, "VALID")),
        (MAX_3x3_S2,),
    ))
    a, b, c = repeats
    return (stem
            + tuple(_inception_a(f"Mixed_5{chr(ord('b') + i)}") for i in range(a))
            + (reduction_a,)
            + tuple(_inception_b(f"Mixed_6{chr(ord('b') + i)}") for i in range(b))
            + (reduction_b,)
            + tuple(_inception_c(f"Mixed_7{chr(ord('b') + i)}") for i in range(c)))


def _block35(name: str) -> BlockSpec:
    return BlockSpec(name, (
        (_conv("Conv2d_1x1", 32, 1),),
        (_conv("Conv2d_0a_1x1", 32, 1), _conv("Conv2d_0b_3x3", 32, 3)),
        (_conv("Conv2d_0a_1x1", 32, 1), _conv("Conv2d_0b_3x3", 48, 3),
         _conv("Conv2d_0c_3x3", 64, 3)),
    ), residual_scale=0.17)


def _block17(name: str) -> BlockSpec:
    return BlockSpec(name, (
        (_conv("Conv2d_1x1", 192, 1),),
        (_conv("Conv2d_0a_1x1", 128, 1), _conv("Conv2d_0b_1x7", 160, (1, 7)),
         _conv("Conv2d_0c_7x1", 192, (7, 1))),
    ), residual_scale=0.10)


def _block8(name: str, scale: float = 0.20, final_activation: bool = True) -> BlockSpec:
    return BlockSpec(name, (
        (_conv("Conv2d_1x1", 192, 1),),
        (_conv("Conv2d_0a_1x1", 192, 1), _conv("Conv2d_0b_1x3", 224, (1, 3)),
         _conv("Conv2d_0c_3x1", 256, (3, 1))),
    ), residual_scale=scale, final_activation=final_activation)


def inception_resnet_v2_blocks(repeats: tuple[int, int, int] = INCEPTION_RESNET_V2_REPEATS
                               ) -> tuple[BlockSpec, ...]:
    """Inception-ResNet-v2 as released (TF-Slim; its stem is Inception-v3's, not the paper's
    Figure 3, and it is what the paper's reported numbers come from): 10 x block35, Reduction-A,
    20 x block17, Reduction-B, 9 x block8 and a last block8 without scaling or ReLU, conv 1536
    (`repeats` other than (10, 20, 9) only to make small test nets)."""
    stem = (
        _single("Conv2d_1a_3x3", 32, 3, 2, "VALID"),
        _single("Conv2d_2a_3x3", 32, 3, 1, "VALID"),
        _single("Conv2d_2b_3x3", 64, 3),
        BlockSpec("MaxPool_3a_3x3", ((MAX_3x3_S2,),)),
        _single("Conv2d_3b_1x1", 80, 1, 1, "VALID"),
        _single("Conv2d_4a_3x3", 192, 3, 1, "VALID"),
        BlockSpec("MaxPool_5a_3x3", ((MAX_3x3_S2,),)),
        BlockSpec("Mixed_5b", (
            (_conv("Conv2d_1x1", 96, 1),),
            (_conv("Conv2d_0a_1x1", 48, 1), _conv("Conv2d_0b_5x5", 64, 5)),
            (_conv("Conv2d_0a_1x1", 64, 1), _conv("Conv2d_0b_3x3", 96, 3),
             _conv("Conv2d_0c_3x3", 96, 3)),
            (AVG_3x3_SAME, _conv("Conv2d_0b_1x1", 64, 1)),
        )),
    )
    reduction_a = BlockSpec("Mixed_6a", (
        (_conv("Conv2d_1a_3x3", 384, 3, 2, "VALID"),),
        (_conv("Conv2d_0a_1x1", 256, 1), _conv("Conv2d_0b_3x3", 256, 3),
         _conv("Conv2d_1a_3x3", 384, 3, 2, "VALID")),
        (MAX_3x3_S2,),
    ))
    reduction_b = BlockSpec("Mixed_7a", (
        (_conv("Conv2d_0a_1x1", 256, 1), _conv("Conv2d_1a_3x3", 384, 3, 2, "VALID")),
        (_conv("Conv2d_0a_1x1", 256, 1), _conv("Conv2d_1a_3x3", 288, 3, 2, "VALID")),
        (_conv("Conv2d_0a_1x1", 256, 1), _conv("Conv2d_0b_3x3", 288, 3),
         _conv("Conv2d_1a_3x3", 320, 3, 2, "VALID")),
        (MAX_3x3_S2,),
    ))
    a, b, c = repeats
    return (stem
            + tuple(_block35(f"block35_{i}") for i in range(1, a + 1))
            + (reduction_a,)
            + tuple(_block17(f"block17_{i}") for i in range(1, b + 1))
            + (reduction_b,)
            + tuple(_block8(f"block8_{i}") for i in range(1, c + 1))
            + (_block8("Block8", scale=1.0, final_activation=False),
               _single("Conv2d_7b_1x1", 1536, 1)))


def conv_bn_paths(blocks: tuple[BlockSpec, ...]) -> list[tuple[str, ...]]:
    """Module path of every conv -> batch norm layer, in the order the net applies them (the
    order Keras names its layers conv2d_1, conv2d_2, ... in `keras.applications`)."""
    paths = []
    for block in blocks:
        if len(block.branches) == 1:
            step = block.branches[0][0]
            if isinstance(step, ConvSpec):
                paths.append((block.name,))
            continue
        for i, branch in enumerate(block.branches):
            for step in branch:
                for conv in (step,) if isinstance(step, ConvSpec) else (
                        () if isinstance(step, PoolSpec) else step):
                    paths.append((block.name, f"Branch_{i}", conv.name))
    return paths




def _pool(x: Array, spec: PoolSpec) -> Array:
    window, strides = (spec.window, spec.window), (spec.stride, spec.stride)
    if spec.kind == "max":
        return max_pool(x, window, strides, padding=spec.padding)
    return nn.avg_pool(x, window, strides=strides, padding=spec.padding, count_include_pad=False)


@dataclasses.dataclass(frozen=True)
class ConvBNOptions:
    """How every conv -> batch norm -> ReLU of a net is built: channel multiplier, compute
    dtype, and batch norm as TF-Slim's (no scale, epsilon 1e-3, running averages decaying by
    `bn_momentum` per step: 0.9997 for runs of 100k+ steps, less for short ones)."""

    width: float = 1.0
    bn_momentum: float = 0.9997
    dtype: Any = jnp.float32

    def __call__(self, spec: ConvSpec, name: str) -> ConvBN:
        return ConvBN(scaled_features(spec.features, self.width), spec.kernel, spec.stride,
                      spec.padding, use_scale=False, momentum=self.bn_momentum, epsilon=1e-3,
                      dtype=self.dtype, name=name)


class Branch(nn.Module):
    """One branch of a block: its convs are submodules named by their TF-Slim scopes."""

    steps: BranchSpec
    options: ConvBNOptions = ConvBNOptions()

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        for step in self.steps:
            if isinstance(step, PoolSpec):
                x = _pool(x, step)
            elif isinstance(step, ConvSpec):
                x = self.options(step, step.name)(x, train=train)
            else:
                x = jnp.concatenate([self.options(s, s.name)(x, train=train) for s in step],
                                    axis=-1)
        return x


class Block(nn.Module):
    """A multi-branch `BlockSpec`: branches `Branch_<i>` concatenated, plus the residual sum."""

    spec: BlockSpec
    options: ConvBNOptions = ConvBNOptions()

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        spec = self.spec
        mixed = jnp.concatenate(
            [Branch(steps, self.options, name=f"Branch_{i}")(x, train=train)
             for i, steps in enumerate(spec.branches)], axis=-1)
        if not spec.residual_scale:
            return mixed
        up = Conv(x.shape[-1], (1, 1), use_bias=True, dtype=self.options.dtype,
                  param_dtype=jnp.float32, name="Conv2d_1x1")(mixed)
        x = x + spec.residual_scale * up
        # The stream passes 40 blocks: on CPU it is written once per block, not recomputed inside
        # every later block's sum (compilation.fusion_boundary_on_cpu).
        return compilation.fusion_boundary_on_cpu(nn.relu(x) if spec.final_activation else x)


class AuxHead(nn.Module):
    """The auxiliary classifier (`AuxHeadSpec`), named as TF-Slim's `AuxLogits` scope."""

    spec: AuxHeadSpec
    num_classes: int
    options: ConvBNOptions = ConvBNOptions()

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        if min(x.shape[1:3]) < 17:
            raise ValueError(f"The auxiliary head needs the 17x17 map of a 299x299 input; "
                             f"{self.spec.source} is {x.shape[1:3]}. Use 299x299 images, or "
                             "build the net without the auxiliary head (aux=False; "
                             "model.aux_logits=False in a config).")
        x = _pool(x, PoolSpec("avg", 5, 3, "VALID"))
        x = self.options(ConvSpec("Conv2d_1b_1x1", 128, (1, 1)), "Conv2d_1b_1x1")(x, train=train)
        x = self.options(ConvSpec(self.spec.conv_name, 768, (5, 5), padding="VALID"),
                         self.spec.conv_name)(x, train=train)
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes, dtype=self.options.dtype, param_dtype=jnp.float32,
                        name=self.spec.logits_name)(x).astype(jnp.float32)


class Inception(nn.Module):
    """Inception-v4 / Inception-ResNet-v2 backbone with TF-Slim's classifier heads.

    Attributes:
      blocks: the net's table (`inception_v4_blocks()` or `inception_resnet_v2_blocks()`).
      num_classes: logits of the final classifier (1001 for the released checkpoints: class 0 is
        "background"); 0 leaves the head out and returns the last feature map.
      aux_head: the auxiliary classifier (training only, as in the paper); None leaves it out.
      dropout_rate: before the logits (the paper's "keep 0.8").
      width: multiplier on every channel count, for slim CPU variants.
      bn_momentum: decay of batch norm's running averages per step (TF-Slim's 0.9997 suits
        the paper's 100k+ steps; a 1000-step run needs ~0.99 for its averages to forget the
        initial statistics).
      last_block: stop after this block (e.g. "Mixed_6h" for a stride-16 map).
      dtype: compute dtype; parameters stay float32.
    """

    blocks: tuple[BlockSpec, ...]
    num_classes: int = 1001
    aux_head: AuxHeadSpec | None = None
    dropout_rate: float = 0.2
    width: float = 1.0
    bn_momentum: float = 0.9997
    last_block: str = ""
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> tuple[Array, dict[str, Array]]:
        """Images (N, H, W, 3) in [-1, 1] -> (logits or the last map, {block name: output,
        "PreLogits", "AuxLogits"})."""
        if x.ndim != 4:
            raise ValueError(f"Inception expects images of shape (N, H, W, C); got {x.shape}.")
        names = [block.name for block in self.blocks]
        if self.last_block and self.last_block not in names:
            raise ValueError(f"No block {self.last_block!r}; valid: {names}.")
        x = x.astype(self.dtype)
        options = ConvBNOptions(self.width, self.bn_momentum, self.dtype)
        intermediates = {}
        for spec in self.blocks:
            if len(spec.branches) > 1:
                x = Block(spec, options, name=spec.name)(x, train=train)
            elif isinstance(step := spec.branches[0][0], PoolSpec):
                x = _pool(x, step)
            else:
                x = options(step, spec.name)(x, train=train)
            intermediates[spec.name] = x
            if spec.name == self.last_block:
                return x, intermediates
        # The auxiliary head trains only, but its variables exist from init (run with
        # train=False) on, so that a model's variables do not depend on how it was initialized.
        if self.aux_head is not None and self.num_classes and (train or self.is_initializing()):
            intermediates["AuxLogits"] = AuxHead(
                self.aux_head, self.num_classes, options, name="AuxLogits")(
                    intermediates[self.aux_head.source], train=train)
        if not self.num_classes:
            return x, intermediates
        x = jnp.mean(x, axis=(1, 2))
        intermediates["PreLogits"] = x
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                          name="Logits")(x)
        return logits.astype(jnp.float32), intermediates


def inception_v4(repeats: tuple[int, int, int] = INCEPTION_V4_REPEATS, aux: bool = True,
                 **kwargs) -> Inception:
    """Inception-v4 with its auxiliary head on the last Inception-B block (TF-Slim
    `inception_v4`); `kwargs` are `Inception`'s fields."""
    aux_head = AuxHeadSpec(f"Mixed_6{chr(ord('a') + repeats[1])}", "Conv2d_2a", "Aux_logits")
    return Inception(inception_v4_blocks(tuple(repeats)), aux_head=aux_head if aux else None,
                     **kwargs)


def inception_resnet_v2(repeats: tuple[int, int, int] = INCEPTION_RESNET_V2_REPEATS,
                        aux: bool = True, **kwargs) -> Inception:
    """Inception-ResNet-v2 with its auxiliary head on the last block17 (TF-Slim
    `inception_resnet_v2`); `kwargs` are `Inception`'s fields."""
    aux_head = AuxHeadSpec(f"block17_{repeats[1]}", "Conv2d_2a_5x5", "Logits")
    return Inception(inception_resnet_v2_blocks(tuple(repeats)),
                     aux_head=aux_head if aux else None, **kwargs)
