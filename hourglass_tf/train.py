"""Training: the paper's recipe with ``model.fit``, distribution strategies and fault tolerance.

``train(config)`` builds the data pipelines, the model (under the distribution
strategy), one MSE loss per ``stack_i`` output (equal weights, same target:
intermediate supervision), RMSprop, and these callbacks, in this order:

1. ``NaNGuard``: stops at the first non-finite loss and says why; nothing is saved
   for that epoch, so the last good checkpoint stays.
   With ``ema_momentum`` > 0, ``AverageWeightsIn`` then puts the optimizer's moving
   average of the weights into the model for validation, checkpoints and pictures, and
   ``AverageWeightsOut`` (after them, before the backup) restores the trained weights.
2. ``PCKValidation``: every ``validation_freq`` epochs, PCKh@0.5 (MPII layout) or
   PCK@0.2 (LSP/FLIC/COCO) on the validation split with the evaluation code, logged
   as ``val_pckh`` / ``val_pck``; the schedule and the best checkpoint follow it.
3. ``ReduceLROnPlateau`` on that metric (lr x ``plateau_factor``; the paper divides by 5),
   and ``LearningRateDrops`` (the same factor at fixed epochs, ``lr_drop_epochs``, for
   runs with a fixed time budget; off by default), or ``TimeBudget`` (``time_budget_minutes``):
   training stops when the budget is spent, and the rate drops at ``lr_drop_fractions`` of it.
4. ``AtomicCheckpoint``: ``best.keras`` and ``last.keras``, written to a temporary file
   and renamed, so a kill never leaves a corrupt checkpoint; then ``ImageSummaries``
   (skeletons and heatmaps of a few fixed validation samples, to TensorBoard).
5. ``SafeBackupAndRestore``: Keras' ``BackupAndRestore`` (weights, optimizer state,
   epoch) that never backs up a non-finite state; a killed run started again with the
   same run directory resumes at the epoch it was in.
6. ``EpochTimer``, ``CSVLogger`` (``log.csv``) and ``TensorBoard`` (losses, learning rate, metric).
"""

import dataclasses
import json
import math
import os
import pathlib
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from hourglass_tf import batchnorm, metrics, visualize
from hourglass_tf.data import pipeline, readers, sources
from hourglass_tf.inference import Predictor, predict_dataset
from hourglass_tf.model import build_model, output_names

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
OPTIMIZERS = ("rmsprop", "adam")
LR_SCHEDULES = ("plateau", "cosine")


