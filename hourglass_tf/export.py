"""Export a trained model: ``.keras``, SavedModel for TF Serving, TFLite and ONNX.

Layout of ``OUTPUT`` (written in a temporary folder beside it, then renamed):

* ``model.keras``: the Keras model (loads anywhere with ``tf.keras.models.load_model``).
* ``saved_model/<version>/``: a SavedModel as TF Serving expects, with two signatures:
  - ``serving_default``: ``images`` uint8 (N, R, R, 3) RGB person crops ->
    ``heatmaps`` float32 (N, R/4, R/4, K), ``keypoints`` float32 (N, K, 2) in crop pixels
    (0-based, after the quarter-pixel shift), ``scores`` float32 (N, K).
  - ``predict_image``: ``image_bytes`` (a JPEG/PNG string) and ``box`` float32 (4,) as
    x, y, w, h in image pixels -> ``keypoints`` (K, 2) in original image pixels, ``scores`` (K,).
  Preprocessing, the optional flip test and decoding run inside the graph.
* ``model.tflite`` (``model_float16.tflite``, ``model_int8.tflite``): the network, input
  ``image`` float32 (N, R, R, 3) in [0, 1] (int8: uint8 pixel values), output the last
  stack's heatmaps; decode with ``HeatmapCodec`` (``inference.Predictor`` does).
* ``model.onnx``: the same network for ONNX Runtime (opset 17).
* ``export.json``: what was exported, with the model's input size, joints and stacks.
"""

import json
import os
import pathlib
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from hourglass_tf import skeleton as skeletons
from hourglass_tf.codec import HeatmapCodec, crop_matrix, warp_image
from hourglass_tf.data.readers import BOX_PAD
from hourglass_tf.data.sample import PERSON_BOX_UNIT
from hourglass_tf.inference import flip_back
from hourglass_tf.model import output_names, truncate

FORMATS = ("keras", "saved_model", "tflite", "onnx")
QUANTIZATIONS = ("none", "float16", "int8")
ONNX_OPSET = 17


def heatmap_model(model):
    """(N, R, R, 3) float32 -> the last stack's heatmaps, as a single-output Keras model."""
    last = output_names(model)[-1]
    return keras.Model(model.inputs[0], model.get_layer(last).output, name=f"{model.name}_heatmaps")


class ServingModule(tf.Module):
    """The in-graph serving functions around a model (used for the SavedModel)."""

    def __init__(self, model, flip_test=False):
        super().__init__()
        self.model = heatmap_model(model)
        self.input_size = int(self.model.inputs[0].shape[1])
        num_joints = int(self.model.outputs[0].shape[-1])
        self.skeleton = skeletons.for_joint_count(num_joints)
        self.codec = HeatmapCodec(self.input_size, int(self.model.outputs[0].shape[1]))
        self.flip_test = flip_test

    def heatmaps(self, crops):
        """float32 crops (N, R, R, 3) in [0, 1] -> heatmaps (N, R/4, R/4, K), flip test inside when enabled."""
        if not self.flip_test:
            return self.model(crops, training=False)
        n = tf.shape(crops)[0]
        both = self.model(tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0), training=False)
        return (both[:n] + flip_back(both[n:], self.skeleton.flip_permutation)) / 2.0

    def serve_crops(self, images):
        size = self.input_size
        message = f"images must be uint8 RGB person crops of shape (N, {size}, {size}, 3)"
        checks = [
            tf.debugging.assert_rank(images, 4, message=message),
            tf.debugging.assert_equal(tf.shape(images)[1:], tf.constant([size, size, 3]), message=message),
        ]
        with tf.control_dependencies(checks):
            crops = tf.cast(images, tf.float32) / 255.0
        heatmaps = self.heatmaps(crops)
        keypoints, scores = self.codec.decode(heatmaps)
        return {"heatmaps": heatmaps, "keypoints": keypoints, "scores": scores}

    def serve_image(self, image_bytes, box):
        image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
        shape = tf.cast(tf.shape(image), tf.float32)
        height, width = shape[0], shape[1]
        x, y, w, h = box[0], box[1], box[2], box[3]
        checks = [
            tf.debugging.assert_positive(tf.stack([w, h]), message="box width and height must be positive"),
            tf.debugging.assert_equal(
                (x < width) & (y < height) & (x + w > 0.0) & (y + h > 0.0), True,
                message="box lies outside the image",
            ),
        ]  # fmt: skip
        with tf.control_dependencies(checks):
            center = tf.stack([x + w / 2.0, y + h / 2.0])
            scale = BOX_PAD * tf.maximum(w, h) / PERSON_BOX_UNIT
        matrix = crop_matrix(center, scale, self.input_size)
        crop = warp_image(tf.cast(image, tf.float32) / 255.0, matrix, self.input_size)
        heatmaps = self.heatmaps(crop[None])
        keypoints, scores = self.codec.decode(heatmaps)
        inverse = tf.linalg.inv(matrix)
        original = tf.linalg.matvec(inverse[:2, :2], keypoints[0]) + inverse[:2, 2]
        return {"keypoints": original, "scores": scores[0]}


