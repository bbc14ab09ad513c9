"""Published stacked-hourglass weights -> this package's Keras model, exactly.

Formats (``FORMATS``), each read from its project's public module definitions (see ``tests/torch_reference.py``
and ``tests/t7_reference.py``):

* ``torch7``: the authors' ``umich-stacked-hourglass.t7`` (pose-hg-train / pose-hg-demo): an ``nn.gModule``
  of ``hg.lua``'s layers. The graph is walked from the 7x7 input convolution (``t7_layers``), so stacks,
  residuals per box, depth, features and joints are read from it, and so is whether a residual follows each
  hourglass (today's ``hg.lua``) or not (the earlier revision the released file reportedly comes from:
  ``build_model(variant="umich_t7")``). ``nn`` / ``cudnn`` modules, float or CUDA tensors, and batch norm's
  old ``running_std`` are all read; a file's own batch-norm epsilon is folded into the variance. Inputs:
  RGB in [0, 1] (pose-hg-demo feeds ``image.load``'s [0, 1] RGB crops).

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
from hourglass_tf.weights import torch7, torch_files

FORMATS = ("torch7", "pytorch_stacked_hourglass", "pytorch_pose")
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
      path: the weights file: a Torch7 ``.t7`` (read without Lua, see ``torch7``) or either ``torch.save``
        layout (read without PyTorch, see ``torch_files``).
      fmt: one of ``FORMATS``; None recognises it from the file.
      skeleton: the joint set in the file's channel order (the ports publish MPII models).
      input_size: the network input the converted model takes (256 for the published models).
      input_mean: pytorch_pose only: the per-channel mean its training subtracted (default: its MPII mean).

    Returns:
      the model, its description, and a report dict (format, architecture, parameters, unused parameters).
    """
    path = pathlib.Path(path)
    where = str(path)
    if not path.is_file():
        raise ConversionError(f"{where}: no such file")
    with path.open("rb") as f:
        head = f.read(8)
    if torch7.is_torch7(head):
        found = "torch7"
        if fmt not in (None, found):
            raise ConversionError(f"{where}: --from={fmt}, but the file is a Torch7 .t7 file")
        if input_mean is not None:
            raise ConversionError(f"{where}: pose-hg-train's models take RGB in [0, 1]; input_mean does not apply")
        arch, modules = t7_layers(torch7.load(path), where)
    else:
        if fmt == "torch7":
            raise ConversionError(f"{where}: --from=torch7, but the file is not a binary Torch7 file")
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
    from hourglass_tf.model import build_model  # TensorFlow loads here: a file that cannot be read is said before

    model = build_model(input_size=input_size, input_mean=input_mean, **arch)
    if found == "torch7":
        _assign_t7(model, modules, where)
        unused = 0
    else:
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


# --- Torch7: the authors' umich-stacked-hourglass.t7 (pose-hg-train / pose-hg-demo) -----------------------------


def _kind(module):
    """``cudnn.SpatialConvolution`` -> ``SpatialConvolution``; None for a node without a module."""
    if module is None:
        return None
    kind = module.typename.split(".")[-1]
    return "SpatialConvolution" if kind == "SpatialConvolutionMM" else kind


