"""Predicts the pose of one person per image (or video frame) with a trained model.

    python scripts/predict.py --model=runs/demo/best.keras --output_dir=runs/predict IMAGE_OR_FOLDER_OR_VIDEO...
    python scripts/predict.py --model=exported/demo photo.jpg        # SavedModel; also .tflite / .onnx files
    python scripts/predict.py --model=M.keras --bbox=x,y,w,h photo.jpg
    python scripts/predict.py --model=M.keras --center=x,y --scale=s photo.jpg

Without --bbox or --center/--scale the whole image is taken as one centred person. Writes NAME.json
(keypoints in original pixels, 0-based, scores, joint names) and NAME.png (NAME.mp4 for videos). The exit
status is 1 when any input failed (the others are still processed).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hourglass_tf import runtime  # noqa: E402

runtime.tune_allocators()  # before TensorFlow's first op: the allocator settings the package measured faster

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Model: .keras, .tflite, .onnx, a SavedModel folder or an exported/NAME folder.")
flags.DEFINE_list("bbox", None, "Person box x,y,w,h in pixels.")
flags.DEFINE_list("center", None, "Person centre x,y in pixels (with --scale).")
flags.DEFINE_float("scale", None, "Person scale: box side / 200 px (with --center).")
flags.DEFINE_float("min_score", 0.2, "Joints whose heatmap maximum is below this are not drawn.")
flags.DEFINE_bool("flip_test", True, "Average with the mirrored image (the paper's test procedure).")
flags.DEFINE_enum(
    "refine",
    "quarter",
    ["quarter", "dark"],
    "Sub-pixel step of the decoder: quarter (the paper) or dark (Newton step on the log-heatmap).",
)
flags.DEFINE_list(
    "test_scales",
    ["1"],
    "person box multipliers whose heatmaps are averaged "
    "(multi-scale testing, e.g. 0.9,1,1.1; the paper tests at 1 only).",
)
flags.DEFINE_string("output_dir", "runs/predict", "Where JSON and pictures are written.")
flags.DEFINE_string(
    "skeleton",
    None,
    "Joint set (mpii, lsp, flic, coco) of a model that carries no description; "
    "a model saved by this package knows its own.",
)
flags.mark_flag_as_required("model")


def _floats(values, count, name):
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        raise app.UsageError(f"--{name} must be {count} numbers, received {','.join(values)}") from None
    if len(numbers) != count:
        raise app.UsageError(f"--{name} must be {count} numbers, received {','.join(values)}")
    return numbers


def main(argv):
    inputs = argv[1:]
    if not inputs:
        raise app.UsageError("give at least one image, folder or video")
    box = _floats(FLAGS.bbox, 4, "bbox") if FLAGS.bbox else None
    center = _floats(FLAGS.center, 2, "center") if FLAGS.center else None
    if (center is None) != (FLAGS.scale is None):
        raise app.UsageError("--center and --scale go together")
    if box is not None and center is not None:
        raise app.UsageError("give --bbox or --center/--scale, not both")
    from hourglass_tf.inference import Predictor
    from hourglass_tf.predict import predict_inputs

    try:
        predictor = Predictor.from_file(
            FLAGS.model,
            skeleton=FLAGS.skeleton,
            flip_test=FLAGS.flip_test,
            refine=FLAGS.refine,
            scales=FLAGS.test_scales,
        )
    except (ValueError, OSError) as err:
        print(f"error: {FLAGS.model}: {err}", file=sys.stderr)
        return 2
    written, failed = predict_inputs(predictor, inputs, FLAGS.output_dir, box, center, FLAGS.scale, FLAGS.min_score)
    print(f"{len(written)} file(s) written to {FLAGS.output_dir}; {len(failed)} input(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    app.run(main)
