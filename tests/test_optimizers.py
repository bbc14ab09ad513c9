"""Fused Adam and RMSprop updates: Keras' arithmetic in one kernel per variable, the optimizer still stock Keras for
saving."""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from hourglass_tf.model import build_model
from hourglass_tf.optimizers import fusable, fuse_updates, has_fused_updates
from hourglass_tf.train import compile_for_training

SHAPES = [(3, 3, 4, 8), (8,), (1, 1, 8, 16), (16,)]


def _run(make_optimizer, fused, steps=5, seed=0):
    """``steps`` updates of four variables with random gradients; returns (variables, optimizer variables, ops in
    the traced update)."""
    rng = np.random.default_rng(seed)
    variables = [keras.Variable(rng.normal(size=shape).astype(np.float32)) for shape in SHAPES]
    optimizer = make_optimizer()
    if fused:
        fuse_updates(optimizer)
    optimizer.build(variables)

    @tf.function
    def step(gradients):
        optimizer.apply(gradients, variables)

    gradients = [[tf.constant(rng.normal(size=s).astype(np.float32)) for s in SHAPES] for _ in range(steps)]
    for g in gradients:
        step(g)
    ops = len(step.get_concrete_function(gradients[0]).graph.get_operations())
    return [v.numpy() for v in variables], [v.numpy() for v in optimizer.variables], ops


