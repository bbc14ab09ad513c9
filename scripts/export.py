"""Exports a trained model to .keras, SavedModel (TF Serving), TFLite and ONNX.

    python scripts/export.py --model=runs/demo/best.keras --output=exported/demo \
        --formats=keras,saved_model,tflite,onnx [--num_stacks=1] [--flip_test] [--overwrite]
    python scripts/export.py --model=runs/demo/best.keras --output=exported/demo_int8 --formats=tflite \
        --quantize=int8 --calibration_dataset=synthetic --calibration_data=data/synthetic

The output folder is written in a temporary folder beside it and renamed when complete; an existing
one is kept unless --overwrite is given. See exported/README.md for the layout and the serving recipe.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hourglass_tf import runtime  # noqa: E402

runtime.tune_allocators()  # before TensorFlow's first op: the allocator settings the package measured faster

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "The .keras model to export, or a shipped model's name (lspet).")
flags.DEFINE_string("output", None, "Output folder, e.g. exported/NAME.")
flags.DEFINE_list("formats", ["keras", "saved_model", "tflite", "onnx"], "Formats to write.")
flags.DEFINE_integer("num_stacks", None, "Export the early-exit model of the first k stacks.")
flags.DEFINE_bool("flip_test", False, "Put the paper's flip test inside the SavedModel signatures.")
flags.DEFINE_enum("quantize", "none", ["none", "float16", "int8"], "TFLite quantization.")
flags.DEFINE_string("calibration_data", None, "int8: dataset root (or TFRecord folder with --calibration_tfrecords).")
flags.DEFINE_string("calibration_dataset", "synthetic", "int8: dataset layout of --calibration_data.")
flags.DEFINE_bool("calibration_tfrecords", False, "int8: --calibration_data is a TFRecord shard folder.")
flags.DEFINE_integer("calibration_samples", 64, "int8: validation crops used for calibration.")
flags.DEFINE_bool("overwrite", False, "Replace an existing output folder.")
flags.DEFINE_enum(
    "detector",
    "none",
    ["none", "ssdlite"],
    "ssdlite: put the SSDLite person detector inside the SavedModel (a predict_photo signature: the photo alone in, "
    "every person's box, score and keypoints out).",
)
flags.DEFINE_integer("version", 1, "SavedModel version folder (TF Serving serves the highest).")
flags.DEFINE_enum(
    "precision",
    "float32",
    ["float32", "bfloat16"],
    "bfloat16: a SavedModel computing in bfloat16 (heatmaps float32), for servers whose CPUs have bfloat16 "
    "arithmetic (AVX512_BF16, AMX) or GPUs; with --formats=saved_model (and keras).",
)
flags.DEFINE_string(
    "skeleton",
    None,
    "Joint set (mpii, lsp, flic, coco) of a model that carries no description; "
    "a model saved by this package knows its own.",
)
flags.mark_flags_as_required(["model", "output"])


def calibration_crops(dataset, path, tfrecords, count, input_size):
    """(count, R, R, 3) float32 validation crops in [0, 1] for int8 calibration."""
    import numpy as np

    from hourglass_tf.data import pipeline, sources

    data_dir, tfrecord_dir = (None, path) if tfrecords else (path, None)
    source, skeleton, _, _ = sources.load_source(dataset, "valid", data_dir, tfrecord_dir)
    batches = pipeline.make_dataset(source.take(count), skeleton, 1, 16, input_size=input_size, training=False)
    return np.concatenate([crops.numpy() for crops, _ in batches])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.quantize == "int8" and "tflite" in FLAGS.formats and FLAGS.calibration_data is None:
        raise app.UsageError("--quantize=int8 needs --calibration_data (a representative data split)")
    from hourglass_tf import detector_files, export_options, metadata, pretrained

    detector = None if FLAGS.detector == "none" else FLAGS.detector
    try:  # said before TensorFlow loads: a mistyped model path or format, an early exit past the model's stacks,
        # the detector's weights missing
        pretrained.check_model_argument(FLAGS.model)
        path = pretrained.resolve(FLAGS.model)
        described = metadata.read_info(path)
        model_stacks = described.architecture.get("num_stacks") if described else None
        export_options.check(FLAGS.formats, FLAGS.quantize, FLAGS.precision, FLAGS.num_stacks, model_stacks, detector)
        if detector is not None:
            detector_files.check_installed(detector, FLAGS["detector"].parser.enum_values)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from hourglass_tf.data.sample import DataFileError
    from hourglass_tf.export import ExportError, export_model

    try:
        model, info = metadata.load_keras(path, FLAGS.skeleton)
        calibration = None
        if FLAGS.quantize == "int8" and "tflite" in FLAGS.formats:
            calibration = calibration_crops(
                FLAGS.calibration_dataset,
                FLAGS.calibration_data,
                FLAGS.calibration_tfrecords,
                FLAGS.calibration_samples,
                info.input_size[0],
            )
        paths = export_model(
            model,
            FLAGS.output,
            FLAGS.formats,
            FLAGS.num_stacks,
            FLAGS.flip_test,
            FLAGS.quantize,
            calibration,
            FLAGS.overwrite,
            FLAGS.version,
            info=info,
            detector=detector,
            precision=FLAGS.precision,
        )
    except (DataFileError, ExportError, FileExistsError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for fmt, path in paths.items():
        print(f"{fmt:12s} {path}")
    return 0


if __name__ == "__main__":
    app.run(main)
