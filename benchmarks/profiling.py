"""Where the time of a training step goes: a TensorFlow profiler trace, summed per op type.

``trace_train_step`` records a few compiled training steps with ``tf.profiler`` (the same
trace TensorBoard's profile plugin shows) and ``op_breakdown`` reads it back (the XSpace
protobuf TensorFlow ships) without TensorBoard: time per op type (``Conv2D`` forward, its
two backward kernels, batch norm, ReLU, additions, optimizer updates, ...), op counts, and
the peak bytes TensorFlow's allocator held during the trace.

Op time is the wall time of each kernel on the thread that ran it; a kernel that spreads
over the intra-op pool counts once. Sums can exceed the step time when the executor runs
independent ops on two threads at once.
"""

import collections
import pathlib
import time

import numpy as np

_INFRASTRUCTURE = (
    "ExecutorState",
    "ThreadpoolListener",
    "MemoryAllocation",
    "MemoryDeallocation",
    "EagerExecute",
    "EagerLocalExecute",
    "FunctionRun",
    "Iterator",
    "KernelAndDeviceFunc",
)


def op_type(event_name):
    """``scope/name:OpType`` -> a readable kernel family (``_MklNativeConv2D`` -> ``Conv2D``)."""
    kind = event_name.rsplit(":", 1)[-1]
    for prefix in ("_MklNative", "_MklFused", "_Mkl", "_Fused"):
        if kind.startswith(prefix):
            kind = kind[len(prefix) :] if prefix != "_MklFused" else "Fused" + kind[len(prefix) :]
    return kind


def trace_train_step(logdir, num_stacks=2, filters=256, input_size=256, batch_size=8, steps=2, num_joints=16):
    """Profiles ``steps`` compiled RMSprop training steps (after two untraced warm-up steps).

    Returns:
      dict ``step_seconds`` (median wall time per traced step) and ``logdir``.
    """
    import tensorflow as tf

    from benchmarks.training_cases import compiled_training_model

    model, x, y = compiled_training_model(num_stacks, filters, input_size, batch_size, num_joints)
    for _ in range(2):
        model.train_on_batch(x, y)
    times = []
    tf.profiler.experimental.start(str(logdir))
    try:
        for _ in range(steps):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
    finally:
        tf.profiler.experimental.stop()
    return {"step_seconds": float(np.median(times)), "steps": steps, "logdir": str(logdir)}


def op_breakdown(logdir):
    """Reads the newest ``*.xplane.pb`` under ``logdir``.

    Returns:
      dict ``ops``: op type -> {"seconds", "count"} sorted by time; ``total_op_seconds``;
      ``peak_allocated_bytes`` (the largest ``bytes_allocated`` the allocator reported; None when the trace holds
      no allocator events: TensorFlow's default CPU allocator reports none unless oneDNN is on, which TensorFlow
      turns on by itself only on CPUs with AVX-512 VNNI or newer; ``TF_CPU_ALLOCATOR_USE_BFC=true``, which
      ``hourglass_tf.runtime.tune_allocators`` sets, always reports).

    Raises:
      ValueError: no trace under ``logdir``.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(pathlib.Path(logdir).rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise ValueError(f"{logdir}: no profiler trace (*.xplane.pb) found")
    space = xplane_pb2.XSpace()
    space.ParseFromString(files[-1].read_bytes())
    seconds, counts = collections.Counter(), collections.Counter()
    peak = None
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        stat_names = {key: meta.name for key, meta in plane.stat_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if name.startswith("MemoryAllocation"):
                    for stat in event.stats:
                        if stat_names.get(stat.metadata_id) == "bytes_allocated":
                            peak = max(peak or 0, stat.int64_value or stat.uint64_value)
                    continue
                if ":" not in name or name.startswith(_INFRASTRUCTURE):
                    continue
                kind = op_type(name)
                seconds[kind] += event.duration_ps / 1e12
                counts[kind] += 1
    ops = {k: {"seconds": s, "count": counts[k]} for k, s in seconds.most_common()}
    return {
        "ops": ops,
        "total_op_seconds": float(sum(seconds.values())),
        "peak_allocated_bytes": peak,
        "trace": str(files[-1]),
    }


def markdown(breakdown, step_seconds=None, steps=1, top=15):
    """A Markdown table of the ``top`` op types by time, per training step (trace of ``steps`` steps)."""
    total = breakdown["total_op_seconds"] or 1.0
    lines = ["| op type | time per step | share of op time | ops per step |", "|---|---|---|---|"]
    for kind, r in list(breakdown["ops"].items())[:top]:
        lines.append(f"| {kind} | {r['seconds'] / steps:.3f} s | {r['seconds'] / total:.1%} | {r['count'] // steps} |")
    tail = (
        f"\nSum of op times per step {breakdown['total_op_seconds'] / steps:.2f} s"
        + (f", median step wall time {step_seconds:.2f} s" if step_seconds else "")
        + f"; peak bytes held by TensorFlow's allocator: {_peak_text(breakdown['peak_allocated_bytes'])}\n"
    )
    return "\n".join(lines) + "\n" + tail


def _peak_text(peak):
    if peak is None:
        return "not recorded (this allocator reports none; TF_CPU_ALLOCATOR_USE_BFC=true does)"
    return f"{peak / 1e9:.2f} GB"
