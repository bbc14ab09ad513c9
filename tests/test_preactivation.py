"""Convolutions that recompute their batch norm -> ReLU input in the backward pass (hourglass_tf.preactivation)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import allocator_peaks
from hourglass_tf import batchnorm, build_model, output_names, preactivation, recompute
from hourglass_tf.train import compile_for_training


def _model(switched, seed=1, filters=16, stacks_recomputed=False):
    keras.utils.set_random_seed(seed)
    model = build_model(num_stacks=2, num_blocks=1, filters=filters, depth=2, num_joints=4, input_size=64)
    batchnorm.use_fused_batch_norm(model)
    if stacks_recomputed:
        recompute.recompute_stacks(model)
    if switched:
        preactivation.recompute_preactivations(model)
    return model


def _batch(size=4):
    rng = np.random.default_rng(0)
    x = rng.random((size, 64, 64, 3), dtype=np.float32)
    y = {f"stack_{s}": rng.random((size, 16, 16, 4), dtype=np.float32) for s in (1, 2)}
    return x, y


def _gradient_step(model, y):
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = tf.add_n([tf.reduce_mean((tf.cast(outputs[n], tf.float32) - y[n]) ** 2) for n in y])
        return loss, tape.gradient(loss, model.trainable_weights)

    return step


def _flat(gradients):
    return np.concatenate([np.asarray(g, np.float64).ravel() for g in gradients])


def _gradients(switched, policy="float32", stacks_recomputed=False):
    keras.mixed_precision.set_global_policy(policy)
    model = _model(switched, filters=32, stacks_recomputed=stacks_recomputed)
    x, y = _batch()
    loss, gradients = _gradient_step(model, y)(tf.constant(x))
    return float(loss), _flat(gradients)


def test_every_plain_convolution_is_switched_once_and_others_are_left():
    model = _model(switched=False)
    convolutions = [layer for layer in model.layers if type(layer) is keras.layers.Conv2D]
    assert preactivation.recompute_preactivations(model) == len(convolutions)
    assert preactivation.recompute_preactivations(model) == len(convolutions)  # counted again, not switched twice
    assert all(preactivation.is_switched(layer) for layer in convolutions)
    assert not preactivation.switchable(keras.layers.Conv2DTranspose(4, 3))
    assert not preactivation.switchable(keras.layers.Conv2D(4, 3, groups=2))
    with pytest.raises(ValueError, match="received Dense"):
        preactivation.recompute_preactivations(keras.layers.Dense(3))


@pytest.fixture(scope="module")
def kept_float32():
    """(loss, flat gradients) of the stock float32 step: the reference of the gradient tests."""
    return _gradients(switched=False)


def test_the_gradients_equal_the_kept_activation_ones_in_float32(kept_float32):
    kept_loss, kept = kept_float32
    loss, recomputed = _gradients(switched=True)
    assert loss == kept_loss  # the forward pass is the same computation
    assert np.linalg.norm(recomputed - kept) <= 1e-5 * np.linalg.norm(kept)


def test_with_the_stacks_recomputed_too_the_gradients_stay_the_kept_activation_ones(kept_float32):
    """``train.py --recompute``: each stack's recomputation runs the switched convolutions again, custom gradients
    inside ``tf.recompute_grad``'s."""
    _, kept = kept_float32
    _, recomputed = _gradients(switched=True, stacks_recomputed=True)
    assert np.linalg.norm(recomputed - kept) <= 1e-5 * np.linalg.norm(kept)


def test_in_bfloat16_the_gradients_are_as_close_to_float32_as_the_kept_activation_ones(kept_float32):
    """The recomputed units round in bfloat16 in other places than the stock graph; they must not lose accuracy."""
    _, reference = kept_float32
    _, kept = _gradients(switched=False, policy="mixed_bfloat16")
    _, recomputed = _gradients(switched=True, policy="mixed_bfloat16")
    kept_error = np.linalg.norm(kept - reference) / np.linalg.norm(reference)
    error = np.linalg.norm(recomputed - reference) / np.linalg.norm(reference)
    assert 0 < error < max(1.5 * kept_error, 1e-3), (error, kept_error)


def _backward_consumers(graph):
    """For each ReLU of a training batch norm in ``graph``: the op types that read its output."""
    found = []
    for op in graph.get_operations():
        if op.type != "Relu":
            continue
        norm = op.inputs[0].op
        if norm.type == "FusedBatchNormV3" and norm.get_attr("is_training"):
            found.append((op.name, sorted({c.type for c in op.outputs[0].consumers()})))
    return found


