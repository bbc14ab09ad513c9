"""Published stacked-hourglass weights -> this package's Keras model, exactly.

Formats (``FORMATS``), each read from its port's public module definitions (see ``tests/torch_reference.py``):

* ``pytorch_stacked_hourglass``: princeton-vl/pytorch_stacked_hourglass ``checkpoint.pt``: ``{"state_dict":
  ...}`` of ``Trainer(DataParallel(PoseNet))`` (keys ``model.module.pre.0.conv.weight`` ...). Its forward
  pass is hg.lua's; every ``Residual`` also builds a ``skip_layer`` convolution that it uses only where the
  channel count changes: the unused ones are counted and left out. Inputs: RGB in [0, 1].
* ``pytorch_pose``: bearpaw/pytorch-pose ``checkpoint.pth.tar`` / ``model_best.pth.tar``: ``{"state_dict":
  ...}`` of ``DataParallel(HourglassNet)`` (``module.conv1.weight`` ...), any stacks and blocks. Its stem
  differs from hg.lua's (``build_model(variant="pytorch_pose")``). Its data loader subtracts a per-channel
  mean from RGB in [0, 1] (no division by a standard deviation); the mean is not in the checkpoints, so the
  one of its MPII training (``PYTORCH_POSE_MPII_MEAN``) is the default, and the converted model subtracts it
  itself, with a stock ``Normalization`` layer.

Stacks, blocks, features, depth and joints are read from the weights. Batch norm: PyTorch's epsilon (1e-5)
and running statistics; convolutions NCHW (out, in, kh, kw) -> Keras (kh, kw, in, out), biases kept.
The converted model takes the package's standard input (RGB in [0, 1], NHWC), and carries its description:
the skeleton (MPII, the ports' published joint order, unless named), input size 256, stride 4, and the
source file and format as provenance.
"""

import hashlib
import pathlib

import numpy as np

from hourglass_tf import metadata
from hourglass_tf import skeleton as skeletons
from hourglass_tf.model import build_model
from hourglass_tf.weights import torch_files

FORMATS = ("pytorch_stacked_hourglass", "pytorch_pose")
PYTORCH_POSE_MPII_MEAN = (0.4404, 0.4440, 0.4327)  # pytorch-pose's data/mpii/mean.pth.tar (RGB, [0, 1])
PREFIXES = ("model.module.", "module.", "model.")  # DataParallel / Trainer wrappers
SIGNATURES = {  # a key each layout has and the other does not
    "pytorch_stacked_hourglass": "pre.0.conv.weight",
    "pytorch_pose": "layer1.0.conv1.weight",
}


class ConversionError(ValueError):
    """A weights file of another layout, or one that does not fit the network; the message says what was found."""


