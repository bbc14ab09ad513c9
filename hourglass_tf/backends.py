"""Heatmap runners for each model format, behind one interface used by ``inference.Predictor``.

A runner maps person crops (N, R, R, 3) float32 in [0, 1] to heatmaps (S, N, R/4, R/4, K):
every stack for a Keras model, the last stack (S = 1) for exported formats. With a flip
permutation it applies the paper's flip test: crops and mirrors in one batch, mirrored
heatmaps flipped back with left/right channels swapped, averaged.

``load_runner(path)`` picks the backend from the file: ``.keras`` (TensorFlow, or with ``runtime`` LiteRT
through a conversion made once and cached, ``litert_cache``); a SavedModel folder (or an ``exported/NAME``
folder: its SavedModel, or with ``runtime`` its ``model.tflite``); ``.tflite`` (LiteRT); ``.onnx`` (ONNX
Runtime). ``load_model_file(path, skeleton)`` adds the model's description (``metadata.ModelInfo``): the one
stored with the model, or one built from the named skeleton.
"""

import functools
import json
import os
import pathlib

import numpy as np
import tensorflow as tf

from hourglass_tf import litert_cache, metadata, pretrained
from hourglass_tf.geometry import average_with_mirror


def _to_uint8(crops):
    return np.clip(np.round(crops * 255.0), 0, 255).astype(np.uint8)


class Runner:
    """Base: subclasses set ``input_size``, ``heatmap_size``, ``num_joints`` and implement ``raw``."""

    flips_inside = False  # a SavedModel exported with --flip_test already averages the mirror
    source = None  # the file or folder it was loaded from
    runtime = "tensorflow"  # what runs the network: tensorflow, litert or onnxruntime

    def raw(self, crops):
        raise NotImplementedError

    def __call__(self, crops, flip_permutation=None):
        if flip_permutation is None or self.flips_inside:
            return self.raw(crops)
        n = len(crops)
        stacks = self.raw(np.concatenate([crops, crops[:, :, ::-1]]))
        return average_with_mirror(stacks[:, :n], stacks[:, n:], flip_permutation).numpy()


class KerasRunner(Runner):
    """A Keras model on a compiled ``tf.function`` (the flip test inside the graph)."""

    def __init__(self, model):
        from hourglass_tf.model import output_names

        self.model = model
        self.names = output_names(model)
        if not self.names:
            raise ValueError(f"model {model.name!r} has no stack_i outputs (outputs: {model.output_names})")
        last = model.get_layer(self.names[-1]).output
        self.input_size = int(model.inputs[0].shape[1])
        self.heatmap_size = int(last.shape[1])
        self.num_joints = int(last.shape[-1])
        spec = tf.TensorSpec([None, self.input_size, self.input_size, 3], tf.float32)
        self._plain = tf.function(self._forward, input_signature=[spec])
        self._flipped = {}

    def _forward(self, crops, flip_permutation=None):
        n = tf.shape(crops)[0]
        batch = crops if flip_permutation is None else tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)
        outputs = self.model(batch, training=False)
        stacks = tf.stack([tf.cast(outputs[name], tf.float32) for name in self.names])
        if flip_permutation is None:
            return stacks
        return average_with_mirror(stacks[:, :n], stacks[:, n:], flip_permutation)

    def raw(self, crops):
        return self._plain(tf.convert_to_tensor(crops, tf.float32)).numpy()

    def __call__(self, crops, flip_permutation=None):
        if flip_permutation is None:
            return self.raw(crops)
        key = tuple(int(i) for i in flip_permutation)
        if key not in self._flipped:
            spec = tf.TensorSpec([None, self.input_size, self.input_size, 3], tf.float32)
            self._flipped[key] = tf.function(lambda c: self._forward(c, key), input_signature=[spec])
        return self._flipped[key](tf.convert_to_tensor(crops, tf.float32)).numpy()


