"""TF Serving client side: REST payloads for both signatures, response parsing, and an in-process stand-in.

REST (``POST {server}/v1/models/{name}:predict``), columnar format:
* crops:  ``{"signature_name": "serving_default", "inputs": {"images": [[[[r, g, b], ...]]]}}``
  (uint8 values) -> ``{"outputs": {"heatmaps": ..., "keypoints": ..., "scores": ...}}``.
* photo:  ``{"signature_name": "predict_image", "inputs": {"image_bytes": {"b64": "..."},
  "box": [x, y, w, h]}}`` -> ``{"outputs": {"keypoints": [[x, y], ...], "scores": [...]}}``.
* the model's description: ``{"signature_name": "metadata", "inputs": {"request": ""}}`` ->
  ``{"outputs": "<JSON text>"}`` (one output: TF Serving gives its value without the name);
  ``description(reply)`` reads the joint names and the rest from it.

``serve_in_process`` evaluates such a payload with ``tf.saved_model.load`` the way the model
server does (``{"b64": ...}`` -> bytes, lists -> tensors of the signature's dtypes), so the
request building and response parsing are tested without a server.
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
