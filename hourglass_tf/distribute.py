"""Distribution: the strategy for a run, the chief, mixed precision, and the Keras multi-worker fixes."""

import contextlib
import os

import tensorflow as tf

from hourglass_tf import runtime
from hourglass_tf.config import STRATEGIES


def strategy_plan(name, num_gpus, cpu_replicas=0, tf_config=None):
    """What ``make_strategy`` builds, decided from the device count alone (unit-tested without devices).

    Returns one of ``"cpu_mirrored"`` (``cpu_replicas`` > 1 logical CPUs), ``"mirrored"``, ``"default"``,
    ``"one_device_gpu"``, ``"one_device_cpu"``, ``"multi_worker"`` or ``"tpu"``: ``auto`` mirrors over
    two or more GPUs and otherwise keeps the default strategy (one GPU or the CPU, no replication).
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, received strategy={name!r}")
    if cpu_replicas > 1:
        return "cpu_mirrored"
    if name == "auto":
        return "mirrored" if num_gpus > 1 else "default"
    if name == "one_device":
        return "one_device_gpu" if num_gpus else "one_device_cpu"
    if name == "multi_worker" and not tf_config:
        raise ValueError("strategy=multi_worker needs the TF_CONFIG environment variable (see docs/training.md)")
    return name


def make_strategy(name, cpu_replicas=0):
    """The ``tf.distribute`` strategy called ``name`` (see ``STRATEGIES`` and ``strategy_plan``).

    ``auto`` is MirroredStrategy (NCCL all-reduce on GPUs) when more than one GPU is visible, else the
    default strategy. ``cpu_replicas > 1`` splits the CPU into that many logical devices and mirrors over
    them (to test data parallelism without GPUs).
    """
    gpus = tf.config.list_physical_devices("GPU")
    plan = strategy_plan(name, len(gpus), cpu_replicas, os.environ.get("TF_CONFIG"))
    if plan == "cpu_mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_replicas)])
    if plan == "default":
        return tf.distribute.get_strategy()
    if plan.startswith("one_device"):
        return tf.distribute.OneDeviceStrategy("/gpu:0" if plan == "one_device_gpu" else "/cpu:0")
    if plan == "mirrored":
        return tf.distribute.MirroredStrategy()
    if plan == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _cluster(strategy):
    """``strategy``'s cluster resolver (or None) and its cluster spec as a dict (empty outside multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver, (resolver.cluster_spec().as_dict() if resolver is not None else {})


def is_chief(strategy):
    """True on the worker that writes checkpoints and logs (always, outside multi-worker)."""
    resolver, cluster = _cluster(strategy)
    if not cluster or resolver.task_type in ("chief", None):
        return True
    # Without a "chief" task, TensorFlow's convention makes worker 0 the chief.
    return "chief" not in cluster and resolver.task_type == "worker" and resolver.task_id == 0


@contextlib.contextmanager
def multi_worker_fit_fixes(model, strategy):
    """Works around two Keras 3 bugs in ``fit`` under MultiWorkerMirroredStrategy, for the ``with`` block only.

    See keras-team/keras#20585 and tensorflow/tensorflow#72388. Does nothing under any other
    strategy; on exit ``model`` and Keras' trainer module are as they were. The multi-worker
    test fails if a Keras upgrade changes these internals.

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
        yield
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

    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, distribution, reduction):
        if reduction in ("auto", "mean") and isinstance(distribution, tf.distribute.MultiWorkerMirroredStrategy):

            def reduce_one(value):
                rank = local_value(value).shape.rank
                return distribution.reduce("MEAN", value, axis=0 if rank else None)

            return tf.nest.map_structure(reduce_one, values)
        return original(values, distribution, reduction)

    model._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        tf_trainer.reduce_per_replica = original
        del model._maybe_symbolic_build


def worker_count(strategy):
    """How many machines (chief and worker tasks of the cluster) ``strategy`` trains on; 1 outside multi-worker."""
    _, cluster = _cluster(strategy)
    return max(1, sum(len(cluster.get(task, ())) for task in ("chief", "worker")))


def dataset_options(dataset, workers):
    """A training dataset ready for ``workers`` machines: sharded by element across them (each worker reads the
    same files) when there are several, and not rewritten for sharding on one.

    On one machine sharding has nothing to split, but TensorFlow's auto-shard rewrite of the pipeline still runs
    each time ``fit`` makes an iterator over it: 2.5 s per iterator for the package's pipeline under a
    two-replica MirroredStrategy (0.4 s with it off; docs/performance.md).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"`workers` must be a positive integer, received workers={workers!r}")
    policy = tf.data.experimental.AutoShardPolicy
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy.DATA if workers > 1 else policy.OFF
    return dataset.with_options(options)


BFLOAT16_GPU_CAPABILITY = (8, 0)  # Ampere and later: bfloat16 arithmetic in the tensor cores


def gpu_capabilities(gpus=None, details=None):
    """The compute capability (major, minor) of each visible GPU; (0, 0) where the driver does not say.

    ``details``: a function GPU device -> dict (default ``tf.config.experimental.get_device_details``).
    """
    gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
    details = details or tf.config.experimental.get_device_details
    capabilities = []
    for gpu in gpus:
        try:
            capability = details(gpu).get("compute_capability") or (0, 0)
        except (ValueError, RuntimeError):
            capability = (0, 0)
        capabilities.append(tuple(int(v) for v in capability))
    return capabilities


def mixed_precision_policy(gpus=None, details=None):
    """The Keras mixed-precision policy for this machine.

    On GPUs: ``mixed_bfloat16`` when every GPU has compute capability 8.0 or later (bfloat16 has float32's range,
    so no loss scaling is needed), else ``mixed_float16`` (Keras scales the loss). On CPUs and TPUs:
    ``mixed_bfloat16``. ``gpus``: the visible GPU list (default ``tf.config.list_physical_devices("GPU")``);
    ``details``: see ``gpu_capabilities``.
    """
    gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
    if not gpus:
        return "mixed_bfloat16"
    capabilities = gpu_capabilities(gpus, details)
    return "mixed_bfloat16" if min(capabilities) >= BFLOAT16_GPU_CAPABILITY else "mixed_float16"


def mixed_precision_pays(gpus=None, flags=None):
    """Whether ``--mixed_precision`` speeds training here: on a GPU (float16), or a CPU with bfloat16 arithmetic.

    Without hardware bfloat16 a CPU emulates it and is slower than float32, so there the answer is no.
    ``gpus`` and ``flags`` default to this machine's (``tf.config`` GPU list, ``runtime.cpu_flags()``).
    """
    return mixed_precision_choice(gpus, flags)[0]


def mixed_precision_choice(gpus=None, flags=None):
    """``(pays, reason)``: ``mixed_precision_pays`` and one line saying why, for ``--mixed_precision=auto``.

    Measured (docs/training.md): on a CPU without bfloat16 arithmetic (AVX2 only) a bfloat16 training step took
    10.3 times as long as float32's.
    """
    gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
    if gpus:
        return True, f"on ({len(gpus)} GPU(s))"
    if runtime.cpu_has_bfloat16(flags):
        return True, "on (mixed_bfloat16: this CPU has bfloat16 arithmetic)"
    return False, (
        "off (float32: this CPU has no bfloat16 arithmetic, no "
        + " or ".join(runtime.BFLOAT16_CPU_FLAGS)
        + "; TensorFlow would emulate it, about 10 times slower a step)"
    )
