"""Benchmarks on the current machine (``make bench``): GEMM reference, input pipeline,
inference per backend, training step, and peak memory of each.

Every figure is a median over repeated runs after warm-up; nothing here is a test (timings
vary by machine). ``scripts/benchmark.py`` wraps ``run`` and writes ``bench.json`` and a
Markdown table (``markdown``).

* ``gemm``: NumPy's float32 matrix-multiply rate, the reference for utilisation.
* ``pipeline``: the augmented training pipeline (images/s) on synthetic JPEG files, and on
  LSPET TFRecord shards when the shared data is present.
* ``inference``: per backend (``BACKENDS``) and stack count, batch 1 and 8: seconds per
  batch, images/s, achieved GFLOP/s and its fraction of the GEMM rate. Models carry random
  weights (speed does not depend on them); exported formats come from ``export.export_model``.
* ``train_step``: per stack count and variant (``TRAIN_VARIANTS``), batch 8, RMSprop through
  ``train_on_batch`` (the ``model.fit`` step): seconds per step, first step (tracing), GFLOP/s
  (3x the forward FLOPs) and utilisation.
* Each inference and training case runs in a fresh subprocess, so its ``peak_rss_mb`` (the
  process's maximum resident memory, TensorFlow runtime included) belongs to that case alone,
  and strategies or policies of one case cannot leak into the next.
* ``targets``: the performance targets of this project, each with the measured value.

Model FLOPs come from the layer shapes (``model.conv_flops``).
"""

import pathlib
import platform
import tempfile
import types

from benchmarks import pipeline_cases, report, side_by_side
from benchmarks.inference_cases import BACKENDS, QUICK_BACKENDS
from benchmarks.measure import gemm_rate, log, run_case, short
from benchmarks.training_cases import TRAIN_VARIANTS

write, markdown = report.write, report.markdown  # the suite's results, as files and as tables


def run(
    work_dir,
    shared_data=None,
    quick=False,
    input_size=256,
    filters=256,
    infer_stacks=None,
    train_stacks=None,
    backends=None,
    train_variants=None,
    allocator_comparison=None,
    progress=False,
    torch_python=None,
    side_by_side_only=False,
):
    """Runs the suite; returns a JSON-able dict (see the module docstring).

    Args:
      work_dir: where the synthetic set, shards and exported models are kept between runs.
      shared_data: ``../shared/data`` when present: adds LSPET shards to the pipeline rows.
      quick: a subset of a few minutes: 2 stacks only, ``QUICK_BACKENDS``, plain training, fewer repeats.
      input_size, filters: model settings (the tests use tiny ones).
      infer_stacks, train_stacks: stack counts (default (2, 8); quick (2,)).
      backends: inference backends (default ``BACKENDS``; quick ``QUICK_BACKENDS``).
      train_variants: training variants (default ``TRAIN_VARIANTS``; quick ("plain",)).
      allocator_comparison: also time the largest model with the allocators left at their
        defaults (``hourglass_tf.runtime`` switched off); default: on unless quick.
      progress: print a line per case to stderr.
      torch_python: a Python with PyTorch: adds ``side_by_side`` (the largest inference stack count against
        ``TORCH_SCRIPT``, with the ratios and their targets); None: skipped.
      side_by_side_only: run only the GEMM reference and the side-by-side (needs ``torch_python``).
    """
    from hourglass_tf import runtime

    work_dir = pathlib.Path(work_dir)
    infer_stacks = tuple(infer_stacks or ((2,) if quick else (2, 8)))
    train_stacks = tuple(train_stacks or ((2,) if quick else (2, 8)))
    backends = tuple(backends or (QUICK_BACKENDS if quick else BACKENDS))
    train_variants = tuple(train_variants or (("plain",) if quick else TRAIN_VARIANTS))
    unknown = [b for b in backends if b not in BACKENDS] + [v for v in train_variants if v not in TRAIN_VARIANTS]
    if unknown:
        raise ValueError(f"unknown backends/variants {unknown}; backends: {BACKENDS}, variants: {TRAIN_VARIANTS}")
    if side_by_side_only and not torch_python:
        raise ValueError("side_by_side_only needs torch_python, a Python that has PyTorch")
    from hourglass_tf.backends import cpu_threads  # TensorFlow loads here, after the arguments are checked

    allocator_comparison = (not quick) if allocator_comparison is None else allocator_comparison
    repeats = 2 if quick else 5
    train_repeats = 2 if quick else 3
    batches = 5 if quick else 20
    results = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "cpu_threads": cpu_threads(),
        },
        "settings": {
            "quick": quick,
            "input_size": input_size,
            "filters": filters,
            "repeats": repeats,
            "train_repeats": train_repeats,
            "allocators": runtime.applied or "defaults",
        },
        "gemm": gemm_rate(repeats=repeats),
        "peaks": run_case({"kind": "peak", "repeats": repeats}),
        "pipeline": {},
        "models": {},
        "inference": {},
        "train_step": {},
    }
    log(progress, f"GEMM {results['gemm']['gflops']:.1f} GFLOP/s; peaks {report.peaks_line(results['peaks'])}")
    if not side_by_side_only:
        plan = types.SimpleNamespace(
            quick=quick,
            input_size=input_size,
            filters=filters,
            infer_stacks=infer_stacks,
            train_stacks=train_stacks,
            backends=backends,
            train_variants=train_variants,
            allocator_comparison=allocator_comparison,
            repeats=repeats,
            train_repeats=train_repeats,
            batches=batches,
            progress=progress,
        )
        _main_suite(results, work_dir, shared_data, plan)
    if torch_python:
        results["side_by_side"] = side_by_side.side_by_side(
            work_dir,
            torch_python,
            max(infer_stacks),
            filters,
            input_size,
            rounds=1 if quick else 2,
            repeats=repeats,
            train_repeats=train_repeats,
            progress=progress,
        )
    report.derive(results)
    return results


