"""Client for a model served by TF Serving (REST, or gRPC): every person's keypoints in a photo.

    python scripts/serving_client.py --server=http://localhost:8501 --model_name=hourglass \
        --image=photo.jpg --box=x,y,w,h --box=x,y,w,h
    python scripts/serving_client.py --grpc=localhost:8500 --model_name=hourglass --image=photo.jpg --box=x,y,w,h

Sends the whole photo (base64 over REST) and its person boxes to the `predict_images` signature (without --box,
the whole photo is one person) and prints each person's keypoints (original pixels, 0-based) as JSON, named with
the joint names the served model reports (its `metadata` signature). See exported/README.md for the server.
"""

import json
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("server", "http://localhost:8501", "REST address of the model server.")
flags.DEFINE_string("grpc", None, "gRPC address (host:8500) instead of REST.")
flags.DEFINE_string("model_name", "hourglass", "Model name in the server's models.config.")
flags.DEFINE_string("image", None, "JPEG or PNG photo.")
flags.DEFINE_multi_string("box", [], "A person box x,y,w,h in pixels (repeat for several people).")
flags.mark_flags_as_required(["image"])


def _boxes(image_bytes):
    boxes = []
    for text in FLAGS.box:
        try:
            box = [float(v) for v in text.split(",")]
        except ValueError:
            box = []
        if len(box) != 4:
            raise app.UsageError(f"--box must be x,y,w,h, received {text}")
        boxes.append(box)
    if boxes:
        return boxes
    import cv2
    import numpy as np

    from hourglass_tf import geometry

    image = cv2.imdecode(np.frombuffer(image_bytes, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{FLAGS.image}: not a readable image")
    height, width = image.shape[:2]
    return [geometry.box_from_person(*geometry.whole_image_person(width, height)).tolist()]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from hourglass_tf import serving

    def ask(payload):
        if FLAGS.grpc:
            return serving.predict_grpc(FLAGS.grpc, FLAGS.model_name, payload)
        return serving.predict_rest(FLAGS.server, FLAGS.model_name, payload)

    try:
        with open(FLAGS.image, "rb") as f:
            image_bytes = f.read()
        boxes = _boxes(image_bytes)
        result = ask(serving.images_request([image_bytes], [boxes]))
        description = serving.description(ask(serving.metadata_request()))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    joints = description["skeleton"]["joints"]
    people = [
        {
            "box": box,
            "keypoints": [
                {"joint": j, "x": float(x), "y": float(y), "score": float(s)}
                for j, (x, y, s) in zip(joints, result["keypoints"][0][i])
            ],
        }
        for i, box in enumerate(boxes)
    ]
    print(json.dumps(people, indent=1))
    return 0


if __name__ == "__main__":
    app.run(main)
