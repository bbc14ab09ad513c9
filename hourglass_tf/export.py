"""Export a trained model: ``.keras``, SavedModel for TF Serving, TFLite and ONNX.

Every format is written from a float32 copy of the model (``model.float32_copy``): a model
trained under ``mixed_bfloat16`` or ``mixed_float16`` exports the formats' usual float32 graph
(or the asked TFLite quantization) with its trained weights, and its description records the
precision it was trained in. The SavedModel, TFLite and ONNX graphs are inference graphs: every batch
norm that follows a convolution is folded into it (``model.fold_batch_norm``; ``model.keras`` keeps
them, so it can still be trained). Each written file is loaded back once by its own runtime (Keras,
TensorFlow, LiteRT, ONNX Runtime) and its heatmaps compared with the Keras model's before the
export counts as done; the deviations are recorded in ``export.json``. A converter failure is
one ``ExportError`` line naming the format and the cause; the converter's whole log is in
``OUTPUT.export.log`` beside the output folder.

Layout of ``OUTPUT`` (written in a temporary folder beside it, then renamed):

* ``model.keras``: the Keras model (float32; loads anywhere with ``tf.keras.models.load_model``),
  with its description inside (``metadata``).
* ``saved_model/<version>/``: a SavedModel as TF Serving expects, with four signatures:
  - ``serving_default``: ``images`` uint8 (N, R, R, 3) RGB person crops ->
    ``heatmaps`` float32 (N, R/4, R/4, K), ``keypoints`` float32 (N, K, 2) in crop pixels
    (0-based, after the quarter-pixel shift), ``scores`` float32 (N, K).
  - ``predict_image``: ``image_bytes`` (a JPEG/PNG string) and ``box`` float32 (4,) as
    x, y, w, h in image pixels -> ``keypoints`` (K, 2) in original image pixels, ``scores`` (K,).
  - ``predict_images``: whole photos with up to M people each, in one network batch (TF Serving's
    batching can work on it): ``image_bytes`` (N,) strings, ``boxes`` float32 (N, M, 4) as x, y, w, h,
    ``box_count`` int32 (N,) -> ``keypoints`` (N, M, K, 3) as x, y in original pixels and score (zeros
    past each image's count), ``valid`` (N, M).
  - ``metadata``: ``request`` (any string, ignored: TF Serving needs an input) -> ``description``,
    the model's description as a JSON string
    (joint names, flip pairs, input size, ...), also stored as ``assets.extra/hourglass_tf.json``.
  ``assets.extra/tf_serving_warmup_requests`` holds one warm-up request per signature
  (``serving.write_warmup``), so TF Serving compiles every signature at load time.
  Preprocessing, the optional flip test and decoding run inside the graph.
* ``model.tflite`` (``model_float16.tflite``, ``model_int8.tflite``): the network, input
  ``image`` float32 (N, R, R, 3) in [0, 1] (int8: uint8, with the scale and zero point in the
  file), output ``heatmaps``, the last stack's; decode with ``HeatmapCodec`` (``inference.Predictor`` does).
* ``model.onnx``: the same network for ONNX Runtime (opset 17), description in ``metadata_props``.
* ``hourglass_tf.json``: the model's description with an ``export`` section.
* ``export.json``: what was exported, with the checks' deviations.
"""

import contextlib
import functools
import json
import os
import pathlib
import shutil
import sys
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from hourglass_tf import conversion, export_options, images, metadata, serving
from hourglass_tf.codec import HeatmapCodec
from hourglass_tf.conversion import heatmap_model
from hourglass_tf.export_options import FORMATS, QUANTIZATIONS  # noqa: F401 - export.FORMATS, export.QUANTIZATIONS
from hourglass_tf.geometry import (
    average_with_mirror,
    back_project,
    crop_boxes,
)
from hourglass_tf.model import (
    bfloat16_copy,
    float32_copy,
    fold_batch_norm,
    foldable_batch_norms,
    output_names,
    truncate,
)

