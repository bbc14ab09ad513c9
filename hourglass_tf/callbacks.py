"""The training callbacks (see ``hourglass_tf.train`` for the order ``train`` puts them in)."""

import dataclasses
import json
import math
import os
import pathlib
import time
import types

import keras
import numpy as np
import tensorflow as tf

from hourglass_tf import metrics, visualize
from hourglass_tf.inference import Predictor, predict_dataset
from hourglass_tf.metadata import copy_keras, save_keras
from hourglass_tf.model import float32_copy


def _finite(logs):
    return all(math.isfinite(float(v)) for k, v in (logs or {}).items() if k.endswith("loss"))


def _learning_rate(model):
    """The current learning rate of ``model``'s optimizer, as a Python float."""
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class LearningRateDrops(keras.callbacks.Callback):
    """Multiplies the learning rate by ``factor`` when each of ``epochs`` (1-based) starts.

    A fixed schedule for runs with a fixed time budget, beside the paper's plateau rule.
    The rate lives in the optimizer state, so a resumed run (BackupAndRestore restores the
    state of the last finished epoch) applies each drop exactly once.
    """

    def __init__(self, epochs, factor, verbose=0):
        super().__init__()
        self.epochs, self.factor, self.verbose = tuple(epochs), float(factor), verbose

    def on_epoch_begin(self, epoch, logs=None):
        if epoch + 1 in self.epochs:
            new = _learning_rate(self.model) * self.factor
            self.model.optimizer.learning_rate = new
            if self.verbose:
                print(f"epoch {epoch + 1}: learning rate x {self.factor} -> {new:.3g} (lr_drop_epochs)")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and "learning_rate" not in logs:  # ReduceLROnPlateau logs it when present
            logs["learning_rate"] = _learning_rate(self.model)


class CosineDecay(keras.callbacks.Callback):
    """Sets the learning rate before every step: a cosine from ``initial`` to ``final`` over ``total_steps``.

    ``lr(t) = final + (initial - final) * (1 + cos(pi * t / total_steps)) / 2`` with t the
    optimizer's step count, which BackupAndRestore restores, so a resumed run continues the
    same curve. For a run with a fixed step budget; the paper's rule is the plateau drop.
    """

    def __init__(self, initial, final, total_steps):
        super().__init__()
        if not total_steps > 0:
            raise ValueError(f"total_steps must be positive, received total_steps={total_steps}")
        self.initial, self.final, self.total_steps = float(initial), float(final), int(total_steps)

    def rate(self, step):
        t = min(max(int(step), 0), self.total_steps) / self.total_steps
        return self.final + (self.initial - self.final) * 0.5 * (1.0 + math.cos(math.pi * t))

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        optimizer.learning_rate = self.rate(keras.ops.convert_to_numpy(optimizer.iterations))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = _learning_rate(self.model)


class TimeBudget(keras.callbacks.Callback):
    """Stops training when ``budget_seconds`` of training time are spent, and drops the rate on the way.

    Checked after every step: when the budget is spent, the current epoch ends there
    (``model.stop_training``), is validated and checkpointed as usual, and ``fit`` returns.
    When the spent time passes each of ``fractions`` of the budget, the learning rate is
    multiplied by ``factor``: the schedule of a fixed-epoch run, expressed in time, so the
    same flagfile fits the budget on a slower or faster machine.

    ``spent_seconds`` is the budget already used by an earlier process of a resumed run
    (``budget_seconds`` in the last row of ``log.csv``); its drops are already in the
    restored optimizer state and are not applied again. Each epoch logs ``budget_seconds``.
    """

    def __init__(self, budget_seconds, fractions=(), factor=0.2, spent_seconds=0.0, verbose=0):
        super().__init__()
        if not budget_seconds > 0:
            raise ValueError(f"budget_seconds must be positive, received budget_seconds={budget_seconds}")
        self.budget = float(budget_seconds)
        self.fractions = tuple(sorted(float(f) for f in fractions))
        self.factor = float(factor)
        self.spent_before = float(spent_seconds)
        self.verbose = verbose
        self.applied = sum(f * self.budget <= self.spent_before for f in self.fractions)
        self.reason = None
        self._clock = time.time

    def spent(self):
        return self.spent_before + self._clock() - self.start

    def on_train_begin(self, logs=None):
        self.start = self._clock()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._drop()

    def on_train_batch_begin(self, batch, logs=None):
        self._drop()

    def _drop(self):
        due = sum(f * self.budget <= self.spent() for f in self.fractions)
        if due > self.applied:
            new = _learning_rate(self.model) * self.factor ** (due - self.applied)
            self.model.optimizer.learning_rate = new
            if self.verbose:
                print(
                    f"\n{self.spent() / 60:.1f} of {self.budget / 60:.1f} minutes: learning rate -> {new:.3g} "
                    "(lr_drop_fractions)"
                )
            self.applied = due

    def on_train_batch_end(self, batch, logs=None):
        if self.reason is None and self.spent() >= self.budget:
            self.reason = (
                f"time budget of {self.budget / 60:g} minutes spent in epoch {self._epoch + 1}, after batch {batch + 1}"
            )
            if self.verbose:
                print(f"\nstopping: {self.reason}")
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["budget_seconds"] = self.spent()
            if "learning_rate" not in logs:
                logs["learning_rate"] = _learning_rate(self.model)