@pytest.mark.parametrize("switched", [False, True])
def test_only_relu_outputs_that_feed_more_than_a_convolution_are_kept_for_the_backward_pass(switched):
    """In the traced training step, the ReLU outputs that only convolutions read are not read by any gradient op
    (the convolution's kernel gradient and the ReLU's gradient recompute them), so they are freed after the
    forward pass; the stock step reads every one of them again (``switched=False`` shows the test can fail)."""
    model = _model(switched)
    x, y = _batch(2)
    graph = _gradient_step(model, y).get_concrete_function(tf.constant(x)).graph
    units = _backward_consumers(graph)
    backward = {"Conv2DBackpropFilter", "ReluGrad", "FusedBatchNormGradV3"}
    kept = {name for name, kinds in units if backward & set(kinds)}
    # IdentityN: a custom gradient's inputs (a ReLU output that is the next unit's batch-norm input); ShapeN: shapes
    read_by_others = {name for name, kinds in units if set(kinds) - {"Conv2D", "IdentityN", "ShapeN"} - backward}
    assert len(units) > 40
    if switched:
        assert kept <= read_by_others and len(kept) <= 2, (kept, read_by_others)
    else:
        assert len(kept) == len(units)


def test_training_steps_move_weights_and_moving_averages_as_the_stock_step():
    x, y = _batch()
    trained = []
    for switched in (False, True):
        model = _model(switched)
        compile_for_training(model, keras.optimizers.SGD(0.05))  # RMSprop would magnify rounding in ~0 gradients
        losses = [model.train_on_batch(x, y, return_dict=True)["loss"] for _ in range(3)]
        trained.append((losses, [np.asarray(w) for w in model.weights]))
    np.testing.assert_allclose(trained[1][0], trained[0][0], rtol=1e-5)
    for kept, recomputed in zip(trained[0][1], trained[1][1], strict=True):
        np.testing.assert_allclose(recomputed, kept, rtol=1e-3, atol=5e-5)  # 3 steps grow 1e-7 rounding to 1e-5


def test_inference_and_the_saved_model_are_unchanged(tmp_path):
    x, _ = _batch(2)
    stock, switched = _model(False), _model(True)
    for a, b in zip(stock(x, training=False).values(), switched(x, training=False).values(), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    path = tmp_path / "switched.keras"
    switched.save(path)
    loaded = keras.models.load_model(path)
    assert not any(preactivation.is_switched(layer) for layer in loaded.layers)
    assert [layer.get_config() for layer in loaded.layers] == [layer.get_config() for layer in stock.layers]
    for name in output_names(stock):
        np.testing.assert_allclose(
            np.asarray(loaded(x, training=False)[name]), np.asarray(stock(x, training=False)[name]), rtol=1e-6
        )


MEMORY_SCRIPT = """
import keras
import numpy as np
from hourglass_tf import batchnorm, preactivation

x = tf.constant(np.random.default_rng(0).random((8, 32, 32, 32), dtype=np.float32))  # 1 MB a tensor
peaks = {}
for name in ("kept", "recomputed"):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((32, 32, 32))
    h = inputs
    for _ in range(12):
        h = keras.layers.Conv2D(32, 3, padding="same")(keras.layers.ReLU()(keras.layers.BatchNormalization()(h)))
    model = keras.Model(inputs, h)
    batchnorm.use_fused_batch_norm(model)
    if name == "recomputed":
        preactivation.recompute_preactivations(model)
    peaks[name] = peak_of_a_step(model, x, tf.reduce_mean)
print("PEAKS " + json.dumps(peaks))
"""


def test_a_chain_of_units_holds_about_one_tensor_a_unit_instead_of_two():
    """TensorFlow's allocator peak (BFC, as the scripts run it) in the training step of 12 batch norm -> ReLU ->
    convolution units: kept, each unit holds its batch-norm input and its ReLU output for the backward pass.
    Recomputed, the ReLU output is freed, provided the recomputation waits for the gradient: the runtime runs an op
    as soon as its inputs exist, and the recomputation needs forward tensors only (measured without the wait: the
    peak did not move)."""
    peaks = allocator_peaks(MEMORY_SCRIPT)
    assert 0 < peaks["recomputed"] < 0.75 * peaks["kept"], peaks
