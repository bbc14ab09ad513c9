"""Heatmap runners for each model format, behind one interface used by ``inference.Predictor``.

A runner maps person crops (N, R, R, 3) float32 in [0, 1] to heatmaps (S, N, R/4, R/4, K):
every stack for a Keras model, the last stack (S = 1) for exported formats. With a flip
permutation it applies the paper's flip test: crops and mirrors in one batch, mirrored
heatmaps flipped back with left/right channels swapped, averaged.

``load_runner(path)`` picks the backend from the file: ``.keras``; a SavedModel folder (or an
``exported/NAME`` folder, whose SavedModel is preferred); ``.tflite`` (LiteRT); ``.onnx``
(ONNX Runtime).
"""

import json
import os
import pathlib

import numpy as np
import tensorflow as tf

from hourglass_tf.inference import flip_back


def _to_uint8(crops):
    return np.clip(np.round(crops * 255.0), 0, 255).astype(np.uint8)


class Runner:
    """Base: subclasses set ``input_size``, ``heatmap_size``, ``num_joints`` and implement ``raw``."""

    flips_inside = False  # a SavedModel exported with --flip_test already averages the mirror

    def raw(self, crops):
        raise NotImplementedError

    def __call__(self, crops, flip_permutation=None):
        if flip_permutation is None or self.flips_inside:
            return self.raw(crops)
        n = len(crops)
        stacks = self.raw(np.concatenate([crops, crops[:, :, ::-1]]))
        return (stacks[:, :n] + flip_back(stacks[:, n:], flip_permutation).numpy()) / 2.0


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
        return (stacks[:, :n] + flip_back(stacks[:, n:], flip_permutation)) / 2.0

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
        self.function = tf.saved_model.load(str(path)).signatures["serving_default"]
        spec = self.function.structured_input_signature[1]["images"]
        self.input_size = int(spec.shape[1])
        out = self.function.structured_outputs["heatmaps"]
        self.heatmap_size, self.num_joints = int(out.shape[1]), int(out.shape[-1])
        info = path.parent.parent / "export.json"
        self.flips_inside = info.is_file() and json.loads(info.read_text()).get("flip_test_in_saved_model", False)

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

    def __init__(self, path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        threads = cpu_threads() if num_threads is None else int(num_threads)
        if threads < 1:
            raise ValueError(f"num_threads must be >= 1, received num_threads={num_threads!r}")
        self.runner = Interpreter(model_path=str(path), num_threads=threads).get_signature_runner()
        (self.input_name, detail), = self.runner.get_input_details().items()
        (self.output_name, out), = self.runner.get_output_details().items()
        self.uint8_input = detail["dtype"] == np.uint8
        self.input_size = int(detail["shape"][1])
        self.heatmap_size, self.num_joints = int(out["shape"][1]), int(out["shape"][-1])

    def raw(self, crops):
        images = _to_uint8(crops) if self.uint8_input else np.asarray(crops, np.float32)
        return np.concatenate([self.runner(**{self.input_name: image[None]})[self.output_name] for image in images])[None]


class OnnxRunner(Runner):
    """A ``.onnx`` file on ONNX Runtime (CPU)."""

    def __init__(self, path):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (inp,), (out,) = self.session.get_inputs(), self.session.get_outputs()
        self.input_name = inp.name
        self.input_size = int(inp.shape[1])
        self.heatmap_size, self.num_joints = int(out.shape[1]), int(out.shape[-1])

    def raw(self, crops):
        return self.session.run(None, {self.input_name: np.asarray(crops, np.float32)})[0][None]


def load_runner(path):
    """The runner for a model file or folder (see the module docstring); ValueError naming it otherwise."""
    path = pathlib.Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such model file or folder")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return SavedModelRunner(path)
        versions = sorted((p for p in (path / "saved_model").glob("*") if p.name.isdigit()), key=lambda p: int(p.name))
        if versions:
            return SavedModelRunner(versions[-1])
        for name in ("model.keras", "model.tflite", "model.onnx"):
            if (path / name).is_file():
                return load_runner(path / name)
        raise ValueError(f"{path}: no SavedModel, model.keras, model.tflite or model.onnx inside")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        import keras

        return KerasRunner(keras.models.load_model(path))
    if suffix == ".tflite":
        return TFLiteRunner(path)
    if suffix == ".onnx":
        return OnnxRunner(path)
    raise ValueError(f"{path}: unknown model format {suffix!r}; expected .keras, .tflite, .onnx or a SavedModel folder")
