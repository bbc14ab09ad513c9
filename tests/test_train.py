"""Training: fit and validation, NaN stop, resume after SIGKILL, MirroredStrategy and multi-worker.

Strategy runs each use their own subprocess: TensorFlow's collectives break when two models
are built under strategies in one process.
"""

import csv
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, free_ports, tiny_config
from hourglass_tf import runtime
from hourglass_tf.data import synthetic
from hourglass_tf.data.readers import skeleton_of
from hourglass_tf.train import (
    AtomicCheckpoint,
    AverageWeightsIn,
    AverageWeightsOut,
    CosineDecay,
    EpochTimer,
    LearningRateDrops,
    NaNGuard,
    SafeBackupAndRestore,
    TimeBudget,
    TrainConfig,
    spent_budget_seconds,
    train,
)

TINY_FLAGS = [
    "--dataset=synthetic",
    "--num_stacks=1",
    "--filters=16",
    "--depth=2",
    "--input_size=64",
    "--batch_size=4",
    "--val_batch_size=8",
    "--image_summaries=2",
    "--verbose=0",
    "--learning_rate=1e-3",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(root, num_train=48, num_valid=8, image_size=96, seed=1)
    return root


def read_log(run_dir):
    with open(run_dir / "log.csv") as f:
        return list(csv.DictReader(f))


def run_script(args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


def test_fit_lowers_the_loss_and_logs_per_stack_losses_and_validation_pckh(data_dir, tmp_path, monkeypatch):
    from hourglass_tf import backends, images

    # Traces (Python runs these only while TensorFlow traces): the photo check of the training and validation
    # pipelines and of the samples' inspection is traced once; validation and the image summaries share one
    # inference graph over the 3 epochs.
    traces = {"photo check": 0, "inference": 0}

    def counted(function, key):
        def call(*args, **kwargs):
            traces[key] += 1
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(images, "declared_pixels_tf", counted(images.declared_pixels_tf, "photo check"))
    forward = backends.KerasRunner._forward
    monkeypatch.setattr(
        backends.KerasRunner, "_forward", lambda self, crops: counted(forward, "inference")(self, crops)
    )
    images._check_function.cache_clear()
    result = train(tiny_config(data_dir, tmp_path / "run", epochs=3, lr_drop_epochs="3"))
    assert traces == {"photo check": 1, "inference": 1}
    history = result["history"]
    assert {"loss", "stack_1_loss", "stack_2_loss", "val_pckh", "learning_rate", "elapsed_seconds"} <= set(history)
    np.testing.assert_allclose(history["learning_rate"], [1e-3, 1e-3, 2e-4], rtol=1e-5)  # lr_drop_epochs=3
    assert np.all(np.diff(history["elapsed_seconds"]) > 0)
    assert (tmp_path / "run" / "training_curve.png").stat().st_size > 0
    assert history["loss"][-1] < history["loss"][0]
    rows = read_log(tmp_path / "run")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2] and "val_pckh" in rows[0]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["epochs_run"] == 3 and summary["stopped_because"] is None
    assert 0.0 <= summary["val_pckh"] <= 100.0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["num_stacks"] == 2
    for name in ("best.keras", "last.keras"):
        loaded = keras.models.load_model(tmp_path / "run" / name)
        assert loaded.output_names == ["stack_1", "stack_2"]
    assert list((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))


def test_fixed_learning_rate_drops_apply_once_per_listed_epoch():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    x, y = np.ones((4, 2), np.float32), np.ones((4, 1), np.float32)
    history = model.fit(x, y, epochs=5, verbose=0, callbacks=[LearningRateDrops((2, 4), 0.5), EpochTimer()]).history
    np.testing.assert_allclose(history["learning_rate"], [1e-2, 5e-3, 5e-3, 2.5e-3, 2.5e-3], rtol=1e-6)
    assert all(s >= 0 for s in history["epoch_seconds"])


def test_cosine_schedule_sets_every_step_from_the_optimizer_step_count():
    schedule = CosineDecay(1e-2, 1e-4, total_steps=8)
    rates = [schedule.rate(t) for t in range(9)]
    assert (
        rates[0] == pytest.approx(1e-2)
        and rates[4] == pytest.approx((1e-2 + 1e-4) / 2)
        and rates[8] == pytest.approx(1e-4)
    )
    assert np.all(np.diff(rates) < 0) and schedule.rate(50) == pytest.approx(1e-4)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1.0), loss="mse")
    x, y = np.ones((16, 2), np.float32), np.ones((16, 1), np.float32)
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[schedule]).history
    np.testing.assert_allclose(history["learning_rate"], [rates[3], rates[7]], rtol=1e-5)  # set before steps 3 and 7
    # A resumed run continues the curve from the restored step count.
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[CosineDecay(1e-2, 1e-4, 16)]).history
    np.testing.assert_allclose(history["learning_rate"], [CosineDecay(1e-2, 1e-4, 16).rate(11)], rtol=1e-5)
    with pytest.raises(ValueError, match="total_steps=0"):
        CosineDecay(1e-2, 1e-4, 0)


