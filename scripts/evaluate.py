"""Evaluates predictions (PCKh for MPII, PCK@0.2 for LSP/FLIC), from files or from a model.

From files (no model, no TensorFlow needed):
    python scripts/evaluate.py --annotations=ANNOT.mat|.h5 --predictions=PRED.h5|.mat|.npy \
        [--output_json=metrics.json] [--plot=pck.png]

From a model on a dataset split (writes predictions, metrics, curves and example pictures):
    python scripts/evaluate.py --checkpoint=runs/demo/best.keras --dataset=synthetic \
        --data_dir=data/synthetic [--flip_test] [--refine=quarter|dark] [--test_scales=1] \
        [--output_dir=runs/demo/eval]
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hourglass_tf import runtime  # noqa: E402

runtime.tune_allocators()  # before TensorFlow's first op: the allocator settings the package measured faster

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from hourglass_tf import flags as train_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("annotations", None, "Annotation file: evaluator .mat (pos_gt_src, ...) or original-code .h5.")
flags.DEFINE_string(
    "predictions", None, "Prediction file: .h5 'preds' / .mat 'preds' or 'pos_pred_src' (1-based), .npy (0-based)."
)
flags.DEFINE_string("output_json", None, "File mode: write the results as JSON here.")
flags.DEFINE_string("plot", None, "File mode: write the PCK(h) curves as PNG here.")
flags.DEFINE_string("skeleton", None, "File mode: joint set of an .h5 annotation file (mpii or flic).")
flags.DEFINE_string(
    "checkpoint",
    None,
    "Model mode: a model file or folder (.keras, SavedModel, .tflite, .onnx) or a shipped model's name.",
)
flags.DEFINE_string(
    "dataset", None, "Model mode: dataset layout (mpii, lsp, lspet, flic, coco, synthetic, coco_keypoints)."
)
train_flags.define_coco_keypoints_flags()
flags.DEFINE_list(
    "oks_sigmas",
    None,
    "COCO-format data: OKS sigma, one value or one per joint (default: COCO's for COCO's 17 joints, else 0.05).",
)
flags.DEFINE_string("data_dir", None, "Model mode: dataset root (raw files).")
flags.DEFINE_string("tfrecord_dir", None, "Model mode: TFRecord shards instead of --data_dir.")
flags.DEFINE_enum("split", "valid", ["train", "valid"], "Model mode: split to evaluate.")
flags.DEFINE_bool("flip_test", True, "Model mode: average with the mirrored image (the paper's test procedure).")
flags.DEFINE_enum(
    "refine",
    None,
    ["quarter", "dark"],
    "Model mode: sub-pixel step of the decoder: quarter "
    "(the paper: a quarter pixel toward the higher neighbour) or dark (Newton step on the log-heatmap). "
    "Default: the model's own (its description's decoding: quarter for a model trained here, dark for the "
    "shipped lspet model).",
)
flags.DEFINE_list(
    "test_scales",
    ["1"],
    "Model mode: person box multipliers whose heatmaps are averaged "
    "(multi-scale testing, e.g. 0.9,1,1.1; the paper tests at 1 only).",
)
flags.DEFINE_string("output_dir", "runs/eval", "Model mode: where predictions, metrics and pictures go.")
flags.DEFINE_integer("batch_size", 16, "Model mode: batch size.")
flags.DEFINE_integer("max_samples", 0, "Model mode: evaluate the first this many people (0: all).")
flags.DEFINE_enum(
    "precision",
    "float32",
    ["float32", "bfloat16", "auto"],
    "Model mode: the precision a .keras model runs in (bfloat16: its batch norms folded, every layer but the "
    "outputs in bfloat16; measures what bfloat16 inference costs in accuracy).",
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from hourglass_tf import evaluation, inference_options, metrics, pretrained
    from hourglass_tf.data.sample import DataFileError

    file_mode = FLAGS.annotations is not None or FLAGS.predictions is not None
    model_mode = FLAGS.checkpoint is not None
    if file_mode == model_mode:
        raise app.UsageError("give --annotations and --predictions, or --checkpoint with --dataset")
    try:
        if file_mode:
            if FLAGS.annotations is None or FLAGS.predictions is None:
                raise app.UsageError("file mode needs both --annotations and --predictions")
            result = evaluation.evaluate_files(FLAGS.annotations, FLAGS.predictions, FLAGS.skeleton)
            name = "PCKh" if result["threshold"] == 0.5 else "PCK"
            print(metrics.format_table(result, name))
            print(f"AUC (0-{result['curve']['thresholds'][-1]:g}): {result['auc']:.2f}")
            if FLAGS.output_json:
                print(f"written {evaluation.write_json(result, FLAGS.output_json)}")
            if FLAGS.plot:
                print(f"written {evaluation.plot_curves(result, FLAGS.plot, name)}")
            return 0
        if FLAGS.dataset is None:
            raise app.UsageError("model mode needs --dataset")
        try:
            sigmas = [float(v) for v in FLAGS.oks_sigmas] if FLAGS.oks_sigmas else None
        except ValueError:
            raise app.UsageError(f"--oks_sigmas must be numbers, received {','.join(FLAGS.oks_sigmas)}") from None
        pretrained.check_model_argument(FLAGS.checkpoint)  # said before TensorFlow loads
        inference_options.parse_scales(FLAGS.test_scales)
        result = evaluation.evaluate_model(
            FLAGS.checkpoint,
            FLAGS.dataset,
            FLAGS.split,
            FLAGS.data_dir,
            FLAGS.tfrecord_dir,
            FLAGS.flip_test,
            FLAGS.output_dir,
            FLAGS.batch_size,
            FLAGS.max_samples,
            refine=FLAGS.refine,
            test_scales=FLAGS.test_scales,
            options=train_flags.coco_options_from_flags(FLAGS.dataset),
            oks_sigmas=sigmas,
            precision=FLAGS.precision,
        )
    except (DataFileError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    name = "PCKh" if result["threshold"] == 0.5 else "PCK"
    print(metrics.format_table(result, name))
    if len(result["summary"]) <= 2:  # a joint set without the human body parts: every joint
        print(" ".join(f"{joint} {value:.1f}" for joint, value in result["per_joint"].items()))
    limbs = f"mean over limb joints: {result['mean_limbs']:.2f}; " if np.isfinite(result["mean_limbs"]) else ""
    print(f"{limbs}AUC: {result['auc']:.2f}")
    if "coco_ap" in result:
        ap = result["coco_ap"]
        print(
            f"COCO keypoint AP (pycocotools, OKS): AP {ap['AP']:.3f}, AP50 {ap['AP50']:.3f}, AP75 {ap['AP75']:.3f}, "
            f"AR {ap['AR']:.3f}; results in {FLAGS.output_dir}/coco_results.json"
        )
    if np.isfinite(result["swapped"]["limbs"]):
        print(
            f"left/right swaps: {result['swapped']['limbs']:.2f} % of the scored limb joints miss onto the other "
            "side's joint"
        )
    print("per stack: " + ", ".join(f"{i + 1}: {v:.2f}" for i, v in enumerate(result["stack_accuracy"])))
    occ = result["occlusion"]

    def part(name):
        summary = occ[name]["summary"]
        return f"{summary['Mean']:.2f} ({occ[name]['joints']} joints)" if summary else "n/a (no such joint annotated)"

    print(
        f"visible joints {part('visible')}, occluded {part('occluded')}; presence AP from heatmap max "
        f"{occ['presence']['max']['average_precision']:.1f}, mean {occ['presence']['mean']['average_precision']:.1f}"
    )
    print(f"{result['people']} people; results in {FLAGS.output_dir}")
    return 0


if __name__ == "__main__":
    app.run(main)
