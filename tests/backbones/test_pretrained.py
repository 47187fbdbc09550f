"""Weight converters against reference implementations nobody here wrote, and `init_from`.

Keras: `keras.applications` VGG16 / ResNet50 / InceptionResNetV2 with random weights (batch-norm
statistics and conv biases included, so the bias folding is exercised) are saved as `.h5`,
converted, and must give Keras' logits and intermediate features. TF-Slim: the variable names and
shapes of the authors' slim definitions (fixtures) must be exactly ours, and a checkpoint written
under those names must convert back to the same values.
"""
import json
import pathlib
import sys
import types

import flax
import jax
import numpy as np
import pytest

from segattn_jax.backbones import build_backbone, pretrained
from segattn_jax.backbones.resnet import ResNet
from segattn_jax.train.state import run_once

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
CLASSES = 7


def _randomize(model, seed=0):
    """Random weights of sensible scale, positive variances: every converted number matters."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        shape, name = tuple(weight.shape), weight.path
        if "moving_variance" in name:
            value = rng.uniform(0.5, 2.0, shape)
        elif "gamma" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) >= 2:
            value = rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
        else:
            value = rng.normal(0, 0.1, shape)
        weight.assign(value.astype(np.float32))


def _keras_case(tmp_path, arch, size, feature_layer):
    import keras

    constructor = {"vgg16": keras.applications.VGG16, "resnet50": keras.applications.ResNet50,
                   "inception_resnet_v2": keras.applications.InceptionResNetV2}[arch]
    model = constructor(weights=None, input_shape=(size, size, 3), classes=CLASSES,
                        classifier_activation=None)
    _randomize(model)
    path = tmp_path / f"{arch}.h5"
    model.save(path)
    images = np.random.default_rng(1).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    # One eager call for both outputs: `predict` traces a tf.function per model (IR-v2: 11 s).
    logits, features = keras.Model(model.input, [model.output,
                                                  model.get_layer(feature_layer).output])(images)
    return path, images, np.asarray(logits), np.asarray(features)


@pytest.mark.parametrize("arch, size, keras_layer, our_layer, kwargs", [
    ("resnet50", 64, "conv4_block6_out", "conv4", {}),
    ("vgg16", 224, "block4_pool", "pool4", {"first_padding": 1}),
    ("inception_resnet_v2", 75, "mixed_6a", "Mixed_6a", {}),
])
def test_keras_h5_converts_to_the_same_logits_and_features(
        tmp_path, arch, size, keras_layer, our_layer, kwargs):
    path, images, logits, features = _keras_case(tmp_path, arch, size, keras_layer)
    variables, info = pretrained.convert(arch, "keras_h5", str(path), num_classes=CLASSES)
    assert info["unused_in_file"] == []
    # Only IR-v2's auxiliary head (not in Keras) is left to initialize.
    assert all("AuxLogits" in name for name in info["missing_in_file"])
    model = build_backbone(arch, num_classes=CLASSES, **kwargs)
    # One call: compiled as run_once compiles, without XLA's backend optimizations.
    ours, intermediates = run_once(lambda v, x: model.apply(v, x, train=False),
                                   variables, images)
    scale = np.abs(logits).max()
    np.testing.assert_allclose(ours, logits, atol=2e-5 * scale)
    np.testing.assert_allclose(intermediates[our_layer], features,
                               atol=2e-5 * np.abs(features).max())


@pytest.mark.parametrize("arch", ["inception_v4", "inception_resnet_v2"])
def test_variable_names_and_shapes_are_the_slim_definitions(arch):
    slim = json.loads((FIXTURES / f"{arch}_slim_variables.json").read_text())["variables"]
    template = pretrained.variables_template(arch, 1001)
    ours = {pretrained.slim_name(arch, path): list(spec.shape) for path, spec in template.items()}
    assert ours == slim


def _write_slim_checkpoint(prefix, values):
    import tensorflow as tf

    names = sorted(values)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(values[n]) for n in names])


def test_slim_checkpoint_round_trip_and_bookkeeping_ignored(tmp_path):
    slim = json.loads((FIXTURES / "inception_v4_slim_variables.json").read_text())["variables"]
    rng = np.random.default_rng(0)
    values = {name: rng.normal(size=shape).astype(np.float32) for name, shape in slim.items()}
    values["global_step"] = np.array(7, np.int64)
    values["InceptionV4/Logits/Logits/weights/RMSProp"] = np.zeros((1536, 1001), np.float32)
    _write_slim_checkpoint(tmp_path / "model.ckpt", values)
    variables, info = pretrained.convert("inception_v4", "slim", str(tmp_path / "model.ckpt"))
    assert info["missing_in_file"] == [] and info["unused_in_file"] == []
    flat = flax.traverse_util.flatten_dict(variables)
    assert len(flat) == len(slim)
    for path, value in flat.items():
        np.testing.assert_array_equal(value, values[pretrained.slim_name("inception_v4", path)])


def test_slim_checkpoint_of_another_shape_names_the_parameter_and_both_shapes(tmp_path):
    slim = json.loads((FIXTURES / "inception_v4_slim_variables.json").read_text())["variables"]
    values = {name: np.zeros(shape, np.float32) for name, shape in slim.items()}
    values["InceptionV4/Conv2d_1a_3x3/weights"] = np.zeros((3, 3, 3, 16), np.float32)
    _write_slim_checkpoint(tmp_path / "model.ckpt", values)
    with pytest.raises(ValueError, match=r"Conv2d_1a_3x3/conv/kernel has shape \(3, 3, 3, 16\) "
                                         r"in the weights file but \(3, 3, 3, 32\)"):
        pretrained.convert("inception_v4", "slim", str(tmp_path / "model.ckpt"))


def test_wrong_architecture_and_missing_files_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such.h5"):
        pretrained.convert("resnet50", "keras_h5", str(tmp_path / "no_such.h5"))
    _write_slim_checkpoint(tmp_path / "other.ckpt", {"resnet_v1_50/conv1/weights": np.zeros(3)})
    with pytest.raises(ValueError, match="not a TF-Slim inception_resnet_v2 checkpoint"):
        pretrained.convert("inception_resnet_v2", "slim", str(tmp_path / "other.ckpt"))
    with pytest.raises(ValueError, match="use --format=keras_h5"):
        pretrained.convert("resnet50", "slim", str(tmp_path / "other.ckpt"))


def _torchvision_models():
    """torchvision.models, or a skip without torch / torchvision. PyPI's torchvision wheels load
    CUDA kernels that a CPU-only torch lacks, and then fail registering their ops' fake kernels;
    the models are plain torch and run without either."""
    pytest.importorskip("torch")
    try:
        import torchvision.models
    except ImportError:
        pytest.skip("torchvision is not installed")
    except RuntimeError:  # "operator torchvision::nms does not exist"
        for name in [n for n in sys.modules if n.startswith("torchvision")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("stub")
        import torchvision.models
    return torchvision.models


def _torchvision_case(model, size=64):
    """Random batch-norm statistics and affine terms (torchvision initializes them to 0 / 1),
    and the model's logits (eval mode) on two random images, NHWC."""
    import torch

    generator = torch.Generator().manual_seed(0)
    for name, value in model.state_dict().items():
        if name.endswith(("running_var", "bn1.weight", "bn2.weight", "bn3.weight")):
            value.copy_(torch.rand(value.shape, generator=generator) + 0.5)
        elif name.endswith(("running_mean", "bias")):
            value.copy_(torch.randn(value.shape, generator=generator) * 0.1)
    model.eval()
    images = np.random.default_rng(1).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    return images, logits


