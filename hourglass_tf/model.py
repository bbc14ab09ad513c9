"""The stacked hourglass network (Newell, Yang, Deng, ECCV 2016) in Keras 3.

The network is composed by plain functions from stock Keras layers only
(``Input``, ``ZeroPadding2D``, ``Conv2D``, ``BatchNormalization``, ``ReLU``,
``MaxPooling2D``, ``UpSampling2D``, ``Add``), so a model saved with
``model.save("x.keras")`` loads with ``tf.keras.models.load_model("x.keras")``
in a program that never imports ``hourglass_tf``.

Layout follows the original Torch code (``hg.lua`` / ``Residual.lua``) so that
parameter counts match it exactly:

* stem: 7x7 conv stride 2 (64) with 3 px zero padding on every side (as Torch's
  ``SpatialConvolution(3,64,7,7,2,2,3,3)``; TF's ``"same"`` padding would pad
  2/3 and shift the grid by one input pixel) -> BN -> ReLU -> residual(128) ->
  max-pool -> residual(128) -> residual(filters);
* residual module: BN-ReLU-1x1 conv (C/2), BN-ReLU-3x3 conv (C/2),
  BN-ReLU-1x1 conv (C), plus identity, or a 1x1 conv when channels differ;
* hourglass of ``depth`` levels: skip branch of ``num_blocks`` residuals at the
  pre-pooled resolution, max-pool, ``num_blocks`` residuals, recursion (or
  ``num_blocks`` residuals at the bottom), ``num_blocks`` residuals,
  nearest-neighbour x2 upsampling, element-wise add;
* after each hourglass: ``num_blocks`` residuals (none in ``variant="umich_t7"``), 1x1 conv-BN-ReLU, 1x1 conv to
  ``num_joints`` heatmaps (the output ``stack_i``); between stacks 1x1 convs map
  the features and the heatmaps back to ``filters`` channels and both are added
  to the stack's input.

Images enter as float32 RGB in [0, 1], shape (N, H, W, 3); heatmaps leave at a
quarter of the input resolution, shape (N, H/4, W/4, num_joints), float32 even
under a mixed-precision policy.
"""

import keras
from keras import layers

STEM_FILTERS = 64
HEAD_STDDEV = 0.001  # the heads' initial weights: N(0, 0.001), as mmpose/HRNet heads


def _head_initializer():
    """A new initializer per head, made when the model is built: one shared instance made at import would draw
    its seed before ``keras.utils.set_random_seed`` (so a seeded run would not repeat) and give every stack's
    head the same weights."""
    return keras.initializers.RandomNormal(stddev=HEAD_STDDEV)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, received {name}={value!r}")


