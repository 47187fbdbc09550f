r"""Released ImageNet weights -> this codebase's backbones, and `init_from` for any experiment.

Sources (files the user downloads; nothing is fetched here):
- TF-Slim checkpoints (`--format=slim`): Inception-v4 and Inception-ResNet-v2 as released with
  the paper (`inception_v4.ckpt`, `inception_resnet_v2_2016_08_30.ckpt`; 1001 classes, inputs in
  [-1, 1]). Variables are matched by name: the backbones use the slim definitions' scope names.
- Keras `.h5` files (`--format=keras_h5`): `keras.applications` VGG16, ResNet50/101 and
  InceptionResNetV2 (the files `weights="imagenet"` downloads, e.g.
  `resnet50_weights_tf_dim_ordering_tf_kernels.h5`, or any `model.save("x.h5")`). Keras' conv
  biases before a batch norm are folded into the norm's mean, which is exact.
- torchvision state dicts (`--format=torchvision`): ResNet-50/101 and ResNeXt-101 32x8d as
  torchvision releases them (`resnext101_32x8d-*.pth`, read with torch) or as `.safetensors`
  with the same names (timm's `resnext101_32x8d.tv_in1k`, read here without torch). These
  networks put the stride in the 3x3 conv: build them with `stride_in_1x1=False`.

Convert once, then start any experiment from the result with `--config.init_from=DIR`:

  python -m segattn_jax.backbones.pretrained --backbone=inception_v4 --format=slim \
      --weights=inception_v4.ckpt --output=weights/inception_v4

The output is an orbax checkpoint of the backbone's variables ({"params", "batch_stats"}) plus
`pretrained.json` (what was converted and what the file did not have). `init_from` finds the
subtree of the experiment's model that the checkpoint matches (the model itself, or its backbone
submodule), loads it, and logs what it loaded and what it left initialized.
"""
from __future__ import annotations

import collections
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from segattn_jax.backbones import BACKBONES, build_backbone

FORMATS = ("slim", "keras_h5", "torchvision")
INFO_FILE = "pretrained.json"
# Input size each backbone's variables are traced at (shapes do not depend on it, except the
# Inception auxiliary head, which needs the paper's 299x299).
_TEMPLATE_SIZE = {"inception_v4": 299, "inception_resnet_v2": 299}
_SLIM_SCOPE = {"inception_v4": "InceptionV4", "inception_resnet_v2": "InceptionResnetV2"}
_SLIM_REPEATS = {"block35": "Repeat", "block17": "Repeat_1", "block8": "Repeat_2"}
_BATCH_NORM_NAMES = {"scale": "gamma", "bias": "beta", "mean": "moving_mean",
                     "var": "moving_variance"}

Path = tuple[str, ...]  # (collection, *module path, variable name)


def variables_template(backbone: str, num_classes: int) -> dict[Path, Any]:
    """Every variable of the backbone (with its ImageNet head) as flat path -> ShapeDtypeStruct,
    traced, not computed."""
    model = build_backbone(backbone, num_classes=num_classes)
    size = _TEMPLATE_SIZE.get(backbone, 224)
    variables = jax.eval_shape(
        lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                           jnp.zeros((1, size, size, 3)), train=True))
    return flax.traverse_util.flatten_dict(dict(variables))


# ---- TF-Slim checkpoints --------------------------------------------------------------------


def slim_name(backbone: str, path: Path) -> str:
    """The TF-Slim variable name of one of our variables, e.g. ('params', 'block35_1',
    'Branch_0', 'Conv2d_1x1', 'conv', 'kernel') -> 'InceptionResnetV2/Repeat/block35_1/Branch_0/
    Conv2d_1x1/weights'."""
    _, *modules, leaf = path
    if modules and modules[0].split("_")[0] in _SLIM_REPEATS and modules[0] != "Block8":
        modules = [_SLIM_REPEATS[modules[0].split("_")[0]], *modules]
    if modules == ["Logits"]:  # slim's fully_connected 'Logits' inside the 'Logits' scope
        modules = ["Logits", "Logits"]
    if modules[-1] == "bn":
        return "/".join([_SLIM_SCOPE[backbone], *modules[:-1], "BatchNorm",
                         _BATCH_NORM_NAMES[leaf]])
    if modules[-1] == "conv":
        modules = modules[:-1]
    return "/".join([_SLIM_SCOPE[backbone], *modules, {"kernel": "weights", "bias": "biases"}[leaf]])


