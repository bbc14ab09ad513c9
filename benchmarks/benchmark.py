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

import json
import math
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]

BACKENDS = (
    "keras_eager",
    "tf_function",
    "xla",
    "saved_model",
    "tflite_fp32",
    "tflite_fp16",
    "tflite_int8",
    "onnxruntime",
    "tf_function_bf16",
)
QUICK_BACKENDS = ("keras_eager", "tf_function", "tflite_fp32", "onnxruntime")
PACKAGE_BACKENDS = ("tf_function", "saved_model", "tflite_fp32", "onnxruntime")  # what predict/evaluate/export use
TRAIN_VARIANTS = ("plain", "stock_batch_norm", "xla", "mixed_precision")
BACKEND_TITLES = {
    "keras_eager": "Keras eager `model(x)`",
    "tf_function": "compiled `tf.function` (predict CLI, evaluation)",
    "xla": "`tf.function(jit_compile=True)` (XLA)",
    "saved_model": "SavedModel `serving_default` (uint8 in, decoding inside)",
    "tflite_fp32": "TFLite fp32 (LiteRT)",
    "tflite_fp16": "TFLite float16 weights",
    "tflite_int8": "TFLite int8",
    "onnxruntime": "ONNX Runtime",
    "tf_function_bf16": "compiled `tf.function`, mixed bfloat16 policy",
}
RESULT_PREFIX = "BENCH_RESULT "
TARGETS = {
    "train_utilisation": 0.65,  # 8-stack training step, fraction of the GEMM rate
    "train_peak_gb": 8.0,
    "inference_utilisation": 0.85,  # every package inference path, batch 8
    "inference_peak_gb": 2.0,
    "pipeline_margin": 3.0,
    "video_fps": 25.0,  # one tracked person, 640 x 480, the LSPET-size model with the flip test
}
LSPET_SIZE = {"num_stacks": 2, "num_blocks": 1, "filters": 128, "depth": 3, "input_size": 96, "num_joints": 14}


# ---------------------------------------------------------------- measurement helpers