class Ticker(keras.callbacks.Callback):
    """A fake clock that advances ``step`` seconds when each batch begins."""

    def __init__(self, step):
        super().__init__()
        self.now, self.step = 0.0, step

    def on_train_batch_begin(self, batch, logs=None):
        self.now += self.step


def fit_with_budget(budget, lr=1.0, epochs=10, **kwargs):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    ticker = Ticker(10.0)
    budget._clock = lambda: ticker.now
    x, y = np.ones((16, 2), np.float32), np.ones((16, 1), np.float32)
    return model.fit(x, y, batch_size=4, epochs=epochs, verbose=0, callbacks=[ticker, budget], **kwargs).history


def test_time_budget_drops_the_rate_at_its_fractions_and_ends_the_epoch_it_runs_out_in():
    # 4 steps an epoch, 10 s a step: 50 s pass when step 5 begins, 80 s at step 8, 100 s at step 10.
    budget = TimeBudget(100.0, fractions=(0.8, 0.5), factor=0.5)
    history = fit_with_budget(budget)
    assert len(history["loss"]) == 3  # the third epoch ends after its second step
    np.testing.assert_allclose(history["learning_rate"], [1.0, 0.25, 0.25])
    np.testing.assert_allclose(history["budget_seconds"], [40.0, 80.0, 100.0])
    assert budget.reason == "time budget of 1.66667 minutes spent in epoch 3, after batch 2"
    # A resumed run that had spent 60 s: the 50 % drop is already in the restored rate, the 80 % one is not.
    resumed = TimeBudget(100.0, fractions=(0.5, 0.8), factor=0.5, spent_seconds=60.0)
    history = fit_with_budget(resumed)
    np.testing.assert_allclose(history["learning_rate"], [0.5])  # dropped when 80 s were spent (step 2)
    np.testing.assert_allclose(history["budget_seconds"], [100.0])
    with pytest.raises(ValueError, match="budget_seconds=0"):
        TimeBudget(0)


def test_spent_budget_is_read_from_the_last_logged_epoch(tmp_path):
    assert spent_budget_seconds(tmp_path / "log.csv") == 0.0
    (tmp_path / "log.csv").write_text("epoch,budget_seconds,loss\n0,12.5,0.1\n1,30.25,0.05\n")
    assert spent_budget_seconds(tmp_path / "log.csv") == 30.25
    (tmp_path / "old.csv").write_text("epoch,loss\n0,0.1\n")
    assert spent_budget_seconds(tmp_path / "old.csv") == 0.0


def test_a_mixed_precision_run_stops_when_the_time_budget_is_spent_keeping_float32_outputs_and_that_epoch(
    data_dir, tmp_path
):
    """lspet.flags' precision with the time budget its comment restores: 0.001 minutes is spent within the first
    step, so the first epoch ends after one step, and is validated and checkpointed."""
    result = train(
        tiny_config(data_dir, tmp_path / "run", num_stacks=1, epochs=5, time_budget_minutes=0.001, mixed_precision=True)
    )
    summary = result["summary"]
    assert summary["epochs_run"] == 1
    assert summary["stopped_because"].startswith("time budget of 0.001 minutes spent in epoch 1, after batch 1")
    rows = read_log(tmp_path / "run")
    assert len(rows) == 1 and float(rows[0]["budget_seconds"]) >= 0.06 and "val_pckh" in rows[0]
    assert (tmp_path / "run" / "best.keras").exists() and (tmp_path / "run" / "last.keras").exists()
    model = result["model"]
    assert model.get_layer("hg1_d2_skip_res1_conv1").compute_dtype == "bfloat16"  # CPU: bfloat16
    assert all(out.dtype == "float32" for out in model.outputs)
    assert np.isfinite(result["history"]["loss"][0])
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards


class Weights(keras.callbacks.Callback):
    """Records the trainable weights after every step, or at every epoch end."""

    def __init__(self, when):
        super().__init__()
        self.when, self.seen = when, []

    def _record(self):
        self.seen.append([keras.ops.convert_to_numpy(v).copy() for v in self.model.trainable_variables])

    def on_train_batch_end(self, batch, logs=None):
        if self.when == "step":
            self._record()

    def on_epoch_end(self, epoch, logs=None):
        if self.when == "epoch":
            self._record()


def test_epoch_ends_see_the_moving_average_and_training_continues_from_the_trained_weights():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.5), "mse")
    steps, averaged, trained = Weights("step"), Weights("epoch"), Weights("epoch")
    swap_in = AverageWeightsIn()
    x = np.random.default_rng(0).random((12, 3), dtype=np.float32)
    model.fit(
        x,
        2 * x[:, :2] - 1,
        batch_size=4,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[steps, swap_in, averaged, AverageWeightsOut(swap_in), trained],
    )
    assert len(steps.seen) == 6
    average = steps.seen[0]  # the optimizer's average starts at the weights after the first step
    expected = []
    for step, weights in enumerate(steps.seen[1:], start=2):
        average = [0.5 * a + 0.5 * w for a, w in zip(average, weights)]
        if step % 3 == 0:
            expected.append(average)
    for epoch in range(2):
        for seen, want, last_step in zip(averaged.seen[epoch], expected[epoch], steps.seen[3 * epoch + 2]):
            np.testing.assert_allclose(seen, want, rtol=1e-5, atol=1e-6)
            assert not np.allclose(seen, last_step)  # the average is not the trained weights
        for seen, last_step in zip(trained.seen[epoch], steps.seen[3 * epoch + 2]):
            np.testing.assert_array_equal(seen, last_step)  # training goes on from the trained weights
    for final, want in zip(model.trainable_variables, expected[-1]):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(final), want, rtol=1e-5, atol=1e-6)


def test_train_with_ema_and_the_cosine_schedule_checkpoints_the_average_and_logs_the_decayed_rate(data_dir, tmp_path):
    config = tiny_config(data_dir, tmp_path / "run", num_stacks=1, epochs=2, ema_momentum=0.9)
    result = train(dataclasses.replace(config, lr_schedule="cosine", min_learning_rate=1e-5))
    assert len(result["history"]["val_pckh"]) == 2
    saved = keras.models.load_model(tmp_path / "run" / "last.keras", compile=False)
    for a, b in zip(saved.trainable_variables, result["model"].trainable_variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["ema_momentum"] == 0.9
    expected = [CosineDecay(1e-3, 1e-5, 12).rate(t) for t in (5, 11)]
    np.testing.assert_allclose(result["history"]["learning_rate"], expected, rtol=1e-5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(lr_schedule="linear"), "lr_schedule='linear'"),
        (dict(lr_schedule="cosine", lr_drop_epochs="3"), "lr_drop_epochs='3' applies"),
        (dict(min_learning_rate=1.0), "min_learning_rate must be"),
        (dict(data_dir=None, tfrecord_dir="shards", drop_side_conflicts=True), "drop_side_conflicts needs data_dir"),
        (dict(lr_drop_fractions="0.8"), "lr_drop_fractions='0.8' needs time_budget_minutes > 0"),
        (dict(time_budget_minutes=60, lr_drop_fractions="0.5,1.0"), "fractions of the time budget in \\(0, 1\\)"),
        (dict(time_budget_minutes=60, lr_drop_fractions="half"), "received 'half'"),
        (dict(time_budget_minutes=-1.0), "time_budget_minutes must be a non-negative number"),
        (
            dict(time_budget_minutes=60, lr_schedule="cosine", lr_drop_fractions="0.8"),
            "lr_drop_fractions='0.8' applies",
        ),
        (dict(ema_momentum=1.0), "ema_momentum must be in \\[0, 1\\) \\(0: off\\), received ema_momentum=1.0"),
        (dict(ema_momentum=-0.5), "received ema_momentum=-0.5"),
    ],
)
def test_inconsistent_schedule_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{"dataset": "synthetic", "data_dir": "x", **overrides}).validate()


@pytest.mark.parametrize("text", ["6,x", "0", "3;5"])
def test_malformed_lr_drop_epochs_are_refused(text):
    with pytest.raises(ValueError, match="lr_drop_epochs"):
        TrainConfig(dataset="synthetic", data_dir="x", lr_drop_epochs=text).validate()
    assert TrainConfig(lr_drop_epochs=" 8, 6 ").drop_epochs() == (6, 8)