def from_slim(backbone: str, checkpoint: str, template: dict[Path, Any]
              ) -> tuple[dict[Path, np.ndarray], dict[str, list[str]]]:
    """Our variables from a TF-Slim checkpoint (read with TensorFlow's checkpoint reader)."""
    import tensorflow as tf  # only for reading the checkpoint

    if backbone not in _SLIM_SCOPE:
        raise ValueError(f"TF-Slim checkpoints are read for {sorted(_SLIM_SCOPE)}, not "
                         f"{backbone!r}; use --format=keras_h5.")
    try:
        reader = tf.train.load_checkpoint(checkpoint)
    except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as e:
        raise FileNotFoundError(f"{checkpoint} is not a readable TF checkpoint (give the prefix, "
                                f"e.g. inception_v4.ckpt): {str(e).splitlines()[0]}") from None
    available = reader.get_variable_to_shape_map()
    return _by_name(template, lambda path: slim_name(backbone, path), available,
                    reader.get_tensor, file=checkpoint, source="",
                    expected=f"a TF-Slim {backbone} checkpoint",
                    bookkeeping=_is_training_bookkeeping)


def _by_name(template: dict[Path, Any], name_of: Callable[[Path], str], available,
             read: Callable[[str], np.ndarray], *, file: str, source: str, expected: str,
             bookkeeping: Callable[[str], bool]
             ) -> tuple[dict[Path, np.ndarray], dict[str, list[str]]]:
    """Our variables and the conversion report, for formats that name each of our variables:
    `name_of(path)` looked up among the file's names (`available`), read and shape-checked.
    A file with none of them is not `expected`; `bookkeeping` names are not reported unused."""
    variables, missing, used = {}, [], set()
    for path, spec in template.items():
        name = name_of(path)
        if name not in available:
            missing.append(name)
            continue
        variables[path] = _checked(path, read(name), spec, source=f"{source}{name}")
        used.add(name)
    if not variables:
        raise ValueError(f"{file} has none of the variables (expected names like "
                         f"{name_of(next(iter(template)))!r}; it has e.g. "
                         f"{sorted(available)[:3]}): not {expected}.")
    return variables, {"missing_in_file": missing,
                       "unused_in_file": sorted(n for n in available if n not in used
                                                and not bookkeeping(n))}


def _is_training_bookkeeping(name: str) -> bool:
    """Optimizer slots, moving averages of weights and the step counter in slim checkpoints."""
    return bool(re.search(r"(RMSProp|Momentum|Adam|ExponentialMovingAverage|global_step)", name))


# ---- Keras .h5 --------------------------------------------------------------------------------


def read_keras_h5(path: str) -> dict[str, dict[str, np.ndarray]]:
    """Layer name -> {weight name ('kernel', 'bias', 'gamma', ...): array} from a legacy Keras
    HDF5 file: a weights file (`weights="imagenet"` downloads) or a whole saved model."""
    import h5py

    try:
        file = h5py.File(path, "r")
    except OSError as e:
        raise FileNotFoundError(f"{path} is not a readable HDF5 file: {e}") from None
    with file:
        root = file["model_weights"] if "model_weights" in file else file
        if "layer_names" not in root.attrs:
            raise ValueError(f"{path} is not a Keras HDF5 weights file (no 'layer_names'); "
                             "save the model with model.save('x.h5') or use the released "
                             "*_tf_dim_ordering_tf_kernels.h5 files.")
        layers = {}
        for layer in root.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else str(layer)
            group = root[layer]
            names = [n.decode() if isinstance(n, bytes) else str(n)
                     for n in group.attrs.get("weight_names", [])]
            if names:  # 'conv1_conv/kernel:0' (Keras 2) or 'conv1_conv/kernel' (Keras 3)
                layers[layer] = {n.split("/")[-1].split(":")[0]: np.asarray(group[n])
                                 for n in names}
        return layers


