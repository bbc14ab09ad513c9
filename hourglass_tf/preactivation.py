"""Training a convolution that follows batch norm and ReLU without keeping the ReLU's output for the backward pass.

The paper's residual module is pre-activation: batch norm -> ReLU -> convolution, three times. A training step
keeps, for the backward pass, the batch-norm input ``x`` (its gradient needs it) and the ReLU output ``a``
(the ReLU's gradient and the convolution's kernel gradient need it): two tensors of the same size per unit.
``a`` is a cheap function of ``x`` and the batch statistics the forward pass computed: ``a = relu((x - mean) /
sqrt(var + eps) * gamma + beta)``. ``recompute_preactivations(model)`` makes each such convolution's backward
pass compute ``a`` again from ``x`` (one batch-norm kernel and one ReLU, element-wise work) instead of keeping
it, which halves what the units keep (the in-place activated batch norm of Rota Bulo et al., CVPR 2018, does
the same for the same reason). The convolution itself is not recomputed.

It takes effect when training with the fused batch-norm kernel (``hourglass_tf.batchnorm``, ``train.py``'s
default) inside a ``tf.function`` (``fit``, ``train_on_batch``): a convolution whose input is
``Relu(FusedBatchNormV3(x, training))`` in the traced graph is computed under a custom gradient that returns
the gradients of ``x``, ``gamma``, ``beta``, the kernel and the bias directly: the batch-norm gradient is
TensorFlow's ``FusedBatchNormGradV3`` with the forward pass's saved statistics, the ReLU and convolution
gradients TensorFlow's own. Any other input (inference, Keras' unfused batch norm, eager execution, a
synchronized batch norm) takes the layer's stock computation. The layers stay stock Keras objects with their
config and variables, so a saved model is exactly what it would have been; as with the fused batch norm, only
the training computation of the model object changes.

If a ReLU output also feeds something else with a gradient (an add, or a layer not switched), that consumer
keeps ``a`` as before and its gradient reaches ``x`` through the stock path; the sum is the same gradient.
"""

import tensorflow as tf
from keras import layers

from . import batchnorm

PREACTIVATION_ATTRIBUTE = "_hourglass_recompute_preactivation"


def _recomputable_source(inputs):
    """The training ``FusedBatchNormV3`` op whose ReLU produced ``inputs``, or None (eager, or another producer)."""
    if tf.executing_eagerly() or not isinstance(inputs, tf.Tensor):
        return None
    relu = inputs.op
    if relu.type != "Relu":
        return None
    norm = relu.inputs[0].op
    if norm.type != "FusedBatchNormV3" or not norm.get_attr("is_training"):
        return None
    if norm.get_attr("data_format") != b"NHWC":
        return None
    return norm


def _normalised_again(norm):
    """The forward pass's batch-norm output of ``norm`` (a training ``FusedBatchNormV3``), computed again from its
    input with the batch mean and biased variance it computed: the same kernel in inference mode."""
    x, scale, offset = norm.inputs[0], norm.inputs[1], norm.inputs[2]
    variance = norm.outputs[2] * batchnorm.biased_variance_factor(x)  # the kernel reports the unbiased variance
    return tf.raw_ops.FusedBatchNormV3(
        x=x,
        scale=scale,
        offset=offset,
        mean=norm.outputs[1],
        variance=variance,
        epsilon=norm.get_attr("epsilon"),
        data_format="NHWC",
        is_training=False,
    ).y


def _batch_norm_gradient(norm, grad_y):
    """Gradients of ``norm``'s input, scale and offset for the gradient ``grad_y`` of its output (training mode),
    from its saved statistics: what TensorFlow's registered gradient of ``FusedBatchNormV3`` computes."""
    grads = tf.raw_ops.FusedBatchNormGradV3(
        y_backprop=grad_y,
        x=norm.inputs[0],
        scale=norm.inputs[1],
        reserve_space_1=norm.outputs[3],
        reserve_space_2=norm.outputs[4],
        reserve_space_3=norm.outputs[5],
        epsilon=norm.get_attr("epsilon"),
        data_format="NHWC",
        is_training=True,
    )
    return grads.x_backprop, grads.scale_backprop, grads.offset_backprop


