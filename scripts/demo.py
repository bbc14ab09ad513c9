"""Quick demo: build a small stacked hourglass, run it on a generated image, save a picture.

This stands in for the training demo until the training pipeline lands: it shows the
network's inputs and outputs end to end on one CPU in a few seconds.

    python scripts/demo.py --output_dir=runs/demo
"""

import json
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from hourglass_tf import MPII, build_model, output_names  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "runs/demo", "Where the picture and summary.json are written.")
flags.DEFINE_integer("num_stacks", 2, "Stacks of the demo model.")
flags.DEFINE_integer("filters", 64, "Features of the demo model.")
flags.DEFINE_integer("input_size", 128, "Input side in pixels (divisible by 64).")
flags.DEFINE_integer("seed", 0, "Seed of the generated image and the weights.")


def stick_figure(size, rng):
    """A (size, size, 3) uint8 RGB image of a stick figure and its MPII joints (16, 2) as (x, y) pixels."""
    u = size / 16.0
    joints = np.array(
        [[6, 15], [6.2, 12.5], [6.5, 10], [9.5, 10], [9.8, 12.5], [10, 15], [8, 10], [8, 6],
         [8, 5], [8, 2.5], [4, 9], [4.5, 7.5], [6, 6], [10, 6], [11.5, 7.5], [12, 9]],
        np.float32,
    ) * u  # fmt: skip
    image = np.full((size, size, 3), rng.integers(40, 90, 3), np.uint8)
    for a, b in MPII.limbs:
        colour = tuple(int(c) for c in rng.integers(120, 255, 3))
        cv2.line(image, tuple(map(int, joints[a])), tuple(map(int, joints[b])), colour, max(1, size // 40))
    cv2.circle(image, tuple(map(int, joints[9] + [0, u])), int(u), (230, 200, 170), -1)
    return image, joints


def main(argv):
    del argv
    out_dir = pathlib.Path(FLAGS.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(FLAGS.seed)
    image, joints = stick_figure(FLAGS.input_size, rng)

    import keras

    keras.utils.set_random_seed(FLAGS.seed)
    start = time.time()
    model = build_model(num_stacks=FLAGS.num_stacks, filters=FLAGS.filters, input_size=FLAGS.input_size)
    heatmaps = model.predict_on_batch(image[None].astype(np.float32) / 255.0)
    seconds = time.time() - start
    last = heatmaps[output_names(model)[-1]][0]

    # Picture: the input with its joints, and the (untrained) summed heatmaps of the last stack.
    overlay = image.copy()
    for x, y in joints:
        cv2.circle(overlay, (int(x), int(y)), 2, (255, 0, 0), -1)
    summed = last.sum(axis=-1)
    summed = (255 * (summed - summed.min()) / (np.ptp(summed) + 1e-9)).astype(np.uint8)
    summed = cv2.resize(cv2.applyColorMap(summed, cv2.COLORMAP_JET), overlay.shape[:2][::-1], interpolation=cv2.INTER_NEAREST)
    picture = np.concatenate([overlay[..., ::-1], summed], axis=1)
    png = out_dir / "demo.png"
    cv2.imwrite(str(png), picture)

    summary = {
        "model": {"num_stacks": FLAGS.num_stacks, "filters": FLAGS.filters, "input_size": FLAGS.input_size,
                  "parameters": int(model.count_params())},
        "outputs": {name: list(value.shape) for name, value in heatmaps.items()},
        "build_and_predict_seconds": round(seconds, 2),
        "paths": {"picture": str(png), "summary": str(out_dir / "summary.json")},
        "note": "untrained weights: the heatmaps are noise until the training pipeline lands",
    }  # fmt: skip
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    app.run(main)
