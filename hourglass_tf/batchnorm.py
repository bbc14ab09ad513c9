"""Fused batch-norm kernels for training, without leaving the stock ``BatchNormalization`` layer.

Keras 3's ``BatchNormalization`` on the TensorFlow backend computes its moments and the normalisation as
separate element-wise ops (and, under a mixed-precision policy, casts to float32 and back around them):
thousands of small ops per training step. TensorFlow's ``FusedBatchNormV3`` does the same arithmetic in one
kernel per layer and direction. On the 2-stack LSPET model (128 features, 96 px, bfloat16, batch 16) the
training step on 2 CPU cores fell from 0.29 to 0.21 s (docs/performance.md).

``use_fused_batch_norm(model)`` swaps the *training* computation of every eligible ``BatchNormalization``
layer of ``model`` for that kernel. The layers stay stock Keras objects: same class, same config, same
variables, and the inference path (``training=False``) is Keras' own. A model saved after training is
therefore exactly what it would have been, and loads without this package.

The arithmetic is that of the stock layer: the batch mean and biased batch variance normalise the batch,
and the moving averages follow ``moving = momentum * moving + (1 - momentum) * batch`` with the biased
variance (the kernel reports the unbiased one, which is rescaled by (n - 1) / n). The one difference:
TensorFlow's fused op takes epsilon at least 1.001e-5 (cuDNN's bound), so the model's 1e-5 becomes 1.001e-5
during training; the normalised values move by about 5e-9 / variance in relative terms.

Eligible layers have ``scale`` and ``center``, no renorm and are not synchronized; a call with a 4-D input
normalised over its last axis and no mask uses the kernel, any other call the stock computation.

``use_fused_inference(model)`` does the same for *inference* copies (``model.fold_batch_norm`` and
``model.bfloat16_copy`` call it): the batch norms that could not be folded into a convolution normalise with their
moving statistics in the same kernel (``is_training=False``: one op a layer, where Keras' inference computation is
six, two of them over the whole tensor), and TensorFlow's graph optimiser fuses the ReLU that follows into it
(``_FusedBatchNormEx`` with oneDNN). Same epsilon floor as above; a training call stays Keras' own.
"""

import contextlib
import contextvars

import numpy as np
import tensorflow as tf
from keras import layers

FUSED_ATTRIBUTE = "_hourglass_fused_batch_norm"
INFERENCE_ATTRIBUTE = "_hourglass_fused_batch_norm_inference"

# False while a training computation is being recomputed (``hourglass_tf.recompute``): the fused kernel then
# normalises with the batch statistics as before but leaves the moving averages alone. Read at trace time.
_UPDATE_MOVING_AVERAGES = contextvars.ContextVar("hourglass_tf_update_moving_averages", default=True)


@contextlib.contextmanager
def moving_averages_frozen(frozen=True):
    """Within it (with ``frozen``), fused training calls traced leave the moving averages unchanged."""
    token = _UPDATE_MOVING_AVERAGES.set(not frozen)
    try:
        yield
    finally:
        _UPDATE_MOVING_AVERAGES.reset(token)


def biased_variance_factor(x):
    """(n - 1) / n for the n = N H W values of each channel of ``x`` (N, H, W, C): the kernel's unbiased batch
    variance times this is Keras' biased one. A Python number when the shape is static, so one multiply in the
    traced graph instead of a dozen shape ops a layer; computed in the graph when the batch size is not known."""
    counted = x.shape[:-1]
    if counted.is_fully_defined():
        count = float(np.prod(counted.as_list()))
        return (count - 1.0) / max(count, 1.0)
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
    return (count - 1.0) / tf.maximum(count, 1.0)


def _kernel_takes(layer, inputs, mask):
    """Whether the fused kernel can normalise ``inputs`` for ``layer``: 4-D (NHWC), over the last axis, no mask."""
    rank = inputs.shape.rank
    return mask is None and rank == 4 and layer.axis in (-1, rank - 1)


def _fused_training_call(layer, inputs, training=None, mask=None):
    """The layer's ``call`` with the fused kernel when training; the stock call otherwise."""
    if not (training and layer.trainable) or not _kernel_takes(layer, inputs, mask):
        return type(layer).call(layer, inputs, training=training, mask=mask)
    x = inputs
    if x.dtype not in (tf.float32, tf.float16, tf.bfloat16):
        x = tf.cast(x, tf.float32)
    y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        x,
        tf.cast(layer.gamma, tf.float32),
        tf.cast(layer.beta, tf.float32),
        epsilon=layer.epsilon,
        data_format="NHWC",
        is_training=True,
    )
    if not _UPDATE_MOVING_AVERAGES.get():
        return tf.cast(y, layer.compute_dtype)
    variance = variance * biased_variance_factor(x)  # the kernel's unbiased variance -> Keras' biased one
    momentum = layer.momentum
    layer.moving_mean.assign(layer.moving_mean * momentum + tf.cast(mean, layer.moving_mean.dtype) * (1.0 - momentum))
    layer.moving_variance.assign(
        layer.moving_variance * momentum + tf.cast(variance, layer.moving_variance.dtype) * (1.0 - momentum)
    )
    return tf.cast(y, layer.compute_dtype)