def _keras_units_vgg16(template: dict[Path, Any]) -> Iterable[tuple[tuple[str, ...], str, str]]:
    """(our module path, Keras layer, Keras batch-norm layer or '') for VGG16."""
    renames = {"fc6": "fc1", "fc7": "fc2", "fc8": "predictions"}
    for module in sorted({path[1] for path in template}):
        stage_conv = re.fullmatch(r"conv(\d)_(\d)", module)
        keras = f"block{stage_conv[1]}_conv{stage_conv[2]}" if stage_conv else renames[module]
        yield (module,), keras, ""


def _keras_units_resnet(template: dict[Path, Any]) -> Iterable[tuple[tuple[str, ...], str, str]]:
    for path in sorted({path[1:-2] for path in template if path[-2] in ("conv", "bn")}):
        keras = path[0] if len(path) == 1 else f"{path[0]}_{path[1].removeprefix('conv_bn_')}"
        yield path, f"{keras}_conv", f"{keras}_bn"
    yield ("predictions",), "predictions", ""


def _keras_units_inception_resnet_v2(template: dict[Path, Any]
                                     ) -> Iterable[tuple[tuple[str, ...], str, str]]:
    """Keras names most IR-v2 layers by creation order (conv2d_1, batch_normalization_1, ...):
    they are matched to our layers in the order the net applies them."""
    from segattn_jax.backbones.inception import conv_bn_paths, inception_resnet_v2_blocks

    ordered = [p for p in conv_bn_paths(inception_resnet_v2_blocks()) if p != ("Conv2d_7b_1x1",)]
    for i, path in enumerate(ordered):
        yield path, f"#conv2d:{i}", f"#batch_normalization:{i}"
    for module in sorted({path[1] for path in template}):
        if re.fullmatch(r"block(35|17|8)_\d+|Block8", module):
            keras = "block8_10" if module == "Block8" else module
            yield (module, "Conv2d_1x1"), f"{keras}_conv", ""
    yield ("Conv2d_7b_1x1",), "conv_7b", "conv_7b_bn"
    yield ("Logits",), "predictions", ""


_KERAS_UNITS: dict[str, Callable] = {
    "vgg16": _keras_units_vgg16,
    "resnet50": _keras_units_resnet,
    "resnet101": _keras_units_resnet,
    "inception_resnet_v2": _keras_units_inception_resnet_v2,
}


def _auto_named(layers: dict[str, Any], base: str) -> list[str]:
    """Keras' auto-named layers `base`, `base_1`, `base_2` ... in creation order."""
    names = [n for n in layers if re.fullmatch(rf"{base}(_\d+)?", n)]
    return sorted(names, key=lambda n: int(n.rpartition("_")[2]) if n != base else 0)