def state_dict_of(checkpoint, where):
    """The tensors of a checkpoint (``{"state_dict": ...}`` or a bare state dict), wrapper prefixes removed."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, np.ndarray) for v in state.values()):
        found = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ConversionError(
            f"{where}: no state dict of tensors inside (found {found}); expected a checkpoint "
            "with 'state_dict' or a bare state dict"
        )
    for prefix in PREFIXES:
        if all(key.startswith(prefix) for key in state):
            return {key[len(prefix) :]: value for key, value in state.items()}
    return dict(state)


def detect_format(state, where):
    """Which of ``FORMATS`` a state dict is; ConversionError naming a few keys when neither."""
    found = [fmt for fmt, key in SIGNATURES.items() if key in state]
    if len(found) != 1:
        sample = ", ".join(sorted(state)[:6])
        raise ConversionError(
            f"{where}: not a stacked-hourglass checkpoint of a known layout (found keys {sample}, "
            f"...; expected {SIGNATURES['pytorch_stacked_hourglass']!r} for "
            f"pytorch_stacked_hourglass or {SIGNATURES['pytorch_pose']!r} for pytorch_pose)"
        )
    return found[0]


def _count(state, pattern):
    """How many consecutive i = 0, 1, ... have ``pattern.format(i)`` in ``state``."""
    n = 0
    while pattern.format(n) in state:
        n += 1
    return n


def architecture(fmt, state):
    """``build_model`` arguments read from the weights."""
    if fmt == "pytorch_stacked_hourglass":
        stacks = _count(state, "hgs.{}.0.up1.bn1.weight")
        depth = 1 + max(k for k in range(16) if f"hgs.0.0.{'low2.' * k}up1.bn1.weight" in state)
        return {
            "num_stacks": stacks,
            "num_blocks": 1,
            "filters": int(state["pre.4.conv3.conv.weight"].shape[0]),
            "depth": depth,
            "num_joints": int(state["outs.0.conv.weight"].shape[0]),
            "variant": "hg.lua",
        }
    return {
        "num_stacks": _count(state, "hg.{}.hg.0.0.0.bn1.weight"),
        "num_blocks": _count(state, "hg.0.hg.0.0.{}.bn1.weight"),
        "filters": int(state["score.0.weight"].shape[1]),
        "depth": _count(state, "hg.0.hg.{}.0.0.bn1.weight"),
        "num_joints": int(state["score.0.weight"].shape[0]),
        "variant": "pytorch_pose",
    }


def _residual_keys(fmt, prefix):
    """Keras residual parts -> the port's key prefixes for one residual module."""
    if fmt == "pytorch_stacked_hourglass":
        return {
            "bn1": f"{prefix}.bn1",
            "conv1": f"{prefix}.conv1.conv",
            "bn2": f"{prefix}.bn2",
            "conv2": f"{prefix}.conv2.conv",
            "bn3": f"{prefix}.bn3",
            "conv3": f"{prefix}.conv3.conv",
            "skip": f"{prefix}.skip_layer.conv",
        }
    return {
        "bn1": f"{prefix}.bn1",
        "conv1": f"{prefix}.conv1",
        "bn2": f"{prefix}.bn2",
        "conv2": f"{prefix}.conv2",
        "bn3": f"{prefix}.bn3",
        "conv3": f"{prefix}.conv3",
        "skip": f"{prefix}.downsample.0",
    }


def layer_map(fmt, arch):
    """{Keras layer name: port key prefix} for every layer with weights (residual modules expanded)."""
    psh = fmt == "pytorch_stacked_hourglass"
    residuals = {
        "stem_res1": "pre.1" if psh else "layer1.0",
        "stem_res2": "pre.3" if psh else "layer2.0",
        "stem_res3": "pre.4" if psh else "layer3.0",
    }
    layers = {"stem_conv": "pre.0.conv" if psh else "conv1", "stem_bn": "pre.0.bn" if psh else "bn1"}
    depth, blocks = arch["depth"], arch["num_blocks"]
    for s in range(1, arch["num_stacks"] + 1):
        i = s - 1
        for d in range(depth, 0, -1):
            level = f"hg{s}_d{d}"
            base = f"hgs.{i}.0" + ".low2" * (depth - d)
            parts = {"skip": ".up1", "low1": ".low1", "low3": ".low3"}
            if d == 1:
                parts["bottom"] = ".low2"
            for part, suffix in parts.items():
                for b in range(1, blocks + 1):
                    index = {"skip": 0, "low1": 1, "low3": 2, "bottom": 3}[part]
                    residuals[f"{level}_{part}_res{b}"] = base + suffix if psh else f"hg.{i}.hg.{d - 1}.{index}.{b - 1}"
        for b in range(1, blocks + 1):
            residuals[f"hg{s}_out_res{b}"] = f"features.{i}.0" if psh else f"res.{i}.{b - 1}"
        layers[f"hg{s}_lin_conv"] = f"features.{i}.1.conv" if psh else f"fc.{i}.0"
        layers[f"hg{s}_lin_bn"] = f"features.{i}.1.bn" if psh else f"fc.{i}.1"
        layers[f"stack_{s}"] = f"outs.{i}.conv" if psh else f"score.{i}"
        if s < arch["num_stacks"]:
            layers[f"hg{s}_features_back"] = f"merge_features.{i}.conv.conv" if psh else f"fc_.{i}"
            layers[f"hg{s}_heatmaps_back"] = f"merge_preds.{i}.conv.conv" if psh else f"score_.{i}"
    for name, prefix in residuals.items():
        for part, key in _residual_keys(fmt, prefix).items():
            layers[f"{name}_{part}"] = key
    return layers


