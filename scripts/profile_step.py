"""Profiles the training step with the TensorFlow profiler and prints where the time goes.

    python scripts/profile_step.py --num_stacks=8 --output_dir=runs/profile

Writes a TensorBoard trace under --output_dir (view it with TensorBoard's profile plugin, an
optional install) and ``breakdown.json`` / ``breakdown.md``: time per op type, op counts, and the
peak memory TensorFlow's allocator held. docs/performance.md records what it showed.
"""

import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hourglass_tf import runtime  # noqa: E402

runtime.tune_allocators()  # before TensorFlow's first op: the allocator settings the package measured faster

from absl import app, flags  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repository: benchmarks/ is not installed
from benchmarks import profiling  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_stacks", 2, "Stacks of the profiled model.", lower_bound=1)
flags.DEFINE_integer("filters", 256, "Features.", lower_bound=1)
flags.DEFINE_integer("input_size", 256, "Input size.", lower_bound=1)
flags.DEFINE_integer("batch_size", 8, "Batch size.", lower_bound=1)
flags.DEFINE_integer("steps", 2, "Traced training steps (after two untraced warm-up steps).", lower_bound=1)
flags.DEFINE_string("output_dir", "runs/profile", "Trace and breakdown go here.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    out = pathlib.Path(FLAGS.output_dir)
    try:
        step = profiling.trace_train_step(
            out / "trace", FLAGS.num_stacks, FLAGS.filters, FLAGS.input_size, FLAGS.batch_size, FLAGS.steps
        )
    except ValueError as err:  # a model setting build_model refuses (odd filters, input size)
        print(f"error: {err}", file=sys.stderr)
        return 2
    breakdown = profiling.op_breakdown(out / "trace")
    breakdown.update(
        step,
        num_stacks=FLAGS.num_stacks,
        filters=FLAGS.filters,
        input_size=FLAGS.input_size,
        batch_size=FLAGS.batch_size,
    )
    (out / "breakdown.json").write_text(json.dumps(breakdown, indent=2))
    table = profiling.markdown(breakdown, step["step_seconds"], step["steps"])
    (out / "breakdown.md").write_text(table)
    print(table)
    print(f"written: {out / 'breakdown.json'}, {out / 'breakdown.md'}, trace under {out / 'trace'}")


if __name__ == "__main__":
    app.run(main)