class _Graph:
    """An ``nn.gModule``'s forward graph: each node's module, its inputs (``mapindex`` order) and consumers."""

    def __init__(self, gmodule, where):
        self.where = where
        if not isinstance(gmodule, torch7.TorchObject) or gmodule.typename != "nn.gModule":
            found = gmodule.typename if isinstance(gmodule, torch7.TorchObject) else type(gmodule).__name__
            raise ConversionError(
                f"{where}: holds a {found}, expected the nn.gModule (nngraph) that pose-hg-train's hg.lua builds"
            )
        nodes = gmodule.get("forwardnodes")
        nodes = nodes.list() if isinstance(nodes, torch7.LuaTable) else []
        if not nodes or not all(isinstance(n, torch7.TorchObject) and "data" in n for n in nodes):
            raise ConversionError(f"{where}: the nn.gModule has no forward nodes")
        self.nodes = nodes
        by_data = {id(n["data"]): n for n in nodes}
        self.inputs = {}
        self.consumers = {id(n): [] for n in nodes}
        for n in nodes:
            mapindex = n["data"].get("mapindex")
            parents = [by_data.get(id(d)) for d in mapindex.list()] if isinstance(mapindex, torch7.LuaTable) else []
            if any(p is None for p in parents):
                raise ConversionError(f"{where}: a graph node refers to an input that is not in the graph")
            self.inputs[id(n)] = parents
            for p in parents:
                self.consumers[id(p)].append(n)

    def module(self, node):
        return node["data"].get("module")

    def kind(self, node):
        return _kind(self.module(node))

    def fail(self, node, expected):
        found = sorted({self.kind(c) or "graph output" for c in self.consumers[id(node)]})
        raise ConversionError(
            f"{self.where}: after a {self.kind(node)} the graph continues with {found or 'nothing'}, "
            f"expected {expected}: not pose-hg-train's stacked hourglass (hg.lua)"
        )

    def next(self, node, kind):
        """The one consumer of ``node`` whose module is ``kind``."""
        found = [c for c in self.consumers[id(node)] if self.kind(c) == kind]
        if len(found) != 1:
            self.fail(node, f"one {kind}")
        return found[0]

    def has(self, node, kind):
        return any(self.kind(c) == kind for c in self.consumers[id(node)])


def _t7_residual(module, name, layers, where):
    """pose-hg-train's Residual: Sequential{ConcatTable{convBlock, skip}, CAddTable} -> ``layers``."""
    parts = module.get("modules")
    parts = parts.list() if isinstance(parts, torch7.LuaTable) else []
    if len(parts) != 2 or _kind(parts[0]) != "ConcatTable" or _kind(parts[1]) != "CAddTable":
        raise ConversionError(f"{where}: {name}: expected Residual.lua's Sequential{{ConcatTable, CAddTable}}")
    branches = parts[0]["modules"].list()
    block = branches[0]["modules"].list() if len(branches) == 2 and _kind(branches[0]) == "Sequential" else []
    kinds = [_kind(m) for m in block]
    if kinds != ["SpatialBatchNormalization", "ReLU", "SpatialConvolution"] * 3:
        raise ConversionError(f"{where}: {name}: the residual's conv block is {kinds}, expected (BN, ReLU, conv) x 3")
    for i in range(3):
        layers[f"{name}_bn{i + 1}"] = block[3 * i]
        layers[f"{name}_conv{i + 1}"] = block[3 * i + 2]
    skip = branches[1]
    if _kind(skip) == "Sequential":
        inner = skip["modules"].list()
        if [_kind(m) for m in inner] != ["SpatialConvolution"]:
            raise ConversionError(f"{where}: {name}: the skip branch is not one 1x1 convolution")
        layers[f"{name}_skip"] = inner[0]
    elif _kind(skip) != "Identity":
        raise ConversionError(f"{where}: {name}: the skip branch is a {_kind(skip)}")