@dataclasses.dataclass
class TrainConfig:
    """Every choice of a training run. Defaults are the paper's recipe (MPII, 8 stacks)."""

    dataset: str = "mpii"
    data_dir: str = None
    tfrecord_dir: str = None
    num_stacks: int = 8
    num_blocks: int = 1
    filters: int = 256
    depth: int = 4
    input_size: int = 256
    sigma: float = 1.0
    batch_size: int = 6  # per replica
    epochs: int = 100
    steps_per_epoch: int = 0  # 0: one pass over the training split
    optimizer: str = "rmsprop"
    learning_rate: float = 2.5e-4
    plateau_factor: float = 0.2
    plateau_patience: int = 5
    lr_drop_epochs: str = ""  # e.g. "6,8": also multiply lr by plateau_factor when these (1-based) epochs start
    time_budget_minutes: float = 0.0  # > 0: stop training when this much training time is spent (0: epochs decide)
    lr_drop_fractions: str = ""  # e.g. "0.8,0.9": lr x plateau_factor when these fractions of the time budget pass
    lr_schedule: str = "plateau"  # "cosine": decay per step from learning_rate to min_learning_rate over the run
    min_learning_rate: float = 1e-7
    ema_momentum: float = 0.0  # > 0: validate, checkpoint and return the moving average of the weights
    rotation: float = 30.0
    rotation_prob: float = 1.0
    scale_min: float = 0.75
    scale_max: float = 1.25
    flip: bool = True
    color: float = 0.2
    drop_side_conflicts: bool = False  # skip training people whose shoulders and hips face opposite ways
    strategy: str = "auto"
    cpu_replicas: int = 0  # >1: split the CPU into this many logical devices (testing MirroredStrategy)
    mixed_precision: bool = False
    jit_compile: bool = False
    fused_batch_norm: bool = True  # train batch norm with TF's fused kernel (same layers, same saved model)
    run_dir: str = "runs/train"
    seed: int = 0
    validation_freq: int = 1
    val_batch_size: int = 16
    max_val_samples: int = 0  # 0: the whole validation split
    val_flip_test: bool = False
    image_summaries: int = 4
    verbose: int = 1

    @property
    def metric_name(self):
        return "val_pckh" if self.metric_threshold == 0.5 else "val_pck"

    @property
    def metric_threshold(self):
        return metrics.pck_threshold(self.dataset)

    def validate(self):
        """Raises ValueError naming every inconsistent choice, before anything is built."""
        problems = []
        if self.dataset not in readers.DATASETS:
            problems.append(f"dataset={self.dataset!r} is not one of {readers.DATASETS}")
        if (self.data_dir is None) == (self.tfrecord_dir is None):
            problems.append(f"give exactly one of data_dir and tfrecord_dir (data_dir={self.data_dir!r}, "
                            f"tfrecord_dir={self.tfrecord_dir!r})")  # fmt: skip
        if self.drop_side_conflicts and self.tfrecord_dir is not None:
            problems.append("drop_side_conflicts needs data_dir (raw annotations); TFRecord shards are read as written")
        for name in ("num_stacks", "num_blocks", "filters", "depth", "input_size", "batch_size", "epochs",
                     "validation_freq", "val_batch_size"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{name} must be a positive integer, received {name}={value!r}")
        for name in ("steps_per_epoch", "max_val_samples", "image_summaries", "cpu_replicas"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                problems.append(f"{name} must be a non-negative integer, received {name}={value!r}")
        if isinstance(self.input_size, int) and isinstance(self.depth, int) and self.depth > 0:
            if self.input_size % (4 * 2**self.depth):
                problems.append(f"input_size={self.input_size} must be divisible by 4 * 2**depth = {4 * 2**self.depth}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer={self.optimizer!r} is not one of {OPTIMIZERS}")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be positive, received learning_rate={self.learning_rate}")
        if not 0 < self.plateau_factor < 1:
            problems.append(f"plateau_factor must be in (0, 1), received plateau_factor={self.plateau_factor}")
        try:
            self.drop_epochs()
        except ValueError as err:
            problems.append(str(err))
        budget = self.time_budget_minutes
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget < 0:
            problems.append(f"time_budget_minutes must be a non-negative number, received time_budget_minutes={budget!r}")
        try:
            fractions = self.drop_fractions()
        except ValueError as err:
            problems.append(str(err))
            fractions = ()
        if fractions and not (isinstance(budget, (int, float)) and budget > 0):
            problems.append(f"lr_drop_fractions={self.lr_drop_fractions!r} needs time_budget_minutes > 0, "
                            f"received time_budget_minutes={budget!r}")  # fmt: skip
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule={self.lr_schedule!r} is not one of {LR_SCHEDULES}")
        elif self.lr_schedule == "cosine":
            for name in ("lr_drop_epochs", "lr_drop_fractions"):
                if (getattr(self, name) or "").strip():
                    problems.append(f"{name}={getattr(self, name)!r} applies to lr_schedule='plateau' only; "
                                    "lr_schedule='cosine' sets the rate of every step")  # fmt: skip
        if not 0 < self.min_learning_rate < self.learning_rate:
            problems.append(f"min_learning_rate must be in (0, learning_rate={self.learning_rate}), "
                            f"received min_learning_rate={self.min_learning_rate}")  # fmt: skip
        ema = self.ema_momentum
        if isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0 <= ema < 1:
            problems.append(f"ema_momentum must be in [0, 1) (0: off), received ema_momentum={ema!r}")
        if self.strategy not in STRATEGIES:
            problems.append(f"strategy={self.strategy!r} is not one of {STRATEGIES}")
        if self.cpu_replicas > 1 and self.strategy not in ("mirrored", "auto"):
            problems.append(f"cpu_replicas={self.cpu_replicas} needs strategy=mirrored, received strategy={self.strategy!r}")
        try:
            self.augmentation()
        except ValueError as err:
            problems.append(str(err))
        if problems:
            raise ValueError("invalid training configuration:\n  " + "\n  ".join(problems))

    def drop_epochs(self):
        """``lr_drop_epochs`` as a sorted tuple of 1-based epoch numbers; ValueError when malformed."""
        return _sorted_list(self.lr_drop_epochs, int, lambda e: e >= 1,
                            f"lr_drop_epochs must be comma-separated epoch numbers >= 1, received {self.lr_drop_epochs!r}")  # fmt: skip

    def drop_fractions(self):
        """``lr_drop_fractions`` as a sorted tuple of fractions in (0, 1); ValueError when malformed."""
        return _sorted_list(self.lr_drop_fractions, float, lambda f: 0 < f < 1,
                            "lr_drop_fractions must be comma-separated fractions of the time budget in (0, 1), "
                            f"received {self.lr_drop_fractions!r}")  # fmt: skip

    def augmentation(self):
        return pipeline.Augmentation(self.rotation, self.scale_min, self.scale_max, self.flip, self.color, self.rotation_prob)


def _sorted_list(text, convert, valid, message):
    """A comma-separated flag value as a sorted tuple (empty for ""); ValueError(message) when malformed."""
    text = (text or "").strip()
    if not text:
        return ()
    try:
        values = tuple(sorted(convert(part) for part in text.split(",")))
    except ValueError:
        values = ()
    if not values or not all(valid(v) for v in values):
        raise ValueError(message)
    return values


# ---------------------------------------------------------------- strategies


def make_strategy(name, cpu_replicas=0):
    """The ``tf.distribute`` strategy called ``name`` (see ``STRATEGIES``).

    ``auto`` is MirroredStrategy when more than one GPU is visible, else the default
    strategy. ``cpu_replicas > 1`` splits the CPU into that many logical devices and
    mirrors over them (to test data parallelism without GPUs).
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, received strategy={name!r}")
    gpus = tf.config.list_physical_devices("GPU")
    if cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_replicas)])
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy=multi_worker needs the TF_CONFIG environment variable (see the README)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """True on the worker that writes checkpoints and logs (always, outside multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster or resolver.task_type in ("chief", None):
        return True
    # Without a "chief" task, TensorFlow's convention makes worker 0 the chief.
    return "chief" not in cluster and resolver.task_type == "worker" and resolver.task_id == 0


# ---------------------------------------------------------------- callbacks


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
                print(f"\n{self.spent() / 60:.1f} of {self.budget / 60:.1f} minutes: learning rate -> {new:.3g} "
                      "(lr_drop_fractions)")  # fmt: skip
            self.applied = due

    def on_train_batch_end(self, batch, logs=None):
        if self.reason is None and self.spent() >= self.budget:
            self.reason = (f"time budget of {self.budget / 60:g} minutes spent in epoch {self._epoch + 1}, "
                           f"after batch {batch + 1}")  # fmt: skip
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


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and records why (``self.reason``)."""

    def __init__(self):
        super().__init__()
        self.reason = None

    def on_train_batch_end(self, batch, logs=None):
        if self.reason is None and not _finite(logs):
            self.reason = f"non-finite loss {logs.get('loss')} at epoch {self._epoch + 1}, batch {batch + 1}"
            print(f"\nstopping: {self.reason}; the last good checkpoint is kept")
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.reason is None and not _finite(logs):
            self.reason = f"non-finite loss {logs.get('loss')} at the end of epoch {epoch + 1}"
            print(f"\nstopping: {self.reason}; the last good checkpoint is kept")
            self.model.stop_training = True


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
    """Validation PCK(h) with the evaluation code, written into the epoch logs."""

    def __init__(self, dataset, skeleton, metric_name, threshold, freq=1, flip_test=False, guard=None):
        super().__init__()
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
            logs[self.metric_name] = self.last_result["summary"]["Mean"]
            return
        if self._predictor is None:
            self._predictor = Predictor(self.model, self.skeleton, flip_test=self.flip_test)
        pred = predict_dataset(self._predictor, self.dataset, progress=False)
        self.last_result = metrics.evaluate(pred["keypoints"], pred["joints"], pred["present"], pred["normalizer"],
                                            self.skeleton, threshold=self.threshold)  # fmt: skip
        logs[self.metric_name] = self.last_result["summary"]["Mean"]
        logs["learning_rate"] = _learning_rate(self.model)


class AtomicCheckpoint(keras.callbacks.Callback):
    """``last.keras`` every epoch and ``best.keras`` when ``monitor`` improves (max), written atomically."""

    def __init__(self, run_dir, monitor, guard=None, enabled=True):
        super().__init__()
        self.run_dir = pathlib.Path(run_dir)
        self.monitor = monitor
        self.guard = guard
        self.enabled = enabled
        self.best = -math.inf
        state = self.run_dir / "best.json"
        if state.exists():
            self.best = json.loads(state.read_text())["value"]

    def _save(self, name):
        final = self.run_dir / name
        tmp = self.run_dir / f".{name}.tmp.keras"
        self.model.save(tmp)
        os.replace(tmp, final)

    def on_epoch_end(self, epoch, logs=None):
        if not self.enabled or (self.guard is not None and self.guard.reason) or not _finite(logs):
            return
        self._save("last.keras")
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best = float(value)
            self._save("best.keras")
            (self.run_dir / "best.json").write_text(json.dumps({"epoch": epoch + 1, "value": self.best,
                                                                "metric": self.monitor}))  # fmt: skip


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
    """TensorBoard images of fixed validation samples: predicted skeleton and heatmaps."""

    def __init__(self, log_dir, crops, skeleton, freq=1, guard=None):
        super().__init__()
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
            self._predictor = Predictor(self.model, self.skeleton, flip_test=False)
        result = self._predictor.predict_crops(self.crops)
        tiles = []
        for crop, keypoints, scores, heatmaps in zip(self.crops, result["keypoints"], result["scores"], result["heatmaps"]):
            image = (255 * crop).astype(np.uint8)
            tiles.append(visualize.draw_skeleton(visualize.heatmap_overlay(image, heatmaps), keypoints, scores > 0.1,
                                                 self.skeleton))  # fmt: skip
        with self.writer.as_default():
            tf.summary.image("validation/predictions", np.stack(tiles), step=epoch, max_outputs=len(tiles))
        self.writer.flush()


# ---------------------------------------------------------------- the run


def _patch_multi_worker_fit(model, strategy):
    """Works around two Keras 3 bugs in ``fit`` under MultiWorkerMirroredStrategy.

    See keras-team/keras#20585 and tensorflow/tensorflow#72388. Applied only under that
    strategy; the multi-worker test fails if a Keras upgrade changes these internals.

    1. Before the first step Keras builds metrics and optimizer variables from one batch,
       which it gets with an eager ``strategy.reduce("MEAN", per_replica_batch)``. The
       collective strategy cannot do that eagerly ("Attempt to convert a value
       (PerReplica...)"). The batch only provides shapes, so the model's build takes the
       local replica's batch instead.
    2. Each step reduces its scalar metrics with ``strategy.reduce("MEAN", v, axis=0)``, which
       fails on 0-d values ("Invalid reduction dimension 0 for input with 0 dimensions").
       Scalars are reduced with ``axis=None``: the same mean over replicas as on one machine.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or not hasattr(model, "_symbolic_build"):
        return
    from keras.src.backend.tensorflow import trainer as tf_trainer

    def local_value(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(local_value, next(it))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build
    original = getattr(tf_trainer.reduce_per_replica, "__wrapped__", tf_trainer.reduce_per_replica)

    def reduce_per_replica(values, distribution, reduction):
        if reduction in ("auto", "mean") and isinstance(distribution, tf.distribute.MultiWorkerMirroredStrategy):

            def reduce_one(value):
                rank = local_value(value).shape.rank
                return distribution.reduce("MEAN", value, axis=0 if rank else None)

            return tf.nest.map_structure(reduce_one, values)
        return original(values, distribution, reduction)

    reduce_per_replica.__wrapped__ = original
    tf_trainer.reduce_per_replica = reduce_per_replica


def _dataset_options(dataset):
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def build_compiled_model(config):
    """The model for ``config``, compiled with its optimizer and one MSE loss per stack (call under the strategy scope).

    With ``config.fused_batch_norm`` its batch-norm layers train with TensorFlow's fused kernel
    (``hourglass_tf.batchnorm``); they stay stock layers, so checkpoints are unchanged.
    """
    model = build_model(num_stacks=config.num_stacks, num_blocks=config.num_blocks, filters=config.filters,
                        depth=config.depth, num_joints=readers.skeleton_of(config.dataset).num_joints,
                        input_size=config.input_size)  # fmt: skip
    if config.fused_batch_norm:
        batchnorm.use_fused_batch_norm(model)
    ema = dict(use_ema=config.ema_momentum > 0, ema_momentum=config.ema_momentum)
    if config.optimizer == "rmsprop":
        optimizer = keras.optimizers.RMSprop(config.learning_rate, **ema)
    else:
        optimizer = keras.optimizers.Adam(config.learning_rate, **ema)
    model.compile(optimizer=optimizer, loss={name: "mse" for name in output_names(model)},
                  jit_compile=config.jit_compile)  # fmt: skip
    return model


def mixed_precision_policy():
    """The Keras mixed-precision policy for this machine: float16 on GPU, bfloat16 on CPU/TPU."""
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def train(config):
    """Runs training as ``config`` says.

    Returns:
      dict: ``summary`` (also written as ``train_summary.json``), ``model`` (the trained
      Keras model), ``history`` (per-epoch logs).

    The run directory receives ``config.json`` (resolved settings), ``best.keras``,
    ``last.keras``, ``best.json``, ``log.csv`` (per epoch: losses, metric, learning rate,
    ``epoch_seconds``, ``elapsed_seconds``), ``training_curve.png``, ``backup/`` (resume
    state), ``logs/`` (TensorBoard) and ``train_summary.json``.
    """
    config.validate()
    previous_policy = keras.mixed_precision.global_policy()
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy(mixed_precision_policy())
    try:
        return _train(config)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _train(config):
    run_dir = pathlib.Path(config.run_dir)
    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy, config.cpu_replicas)
    chief = is_chief(strategy)
    write_dir = run_dir if chief else pathlib.Path(tempfile.mkdtemp(prefix="hourglass_worker_"))
    write_dir.mkdir(parents=True, exist_ok=True)
    if chief:
        (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    train_source, skeleton, train_report, num_train = sources.load_source(
        config.dataset, "train", config.data_dir, config.tfrecord_dir,
        drop_side_conflicts=config.drop_side_conflicts)  # fmt: skip
    val_source, _, val_report, num_val = sources.load_source(config.dataset, "valid", config.data_dir, config.tfrecord_dir)
    if num_train < global_batch:
        raise ValueError(f"the training split has {num_train} usable samples, fewer than one global batch ({global_batch})")
    if num_val == 0:
        raise ValueError("the validation split has no usable sample")
    if config.max_val_samples:
        val_source = val_source.take(config.max_val_samples)
        num_val = min(num_val, config.max_val_samples)
    train_data = pipeline.make_dataset(train_source.repeat(), skeleton, config.num_stacks, global_batch,
                                       input_size=config.input_size, sigma=config.sigma,
                                       augmentation=config.augmentation(), seed=config.seed)  # fmt: skip
    train_data = _dataset_options(train_data)
    steps = config.steps_per_epoch or max(1, num_train // global_batch)
    val_data = pipeline.make_dataset(val_source, skeleton, config.num_stacks, config.val_batch_size,
                                     input_size=config.input_size, sigma=config.sigma, training=False,
                                     with_meta=True)  # fmt: skip

    with strategy.scope():
        model = build_compiled_model(config)
    _patch_multi_worker_fit(model, strategy)

    guard = NaNGuard()
    validation = PCKValidation(val_data, skeleton, config.metric_name, config.metric_threshold,
                               config.validation_freq, config.val_flip_test, guard)  # fmt: skip
    backup = SafeBackupAndRestore(str(write_dir / "backup"), guard)
    if config.lr_schedule == "cosine":
        schedule = [CosineDecay(config.learning_rate, config.min_learning_rate, config.epochs * steps)]
    else:
        schedule = [
            keras.callbacks.ReduceLROnPlateau(monitor=config.metric_name, mode="max", factor=config.plateau_factor,
                                              patience=config.plateau_patience, min_lr=config.min_learning_rate,
                                              verbose=config.verbose),  # fmt: skip
            LearningRateDrops(config.drop_epochs(), config.plateau_factor, config.verbose),
        ]
    budget = None
    if config.time_budget_minutes:
        budget = TimeBudget(60.0 * config.time_budget_minutes, config.drop_fractions(), config.plateau_factor,
                            spent_budget_seconds(write_dir / "log.csv"), config.verbose)  # fmt: skip
        schedule.insert(0, budget)
    pictures = []
    if config.image_summaries:
        crops = np.concatenate([c.numpy() for c, _, _ in val_data.take(1)])[: config.image_summaries]
        pictures.append(ImageSummaries(write_dir / "logs", crops, skeleton, config.validation_freq, guard))
    average_in = [AverageWeightsIn()] if config.ema_momentum else []
    callbacks = [
        guard,
        *average_in,
        validation,
        *schedule,
        AtomicCheckpoint(write_dir, config.metric_name, guard),
        *pictures,
        *[AverageWeightsOut(a) for a in average_in],
        backup,
        EpochTimer(),
        keras.callbacks.CSVLogger(str(write_dir / "log.csv"), append=True),
        keras.callbacks.TensorBoard(str(write_dir / "logs"), write_graph=False),
    ]

    print(f"training {config.num_stacks}-stack hourglass on {config.dataset}: {num_train} train / {num_val} validation "
          f"samples, {replicas} replica(s), global batch {global_batch}, {steps} steps per epoch")  # fmt: skip
    for name, report in (("train", train_report), ("valid", val_report)):
        if report.total_skipped:
            print(f"{name} split: {report.summary()}")
    start = time.time()
    history = model.fit(train_data, epochs=config.epochs, steps_per_epoch=steps, callbacks=callbacks,
                        verbose=config.verbose)  # fmt: skip
    seconds = time.time() - start
    summary = {
        "epochs_run": len(history.epoch),
        "resumed_at_epoch": backup.resumed_epoch or 0,
        "stopped_because": guard.reason or (budget.reason if budget is not None else None),
        config.metric_name: validation.last_result["summary"]["Mean"] if validation.last_result else None,
        "validation": validation.last_result["summary"] if validation.last_result else None,
        "train_seconds": seconds,
        "replicas": replicas,
        "global_batch": global_batch,
        "skipped": {"train": train_report.as_dict(), "valid": val_report.as_dict()},
        "run_dir": str(run_dir),
    }
    if chief:
        (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str))
        if history.epoch:
            from hourglass_tf.evaluation import plot_training_log

            try:
                plot_training_log(run_dir / "log.csv", run_dir / "training_curve.png",
                                  f"{config.dataset}, {config.num_stacks} stacks")  # fmt: skip
            except ValueError as err:  # a picture must never fail a finished run
                print(f"training curve not drawn: {err}")
    return {"summary": summary, "model": model, "history": history.history}
