"""Benchmarks the input pipeline and the training step on this machine (``make bench``).

    python scripts/benchmark.py --output_dir=runs/bench [--quick]

Writes ``bench.json`` and ``bench.md`` (a Markdown table) to --output_dir and prints the table.
LSPET shards are added when ../shared/data (or $HOURGLASS_SHARED/data) is present.
"""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "runs/bench", "Where bench.json and bench.md are written.")
flags.DEFINE_string("work_dir", "runs/bench/work", "Generated data (synthetic set, shards), reused between runs.")
flags.DEFINE_bool("quick", False, "A short subset (a couple of minutes).")
flags.DEFINE_integer("input_size", 256, "Input size of the pipeline and the model.")
flags.DEFINE_integer("filters", 256, "Model features.")
flags.DEFINE_list("train_stacks", ["2"], "Stack counts whose training step is timed.")
flags.DEFINE_string("shared_data", None, "Folder holding lspet/ (default: $HOURGLASS_SHARED/data or ../shared/data).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from hourglass_tf import benchmark

    shared = FLAGS.shared_data
    if shared is None:
        root = pathlib.Path(os.environ.get("HOURGLASS_SHARED", pathlib.Path(__file__).resolve().parents[2] / "shared"))
        shared = root / "data" if (root / "data").is_dir() else None
    results = benchmark.run(FLAGS.work_dir, shared, quick=FLAGS.quick, input_size=FLAGS.input_size,
                            filters=FLAGS.filters, train_stacks=[int(s) for s in FLAGS.train_stacks])  # fmt: skip
    json_path, md_path = benchmark.write(results, FLAGS.output_dir)
    print(benchmark.markdown(results))
    print(f"written: {json_path}, {md_path}")


if __name__ == "__main__":
    app.run(main)