def _convolve(layer, inputs, params):
    """``layer``'s convolution of ``inputs`` with ``params`` = [kernel] or [kernel, bias] (tensors), no activation:
    Keras' ``Conv2D`` computation (``tf.nn.convolution``, then the bias added per channel). ``BiasAdd`` rather than
    Keras' broadcast add, so that TensorFlow fuses it into the convolution here too (measured: a third of these
    convolutions stayed unfused with the add)."""
    outputs = layer.convolution_op(inputs, params[0])
    if len(params) == 1:
        return outputs
    return tf.nn.bias_add(outputs, params[1], data_format="NHWC")


def _convolution_gradients(layer, inputs, params, grad_outputs):
    """Gradients of ``_convolve(layer, inputs, params)`` for ``grad_outputs``: [inputs, kernel(, bias)], the ops
    TensorFlow's registered ``Conv2D`` gradient builds (no forward convolution is traced again)."""
    kernel = params[0]
    options = dict(
        strides=[1, *layer.strides, 1],
        padding=layer.padding.upper(),
        dilations=[1, *layer.dilation_rate, 1],
        data_format="NHWC",
    )
    grads = [
        tf.raw_ops.Conv2DBackpropInput(
            input_sizes=tf.shape(inputs), filter=kernel, out_backprop=grad_outputs, **options
        ),
        tf.raw_ops.Conv2DBackpropFilter(
            input=inputs, filter_sizes=tf.shape(kernel), out_backprop=grad_outputs, **options
        ),
    ]
    if len(params) == 2:  # BiasAddGrad, which TensorFlow fuses with the kernel gradient (a sum would stay apart)
        grads.append(tf.raw_ops.BiasAddGrad(out_backprop=grad_outputs, data_format="NHWC"))
    return grads


def _convolution_of_recomputed_activation(layer, activation, norm):
    """``layer``'s convolution of ``activation`` = relu(``norm``'s output), with a gradient that recomputes the
    activation from the batch-norm input instead of keeping it."""
    variables = [layer.kernel, layer.bias] if layer.use_bias else [layer.kernel]
    params = [tf.convert_to_tensor(v.value) for v in variables]  # autocast to the compute dtype in the layer's call
    x, scale, offset = norm.inputs[0], norm.inputs[1], norm.inputs[2]

    @tf.custom_gradient
    def convolution(x, scale, offset, *params):
        # ``activation`` enters from outside, so the backward pass built below never refers to it: it is freed once
        # the forward pass has used it. The arguments are what the gradient is returned for.
        outputs = _convolve(layer, activation, params)

        def gradient(grad_outputs):
            # Only once the gradient has arrived: the recomputation depends on forward tensors alone, and without
            # this the runtime would run it during the forward pass and hold its result until the backward pass.
            with tf.control_dependencies([grad_outputs]):
                recomputed = tf.nn.relu(_normalised_again(norm))
            grad_activation, *grad_params = _convolution_gradients(layer, recomputed, params, grad_outputs)
            grad_norm = tf.raw_ops.ReluGrad(gradients=grad_activation, features=recomputed)
            return (*_batch_norm_gradient(norm, grad_norm), *grad_params)

        return outputs, gradient

    return convolution(x, scale, offset, *params)


def _recomputing_call(layer, inputs):
    """The ``Conv2D`` layer's ``call``: the recomputing convolution when ``inputs`` is relu(training batch norm)."""
    norm = _recomputable_source(inputs)
    if norm is None:
        return type(layer).call(layer, inputs)
    outputs = _convolution_of_recomputed_activation(layer, inputs, norm)
    return outputs if layer.activation is None else layer.activation(outputs)


def switchable(layer):
    """Whether ``layer`` is a plain 2-D convolution this module can switch (channels last, one group)."""
    return type(layer) is layers.Conv2D and layer.data_format == "channels_last" and layer.groups == 1


def is_switched(layer):
    """Whether ``recompute_preactivations`` switched ``layer``'s training computation."""
    return batchnorm.is_switched(layer, PREACTIVATION_ATTRIBUTE)


def recompute_preactivations(model):
    """Makes every plain ``Conv2D`` of ``model`` recompute a batch norm -> ReLU input in its backward pass instead
    of keeping it (see the module docstring). Call before the first training step.

    Args:
      model: a built Keras model (nested models are searched too).

    Returns:
      int, the number of ``Conv2D`` layers switched (whether or not their input is a batch norm -> ReLU, which is
      decided when the step is traced). A layer already switched counts again and is not switched twice.
    """
    return batchnorm.switch_calls(
        model, switchable, _recomputing_call, PREACTIVATION_ATTRIBUTE, "recompute_preactivations"
    )
