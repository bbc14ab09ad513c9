"""Benchmarks on the current machine: input pipeline and training-step throughput.

Every figure is a median over repeated runs after warm-up; nothing here is a test
(timings vary by machine). ``scripts/benchmark.py`` wraps ``run`` and writes JSON and
a Markdown table.
"""

import json
import pathlib
import platform
import statistics
import tempfile
import time

import numpy as np

from hourglass_tf.data import pipeline, readers, synthetic, tfrecords


def _median_rate(fn, count, repeats, warmup=1):
    """Runs ``fn`` (which processes ``count`` images) ``warmup + repeats`` times; median images/s."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"images_per_s": count / median, "seconds": median, "repeats": repeats}


def gemm_rate(size=1024, repeats=5):
    """The machine's float32 matrix-multiply rate through NumPy, in GFLOP/s (utilisation reference)."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    b = a.T.copy()
    result = _median_rate(lambda: a @ b, 1, repeats)
    return {"gflops": 2 * size**3 / result["seconds"] / 1e9, "size": size}


def pipeline_rate(source, skeleton, input_size=256, batch_size=8, batches=20, repeats=3, num_stacks=2):
    """Augmented, batched training pipeline throughput (images/s) over ``batches`` batches."""
    dataset = pipeline.make_dataset(source.repeat(), skeleton, num_stacks, batch_size, input_size=input_size, seed=0)
    iterator = iter(dataset)

    def consume():
        for _ in range(batches):
            next(iterator)

    result = _median_rate(consume, batches * batch_size, repeats)
    result.update(batch_size=batch_size, input_size=input_size, batches=batches)
    return result


def train_step_rate(num_stacks, batch_size=8, input_size=256, filters=256, repeats=3):
    """Images/s of compiled RMSprop training steps (the model.fit path) for a stacked hourglass."""
    import keras

    from hourglass_tf.model import build_model, output_names

    model = build_model(num_stacks=num_stacks, filters=filters, input_size=input_size)
    model.compile(optimizer=keras.optimizers.RMSprop(2.5e-4), loss={n: "mse" for n in output_names(model)})
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, input_size, input_size, 3), dtype=np.float32)
    y = {n: rng.random((batch_size, input_size // 4, input_size // 4, 16), dtype=np.float32) for n in output_names(model)}
    start = time.perf_counter()
    model.train_on_batch(x, y)  # traces and compiles the train function
    first = time.perf_counter() - start
    result = _median_rate(lambda: model.train_on_batch(x, y), batch_size, repeats, warmup=0)
    result.update(num_stacks=num_stacks, batch_size=batch_size, input_size=input_size, filters=filters,
                  first_step_seconds=first)  # fmt: skip
    return result


def run(work_dir, shared_data=None, quick=False, input_size=256, filters=256, train_stacks=(2,)):
    """Runs the suite; returns a JSON-able dict.

    Args:
      work_dir: where the synthetic set and shards are generated (kept between runs).
      shared_data: ``../shared/data`` when present: adds LSPET shards.
      quick: fewer batches and repeats (a couple of minutes).
      input_size, filters, train_stacks: model settings (the tests use tiny ones).
    """
    work_dir = pathlib.Path(work_dir)
    repeats = 2 if quick else 5
    batches = 5 if quick else 20
    results = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version()},
        "settings": {"quick": quick, "input_size": input_size, "filters": filters},
        "gemm": gemm_rate(repeats=repeats),
        "pipeline": {},
        "train_step": {},
    }
    syn_root = work_dir / "synthetic"
    if not (syn_root / "annot" / "train.json").exists():
        synthetic.generate(syn_root, num_train=64 if quick else 256, num_valid=0, image_size=256, seed=0)
    sources = {}
    samples = readers.load_dataset("synthetic", syn_root, "train")
    sources["synthetic (JPEG files)"] = (pipeline.samples_to_dataset(samples, syn_root), readers.skeleton_of("synthetic"))
    if shared_data is not None and (pathlib.Path(shared_data) / "lspet" / "joints.mat").exists():
        shard_dir = work_dir / "lspet_tfr"
        if not (shard_dir / "meta.json").exists():
            lspet = readers.load_dataset("lspet", pathlib.Path(shared_data) / "lspet", "train")
            lspet = lspet[:512] if quick else lspet
            report = tfrecords.write_shards(lspet, pathlib.Path(shared_data) / "lspet", shard_dir, "train", input_size,
                                            progress=False)  # fmt: skip
            tfrecords.write_meta(shard_dir, {"dataset": "lspet", "num_joints": 14, "splits": {"train": report.as_dict()}})
        sources["LSPET (TFRecord shards)"] = (tfrecords.read_shards(shard_dir, "train", 14), readers.skeleton_of("lspet"))
    for name, (source, skel) in sources.items():
        results["pipeline"][name] = pipeline_rate(source, skel, input_size, batches=batches, repeats=repeats)
    for stacks in train_stacks:
        results["train_step"][f"{stacks} stacks"] = train_step_rate(stacks, 8, input_size, filters, repeats=repeats)
    slowest_pipeline = min(r["images_per_s"] for r in results["pipeline"].values())
    for name, step in results["train_step"].items():
        step["pipeline_margin"] = slowest_pipeline / step["images_per_s"]
    return results


def markdown(results):
    """A Markdown table of ``run``'s results."""
    lines = [f"GEMM (NumPy float32, {results['gemm']['size']}^3): {results['gemm']['gflops']:.1f} GFLOP/s", "",
             "| measurement | images/s | median time of one run |", "|---|---|---|"]  # fmt: skip
    for name, r in results["pipeline"].items():
        lines.append(f"| input pipeline, {name}, {r['input_size']} px, batch {r['batch_size']}, augmented | "
                     f"{r['images_per_s']:.0f} | {r['seconds']:.3f} s for {r['batches']} batches |")  # fmt: skip
    for name, r in results["train_step"].items():
        lines.append(f"| training step, {name}, {r['input_size']} px, batch {r['batch_size']} (RMSprop) | "
                     f"{r['images_per_s']:.2f} | {r['seconds']:.2f} s / step (first step {r['first_step_seconds']:.0f} s) |")  # fmt: skip
    for name, r in results["train_step"].items():
        lines.append("")
        lines.append(f"Slowest pipeline / {name} training consumption: {r['pipeline_margin']:.0f}x (target >= 3x)")
    return "\n".join(lines) + "\n"


def write(results, output_dir):
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "bench.json").write_text(json.dumps(results, indent=2))
    (output_dir / "bench.md").write_text(markdown(results))
    return output_dir / "bench.json", output_dir / "bench.md"


def default_work_dir():
    return pathlib.Path(tempfile.gettempdir()) / "hourglass_tf_bench"