def test_torchvision_resnet_converts_to_the_same_logits(tmp_path):
    """A torch.save'd torchvision ResNet-50 (stride in the 3x3: stride_in_1x1=False) converts
    to our ResNet-50's logits; only the step counters are left unused."""
    models = _torchvision_models()
    import torch

    reference = models.resnet50(num_classes=CLASSES)
    images, logits = _torchvision_case(reference)
    torch.save(reference.state_dict(), tmp_path / "resnet50.pth")
    variables, info = pretrained.convert("resnet50", "torchvision", str(tmp_path / "resnet50.pth"),
                                         num_classes=CLASSES)
    assert info["missing_in_file"] == [] and info["unused_in_file"] == []
    model = build_backbone("resnet50", num_classes=CLASSES, stride_in_1x1=False)
    ours, _ = run_once(lambda v, x: model.apply(v, x, train=False), variables, images)
    np.testing.assert_allclose(ours, logits, atol=2e-5 * np.abs(logits).max())


def test_torchvision_resnext_safetensors_converts_to_the_same_logits(tmp_path):
    """ResNeXt's grouped kernels, from a .safetensors file read without torch: torchvision's
    ResNeXt-50 32x4d (the 101 32x8d's layout at a test's size) against our ResNet with
    groups=32, width_per_group=4."""
    models = _torchvision_models()
    safetensors_torch = pytest.importorskip("safetensors.torch")
    reference = models.resnext50_32x4d(num_classes=CLASSES)
    images, logits = _torchvision_case(reference)
    path = tmp_path / "resnext.safetensors"
    safetensors_torch.save_file(reference.state_dict(), str(path))
    model = ResNet(50, num_classes=CLASSES, stride_in_1x1=False, groups=32, width_per_group=4)
    template = flax.traverse_util.flatten_dict(dict(jax.eval_shape(
        lambda: model.init(jax.random.key(0), images[:1], train=False))))
    flat, info = pretrained.from_torchvision("resnext101_32x8d", str(path), template)
    assert info["missing_in_file"] == [] and info["unused_in_file"] == []
    variables = flax.traverse_util.unflatten_dict(flat)
    ours, _ = run_once(lambda v, x: model.apply(v, x, train=False), variables, images)
    np.testing.assert_allclose(ours, logits, atol=2e-5 * np.abs(logits).max())
    import torch

    other = tmp_path / "other.safetensors"
    safetensors_torch.save_file({"features.0.weight": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a torchvision resnet50 state dict"):
        pretrained.convert("resnet50", "torchvision", str(other))
    with pytest.raises(ValueError, match="use --format=keras_h5"):
        pretrained.convert("vgg16", "torchvision", str(other))


SMALL_VGG = dict(width=1 / 16, first_padding=1, last_layer="fc7", fc6_kernel=2)


def _init(model):
    # An rbg key: initializing with the default threefry key compiles ~5x longer on CPU.
    key = jax.random.key(1, impl="rbg")
    return jax.jit(lambda: model.init(key, np.zeros((1, 64, 64, 3)), train=False))()


def _small_vgg_weights(tmp_path):
    variables = _init(build_backbone("vgg16", num_classes=5, **SMALL_VGG))
    variables = jax.tree.map(lambda x: x + 0.5, variables)  # not the model's initial values
    pretrained.save(variables, tmp_path / "weights", {"backbone": "vgg16"})
    return variables


def test_init_from_loads_the_matching_subtree_and_reports_the_rest(tmp_path):
    saved = _small_vgg_weights(tmp_path)

    class Detector(flax.linen.Module):  # a model holding the backbone as a submodule
        @flax.linen.compact
        def __call__(self, x, train):
            features, _ = build_backbone("vgg16", **{**SMALL_VGG, "last_layer": "conv5_3"},
                                         name="backbone")(x, train=train)
            return flax.linen.Dense(3, name="head")(features)

    variables = _init(Detector())
    loaded, report = pretrained.init_from(variables, tmp_path / "weights")
    assert report["subtree"] == "backbone"
    assert report["not_in_model"] == [f"params/{layer}/{leaf}" for layer in ("fc6", "fc7", "fc8")
                                      for leaf in ("bias", "kernel")]
    assert report["left_initialized"] == []
    np.testing.assert_array_equal(loaded["params"]["backbone"]["conv4_2"]["kernel"],
                                  saved["params"]["conv4_2"]["kernel"])
    np.testing.assert_array_equal(loaded["params"]["head"]["kernel"],
                                  variables["params"]["head"]["kernel"])


def test_init_from_fills_every_copy_of_the_network(tmp_path):
    """Two pathways, each a VGG16 (SDS's box and region pathways): both start from the weights,
    as the papers start each from ImageNet; the head between them stays as initialized."""
    saved = _small_vgg_weights(tmp_path)

    class TwoPathways(flax.linen.Module):
        @flax.linen.compact
        def __call__(self, x, train):
            spec = {**SMALL_VGG, "last_layer": "conv5_3"}
            box, _ = build_backbone("vgg16", **spec, name="box_pathway")(x, train=train)
            region, _ = build_backbone("vgg16", **spec, name="region_pathway")(x, train=train)
            return flax.linen.Dense(3, name="head")(box + region)

    variables = _init(TwoPathways())
    loaded, report = pretrained.init_from(variables, tmp_path / "weights")
    assert report["subtree"] == "box_pathway, region_pathway"
    assert report["left_initialized"] == []
    assert len(report["not_in_model"]) == 6  # fc6-fc8, in neither pathway
    for pathway in ("box_pathway", "region_pathway"):
        np.testing.assert_array_equal(loaded["params"][pathway]["conv4_2"]["kernel"],
                                      saved["params"]["conv4_2"]["kernel"])
    np.testing.assert_array_equal(loaded["params"]["head"]["kernel"],
                                  variables["params"]["head"]["kernel"])


def test_init_from_takes_a_trained_models_backbone_into_another_name(tmp_path):
    """A checkpoint whose network is a subtree (a trained classifier's 'backbone', the mini
    rows' pretrained VGG16) fills a model that names that network otherwise (DeconvNet's
    'encoder'); the checkpoint's head, absent from the model, is reported unused."""
    vgg = _init(build_backbone("vgg16", **SMALL_VGG))["params"]
    trained = {"params": {"backbone": jax.tree.map(lambda x: x + 0.5, vgg),
                          "box": {"kernel": np.ones((4, 4), np.float32)}}}
    pretrained.save(trained, tmp_path / "weights", {})

    class EncoderDecoder(flax.linen.Module):
        @flax.linen.compact
        def __call__(self, x, train):
            features, _ = build_backbone("vgg16", **SMALL_VGG, name="encoder")(x, train=train)
            return flax.linen.Dense(3, name="decoder")(features)

    variables = _init(EncoderDecoder())
    loaded, report = pretrained.init_from(variables, tmp_path / "weights")
    assert (report["subtree"], report["source"]) == ("encoder", "backbone")
    assert report["left_initialized"] == [] and report["not_in_model"] == ["params/box/kernel"]
    np.testing.assert_array_equal(loaded["params"]["encoder"]["fc6"]["kernel"],
                                  trained["params"]["backbone"]["fc6"]["kernel"])
    np.testing.assert_array_equal(loaded["params"]["decoder"]["kernel"],
                                  variables["params"]["decoder"]["kernel"])


def test_init_from_a_training_run_loads_its_latest_checkpoint(tmp_path, monkeypatch):
    """A run's workdir as init_from (how FCN-16s starts from a trained FCN-32s): the variables
    of its newest checkpoint, optimizer state left out, also named relative to the current
    directory (as a table's relative workdir names its runs); a workdir without one fails."""
    import optax

    from segattn_jax.train.checkpoint import Checkpointer
    from segattn_jax.train.state import create_train_state

    variables = _init(build_backbone("vgg16", num_classes=5, **SMALL_VGG))
    tx = optax.sgd(0.1, momentum=0.9)
    checkpoints = Checkpointer(tmp_path / "run" / "checkpoints", keep=2)
    for step, offset in ((3, 1.0), (7, 2.0)):
        checkpoints.save(step, create_train_state(jax.tree.map(lambda x: x + offset, variables), tx))
    checkpoints.close()
    monkeypatch.chdir(tmp_path)
    loaded, report = pretrained.init_from(variables, "run")
    assert report["subtree"] == "(model root)" and report["left_initialized"] == []
    np.testing.assert_array_equal(loaded["params"]["conv3_1"]["kernel"],
                                  variables["params"]["conv3_1"]["kernel"] + 2.0)
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="without a complete checkpoint.*train that run"):
        pretrained.init_from(variables, tmp_path / "empty")


def test_init_from_mismatches_fail_naming_what_did_not_match(tmp_path):
    _small_vgg_weights(tmp_path)
    other_classes = _init(build_backbone("vgg16", num_classes=9, **SMALL_VGG))
    with pytest.raises(ValueError, match=r"fc8/bias has shape \(5,\) in the checkpoint but "
                                         r"\(9,\) in the model.*init_from_skip"):
        pretrained.init_from(other_classes, tmp_path / "weights")
    loaded, report = pretrained.init_from(other_classes, tmp_path / "weights", skip="fc8")
    assert report["left_initialized"] == ["params/fc8/bias", "params/fc8/kernel"]
    resnet = _init(build_backbone("resnet50", num_classes=0, width=1 / 16, last_stage="conv2"))
    with pytest.raises(ValueError, match=r"no subtree of the model matches.*conv1_1"):
        pretrained.init_from(resnet, tmp_path / "weights")
    with pytest.raises(FileNotFoundError, match=r"config.init_from=.*nowhere.*Convert"):
        pretrained.init_from(resnet, tmp_path / "nowhere")
