"""Per-stack recomputation for training: activation memory of about one stack instead of all of them.

The backward pass of a training step needs every layer's output of the forward pass. For the paper's 8-stack
model at batch 8 that is most of the step's 5.7 GB (docs/performance.md, Memory). ``recompute_stacks(model)``
keeps only each segment's input and outputs — the stem, then each stack from its input features to its
heatmaps and the next stack's input — and computes a segment's inner activations again, from its kept
input, when the backward pass reaches it (``tf.recompute_grad``). A step then holds the activations of one
segment at a time, for nearly one more forward pass of work (a step is about three forward passes); the last
stack, whose backward pass follows its forward pass at once, keeps its activations.

As ``hourglass_tf.batchnorm`` does, it changes only the *training* computation of the model object: the model
keeps its layers, config and variables, inference (``training=False``) is Keras' own functional call, and a
model saved after training is exactly what it would have been. The recomputation runs in training mode with
the batch statistics of the same batch, so it reproduces the forward pass; it does not move the batch-norm
moving averages a second time (the fused kernel skips its update while a segment is recomputed). Every
``BatchNormalization`` layer must therefore train on the fused kernel (``batchnorm.use_fused_batch_norm``,
``train.py``'s default); a synchronized or otherwise stock layer would update twice and is refused.
"""

import keras
import tensorflow as tf
from keras import layers

from . import batchnorm
from .model import output_names, stack_input

RECOMPUTE_ATTRIBUTE = "_hourglass_recompute_stacks"


class _Segments:
    """The model cut at each stack's input: ``stem`` (image -> stack 1's input) and one model per stack (its input
    -> ``[next stack's input, heatmaps]``; the last stack: ``[heatmaps]``), sharing the model's layers.

    The next stack's input comes first on purpose: ``tf.recompute_grad`` starts a recomputation once the
    gradient of the function's *first* output exists. A stack's heatmap gradient exists as soon as the loss is
    differentiated, so with the heatmaps first every stack would be recomputed at once, all activations alive
    together (measured: 7.67 against 7.71 GB, nothing saved); the next stack's input gradient exists only when
    the backward pass has gone through that stack, so the stacks are recomputed one after another."""

    def __init__(self, model):
        names = output_names(model)
        self.output_names = names
        self.stem = keras.Model(model.inputs[0], [stack_input(model, 1)], name=f"{model.name}_stem")
        self.stacks = []
        for s in range(1, len(names) + 1):
            outputs = [model.get_layer(f"stack_{s}").output]
            if s < len(names):
                outputs.insert(0, stack_input(model, s + 1))
            self.stacks.append(keras.Model(stack_input(model, s), outputs, name=f"{model.name}_stack{s}"))


def _as_tuple(outputs):
    return tuple(outputs) if isinstance(outputs, (list, tuple)) else (outputs,)


def _recomputed(segment):
    """``segment`` in training mode as a ``tf.recompute_grad`` function returning a tuple of tensors.

    ``tf.recompute_grad`` calls the function once in the forward pass and once more when the gradient is
    built; the second call recomputes with the batch-norm moving averages left alone."""
    calls = []

    def run(x):
        with batchnorm.moving_averages_frozen(frozen=bool(calls)):
            calls.append(None)
            outputs = segment(x, training=True)
        return _as_tuple(outputs)

    return tf.recompute_grad(run)


def _recomputing_call(model, inputs, training=None, mask=None):
    """The model's ``call``: per-stack recomputation when training, Keras' functional call otherwise."""
    if not training:
        return type(model).call(model, inputs, training=training, mask=mask)
    segments = model.__dict__[RECOMPUTE_ATTRIBUTE]
    (features,) = _recomputed(segments.stem)(inputs)
    outputs = {}
    for name, stack in zip(segments.output_names[:-1], segments.stacks[:-1]):
        features, outputs[name] = _recomputed(stack)(features)
    # The last stack's backward pass starts as soon as its forward pass ends: its activations are kept, not
    # recomputed (the same peak, one stack less of work).
    outputs[segments.output_names[-1]] = _as_tuple(segments.stacks[-1](features, training=True))[0]
    return outputs


def is_recomputing(model):
    """Whether ``recompute_stacks`` switched ``model``'s training computation."""
    return RECOMPUTE_ATTRIBUTE in model.__dict__


def recompute_stacks(model):
    """Trains ``model`` with its stem and every stack but the last recomputed in the backward pass (see the module
    docstring).

    Call it after ``batchnorm.use_fused_batch_norm`` and before the first training step (before ``fit`` or
    ``compile_for_training`` traces the step). Calling it again changes nothing.

    Args:
      model: a stacked hourglass from ``build_model`` (or loaded from its file).

    Returns:
      int, the number of recomputed segments (the stem and every stack but the last: the stack count).

    Raises:
      ValueError: the model is not a stacked hourglass of this package's layout, or one of its
        ``BatchNormalization`` layers does not train on the fused kernel (its name is given).
    """
    if not hasattr(model, "layers"):
        raise ValueError(f"recompute_stacks needs a Keras model, received {type(model).__name__}")
    stock = [
        layer.name
        for layer in batchnorm.layers_of(model)
        if isinstance(layer, layers.BatchNormalization) and not batchnorm.is_fused(layer)
    ]
    if stock:
        raise ValueError(
            f"recompute_stacks needs every BatchNormalization layer on the fused kernel (a stock layer would move "
            f"its moving averages twice a step); not fused: {', '.join(stock[:3])}"
            + (f" and {len(stock) - 3} more" if len(stock) > 3 else "")
            + " (call batchnorm.use_fused_batch_norm first; synchronized batch norm cannot be recomputed)"
        )
    if not is_recomputing(model):
        segments = _Segments(model)
        object.__setattr__(model, RECOMPUTE_ATTRIBUTE, segments)
        object.__setattr__(model, "call", _recomputing_call.__get__(model))
    return len(model.__dict__[RECOMPUTE_ATTRIBUTE].stacks)
