"""Per-stack recomputation (``hourglass_tf.recompute``): the same training step, computed again in the backward
pass, with the batch-norm moving averages moved once, and a model that stays stock. (Under MirroredStrategy:
test_strategies.py, whose one mirrored process trains it beside the strategy tests' models.)"""

import collections
import dataclasses
import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY, allocator_peaks, tiny_config
from hourglass_tf import batchnorm, build_model, output_names, recompute
from hourglass_tf.data import synthetic
from hourglass_tf.metadata import read_info
from hourglass_tf.train import TrainConfig, build_compiled_model, compile_for_training, prepare_run_dir, train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(root, num_train=16, num_valid=8, image_size=96, seed=1)
    return root


def twin_models(recomputed=True, **overrides):
    """Two tiny models with the same weights, both on the fused kernel; the second recomputed."""
    pair = []
    for _ in range(2):
        keras.utils.set_random_seed(3)
        model = build_model(**{**TINY, **overrides})
        batchnorm.use_fused_batch_norm(model)
        pair.append(model)
    if recomputed:
        assert recompute.recompute_stacks(pair[1]) == len(output_names(pair[1]))  # the stem, all stacks but the last
    return pair


def gradient_function(model):
    @tf.function
    def gradients(x):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = tf.add_n([tf.reduce_mean(tf.square(out - 0.3)) for out in outputs.values()])
        return loss, tape.gradient(loss, model.trainable_weights)

    return gradients


def test_recomputed_gradients_equal_the_plain_ones_and_the_stacks_are_computed_twice():
    plain, recomputed = twin_models(num_stacks=3)
    x = tf.constant(np.random.default_rng(0).random((4, 64, 64, 3), dtype=np.float32))
    functions = gradient_function(plain), gradient_function(recomputed)
    (loss_a, grads_a), (loss_b, grads_b) = (f(x) for f in functions)
    assert float(loss_b) == pytest.approx(float(loss_a), rel=1e-6)
    assert all(g is not None for g in grads_b)
    difference = np.sqrt(sum(float(tf.reduce_sum(tf.square(a - b))) for a, b in zip(grads_a, grads_b)))
    norm = np.sqrt(sum(float(tf.reduce_sum(tf.square(a))) for a in grads_a))
    assert difference < 1e-5 * norm, difference / norm

    # The step's graph: the kernel of every batch norm but the last stack's twice (forward and recomputation),
    # the moving averages assigned once; the plain step computes each once.
    def op_counts(function):  # the graph traced for the call above (no second trace)
        graph = function.get_concrete_function(x).graph
        return collections.Counter(op.type for op in graph.get_operations())

    norms = [layer.name for layer in plain.layers if isinstance(layer, keras.layers.BatchNormalization)]
    last_stack = [name for name in norms if name.startswith("hg3_")]
    plain_ops, recomputed_ops = (op_counts(f) for f in functions)
    assert all(f.experimental_get_tracing_count() == 1 for f in functions)
    assert plain_ops["FusedBatchNormV3"] == len(norms)
    assert recomputed_ops["FusedBatchNormV3"] == 2 * len(norms) - len(last_stack) and last_stack
    assert recomputed_ops["AssignVariableOp"] == plain_ops["AssignVariableOp"] == 2 * len(norms)


def test_a_recomputed_training_step_moves_weights_and_moving_averages_as_the_plain_step():
    plain, recomputed = twin_models()
    rng = np.random.default_rng(1)
    x = rng.random((4, 64, 64, 3), dtype=np.float32)
    y = {name: rng.random((4, 16, 16, 16), dtype=np.float32) for name in output_names(plain)}
    start = np.concatenate([w.ravel() for w in plain.get_weights()])
    moved = []
    for model in (plain, recomputed):
        compile_for_training(model, keras.optimizers.SGD(0.05))
        for _ in range(2):
            model.train_on_batch(x, y)
        moved.append(np.concatenate([w.ravel() for w in model.get_weights()]) - start)
    assert np.linalg.norm(moved[0]) > 0
    assert np.linalg.norm(moved[1] - moved[0]) < 1e-4 * np.linalg.norm(moved[0])
    for a, b in zip(plain.non_trainable_weights, recomputed.non_trainable_weights):  # moving means and variances
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7, err_msg=a.path)


def test_the_recomputed_model_infers_saves_and_loads_as_a_stock_model(tmp_path):
    plain, recomputed = twin_models()
    before = json.dumps(recomputed.get_config(), sort_keys=True)
    assert recompute.recompute_stacks(recomputed) == 2  # again: nothing changes
    assert recompute.is_recomputing(recomputed) and not recompute.is_recomputing(plain)
    x = np.random.default_rng(2).random((2, 64, 64, 3), dtype=np.float32)
    for a, b in zip(plain(x, training=False).values(), recomputed(x, training=False).values()):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
    assert json.dumps(recomputed.get_config(), sort_keys=True) == before
    paths = []
    for model, name in ((plain, "plain"), (recomputed, "recomputed")):
        model.save(tmp_path / f"{name}.keras")
        with zipfile.ZipFile(tmp_path / f"{name}.keras") as archive:
            paths.append(sorted(archive.namelist()))
    assert paths[0] == paths[1]
    loaded = keras.saving.load_model(tmp_path / "recomputed.keras", safe_mode=True)
    assert not recompute.is_recomputing(loaded)
    for a, b in zip(plain(x).values(), loaded(x).values()):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6)