def conv_bn_relu(x, filters, kernel_size, name):
    """Conv2D (same padding, bias) -> BatchNormalization -> ReLU."""
    x = layers.Conv2D(filters, kernel_size, padding="same", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def residual(x, filters, name):
    """Pre-activation bottleneck residual module of the paper (Fig. 4 left).

    Args:
      x: tensor (N, H, W, C_in).
      filters: output channels C_out (even); the bottleneck uses C_out / 2.
      name: prefix for every layer name.

    Returns:
      tensor (N, H, W, C_out).
    """
    in_channels = x.shape[-1]
    half = filters // 2
    y = x
    for i, (width, kernel) in enumerate(((half, 1), (half, 3), (filters, 1)), start=1):
        y = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn{i}")(y)
        y = layers.ReLU(name=f"{name}_relu{i}")(y)
        y = layers.Conv2D(width, kernel, padding="same", name=f"{name}_conv{i}")(y)
    skip = x
    if in_channels != filters:
        skip = layers.Conv2D(filters, 1, name=f"{name}_skip")(x)
    return layers.Add(name=f"{name}_add")([skip, y])


def residual_sequence(x, filters, num_blocks, name):
    """``num_blocks`` residual modules in a row (one 'box' of the paper's figures)."""
    for b in range(1, num_blocks + 1):
        x = residual(x, filters, f"{name}_res{b}")
    return x


def hourglass(x, depth, filters, num_blocks, name):
    """One hourglass of ``depth`` pooling levels (recursive, as in ``hg.lua``).

    Args:
      x: tensor (N, H, W, filters) with H and W divisible by 2**depth.
      depth: number of max-pool steps (4 in the paper: 64 -> 32 -> 16 -> 8 -> 4).

    Returns:
      tensor of the same shape as ``x``.
    """
    level = f"{name}_d{depth}"
    up1 = residual_sequence(x, filters, num_blocks, f"{level}_skip")
    low = layers.MaxPooling2D(2, 2, name=f"{level}_pool")(x)
    low = residual_sequence(low, filters, num_blocks, f"{level}_low1")
    if depth > 1:
        low = hourglass(low, depth - 1, filters, num_blocks, name)
    else:
        low = residual_sequence(low, filters, num_blocks, f"{level}_bottom")
    low = residual_sequence(low, filters, num_blocks, f"{level}_low3")
    up2 = layers.UpSampling2D(2, interpolation="nearest", name=f"{level}_up")(low)
    return layers.Add(name=f"{level}_add")([up1, up2])


VARIANTS = ("hg.lua", "pytorch_pose", "umich_t7")
PYTORCH_POSE_STEM = 256  # pytorch-pose: layer2 = bottleneck(planes = its 128 input channels) -> 2 x 128


def stem(image, filters, variant="hg.lua"):
    """7x7/2 conv (64) -> BN -> ReLU -> res(128) -> pool -> res(128) -> res(filters).

    (N, H, W, 3) -> (N, H/4, W/4, filters). ``variant="pytorch_pose"`` is bearpaw/pytorch-pose's stem:
    its second residual takes its bottleneck width from the 128 channels it receives, so it widens to
    256 (a bottleneck of 128 with a projection); the third goes to ``filters`` (256 in every published
    model, where it keeps the width).
    """
    x = layers.ZeroPadding2D(3, name="stem_pad")(image)
    x = layers.Conv2D(STEM_FILTERS, 7, strides=2, padding="valid", name="stem_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = residual(x, 128, "stem_res1")
    x = layers.MaxPooling2D(2, 2, name="stem_pool")(x)
    x = residual(x, PYTORCH_POSE_STEM if variant == "pytorch_pose" else 128, "stem_res2")
    return residual(x, filters, "stem_res3")


def _input_hw(input_size):
    if isinstance(input_size, (tuple, list)):
        if len(input_size) != 2:
            raise ValueError(
                f"`input_size` must be an int or a (height, width) pair, received input_size={input_size!r}"
            )
        height, width = input_size
    else:
        height = width = input_size
    for value in (height, width):
        _check_positive_int("input_size", value)
    return height, width


def build_model(
    num_stacks=8,
    num_blocks=1,
    filters=256,
    depth=4,
    num_joints=16,
    input_size=256,
    name="stacked_hourglass",
    variant="hg.lua",
    input_mean=None,
):
    """Builds the stacked hourglass network as a functional ``keras.Model``.

    Args:
      num_stacks: hourglasses stacked end to end (8 in the paper's final model).
      num_blocks: residual modules per box (1 in the paper's final model; the
        ablation uses 2 stacks x 4, 4 x 2, 8 x 1 at about the same size).
      filters: features throughout the hourglasses (256 in the paper); even.
      depth: pooling levels per hourglass (4 in the paper).
      num_joints: heatmaps per stack (16 for MPII).
      input_size: int or (height, width); each must be divisible by
        4 * 2**depth (256 in the paper).
      name: model name.
      variant: ``"hg.lua"`` (the original Torch code, the paper's network), ``"pytorch_pose"``
        (bearpaw/pytorch-pose's stem, 160,512 more parameters at 256 features; see ``stem``) or
        ``"umich_t7"`` (the authors' released ``umich-stacked-hourglass.t7``: an earlier ``hg.lua``
        revision with no residual modules between each hourglass and its 1x1 linear layer, 1,716,224
        fewer parameters at 8 x 256), so that published weights of every layout load without loss.
      input_mean: per-channel (R, G, B) values subtracted from the [0, 1] input inside the model, by a
        stock ``Normalization`` layer (pytorch-pose's models expect the MPII mean subtracted); None: none.

    Returns:
      ``keras.Model`` with input ``image`` (N, H, W, 3) float32 RGB in [0, 1]
      and a dict of outputs ``stack_1`` ... ``stack_{num_stacks}``, each
      (N, H/4, W/4, num_joints) float32 heatmaps.

    Raises:
      ValueError: a non-positive count, odd ``filters``, or an input size not
        divisible by 4 * 2**depth; the message names the argument and value.
    """
    for arg, value in (
        ("num_stacks", num_stacks),
        ("num_blocks", num_blocks),
        ("filters", filters),
        ("depth", depth),
        ("num_joints", num_joints),
    ):
        _check_positive_int(arg, value)
    if filters % 2:
        raise ValueError(f"`filters` must be even (the bottleneck uses filters / 2), received filters={filters}")
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}, received variant={variant!r}")
    height, width = _input_hw(input_size)
    multiple = 4 * 2**depth
    if height % multiple or width % multiple:
        raise ValueError(
            f"`input_size` must be divisible by 4 * 2**depth = {multiple} for depth={depth}, "
            f"received input_size={input_size!r}"
        )

    image = keras.Input(shape=(height, width, 3), name="image", dtype="float32")
    x = image
    if input_mean is not None:
        x = layers.Normalization(axis=-1, mean=list(input_mean), variance=[1.0] * 3, name="input_mean")(x)
    inter = stem(x, filters, variant)
    outputs = {}
    for s in range(1, num_stacks + 1):
        prefix = f"hg{s}"
        x = hourglass(inter, depth, filters, num_blocks, prefix)
        if variant != "umich_t7":
            x = residual_sequence(x, filters, num_blocks, f"{prefix}_out")
        x = conv_bn_relu(x, filters, 1, f"{prefix}_lin")
        # Heatmaps stay float32 under a mixed-precision policy. The head starts near zero output
        # (N(0, 0.001) weights, as mmpose/HRNet heads do), so training does not first spend
        # hundreds of steps shrinking random heatmaps towards the mostly-zero targets.
        heatmaps = layers.Conv2D(
            num_joints, 1, name=f"stack_{s}", dtype="float32", kernel_initializer=_head_initializer()
        )(x)
        outputs[f"stack_{s}"] = heatmaps
        if s < num_stacks:
            features_back = layers.Conv2D(filters, 1, name=f"{prefix}_features_back")(x)
            heatmaps_back = layers.Conv2D(filters, 1, name=f"{prefix}_heatmaps_back")(heatmaps)
            inter = layers.Add(name=f"{prefix}_merge")([inter, features_back, heatmaps_back])
    return keras.Model(image, outputs, name=name)


def output_names(model):
    """Names ``stack_1`` ... ``stack_k`` of a model's outputs, in stack order."""
    names = [n for n in model.output_names if n.startswith("stack_")]
    return sorted(names, key=lambda n: int(n.split("_")[1]))


def truncate(model, num_stacks):
    """Early exit: the first ``num_stacks`` stacks of ``model``, sharing its weights.

    The returned model computes only what the first ``num_stacks`` outputs need
    (the later hourglasses and the last kept stack's merge convolutions are not
    part of its graph) and outputs ``stack_1`` ... ``stack_{num_stacks}``.

    Args:
      model: a model from ``build_model`` (or one loaded from a ``.keras`` file).
      num_stacks: 1 <= num_stacks <= the model's stack count.

    Raises:
      ValueError: ``num_stacks`` out of range.
    """
    available = output_names(model)
    _check_positive_int("num_stacks", num_stacks)
    if num_stacks > len(available):
        raise ValueError(
            f"`num_stacks` must be at most the model's {len(available)} stacks, received num_stacks={num_stacks}"
        )
    outputs = {f"stack_{s}": model.get_layer(f"stack_{s}").output for s in range(1, num_stacks + 1)}
    return keras.Model(model.inputs[0], outputs, name=f"{model.name}_first{num_stacks}")


def stack_input(model, stack):
    """The features stack ``stack`` (1-based) starts from, (N, H/4, W/4, filters): the stem's output for the first
    stack, the previous stack's merge (its input plus the mapped-back features and heatmaps) for the others.

    Raises:
      ValueError: ``model`` has no such layer (not a stacked hourglass of ``build_model``'s layout, or too few stacks).
    """
    name = "stem_res3_add" if stack == 1 else f"hg{stack - 1}_merge"
    try:
        return model.get_layer(name).output
    except ValueError:
        raise ValueError(
            f"model {model.name!r} has no layer {name!r} (the input of stack {stack}): not a stacked hourglass "
            "of hourglass_tf.model.build_model's layout"
        ) from None


def conv_flops(model):
    """Forward FLOPs of one image through every ``Conv2D`` of ``model``, from the layer shapes.

    A multiply-add counts as 2 FLOPs: ``2 * H_out * W_out * k_h * k_w * C_in * C_out / groups``
    per convolution (biases, batch norm, ReLU, pooling and additions are left out; they are
    memory-bound, not arithmetic). The paper-size 8-stack model gives about 54.9 GFLOP
    (27.4 G multiply-adds). A training step costs about 3x the forward FLOPs (the backward
    pass computes input and weight gradients, each as large as the forward).

    Args:
      model: a Keras model with fixed spatial input size (as ``build_model`` makes).

    Returns:
      int: FLOPs per image.
    """
    total = 0
    for layer in model.layers:
        if not isinstance(layer, layers.Conv2D) or isinstance(layer, layers.Conv2DTranspose):
            continue
        _, height, width, out_channels = layer.output.shape
        in_channels = layer.input.shape[-1]
        if height is None or width is None:
            raise ValueError(f"layer {layer.name!r} has no fixed output size (shape {layer.output.shape})")
        kernel_h, kernel_w = layer.kernel_size
        total += 2 * height * width * kernel_h * kernel_w * in_channels * out_channels // layer.groups
    return int(total)


def architecture_of(model):
    """The ``build_model`` arguments of a model it built (or one loaded from its file), read from its layers.

    Returns:
      dict ``variant``, ``num_stacks``, ``num_blocks``, ``filters``, ``depth``, ``num_joints``, ``input_size``
      ((height, width)); ValueError when the model is not a stacked hourglass of this package's layout.
    """
    names = {layer.name for layer in model.layers}
    stacks = output_names(model)
    if not stacks or "stem_conv" not in names:
        raise ValueError(f"model {model.name!r} is not a stacked hourglass (no stem_conv / stack_i layers)")
    depth = sum(1 for n in names if n.startswith("hg1_d") and n.endswith("_pool"))
    num_blocks = sum(1 for n in names if n.startswith(f"hg1_d{depth}_skip_res") and n.endswith("_add"))
    filters = int(stack_input(model, 1).shape[-1])
    widened = int(model.get_layer("stem_res2_add").output.shape[-1]) == PYTORCH_POSE_STEM
    variant = "pytorch_pose" if widened else "hg.lua" if "hg1_out_res1_add" in names else "umich_t7"
    return {
        "variant": variant,
        "num_stacks": len(stacks),
        "num_blocks": num_blocks,
        "filters": filters,
        "depth": depth,
        "num_joints": int(model.get_layer(stacks[-1]).output.shape[-1]),
        "input_size": [int(model.inputs[0].shape[1]), int(model.inputs[0].shape[2])],
    }


def float32_copy(model):
    """``model`` with every layer computing in float32, sharing no state with it (weights copied).

    A model trained under a mixed-precision policy (``mixed_bfloat16`` / ``mixed_float16``) keeps
    its variables in float32, so the copy holds exactly the trained weights; only the compute dtype
    changes. Exports and checkpoints use it, so a saved model computes in float32 wherever it is
    loaded. A model that already computes in float32 everywhere is returned as it is.
    """
    if all(getattr(layer, "compute_dtype", "float32") == "float32" for layer in model.layers):
        return model

    def as_float32(value):
        if isinstance(value, dict):
            if "Policy" in str(value.get("class_name", "")):  # a serialized DTypePolicy: compute and variables
                return "float32"
            return {k: as_float32(v) for k, v in value.items()}
        if isinstance(value, list):
            return [as_float32(v) for v in value]
        return "float32" if isinstance(value, str) and value.startswith("mixed_") else value

    config = as_float32(model.get_config())
    copy = keras.Model.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def foldable_batch_norms(model):
    """{batch-norm layer name: Conv2D layer name} for each ``BatchNormalization`` of ``model`` that directly follows
    a ``Conv2D`` whose output feeds nothing else: in the pre-activation residual, the second and third batch norm
    of each module, and the stem's and the heads' (conv -> BN -> ReLU). A module's first batch norm normalises a
    tensor the skip connection also takes, so it stays (at inference it is a per-channel scale and shift)."""
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        producer = layer.input._keras_history.operation
        if isinstance(producer, layers.Conv2D) and len(producer._outbound_nodes) == 1 and layer.axis in (-1, 3):
            pairs[layer.name] = producer.name
    return pairs


def fold_batch_norm(model):
    """An inference copy of ``model`` with each foldable batch norm (``foldable_batch_norms``) folded into the
    convolution before it: the kernel scaled per output channel by gamma / sqrt(variance + epsilon), the bias
    shifted to (bias - mean) * that scale + beta, and the batch norm replaced by a stock ``Identity`` layer of
    the same name (so every layer name, and the file's loading with plain Keras, stay). The other layers keep
    their weights; the batch norms left (each module's first) run TensorFlow's fused inference kernel, with the
    ReLU after them fused in by the graph optimiser (``batchnorm.use_fused_inference``: one op where Keras'
    computation is six; the layers stay stock). Same outputs as ``model`` at inference (training=False) up to
    float rounding; for predicting and exporting, not for training (the folded layers no longer learn statistics).

    ``model`` computes in float32 (``float32_copy`` first for a mixed-precision model).
    """
    import numpy as np

    from hourglass_tf import batchnorm

    pairs = foldable_batch_norms(model)
    convs = {conv: bn for bn, conv in pairs.items()}

    def clone(layer):
        config = layer.get_config()
        if layer.name in pairs:
            return layers.Identity(name=layer.name)
        if layer.name in convs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    def call(layer, *args, **kwargs):
        if isinstance(layer, layers.Identity):
            kwargs.pop("mask", None)  # a batch norm's call takes a mask; Identity's does not
        return layer(*args, **kwargs)

    folded = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for layer in folded.layers:
        source = model.get_layer(layer.name)
        if layer.name in pairs or not source.weights:
            continue
        if layer.name not in convs:
            layer.set_weights(source.get_weights())
            continue
        bn = model.get_layer(convs[layer.name])
        gamma, beta, mean, variance = (np.asarray(w, np.float64) for w in bn.get_weights())
        scale = gamma / np.sqrt(variance + bn.epsilon)
        kernel = np.asarray(source.kernel, np.float64)
        bias = np.asarray(source.bias, np.float64) if source.use_bias else np.zeros(kernel.shape[-1])
        layer.set_weights([(kernel * scale).astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)])
    batchnorm.use_fused_inference(folded)
    return folded


def bfloat16_copy(model):
    """``model`` computing in bfloat16 except the layers that produce its outputs, which stay float32, so the
    heatmaps come out float32. The convolutions hold their kernels and biases in bfloat16 (Keras' ``bfloat16``
    policy: the values a ``mixed_bfloat16`` layer would cast them to at every call, cast once here), the other
    layers compute under ``mixed_bfloat16`` (float32 variables; a batch norm normalises in float32, on the fused
    inference kernel: ``batchnorm.use_fused_inference``). Same weights, no state shared. For inference on CPUs
    with bfloat16 arithmetic (``distribute.cpu_has_bfloat16``); fold batch norm first (``fold_batch_norm``).
    """
    from hourglass_tf import batchnorm

    outputs = {tensor._keras_history.operation.name for tensor in keras.tree.flatten(model.outputs)}

    def policy(name):
        return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name}, "registered_name": None}

    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] != "InputLayer" and layer["config"].get("name") not in outputs:
            layer["config"]["dtype"] = policy("bfloat16" if layer["class_name"] == "Conv2D" else "mixed_bfloat16")
    copy = keras.Model.from_config(config)
    copy.set_weights(model.get_weights())
    batchnorm.use_fused_inference(copy)
    return copy