ONNX_OPSET = 17


def decode_photo(data):
    """JPEG/PNG/BMP/GIF bytes -> (H, W, 3) uint8 RGB. JPEGs use the accurate integer IDCT, which decodes exactly
    as OpenCV (the Python path) does; TensorFlow's default fast IDCT differs by up to 15 levels. A header that
    declares more than ``images.MAX_IMAGE_PIXELS`` pixels is refused before decoding."""
    data = images.checked_tf(data)
    return tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False),
    )


class ServingModule:
    """The in-graph serving functions around a model (the SavedModel's signatures)."""

    def __init__(self, model, info, flip_test=False, detector=None):
        self.detector = detector  # a detectors.SsdLitePersons: the photo-in signature
        self.model = heatmap_model(model)
        self.input_size = int(self.model.inputs[0].shape[1])
        self.skeleton = info.skeleton
        # The model's own decoding (its description's sigma and sub-pixel rule), as Predictor decodes it.
        self.codec = HeatmapCodec(
            self.input_size, int(self.model.outputs[0].shape[1]), sigma=info.sigma, refine=info.decoding
        )
        self.flip_test = flip_test
        # Every signature calls the network through this one function: its graph is built once, not once per
        # signature and trace (the SavedModel holds it once; serving inlines it).
        self.network = tf.function(
            lambda crops: self.model(crops, training=False),
            input_signature=[tf.TensorSpec([None, self.input_size, self.input_size, 3], tf.float32)],
            autograph=False,
        )
        self.decode = tf.function(
            decode_photo, input_signature=[tf.TensorSpec([], tf.string)], autograph=False
        )  # likewise: the header check and decoder once

    def heatmaps(self, crops):
        """float32 crops (N, R, R, 3) in [0, 1] -> heatmaps (N, R/4, R/4, K), flip test inside when enabled."""
        if not self.flip_test:
            return self.network(crops)
        n = tf.shape(crops)[0]
        both = self.network(tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0))
        return average_with_mirror(both[:n], both[n:], self.skeleton.flip_permutation)

    def serve_crops(self, images):
        size = self.input_size
        message = f"images must be uint8 RGB person crops of shape (N, {size}, {size}, 3)"
        shape = tf.concat([tf.shape(images), tf.zeros([4], tf.int32)], axis=0)[:4]  # any rank compares safely
        ok = tf.equal(tf.rank(images), 4) & tf.reduce_all(tf.equal(shape[1:], tf.constant([size, size, 3])))
        checks = [
            tf.debugging.assert_equal(ok, True, message=message),
            tf.debugging.assert_positive(shape[0], message="the batch holds no crop"),
        ]
        with tf.control_dependencies(checks):
            crops = tf.cast(images, tf.float32) / 255.0
        heatmaps = self.heatmaps(crops)
        keypoints, scores = self.codec.decode(heatmaps)
        return {"heatmaps": heatmaps, "keypoints": keypoints, "scores": scores}

    def serve_image(self, image_bytes, box):
        image = self.decode(image_bytes)
        shape = tf.cast(tf.shape(image), tf.float32)
        height, width = shape[0], shape[1]
        x, y, w, h = box[0], box[1], box[2], box[3]
        checks = [
            tf.debugging.assert_positive(tf.stack([w, h]), message="box width and height must be positive"),
            tf.debugging.assert_equal(
                (x < width) & (y < height) & (x + w > 0.0) & (y + h > 0.0),
                True,
                message="box lies outside the image",
            ),
        ]
        with tf.control_dependencies(checks):
            crops, matrices = crop_boxes(tf.cast(image, tf.float32) / 255.0, box[None], self.input_size)
        keypoints, scores = self._keypoints(crops, matrices)
        return {"keypoints": keypoints[0], "scores": scores[0]}

    def _keypoints(self, crops, matrices):
        """Crops (N, R, R, 3) and their original->crop matrices (N, 3, 3) -> keypoints (N, K, 2) in original
        pixels and scores (N, K)."""
        keypoints, scores = self.codec.decode(self.heatmaps(crops))
        return tf.cast(back_project(keypoints, matrices), tf.float32), scores

    def serve_photo(self, image_bytes):
        """A photo alone: the person detector inside finds every person, then one network batch.

        Returns ``boxes`` (M, 4) x, y, w, h in pixels, ``scores`` (M,) the detector's, and ``keypoints`` (M, K, 3):
        x, y in original pixels (0-based) and the joint's score; M = 0 when nobody is found. The same rule as
        ``people.PoseEstimator`` with the same detector (``detectors.person_boxes``).
        """
        from hourglass_tf import detectors

        image = self.decode(image_bytes)
        found, scores, classes = detectors.detect_in_graph(self.detector.detector, image)
        shape = tf.shape(image)
        boxes, scores = detectors.person_boxes(found, scores, classes, shape[1], shape[0], **self.detector.options)
        joints = self.skeleton.num_joints

        def poses():
            crops, matrices = crop_boxes(tf.cast(image, tf.float32) / 255.0, boxes, self.input_size)
            keypoints, joint_scores = self._keypoints(crops, matrices)
            return tf.concat([keypoints, joint_scores[..., None]], -1)

        # nobody found: no network pass (an empty batch), an empty answer
        keypoints = tf.cond(tf.shape(boxes)[0] > 0, poses, lambda: tf.zeros([0, joints, 3], tf.float32))
        return {"boxes": boxes, "scores": scores, "keypoints": keypoints}

    def serve_images(self, image_bytes, boxes, box_count):
        """Whole images, up to M people each, in one network batch (the flip test inside when enabled).

        Args:
          image_bytes: (N,) encoded JPEG/PNG strings (over REST, ``{"b64": ...}`` each).
          boxes: (N, M, 4) float32 person boxes x, y, w, h in each image's pixels; rows past ``box_count`` ignored.
          box_count: (N,) int32, how many of each image's M boxes are people.

        Returns:
          ``keypoints`` (N, M, K, 3): x, y in original pixels (0-based) and the joint's score, zeros for unused
          rows; ``valid`` (N, M) bool.
        """
        size = self.input_size
        n, m = tf.shape(boxes)[0], tf.shape(boxes)[1]
        valid = tf.range(m)[None, :] < box_count[:, None]
        checks = [
            tf.debugging.assert_positive(tf.size(image_bytes), message="the batch holds no image"),
            tf.debugging.assert_equal(tf.shape(image_bytes)[0], n, message="one row of boxes per image"),
            tf.debugging.assert_equal(tf.shape(box_count)[0], n, message="one box_count per image"),
            tf.debugging.assert_non_negative(box_count, message="box_count must be >= 0"),
            tf.debugging.assert_less_equal(box_count, m, message="box_count exceeds the boxes given"),
            tf.debugging.assert_equal(
                tf.reduce_all(tf.logical_or(~valid, tf.reduce_all(boxes[..., 2:] > 0.0, axis=-1))),
                True,
                message="box width and height must be positive",
            ),
        ]
        with tf.control_dependencies(checks):
            safe = tf.where(valid[..., None], boxes, tf.constant([0.0, 0.0, 1.0, 1.0]))

        def one_image(args):
            data, image_boxes, image_valid = args
            image = self.decode(data)
            shape = tf.cast(tf.shape(image), tf.float32)
            x, y, w, h = tf.unstack(image_boxes, axis=-1)
            inside = (x < shape[1]) & (y < shape[0]) & (x + w > 0.0) & (y + h > 0.0)
            check = tf.debugging.assert_equal(
                tf.reduce_all(inside | ~image_valid), True, message="a box lies outside its image"
            )
            with tf.control_dependencies([check]):
                return crop_boxes(tf.cast(image, tf.float32) / 255.0, image_boxes, size)

        crops, matrices = tf.map_fn(
            one_image,
            (image_bytes, safe, valid),
            fn_output_signature=(
                tf.TensorSpec([None, size, size, 3], tf.float32),
                tf.TensorSpec([None, 3, 3], tf.float32),
            ),
        )
        original, scores = self._keypoints(tf.reshape(crops, [-1, size, size, 3]), tf.reshape(matrices, [-1, 3, 3]))
        joints = tf.shape(scores)[-1]
        people = tf.reshape(tf.concat([original, scores[..., None]], axis=-1), [n, m, joints, 3])
        people = tf.where(valid[:, :, None, None], people, 0.0)
        return {"keypoints": people, "valid": valid}


