"""FCN-8s written directly in PyTorch: the reference side of benchmarks/fcn_train_step.py.

The same network as segattn_jax.models.fcn.FCN (convolutionalized VGG16 with conv1_1 padding,
Caffe ceil-mode pooling, fc6/fc7 as convolutions with dropout, zero-initialised scoring layers,
learnable 2x `nn.ConvTranspose2d` upsampling, fixed bilinear final upsampling, crops at the offsets
our geometry computes) and the same step: pixel cross-entropy, SGD with momentum. Written the way
a PyTorch user would (NCHW, `nn.Conv2d`); torch is a benchmark reference only, never a dependency.
"""
from __future__ import annotations

import numpy as np

from segattn_jax.backbones.vgg import scaled_features, vgg16_layer_specs
from segattn_jax.layers.upsampling import bilinear_kernel
from segattn_jax.models.fcn import crop_offsets


def build(torch, *, num_classes: int, width: float, first_padding: int, fc6_kernel: int,
          dropout_rate: float = 0.5):
    """An FCN-8s `torch.nn.Module`: images (N, 3, H, W) -> logits (N, K, H, W)."""
    nn = torch.nn
    offsets = crop_offsets("8s", first_padding, fc6_kernel)

    class FCN8s(nn.Module):
        def __init__(self):
            super().__init__()
            self.specs = vgg16_layer_specs(first_padding, fc6_kernel)
            self.layers = nn.ModuleDict()
            channels = 3
            for spec in self.specs:
                if spec.kind == "pool":
                    continue
                features = scaled_features(spec.features, width)
                self.layers[spec.name] = nn.Conv2d(channels, features, spec.kernel,
                                                   padding=spec.padding)
                channels = features
            self.dropout = nn.Dropout(dropout_rate)
            self.score_fr = nn.Conv2d(channels, num_classes, 1)
            self.score_pool4 = nn.Conv2d(scaled_features(512, width), num_classes, 1)
            self.score_pool3 = nn.Conv2d(scaled_features(256, width), num_classes, 1)
            for score in (self.score_fr, self.score_pool4, self.score_pool3):
                nn.init.zeros_(score.weight)
                nn.init.zeros_(score.bias)
            bilinear4 = torch.tensor(np.asarray(bilinear_kernel(4, num_classes)).transpose(2, 3, 0, 1))
            self.upscore2 = nn.ConvTranspose2d(num_classes, num_classes, 4, 2, bias=False)
            self.upscore_pool4 = nn.ConvTranspose2d(num_classes, num_classes, 4, 2, bias=False)
            with torch.no_grad():
                self.upscore2.weight.copy_(bilinear4)
                self.upscore_pool4.weight.copy_(bilinear4)
            bilinear16 = np.asarray(bilinear_kernel(16, num_classes)).transpose(2, 3, 0, 1)
            self.register_buffer("upscore8", torch.tensor(bilinear16))

        def forward(self, x):
            height, width_ = x.shape[2:]
            features = {}
            for spec in self.specs:
                if spec.kind == "pool":
                    x = nn.functional.max_pool2d(x, 2, 2, ceil_mode=True)
                    features[spec.name] = x
                else:
                    x = nn.functional.relu(self.layers[spec.name](x))
                    if spec.name.startswith("fc"):
                        x = self.dropout(x)
            scores = self.upscore2(self.score_fr(x))
            scores = scores + _crop(self.score_pool4(features["pool4"]),
                                    offsets["score_pool4c"], scores.shape[2:])
            scores = self.upscore_pool4(scores)
            scores = scores + _crop(self.score_pool3(features["pool3"]),
                                    offsets["score_pool3c"], scores.shape[2:])
            scores = nn.functional.conv_transpose2d(scores, self.upscore8, stride=8)
            return _crop(scores, offsets["score"], (height, width_))

    return FCN8s()


def _crop(x, offset: int, size):
    return x[:, :, offset:offset + size[0], offset:offset + size[1]]


def train_step_fn(torch, model, learning_rate: float = 1e-4, momentum: float = 0.9):
    """A closure running one SGD-momentum step of softmax cross-entropy on (images NCHW, labels
    NHW, or N for an image classifier such as torch_resnet's); returns the loss.
    On a GPU the forward pass runs under bfloat16 autocast, as ours computes in bfloat16 there
    (`model.dtype = "auto"`), with float32 parameters and loss on both sides."""
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=momentum)
    model.train()
    device = next(model.parameters()).device.type
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")

    def step(images, labels):
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = model(images)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        return loss

    return step