def from_keras_h5(backbone: str, path: str, template: dict[Path, Any]
                  ) -> tuple[dict[Path, np.ndarray], dict[str, list[str]]]:
    """Our variables from a Keras `.h5` file of the same architecture."""
    if backbone not in _KERAS_UNITS:
        raise ValueError(f"Keras .h5 files are read for {sorted(_KERAS_UNITS)}, not "
                         f"{backbone!r}; use --format=slim.")
    layers = read_keras_h5(path)
    ordered = {base: _auto_named(layers, base) for base in ("conv2d", "batch_normalization")}

    def layer(name: str) -> dict[str, np.ndarray]:
        if name.startswith("#"):
            base, index = name[1:].split(":")
            if int(index) >= len(ordered[base]):
                raise ValueError(f"{path} has {len(ordered[base])} '{base}' layers, fewer than "
                                 f"{backbone} needs: not a Keras {backbone} file.")
            name = ordered[base][int(index)]
        if name not in layers:
            raise ValueError(f"{path} has no layer {name!r}: not a Keras {backbone} file (its "
                             f"layers include {list(layers)[:5]}).")
        used.add(name)
        return layers[name]

    variables, used = {}, set()
    for module, conv_name, bn_name in _KERAS_UNITS[backbone](template):
        conv = layer(conv_name)
        prefix = module + ("conv",) if bn_name else module
        variables[("params", *prefix, "kernel")] = conv["kernel"]
        if not bn_name:
            if "bias" in conv:
                variables[("params", *module, "bias")] = conv["bias"]
            continue
        bn = layer(bn_name)
        # conv(x) + b then batch norm == conv(x) then batch norm with mean - b.
        variables[("batch_stats", *module, "bn", "mean")] = bn["moving_mean"] - conv.get("bias", 0)
        variables[("batch_stats", *module, "bn", "var")] = bn["moving_variance"]
        variables[("params", *module, "bn", "bias")] = bn["beta"]
        if "gamma" in bn:
            variables[("params", *module, "bn", "scale")] = bn["gamma"]
    checked = {}
    for key, value in variables.items():
        if key not in template:
            raise ValueError(f"{path}: our {backbone} has no variable {'/'.join(key)} (its "
                             "conversion assumes the Keras layout of another version).")
        checked[key] = _checked(key, value, template[key], source=f"{path}")
    return checked, {"missing_in_file": ["/".join(k) for k in template if k not in checked],
                     "unused_in_file": sorted(set(layers) - used)}


# ---- torchvision state dicts ----------------------------------------------------------------

