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
5. ``FailedSamples``, ``EpochTimer`` and ``CSVLogger`` (``log.csv``: losses, learning rate, metric, times).
6. ``SafeBackupAndRestore``: Keras' ``BackupAndRestore`` (weights, optimizer state,
   epoch) that never backs up a non-finite state; a killed run started again with the
   same run directory resumes at the epoch it was in. It comes after the log row, and
   ``trim_log`` removes rows of epochs the backup does not hold before a resumed run
   starts, so a kill between the two leaves each epoch logged exactly once.
7. ``TensorBoard``.
"""

import contextlib
import dataclasses
import json
import pathlib
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from hourglass_tf import __version__, batchnorm, optimizers, preactivation, pretrained, recompute, runtime
from hourglass_tf.backends import KerasRunner
from hourglass_tf.callbacks import (
    AtomicCheckpoint,
    AverageWeightsIn,
    AverageWeightsOut,
    CosineDecay,
    EpochTimer,
    FailedSamples,
    ImageSummaries,
    LearningRateDrops,
    NaNGuard,
    PCKValidation,
    SafeBackupAndRestore,
    TimeBudget,
    ValidatedPlateau,
    WorkEstimate,
    backup_epochs,
    check_backup,
    plateau_history,
    spent_budget_seconds,
    trim_log,
)
from hourglass_tf.config import LR_SCHEDULES, OPTIMIZERS, STRATEGIES, TrainConfig
from hourglass_tf.data import pipeline, readers, sources, tfrecords
from hourglass_tf.distribute import (
    dataset_options,
    is_chief,
    make_strategy,
    mixed_precision_policy,
    multi_worker_fit_fixes,
    worker_count,
)
from hourglass_tf.keras_saving import saving_cache
from hourglass_tf.metadata import describe, load_keras_model, remove_stale_temporaries
from hourglass_tf.model import architecture_of, build_model, output_names

__all__ = [
    "AtomicCheckpoint",
    "AverageWeightsIn",
    "AverageWeightsOut",
    "CosineDecay",
    "EpochTimer",
    "ImageSummaries",
    "LR_SCHEDULES",
    "LearningRateDrops",
    "NaNGuard",
    "OPTIMIZERS",
    "PCKValidation",
    "STRATEGIES",
    "SafeBackupAndRestore",
    "TimeBudget",
    "TrainConfig",
    "ValidatedPlateau",
    "build_compiled_model",
    "is_chief",
    "make_strategy",
    "mixed_precision_policy",
    "spent_budget_seconds",
    "train",
]


def config_skeleton(config):
    """The joint set ``config`` trains: fixed by the dataset's name, or a ``coco_keypoints`` file's (or its shards')."""
    meta = None
    if config.dataset == "coco_keypoints" and config.tfrecord_dir is not None:
        meta = tfrecords.read_meta(config.tfrecord_dir)
    return readers.dataset_skeleton(config.dataset, config.data_dir, config.coco_options(), meta)


def build_compiled_model(config, skeleton=None):
    """The model for ``config``, compiled with its optimizer and one MSE loss per stack (call under the strategy scope).

    ``skeleton``: the joint set (default ``config_skeleton(config)``).

    With ``config.fused_batch_norm`` its batch-norm layers train with TensorFlow's fused kernel
    (``hourglass_tf.batchnorm``), with ``config.recompute`` its stem and stacks are recomputed in the
    backward pass (``hourglass_tf.recompute``), and with ``config.recompute_preactivations`` each convolution's
    batch norm -> ReLU input (``hourglass_tf.preactivation``); all change only the training computation, so
    checkpoints are unchanged.
    """
    source = load_keras_model(pretrained.resolve(config.init_weights)) if config.init_weights else None
    variant, input_mean = "hg.lua", None
    if source is not None:  # the converted model's stem and input normalisation, so its weights mean the same
        variant = architecture_of(source)["variant"]
        if "input_mean" in {layer.name for layer in source.layers}:
            input_mean = source.get_layer("input_mean").get_config()["mean"]
    model = build_model(
        num_stacks=config.num_stacks,
        num_blocks=config.num_blocks,
        filters=config.filters,
        depth=config.depth,
        num_joints=(skeleton or config_skeleton(config)).num_joints,
        input_size=config.input_size,
        variant=variant,
        input_mean=input_mean,
    )
    if source is not None:
        loaded, fresh = load_matching_weights(model, source)
        print(
            f"init_weights {config.init_weights}: {len(loaded)} layers loaded"
            + (f"; started afresh (no layer of that name and shape there): {', '.join(fresh)}" if fresh else "")
        )
    if config.sync_batch_norm:
        batchnorm.synchronize(model)  # before the fused kernel, which leaves synchronized layers to Keras
    if config.fused_batch_norm:
        batchnorm.use_fused_batch_norm(model)
    if config.recompute:
        recompute.recompute_stacks(model)
    if config.recompute_preactivations:
        preactivation.recompute_preactivations(model)
    ema = dict(use_ema=config.ema_momentum > 0, ema_momentum=config.ema_momentum)
    if config.optimizer == "rmsprop":
        optimizer = keras.optimizers.RMSprop(config.learning_rate, **ema)
    else:
        optimizer = keras.optimizers.Adam(config.learning_rate, **ema)
    return compile_for_training(model, optimizer, jit_compile=config.jit_compile)


def compile_for_training(model, optimizer, jit_compile=False):
    """Compiles ``model`` with ``optimizer`` and one MSE loss per stack, and creates the optimizer's variables
    and the per-output loss trackers now. An ``Adam`` or ``RMSprop`` optimizer updates each variable with
    TensorFlow's one-kernel update of its rule (``optimizers.fuse_updates``).

    A ``tf.function`` whose first trace creates variables is traced a second time. Without a distribution
    strategy Keras leaves these variables to the first training step, so the step was traced twice: 11 s of
    the first step of the paper's 8-stack model on this project's CPU (docs/performance.md). Keras' own
    symbolic build (what it runs under a strategy) creates them from shapes alone. Call under the strategy
    scope.
    """
    if optimizers.fusable(optimizer):
        optimizers.fuse_updates(optimizer)
    model.compile(optimizer=optimizer, loss={name: "mse" for name in output_names(model)}, jit_compile=jit_compile)
    symbolic_build = getattr(model, "_symbolic_build", None)  # Keras 3's trainer; tested (traced once)
    if symbolic_build is not None:
        x = keras.KerasTensor(model.inputs[0].shape, model.inputs[0].dtype)
        y = {name: keras.KerasTensor(model.get_layer(name).output.shape, "float32") for name in output_names(model)}
        symbolic_build(data_batch=(x, y, None))
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    return model


def load_matching_weights(model, source):
    """Copies into ``model`` the weights of every ``source`` layer with the same name and weight shapes.

    Returns (names loaded, names left as initialised). A new dataset's joint count changes the heads
    (``stack_i``, ``hgX_heatmaps_back``): those start afresh; everything else fine-tunes.
    """
    loaded, fresh = [], []
    names = {layer.name for layer in source.layers}
    for layer in model.layers:
        if not layer.weights:
            continue
        other = source.get_layer(layer.name) if layer.name in names else None
        if other is not None and [w.shape for w in other.weights] == [w.shape for w in layer.weights]:
            layer.set_weights(other.get_weights())
            loaded.append(layer.name)
        else:
            fresh.append(layer.name)
    return loaded, fresh


# Settings a resumed run may change: how long it goes on, what it prints, and how much memory its step holds
# (``recompute`` computes the same step).
RESUMABLE_CHANGES = (
    "epochs",
    "time_budget_minutes",
    "verbose",
    "image_summaries",
    "fresh_start",
    "run_dir",
    "recompute",
)


class RunDirError(ValueError):
    """A reused run folder holds a backup of a run with other settings."""


def prepare_run_dir(run_dir, config):
    """Checks a reused ``run_dir`` before anything in it changes.

    With a resume backup inside, the settings of ``config.json`` must be ``config``'s but for
    ``RESUMABLE_CHANGES``: otherwise ``RunDirError`` lists the fields that differ and how to start afresh.
    ``config.fresh_start`` discards the backup and the log (checkpoints are overwritten as the new run
    writes them).
    """
    backup, saved = run_dir / "backup", run_dir / "config.json"
    if config.fresh_start:
        if backup.exists() or (run_dir / "log.csv").exists():
            print(f"fresh start: the resume backup and log of {run_dir} are discarded")
        shutil.rmtree(backup, ignore_errors=True)
        (run_dir / "log.csv").unlink(missing_ok=True)
        return
    if not backup.exists() or not saved.is_file():
        return
    try:
        previous = json.loads(saved.read_text())
    except ValueError:
        previous = {}
    current = dataclasses.asdict(config)
    # a field the saved run did not know yet (an older package) had its default then
    defaults = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
    differ = [
        f"{name}: {previous.get(name, defaults[name])!r} -> {value!r}"
        for name, value in current.items()
        if name not in RESUMABLE_CHANGES and previous.get(name, defaults[name]) != value
    ]
    if differ:
        raise RunDirError(
            f"{run_dir} holds the resume backup of a run with other settings ({'; '.join(differ)}). "
            "Resuming would continue that run under these settings: give another --run_dir, "
            "or --fresh_start to discard the backup and start afresh there"
        )


def load_split(config, split, **extra):
    """``sources.load_source`` for ``split`` of ``config``'s data (raw files or shards, at its input size)."""
    return sources.load_source(
        config.dataset,
        split,
        config.data_dir,
        config.tfrecord_dir,
        input_size=config.input_size,
        options=config.coco_options(),
        **extra,
    )


def recheck_training_split(config):
    """What a new check of the training split finds now (after samples failed at run time): a line."""
    try:
        _, _, report, count = load_split(config, "train")
    except (ValueError, OSError) as err:
        return str(err)
    if report.total_skipped:
        return f"{report.summary()} (of {count + report.total_skipped})"
    return "every sample reads again now (the files changed during the run?)"


@contextlib.contextmanager
def failures_explained(config):
    """Turns the pipeline's guard (``pipeline.FailureCount``: many samples in a row failed) into a ValueError
    that says which samples fail and why, from a new check of the training split."""
    try:
        yield
    except tf.errors.InvalidArgumentError as err:
        if pipeline.FAILURES_IN_A_ROW not in str(err):
            raise
        count = pipeline.MAX_FAILURES_IN_A_ROW
        raise ValueError(
            f"training stopped: {count} {pipeline.FAILURES_IN_A_ROW} (the data moved or became unreadable?); "
            f"a new check of the training split finds: {recheck_training_split(config)}"
        ) from None


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


@dataclasses.dataclass
class _Run:
    """Where a run writes and on what: the strategy, whether this process is the chief, the global batch."""

    run_dir: pathlib.Path
    write_dir: pathlib.Path  # run_dir on the chief; a temporary folder on other workers
    strategy: tf.distribute.Strategy
    chief: bool
    global_batch: int


@dataclasses.dataclass
class _Data:
    """The checked splits of a run and what training and validation do with them."""

    train_source: tf.data.Dataset
    val_source: tf.data.Dataset
    skeleton: object
    train_report: object
    val_report: object
    num_train: int
    num_val: int
    augmentation: object
    val_flip_test: bool


def _train(config):
    run = _start_run(config)
    data = _load_data(config, run.global_batch)
    resumed_epochs = _check_resume_state(run.write_dir)
    steps = config.steps_per_epoch or max(1, data.num_train // run.global_batch)
    failures = pipeline.FailureCount()
    train_data = _training_batches(
        config, data, run.global_batch, failures, skip_steps=resumed_epochs * steps, workers=worker_count(run.strategy)
    )
    val_data = _validation_batches(config, data)
    with run.strategy.scope():
        model = build_compiled_model(config, data.skeleton)
    watch = _callbacks(config, run, data, model, val_data, steps, failures, resumed_epochs)
    _say_what_trains(config, run, data, steps)
    start = time.time()
    with multi_worker_fit_fixes(model, run.strategy), failures_explained(config), saving_cache():
        history = model.fit(
            train_data, epochs=config.epochs, steps_per_epoch=steps, callbacks=watch.callbacks, verbose=config.verbose
        )
    summary = _summary(config, run, data, history, watch, failures, time.time() - start)
    if run.chief:
        _write_summary_and_curve(config, run.run_dir, summary, history)
    return {"summary": summary, "model": model, "history": history.history}


def _start_run(config):
    """Seeds, builds the strategy and prepares the run folder (the chief checks a reused one and writes config.json)."""
    run_dir = pathlib.Path(config.run_dir)
    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy, config.cpu_replicas)
    chief = is_chief(strategy)
    write_dir = run_dir if chief else pathlib.Path(tempfile.mkdtemp(prefix="hourglass_worker_"))
    write_dir.mkdir(parents=True, exist_ok=True)
    if chief:
        prepare_run_dir(run_dir, config)
        (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    return _Run(run_dir, write_dir, strategy, chief, config.batch_size * strategy.num_replicas_in_sync)


def _load_data(config, global_batch):
    """Both splits, checked; a joint set without mirror pairs turns flips off (said). ValueError when a split
    cannot train or validate."""
    train_source, skeleton, train_report, num_train = load_split(
        config, "train", drop_side_conflicts=config.drop_side_conflicts, augmentation=config.augmentation()
    )
    val_source, _, val_report, num_val = load_split(config, "valid", need_normalizers=True)
    augmentation = config.augmentation()
    val_flip_test = config.val_flip_test
    if not skeleton.flip_pairs and (augmentation.flip or val_flip_test):
        print(
            f"the joint set {skeleton.name!r} has no mirror pairs: training without flip augmentation "
            "and validating without the flip test (name the pairs with --flip_pairs if it has some)"
        )
        augmentation = dataclasses.replace(augmentation, flip=False)
        val_flip_test = False
    if num_train < global_batch:
        raise ValueError(
            f"the training split has {num_train} usable samples, fewer than one global batch ({global_batch})"
        )
    if num_val == 0:
        raise ValueError("the validation split has no usable sample")
    if config.max_val_samples:
        val_source = val_source.take(config.max_val_samples)
        num_val = min(num_val, config.max_val_samples)
    return _Data(
        train_source, val_source, skeleton, train_report, val_report, num_train, num_val, augmentation, val_flip_test
    )


def _check_resume_state(write_dir):
    """Makes the run folder's resume state consistent; returns the epochs its backup holds (0: a fresh run).

    A damaged backup falls back to the previous one or a fresh start (``check_backup``); log rows of epochs the
    backup does not hold are removed (they run again); temporaries a kill left are removed.
    """
    check_backup(write_dir / "backup")
    epochs = backup_epochs(write_dir / "backup")
    trim_log(write_dir / "log.csv", epochs)
    remove_stale_temporaries(write_dir)
    return epochs


def _training_batches(config, data, global_batch, failures, skip_steps=0, workers=1):
    """The endless, seeded training stream of global batches, started ``skip_steps`` batches in.

    A resumed run skips the batches its backup's epochs trained on (before decoding, so skipping is cheap),
    so it sees the very batches the unkilled run would have seen: ``fit`` keeps one iterator over this
    stream across epochs. Sharded by element across ``workers`` machines.
    """
    batches = pipeline.make_dataset(
        data.train_source.repeat(),
        data.skeleton,
        config.num_stacks,
        global_batch,
        input_size=config.input_size,
        sigma=config.sigma,
        augmentation=data.augmentation,
        seed=config.seed,
        failures=failures,
        skip=skip_steps * global_batch,
    )
    return dataset_options(batches, workers)


def _validation_batches(config, data):
    return pipeline.make_dataset(
        data.val_source,
        data.skeleton,
        config.num_stacks,
        config.val_batch_size,
        input_size=config.input_size,
        sigma=config.sigma,
        training=False,
        with_meta=True,
    )


def _schedule(config, steps, write_dir, resumed_epochs):
    """The learning-rate callbacks (cosine per step, or plateau and fixed drops) and the time budget (or None).

    A resumed run's plateau rule replays the validations of the epochs its backup holds (``plateau_history``),
    so it drops the rate when the unkilled run would have.
    """
    if config.lr_schedule == "cosine":
        schedule = [CosineDecay(config.learning_rate, config.min_learning_rate, config.epochs * steps)]
    else:
        schedule = [
            ValidatedPlateau(
                monitor=config.metric_name,
                mode="max",
                factor=config.plateau_factor,
                patience=config.plateau_patience,
                min_lr=config.min_learning_rate,
                verbose=config.verbose,
                history=plateau_history(write_dir / "log.csv", config.metric_name) if resumed_epochs else (),
            ),
            LearningRateDrops(config.drop_epochs(), config.plateau_factor, config.verbose),
        ]
    budget = None
    if config.time_budget_minutes:
        budget = TimeBudget(
            60.0 * config.time_budget_minutes,
            config.drop_fractions(),
            config.plateau_factor,
            spent_budget_seconds(write_dir / "log.csv"),
            config.verbose,
        )
        schedule.insert(0, budget)
    return schedule, budget


@dataclasses.dataclass
class _Callbacks:
    """The callbacks of a run in ``fit``'s order, and those the summary reads."""

    callbacks: list
    guard: NaNGuard
    validation: PCKValidation
    backup: SafeBackupAndRestore
    budget: object  # TimeBudget or None


def _callbacks(config, run, data, model, val_data, steps, failures, resumed_epochs):
    """The callbacks in the order the module docstring gives."""
    guard = NaNGuard()
    runner = KerasRunner(model)  # validation and the image summaries share its inference graph
    validation = PCKValidation(
        val_data,
        data.skeleton,
        config.metric_name,
        config.metric_threshold,
        config.validation_freq,
        data.val_flip_test,
        guard,
        total=data.num_val,
        source=data.val_source,
        runner=runner,
    )
    backup = SafeBackupAndRestore(str(run.write_dir / "backup"), guard)
    schedule, budget = _schedule(config, steps, run.write_dir, resumed_epochs)
    info = describe(
        model,
        data.skeleton,
        sigma=config.sigma,
        precision=keras.mixed_precision.global_policy().name,
        provenance={
            "dataset": config.dataset,
            "metric": config.metric_name,
            "config": dataclasses.asdict(config),
            "package": "hourglass_tf " + __version__,
        },
    )
    pictures = []
    if config.image_summaries:
        crops = np.concatenate([c.numpy() for c, _, _ in val_data.take(1)])[: config.image_summaries]
        pictures.append(
            ImageSummaries(run.write_dir / "logs", crops, data.skeleton, config.validation_freq, guard, runner)
        )
    average_in = [AverageWeightsIn()] if config.ema_momentum else []
    callbacks = [
        guard,
        *average_in,
        validation,
        *schedule,
        AtomicCheckpoint(run.write_dir, config.metric_name, guard, info=info),
        *pictures,
        *[AverageWeightsOut(a) for a in average_in],
        FailedSamples(failures, diagnose=lambda: recheck_training_split(config)),
        EpochTimer(),
        *([WorkEstimate(steps)] if config.verbose and budget is None else []),
        keras.callbacks.CSVLogger(str(run.write_dir / "log.csv"), append=True),
        backup,  # after the log row: a kill between them re-runs the epoch, and trim_log drops its first row
        keras.callbacks.TensorBoard(str(run.write_dir / "logs"), write_graph=False),
    ]
    return _Callbacks(callbacks, guard, validation, backup, budget)


def _say_what_trains(config, run, data, steps):
    print(
        f"training {config.num_stacks}-stack hourglass on {config.dataset}: {data.num_train} train / "
        f"{data.num_val} validation samples, {run.strategy.num_replicas_in_sync} replica(s), "
        f"global batch {run.global_batch}, {steps} steps per epoch"
    )
    for name, report in (("train", data.train_report), ("valid", data.val_report)):
        if report.total_skipped:
            print(f"{name} split: {report.summary()}")


def _summary(config, run, data, history, watch, failures, seconds):
    validation, budget = watch.validation, watch.budget
    return {
        "epochs_run": len(history.epoch),
        "resumed_at_epoch": watch.backup.resumed_epoch or 0,
        "stopped_because": watch.guard.reason or (budget.reason if budget is not None else None),
        config.metric_name: validation.last_result["summary"]["Mean"] if validation.last_result else None,
        "validation": validation.last_result["summary"] if validation.last_result else None,
        "train_seconds": seconds,
        "replicas": run.strategy.num_replicas_in_sync,
        "global_batch": run.global_batch,
        "skipped": {"train": data.train_report.as_dict(), "valid": data.val_report.as_dict()},
        "failed_train_samples": failures.total(),
        "run_dir": str(run.run_dir),
        "process_settings": dict(runtime.applied),  # what the script set before TensorFlow loaded (allocators, oneDNN)
    }


def _write_summary_and_curve(config, run_dir, summary, history):
    (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if history.epoch:
        from hourglass_tf.evaluation import plot_training_log

        try:
            plot_training_log(
                run_dir / "log.csv", run_dir / "training_curve.png", f"{config.dataset}, {config.num_stacks} stacks"
            )
        except ValueError as err:  # a picture must never fail a finished run
            print(f"training curve not drawn: {err}")