def test_recompute_refuses_stock_batch_norm_and_models_of_another_layout():
    model = build_model(**TINY)
    with pytest.raises(ValueError, match=r"not fused: stem_bn, stem_res1_bn1, stem_res1_bn2 and \d+ more"):
        recompute.recompute_stacks(model)
    assert not recompute.is_recomputing(model)
    image = keras.Input((8, 8, 3))
    other = keras.Model(image, keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 1)(image)))
    batchnorm.use_fused_batch_norm(other)
    with pytest.raises(ValueError, match="has no layer 'stem_res3_add'"):
        recompute.recompute_stacks(other)
    with pytest.raises(ValueError, match="needs a Keras model, received str"):
        recompute.recompute_stacks("model.keras")


def test_the_training_config_recomputes_only_on_the_fused_kernel_and_a_run_may_resume_with_it(tmp_path):
    config = TrainConfig(
        dataset="synthetic", data_dir="unused", num_stacks=1, filters=16, depth=1, input_size=32, recompute=True
    )
    assert recompute.is_recomputing(build_compiled_model(config))
    assert not recompute.is_recomputing(build_compiled_model(dataclasses.replace(config, recompute=False)))
    for change in (dict(fused_batch_norm=False), dict(sync_batch_norm=True)):
        with pytest.raises(ValueError, match="recompute needs batch norm on the fused kernel"):
            dataclasses.replace(config, **change).validate()
    run_dir = tmp_path / "run"
    (run_dir / "backup").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(dataclasses.replace(config, recompute=False))))
    prepare_run_dir(run_dir, config)  # an interrupted run resumes with --recompute (e.g. after running out of memory)


def test_recomputed_training_in_bfloat16_runs_end_to_end(data_dir, tmp_path):
    """The shipped flagfiles' settings (mixed precision, fused batch norm) with --recompute: a run trains, and what
    it saves is a stock model."""
    config = tiny_config(
        data_dir,
        tmp_path / "run",
        epochs=1,
        steps_per_epoch=4,
        learning_rate=2.5e-4,
        image_summaries=0,
        mixed_precision=True,
        recompute=True,
    )
    result = train(config)
    assert np.isfinite(result["history"]["loss"]).all()
    assert recompute.is_recomputing(result["model"])
    assert read_info(tmp_path / "run" / "last.keras").precision == "mixed_bfloat16"
    loaded = keras.saving.load_model(tmp_path / "run" / "last.keras", safe_mode=True)
    assert not recompute.is_recomputing(loaded)
    x = np.random.default_rng(5).random((2, 64, 64, 3), dtype=np.float32)
    for name, heatmaps in loaded(x).items():  # the trained weights, saved as a stock float32 model
        trained = np.asarray(result["model"](x)[name])
        np.testing.assert_allclose(np.asarray(heatmaps), trained, atol=0.02 * np.abs(trained).max())


MEMORY_SCRIPT = """
import keras
import numpy as np
from hourglass_tf import batchnorm, build_model, recompute

x = tf.constant(np.random.default_rng(0).random((8, 64, 64, 3), dtype=np.float32))
peaks = {}
for name in ("plain", "recomputed"):
    keras.utils.set_random_seed(1)
    model = build_model(num_stacks=4, filters=32, depth=2, num_joints=4, input_size=64)
    batchnorm.use_fused_batch_norm(model)
    if name == "recomputed":
        recompute.recompute_stacks(model)
    peaks[name] = peak_of_a_step(model, x, lambda outputs: tf.add_n([tf.reduce_mean(o) for o in outputs.values()]))
print("PEAKS " + json.dumps(peaks))
"""


def test_recomputation_holds_about_one_stack_of_activations_at_a_time():
    """TensorFlow's allocator peak (BFC, as the scripts run it) in a step of 4 stacks: with the heatmaps as each
    segment's first output every stack would be recomputed at once and the peak would stay where it was.

    Measured with oneDNN's kernels, pinned (``conftest.allocator_peaks``): on an AVX2 machine with Eigen's kernels
    the plain step peaked at 108.6, 107.0, 115.5 MB for 2, 3, 4 stacks. With real sizes Eigen shows the same saving
    (docs/performance.md)."""
    peaks = allocator_peaks(MEMORY_SCRIPT)
    assert 0 < peaks["recomputed"] < 0.75 * peaks["plain"], peaks