def _export_saved_model(model, path, flip_test):
    module = ServingModule(model, flip_test)
    size = module.input_size
    archive = keras.export.ExportArchive()
    archive.track(module.model)
    archive.add_endpoint(
        "serving_default",
        module.serve_crops,
        input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")],
    )
    archive.add_endpoint(
        "predict_image",
        module.serve_image,
        input_signature=[tf.TensorSpec([], tf.string, name="image_bytes"), tf.TensorSpec([4], tf.float32, name="box")],
    )
    archive.write_out(str(path), verbose=False)


def _export_tflite(model, directory, quantize, calibration_images):
    head = heatmap_model(model)
    converter = tf.lite.TFLiteConverter.from_keras_model(head)
    name = "model.tflite"
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        name = "model_float16.tflite"
    elif quantize == "int8":
        if calibration_images is None or len(calibration_images) == 0:
            raise ValueError("int8 quantization needs calibration images (a representative data split)")
        calibration = np.asarray(calibration_images, np.float32)

        def representative():
            for image in calibration:
                yield [image[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8  # [0, 1] calibration: the uint8 input is the pixel value
        converter.inference_output_type = tf.float32
        name = "model_int8.tflite"
    path = pathlib.Path(directory) / name
    path.write_bytes(converter.convert())
    return path


def _export_onnx(model, path):
    import tf2onnx

    head = heatmap_model(model)
    size = int(head.inputs[0].shape[1])
    spec = [tf.TensorSpec([None, size, size, 3], tf.float32, name="image")]
    function = tf.function(lambda image: {"heatmaps": head(image, training=False)}, input_signature=spec)
    tf2onnx.convert.from_function(function, input_signature=spec, opset=ONNX_OPSET, output_path=str(path))
    return path


def export_model(model, output, formats=FORMATS, num_stacks=None, flip_test=False, quantize="none",
                 calibration_images=None, overwrite=False, version=1):  # fmt: skip
    """Exports ``model`` (a Keras model or a ``.keras`` path) into the folder ``output``.

    Args:
      formats: any of ``FORMATS``.
      num_stacks: export the early-exit model of the first ``num_stacks`` stacks.
      flip_test: put the paper's flip test inside the SavedModel signatures.
      quantize: TFLite quantization, one of ``QUANTIZATIONS`` (int8 needs ``calibration_images``,
        (M, R, R, 3) float32 crops in [0, 1] from a data split).
      overwrite: replace an existing ``output``; otherwise an existing one is an error.
      version: the SavedModel version folder (TF Serving serves the highest).

    Returns:
      dict format -> written path (inside ``output``).
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, received formats={list(formats)}")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, received quantize={quantize!r}")
    output = pathlib.Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it")
    if not isinstance(model, keras.Model):
        model = keras.models.load_model(model)
    if num_stacks is not None:
        model = truncate(model, num_stacks)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        written = {}
        if "keras" in formats:
            model.save(staging / "model.keras")
            written["keras"] = "model.keras"
        if "saved_model" in formats:
            _export_saved_model(model, staging / "saved_model" / str(version), flip_test)
            written["saved_model"] = f"saved_model/{version}"
        if "tflite" in formats:
            written["tflite"] = _export_tflite(model, staging, quantize, calibration_images).name
        if "onnx" in formats:
            written["onnx"] = _export_onnx(model, staging / "model.onnx").name
        head = heatmap_model(model)
        info = {
            "formats": written,
            "input_size": int(head.inputs[0].shape[1]),
            "num_joints": int(head.outputs[0].shape[-1]),
            "num_stacks": len(output_names(model)),
            "flip_test_in_saved_model": bool(flip_test),
            "tflite_quantization": quantize if "tflite" in formats else None,
        }
        (staging / "export.json").write_text(json.dumps(info, indent=2))
        if output.exists():
            shutil.rmtree(output)
        os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {fmt: output / rel for fmt, rel in written.items()}