def _median_seconds(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb():
    """This process's peak resident memory so far, in MB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


def current_rss_mb():
    try:
        pages = int(pathlib.Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return None


def gemm_rate(size=1024, repeats=5):
    """The machine's float32 matrix-multiply rate through NumPy, in GFLOP/s (utilisation reference)."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    b = a.T.copy()
    seconds = _median_seconds(lambda: a @ b, repeats)
    return {"gflops": 2 * size**3 / seconds / 1e9, "size": size, "seconds": seconds}


def pipeline_rate(source, skeleton, input_size=256, batch_size=8, batches=20, repeats=3, num_stacks=2):
    """Augmented, batched training pipeline throughput (images/s) over ``batches`` batches."""
    from hourglass_tf.data import pipeline

    dataset = pipeline.make_dataset(source.repeat(), skeleton, num_stacks, batch_size, input_size=input_size, seed=0)
    iterator = iter(dataset)

    def consume():
        for _ in range(batches):
            next(iterator)

    seconds = _median_seconds(consume, repeats)
    return {
        "images_per_s": batches * batch_size / seconds,
        "seconds": seconds,
        "repeats": repeats,
        "batch_size": batch_size,
        "input_size": input_size,
        "batches": batches,
    }


# ---------------------------------------------------------------- cases (each in its own process)


def save_weights_npz(model, path):
    """Every layer's weights as ``"{layer name}/{index}"`` arrays in an .npz (``torch_hourglass.load_npz`` reads it)."""
    arrays = {f"{layer.name}/{i}": np.asarray(w) for layer in model.layers for i, w in enumerate(layer.get_weights())}
    np.savez(path, **arrays)
    return path


def _model_info(model_dir):
    return json.loads((pathlib.Path(model_dir) / "bench_model.json").read_text())


def prepare_models(model_dir, num_stacks, filters, input_size, backends):
    """Builds a random-weight model and exports what ``backends`` need into ``model_dir`` (kept between runs)."""
    model_dir = pathlib.Path(model_dir)
    info_path = model_dir / "bench_model.json"
    need = {"keras"}
    need |= {"saved_model"} if "saved_model" in backends else set()
    need |= {"tflite"} if any(b.startswith("tflite") for b in backends) else set()
    need |= {"onnx"} if "onnxruntime" in backends else set()
    quantized = {q for q in ("fp16", "int8") if f"tflite_{q}" in backends}
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if need <= set(info["formats"]) and quantized <= set(info["quantized"]):
            return info
    import keras

    from hourglass_tf import export
    from hourglass_tf.model import build_model, conv_flops

    keras.utils.set_random_seed(0)
    model = build_model(num_stacks=num_stacks, filters=filters, input_size=input_size)
    start = time.perf_counter()
    export.export_model(
        model, model_dir, formats=[f for f in export.FORMATS if f in need], overwrite=True, skeleton="mpii"
    )
    calibration = np.random.default_rng(0).random((8, input_size, input_size, 3), dtype=np.float32)
    for q in sorted(quantized):
        export._export_tflite(model, model_dir, "float16" if q == "fp16" else "int8", calibration)
    info = {
        "num_stacks": num_stacks,
        "filters": filters,
        "input_size": input_size,
        "flops": conv_flops(model),
        "formats": sorted(need),
        "quantized": sorted(quantized),
        "export_seconds": time.perf_counter() - start,
    }
    info_path.write_text(json.dumps(info, indent=2))
    return info


def _inference_function(backend, model_dir):
    """A callable (N, R, R, 3) float32 crops -> NumPy heatmaps, for one backend."""
    model_dir = pathlib.Path(model_dir)
    if backend in ("keras_eager", "tf_function", "xla", "tf_function_bf16"):
        import keras
        import tensorflow as tf

        from hourglass_tf.backends import KerasRunner
        from hourglass_tf.model import output_names

        model = keras.models.load_model(model_dir / "model.keras")
        last = output_names(model)[-1]
        if backend == "tf_function_bf16":
            model = bfloat16_copy(model)
        if backend in ("tf_function", "tf_function_bf16"):
            return KerasRunner(model).raw
        if backend == "keras_eager":
            return lambda crops: model(crops, training=False)[last].numpy()
        compiled = tf.function(lambda crops: model(crops, training=False)[last], jit_compile=True)
        return lambda crops: compiled(tf.constant(crops)).numpy()
    from hourglass_tf import backends

    if backend == "saved_model":
        return backends.SavedModelRunner(model_dir / "saved_model" / "1").raw
    if backend.startswith("tflite"):
        name = {
            "tflite_fp32": "model.tflite",
            "tflite_fp16": "model_float16.tflite",
            "tflite_int8": "model_int8.tflite",
        }
        return backends.TFLiteRunner(model_dir / name[backend]).raw
    if backend == "onnxruntime":
        return backends.OnnxRunner(model_dir / "model.onnx").raw
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


def bfloat16_copy(model):
    """The same network and weights built under Keras' ``mixed_bfloat16`` policy (heatmaps stay float32)."""
    import keras

    from hourglass_tf.model import architecture_of, build_model

    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        copy = build_model(**architecture_of(model))
    finally:
        keras.mixed_precision.set_global_policy(policy)
    copy.set_weights(model.get_weights())
    return copy


def inference_case(model_dir, backend, batch_sizes=(1, 8), repeats=5):
    """Seconds per batch and images/s of ``backend`` on the model in ``model_dir`` (random crops)."""
    info = _model_info(model_dir)
    size = info["input_size"]
    start = time.perf_counter()
    function = _inference_function(backend, model_dir)
    result = {
        "backend": backend,
        "num_stacks": info["num_stacks"],
        "load_seconds": time.perf_counter() - start,
        "rss_loaded_mb": current_rss_mb(),
        "batches": {},
    }
    rng = np.random.default_rng(0)
    for batch in batch_sizes:
        crops = rng.random((batch, size, size, 3), dtype=np.float32)
        seconds = _median_seconds(lambda crops=crops: function(crops), repeats, warmup=2)
        result["batches"][str(batch)] = {
            "seconds": seconds,
            "images_per_s": batch / seconds,
            "gflops_per_s": info["flops"] * batch / seconds / 1e9,
        }
    return result


def compiled_training_model(
    num_stacks, filters=256, input_size=256, batch_size=8, num_joints=16, jit_compile=False, fused_batch_norm=True
):
    """A seeded stacked hourglass compiled with RMSprop and per-stack MSE, and one random batch for it.

    ``fused_batch_norm`` trains batch norm with TF's fused kernel, as ``scripts/train.py`` does by default
    (``hourglass_tf.batchnorm``); False keeps Keras' own element-wise computation.

    Returns:
      (model, images (B, R, R, 3) float32, targets {stack_i: (B, R/4, R/4, K) float32}).
    """
    import keras

    from hourglass_tf.batchnorm import use_fused_batch_norm
    from hourglass_tf.model import build_model, output_names
    from hourglass_tf.train import compile_for_training

    keras.utils.set_random_seed(0)
    model = build_model(num_stacks=num_stacks, filters=filters, input_size=input_size, num_joints=num_joints)
    if fused_batch_norm:
        use_fused_batch_norm(model)
    compile_for_training(model, keras.optimizers.RMSprop(2.5e-4), jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, input_size, input_size, 3), dtype=np.float32)
    y = {
        n: rng.random((batch_size, input_size // 4, input_size // 4, num_joints), dtype=np.float32)
        for n in output_names(model)
    }
    return model, x, y


def train_step_case(num_stacks, batch_size=8, input_size=256, filters=256, repeats=3, variant="plain"):
    """Seconds per compiled RMSprop training step (``train_on_batch``, the ``model.fit`` step).

    ``variant``: ``plain`` (float32, batch norm on TF's fused kernel as in training), ``stock_batch_norm``
    (float32, Keras' own element-wise batch norm), ``xla`` (jit_compile) or ``mixed_precision`` (bfloat16
    on CPU, float16 on GPU; outputs and loss float32).
    """
    import keras

    from hourglass_tf.model import conv_flops
    from hourglass_tf.train import mixed_precision_policy

    if variant not in TRAIN_VARIANTS:
        raise ValueError(f"variant must be one of {TRAIN_VARIANTS}, received variant={variant!r}")
    if variant == "mixed_precision":
        keras.mixed_precision.set_global_policy(mixed_precision_policy())
    model, x, y = compiled_training_model(
        num_stacks,
        filters,
        input_size,
        batch_size,
        jit_compile=variant == "xla",
        fused_batch_norm=variant != "stock_batch_norm",
    )
    start = time.perf_counter()
    model.train_on_batch(x, y)  # traces and compiles the train function
    first = time.perf_counter() - start
    seconds = _median_seconds(lambda: model.train_on_batch(x, y), repeats, warmup=1)
    flops = 3 * conv_flops(model)
    return {
        "num_stacks": num_stacks,
        "variant": variant,
        "batch_size": batch_size,
        "input_size": input_size,
        "filters": filters,
        "seconds": seconds,
        "images_per_s": batch_size / seconds,
        "first_step_seconds": first,
        "gflops_per_s": flops * batch_size / seconds / 1e9,
        "train_flops_per_image": flops,
    }


def people_case(repeats=5, people_counts=(1, 4, 8), frames=200, frame_size=(480, 640)):
    """The photo-to-poses path with the LSPET-size model (random weights, flip test): people per second for
    1, 4 and 8 people in one 640 x 480 image (crop, network, decode, back-projection), and end-to-end video
    frames per second for one tracked person (detector every 30 frames, One-Euro filter), with the process's
    memory at frame 20 and at the end (flat: no growth per frame)."""
    import numpy as np

    from hourglass_tf import metadata, people, skeleton, tracking
    from hourglass_tf.data.synthetic import render_video
    from hourglass_tf.inference import Predictor
    from hourglass_tf.model import build_model

    model = build_model(**LSPET_SIZE)
    predictor = Predictor(model, info=metadata.describe(model, skeleton.LSP))
    estimator = people.PoseEstimator(predictor, "whole_image")
    image = np.random.default_rng(0).integers(0, 256, (*frame_size, 3), dtype=np.uint8)
    boxes = np.random.default_rng(1).uniform([0, 0, 60, 120], [500, 300, 140, 180], (max(people_counts), 4))
    out = {"model": LSPET_SIZE, "people": {}}
    for n in people_counts:
        seconds = _median_seconds(lambda n=n: estimator.estimate(image, boxes[:n]), repeats)
        out["people"][str(n)] = {"seconds": seconds, "people_per_s": n / seconds}
    video, truth = render_video(seed=0, num_frames=frames, image_size=frame_size, num_people=1)
    box = people.box_of_keypoints(np.column_stack([truth[0, 0], np.ones(len(truth[0, 0]))]))
    detector = people.PoseEstimator(predictor, lambda frame: box[None])
    tracker = tracking.Tracker(detector, detect_every=30, lost_score=-math.inf)  # random weights: never "lost"
    for t in range(3):  # compile
        tracker(video[t], t / 25)
    tracker = tracking.Tracker(detector, detect_every=30, lost_score=-math.inf)
    rss = {}
    start = time.perf_counter()
    for t in range(frames):
        tracker(video[t], t / 25)
        if t in (19, frames - 1):
            rss[t + 1] = current_rss_mb()
    seconds = time.perf_counter() - start
    out["video"] = {
        "frames": frames,
        "frame_size": list(frame_size[::-1]),
        "frames_per_second": frames / seconds,
        "detector_runs": tracker.detector_runs,
        "rss_mb_at_frame_20": rss.get(20),
        "rss_mb_at_end": rss.get(frames),
    }
    return out


def _case_main(case):
    kind = case.pop("kind")
    function = {
        "prepare": prepare_models,
        "inference": inference_case,
        "train": train_step_case,
        "people": people_case,
    }[kind]
    result = function(**case)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def run_case(case, default_allocators=False, timeout=3600, python=None, script=None):
    """Runs one case in a fresh Python process; its result dict, or {"error": ...} when it failed.

    ``python`` and ``script`` default to this interpreter and this file; the side-by-side runs PyTorch's cases
    with ``python=<a Python with PyTorch>`` and ``script=TORCH_SCRIPT``.
    """
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if default_allocators:
        env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
        env["HOURGLASS_TF_TUNE_ALLOCATORS"] = "0"
    command = [python or sys.executable, str(script or pathlib.Path(__file__).resolve()), json.dumps(case)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    except OSError as error:
        return {"error": f"cannot run {command[0]}: {error}"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
            result["default_allocators"] = default_allocators
            return result
    tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
    return {"error": f"exit status {done.returncode}: " + " | ".join(tail)}


# ---------------------------------------------------------------- side by side with PyTorch

TORCH_SCRIPT = REPO / "benchmarks" / "torch_hourglass.py"
SIDE_BY_SIDE_TARGETS = {
    "inference_ratio": 0.5,  # package time / PyTorch's best, same precision, batch 1 and 8
    "bf16_train_ratio": 0.8,
    "fp32_train_ratio": 1.0,  # float32 keeps its lead
    "first_step_seconds": 30.0,
    "train_memory_ratio": 1.0,  # peak RSS, float32, against PyTorch's
}
TF_INFERENCE = {"float32": ("tf_function", "tflite_fp32"), "bfloat16": ("tf_function_bf16",)}  # package runners
TF_TRAINING = {"float32": "plain", "bfloat16": "mixed_precision"}


def _median_of(results, *path):
    values = []
    for result in results:
        value = result
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (int, float)):
            values.append(value)
    return statistics.median(values) if values else None


def side_by_side(
    work_dir,
    torch_python,
    num_stacks=8,
    filters=256,
    input_size=256,
    rounds=2,
    repeats=5,
    train_repeats=3,
    precisions=("float32", "bfloat16"),
    progress=False,
):
    """The package against PyTorch (``TORCH_SCRIPT`` run by ``torch_python``) on the same network, interleaved:
    every case alternates package, PyTorch, package, PyTorch ... (``rounds`` times each for inference, once for
    training), each in a fresh process; reports the medians and their ratio (package / PyTorch).

    Inference: the package's runners (``TF_INFERENCE``: the compiled ``tf.function``, what ``predict.py`` and
    the estimator use for a ``.keras`` model, and LiteRT for an exported ``.tflite``; bfloat16 through Keras'
    ``mixed_bfloat16`` policy) against PyTorch eager ``inference_mode``, the faster of NCHW and channels-last
    (bfloat16 through CPU autocast), batch 1 and 8; the ratio and target use the package's fastest runner.
    Training: the compiled Keras RMSprop step (fused batch norm; ``mixed_precision``) against PyTorch's RMSprop
    step (channels-last; autocast), batch 8, with each side's first step and peak memory.
    """
    model_dir = pathlib.Path(work_dir) / "models" / f"s{num_stacks}_f{filters}_r{input_size}"
    out = {
        "num_stacks": num_stacks,
        "filters": filters,
        "input_size": input_size,
        "rounds": rounds,
        "inference": {},
        "train": {},
    }
    probe = run_case(
        {"kind": "inference", "num_stacks": 1, "filters": 16, "input_size": 64, "batch_sizes": [1], "repeats": 1},
        python=torch_python,
        script=TORCH_SCRIPT,
    )
    if "error" in probe:
        out["error"] = f"{torch_python} cannot run the PyTorch reference: {probe['error']}"
        return out
    info = run_case(
        {
            "kind": "prepare",
            "model_dir": str(model_dir),
            "num_stacks": num_stacks,
            "filters": filters,
            "input_size": input_size,
            "backends": sorted({runner for p in precisions for runner in TF_INFERENCE[p]}),
        }
    )
    if "error" in info:
        out["error"] = info["error"]
        return out
    out["torch"] = probe.get("torch")

    def torch_case(**case):
        model = {"num_stacks": num_stacks, "filters": filters, "input_size": input_size}
        return run_case({**model, **case}, python=torch_python, script=TORCH_SCRIPT)

    for precision in precisions:
        runners = TF_INFERENCE[precision]
        runs = {runner: [] for runner in (*runners, "torch")}
        for r in range(rounds):
            for runner in runners:
                case = {"kind": "inference", "model_dir": str(model_dir), "backend": runner, "repeats": repeats}
                runs[runner].append(run_case(case))
            runs["torch"].append(torch_case(kind="inference", precision=precision, repeats=repeats))
            said = "; ".join(f"{name} {_short(results[-1])}" for name, results in runs.items())
            _log(progress, f"side by side, inference {precision}, round {r + 1}: {said}")
        out["inference"][precision] = {"runs": runs, "batches": {}}
        for batch in ("1", "8"):
            times = {runner: _median_of(runs[runner], "batches", batch, "seconds") for runner in runners}
            times = {runner: t for runner, t in times.items() if t}
            best = min(times, key=times.get) if times else None
            torch = _median_of(runs["torch"], "batches", batch, "seconds")
            layouts = [r["batches"][batch]["layout"] for r in runs["torch"] if "error" not in r]
            out["inference"][precision]["batches"][batch] = {
                "runners": times,
                "runner": best,
                "package": times.get(best),
                "torch": torch,
                "torch_layout": layouts[0] if layouts else None,
                "ratio": times[best] / torch if best and torch else None,
            }
    for precision in precisions:
        package = run_case(
            {
                "kind": "train",
                "num_stacks": num_stacks,
                "batch_size": 8,
                "input_size": input_size,
                "filters": filters,
                "repeats": train_repeats,
                "variant": TF_TRAINING[precision],
            }
        )
        torch = torch_case(kind="train", batch_size=8, repeats=train_repeats, precision=precision)
        _log(progress, f"side by side, training {precision}: package {_short(package)}; PyTorch {_short(torch)}")
        row = {"package": package, "torch": torch}
        if "error" not in package and "error" not in torch:
            row["ratio"] = package["seconds"] / torch["seconds"]
            row["memory_ratio"] = package["peak_rss_mb"] / torch["peak_rss_mb"]
            row["first_step_ratio"] = package["first_step_seconds"] / torch["first_step_seconds"]
        out["train"][precision] = row
    return out


def _side_by_side_targets(sbs):
    targets = []
    stacks = sbs["num_stacks"]
    for precision, entry in sbs.get("inference", {}).items():
        for batch, row in entry["batches"].items():
            if row["ratio"] is not None:
                targets.append(
                    _target(
                        f"inference, {stacks} stacks, batch {batch}, {precision}: package ({row['runner']}) / "
                        "PyTorch time",
                        row["ratio"],
                        SIDE_BY_SIDE_TARGETS["inference_ratio"],
                        "<=",
                    )
                )
    for precision, row in sbs.get("train", {}).items():
        if "ratio" not in row:
            continue
        goal = SIDE_BY_SIDE_TARGETS["bf16_train_ratio" if precision == "bfloat16" else "fp32_train_ratio"]
        name = f"training step, {stacks} stacks, batch 8, {precision}"
        targets.append(_target(f"{name}: package / PyTorch time", row["ratio"], goal, "<="))
        targets.append(
            _target(
                f"{name}: package's first step (s)",
                row["package"]["first_step_seconds"],
                SIDE_BY_SIDE_TARGETS["first_step_seconds"],
                "<=",
            )
        )
        if precision == "float32":
            targets.append(
                _target(
                    f"{name}: package / PyTorch peak memory",
                    row["memory_ratio"],
                    SIDE_BY_SIDE_TARGETS["train_memory_ratio"],
                    "<=",
                )
            )
    return targets


# ---------------------------------------------------------------- the suite


def _log(progress, message):
    if progress:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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
    from hourglass_tf.backends import cpu_threads

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
        "pipeline": {},
        "models": {},
        "inference": {},
        "train_step": {},
    }
    _log(progress, f"GEMM {results['gemm']['gflops']:.1f} GFLOP/s")
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
        results["side_by_side"] = side_by_side(
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
    _derive(results)
    return results


def _main_suite(results, work_dir, shared_data, plan):
    """Everything but the side-by-side: pipeline, inference per backend, training variants, people (``run``)."""
    from hourglass_tf.data import pipeline, readers, synthetic, tfrecords

    syn_root = work_dir / "synthetic"
    if not (syn_root / "annot" / "train.json").exists():
        synthetic.generate(syn_root, num_train=64 if plan.quick else 256, num_valid=0, image_size=256, seed=0)

    sources = {}
    samples = readers.load_dataset("synthetic", syn_root, "train")
    sources["synthetic (JPEG files)"] = (
        pipeline.samples_to_dataset(samples, syn_root),
        readers.skeleton_of("synthetic"),
    )
    if shared_data is not None and (pathlib.Path(shared_data) / "lspet" / "joints.mat").exists():
        shard_dir = work_dir / f"lspet_tfr_{plan.input_size}{'_quick' if plan.quick else ''}"
        if not (shard_dir / "meta.json").exists():
            lspet = readers.load_dataset("lspet", pathlib.Path(shared_data) / "lspet", "train")
            lspet = lspet[:512] if plan.quick else lspet
            report = tfrecords.write_shards(
                lspet, pathlib.Path(shared_data) / "lspet", shard_dir, "train", plan.input_size, progress=False
            )
            tfrecords.write_meta(
                shard_dir, {"dataset": "lspet", "num_joints": 14, "splits": {"train": report.as_dict()}}
            )
        sources["LSPET (TFRecord shards)"] = (
            tfrecords.read_shards(shard_dir, "train", 14),
            readers.skeleton_of("lspet"),
        )
    for name, (source, skel) in sources.items():
        results["pipeline"][name] = pipeline_rate(
            source, skel, plan.input_size, batches=plan.batches, repeats=plan.repeats
        )
        _log(plan.progress, f"pipeline {name}: {results['pipeline'][name]['images_per_s']:.0f} images/s")

    largest = max(plan.infer_stacks)
    for stacks in plan.infer_stacks:
        model_dir = work_dir / "models" / f"s{stacks}_f{plan.filters}_r{plan.input_size}"
        _log(plan.progress, f"exporting the {stacks}-stack model for {', '.join(plan.backends)}")
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
            _log(plan.progress, f"  export failed: {info['error']}")
            continue
        runs = [(backend, False) for backend in plan.backends]
        if plan.allocator_comparison and stacks == largest and "tf_function" in plan.backends:
            runs.append(("tf_function", True))
        for backend, default_alloc in runs:
            key = f"{stacks} stacks, {backend}" + (", default allocators" if default_alloc else "")
            case = {"kind": "inference", "model_dir": str(model_dir), "backend": backend, "repeats": plan.repeats}
            results["inference"][key] = run_case(case, default_allocators=default_alloc)
            _log(plan.progress, f"inference {key}: {_short(results['inference'][key])}")

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
            _log(plan.progress, f"training {key}: {_short(results['train_step'][key])}")

    results["people"] = run_case({"kind": "people", "repeats": plan.repeats, "frames": 40 if plan.quick else 300})
    if "error" in results["people"]:
        _log(plan.progress, f"people: failed: {results['people']['error']}")
    else:
        video = results["people"]["video"]
        _log(plan.progress, f"people: video {video['frames_per_second']:.1f} frames/s")


def _short(result):
    if "error" in result:
        return "failed: " + result["error"]
    if "batches" in result:
        return ", ".join(f"batch {b}: {r['seconds'] * 1000:.0f} ms" for b, r in result["batches"].items())
    return f"{result['seconds']:.2f} s/step, first {result['first_step_seconds']:.0f} s, peak {result['peak_rss_mb']:.0f} MB"


def _derive(results):
    """Adds utilisation, pipeline margins and the target checks."""
    gemm = results["gemm"]["gflops"]
    results.setdefault("pipeline", {})
    for result in results["inference"].values():
        for batch in result.get("batches", {}).values():
            batch["utilisation"] = batch["gflops_per_s"] / gemm
    slowest_pipeline = min((r["images_per_s"] for r in results["pipeline"].values()), default=None)
    for result in results["train_step"].values():
        if "error" in result:
            continue
        result["utilisation"] = result["gflops_per_s"] / gemm
        if slowest_pipeline:
            result["pipeline_margin"] = slowest_pipeline / result["images_per_s"]
    targets = []
    ok = {k: v for k, v in results["train_step"].items() if "error" not in v}
    plain = [v for v in ok.values() if v["variant"] == "plain" and not v["default_allocators"]]
    if plain:
        step = max(plain, key=lambda v: v["num_stacks"])
        name = f"training step, {step['num_stacks']} stacks, batch 8"
        targets.append(
            _target(f"{name}: fraction of the GEMM rate", step["utilisation"], TARGETS["train_utilisation"], ">=")
        )
        targets.append(_target(f"{name}: peak memory (GB)", step["peak_rss_mb"] / 1000, TARGETS["train_peak_gb"], "<="))
        for v in plain:
            if "pipeline_margin" in v:
                targets.append(
                    _target(
                        f"input pipeline / training consumption, {v['num_stacks']} stacks",
                        v["pipeline_margin"],
                        TARGETS["pipeline_margin"],
                        ">=",
                    )
                )
    infer = [v for v in results["inference"].values() if "error" not in v and not v["default_allocators"]]
    if infer:
        stacks = max(v["num_stacks"] for v in infer)
        for v in infer:
            if v["num_stacks"] != stacks or v["backend"] not in PACKAGE_BACKENDS or "8" not in v["batches"]:
                continue
            name = f"inference, {stacks} stacks, batch 8, {v['backend']}"
            targets.append(
                _target(
                    f"{name}: fraction of the GEMM rate",
                    v["batches"]["8"]["utilisation"],
                    TARGETS["inference_utilisation"],
                    ">=",
                )
            )
            targets.append(
                _target(f"{name}: peak memory (GB)", v["peak_rss_mb"] / 1000, TARGETS["inference_peak_gb"], "<=")
            )
    if "side_by_side" in results and "error" not in results["side_by_side"]:
        targets += _side_by_side_targets(results["side_by_side"])
    video = results.get("people", {}).get("video")
    if video:
        targets.append(
            _target(
                "video, one tracked person, 640 x 480, LSPET-size model: frames/s",
                video["frames_per_second"],
                TARGETS["video_fps"],
                ">=",
            )
        )
    results["targets"] = targets


def _target(name, measured, target, sense):
    met = measured >= target if sense == ">=" else measured <= target
    return {"name": name, "measured": measured, "target": target, "sense": sense, "met": bool(met)}


def markdown(results):
    """Markdown tables of ``run``'s results."""
    gemm = results["gemm"]
    lines = [
        f"Machine: {results['machine']['processor']}, {results['machine']['cpu_threads']} CPU threads; "
        f"NumPy float32 GEMM ({gemm['size']}^3): **{gemm['gflops']:.1f} GFLOP/s** (the utilisation reference). "
        f"Allocators: {results['settings']['allocators']}.",
        "",
    ]
    if results["pipeline"]:
        lines += ["| input pipeline (augmented, batch 8) | images/s |", "|---|---|"]
        for name, r in results["pipeline"].items():
            lines.append(f"| {name}, {r['input_size']} px | {r['images_per_s']:.0f} |")
    if results["inference"]:
        flops = {k: v.get("flops") for k, v in results["models"].items()}
        lines += [
            "",
            "Inference (random crops, float32 in; forward FLOPs from the layer shapes: "
            + ", ".join(f"{k} {f / 1e9:.2f} GFLOP" for k, f in flops.items() if f)
            + " per image)",
            "",
            "| model | backend | batch 1 latency | batch 8 time | batch 8 images/s | batch 8 GFLOP/s | of GEMM | peak RSS |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key, r in results["inference"].items():
            stacks = key.split(",")[0]
            title = BACKEND_TITLES.get(r.get("backend"), key) + (
                ", default allocators" if r.get("default_allocators") else ""
            )
            if "error" in r:
                lines.append(f"| {stacks} | {key.split(', ', 1)[1]} | failed: {r['error'][:120]} | | | | | |")
                continue
            b1, b8 = r["batches"].get("1"), r["batches"].get("8")
            cells = [
                f"{b1['seconds'] * 1000:.0f} ms" if b1 else "",
                f"{b8['seconds']:.2f} s" if b8 else "",
                f"{b8['images_per_s']:.2f}" if b8 else "",
                f"{b8['gflops_per_s']:.0f}" if b8 else "",
                f"{b8['utilisation']:.0%}" if b8 else "",
            ]
            lines.append(f"| {stacks} | {title} | " + " | ".join(cells) + f" | {r['peak_rss_mb'] / 1000:.2f} GB |")
    if results["train_step"]:
        lines += [
            "",
            "Training step (batch 8, RMSprop, `train_on_batch` = the `model.fit` step; 3x forward FLOPs)",
            "",
            "| model | variant | s / step | images/s | GFLOP/s | of GEMM | first step (tracing) | peak RSS | pipeline margin |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for key, r in results["train_step"].items():
            stacks, variant = key.split(", ", 1)
            if "error" in r:
                lines.append(f"| {stacks} | {variant} | failed: {r['error'][:120]} | | | | | | |")
                continue
            margin = f"{r['pipeline_margin']:.0f}x" if "pipeline_margin" in r else ""
            lines.append(
                f"| {stacks} | {variant} | {r['seconds']:.2f} | {r['images_per_s']:.2f} | {r['gflops_per_s']:.0f} | "
                f"{r['utilisation']:.0%} | {r['first_step_seconds']:.0f} s | {r['peak_rss_mb'] / 1000:.2f} GB | {margin} |"
            )
    found = results.get("people", {})
    if "people" in found:
        model = found["model"]
        lines += [
            "",
            f"Photo to poses (LSPET-size model: {model['num_stacks']} stacks x {model['filters']} at "
            f"{model['input_size']} px, flip test; one 640 x 480 image, every person in one batch)",
            "",
            "| people in the image | time | people/s |",
            "|---|---|---|",
        ]
        for n, r in found["people"].items():
            lines.append(f"| {n} | {r['seconds'] * 1000:.1f} ms | {r['people_per_s']:.0f} |")
        v = found["video"]
        growth = (
            f"{v['rss_mb_at_end'] - v['rss_mb_at_frame_20']:+.0f} MB from frame 20 to {v['frames']}"
            if v.get("rss_mb_at_end") and v.get("rss_mb_at_frame_20")
            else "n/a"
        )
        lines += [
            "",
            f"Video, one tracked person, {v['frame_size'][0]} x {v['frame_size'][1]}: **{v['frames_per_second']:.1f} "
            f"frames/s** end to end ({v['frames']} frames, detector {v['detector_runs']} times, One-Euro filter); "
            f"memory {growth}.",
        ]
    elif "error" in found:
        lines += ["", f"Photo to poses: failed: {found['error'][:200]}"]
    lines += _side_by_side_markdown(results.get("side_by_side"))
    if results.get("targets"):
        lines += ["", "| target | measured | goal | met |", "|---|---|---|---|"]
        for t in results["targets"]:
            lines.append(
                f"| {t['name']} | {t['measured']:.2f} | {t['sense']} {t['target']:g} | {'yes' if t['met'] else '**no**'} |"
            )
    return "\n".join(lines) + "\n"


def _side_by_side_markdown(sbs):
    if not sbs:
        return []
    if "error" in sbs:
        return ["", f"Side by side with PyTorch: failed: {sbs['error'][:300]}"]
    stacks = sbs["num_stacks"]
    lines = [
        "",
        f"Side by side with PyTorch {sbs.get('torch', '')} (same network, {stacks} stacks x {sbs['filters']}, "
        f"{sbs['input_size']} px, random data, interleaved, each case in a fresh process; inference medians of "
        f"{sbs['rounds']} rounds; PyTorch eager, its faster layout)",
        "",
        "| case | hourglass_tf | PyTorch best | ratio |",
        "|---|---|---|---|",
    ]
    for precision, entry in sbs["inference"].items():
        for batch, row in entry["batches"].items():
            if row["ratio"] is None:
                lines.append(f"| inference, batch {batch}, {precision} | failed | | |")
                continue
            for runner, seconds in row["runners"].items():
                ratio = f"{seconds / row['torch']:.2f}"
                lines.append(
                    f"| inference, batch {batch}, {precision}, {BACKEND_TITLES.get(runner, runner)} | "
                    f"{seconds * 1000:.0f} ms | {row['torch'] * 1000:.0f} ms ({row['torch_layout']}) | "
                    + (f"**{ratio}** |" if runner == row["runner"] else f"{ratio} |")
                )
    for precision, row in sbs["train"].items():
        if "ratio" not in row:
            error = row["package"].get("error") or row["torch"].get("error")
            lines.append(f"| training step, batch 8, {precision} | failed: {error[:150]} | | |")
            continue
        package, torch = row["package"], row["torch"]
        lines += [
            f"| training step, batch 8, {precision} | {package['seconds']:.2f} s | {torch['seconds']:.2f} s | "
            f"**{row['ratio']:.2f}** |",
            f"| first training step, {precision} | {package['first_step_seconds']:.1f} s | "
            f"{torch['first_step_seconds']:.1f} s | {row['first_step_ratio']:.2f} |",
            f"| peak process memory, training, {precision} | {package['peak_rss_mb'] / 1000:.2f} GB | "
            f"{torch['peak_rss_mb'] / 1000:.2f} GB | {row['memory_ratio']:.2f} |",
        ]
    return lines


def write(results, output_dir):
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "bench.json").write_text(json.dumps(results, indent=2))
    (output_dir / "bench.md").write_text(markdown(results))
    return output_dir / "bench.json", output_dir / "bench.md"


def default_work_dir():
    return pathlib.Path(tempfile.gettempdir()) / "hourglass_tf_bench"


if __name__ == "__main__":  # one case, in its own process: python benchmarks/benchmark.py '{"kind": ...}'
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/benchmark.py CASE_JSON")
    sys.path.insert(0, str(REPO))
    from hourglass_tf import runtime

    runtime.tune_allocators()  # as the package's scripts do (HOURGLASS_TF_TUNE_ALLOCATORS=0: the defaults rows)
    print(RESULT_PREFIX + json.dumps(_case_main(json.loads(sys.argv[1]))), flush=True)
