"""Adam's update in one kernel per variable, without leaving Keras' optimizer class.

Keras 3's ``Adam`` writes each variable's update as a chain of small ops (casts, the step's powers, reads,
subtractions, multiplies, square roots and three assignments): about 40 graph nodes per variable, each traced
in Python, optimised by Grappler and scheduled by the executor at every step. ``fuse_updates(optimizer)``
swaps the optimizer object's ``update_step`` for TensorFlow's ``ResourceApplyAdam`` (the kernel Keras 2's Adam
used; CPU and GPU), whose arithmetic is Keras' own: ``m += (g - m)(1 - beta_1)``, ``v += (g^2 - v)(1 - beta_2)``,
``var -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)``, ``t`` the step count + 1. The one
difference: the kernel computes ``1 - beta`` in float32 (0.100000024 for 0.9), Keras in float64 (0.1).

``amsgrad`` and sparse gradients keep Keras' update. The optimizer keeps its class, config and variables, so a
saved model and a resume backup are what Keras writes, and load without this package. Measured
(docs/performance.md): the LSPET model's (``lspet.flags``) first step 10.1 -> 5.9 s and its process 1.21 ->
1.10 GB, the step time unchanged. Not done for ``RMSprop``: Keras' update is already a few ops there
(measured: 1.3 s less tracing on the 8-stack model, and a bfloat16 memory peak 0.9 GB higher in half the runs).
"""

import keras
import tensorflow as tf

FUSED_ATTRIBUTE = "_hourglass_fused_updates"


def _tf_variable(variable):
    """The TensorFlow variable behind a Keras one (a distributed variable under a strategy)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def _adam_update_step(self, gradient, variable, learning_rate):
    if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
        return type(self).update_step(self, gradient, variable, learning_rate)
    index = self._get_variable_index(variable)
    target = _tf_variable(variable)
    dtype = target.dtype
    step = tf.cast(self.iterations + 1, dtype)
    beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
    tf.raw_ops.ResourceApplyAdam(
        var=target.handle,
        m=_tf_variable(self._momentums[index]).handle,
        v=_tf_variable(self._velocities[index]).handle,
        beta1_power=tf.pow(beta_1, step),
        beta2_power=tf.pow(beta_2, step),
        lr=tf.cast(learning_rate, dtype),
        beta1=beta_1,
        beta2=beta_2,
        epsilon=tf.cast(self.epsilon, dtype),
        grad=tf.cast(gradient, dtype),
    )


def _unwrapped(optimizer):
    """``optimizer``, or the optimizer a loss-scale optimizer wraps."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def _adam_of(optimizer):
    """The Keras ``Adam`` ``optimizer`` is or wraps (a loss-scale optimizer's), or None."""
    inner = _unwrapped(optimizer)
    return inner if isinstance(inner, keras.optimizers.Adam) else None


def fusable(optimizer):
    """Whether ``fuse_updates`` takes ``optimizer`` (a Keras ``Adam``, or a loss-scale optimizer around one)."""
    return _adam_of(optimizer) is not None


def fuse_updates(optimizer):
    """Makes ``optimizer`` (a Keras ``Adam``) update each variable with TensorFlow's one-kernel Adam update.

    Call it before the first training step (before ``fit`` traces the step); calling it twice changes nothing.
    A loss-scale optimizer (float16) is switched through the optimizer it wraps.

    Returns:
      ``optimizer``.

    Raises:
      ValueError: ``optimizer`` is not a Keras ``Adam`` (subclasses included) or a loss-scale optimizer around one.
    """
    adam = _adam_of(optimizer)
    if adam is None:
        raise ValueError(f"fuse_updates takes a Keras Adam optimizer, received {type(optimizer).__name__}")
    if not adam.__dict__.get(FUSED_ATTRIBUTE, False):
        object.__setattr__(adam, "update_step", _adam_update_step.__get__(adam))
        object.__setattr__(adam, FUSED_ATTRIBUTE, True)
    return optimizer


def has_fused_updates(optimizer):
    """Whether ``fuse_updates`` switched ``optimizer`` (or the optimizer it wraps)."""
    return bool(_unwrapped(optimizer).__dict__.get(FUSED_ATTRIBUTE, False))