def _assign(model, layers, state, where):
    """Copies the weights into ``model``; returns the keys it used. ConversionError on any mismatch."""
    import keras

    used = set()
    for layer in model.layers:
        if not layer.weights or layer.name == "input_mean":
            continue
        if layer.name not in layers:
            raise ConversionError(f"{where}: no weights for the layer {layer.name!r}")
        prefix = layers[layer.name]
        if isinstance(layer, keras.layers.BatchNormalization):
            keys = [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
            convert = [lambda v: v] * 4
        else:
            keys = [f"{prefix}.weight", f"{prefix}.bias"]
            convert = [lambda v: np.transpose(v, (2, 3, 1, 0)), lambda v: v]
        missing = [k for k in keys if k not in state]
        if missing:
            raise ConversionError(f"{where}: the layer {layer.name!r} needs {missing}, which the file does not have")
        values = [c(state[k]) for c, k in zip(convert, keys)]
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise ConversionError(
                f"{where}: {keys[0]} has shape {[v.shape for v in values]}, but the layer "
                f"{layer.name!r} needs {expected}"
            )
        layer.set_weights([v.astype(np.float32) for v in values])
        used.update(keys)
    return used


def _unused(fmt, state, used, where):
    """The keys left over: unused pytorch_stacked_hourglass skip convolutions are expected; anything else is an error."""
    left = {k for k in state if k not in used and not k.endswith("num_batches_tracked")}
    skips = {k for k in left if fmt == "pytorch_stacked_hourglass" and ".skip_layer.conv." in k}
    if left - skips:
        raise ConversionError(
            f"{where}: {len(left - skips)} tensors do not belong to the network this layout "
            f"describes, e.g. {sorted(left - skips)[:4]}"
        )
    return int(sum(state[k].size for k in skips))


def convert(path, fmt=None, skeleton="mpii", input_size=256, input_mean=None):
    """Reads a published checkpoint and returns ``(keras.Model, ModelInfo, report)``.

    Args:
      path: the weights file (either ``torch.save`` layout; read without PyTorch, see ``torch_files``).
      fmt: one of ``FORMATS``; None recognises it from the keys.
      skeleton: the joint set in the file's channel order (the ports publish MPII models).
      input_size: the network input the converted model takes (256 for the published models).
      input_mean: pytorch_pose only: the per-channel mean its training subtracted (default: its MPII mean).

    Returns:
      the model, its description, and a report dict (format, architecture, parameters, unused parameters).
    """
    path = pathlib.Path(path)
    where = str(path)
    state = state_dict_of(torch_files.load(path), where)
    found = detect_format(state, where)
    if fmt is not None and fmt != found:
        raise ConversionError(f"{where}: --from={fmt}, but the file has the {found} layout")
    arch = architecture(found, state)
    if found == "pytorch_pose":
        input_mean = tuple(float(v) for v in (input_mean or PYTORCH_POSE_MPII_MEAN))
        if len(input_mean) != 3:
            raise ConversionError(f"input_mean must be 3 values (R, G, B), received {input_mean!r}")
    elif input_mean is not None:
        raise ConversionError(
            f"{where}: pytorch_stacked_hourglass models take RGB in [0, 1]; input_mean does not apply"
        )
    skel = skeletons.get_skeleton(skeleton) if isinstance(skeleton, str) else skeleton
    if skel.num_joints != arch["num_joints"]:
        raise ConversionError(
            f"{where}: the file predicts {arch['num_joints']} joints but the skeleton {skel.name!r} "
            f"has {skel.num_joints}: name its joint set"
        )
    model = build_model(input_size=input_size, input_mean=input_mean, **arch)
    used = _assign(model, layer_map(found, arch), state, where)
    unused = _unused(found, state, used, where)
    preprocessing = [] if input_mean is None else [f"subtracts the per-channel mean {list(input_mean)} (RGB)"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    provenance = {"source": path.name, "format": found, "sha256": digest, "unused_parameters": unused}
    info = metadata.describe(model, skel, provenance=provenance, preprocessing=preprocessing)
    report = {
        "format": found,
        **arch,
        "parameters": int(model.count_params()),
        "unused_parameters": unused,
        "input_mean": input_mean,
    }
    return model, info, report
