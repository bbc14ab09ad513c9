"""Adam's and RMSprop's updates in one kernel per variable, without leaving Keras' optimizer classes.

Keras 3's ``Adam`` and ``RMSprop`` write each variable's update as a chain of small ops (casts, reads, constants,
multiplies, square roots, assignments): about 40 graph nodes per variable for Adam and 25 for RMSprop, each traced
in Python, optimised by Grappler and scheduled by the executor at every step. ``fuse_updates(optimizer)`` swaps
the optimizer object's ``update_step`` for TensorFlow's kernel of the same rule (the kernels Keras 2's optimizers
used; CPU and GPU), whose arithmetic is Keras' own:

* ``ResourceApplyAdam``: ``m += (g - m)(1 - beta_1)``, ``v += (g^2 - v)(1 - beta_2)``,
  ``var -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)``, ``t`` the step count + 1.
* ``ResourceApplyRMSProp`` (``ResourceApplyCenteredRMSProp`` when ``centered``): ``ms += (g^2 - ms)(1 - rho)``
  (``mg += (g - mg)(1 - rho)``), ``mom = momentum mom + lr g / sqrt(ms [- mg^2] + epsilon)``, ``var -= mom``.
  Keras keeps no ``mom`` when ``momentum`` is 0; the kernel then writes its increment into a scratch variable
  per weight, created with the optimizer's slots and never saved (its content does not outlive a step): one
  more copy of the weights in memory (100 MB for the paper's 8-stack model).

The kernels compute ``1 - beta`` (``1 - rho``) in float32 (0.100000024 for 0.9), Keras in float64 (0.1).
``amsgrad`` and sparse gradients keep Keras' update. The optimizer keeps its class, config and variables, so a
saved model and a resume backup are what Keras writes, and load without this package. Measured
(docs/performance.md): Adam, the LSPET model's (``lspet.flags``) first step 10.1 -> 5.9 s and its process 1.21 ->
1.10 GB, the step time unchanged; RMSprop, the paper's 8-stack model's first step 54 -> 36-42 s (float32), 49 -> 31-35 s
(bfloat16), the step time unchanged, the bfloat16 process 0.7 GB higher (not in TensorFlow's allocator).
"""

import keras
import tensorflow as tf

FUSED_ATTRIBUTE = "_hourglass_fused_updates"


def _tf_variable(variable):
    """The TensorFlow variable behind a Keras one (a distributed variable under a strategy)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


SCRATCH_ATTRIBUTE = "_hourglass_rmsprop_scratch"
SCALARS_ATTRIBUTE = "_hourglass_shared_scalars"


def _shared_scalars(optimizer, learning_rate, dtype, make):
    """``make(optimizer, learning_rate, dtype)``: the update's scalar inputs (the rate, the rule's constants, Adam's
    step powers) as a dict of tensors of ``dtype``, made once in the graph being traced and shared by every
    variable's update in it. Made per variable, as Keras does, they were 4 of RMSprop's 10 graph nodes a variable
    and 11 of Adam's 17. Kept for the latest graph only, so a retrace, or the updates inside a branch of a loss-scale
    optimizer's condition, make their own; eagerly they are made afresh each time (a changed rate is read)."""
    if tf.executing_eagerly():
        return make(optimizer, learning_rate, dtype)
    graph = tf.compat.v1.get_default_graph()
    cached_graph, per_graph = optimizer.__dict__.get(SCALARS_ATTRIBUTE, (None, None))
    if cached_graph is not graph:
        per_graph = {}
        object.__setattr__(optimizer, SCALARS_ATTRIBUTE, (graph, per_graph))
    key = (make, dtype, learning_rate if isinstance(learning_rate, float) else id(learning_rate))
    if key not in per_graph:
        per_graph[key] = make(optimizer, learning_rate, dtype)
    return per_graph[key]


def _adam_scalars(optimizer, learning_rate, dtype):
    step = tf.cast(optimizer.iterations + 1, dtype)
    beta_1, beta_2 = tf.cast(optimizer.beta_1, dtype), tf.cast(optimizer.beta_2, dtype)
    return dict(
        beta1_power=tf.pow(beta_1, step),
        beta2_power=tf.pow(beta_2, step),
        lr=tf.cast(learning_rate, dtype),
        beta1=beta_1,
        beta2=beta_2,
        epsilon=tf.cast(optimizer.epsilon, dtype),
    )


def _adam_update_step(self, gradient, variable, learning_rate):
    if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
        return type(self).update_step(self, gradient, variable, learning_rate)
    index = self._get_variable_index(variable)
    target = _tf_variable(variable)
    dtype = target.dtype
    tf.raw_ops.ResourceApplyAdam(
        var=target.handle,
        m=_tf_variable(self._momentums[index]).handle,
        v=_tf_variable(self._velocities[index]).handle,
        **_shared_scalars(self, learning_rate, dtype, _adam_scalars),
        grad=tf.cast(gradient, dtype),
    )