def test_fused_adam_computes_keras_updates_in_under_half_the_ops():
    stock_vars, stock_slots, stock_ops = _run(lambda: keras.optimizers.Adam(1e-2), fused=False)
    fused_vars, fused_slots, fused_ops = _run(lambda: keras.optimizers.Adam(1e-2), fused=True)
    # TensorFlow's kernel computes 1 - beta in float32 (0.100000024 for 0.9), Keras in float64 (0.1)
    for a, b in zip(stock_vars + stock_slots, fused_vars + fused_slots, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    one_step = _run(lambda: keras.optimizers.Adam(1e-2), fused=False, steps=1)[0]
    assert not np.allclose(stock_vars[0], one_step[0])  # the later steps moved it further
    assert fused_ops <= stock_ops / 2, (fused_ops, stock_ops)  # 76 against 172 here


def test_amsgrad_keeps_keras_update():
    stock_vars, stock_slots, _ = _run(lambda: keras.optimizers.Adam(1e-2, amsgrad=True), fused=False)
    fused_vars, fused_slots, _ = _run(lambda: keras.optimizers.Adam(1e-2, amsgrad=True), fused=True)
    for a, b in zip(stock_vars + stock_slots, fused_vars + fused_slots, strict=True):
        np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize(
    "settings", [{}, {"momentum": 0.9}, {"centered": True}, {"centered": True, "momentum": 0.5}], ids=str
)
def test_fused_rmsprop_computes_keras_updates_in_fewer_ops(settings):
    stock_vars, stock_slots, stock_ops = _run(lambda: keras.optimizers.RMSprop(1e-2, **settings), fused=False)
    fused_vars, fused_slots, fused_ops = _run(lambda: keras.optimizers.RMSprop(1e-2, **settings), fused=True)
    assert len(fused_slots) == len(stock_slots)  # the scratch variables (no momentum) are not the optimizer's
    for a, b in zip(stock_vars + stock_slots, fused_vars + fused_slots, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    one_step = _run(lambda: keras.optimizers.RMSprop(1e-2, **settings), fused=False, steps=1)[0]
    assert not np.allclose(stock_vars[0], one_step[0])
    assert fused_ops <= 0.6 * stock_ops, (fused_ops, stock_ops)  # 48 against 88 without momentum, 116 with it


def _traced_update_nodes(make_optimizer, num_variables):
    """Nodes in the traced graph of one fused update of ``num_variables`` variables of SHAPES' shapes."""
    shapes = (SHAPES * num_variables)[:num_variables]
    variables = [keras.Variable(np.ones(shape, np.float32)) for shape in shapes]
    optimizer = fuse_updates(make_optimizer())
    optimizer.build(variables)
    step = tf.function(lambda gradients: optimizer.apply(gradients, variables))
    return len(step.get_concrete_function([tf.ones(s) for s in shapes]).graph.as_graph_def().node)


@pytest.mark.parametrize("name", ["RMSprop", "Adam"])
def test_a_fused_update_adds_one_kernel_and_its_inputs_a_variable(name):
    """The rate is read, and the rule's constants (and Adam's step powers) made, once per traced graph, not once
    per variable."""
    make = lambda: getattr(keras.optimizers, name)(1e-2)  # noqa: E731
    per_variable = (_traced_update_nodes(make, 12) - _traced_update_nodes(make, 4)) / 8
    # the gradient, the variable's and its two slots' handles, Keras' identity of the gradient, the kernel: 6
    # (RMSprop: Keras' own update 21, the kernel with its scalars made per variable 10; Adam: 17 that way)
    assert per_variable <= 6, per_variable


@pytest.mark.parametrize("name", ["RMSprop", "Adam"])
@pytest.mark.parametrize("traced", [True, False], ids=["traced", "eager"])
def test_a_fused_update_follows_a_changed_rate_and_a_loss_scale_optimizer(traced, name):
    """Two traced functions (two graphs) and a loss-scale optimizer's branch each get their own shared scalars;
    eagerly, a rate changed between steps is read afresh."""

    def run(fused):
        rng = np.random.default_rng(3)
        variables = [keras.Variable(rng.normal(size=shape).astype(np.float32)) for shape in SHAPES]
        plain = getattr(keras.optimizers, name)(1e-2)
        scaled = keras.optimizers.LossScaleOptimizer(getattr(keras.optimizers, name)(1e-2), initial_scale=4.0)
        for optimizer in (plain, scaled):
            if fused:
                fuse_updates(optimizer)
            optimizer.build(variables)
        first = lambda g: plain.apply(g, variables)  # noqa: E731
        second = lambda g: scaled.apply([x * 4.0 for x in g], variables)  # noqa: E731
        if traced:
            first, second = tf.function(first), tf.function(second)
        for step in range(4):
            gradients = [tf.constant(rng.normal(size=s).astype(np.float32)) for s in SHAPES]
            (first if step % 2 else second)(gradients)
            plain.learning_rate.assign(plain.learning_rate * 0.5)
        return [v.numpy() for v in variables]

    for a, b in zip(run(fused=False), run(fused=True), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_rmsprop_fused_after_it_was_built_gets_its_scratch_then():
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(size=shape).astype(np.float32)) for shape in SHAPES]
    optimizer = keras.optimizers.RMSprop(1e-2)
    optimizer.build(variables)
    fuse_updates(optimizer)
    gradients = [tf.constant(rng.normal(size=s).astype(np.float32)) for s in SHAPES]
    before = [v.numpy() for v in variables]
    tf.function(lambda g: optimizer.apply(g, variables))(gradients)
    for old, new, g in zip(before, variables, gradients, strict=True):  # first RMSprop step: lr g / sqrt(0.1 g^2)
        np.testing.assert_allclose(old - new.numpy(), 1e-2 * g / np.sqrt(0.1 * g.numpy() ** 2 + 1e-7), rtol=1e-4)


def test_fusing_is_idempotent_and_refuses_other_optimizers():
    for make in (keras.optimizers.Adam, keras.optimizers.RMSprop):
        optimizer = make()
        assert fusable(optimizer) and not has_fused_updates(optimizer)
        assert fuse_updates(fuse_updates(optimizer)) is optimizer and has_fused_updates(optimizer)
        wrapped = keras.optimizers.LossScaleOptimizer(make())
        assert fusable(wrapped) and has_fused_updates(fuse_updates(wrapped))
        assert has_fused_updates(wrapped.inner_optimizer)
    for other in (keras.optimizers.SGD(), keras.optimizers.Adagrad()):
        assert not fusable(other)
        with pytest.raises(ValueError, match=f"received {type(other).__name__}"):
            fuse_updates(other)


@pytest.mark.parametrize("name", ["Adam", "RMSprop"])
def test_a_model_compiled_for_training_saves_a_stock_optimizer(tmp_path, name):
    model = build_model(num_stacks=1, filters=16, depth=2, num_joints=16, input_size=64)
    optimizer = getattr(keras.optimizers, name)(1e-3)
    compile_for_training(model, optimizer)
    assert has_fused_updates(optimizer)
    x = np.zeros((2, 64, 64, 3), np.float32)
    model.train_on_batch(x, {"stack_1": np.zeros((2, 16, 16, 16), np.float32)})
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        saved = json.loads(archive.read("config.json"))["compile_config"]["optimizer"]
    assert (saved["module"], saved["class_name"], saved.get("registered_name")) == ("keras.optimizers", name, None)
    loaded = keras.models.load_model(tmp_path / "m.keras")  # with its optimizer, as Keras wrote it
    assert type(loaded.optimizer) is getattr(keras.optimizers, name) and not has_fused_updates(loaded.optimizer)
    assert int(loaded.optimizer.iterations.numpy()) == 1
    assert len(loaded.optimizer.variables) == len(optimizer.variables)