def t7_layers(gmodule, where="model"):
    """Walks the graph hg.lua builds; returns ``(build_model arguments, {Keras layer name: Torch module})``.

    Read from the structure, not assumed: stacks, residuals per box (``num_blocks``), hourglass depth, features,
    joints, and whether a residual follows each hourglass (today's ``hg.lua``) or not (``variant="umich_t7"``,
    the earlier revision of the released model). Anything else is refused with what was found.
    """
    g = _Graph(gmodule, where)
    layers = {}
    stems = [
        n
        for n in g.nodes
        if g.kind(n) == "SpatialConvolution" and g.module(n).get("nInputPlane") == 3 and g.module(n).get("kW") == 7
    ]
    if len(stems) != 1:
        raise ConversionError(f"{where}: expected one 7x7 convolution of the RGB input, found {len(stems)}")
    x = stems[0]
    layers["stem_conv"] = g.module(x)
    x = g.next(x, "SpatialBatchNormalization")
    layers["stem_bn"] = g.module(x)
    x = g.next(g.next(x, "ReLU"), "Sequential")
    _t7_residual(g.module(x), "stem_res1", layers, where)
    x = g.next(g.next(x, "SpatialMaxPooling"), "Sequential")
    _t7_residual(g.module(x), "stem_res2", layers, where)
    inter = g.next(x, "Sequential")
    _t7_residual(g.module(inter), "stem_res3", layers, where)

    def chain(x, count, name):
        for b in range(1, count + 1):
            x = g.next(x, "Sequential")
            _t7_residual(g.module(x), f"{name}_res{b}", layers, where)
        return x

    def hourglass(x, level, found):
        """Maps one level of stack ``stacks``; returns its CAddTable node and the deepest level below it."""
        up, blocks = x, 0
        while True:  # the skip branch: residuals up to the node the level's CAddTable reads
            up = g.next(up, "Sequential")
            blocks += 1
            _t7_residual(g.module(up), f"@{stacks}@{level}@skip_res{blocks}", layers, where)
            if g.has(up, "CAddTable") or blocks > 16:
                break
        if found.setdefault("num_blocks", blocks) != blocks:
            raise ConversionError(f"{where}: {blocks} residuals in one box, {found['num_blocks']} in another")
        low = chain(g.next(x, "SpatialMaxPooling"), blocks, f"@{stacks}@{level}@low1")
        if g.has(low, "SpatialMaxPooling"):
            low, levels = hourglass(low, level + 1, found)
        else:
            low, levels = chain(low, blocks, f"@{stacks}@{level}@bottom"), level
        low = chain(low, blocks, f"@{stacks}@{level}@low3")
        upsampled = g.next(low, "SpatialUpSamplingNearest")
        add = g.next(upsampled, "CAddTable")
        if sorted(id(p) for p in g.inputs[id(add)]) != sorted((id(up), id(upsampled))):
            raise ConversionError(f"{where}: an hourglass level does not add its skip branch to its upsampled path")
        return add, levels

    found, stacks, depth, variant = {}, 0, None, None
    while True:
        stacks += 1
        x, levels = hourglass(inter, 1, found)
        depth = depth or levels
        if levels != depth:
            raise ConversionError(f"{where}: hourglasses of depth {depth} and {levels}")
        posts = 0
        while g.has(x, "Sequential"):
            posts += 1
            x = g.next(x, "Sequential")
            _t7_residual(g.module(x), f"hg{stacks}_out_res{posts}", layers, where)
        this = "hg.lua" if posts else "umich_t7"
        if posts not in (0, found["num_blocks"]) or variant not in (None, this):
            raise ConversionError(f"{where}: {posts} residuals after hourglass {stacks}; expected 0 or one box")
        variant = this
        x = g.next(x, "SpatialConvolution")
        layers[f"hg{stacks}_lin_conv"] = g.module(x)
        x = g.next(x, "SpatialBatchNormalization")
        layers[f"hg{stacks}_lin_bn"] = g.module(x)
        ll = g.next(x, "ReLU")
        convs = [c for c in g.consumers[id(ll)] if g.kind(c) == "SpatialConvolution"]
        heads = [c for c in convs if not g.has(c, "CAddTable")]
        if len(heads) != 1 or len(convs) > 2 or any(g.has(c, "SpatialBatchNormalization") for c in convs):
            g.fail(ll, "the heatmap convolution (and, between stacks, the features' 1x1 convolution)")
        layers[f"stack_{stacks}"] = g.module(heads[0])
        if len(convs) == 1:
            break
        features = next(c for c in convs if c is not heads[0])
        heat_back = g.next(heads[0], "SpatialConvolution")
        merge = g.next(features, "CAddTable")
        if {id(p) for p in g.inputs[id(merge)]} != {id(inter), id(features), id(heat_back)}:
            raise ConversionError(f"{where}: stack {stacks}'s merge does not add its input, features and heatmaps")
        layers[f"hg{stacks}_features_back"] = g.module(features)
        layers[f"hg{stacks}_heatmaps_back"] = g.module(heat_back)
        inter = merge
    # hourglass levels were numbered from the top; build_model names them d{depth} (top) ... d1 (bottom)
    named = {}
    for name, module in layers.items():
        if name.startswith("@"):
            stack, level, rest = name[1:].split("@")
            name = f"hg{stack}_d{depth - int(level) + 1}_{rest}"
        named[name] = module
    arch = {
        "num_stacks": stacks,
        "num_blocks": found["num_blocks"],
        "filters": int(layers["stem_res3_conv3"]["nOutputPlane"]),
        "depth": depth,
        "num_joints": int(layers[f"stack_{stacks}"]["nOutputPlane"]),
        "variant": variant,
    }
    return arch, named