def _fused_inference_call(layer, inputs, training=None, mask=None):
    """The layer's ``call`` with the fused kernel at inference (its moving statistics); the stock call when
    training (a trainable layer with ``training=True``) or for an input the kernel does not take."""
    floating = inputs.dtype in (tf.float32, tf.float16, tf.bfloat16)
    if (training and layer.trainable) or not floating or not _kernel_takes(layer, inputs, mask):
        return type(layer).call(layer, inputs, training=training, mask=mask)
    y, _, _ = tf.compat.v1.nn.fused_batch_norm(
        inputs,
        tf.cast(layer.gamma, tf.float32),
        tf.cast(layer.beta, tf.float32),
        mean=tf.cast(layer.moving_mean, tf.float32),
        variance=tf.cast(layer.moving_variance, tf.float32),
        epsilon=layer.epsilon,
        data_format="NHWC",
        is_training=False,
    )
    return tf.cast(y, layer.compute_dtype)


def eligible(layer):
    """Whether ``layer`` is a ``BatchNormalization`` the fused kernel can train (see the module docstring)."""
    if not isinstance(layer, layers.BatchNormalization):
        return False
    return bool(
        layer.scale
        and layer.center
        and not getattr(layer, "renorm", False)
        and not getattr(layer, "synchronized", False)
    )


def is_fused(layer):
    """Whether ``use_fused_batch_norm`` switched ``layer``'s training computation."""
    return is_switched(layer, FUSED_ATTRIBUTE)


def layers_of(model):
    """Every layer of ``model``, nested models' layers in place of the nested model."""
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested model
            yield from layers_of(layer)
        else:
            yield layer


def is_switched(layer, attribute):
    """Whether ``switch_calls`` switched ``layer``'s ``call`` under ``attribute``."""
    return bool(layer.__dict__.get(attribute, False))


def switch_calls(model, switchable, call, attribute, caller):
    """Binds ``call(layer, ...)`` as the ``call`` of every layer of ``model`` (nested models searched) for which
    ``switchable(layer)``, and marks the layer with ``attribute``: the method swap that keeps each layer a stock
    Keras object (same class, config and variables). A layer already marked counts again, not switched twice.

    Args:
      model: a built Keras model; anything else is refused with a ``ValueError`` naming ``caller``.

    Returns:
      int, the number of switchable layers.
    """
    if not hasattr(model, "layers"):
        raise ValueError(f"{caller} needs a Keras model, received {type(model).__name__}")
    switched = 0
    for layer in layers_of(model):
        if not switchable(layer):
            continue
        if not is_switched(layer, attribute):
            object.__setattr__(layer, "call", call.__get__(layer))
            object.__setattr__(layer, attribute, True)
        switched += 1
    return switched


def use_fused_batch_norm(model):
    """Trains every eligible ``BatchNormalization`` layer of ``model`` with TensorFlow's fused kernel.

    Call it before the first training step (before ``fit`` traces the step). The layers keep their class,
    config and variables, so saving is unchanged.

    Args:
      model: a built Keras model (nested models are searched too).

    Returns:
      int, the number of layers switched (layers already switched count again; none is switched twice).
    """
    return switch_calls(model, eligible, _fused_training_call, FUSED_ATTRIBUTE, "use_fused_batch_norm")


def _inference_eligible(layer):
    """A ``BatchNormalization`` with ``scale`` and ``center`` (at inference, synchronization does not matter)."""
    if not isinstance(layer, layers.BatchNormalization) or not (layer.scale and layer.center):
        return False
    if is_fused(layer):
        raise ValueError(
            f"use_fused_inference is for inference copies: layer {layer.name!r} trains with the fused kernel "
            "(use_fused_batch_norm); copy the model for inference first (model.fold_batch_norm)"
        )
    return True


def use_fused_inference(model):
    """Runs the inference calls (``training=False``) of every ``BatchNormalization`` layer of ``model`` with
    scale and center on TensorFlow's fused kernel (see the module docstring). For inference copies of a model
    (``model.fold_batch_norm`` and ``model.bfloat16_copy`` call it); the layers keep their class, config and
    variables, so such a copy still saves as stock Keras.

    Args:
      model: a built Keras model (nested models are searched too) whose layers were not switched by
        ``use_fused_batch_norm`` (a ``ValueError`` names such a layer).

    Returns:
      int, the number of layers switched (layers already switched count again; none is switched twice).
    """
    return switch_calls(model, _inference_eligible, _fused_inference_call, INFERENCE_ATTRIBUTE, "use_fused_inference")


def synchronize(model):
    """Makes every ``BatchNormalization`` layer of ``model`` compute its training statistics over the global batch
    of all replicas (Keras' ``synchronized=True``: the moments are all-reduced across replicas each step).

    Under one device nothing changes; under a distribution strategy each replica otherwise normalises with its own
    slice of the batch. The layers stay stock (their config says ``synchronized: true``, which plain Keras loads);
    synchronized layers train on Keras' own computation, not the fused kernel. Call it before the first training
    step. Returns the number of layers.
    """
    if not hasattr(model, "layers"):
        raise ValueError(f"synchronize needs a Keras model, received {type(model).__name__}")
    count = 0
    for layer in layers_of(model):
        if isinstance(layer, layers.BatchNormalization):
            layer.synchronized = True
            count += 1
    return count
