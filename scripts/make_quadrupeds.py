"""Writes the generated four-legged dataset in COCO keypoint JSON: the custom-keypoints example.

    python scripts/make_quadrupeds.py --output=data/quadrupeds
    python scripts/train.py --flagfile=quadruped.flags

Writes OUTPUT/images/*.jpg and OUTPUT/annotations/{train,val}.json (category "quadruped", 15 keypoints, flip
pairs from the left/right names), the layout annotation tools export and --dataset=coco_keypoints reads.
"""

import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "data/quadrupeds", "Dataset folder to write.")
flags.DEFINE_integer("num_train", 1200, "Training images.", lower_bound=1)
flags.DEFINE_integer("num_valid", 200, "Validation images.", lower_bound=1)
flags.DEFINE_integer("image_size", 192, "Image side in pixels.", lower_bound=64)
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_bool("overwrite", False, "Write into an existing dataset folder.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from hourglass_tf.data import quadrupeds

    if os.path.exists(os.path.join(FLAGS.output, "annotations")) and not FLAGS.overwrite:
        print(f"error: {FLAGS.output} already holds a dataset; pass --overwrite to replace it", file=sys.stderr)
        return 2
    paths = quadrupeds.generate(FLAGS.output, FLAGS.num_train, FLAGS.num_valid, FLAGS.image_size, FLAGS.seed)
    print(f"written {', '.join(map(str, paths))} and {FLAGS.num_train + FLAGS.num_valid} images")
    return 0


if __name__ == "__main__":
    app.run(main)