def _rmsprop_scalars(optimizer, learning_rate, dtype):
    return dict(
        lr=tf.cast(learning_rate, dtype),
        rho=tf.constant(optimizer.rho, dtype),
        momentum=tf.constant(optimizer.momentum, dtype),
        epsilon=tf.constant(optimizer.epsilon, dtype),
    )


def _rmsprop_update_step(self, gradient, variable, learning_rate):
    if isinstance(gradient, tf.IndexedSlices):
        return type(self).update_step(self, gradient, variable, learning_rate)
    index = self._get_variable_index(variable)
    target = _tf_variable(variable)
    dtype = target.dtype
    if self.momentum > 0:
        mom = self._momentums[index]
    else:
        mom = self.__dict__[SCRATCH_ATTRIBUTE][index]
    common = dict(
        var=target.handle,
        ms=_tf_variable(self._velocities[index]).handle,
        mom=_tf_variable(mom).handle,
        **_shared_scalars(self, learning_rate, dtype, _rmsprop_scalars),
        grad=tf.cast(gradient, dtype),
    )
    if self.centered:
        tf.raw_ops.ResourceApplyCenteredRMSProp(mg=_tf_variable(self._average_gradients[index]).handle, **common)
    else:
        tf.raw_ops.ResourceApplyRMSProp(**common)


def _create_scratch(optimizer, var_list):
    """One zero variable per weight of ``var_list`` (the kernel's ``mom`` when Keras keeps none), placed as the
    optimizer places its slots (mirrored under a strategy) and not tracked: never saved, never restored."""
    strategy = optimizer._distribution_strategy
    scratch = []
    with strategy.scope():
        for variable in var_list:
            target = _tf_variable(variable)
            with strategy.extended.colocate_vars_with(target):
                scratch.append(tf.Variable(tf.zeros(target.shape, target.dtype), trainable=False, name="rmsprop_mom"))
    object.__setattr__(optimizer, SCRATCH_ATTRIBUTE, scratch)


def _build_with_scratch(self, var_list):
    built = self.built
    type(self).build(self, var_list)
    if not built:
        _create_scratch(self, var_list)


def _unwrapped(optimizer):
    """``optimizer``, or the optimizer a loss-scale optimizer wraps."""
    return getattr(optimizer, "inner_optimizer", optimizer)


FUSED_UPDATES = ((keras.optimizers.Adam, _adam_update_step), (keras.optimizers.RMSprop, _rmsprop_update_step))


def _fused_update_of(optimizer):
    """(the Keras optimizer ``optimizer`` is or wraps, its one-kernel ``update_step``), or (None, None)."""
    inner = _unwrapped(optimizer)
    for cls, update_step in FUSED_UPDATES:
        if isinstance(inner, cls):
            return inner, update_step
    return None, None


def fusable(optimizer):
    """Whether ``fuse_updates`` takes ``optimizer`` (a Keras ``Adam`` or ``RMSprop``, or a loss-scale optimizer
    around one)."""
    return _fused_update_of(optimizer)[0] is not None


def fuse_updates(optimizer):
    """Makes ``optimizer`` (a Keras ``Adam`` or ``RMSprop``) update each variable with TensorFlow's one-kernel
    update of the same rule.

    Call it before the first training step (before ``fit`` traces the step), before or after the optimizer is
    built; calling it twice changes nothing. A loss-scale optimizer (float16) is switched through the optimizer
    it wraps. An ``RMSprop`` without momentum gets its scratch variables when it is built (now, if it is).

    Returns:
      ``optimizer``.

    Raises:
      ValueError: ``optimizer`` is not a Keras ``Adam`` or ``RMSprop`` (subclasses included) or a loss-scale
        optimizer around one.
    """
    inner, update_step = _fused_update_of(optimizer)
    if inner is None:
        raise ValueError(f"fuse_updates takes a Keras Adam or RMSprop optimizer, received {type(optimizer).__name__}")
    if inner.__dict__.get(FUSED_ATTRIBUTE, False):
        return optimizer
    if update_step is _rmsprop_update_step and inner.momentum == 0:
        if inner.built:
            _create_scratch(inner, inner._trainable_variables)
        else:
            object.__setattr__(inner, "build", _build_with_scratch.__get__(inner))
    object.__setattr__(inner, "update_step", update_step.__get__(inner))
    object.__setattr__(inner, FUSED_ATTRIBUTE, True)
    return optimizer


def has_fused_updates(optimizer):
    """Whether ``fuse_updates`` switched ``optimizer`` (or the optimizer it wraps)."""
    return bool(_unwrapped(optimizer).__dict__.get(FUSED_ATTRIBUTE, False))
