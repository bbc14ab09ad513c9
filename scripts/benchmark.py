"""Benchmarks this machine (``make bench``): GEMM reference, input pipeline, inference per
backend, training step, peak memory, and the project's performance targets.

    python scripts/benchmark.py --output_dir=runs/bench            # the full suite (about 30 minutes on 2 cores)
    python scripts/benchmark.py --output_dir=runs/bench --quick    # a few minutes: 2 stacks, 4 backends
    python scripts/benchmark.py --torch_python=/path/to/venv/bin/python   # adds the side-by-side with PyTorch

Writes ``bench.json`` and ``bench.md`` (Markdown tables) to --output_dir and prints the tables.
Exported models and generated data are kept in --work_dir between runs. LSPET shards are added
to the pipeline rows when ../shared/data (or $HOURGLASS_SHARED/data) is present.
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hourglass_tf import runtime  # noqa: E402

runtime.tune_allocators()  # before TensorFlow's first op: the allocator settings the package measured faster

from absl import app, flags  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repository: benchmarks/ is not installed
from benchmarks import benchmark  # noqa: E402
from benchmarks.inference_cases import BACKENDS, QUICK_BACKENDS  # noqa: E402
from benchmarks.training_cases import TRAIN_VARIANTS  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "runs/bench", "Where bench.json and bench.md are written.")
flags.DEFINE_string("work_dir", "runs/bench/work", "Generated data and exported models, reused between runs.")
flags.DEFINE_bool("quick", False, "A subset of a few minutes (2 stacks, 4 backends, plain training).")
flags.DEFINE_integer("input_size", 256, "Input size of the pipeline and the models.")
flags.DEFINE_integer("filters", 256, "Model features.")
flags.DEFINE_list("infer_stacks", None, "Stack counts timed for inference (default 2,8; quick 2).")
flags.DEFINE_list("train_stacks", None, "Stack counts whose training step is timed (default 2,8; quick 2).")
flags.DEFINE_list(
    "backends",
    None,
    f"Inference backends, any of {','.join(BACKENDS)} (default all; quick {','.join(QUICK_BACKENDS)}).",
)
flags.DEFINE_list(
    "train_variants",
    None,
    f"Training variants, any of {','.join(TRAIN_VARIANTS)} (default all; quick plain).",
)
flags.DEFINE_bool(
    "allocator_comparison", None, "Also time the largest model with default allocators (default: unless quick)."
)
flags.DEFINE_string(
    "torch_python",
    None,
    "A Python that has PyTorch (and NumPy): adds the side-by-side with PyTorch on the largest inference model "
    "(benchmarks/torch_hourglass.py). PyTorch is not a dependency of the package.",
)
flags.DEFINE_bool("side_by_side_only", False, "Only the GEMM reference and the side-by-side (needs --torch_python).")
flags.DEFINE_string("shared_data", None, "Folder holding lspet/ (default: $HOURGLASS_SHARED/data or ../shared/data).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    shared = FLAGS.shared_data
    if shared is None:
        root = pathlib.Path(os.environ.get("HOURGLASS_SHARED", pathlib.Path(__file__).resolve().parents[2] / "shared"))
        shared = root / "data" if (root / "data").is_dir() else None
    try:
        results = run_suite(shared)
    except ValueError as err:  # unknown backends or variants, side_by_side_only without a PyTorch Python
        print(f"error: {err}", file=sys.stderr)
        return 2
    json_path, md_path = benchmark.write(results, FLAGS.output_dir)
    print(benchmark.markdown(results))
    print(f"written: {json_path}, {md_path}")
    return 0


def _ints(values):
    return [int(v) for v in values] if values else None


def run_suite(shared):
    return benchmark.run(
        FLAGS.work_dir,
        shared,
        quick=FLAGS.quick,
        input_size=FLAGS.input_size,
        filters=FLAGS.filters,
        infer_stacks=_ints(FLAGS.infer_stacks),
        train_stacks=_ints(FLAGS.train_stacks),
        backends=FLAGS.backends,
        train_variants=FLAGS.train_variants,
        allocator_comparison=FLAGS.allocator_comparison,
        progress=True,
        torch_python=FLAGS.torch_python,
        side_by_side_only=FLAGS.side_by_side_only,
    )


if __name__ == "__main__":
    app.run(main)
