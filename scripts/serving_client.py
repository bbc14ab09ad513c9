"""Client for a model served by TF Serving (REST, or gRPC with tensorflow-serving-api installed).

    python scripts/serving_client.py --server=http://localhost:8501 --model_name=hourglass \
        --image=photo.jpg --box=x,y,w,h
    python scripts/serving_client.py --grpc=localhost:8500 --model_name=hourglass --image=photo.jpg --box=x,y,w,h

Sends the photo and the person box to the `predict_image` signature and prints the keypoints (original
pixels, 0-based) as JSON, named with the joint names the served model reports (its `metadata` signature). See exported/README.md for running the server.
"""

import json
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("server", "http://localhost:8501", "REST address of the model server.")
flags.DEFINE_string("grpc", None, "gRPC address (host:8500) instead of REST; needs tensorflow-serving-api.")
flags.DEFINE_string("model_name", "hourglass", "Model name in the server's models.config.")
flags.DEFINE_string("image", None, "JPEG or PNG photo.")
flags.DEFINE_list("box", None, "Person box x,y,w,h in pixels.")
flags.mark_flags_as_required(["image", "box"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from hourglass_tf import serving

    try:
        with open(FLAGS.image, "rb") as f:
            payload = serving.image_request(f.read(), FLAGS.box)
        if FLAGS.grpc:
            result = serving.predict_grpc(FLAGS.grpc, FLAGS.model_name, payload)
            description = serving.description(
                serving.predict_grpc(FLAGS.grpc, FLAGS.model_name, serving.metadata_request())
            )
        else:
            result = serving.predict_rest(FLAGS.server, FLAGS.model_name, payload)
            description = serving.description(
                serving.predict_rest(FLAGS.server, FLAGS.model_name, serving.metadata_request())
            )
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    joints = description["skeleton"]["joints"]
    print(
        json.dumps(
            [
                {"joint": j, "x": float(x), "y": float(y), "score": float(s)}
                for j, (x, y), s in zip(joints, result["keypoints"], result["scores"])
            ],
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    app.run(main)