def spent_budget_seconds(log_path):
    """``budget_seconds`` of the last row of a run's ``log.csv`` (0 when absent): the budget a resumed run has used."""
    if not pathlib.Path(log_path).exists():
        return 0.0
    from hourglass_tf.evaluation import read_training_log

    spent = read_training_log(log_path).get("budget_seconds", np.array([]))
    spent = spent[np.isfinite(spent)]  # rows without it (empty or NA) read as NaN
    return float(spent[-1]) if len(spent) else 0.0


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` and ``elapsed_seconds`` (since training started, this process) to the logs."""

    def on_train_begin(self, logs=None):
        self.start = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            now = time.time()
            logs["epoch_seconds"] = now - self.epoch_start
            logs["elapsed_seconds"] = now - self.start


class WorkEstimate(keras.callbacks.Callback):
    """Says, once the first steps have run, how long the run's fixed amount of work should take on this machine,
    and after each epoch how much is left: a run that trains a fixed number of steps ends with the same model on
    any machine; only the time differs, and this says it.

    ``steps_per_epoch`` x the epochs still to run is the work; the rate is measured over ``measure`` steps
    after the first (which traces the step function).
    """

    def __init__(self, steps_per_epoch, measure=10, log=print):
        super().__init__()
        self.steps_per_epoch, self.measure, self.log = steps_per_epoch, measure, log
        self.seconds_per_step = None

    def on_train_begin(self, logs=None):
        self.first_epoch, self.batches, self.mark = None, 0, None

    def on_epoch_begin(self, epoch, logs=None):
        if self.first_epoch is None:
            self.first_epoch = epoch
        self.epoch_start = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if self.seconds_per_step is not None:
            return
        self.batches += 1
        if self.batches == 1:
            self.mark = time.time()
        elif self.batches == 1 + self.measure or batch + 1 == self.steps_per_epoch:
            self.seconds_per_step = (time.time() - self.mark) / max(1, self.batches - 1)
            epochs = self.params.get("epochs", 1) - self.first_epoch
            steps = epochs * self.steps_per_epoch
            self.log(
                f"\n{steps} training steps to run ({epochs} epoch(s) of {self.steps_per_epoch}) at "
                f"{self.seconds_per_step:.2f} s a step here: about {steps * self.seconds_per_step / 60:.1f} minutes "
                "of training, plus validation"
            )

    def on_epoch_end(self, epoch, logs=None):
        left = self.params.get("epochs", epoch + 1) - epoch - 1
        if left and self.seconds_per_step is not None:
            per_epoch = time.time() - self.epoch_start
            self.log(
                f"epoch {epoch + 1} of {self.params.get('epochs')} done; about {left * per_epoch / 60:.1f} min left"
            )


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and records why (``self.reason``)."""

    def __init__(self):
        super().__init__()
        self.reason = None

    def _check(self, logs, where):
        if self.reason is None and not _finite(logs):
            self.reason = f"non-finite loss {logs.get('loss')} {where}"
            print(f"\nstopping: {self.reason}; the last good checkpoint is kept")
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f"at epoch {self._epoch + 1}, batch {batch + 1}")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, f"at the end of epoch {epoch + 1}")


class AverageWeightsIn(keras.callbacks.Callback):
    """Puts the optimizer's moving average of the weights into the model at the end of each epoch.

    With ``--ema_momentum`` the optimizer (Keras ``use_ema``) keeps, after step k,
    ``average = momentum * average + (1 - momentum) * weights`` (the weights themselves after
    the first step). Placed before validation and the checkpoints, this makes both use the
    average; ``AverageWeightsOut``, placed after them and before the resume backup, puts the
    trained weights back, so training continues from them and the backup holds them. When
    ``fit`` ends, Keras leaves the average in the model.
    """

    def __init__(self):
        super().__init__()
        self.trained = None

    def on_epoch_end(self, epoch, logs=None):
        variables = self.model.trainable_variables
        self.trained = [keras.ops.convert_to_numpy(v) for v in variables]
        self.model.optimizer.finalize_variable_values(variables)


class AverageWeightsOut(keras.callbacks.Callback):
    """Restores the trained weights that ``AverageWeightsIn`` replaced by their average."""

    def __init__(self, swap_in):
        super().__init__()
        self.swap_in = swap_in

    def on_epoch_end(self, epoch, logs=None):
        if self.swap_in.trained is not None:
            for variable, value in zip(self.model.trainable_variables, self.swap_in.trained):
                variable.assign(value)
            self.swap_in.trained = None


class PCKValidation(keras.callbacks.Callback):
    """Validation PCK(h) with the evaluation code, written into the epoch logs.

    ``runner``: the fitted model's ``backends.KerasRunner`` when another callback predicts with it too (its
    inference graph is then traced once, not once per callback); default: one of its own.
    """

    def __init__(
        self,
        dataset,
        skeleton,
        metric_name,
        threshold,
        freq=1,
        flip_test=False,
        guard=None,
        total=None,
        source=None,
        runner=None,
    ):
        super().__init__()
        self.runner = runner
        self.total, self.source = total, source  # every one of ``total`` samples counts (predict_dataset)
        self.dataset = dataset
        self.skeleton = skeleton
        self.metric_name = metric_name
        self.threshold = threshold
        self.freq = freq
        self.flip_test = flip_test
        self.guard = guard
        self.last_result = None
        self._predictor = None

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or (self.guard is not None and self.guard.reason):
            return
        if (epoch + 1) % self.freq and self.last_result is not None:
            return  # not a validation epoch: no metric is logged, so the plateau rule does not count it
        if self._predictor is None:
            self._predictor = Predictor(self.runner or self.model, skeleton=self.skeleton, flip_test=self.flip_test)
        pred = predict_dataset(self._predictor, self.dataset, progress=False, total=self.total, source=self.source)
        self.last_result = metrics.evaluate(
            pred["keypoints"],
            pred["joints"],
            pred["present"],
            pred["normalizer"],
            self.skeleton,
            threshold=self.threshold,
        )
        logs[self.metric_name] = self.last_result["summary"]["Mean"]
        logs["learning_rate"] = _learning_rate(self.model)


class FailedSamples(keras.callbacks.Callback):
    """Counts and reports, at the end of each epoch, the training samples the pipeline dropped because they failed.

    Logged as ``failed_samples`` (this epoch's count; ``log.csv`` keeps it) and printed when not 0.
    """

    def __init__(self, failures, diagnose=None):
        super().__init__()
        self.failures = failures
        self.diagnose = diagnose  # () -> str: which samples fail now and why (a new check of the split)

    def on_epoch_end(self, epoch, logs=None):
        new = self.failures.since_last()
        if logs is not None:
            logs["failed_samples"] = new
        if new:
            found = f"; a new check of the training split finds: {self.diagnose()}" if self.diagnose else ""
            print(
                f"\nepoch {epoch + 1}: {new} training sample(s) failed to decode or transform and were skipped "
                f"({self.failures.total()} in this run){found}"
            )


class ValidatedPlateau(keras.callbacks.ReduceLROnPlateau):
    """Keras' ``ReduceLROnPlateau`` that counts only the epochs that were validated, and that a resumed run
    continues where it stopped.

    With ``validation_freq`` > 1 the other epochs log no metric; the stock callback would warn
    on each of them. Here they neither wait nor warn, so ``patience`` counts validations.

    ``history``: the (metric, learning rate) of each validated epoch a resumed run has behind it
    (``plateau_history`` of its log). The stock callback starts counting afresh in every ``fit``, so after a
    kill it would wait ``patience`` validations again and forget the best value; here those epochs are
    replayed through the stock rule first, on a stand-in optimizer at each epoch's logged rate (the model's
    own rate is already restored with the optimizer state), so the counters are the unkilled run's.
    """

    def __init__(self, *args, history=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.history = [(float(value), float(rate)) for value, rate in history]

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if not self.history:
            return
        model, verbose = self.model, self.verbose
        self.verbose = 0
        try:
            for epoch, (value, rate) in enumerate(self.history):
                self.set_model(types.SimpleNamespace(optimizer=types.SimpleNamespace(learning_rate=rate)))
                super().on_epoch_end(epoch, {self.monitor: value})
        finally:
            self.set_model(model)
            self.verbose = verbose

    def on_epoch_end(self, epoch, logs=None):
        if (logs or {}).get(self.monitor) is not None:
            super().on_epoch_end(epoch, logs)


def plateau_history(log_path, monitor):
    """The (``monitor`` value, learning rate) of each validated epoch in a run's ``log.csv``; [] without a log.

    What ``ValidatedPlateau`` replays when a run resumes (after ``trim_log``, so only the epochs the backup
    holds).
    """
    if not pathlib.Path(log_path).exists():
        return []
    from hourglass_tf.evaluation import read_training_log

    columns = read_training_log(log_path)
    if monitor not in columns or "learning_rate" not in columns:
        return []
    values, rates = columns[monitor], columns["learning_rate"]
    return [(v, r) for v, r in zip(values, rates) if np.isfinite(v) and np.isfinite(r)]


class AtomicCheckpoint(keras.callbacks.Callback):
    """``last.keras`` every epoch and ``best.keras`` when ``monitor`` improves (max), written atomically.

    Each file computes in float32 (``model.float32_copy``: a mixed-precision run's weights in a
    float32 model) and carries ``info`` (``metadata.ModelInfo``) with the epoch and metric added
    to its provenance.
    """

    def __init__(self, run_dir, monitor, guard=None, enabled=True, info=None):
        super().__init__()
        self.info = info
        self.run_dir = pathlib.Path(run_dir)
        self.monitor = monitor
        self.guard = guard
        self.enabled = enabled
        self.best = -math.inf
        state = self.run_dir / "best.json"
        if state.exists():
            self.best = json.loads(state.read_text())["value"]
        self._float32 = None  # (the model it copies, the float32 copy)

    def _float32_model(self):
        """``float32_copy(self.model)``, built at the first save and given the current weights at each later one: a
        mixed-precision model is rebuilt once a run, not once an epoch (lspet.flags' model: 1.5 -> 0.5-0.7 s an
        epoch's checkpoint; the paper's 8 stacks: 5.7-5.9 -> 2.2-2.3 s), for one float32 copy of the weights held
        through the run (about 7 MB and 100 MB)."""
        if self._float32 is None or self._float32[0] is not self.model:
            self._float32 = (self.model, float32_copy(self.model))
        elif self._float32[1] is not self.model:
            self._float32[1].set_weights(self.model.get_weights())
        return self._float32[1]

    def _save(self, name, epoch, value):
        final = self.run_dir / name
        if self.info is None:
            tmp = self.run_dir / f".{name}.tmp.keras"
            self.model.save(tmp)
            os.replace(tmp, final)
            return
        provenance = {**self.info.provenance, "epoch": epoch + 1, "value": value}
        save_keras(self._float32_model(), final, dataclasses.replace(self.info, provenance=provenance))

    def on_epoch_end(self, epoch, logs=None):
        if not self.enabled or (self.guard is not None and self.guard.reason) or not _finite(logs):
            return
        value = (logs or {}).get(self.monitor)
        value = None if value is None else float(value)
        self._save("last.keras", epoch, value)
        if value is not None and value > self.best:
            self.best = value
            copy_keras(self.run_dir / "last.keras", self.run_dir / "best.keras")  # the same model: not saved twice
            (self.run_dir / "best.json").write_text(
                json.dumps({"epoch": epoch + 1, "value": self.best, "metric": self.monitor})
            )


BACKUP_WEIGHTS = "latest.weights.h5"  # the names keras.callbacks.BackupAndRestore uses (".bkp": the previous one)
BACKUP_METADATA = "training_metadata.json"


def _backup_problem(weights, metadata):
    """None when a backup pair reads back (every weight array, an integer epoch); else what is wrong."""
    import h5py

    try:
        with h5py.File(weights, "r") as f:
            f.visititems(lambda name, item: item[()] if isinstance(item, h5py.Dataset) else None)
        epoch = json.loads(pathlib.Path(metadata).read_text())["epoch"]
        if not isinstance(epoch, int) or epoch < 0:
            return f"{metadata} holds epoch {epoch!r}"
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{type(err).__name__}: {err}"[:300]


def check_backup(backup_dir, log=print):
    """Before a run resumes: use the backup only when it reads back; never crash on a damaged one.

    The latest backup (weights and epoch) is used when every part of it reads; otherwise the previous one that
    ``BackupAndRestore(double_checkpoint=True)`` keeps (``*.bkp``) is put back in its place; when neither reads,
    the folder is moved aside (``backup.unreadable-TIME``, nothing deleted) and the run starts fresh. Each
    case is said through ``log``.

    Returns:
      "none" (no backup), "latest", "previous" or "fresh".
    """
    folder = pathlib.Path(backup_dir)
    weights, meta = folder / BACKUP_WEIGHTS, folder / BACKUP_METADATA
    if not weights.exists() and not meta.exists():
        return "none"
    latest = _backup_problem(weights, meta)
    if latest is None:
        return "latest"
    previous = _backup_problem(f"{weights}.bkp", f"{meta}.bkp")
    if previous is None:
        for path in (weights, meta):
            os.replace(f"{path}.bkp", path)
        log(f"the latest backup in {folder} does not read ({latest}); resuming from the previous one")
        return "previous"
    aside = folder.with_name(f"{folder.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(folder, aside)
    log(f"the backup in {folder} does not read ({latest}; previous: {previous}); moved to {aside}; starting fresh")
    return "fresh"


def backup_epochs(backup_dir):
    """Epochs the backup in ``backup_dir`` holds (0 when there is none); read after ``check_backup``."""
    meta = pathlib.Path(backup_dir) / BACKUP_METADATA
    return json.loads(meta.read_text())["epoch"] if meta.exists() else 0


def trim_log(log_path, epochs, log=print):
    """Keeps the ``log.csv`` rows of the first ``epochs`` epochs, those the backup holds.

    Each epoch's row is written before its backup, so a kill between the two leaves a row for an epoch the
    resumed run trains again; removing it here keeps every epoch logged exactly once. Returns the rows removed
    (said through ``log``).
    """
    path = pathlib.Path(log_path)
    if not path.exists():
        return 0
    header, *rows = path.read_text().splitlines(keepends=True) or [""]
    rows = [row for row in rows if row.strip()]
    keep = [row for row in rows if int(row.split(",", 1)[0]) < epochs]  # CSVLogger's first column: the epoch
    if len(keep) == len(rows):
        return 0
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(header + "".join(keep))
    os.replace(tmp, path)
    log(f"{path}: removed {len(rows) - len(keep)} row(s) of epochs the backup does not hold; they run again")
    return len(rows) - len(keep)


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that never backs up a non-finite state."""

    def __init__(self, backup_dir, guard=None):
        super().__init__(backup_dir, save_freq="epoch", double_checkpoint=True, delete_checkpoint=False)
        self.guard = guard
        self.resumed_epoch = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.resumed_epoch = getattr(self.model, "_initial_epoch", None)

    def on_epoch_end(self, epoch, logs=None):
        if (self.guard is not None and self.guard.reason) or not _finite(logs):
            return
        super().on_epoch_end(epoch, logs)


class ImageSummaries(keras.callbacks.Callback):
    """TensorBoard images of fixed validation samples: predicted skeleton and heatmaps (``runner`` as
    ``PCKValidation``'s)."""

    def __init__(self, log_dir, crops, skeleton, freq=1, guard=None, runner=None):
        super().__init__()
        self.runner = runner
        self.guard = guard
        self.writer = tf.summary.create_file_writer(str(pathlib.Path(log_dir) / "images"))
        self.crops = crops
        self.skeleton = skeleton
        self.freq = freq
        self._predictor = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.freq or (self.guard is not None and self.guard.reason):
            return
        if self._predictor is None:
            self._predictor = Predictor(self.runner or self.model, skeleton=self.skeleton, flip_test=False)
        result = self._predictor.predict_crops(self.crops)
        tiles = []
        for crop, keypoints, scores, heatmaps in zip(
            self.crops, result["keypoints"], result["scores"], result["heatmaps"]
        ):
            image = (255 * crop).astype(np.uint8)
            tiles.append(
                visualize.draw_skeleton(
                    visualize.heatmap_overlay(image, heatmaps), keypoints, scores > 0.1, self.skeleton
                )
            )
        with self.writer.as_default():
            tf.summary.image("validation/predictions", np.stack(tiles), step=epoch, max_outputs=len(tiles))
        self.writer.flush()
