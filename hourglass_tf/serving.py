"""TF Serving client side: REST payloads for both signatures, response parsing, and an in-process stand-in.

REST (``POST {server}/v1/models/{name}:predict``), columnar format:
* crops:  ``{"signature_name": "serving_default", "inputs": {"images": [[[[r, g, b], ...]]]}}``
  (uint8 values) -> ``{"outputs": {"heatmaps": ..., "keypoints": ..., "scores": ...}}``.
* photo:  ``{"signature_name": "predict_image", "inputs": {"image_bytes": {"b64": "..."},
  "box": [x, y, w, h]}}`` -> ``{"outputs": {"keypoints": [[x, y], ...], "scores": [...]}}``.
* whole photos, several people each (TF Serving can batch these): ``{"signature_name": "predict_images",
  "inputs": {"image_bytes": [{"b64": "..."}, ...], "boxes": [[[x, y, w, h], ...], ...], "box_count": [m, ...]}}``
  -> ``{"outputs": {"keypoints": [[[[x, y, score], ...]]], "valid": [[true, ...]]}}`` (N, M, K, 3).
* the model's description: ``{"signature_name": "metadata", "inputs": {"request": ""}}`` ->
  ``{"outputs": "<JSON text>"}`` (one output: TF Serving gives its value without the name);
  ``description(reply)`` reads the joint names and the rest from it.

``serve_in_process`` evaluates such a payload with ``tf.saved_model.load`` the way the model
server does (``{"b64": ...}`` -> bytes, lists -> tensors of the signature's dtypes), so the
request building and response parsing are tested without a server.

``write_warmup`` writes the SavedModel's ``assets.extra/tf_serving_warmup_requests``: one ``PredictionLog``
record per signature (TFRecord file, the ``tensorflow-serving-api`` protos), which TF Serving replays at load
time so that the first real request does not pay for graph compilation (tensorflow/serving#385, #1414).
"""

import base64
import json
import urllib.request

import numpy as np


def crops_request(crops):
    """REST payload for ``serving_default`` from uint8 crops (N, R, R, 3)."""
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"crops must be uint8 (N, R, R, 3), received {crops.dtype} {crops.shape}")
    return {"signature_name": "serving_default", "inputs": {"images": crops.tolist()}}


def image_request(image_bytes, box):
    """REST payload for ``predict_image``: encoded JPEG/PNG bytes and a person box (x, y, w, h) in pixels."""
    box = [float(v) for v in box]
    if len(box) != 4:
        raise ValueError(f"box must be x, y, w, h, received {box}")
    return {
        "signature_name": "predict_image",
        "inputs": {"image_bytes": {"b64": base64.b64encode(bytes(image_bytes)).decode("ascii")}, "box": box},
    }


def images_request(images_bytes, boxes):
    """REST payload for ``predict_images``: encoded images and each image's person boxes (lists of x, y, w, h).

    The boxes are padded to the longest list; ``box_count`` says how many of each row are people.
    """
    images_bytes = [bytes(b) for b in images_bytes]
    if not images_bytes or len(boxes) != len(images_bytes):
        raise ValueError(f"give one list of boxes per image, received {len(images_bytes)} images, {len(boxes)} lists")
    counts = [len(b) for b in boxes]
    width = max(max(counts), 1)
    padded = []
    for image_boxes in boxes:
        rows = [[float(v) for v in box] for box in image_boxes]
        if any(len(r) != 4 for r in rows):
            raise ValueError(f"a box is x, y, w, h, received {image_boxes}")
        padded.append(rows + [[0.0, 0.0, 0.0, 0.0]] * (width - len(rows)))
    return {
        "signature_name": "predict_images",
        "inputs": {
            "image_bytes": [{"b64": base64.b64encode(b).decode("ascii")} for b in images_bytes],
            "boxes": padded,
            "box_count": counts,
        },
    }


def photo_request(image_bytes):
    """REST payload for ``predict_photo`` (a SavedModel exported with a person detector inside): the photo alone."""
    return {
        "signature_name": "predict_photo",
        "inputs": {"image_bytes": {"b64": base64.b64encode(bytes(image_bytes)).decode("ascii")}},
    }


def metadata_request():
    """REST payload for the ``metadata`` signature (its ``request`` input is ignored)."""
    return {"signature_name": "metadata", "inputs": {"request": ""}}


def parse_response(response):
    """TF Serving's columnar response (dict or JSON text) -> dict of NumPy arrays; raises on an error reply.

    A single-output reply (TF Serving omits the name) comes back as {"output": value}; string
    values stay strings.
    """
    if isinstance(response, (str, bytes)):
        response = json.loads(response)
    if "error" in response:
        raise ValueError(f"the model server refused the request: {response['error']}")
    if "outputs" not in response:
        raise ValueError(f"not a TF Serving predict response (keys: {sorted(response)})")
    outputs = response["outputs"]
    if not isinstance(outputs, dict):
        outputs = {"output": outputs}
    return {name: value if isinstance(value, str) else np.asarray(value, np.float32) for name, value in outputs.items()}


