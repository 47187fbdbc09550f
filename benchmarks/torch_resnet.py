"""ResNet-50 written directly in PyTorch: the reference side of benchmarks/resnet_train_step.py.

The same network as segattn_jax.backbones.resnet.ResNet(depth=50) (MSRA layout: the stride in each
stage's first 1x1 conv; 7x7/2 stem, 3x3/2 max pool, bottleneck blocks 3-4-6-3, global average
pool, 1000-way fc; batch norm after every conv), stepped by `torch_fcn.train_step_fn` (softmax
cross-entropy, SGD with momentum). Written the way a PyTorch user would (NCHW, `nn.Conv2d`,
`nn.BatchNorm2d`); torch is a benchmark reference only, never a dependency. torchvision's
`resnet50` strides the 3x3 instead (the same FLOPs after the first block) and its CPU build does
not load here, hence this file.
"""
from __future__ import annotations

from segattn_jax.backbones.resnet import RESNET_DEPTHS


def build(torch, *, num_classes: int = 1000, depth: int = 50):
    """A ResNet `torch.nn.Module`: images (N, 3, H, W) -> logits (N, num_classes)."""
    nn = torch.nn

    def conv_bn(cin, cout, kernel, stride, relu=True):
        layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                  nn.BatchNorm2d(cout, eps=1.001e-5)]
        return nn.Sequential(*layers, *([nn.ReLU(inplace=True)] if relu else []))

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            self.branch = nn.Sequential(conv_bn(cin, width, 1, stride), conv_bn(width, width, 3, 1),
                                        conv_bn(width, 4 * width, 1, 1, relu=False))
            self.shortcut = (conv_bn(cin, 4 * width, 1, stride, relu=False)
                             if cin != 4 * width or stride != 1 else nn.Identity())

        def forward(self, x):
            return torch.relu(self.shortcut(x) + self.branch(x))

    blocks, cin = [], 64
    for stage, (count, width) in enumerate(zip(RESNET_DEPTHS[depth], (64, 128, 256, 512))):
        for block in range(count):
            blocks.append(Bottleneck(cin, width, 2 if block == 0 and stage > 0 else 1))
            cin = 4 * width
    return nn.Sequential(conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1), *blocks,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))