def test_a_nan_loss_stops_cleanly_and_says_why(data_dir, tmp_path):
    result = train(tiny_config(data_dir, tmp_path / "run", num_stacks=1, learning_rate=1e30, epochs=2))
    reason = result["summary"]["stopped_because"]
    assert reason and "non-finite loss" in reason
    assert not (tmp_path / "run" / "last.keras").exists()  # nothing non-finite was saved
    assert (tmp_path / "run" / "training_curve.png").is_file()  # drawn from a log with NA cells


def test_after_a_nan_the_last_good_checkpoint_and_backup_are_intact(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((8, 4), np.float32), np.ones((8, 1), np.float32)

    class Poison(keras.callbacks.Callback):  # corrupts the weights during the second epoch
        def on_train_batch_begin(self, batch, logs=None):
            if self.epoch == 1 and batch == 1:
                self.model.layers[0].kernel.assign(np.full((4, 1), np.nan, np.float32))

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    guard = NaNGuard()
    checkpoint = AtomicCheckpoint(tmp_path, "loss_metric", guard)
    backup = SafeBackupAndRestore(str(tmp_path / "backup"), guard)
    model.fit(x, y, batch_size=2, epochs=3, verbose=0, callbacks=[Poison(), guard, checkpoint, backup])
    assert guard.reason and "epoch 2" in guard.reason
    restored = keras.models.load_model(tmp_path / "last.keras")
    assert np.all(np.isfinite(restored.layers[0].kernel.numpy()))
    assert json.loads((tmp_path / "backup" / "training_metadata.json").read_text())["epoch"] == 1


def test_a_mixed_precision_run_s_checkpoints_are_float32_with_each_epoch_s_weights(tmp_path, monkeypatch):
    """``AtomicCheckpoint`` builds the float32 copy of a mixed-precision model once and gives it the weights of
    each epoch it saves: every ``last.keras`` computes in float32 and holds that epoch's trained weights."""
    import hourglass_tf.callbacks
    from hourglass_tf import metadata, skeleton
    from hourglass_tf.model import build_model

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model(num_stacks=1, filters=8, depth=1, num_joints=2, input_size=32)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss={"stack_1": "mse"})
    info = metadata.describe(model, skeleton.Skeleton("two", ("a", "b"), ((0, 1),)), precision="mixed_bfloat16")
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 32, 32, 3), np.float32), {"stack_1": rng.random((8, 8, 8, 2), np.float32)}

    copies, weights, saved = [], [], []  # float32_copy's calls; each epoch's weights and its checkpoint's copy
    original = hourglass_tf.callbacks.float32_copy

    def counted(m):
        copies.append(m)
        return original(m)

    class Record(keras.callbacks.Callback):  # the weights at each epoch's end, before the checkpoint saves
        def on_epoch_end(self, epoch, logs=None):
            weights.append(self.model.get_weights())

    class Keep(keras.callbacks.Callback):  # after it: a copy of the epoch's file
        def on_epoch_end(self, epoch, logs=None):
            saved.append(tmp_path / f"epoch{epoch}.keras")
            saved[-1].write_bytes((tmp_path / "last.keras").read_bytes())

    monkeypatch.setattr(hourglass_tf.callbacks, "float32_copy", counted)
    checkpoint = AtomicCheckpoint(tmp_path, "loss_metric", info=info)
    model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[Record(), checkpoint, Keep()])
    assert len(copies) == 1  # one copy for the run
    assert not np.allclose(weights[0][0], weights[-1][0])  # it trained
    for path, expected in zip(saved, weights, strict=True):
        loaded = keras.models.load_model(path)
        assert {layer.compute_dtype for layer in loaded.layers} == {"float32"}
        for a, b in zip(loaded.get_weights(), expected, strict=True):
            np.testing.assert_array_equal(a, b)


def test_inconsistent_flags_fail_before_anything_is_built(tmp_path):
    result = run_script(["--dataset=synthetic", f"--run_dir={tmp_path / 'run'}", "--input_size=100", "--batch_size=0"])
    assert result.returncode == 2
    assert "input_size=100" in result.stderr and "batch_size=0" in result.stderr and "data_dir" in result.stderr
    assert not (tmp_path / "run").exists()
    unknown = run_script(["--dataset=synthetic", "--no_such_flag=1"])
    assert unknown.returncode != 0 and "no_such_flag" in unknown.stderr