def _main_suite(results, work_dir, shared_data, plan):
    """Everything but the side-by-side (``run``): pipeline, inference per backend, training variants, people."""
    _pipeline_rows(results, work_dir, shared_data, plan)
    _inference_rows(results, work_dir, plan)
    _training_rows(results, plan)
    _people_row(results, plan)


def _pipeline_rows(results, work_dir, shared_data, plan):
    for name, (source, skeleton) in pipeline_cases.pipeline_sources(
        work_dir, shared_data, plan.input_size, plan.quick
    ).items():
        results["pipeline"][name] = pipeline_cases.pipeline_rate(
            source, skeleton, plan.input_size, batches=plan.batches, repeats=plan.repeats
        )
        log(plan.progress, f"pipeline {name}: {results['pipeline'][name]['images_per_s']:.0f} images/s")


def _inference_rows(results, work_dir, plan):
    largest = max(plan.infer_stacks)
    for stacks in plan.infer_stacks:
        model_dir = work_dir / "models" / f"s{stacks}_f{plan.filters}_r{plan.input_size}"
        log(plan.progress, f"exporting the {stacks}-stack model for {', '.join(plan.backends)}")
        info = run_case(
            {
                "kind": "prepare",
                "model_dir": str(model_dir),
                "num_stacks": stacks,
                "filters": plan.filters,
                "input_size": plan.input_size,
                "backends": list(plan.backends),
            }
        )
        results["models"][f"{stacks} stacks"] = info
        if "error" in info:
            log(plan.progress, f"  export failed: {info['error']}")
            continue
        runs = [(backend, False) for backend in plan.backends]
        if plan.allocator_comparison and stacks == largest and "tf_function" in plan.backends:
            runs.append(("tf_function", True))
        for backend, default_alloc in runs:
            key = f"{stacks} stacks, {backend}" + (", default allocators" if default_alloc else "")
            case = {"kind": "inference", "model_dir": str(model_dir), "backend": backend, "repeats": plan.repeats}
            results["inference"][key] = run_case(case, default_allocators=default_alloc)
            log(plan.progress, f"inference {key}: {short(results['inference'][key])}")


def _training_rows(results, plan):
    largest = max(plan.train_stacks)
    for stacks in plan.train_stacks:
        runs = [(variant, False) for variant in plan.train_variants]
        if plan.allocator_comparison and stacks == largest and "plain" in plan.train_variants:
            runs.append(("plain", True))
        for variant, default_alloc in runs:
            key = f"{stacks} stacks, {variant}" + (", default allocators" if default_alloc else "")
            case = {
                "kind": "train",
                "num_stacks": stacks,
                "batch_size": 8,
                "input_size": plan.input_size,
                "filters": plan.filters,
                "repeats": plan.train_repeats,
                "variant": variant,
            }
            results["train_step"][key] = run_case(case, default_allocators=default_alloc)
            log(plan.progress, f"training {key}: {short(results['train_step'][key])}")


def _people_row(results, plan):
    results["people"] = run_case({"kind": "people", "repeats": plan.repeats, "frames": 40 if plan.quick else 300})
    if "error" in results["people"]:
        log(plan.progress, f"people: failed: {results['people']['error']}")
    else:
        video = results["people"]["video"]
        log(plan.progress, f"people: video {video['frames_per_second']:.1f} frames/s")


def default_work_dir():
    return pathlib.Path(tempfile.gettempdir()) / "hourglass_tf_bench"