_TORCH_RESNETS = ("resnet50", "resnet101", "resnext101_32x8d")
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Every tensor of a `.safetensors` file (8-byte header length, JSON header, raw
    little-endian data), with numpy alone."""
    with open(path, "rb") as file:
        data = file.read()
    try:
        (length,) = np.frombuffer(data[:8], "<u8")
        header = json.loads(data[8:8 + int(length)])
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a .safetensors file (bad header: {e}).") from None
    tensors, start = {}, 8 + int(length)
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] == "BF16":
            import ml_dtypes
            dtype = ml_dtypes.bfloat16
        elif entry["dtype"] in _SAFETENSORS_DTYPES:
            dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
        else:
            raise ValueError(f"{path}: tensor {name} has dtype {entry['dtype']}, not one of "
                             f"{sorted(_SAFETENSORS_DTYPES)} or BF16.")
        begin, end = entry["data_offsets"]
        tensors[name] = np.frombuffer(data[start + begin:start + end],
                                      np.dtype(dtype).newbyteorder("<")).reshape(entry["shape"])
    return tensors


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """A PyTorch state dict as numpy arrays: `.safetensors` read here, anything else with
    `torch.load` (tensors only; torch must be installed for it)."""
    if str(path).endswith(".safetensors"):
        return read_safetensors(path)
    try:
        import torch
    except ImportError:
        raise ValueError(f"{path} is a torch.save file, which needs torch to read (pip install "
                         "torch), or give the same weights as .safetensors.") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several kinds for a file that is not its own
        raise ValueError(f"{path} is not a readable torch.save file: "
                         f"{(str(e).splitlines() or [type(e).__name__])[0]}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict: save "
                         "model.state_dict() (torch.save) or a .safetensors file.")
    state = state.get("state_dict", state.get("model", state))
    return {name: value.float().numpy() for name, value in state.items()
            if hasattr(value, "numpy")}


def torchvision_name(path: Path) -> str:
    """torchvision's state-dict name of one of our ResNet variables, e.g. ('params',
    'conv3_block2', 'conv_bn_1', 'conv', 'kernel') -> 'layer2.1.conv1.weight'."""
    collection, *modules, leaf = path
    names = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
             "var": "running_var"}
    if modules == ["predictions"]:
        return f"fc.{names[leaf]}"
    *unit, layer = modules
    if unit == ["conv1"]:
        prefix = {"conv": "conv1", "bn": "bn1"}[layer]
    else:
        stage, block = re.fullmatch(r"conv(\d)_block(\d+)", unit[0]).groups()
        index = int(unit[1].removeprefix("conv_bn_"))
        block_name = f"layer{int(stage) - 1}.{int(block) - 1}"
        prefix = (f"{block_name}.downsample.{0 if layer == 'conv' else 1}" if index == 0
                  else f"{block_name}.{layer}{index}")
    return f"{prefix}.{names[leaf]}"


def from_torchvision(backbone: str, path: str, template: dict[Path, Any]
                     ) -> tuple[dict[Path, np.ndarray], dict[str, list[str]]]:
    """Our variables from a torchvision ResNet / ResNeXt state dict (OIHW conv kernels become
    HWIO, the fc's (out, in) weight becomes (in, out))."""
    if backbone not in _TORCH_RESNETS:
        raise ValueError(f"torchvision state dicts are read for {list(_TORCH_RESNETS)}, not "
                         f"{backbone!r}; use --format=keras_h5 or slim.")
    state = read_state_dict(path)

    def read(name: str) -> np.ndarray:
        value = np.asarray(state[name], np.float32)
        return value.transpose(2, 3, 1, 0) if value.ndim == 4 else (
            value.T if name == "fc.weight" else value)

    return _by_name(template, torchvision_name, state, read, file=path, source=f"{path}: ",
                    expected=f"a torchvision {backbone} state dict",
                    bookkeeping=lambda name: name.endswith("num_batches_tracked"))


def _checked(path: Path, value: np.ndarray, spec: Any, source: str) -> np.ndarray:
    """`value` in our variable's shape; Keras' Dense kernels become our fc-as-conv kernels."""
    value = np.asarray(value, np.float32)
    if value.shape != spec.shape:
        if value.size != int(np.prod(spec.shape)) or value.ndim != 2:
            raise ValueError(f"{source}: {'/'.join(path)} has shape {value.shape} in the weights "
                             f"file but {spec.shape} in the model: the file is another "
                             "architecture, width or number of classes.")
        value = value.reshape(spec.shape)
    return value


# ---- convert, save, load ------------------------------------------------------------------------


def convert(backbone: str, fmt: str, weights: str, num_classes: int | None = None
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(variables {"params", "batch_stats"} of the backbone with its ImageNet head, info)."""
    if backbone not in BACKBONES:
        raise ValueError(f"Unknown backbone {backbone!r}; valid: {sorted(BACKBONES)}.")
    if fmt not in FORMATS:
        raise ValueError(f"Unknown weights format {fmt!r}; valid: {FORMATS}.")
    if not epath.Path(weights).exists() and not epath.Path(f"{weights}.index").exists():
        raise FileNotFoundError(f"No weights file {weights} (the converter's --weights).")
    if num_classes is None:
        num_classes = 1001 if fmt == "slim" else 1000
    template = variables_template(backbone, num_classes)
    reader = {"slim": from_slim, "keras_h5": from_keras_h5, "torchvision": from_torchvision}[fmt]
    flat, report = reader(backbone, weights, template)
    info = {"backbone": backbone, "format": fmt, "weights": str(weights),
            "num_classes": num_classes, "converted": len(flat), **report}
    return flax.traverse_util.unflatten_dict(flat), info


def save(variables: dict[str, Any], directory: str | epath.Path, info: dict[str, Any]) -> None:
    """Writes `variables` as an orbax checkpoint in `directory` and `info` beside it."""
    import orbax.checkpoint as ocp

    directory = epath.Path(directory).absolute() if "://" not in str(directory) else \
        epath.Path(directory)
    if directory.exists():
        raise FileExistsError(f"{directory} exists; choose a new --output (nothing was written).")
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory / "variables", variables)
    checkpointer.wait_until_finished()
    (directory / INFO_FILE).write_text(json.dumps(info, indent=2))


RUN_CHECKPOINTS = "checkpoints"  # a training run's workdir holds its checkpoints here


def _latest_run_checkpoint(directory: epath.Path) -> epath.Path | None:
    """The newest complete checkpoint of the training run in `directory`, or None."""
    steps = [p for p in (directory / RUN_CHECKPOINTS).iterdir()
             if p.name.isdigit() and (p / "default").exists()]
    return max(steps, key=lambda p: int(p.name)) / "default" if steps else None


def check_converted(directory: str | epath.Path) -> None:
    """Fails, saying how to make them, unless `directory` holds weights `save` wrote or is a
    training run's workdir with a checkpoint."""
    directory = epath.Path(directory)
    if (directory / RUN_CHECKPOINTS).is_dir():
        if _latest_run_checkpoint(directory) is None:
            raise FileNotFoundError(
                f"config.init_from={str(directory)!r} is a run's workdir without a complete "
                f"checkpoint in {directory / RUN_CHECKPOINTS}: train that run first.")
        return
    if not (directory / "variables").exists():
        raise FileNotFoundError(
            f"config.init_from={str(directory)!r}: no converted weights there (expected "
            f"{directory / 'variables'}) and no training run (expected "
            f"{directory / RUN_CHECKPOINTS}). Convert released weights first: python -m "
            "segattn_jax.backbones.pretrained --backbone=... --format=... --weights=... "
            f"--output={directory}")


def _restore_without_target(path: epath.Path) -> Any:
    """An orbax StandardSave item as numpy arrays, shaped by its own metadata."""
    import orbax.checkpoint as ocp

    metadata = ocp.StandardCheckpointer().metadata(path)
    metadata = getattr(metadata, "item_metadata", metadata)
    metadata = getattr(metadata, "tree", metadata)
    target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), metadata)
    return ocp.StandardCheckpointer().restore(path, target)