def _start_training(args, stderr_path):
    stderr = open(stderr_path, "w")  # a file, not a pipe: TF's logging must never block the child
    process = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "train.py"), *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr
    )
    stderr.close()
    return process


def _backed_up_epochs(run_dir):
    try:
        return json.loads((run_dir / "backup" / "training_metadata.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):  # not there yet, or being written
        return 0


def test_a_killed_two_replica_run_resumes_to_the_unkilled_run_s_weights(data_dir, tmp_path):
    """SIGKILL inside an epoch of a MirroredStrategy run over 2 logical CPUs in the shipped flagfiles' settings
    (--mixed_precision, fused batch norm), then the same command again: it resumes from the backup (no corrupt
    checkpoint, each epoch logged once) and ends with the weights, losses and rate drops of the same run left
    alone. The resumed stream starts where the backup's epochs ended, and the plateau rule (patience 1, so it
    drops the rate in this run) replays the logged validations. The checkpoint says what it trained in and loads
    computing in float32. (Exporting such a file to every format is the LSPET journey's and test_metadata's: the
    strategy leaves no trace in the file.)"""
    from hourglass_tf import metadata

    epochs = 6
    common = [*TINY_FLAGS, f"--data_dir={data_dir}", f"--epochs={epochs}", "--steps_per_epoch=6", "--mixed_precision"]
    common += ["--strategy=mirrored", "--cpu_replicas=2", "--plateau_patience=1", "--plateau_factor=0.5"]
    killed_dir, unkilled_dir = tmp_path / "killed", tmp_path / "unkilled"
    unkilled = _start_training([*common, f"--run_dir={unkilled_dir}"], tmp_path / "unkilled.txt")
    process = _start_training([*common, f"--run_dir={killed_dir}"], tmp_path / "killed.txt")
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if _backed_up_epochs(killed_dir) >= 3:
            break
        time.sleep(0.2)
    assert process.poll() is None, (tmp_path / "killed.txt").read_text()[-3000:]
    time.sleep(0.5)  # inside the next epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    backed_up = json.loads((killed_dir / "backup" / "training_metadata.json").read_text())["epoch"]
    assert 3 <= backed_up < epochs - 1
    for name in ("last.keras", "best.keras"):  # no checkpoint is corrupt
        keras.models.load_model(killed_dir / name)

    result = run_script([*common, f"--run_dir={killed_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert unkilled.wait(timeout=600) == 0, (tmp_path / "unkilled.txt").read_text()[-3000:]
    summary = json.loads((killed_dir / "train_summary.json").read_text())
    assert summary["resumed_at_epoch"] == backed_up and summary["epochs_run"] == epochs - backed_up
    assert summary["replicas"] == 2 and summary["global_batch"] == 8
    model, info = metadata.load_keras(killed_dir / "last.keras")
    assert info.precision == "mixed_bfloat16"  # what it trained in (this CPU path picks bfloat16)
    assert {layer.compute_dtype for layer in model.layers if hasattr(layer, "compute_dtype")} == {"float32"}
    resumed_log, unkilled_log = read_log(killed_dir), read_log(unkilled_dir)
    assert [int(r["epoch"]) for r in resumed_log] == list(range(epochs))  # each epoch logged once
    rates = [float(r["learning_rate"]) for r in unkilled_log]
    assert len(set(rates)) > 1, rates  # the plateau rule dropped the rate: its replay is tested
    for column in ("loss", "learning_rate"):
        np.testing.assert_allclose(
            [float(r[column]) for r in resumed_log],
            [float(r[column]) for r in unkilled_log],
            rtol=1e-5,
            err_msg=column,
        )
    resumed_model, unkilled_model = (keras.models.load_model(d / "last.keras") for d in (killed_dir, unkilled_dir))
    for a, b in zip(resumed_model.weights, unkilled_model.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)


WEIGHTS_SCRIPT = """
import json, sys
import numpy as np
from hourglass_tf.train import TrainConfig, train
config = TrainConfig(**json.loads(sys.argv[1]))
result = train(config)
# Trainable weights follow the all-reduced gradients; BatchNorm moving statistics are per replica
# (synchronized=False, as in the paper's single-GPU batches) and are not compared.
weights = np.concatenate([w.numpy().ravel() for w in result["model"].trainable_weights])
print("RESULT " + json.dumps({"replicas": result["summary"]["replicas"], "global_batch": result["summary"]["global_batch"],
                             "checksum": float(np.sum(weights.astype(np.float64))), "first": weights[:8].tolist()}))
"""


def _strategy_run(config, env=None):
    return subprocess.Popen(
        [sys.executable, "-c", WEIGHTS_SCRIPT, json.dumps(config)],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


def _result(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-4000:]
    line = [x for x in out.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def _strategy_config(data_dir, run_dir, strategy, **extra):
    """``tiny_config`` as the JSON a strategy subprocess takes: 1 stack, batch 2 per replica, one 3-step epoch."""
    config = tiny_config(
        data_dir,
        run_dir,
        num_stacks=1,
        batch_size=2,
        epochs=1,
        steps_per_epoch=3,
        learning_rate=2.5e-4,
        val_batch_size=16,
        image_summaries=0,
        strategy=strategy,
        **extra,
    )
    return dataclasses.asdict(config)


def test_multi_worker_strategy_two_processes_agree_on_the_trainable_weights(data_dir, tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes = []
    for index in range(2):
        config = _strategy_config(data_dir, tmp_path / "run", "multi_worker")
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(_strategy_run(config, env={"TF_CONFIG": tf_config}))
    results = [_result(p) for p in processes]
    assert [r["replicas"] for r in results] == [2, 2] and results[0]["global_batch"] == 4
    np.testing.assert_allclose(results[0]["first"], results[1]["first"], rtol=1e-6)
    assert results[0]["checksum"] == pytest.approx(results[1]["checksum"], rel=1e-6)
    # Only the chief (worker 0) writes the run directory.
    assert (tmp_path / "run" / "last.keras").exists()


@pytest.mark.parametrize("optimizer,ema", [("rmsprop", 0.0), ("adam", 0.999)])
def test_the_training_step_is_traced_once(data_dir, tmp_path, optimizer, ema):
    """A first trace that creates the optimizer's variables makes TensorFlow trace the step a second time (11 s
    of the 8-stack model's first step); ``build_compiled_model`` creates them beforehand."""
    from hourglass_tf.train import build_compiled_model

    config = tiny_config(data_dir, tmp_path / "run", num_stacks=1, optimizer=optimizer, ema_momentum=ema)
    model = build_compiled_model(config)
    assert model.optimizer.built
    traces = []
    step = model.train_step
    model.train_step = lambda data: traces.append(1) or step(data)
    rng = np.random.default_rng(0)
    x = rng.random((4, 64, 64, 3), dtype=np.float32)
    y = {"stack_1": rng.random((4, 16, 16, 16), dtype=np.float32)}
    before = [v.numpy().copy() for v in model.trainable_variables[:3]]
    model.fit(x, y, batch_size=2, epochs=2, verbose=0)
    assert len(traces) == 1
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables[:3]))


def test_the_gpu_precision_path_trains_end_to_end_on_cpu(data_dir, tmp_path, monkeypatch):
    """What --mixed_precision selects on a GPU (mixed_float16: loss scaling, fused batch norm on float16 inputs,
    float32 outputs and loss), run here on the CPU by pretending a GPU is visible to the policy choice; with Adam,
    as lspet.flags trains (its one-kernel update inside Keras' loss-scale optimizer)."""
    from hourglass_tf import train as train_module
    from hourglass_tf.metadata import read_info
    from hourglass_tf.optimizers import has_fused_updates

    monkeypatch.setattr(train_module, "mixed_precision_policy", lambda gpus=None, details=None: "mixed_float16")
    config = tiny_config(
        data_dir, tmp_path / "run", num_stacks=1, epochs=1, mixed_precision=True, image_summaries=0, optimizer="adam"
    )
    result = train(dataclasses.replace(config, fused_batch_norm=True))
    model = result["model"]
    assert model.get_layer("hg1_d2_skip_res1_conv1").compute_dtype == "float16"
    assert model.get_layer("hg1_d2_skip_res1_bn1").compute_dtype == "float16"  # the fused kernel on half inputs
    assert all(out.dtype == "float32" for out in model.outputs)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)  # dynamic loss scaling
    assert has_fused_updates(model.optimizer) and int(model.optimizer.inner_optimizer.iterations.numpy()) > 0
    assert np.isfinite(result["history"]["loss"]).all()
    assert read_info(tmp_path / "run" / "last.keras").precision == "mixed_float16"
    assert keras.mixed_precision.global_policy().name == "float32"


def _script(name, *args, timeout=900):
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
        cwd=REPO,
    )


def test_the_lspet_journey_on_shards_in_bfloat16_through_every_export(data_dir, tmp_path):
    """What lspet.flags does (TFRecords, mixed precision, fused batch norm), then evaluate, export, predict (on
    every format, and on LiteRT through predict.py's cached conversion), serve."""
    from hourglass_tf import metadata, serving

    shards = tmp_path / "shards"
    done = _script(
        "prepare_data.py", "--dataset=synthetic", f"--source={data_dir}", f"--output={shards}", "--input_size=64"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((shards / "meta.json").read_text())["region"]["input_size"] == 64
    run = tmp_path / "run"
    common = [
        f"--tfrecord_dir={shards}",
        *TINY_FLAGS[1:],
        "--num_stacks=2",
        "--epochs=2",
        "--steps_per_epoch=4",
        "--mixed_precision=true",
        "--fused_batch_norm=true",
        f"--run_dir={run}",
    ]
    done = run_script(["--dataset=synthetic", *common])
    assert done.returncode == 0, done.stderr[-3000:]
    settings = json.loads((run / "train_summary.json").read_text())["process_settings"]
    expected = {}  # what train.py sets before TensorFlow loads, where the environment does not say
    if runtime.enabled() and "TF_CPU_ALLOCATOR_USE_BFC" not in os.environ:
        expected["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    if runtime.ONEDNN_ENV not in os.environ and platform.machine().lower() in runtime.X86_MACHINES:
        expected[runtime.ONEDNN_ENV] = "1"
    for name, value in expected.items():
        assert settings.get(name) == value, settings
    info = metadata.read_info(run / "best.keras")
    assert info.precision == "mixed_bfloat16" and info.skeleton == skeleton_of("synthetic")
    assert info.provenance["dataset"] == "synthetic" and info.provenance["metric"] == "val_pckh"
    assert {layer.compute_dtype for layer in keras.models.load_model(run / "best.keras").layers} == {"float32"}
    # Shards written for rotation <= 30 and 64 px refuse settings they cannot serve, naming what to regenerate.
    refused = run_script(["--dataset=synthetic", *common, "--rotation=40", f"--run_dir={tmp_path / 'other'}"])
    assert refused.returncode == 2 and "meta.json" in refused.stderr and "rotation=40 > 30" in refused.stderr

    done = _script(
        "evaluate.py",
        f"--checkpoint={run / 'best.keras'}",
        "--dataset=synthetic",
        f"--tfrecord_dir={shards}",
        f"--output_dir={tmp_path / 'eval'}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    keras_pck = json.loads((tmp_path / "eval" / "metrics.json").read_text())["summary"]["Mean"]
    out = tmp_path / "exported"
    done = _script(
        "export.py", f"--model={run / 'best.keras'}", f"--output={out}", "--formats=keras,saved_model,tflite,onnx"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "export.json").read_text())
    assert set(report["max_heatmap_deviation"]) == {"keras", "saved_model", "tflite", "onnx"}
    assert report["trained_precision"] == "mixed_bfloat16"
    from hourglass_tf.evaluation import evaluate_model

    for model in (out / "model.keras", out, out / "model.tflite", out / "model.onnx"):  # what evaluate.py calls
        result = evaluate_model(
            model, "synthetic", tfrecord_dir=shards, output_dir=tmp_path / "eval_fmt", progress=False
        )
        assert abs(result["summary"]["Mean"] - keras_pck) < 1.0, (model, result["summary"]["Mean"], keras_pck)
    from hourglass_tf.inference import Predictor

    # What predict.py runs the checkpoint on by default: LiteRT, through a float32 conversion of its own.
    on_litert, on_tensorflow = (Predictor.from_file(run / "best.keras", runtime=r) for r in ("litert", "tensorflow"))
    assert on_litert.runner.input_dtype == np.float32 and on_litert.runner.cache_entry.is_file()
    size = on_tensorflow.input_size
    crops = np.random.default_rng(4).random((2, size, size, 3), np.float32)
    expected = on_tensorflow.predict_crops(crops)["heatmaps"]
    np.testing.assert_allclose(on_litert.predict_crops(crops)["heatmaps"], expected, atol=1e-4 * np.abs(expected).max())
    image = np.random.default_rng(3).integers(0, 256, (80, 96, 3), dtype=np.uint8)
    png = tf.io.encode_png(image).numpy()
    saved_model = out / "saved_model" / "1"
    reply = serving.parse_response(serving.serve_in_process(saved_model, serving.image_request(png, (8, 4, 60, 70))))
    assert reply["keypoints"].shape == (16, 2) and np.isfinite(reply["keypoints"]).all()
    names = serving.description(
        serving.parse_response(serving.serve_in_process(saved_model, serving.metadata_request()))
    )
    assert names["skeleton"]["joints"] == list(skeleton_of("synthetic").joints)


def test_a_reused_run_dir_with_other_settings_is_refused_and_fresh_start_discards_its_backup(data_dir, tmp_path):
    import dataclasses

    from hourglass_tf.train import RunDirError, prepare_run_dir

    run_dir = tmp_path / "run"
    (run_dir / "backup").mkdir(parents=True)
    (run_dir / "log.csv").write_text("epoch,loss\n0,0.5\n")
    first = tiny_config(data_dir, run_dir)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(first)))
    prepare_run_dir(run_dir, dataclasses.replace(first, epochs=9, verbose=2))  # same run, longer: resumes
    older = {k: v for k, v in dataclasses.asdict(first).items() if k != "sync_batch_norm"}  # an older package's
    (run_dir / "config.json").write_text(json.dumps(older))
    prepare_run_dir(run_dir, first)  # a field it did not know had its default: the same settings
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(first)))
    other = dataclasses.replace(first, num_stacks=1, dataset="lsp")
    with pytest.raises(RunDirError, match=r"other settings \(dataset: 'synthetic' -> 'lsp'; num_stacks: 2 -> 1\)"):
        prepare_run_dir(run_dir, other)
    assert (run_dir / "backup").is_dir() and (run_dir / "log.csv").is_file()  # nothing touched
    prepare_run_dir(run_dir, dataclasses.replace(other, fresh_start=True))
    assert not (run_dir / "backup").exists() and not (run_dir / "log.csv").exists()


def test_train_cli_refuses_to_resume_a_run_under_other_settings_naming_the_fields(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "backup").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({**json.loads(json.dumps(vars(TrainConfig()))), "filters": 99}))
    result = run_script([*TINY_FLAGS, f"--data_dir={data_dir}", f"--run_dir={run_dir}", "--epochs=1"])
    assert result.returncode == 2 and "filters: 99 -> 16" in result.stderr and "--fresh_start" in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads((run_dir / "config.json").read_text())["filters"] == 99  # the old run's settings stay