class SavedModelRunner(Runner):
    """The ``serving_default`` signature of an exported SavedModel (uint8 crops in)."""

    def __init__(self, path):
        path = pathlib.Path(path)
        self.source = path
        self.function = tf.saved_model.load(str(path)).signatures["serving_default"]
        spec = self.function.structured_input_signature[1]["images"]
        self.input_size = int(spec.shape[1])
        out = self.function.structured_outputs["heatmaps"]
        self.heatmap_size, self.num_joints = int(out.shape[1]), int(out.shape[-1])
        stored = path / "assets.extra" / metadata.FILENAME
        export = json.loads(stored.read_text()).get("export", {}) if stored.is_file() else {}
        self.flips_inside = bool(export.get("flip_test_in_graph", False))

    def raw(self, crops):
        return self.function(images=tf.constant(_to_uint8(crops)))["heatmaps"].numpy()[None]


def cpu_threads():
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class TFLiteRunner(Runner):
    """A ``.tflite`` file on the LiteRT interpreter, read through its signature runner.

    ``num_threads`` defaults to every core this process may use (LiteRT's own default is
    implementation-defined), as TensorFlow and ONNX Runtime do.
    """

    runtime = "litert"

    def __init__(self, path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        threads = cpu_threads() if num_threads is None else int(num_threads)
        if threads < 1:
            raise ValueError(f"num_threads must be >= 1, received num_threads={num_threads!r}")
        self.runner = Interpreter(model_path=str(path), num_threads=threads).get_signature_runner()
        ((self.input_name, detail),) = self.runner.get_input_details().items()
        ((self.output_name, out),) = self.runner.get_output_details().items()
        self.input_dtype = np.dtype(detail["dtype"])
        self.input_quantization = _quantization(detail)
        self.output_quantization = _quantization(out) if np.dtype(out["dtype"]).kind in "iu" else None
        self.input_size = int(detail["shape"][1])
        self.heatmap_size, self.num_joints = int(out["shape"][1]), int(out["shape"][-1])

    def raw(self, crops):
        images = np.asarray(crops, np.float32)
        if self.input_dtype.kind in "iu":  # a quantized input: real = scale * (q - zero_point)
            scale, zero = self.input_quantization
            info = np.iinfo(self.input_dtype)
            images = np.clip(np.round(images / scale + zero), info.min, info.max).astype(self.input_dtype)
        heatmaps = np.concatenate([self.runner(**{self.input_name: image[None]})[self.output_name] for image in images])
        if self.output_quantization is not None:
            scale, zero = self.output_quantization
            heatmaps = scale * (heatmaps.astype(np.float32) - zero)
        return np.asarray(heatmaps, np.float32)[None]


def _quantization(detail):
    """(scale, zero_point) of a LiteRT tensor; ValueError when a quantized tensor has none."""
    params = detail.get("quantization_parameters") or {}
    scales, zeros = params.get("scales", ()), params.get("zero_points", ())
    if len(scales) == 1:
        return float(scales[0]), int(zeros[0])
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind in "iu" and not scale:
        raise ValueError(f"the quantized tensor {detail.get('name')!r} has no per-tensor quantization parameters")
    return float(scale), int(zero)


class OnnxRunner(Runner):
    """A ``.onnx`` file on ONNX Runtime (CPU)."""

    runtime = "onnxruntime"

    def __init__(self, path):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (inp,), (out,) = self.session.get_inputs(), self.session.get_outputs()
        self.input_name = inp.name
        self.input_size = int(inp.shape[1])
        self.heatmap_size, self.num_joints = int(out.shape[1]), int(out.shape[-1])

    def raw(self, crops):
        return self.session.run(None, {self.input_name: np.asarray(crops, np.float32)})[0][None]


PRECISIONS = ("auto", "float32", "bfloat16")
BFLOAT16_TOLERANCE = 0.3  # PCK points a model may lose in bfloat16 and still run in it by default
# Forward FLOPs per image from which bfloat16 pays by default: measured 0.68x float32's time on the 8-stack model
# (55 GFLOP) at batch 1 and 8, but 1.3x at batch 1 on the LSPET model (0.86 GFLOP; 0.73x at batch 8), where per-op
# costs outweigh the arithmetic (docs/performance.md).
BFLOAT16_MIN_FLOPS = 10e9


def choose_precision(requested, path, info=None, flags=None, flops=None):
    """The precision a model file runs in: ``float32`` or ``bfloat16`` (a ``.keras`` model only, its batch norms
    folded and every layer but the outputs computing in bfloat16: ``model.bfloat16_copy``).

    ``requested``: one of ``PRECISIONS``. ``auto`` picks bfloat16 only for a ``.keras`` model on a CPU with
    bfloat16 arithmetic (``runtime.cpu_has_bfloat16(flags)``) whose description records a passed bfloat16 check
    (``provenance["bfloat16_check"]["passed"]``: its validation PCK in bfloat16 within ``BFLOAT16_TOLERANCE`` of
    float32) and whose forward pass is at least ``BFLOAT16_MIN_FLOPS`` per image (``flops``, when known);
    float32 otherwise.
    """
    from hourglass_tf import runtime

    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, received precision={requested!r}")
    keras_file = pathlib.Path(path).suffix.lower() == ".keras"
    if requested == "bfloat16" and not keras_file:
        raise ValueError(f"{path}: bfloat16 inference runs a .keras model; this format runs in its own precision")
    if requested != "auto":
        return requested
    check = (info.provenance.get("bfloat16_check") or {}) if info is not None else {}
    pays = flops is None or flops >= BFLOAT16_MIN_FLOPS
    return "bfloat16" if keras_file and check.get("passed") and pays and runtime.cpu_has_bfloat16(flags) else "float32"


RUNTIMES = ("auto", "tensorflow", "litert")


def load_runner(path, precision="float32", runtime=None, log=print):
    """The runner for a model file or folder (see the module docstring); ValueError naming it otherwise.

    ``precision``: one of ``PRECISIONS`` for a ``.keras`` file (``choose_precision``, with the model's size for
    ``auto``); the runner's ``precision`` says what it runs in.
    ``runtime``: what runs a ``.keras`` model, one of ``RUNTIMES``: ``tensorflow`` (a compiled ``tf.function``),
    ``litert`` (its TFLite conversion, made once and cached: ``litert_cache``) or ``auto`` (LiteRT for a model
    that runs in float32, TensorFlow for bfloat16 or when the conversion fails; ``log`` says which, and what was
    converted). None: each format's own runtime, TensorFlow for ``.keras``. An export folder runs its float32
    ``model.tflite`` on ``litert``, and on ``auto`` unless its SavedModel computes in bfloat16. Another format runs
    on its own runtime (asking another is a ValueError); the runner's ``runtime`` says which.
    """
    if runtime is not None and runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, received runtime={runtime!r}")
    if precision != "auto":
        choose_precision(precision, path)  # refuses an unknown precision, and bfloat16 for a format other than .keras
    path = pathlib.Path(path)
    if not path.exists():
        raise ValueError(pretrained.no_such_model(path))
    if path.is_dir():
        runner = _folder_runner(path, precision, runtime, log)
    else:
        suffix = path.suffix.lower()
        if suffix == ".keras":
            runner = _keras_runner(path, precision, runtime, log)
        elif suffix in (".tflite", ".onnx"):
            runner = _open(TFLiteRunner if suffix == ".tflite" else OnnxRunner, path)
            runner.precision = "float32"
        else:
            raise ValueError(
                f"{path}: unknown model format {suffix!r}; expected .keras, .tflite, .onnx or a SavedModel folder"
            )
        runner.source = path
    if runtime not in (None, "auto", runner.runtime):
        raise ValueError(f"{path} runs on {runner.runtime}; runtime={runtime!r} is a choice for a .keras model")
    return runner


def _folder_runner(path, precision, runtime, log):
    exported = _exported_tflite(path, runtime)
    if exported is not None:
        if runtime == "auto":
            log(f"{path} runs on LiteRT: its exported {exported.name} (--runtime=tensorflow runs its SavedModel)")
        return load_runner(exported, "float32", runtime, log)
    if (path / "saved_model.pb").is_file():
        return _saved_model_runner(path)
    # An export folder (its saved_model/ holds numbered versions), or that saved_model/ itself (TF Serving's
    # model base path): the highest version.
    numbered = [p for base in (path / "saved_model", path) for p in base.glob("*") if p.name.isdigit()]
    versions = sorted((p for p in numbered if (p / "saved_model.pb").is_file()), key=lambda p: int(p.name))
    if versions:
        return _saved_model_runner(versions[-1])
    for name in ("model.keras", "model.tflite", "model.onnx"):
        if (path / name).is_file():
            return load_runner(path / name, precision if name == "model.keras" else "float32", runtime, log)
    raise ValueError(
        f"{path}: no SavedModel (nor numbered SavedModel versions), model.keras, model.tflite or model.onnx inside"
    )


def _exported_tflite(folder, runtime):
    """An export folder's float32 ``model.tflite`` when ``runtime`` is ``litert``, or ``auto`` and the export's
    SavedModel computes in float32 (a bfloat16 one is faster: stays); else None."""
    tflite = folder / "model.tflite"
    if runtime not in ("auto", "litert") or not tflite.is_file():
        return None
    try:
        export = json.loads((folder / metadata.FILENAME).read_text()).get("export") or {}
    except (OSError, ValueError):
        export = {}
    return tflite if runtime == "litert" or export.get("precision", "float32") == "float32" else None


def _saved_model_runner(path):
    runner = _open(SavedModelRunner, path)
    runner.precision = "float32"
    return runner


def _keras_runner(path, precision, runtime, log):
    """A ``.keras`` model's runner: its batch norms folded, in the chosen precision, on the chosen runtime."""
    from hourglass_tf.model import bfloat16_copy, conv_flops, float32_copy, fold_batch_norm

    @functools.cache
    def model():
        return fold_batch_norm(float32_copy(metadata.load_keras_model(path)))

    target = litert_cache.entry(path) if runtime in ("auto", "litert") else None
    if precision == "auto":  # the model's size decides only where everything else allows bfloat16
        info = _keras_info(path)
        if choose_precision("auto", path, info) == "bfloat16":
            flops = litert_cache.remembered_flops(target) if target is not None else None  # spares loading it
            precision = choose_precision("auto", path, info, flops=conv_flops(model()) if flops is None else flops)
        else:
            precision = "float32"
    if runtime == "litert" and precision != "float32":
        raise ValueError(f"{path}: LiteRT runs the model in float32; {precision} runs on TensorFlow")
    runner = None
    if target is not None and precision == "float32":
        try:
            runner = _cached_litert_runner(path, target, model, log)
        except (litert_cache.ConversionError, OSError, ImportError) as err:
            if runtime == "litert":
                raise ValueError(f"{path}: cannot run on LiteRT: {err}") from err
            log(f"{path} runs on TensorFlow: its LiteRT conversion failed: {err}")
    if runner is None:
        runner = KerasRunner(bfloat16_copy(model()) if precision == "bfloat16" else model())
    runner.precision = precision
    return runner


def _cached_litert_runner(path, target, model, log):
    """A TFLiteRunner over the ``.keras`` file's cache entry ``target``, converting (``model()``: the folded float32
    Keras model) when there is none or it does not load; says which through ``log``."""
    if target.is_file():
        try:
            runner = _open(TFLiteRunner, target)
        except ValueError:  # not written by a completed conversion of this package: made again below
            pass
        else:
            log(f"{path} runs on LiteRT, through its TFLite conversion cached as {target}")
            litert_cache.used(target)
            runner.cache_entry = target
            return runner
    seconds = litert_cache.convert(model(), target, _litert_check(model()))
    log(
        f"{path} runs on LiteRT: converted to TFLite once ({seconds:.1f} s, checked against TensorFlow) and cached "
        f"as {target} (--runtime=tensorflow runs it on TensorFlow)"
    )
    runner = _open(TFLiteRunner, target)
    runner.cache_entry = target
    return runner


def _litert_check(model):
    """``check(tflite_path)`` for ``litert_cache.convert``: the file's heatmaps against ``model``'s on
    ``conversion.check_crops``, by the export's rule (``conversion.checked_deviation``)."""
    from hourglass_tf import conversion
    from hourglass_tf.model import output_names

    crops = conversion.check_crops(int(model.inputs[0].shape[1]))
    reference = np.asarray(model(crops, training=False)[output_names(model)[-1]], np.float32)

    def check(candidate):
        try:
            heatmaps = TFLiteRunner(candidate).raw(crops)[-1]
        except Exception as err:  # LiteRT raises its own types for a file it cannot run
            cause = " ".join(str(err).split())[:300]
            raise litert_cache.ConversionError(f"LiteRT cannot run the converted model ({cause})") from None
        try:
            conversion.checked_deviation(heatmaps, reference, "tflite")
        except ValueError as err:
            raise litert_cache.ConversionError(f"the converted model {err}") from None

    return check


class MissingDependencyError(ImportError):
    """A runtime the package needs for a format is not installed; the message says the ``pip install``."""


INSTALL = {
    "onnxruntime": "pip install 'hourglass_tf[onnx]' (ONNX Runtime)",
    "onnx": "pip install 'hourglass_tf[onnx]' (onnx, tf2onnx, ONNX Runtime)",
    "tf2onnx": "pip install 'hourglass_tf[onnx]' (onnx, tf2onnx, ONNX Runtime)",
    "ai_edge_litert": "pip install ai-edge-litert (LiteRT, TFLite's runtime)",
}


def missing_dependency(err, what):
    """``MissingDependencyError`` for an ImportError of one of ``INSTALL``'s modules (else None)."""
    module = (getattr(err, "name", None) or "").split(".")[0]
    if module not in INSTALL:
        return None
    return MissingDependencyError(
        f"{what} needs the Python package {module!r}, which is not installed: {INSTALL[module]}"
    )


def _open(runner_class, path):
    """``runner_class(path)``; a file its runtime cannot load is a ValueError naming the file and the cause; a
    runtime that is not installed is a ``MissingDependencyError`` saying how to install it."""
    try:
        return runner_class(path)
    except ImportError as err:
        missing = missing_dependency(err, f"{path}")
        if missing is None:
            raise
        raise missing from None
    except Exception as err:  # LiteRT and ONNX Runtime raise their own exception types for a bad file
        cause = " ".join(str(err).split())[:300]
        kind = path.suffix or "SavedModel"
        raise ValueError(f"{path}: not a loadable {kind} model ({type(err).__name__}: {cause})") from None


def _keras_info(path):
    """The description inside a ``.keras`` file, or None (another format, or a file ``load_runner`` will refuse)."""
    if pathlib.Path(path).suffix.lower() != ".keras" or not pathlib.Path(path).is_file():
        return None
    try:
        return metadata.read_keras_info(path)
    except metadata.MetadataError:
        return None


def load_model_file(path, skeleton=None, precision="float32", runtime=None, log=print):
    """(runner, ModelInfo) for a model file or folder (see ``load_runner`` and ``metadata.read_info``).

    Args:
      skeleton: the joint set (``Skeleton`` or name) for a model that carries no description;
        for one that does, it must agree with the stored one.
      precision: one of ``PRECISIONS`` (``choose_precision``); the runner's ``precision`` says what it runs in.
      runtime: None or one of ``RUNTIMES`` (``load_runner``; ``log`` says what ``auto`` chose and converted).
    """
    runner = load_runner(path, precision, runtime, log)

    def build(skel):
        return metadata.ModelInfo(
            skeleton=skel, input_size=runner.input_size, stride=runner.input_size // runner.heatmap_size
        )

    info = metadata.resolve(metadata.read_info(runner.source), skeleton, str(path), build)
    info.check_model(runner.num_joints, (runner.input_size, runner.input_size), str(path))
    return runner, info