def _t7_array(module, key, size, default, where):
    """A module's tensor as float32 of ``size`` elements, or ``default`` when it is absent (no bias, no affine)."""
    value = module.get(key)
    if not isinstance(value, np.ndarray) or value.size == 0:
        if default is None:
            raise ConversionError(f"{where}: a {module.typename} has no {key}")
        return np.full((size,), default, np.float32)
    return value.astype(np.float32)


def _assign_t7(model, modules, where):
    """Copies the Torch modules' weights into ``model``; ConversionError on any mismatch."""
    import keras

    for layer in model.layers:
        if not layer.weights or layer.name == "input_mean":
            continue
        module = modules.get(layer.name)
        if module is None:
            raise ConversionError(f"{where}: no weights for the layer {layer.name!r}")
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            eps = float(module.get("eps", 1e-5))
            if "running_var" in module:
                variance = _t7_array(module, "running_var", n, None, where)
            else:  # nn before mid-2016 kept running_std = 1 / sqrt(var + eps)
                variance = 1.0 / np.square(_t7_array(module, "running_std", n, None, where)) - eps
            values = [
                _t7_array(module, "weight", n, 1.0, where),
                _t7_array(module, "bias", n, 0.0, where),
                _t7_array(module, "running_mean", n, None, where),
                variance + eps - layer.epsilon,  # the same divisor whatever epsilon the file used
            ]
        else:
            kernel, stride = layer.kernel_size[0], layer.strides[0]
            expected = {
                "kW": kernel,
                "kH": kernel,
                "dW": stride,
                "dH": stride,
                "padW": kernel // 2,
                "padH": kernel // 2,
            }
            got = {k: module.get(k, 0 if k.startswith("pad") else None) for k in expected}
            if got != expected:
                raise ConversionError(f"{where}: {layer.name}: the file's convolution has {got}, expected {expected}")
            out_channels, in_channels = layer.filters, layer.get_weights()[0].shape[2]
            weight = module.get("weight")
            if not isinstance(weight, np.ndarray) or weight.size != out_channels * in_channels * kernel * kernel:
                shape = getattr(weight, "shape", None)
                raise ConversionError(
                    f"{where}: {layer.name}: weight of shape {shape}, expected {out_channels * in_channels * kernel**2} "
                    f"values ({out_channels} x {in_channels} x {kernel} x {kernel})"
                )
            weight = weight.reshape(out_channels, in_channels, kernel, kernel).astype(np.float32)
            values = [np.transpose(weight, (2, 3, 1, 0)), _t7_array(module, "bias", out_channels, 0.0, where)]
        expected_shapes = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected_shapes:
            raise ConversionError(
                f"{where}: {layer.name}: the file's tensors have shapes {[v.shape for v in values]}, "
                f"expected {expected_shapes}"
            )
        layer.set_weights([np.asarray(v, np.float32) for v in values])