def test_a_validation_split_without_any_normaliser_is_an_error_naming_it(tmp_path):
    root = tmp_path / "data"
    synthetic.generate(root, num_train=8, num_valid=4, image_size=96, seed=2)
    rows = json.loads((root / "annot" / "valid.json").read_text())
    for row in rows:
        row.pop("head_size")
    (root / "annot" / "valid.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=rf"{root} \(synthetic valid split\): no person has a normaliser"):
        train(tiny_config(root, tmp_path / "run", batch_size=2))


def test_many_failures_in_a_row_stop_training_with_which_samples_and_why(data_dir, tmp_path):
    import shutil

    from hourglass_tf.data import pipeline
    from hourglass_tf.train import failures_explained

    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    shutil.rmtree(copy / "images")  # the data moved away mid-run
    guard = tf.errors.InvalidArgumentError(None, None, f"256 {pipeline.FAILURES_IN_A_ROW}")
    with pytest.raises(ValueError, match=r"training stopped: 256 training samples in a row .* finds: .*no usable"):
        with failures_explained(tiny_config(copy, tmp_path / "run")):
            raise guard
    with pytest.raises(tf.errors.InvalidArgumentError, match="something else"):  # other errors pass unchanged
        with failures_explained(tiny_config(copy, tmp_path / "run")):
            raise tf.errors.InvalidArgumentError(None, None, "something else")


def test_a_fixed_amount_of_work_is_said_in_steps_and_minutes_after_the_first_steps():
    from hourglass_tf.callbacks import WorkEstimate

    said = []
    estimate = WorkEstimate(steps_per_epoch=5, measure=3, log=said.append)
    estimate.set_params({"epochs": 4})
    estimate.on_train_begin()
    estimate.on_epoch_begin(1)  # a resumed run: epochs 2 to 4 are left
    for batch in range(5):
        estimate.on_train_batch_end(batch)
    assert len(said) == 1 and "15 training steps to run (3 epoch(s) of 5)" in said[0] and "minutes" in said[0]
    estimate.on_epoch_end(1)
    assert said[-1].startswith("epoch 2 of 4 done; about")
