"""Converts a dataset into TFRecord shards of person regions (train and validation splits).

    python scripts/prepare_data.py --dataset=lspet --source=../shared/data/lspet --output=data/lspet_tfr
    python scripts/prepare_data.py --dataset=synthetic --source=data/synthetic --output=data/synthetic_tfr

For ``--dataset=synthetic`` the synthetic dataset is generated into ``--source`` first when it is
not there yet. Prints a progress bar and a summary (written, skipped and why, first offenders).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hourglass_tf import runtime  # noqa: E402

runtime.tune_allocators()  # before TensorFlow's first op: the allocator settings the package measured faster

from absl import app, flags  # noqa: E402

from hourglass_tf import flags as train_flags  # noqa: E402
from hourglass_tf.data import DATASETS  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", None, list(DATASETS), "Dataset layout of --source.")
flags.DEFINE_string("source", None, "Dataset root folder (see README: expected layouts).")
flags.DEFINE_string("output", None, "Output folder for the shards and meta.json.")
flags.DEFINE_integer("input_size", 256, "Network input size the stored resolution is chosen for.")
flags.DEFINE_integer("samples_per_shard", 1000, "Records per shard.")
flags.DEFINE_list("splits", ["train", "valid"], "Splits to convert.")
flags.DEFINE_integer("synthetic_train", 1000, "Synthetic images to generate for training (when absent).")
flags.DEFINE_integer("synthetic_valid", 200, "Synthetic images to generate for validation (when absent).")
flags.DEFINE_integer("seed", 0, "Seed of the synthetic dataset.")
train_flags.define_coco_keypoints_flags()
flags.mark_flags_as_required(["dataset", "source", "output"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from hourglass_tf.data.sample import DataFileError, require_folder

    if FLAGS.dataset != "synthetic":  # (generated when missing) said before TensorFlow loads
        try:
            require_folder(FLAGS.source)
        except DataFileError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    from hourglass_tf.data import readers, synthetic, tfrecords  # TensorFlow loads from here

    if FLAGS.dataset == "synthetic" and not os.path.exists(os.path.join(FLAGS.source, "annot", "valid.json")):
        print(f"generating the synthetic dataset in {FLAGS.source}")
        synthetic.generate(FLAGS.source, FLAGS.synthetic_train, FLAGS.synthetic_valid, seed=FLAGS.seed)
    options = train_flags.coco_options_from_flags(FLAGS.dataset)
    try:
        skeleton = readers.dataset_skeleton(FLAGS.dataset, FLAGS.source, options)
    except (DataFileError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    meta = {
        "dataset": FLAGS.dataset,
        "skeleton": skeleton.to_dict(),
        "num_joints": skeleton.num_joints,
        "input_size": FLAGS.input_size,
        "region": tfrecords.region_bounds(FLAGS.input_size),
        "source": os.path.abspath(FLAGS.source),
        "splits": {},
    }
    try:
        for split in FLAGS.splits:
            samples = readers.load_dataset(FLAGS.dataset, FLAGS.source, split, options)
            print(f"{split}: {len(samples)} samples")
            report = tfrecords.write_shards(
                samples, FLAGS.source, FLAGS.output, split, FLAGS.input_size, FLAGS.samples_per_shard
            )
            print(f"{split}: {report.summary()}")
            meta["splits"][split] = report.as_dict()
        tfrecords.write_meta(FLAGS.output, meta)
    except (DataFileError, ValueError, OSError) as err:  # OSError: a full disk, say; earlier files stay intact
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                split: {"written": v["kept"], "skipped": sum(v["skipped"].values())}
                for split, v in meta["splits"].items()
            }
        )
    )
    print(f"shards and meta.json in {FLAGS.output}")
    return 0


if __name__ == "__main__":
    app.run(main)
