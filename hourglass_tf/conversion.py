"""Converting a Keras pose model for another runtime: the heatmap model, a SavedModel of named signatures, a
TFLite flatbuffer, and how far each format's heatmaps may stray from the Keras model's.

Shared by ``export`` (which writes and checks every format) and ``litert_cache`` (a ``.keras`` model converted
once for LiteRT). Nothing here writes outside the folder it is given.
"""

import pathlib
import tempfile

import keras
import numpy as np
import tensorflow as tf

from hourglass_tf.model import output_names

# Largest max |heatmap - Keras heatmap| accepted for a written format, relative to the Keras heatmaps' largest value
# (at least 1): float32 formats differ by summation order only; float16 weights by about 1e-3 relative;
# int8 is reported, not bounded (its error depends on the calibration data).
TOLERANCES = {
    "keras": 1e-5,
    "saved_model": 1e-4,
    "saved_model_bfloat16": 5e-2,  # bfloat16 keeps 8 significant bits: about 0.4 % a rounding, through 60+ layers
    "tflite": 1e-4,
    "tflite_float16": 2e-2,
    "onnx": 1e-4,
}


def heatmap_model(model):
    """(N, R, R, 3) float32 -> the last stack's heatmaps, as a single-output Keras model."""
    last = output_names(model)[-1]
    return keras.Model(model.inputs[0], model.get_layer(last).output, name=f"{model.name}_heatmaps")


def save_signatures(model, signatures, path):
    """Writes a SavedModel of ``model``'s weights and the given signatures, name -> (function, input specs), each
    traced once; the weights are saved as the TensorFlow variables of Keras' TensorFlow backend (``Variable.value``).

    What ``keras.export.ExportArchive`` writes (named signatures, the weights, no Keras objects), without its
    search of the Keras object tree for other resources (a third of a small model's export time): these graphs
    hold none (the person detector's graph is constants).
    """
    root = tf.Module()
    root.weights = [weight.value for weight in model.weights]
    if not all(isinstance(weight, tf.Variable) for weight in root.weights):
        raise TypeError("Keras' TensorFlow backend no longer keeps a tf.Variable in Variable.value")
    concrete = {
        name: tf.function(function, input_signature=specs, autograph=False).get_concrete_function()
        for name, (function, specs) in signatures.items()
    }
    tf.saved_model.save(root, str(path), signatures=concrete)


def heatmap_saved_model(model, path):
    """Writes a SavedModel of one ``serving_default`` signature, float32 crops ``image`` (N, R, R, 3) in [0, 1] ->
    ``heatmaps`` (N, R/4, R/4, K) of the last stack: what the TFLite converter reads (a third of the time
    ``from_keras_model`` takes, which writes Keras' own export archive first, for the same file)."""
    head = heatmap_model(model)
    size = int(head.inputs[0].shape[1])
    spec = [tf.TensorSpec([None, size, size, 3], tf.float32, name="image")]
    save_signatures(head, {"serving_default": (lambda image: {"heatmaps": head(image, training=False)}, spec)}, path)


def tflite_flatbuffer(model, scratch, quantize="none", calibration_images=None):
    """The TFLite flatbuffer (bytes) of ``model``'s last-stack heatmaps: input ``image`` float32 (N, R, R, 3) in
    [0, 1] (``int8``: uint8, its scale and zero point in the file), output ``heatmaps`` (N, R/4, R/4, K).

    ``scratch``: an existing folder for the converter's source SavedModel (removed before returning).
    ``quantize``: ``none`` (float32), ``float16`` (weights) or ``int8`` (full integer; ``calibration_images``
    (M, R, R, 3) float32 crops in [0, 1]).
    """
    with tempfile.TemporaryDirectory(prefix=".tflite_source.", dir=pathlib.Path(scratch)) as source:
        heatmap_saved_model(model, source)
        converter = tf.lite.TFLiteConverter.from_saved_model(source)  # read again by convert(): inside the block
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            calibration = np.asarray(calibration_images, np.float32)

            def representative():
                for image in calibration:
                    yield [image[None]]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8  # scale and zero point are in the file; the runner reads them
            converter.inference_output_type = tf.float32
        elif quantize != "none":
            raise ValueError(f"quantize must be none, float16 or int8, received quantize={quantize!r}")
        return converter.convert()


def check_crops(size, count=2):
    """(count, size, size, 3) float32 crops of uint8 values / 255 (a uint8 input sees exactly the same pixels),
    the same every call: what a converted format is compared on."""
    return np.random.default_rng(0).integers(0, 256, (count, size, size, 3)).astype(np.float32) / 255.0


def checked_deviation(heatmaps, reference, fmt):
    """max |heatmaps - reference| of a converted format's heatmaps against the Keras model's (any within
    ``TOLERANCES[fmt]``; a format without one is not bounded). ValueError saying what is wrong otherwise: other
    shapes or a value that is not finite ("loads but gives ..."), or a larger deviation ("disagrees with ...")."""
    heatmaps, reference = np.asarray(heatmaps), np.asarray(reference)
    if heatmaps.shape != reference.shape or not np.all(np.isfinite(heatmaps)):
        raise ValueError(
            f"loads but gives heatmaps of shape {heatmaps.shape} (finite: {bool(np.all(np.isfinite(heatmaps)))}), "
            f"expected {reference.shape}"
        )
    largest = float(np.max(np.abs(heatmaps - reference)))
    tolerance = TOLERANCES.get(fmt)
    if tolerance is not None and largest > tolerance * max(1.0, float(np.max(np.abs(reference)))):
        raise ValueError(f"disagrees with the Keras model: max heatmap deviation {largest:.3g} > {tolerance:g}")
    return largest
