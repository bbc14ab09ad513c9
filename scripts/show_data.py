"""Writes a PNG grid of augmented training samples: skeleton drawn, heatmaps overlaid.

python scripts/show_data.py --dataset=lspet --data_dir=../shared/data/lspet --output=runs/lspet_samples.png
python scripts/show_data.py --dataset=synthetic --tfrecord_dir=data/synthetic_tfr --output=runs/syn.png
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hourglass_tf import runtime  # noqa: E402

runtime.tune_allocators()  # before TensorFlow's first op: the allocator settings the package measured faster

from absl import app, flags  # noqa: E402

from hourglass_tf.data import DATASETS  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", None, list(DATASETS), "Dataset layout.")
flags.DEFINE_string("data_dir", None, "Dataset root (raw files).")
flags.DEFINE_string("tfrecord_dir", None, "Folder of TFRecord shards (instead of --data_dir).")
flags.DEFINE_enum("split", "train", ["train", "valid"], "Split to draw from.")
flags.DEFINE_bool("augment", True, "Apply the training augmentation (otherwise the plain validation crop).")
flags.DEFINE_integer("num", 16, "Samples to draw.")
flags.DEFINE_integer("columns", 4, "Grid columns.")
flags.DEFINE_integer("input_size", 256, "Crop size.")
flags.DEFINE_integer("seed", 0, "Seed of the shuffle and the augmentation.")
flags.DEFINE_string("output", "runs/samples.png", "PNG to write.")
flags.mark_flag_as_required("dataset")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from hourglass_tf.data.sample import DataFileError, require_data_folders

    try:
        require_data_folders(FLAGS.data_dir, FLAGS.tfrecord_dir)  # said before TensorFlow loads
    except DataFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    import numpy as np

    from hourglass_tf import visualize
    from hourglass_tf.data import pipeline, sources

    try:
        source, skeleton, report, count = sources.load_source(
            FLAGS.dataset, FLAGS.split, FLAGS.data_dir, FLAGS.tfrecord_dir
        )
    except (DataFileError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if report.total_skipped:
        print(report.summary())
    dataset = pipeline.make_dataset(
        source,
        skeleton,
        1,
        FLAGS.num,
        input_size=FLAGS.input_size,
        seed=FLAGS.seed,
        training=FLAGS.augment,
        with_meta=True,
        drop_remainder=False,
    )
    crops, targets, meta = next(iter(dataset))
    tiles = []
    for i in range(crops.shape[0]):
        image = (255 * crops[i].numpy()).astype(np.uint8)
        image = visualize.heatmap_overlay(image, targets["stack_1"][i].numpy())
        tiles.append(
            visualize.draw_skeleton(image, meta["crop_joints"][i].numpy(), meta["crop_present"][i].numpy(), skeleton)
        )
    output = pathlib.Path(FLAGS.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    visualize.save_png(output, visualize.grid(tiles, FLAGS.columns))
    print(f"{len(tiles)} of {count} {FLAGS.split} samples drawn to {output}")
    return 0


if __name__ == "__main__":
    app.run(main)
