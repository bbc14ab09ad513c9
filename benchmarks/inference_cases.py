"""Inference cases: a random-weight model exported once per size (``prepare_models``), then seconds per batch of
each backend (``inference_case``: batch 1 and 8, images/s and GFLOP/s)."""

import json
import pathlib
import time

import numpy as np

from benchmarks.measure import current_rss_mb, median_seconds

BACKENDS = (
    "keras_eager",
    "tf_function",
    "tf_function_unfolded",
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

BACKEND_TITLES = {
    "keras_eager": "Keras eager `model(x)`",
    "tf_function": "compiled `tf.function`, batch norm folded (predict CLI, evaluation)",
    "tf_function_unfolded": "compiled `tf.function`, batch norm as trained",
    "xla": "`tf.function(jit_compile=True)` (XLA)",
    "saved_model": "SavedModel `serving_default` (uint8 in, decoding inside)",
    "tflite_fp32": "TFLite fp32 (LiteRT)",
    "tflite_fp16": "TFLite float16 weights",
    "tflite_int8": "TFLite int8",
    "onnxruntime": "ONNX Runtime",
    "tf_function_bf16": "compiled `tf.function`, batch norm folded, bfloat16 (`--precision=bfloat16`)",
}


def save_weights_npz(model, path):
    """Every layer's weights as ``"{layer name}/{index}"`` arrays in an .npz (``torch_hourglass.load_npz`` reads it)."""
    arrays = {f"{layer.name}/{i}": np.asarray(w) for layer in model.layers for i, w in enumerate(layer.get_weights())}
    np.savez(path, **arrays)
    return path


def model_info(model_dir):
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


def inference_function(backend, model_dir):
    """A callable (N, R, R, 3) float32 crops -> NumPy heatmaps, for one backend."""
    model_dir = pathlib.Path(model_dir)
    if backend in ("keras_eager", "tf_function", "tf_function_unfolded", "xla", "tf_function_bf16"):
        import keras
        import tensorflow as tf

        from hourglass_tf.backends import KerasRunner
        from hourglass_tf.model import bfloat16_copy, fold_batch_norm, output_names

        model = keras.models.load_model(model_dir / "model.keras")
        last = output_names(model)[-1]
        if backend in ("tf_function", "tf_function_bf16"):
            model = fold_batch_norm(model)  # as backends.load_runner runs a .keras file
        if backend == "tf_function_bf16":
            model = bfloat16_copy(model)
        if backend in ("tf_function", "tf_function_unfolded", "tf_function_bf16"):
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


def inference_case(model_dir, backend, batch_sizes=(1, 8), repeats=5):
    """Seconds per batch and images/s of ``backend`` on the model in ``model_dir`` (random crops)."""
    info = model_info(model_dir)
    size = info["input_size"]
    start = time.perf_counter()
    function = inference_function(backend, model_dir)
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
        seconds = median_seconds(lambda crops=crops: function(crops), repeats, warmup=2)
        result["batches"][str(batch)] = {
            "seconds": seconds,
            "images_per_s": batch / seconds,
            "gflops_per_s": info["flops"] * batch / seconds / 1e9,
        }
    return result