def _export_saved_model(model, path, info_json, flip_test, info, detector=None):
    module = ServingModule(model, info, flip_test, detector)
    size = module.input_size
    signatures = {
        "serving_default": (module.serve_crops, [tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")]),
        "predict_image": (
            module.serve_image,
            [tf.TensorSpec([], tf.string, name="image_bytes"), tf.TensorSpec([4], tf.float32, name="box")],
        ),
        "predict_images": (
            module.serve_images,
            [
                tf.TensorSpec([None], tf.string, name="image_bytes"),
                tf.TensorSpec([None, None, 4], tf.float32, name="boxes"),
                tf.TensorSpec([None], tf.int32, name="box_count"),
            ],
        ),
        # TF Serving refuses a signature without inputs (tensorflow/serving#1676): ``request`` is read and ignored.
        "metadata": (
            lambda request: {"description": tf.constant(info_json)},
            [tf.TensorSpec([], tf.string, name="request")],
        ),
    }
    if detector is not None:
        signatures["predict_photo"] = (module.serve_photo, [tf.TensorSpec([], tf.string, name="image_bytes")])
    conversion.save_signatures(module.model, signatures, path)
    extra = pathlib.Path(path) / "assets.extra"
    extra.mkdir(exist_ok=True)
    (extra / metadata.FILENAME).write_text(info_json)
    serving.write_warmup(extra / serving.WARMUP_FILENAME, serving.warmup_payloads(size, photo=detector is not None))
    return path


def _export_tflite(model, directory, quantize, calibration_images):
    name = {"none": "model.tflite", "float16": "model_float16.tflite", "int8": "model_int8.tflite"}[quantize]
    path = pathlib.Path(directory) / name
    path.write_bytes(conversion.tflite_flatbuffer(model, directory, quantize, calibration_images))
    return path


def _export_onnx(model, path, info_json):
    import onnx
    import tf2onnx

    head = heatmap_model(model)
    size = int(head.inputs[0].shape[1])
    spec = [tf.TensorSpec([None, size, size, 3], tf.float32, name="image")]
    function = tf.function(
        lambda image: {"heatmaps": head(image, training=False)}, input_signature=spec, autograph=False
    )
    proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=ONNX_OPSET)
    entry = proto.metadata_props.add()
    entry.key, entry.value = metadata.ONNX_KEY, info_json
    onnx.save(proto, str(path))
    return path


class ExportError(RuntimeError):
    """One format could not be written or did not load back: the message names the format and the cause."""


@contextlib.contextmanager
def _captured_output(log_path):
    """Sends this process's output to ``log_path`` for the block: file descriptors 1 and 2 (the converters'
    C++ logs) and Python's ``sys.stdout`` / ``sys.stderr``; all restored afterwards."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            log.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _cause(err):
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    hint = next((line for line in lines if "error:" in line.lower()), lines[0] if lines else "")
    return f"{type(err).__name__}: {hint[:300]}"


def _check_outputs(fmt, path, crops, reference):
    """Loads ``path`` with its runtime, runs ``crops`` and returns the max deviation from ``reference``
    (``conversion.checked_deviation``; ``ExportError`` naming the format and the file otherwise)."""
    from hourglass_tf.backends import load_runner

    heatmaps = load_runner(path).raw(crops)[-1]
    try:
        return conversion.checked_deviation(heatmaps, reference, fmt)
    except ValueError as err:
        raise ExportError(f"{fmt}: {path} {err}") from None


STAGING = "staging-"  # an export is written into ``.NAME.staging-XXXXXXXX/`` beside ``NAME``, then renamed


def remove_stale_staging(output, log=print):
    """Deletes the staging folders a killed export to ``output`` left beside it; returns how many."""
    output = pathlib.Path(output)
    stale = sorted(p for p in output.parent.glob(f".{output.name}.{STAGING}*") if p.is_dir())
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    if stale:
        log(f"removed {len(stale)} half-written export folder(s) a killed export left beside {output}")
    return len(stale)


def export_model(
    model,
    output,
    formats=FORMATS,
    num_stacks=None,
    flip_test=False,
    quantize="none",
    calibration_images=None,
    overwrite=False,
    version=1,
    info=None,
    skeleton=None,
    detector=None,
    precision="float32",
):
    """Exports ``model`` (a Keras model or a ``.keras`` path) into the folder ``output``.

    Args:
      formats: any of ``FORMATS``.
      num_stacks: export the early-exit model of the first ``num_stacks`` stacks.
      flip_test: put the paper's flip test inside the SavedModel signatures.
      quantize: TFLite quantization, one of ``QUANTIZATIONS`` (int8 needs ``calibration_images``,
        (M, R, R, 3) float32 crops in [0, 1] from a data split).
      overwrite: replace an existing ``output``; otherwise an existing one is an error.
      version: the SavedModel version folder (TF Serving serves the highest).
      info: the model's ``metadata.ModelInfo`` (read from the file when ``model`` is a path); or
      skeleton: the joint set of a model that carries no description.
      detector: ``"ssdlite"`` (or a ``detectors.SsdLitePersons``) puts the person detector inside the SavedModel:
        a ``predict_photo`` signature takes the photo alone and answers every person's box, score and keypoints;
        the description's ``export.detector`` (and the ``metadata`` signature) names it.
      precision: ``float32``, or ``bfloat16`` for a SavedModel that computes in bfloat16 (every layer but the
        outputs; heatmaps float32), for CPUs with bfloat16 arithmetic and GPUs/TPUs; checked against the float32
        model within ``conversion.TOLERANCES["saved_model_bfloat16"]``. TFLite and ONNX are written in float32 (or the asked
        quantization) only.

    Returns:
      dict format -> written path (inside ``output``).

    Raises:
      ExportError: a converter failed or a written file did not load back and agree; nothing is
        left at ``output`` (an existing folder stays as it was).
    """
    export_options.check(formats, quantize, precision, num_stacks, detector=detector)
    if quantize == "int8" and "tflite" in formats and (calibration_images is None or len(calibration_images) == 0):
        raise ValueError("int8 quantization needs calibration images (a representative data split)")
    output = pathlib.Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it")
    if not isinstance(model, keras.Model):
        model, info = metadata.load_keras(model, skeleton if info is None else info.skeleton)
    elif info is None:
        if skeleton is None:
            raise ValueError("exporting a Keras model object needs its description (info) or its skeleton")
        info = metadata.describe(model, skeleton)
    if flip_test and not info.skeleton.flip_pairs:
        warnings.warn(
            f"the joint set {info.skeleton.name!r} has no mirror pairs: exporting without the flip test", stacklevel=2
        )
        flip_test = False
    model = float32_copy(model)
    if num_stacks is not None:
        model = truncate(model, num_stacks)
    head = heatmap_model(model)

    @functools.cache
    def inference():
        """The graphs for serving, without training's batch-norm layers; built once, and only for those formats."""
        folded = fold_batch_norm(model)
        return bfloat16_copy(folded) if precision == "bfloat16" else folded

    if isinstance(detector, str):  # "ssdlite", the one name export_options.check lets through
        from hourglass_tf import detectors

        detector = detectors.SsdLitePersons()
    export_section = {
        "detector": None
        if detector is None
        else {"name": detector.name, "graph": detector.path.name, **detector.options},
        "flip_test_in_graph": bool(flip_test),
        "batch_norm_folded": len(foldable_batch_norms(model)),
        "precision": precision,
        "num_stacks": len(output_names(model)),
        "tflite_quantization": quantize if "tflite" in formats else None,
    }
    info_json = json.dumps({**info.to_dict(), "export": export_section}, indent=1, default=str)
    output.parent.mkdir(parents=True, exist_ok=True)
    log_path = output.parent / f"{output.name}.export.log"
    remove_stale_staging(output)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{output.name}.{STAGING}", dir=output.parent))
    size = int(head.inputs[0].shape[1])
    crops = conversion.check_crops(size)
    reference = np.asarray(head(crops, training=False), np.float32)
    tflite_format = "tflite" if quantize == "none" else f"tflite_{quantize}"
    writers = {
        "keras": lambda: metadata.save_keras(model, staging / "model.keras", info),
        "saved_model": lambda: _export_saved_model(
            inference(), staging / "saved_model" / str(version), info_json, flip_test, info, detector
        ),
        "tflite": lambda: _export_tflite(inference(), staging, quantize, calibration_images),
        "onnx": lambda: _export_onnx(inference(), staging / "model.onnx", info_json),
    }
    try:
        written, deviations = {}, {}
        for fmt in FORMATS:
            if fmt not in formats:
                continue
            try:
                with _captured_output(log_path):
                    path = writers[fmt]()
            except ImportError as err:
                from hourglass_tf.backends import missing_dependency

                raise ExportError(str(missing_dependency(err, f"exporting {fmt}") or _cause(err))) from err
            except (ValueError, TypeError, RuntimeError, OSError, tf.errors.OpError) as err:
                name = tflite_format if fmt == "tflite" else fmt
                raise ExportError(f"{name}: conversion failed ({_cause(err)}); full log in {log_path}") from err
            written[fmt] = str(pathlib.Path(path).relative_to(staging))
            check = tflite_format if fmt == "tflite" else fmt
            if fmt == "saved_model" and precision == "bfloat16":
                check = "saved_model_bfloat16"
            if not (fmt == "saved_model" and flip_test):  # a flip test inside changes the heatmaps on purpose
                try:
                    deviations[check] = _check_outputs(check, path, crops, reference)
                except ExportError:
                    raise
                except ImportError as err:  # its runtime is not installed: say so, not "does not load"
                    raise ExportError(f"{check}: the written {path.name} cannot be checked: {err}") from err
                except Exception as err:  # the runtime refused the file: the export failed
                    raise ExportError(
                        f"{check}: the written {path.name} does not load in its runtime ({_cause(err)})"
                    ) from err
        described = {  # the files the description beside them is for, by hash: another file is refused
            pathlib.Path(rel).name: metadata.file_digest(staging / rel)
            for rel in written.values()
            if pathlib.Path(rel).suffix in (".tflite", ".onnx")
        }
        export_section = {**export_section, "files": described}
        (staging / metadata.FILENAME).write_text(
            json.dumps({**info.to_dict(), "export": export_section}, indent=1, default=str)
        )
        report = {
            "formats": written,
            **export_section,
            "input_size": size,
            "num_joints": info.skeleton.num_joints,
            "skeleton": info.skeleton.name,
            "trained_precision": info.precision,
            "max_heatmap_deviation": deviations,
        }
        (staging / "export.json").write_text(json.dumps(report, indent=2))
        if output.exists():
            shutil.rmtree(output)
        os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {fmt: output / rel for fmt, rel in written.items()}