def load(directory: str | epath.Path) -> dict[str, Any]:
    """The variables a `save` wrote, or those of a training run's latest checkpoint (its params
    and model state: how FCN-16s starts from a trained FCN-32s), as numpy arrays."""
    check_converted(directory)
    directory = epath.Path(directory).absolute()  # orbax restores only absolute paths
    if (directory / RUN_CHECKPOINTS).is_dir():
        state = _restore_without_target(_latest_run_checkpoint(directory))
        return {"params": state["params"], **state.get("model_state", {})}
    return _restore_without_target(directory / "variables")


def _subtree_matches(model: Iterable[Path], loaded: Iterable[Path]
                     ) -> collections.Counter:
    """(source, prefix) -> how many checkpoint variables under module path `source` exist in
    the model under `prefix` at the same relative path (collection, module..., leaf)."""
    prefixes_by_rest = collections.defaultdict(list)
    for path in model:
        for i in range(1, len(path) - 1):
            prefixes_by_rest[(path[0], *path[i:])].append(path[1:i])
    matches = collections.Counter()
    for path in loaded:
        for i in range(1, len(path) - 1):
            for prefix in prefixes_by_rest.get((path[0], *path[i:]), ()):
                matches[(path[1:i], prefix)] += 1
    return matches


def init_from(variables: dict[str, Any], directory: str | epath.Path, skip: str = ""
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """`variables` with the subtrees that the checkpoint in `directory` matches replaced by it.

    A subtree is a module path P (the model root, or e.g. its "backbone") under which the most
    of the checkpoint's variables exist; every P that ties for the most is filled, so a model
    with two copies of a network (SDS's box and region pathways, each a VGG16) starts both from
    it, as the papers start every copy from ImageNet. The source may be a subtree of the
    checkpoint too (a trained classifier's "backbone" filling DeconvNet's "encoder"); the whole
    checkpoint wins ties. Variables whose path matches the regex `skip` (e.g. "Logits" to
    fine-tune on other classes) are not loaded. Returns (variables, report).
    """
    model = flax.traverse_util.flatten_dict(dict(variables))
    loaded = {path: value for path, value in
              flax.traverse_util.flatten_dict(dict(load(directory))).items()
              if not (skip and re.search(skip, "/".join(path[1:])))}
    matches = _subtree_matches(model, loaded)
    best = max(matches.values(), default=0)
    if not loaded or not best:
        theirs = sorted({path[1] for path in loaded})[:8]
        ours = sorted({path[1] for path in model})[:8]
        raise ValueError(
            f"config.init_from={str(directory)!r}: no subtree of the model matches the "
            f"checkpoint (its modules: {theirs}; the model's: {ours}). It was converted for "
            "another backbone than this model's.")
    source = min((source for (source, _), count in matches.items() if count == best),
                 key=lambda source: (len(source), source))
    subtrees = sorted(prefix for (s, prefix), count in matches.items()
                      if s == source and count == best)
    n = len(source)
    # Model path -> the checkpoint path it takes its value from, for those the model has.
    targets = {(path[0], *prefix, *path[1 + n:]): path for prefix in subtrees for path in loaded
               if path[1:1 + n] == source and (path[0], *prefix, *path[1 + n:]) in model}
    for target, path in targets.items():
        if tuple(model[target].shape) != tuple(loaded[path].shape):
            raise ValueError(
                f"config.init_from={str(directory)!r}: {'/'.join(target[1:])} has shape "
                f"{tuple(loaded[path].shape)} in the checkpoint but {tuple(model[target].shape)} "
                "in the model (other width or number of classes?). Skip it with "
                "--config.init_from_skip=REGEX, or match the model to the weights.")
    for target, path in targets.items():
        model[target] = jnp.asarray(loaded[path], model[target].dtype)
    used = set(targets.values())
    left = ["/".join(p) for p in model if p not in targets
            and any(p[1:1 + len(prefix)] == prefix for prefix in subtrees)]
    report = {"subtree": ", ".join("/".join(prefix) or "(model root)" for prefix in subtrees),
              "source": "/".join(source) or "(checkpoint root)",
              "loaded": len(targets),
              "left_initialized": left,
              "not_in_model": ["/".join(p) for p in loaded if p not in used]}
    logging.info("init_from %s (%s) into %s: loaded %d variables; left initialized %d (%s); %d "
                 "in the checkpoint not in the model (%s).", directory, report["source"],
                 report["subtree"], report["loaded"], len(left), ", ".join(left[:6]),
                 len(report["not_in_model"]), ", ".join(report["not_in_model"][:6]))
    return flax.traverse_util.unflatten_dict(model), report


def main(argv: list[str]) -> None:
    del argv
    import sys

    from absl import flags

    f = flags.FLAGS
    try:
        variables, info = convert(f.backbone, f.format, f.weights, f.num_classes)
        save(variables, f.output, info)
    except (ValueError, FileNotFoundError, FileExistsError) as e:  # bad input: one clear line
        sys.exit(f"error: {e}")
    print(f"Converted {info['converted']} variables of {f.backbone} from {f.weights} into "
          f"{f.output}; not in the file (left initialized when loaded): "
          f"{len(info['missing_in_file'])}; in the file but unused: "
          f"{len(info['unused_in_file'])}. Details: {epath.Path(f.output) / INFO_FILE}")


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_enum("backbone", None, sorted(BACKBONES), "Which backbone the file holds.")
    flags.DEFINE_enum("format", None, list(FORMATS), "slim (TF-Slim checkpoint), keras_h5 or "
                      "torchvision (.pth or .safetensors state dict).")
    flags.DEFINE_string("weights", None, "The released weights file (slim: checkpoint prefix).")
    flags.DEFINE_string("output", None, "New directory for the converted orbax checkpoint.")
    flags.DEFINE_integer("num_classes", None, "Classes of the file's classifier (default: 1001 "
                         "for slim, 1000 for Keras).")
    flags.mark_flags_as_required(["backbone", "format", "weights", "output"])
    app.run(main)