def description(outputs):
    """The served model's description (a dict: ``skeleton.joints`` etc.) from a ``metadata`` reply's outputs."""
    (value,) = outputs.values()
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO":
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    try:
        data = json.loads(value)
    except (TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"the metadata reply is not the model's JSON description ({err})") from None
    if "skeleton" not in data:
        raise ValueError(f"the metadata reply has no skeleton (keys: {sorted(data)})")
    return data


def predict_rest(server, model_name, payload, timeout=60):
    """POSTs ``payload`` to ``{server}/v1/models/{model_name}:predict`` and parses the reply."""
    request = urllib.request.Request(
        f"{server.rstrip('/')}/v1/models/{model_name}:predict",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return parse_response(reply.read())


def predict_grpc(target, model_name, payload, timeout=60):
    """The same payload over gRPC (needs the optional ``tensorflow-serving-api`` package)."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = payload["signature_name"]
    for name, tensor in _payload_tensors(payload).items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(tensor))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
    reply = stub.Predict(request, timeout)
    arrays = {name: tf.make_ndarray(proto) for name, proto in reply.outputs.items()}
    return {name: a if a.dtype.kind in "SO" else a.astype(np.float32) for name, a in arrays.items()}


def _payload_tensors(payload):
    inputs = payload["inputs"]
    if payload["signature_name"] == "serving_default":
        return {"images": np.asarray(inputs["images"], np.uint8)}
    if payload["signature_name"] == "metadata":
        return {"request": str(inputs.get("request", ""))}
    if payload["signature_name"] == "predict_photo":
        return {"image_bytes": base64.b64decode(inputs["image_bytes"]["b64"])}
    if payload["signature_name"] == "predict_images":
        return {
            "image_bytes": np.array([base64.b64decode(item["b64"]) for item in inputs["image_bytes"]], dtype=object),
            "boxes": np.asarray(inputs["boxes"], np.float32).reshape(len(inputs["image_bytes"]), -1, 4),
            "box_count": np.asarray(inputs["box_count"], np.int32),
        }
    return {"image_bytes": base64.b64decode(inputs["image_bytes"]["b64"]), "box": np.asarray(inputs["box"], np.float32)}


def serve_in_process(saved_model_dir, payload):
    """Answers a REST payload with the SavedModel loaded in this process, in TF Serving's response format."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(saved_model_dir)).signatures[payload["signature_name"]]
    try:
        outputs = signature(**{k: tf.constant(v) for k, v in _payload_tensors(payload).items()})
    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as err:
        return {"error": str(err)}  # TF Serving returns the whole message too
    values = {name: value.numpy() for name, value in outputs.items()}
    values = {name: v.decode("utf-8") if isinstance(v, bytes) else v.tolist() for name, v in values.items()}
    if len(values) == 1:  # TF Serving's columnar format omits the name of a single output
        (only,) = values.values()
        return {"outputs": only}
    return {"outputs": values}


WARMUP_FILENAME = "tf_serving_warmup_requests"


def warmup_payloads(input_size, photo=False):
    """One small request per signature (a generated picture: no user data), as REST payloads; ``photo``: also
    ``predict_photo`` (a SavedModel with a person detector inside)."""
    import cv2

    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (2 * input_size, 2 * input_size, 3), dtype=np.uint8)
    ok, jpeg = cv2.imencode(".jpg", picture)
    if not ok:
        raise RuntimeError("could not encode the warm-up picture")
    jpeg = jpeg.tobytes()
    side = float(input_size)
    return [
        crops_request(picture[None, :input_size, :input_size]),
        image_request(jpeg, (0.0, 0.0, side, side)),
        images_request([jpeg, jpeg], [[(0.0, 0.0, side, side), (side / 2, side / 2, side, side)], []]),
        metadata_request(),
    ] + ([photo_request(jpeg)] if photo else [])


def write_warmup(path, payloads, model_name="hourglass"):
    """Writes ``payloads`` as TF Serving warm-up records (TFRecord of ``PredictionLog``) at ``path``."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    with tf.io.TFRecordWriter(str(path)) as writer:
        for payload in payloads:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=payload["signature_name"])
            )
            for name, value in _payload_tensors(payload).items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_warmup(path):
    """The warm-up records of ``path`` as (signature name, {input name: NumPy array}) pairs."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    out = []
    for record in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        out.append((request.model_spec.signature_name, {k: tf.make_ndarray(v) for k, v in request.inputs.items()}))
    return out
