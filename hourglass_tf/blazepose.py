"""A person detector that has seen athletes: MediaPipe's BlazePose person detector, run by LiteRT, no download at
run time.

The weights are ``mediapipe/modules/pose_detection/pose_detection.tflite`` (2.96 MB, Apache-2.0) from the wheel of
PyPI ``mediapipe==0.10.21`` (later versions ship no model files). The wheel is not installed (it pins numpy < 2 and
protobuf < 5): ``install_weights`` downloads it without dependencies, checks it, and copies that one file to
``weights_path()`` (``make install`` does; a plain ``pip install`` user runs ``INSTALL`` once).

The model (Bazarevsky et al., "BlazePose: On-device Real-time Body Pose tracking", CVPR workshops 2020) takes a
(1, 224, 224, 3) float32 letterboxed image in [-1, 1] and scores 2,254 SSD anchors; each anchor regresses a box
(the face) and 4 keypoints: 0 the hips' midpoint, 1 a point whose distance from it is the radius of a circle
around the whole body, 2 the shoulders' midpoint, 3 the same for the upper body. Decoding follows MediaPipe's
``pose_detection_cpu.pbtxt``: the anchors of ``ssd_anchors`` (5 layers, strides 8, 16, 32, 32, 32, 2 anchors a
cell and layer, fixed size), sigmoid scores clipped at +-100, offsets divided by 224, weighted non-maximum
suppression at IoU 0.3 over the face boxes (overlapping detections are averaged, weighted by score).

The person box (x, y, w, h in image pixels, 0-based) is a square centred on the hips' midpoint with side
``BOX_SCALE`` x the body circle's diameter: calibrated on LSPET so that the box the package crops from it (1.25 x
its side) matches the crops of the annotated joints (docs/people.md). A ``.tflite`` file is data; reading it runs
no code from it.
"""

import hashlib
import pathlib
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

WHEEL = "mediapipe==0.10.21"
MEMBER = "mediapipe/modules/pose_detection/pose_detection.tflite"
SHA256 = "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"
INSTALL = "python -m hourglass_tf.blazepose"
INPUT_SIZE = 224
STRIDES = (8, 16, 32, 32, 32)
NUM_KEYPOINTS = 4
# MediaPipe's settings (pose_detection_cpu.pbtxt) and the calibrated box rule (docs/people.md).
MIN_SCORE = 0.5
NMS_IOU = 0.3
BOX_SCALE = 0.8


class MissingWeightsError(FileNotFoundError):
    """The detector's weights are not installed; the message says the one command that installs them."""


def weights_path():
    """Where the weights live: ``<prefix>/share/hourglass_tf/pose_detection.tflite`` of the running Python
    (the virtual environment ``make install`` made)."""
    return pathlib.Path(sys.prefix) / "share" / "hourglass_tf" / pathlib.Path(MEMBER).name


def installed_weights():
    """``weights_path()`` when it holds the checked file; ``MissingWeightsError`` saying ``INSTALL`` otherwise."""
    path = weights_path()
    if not path.is_file():
        raise MissingWeightsError(
            f"the BlazePose person detector's weights ({path}) are not installed: run `{INSTALL}` (make install does)"
        )
    return path


def extract_weights(wheel, destination):
    """Copies ``MEMBER`` out of the ``mediapipe`` wheel ``wheel`` to ``destination`` after checking its SHA-256;
    ValueError naming the wheel when it lacks the file or the file is not the expected one. Nothing is written
    then, and nothing is ever left half-written."""
    with zipfile.ZipFile(wheel) as archive:
        if MEMBER not in archive.namelist():
            raise ValueError(f"{wheel}: no {MEMBER} inside (only mediapipe 0.10.21 and earlier ship it)")
        data = archive.read(MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise ValueError(f"{wheel}: {MEMBER} has SHA-256 {digest}, expected {SHA256}")
    destination = pathlib.Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    partial.write_bytes(data)
    partial.replace(destination)
    return destination


def install_weights(destination=None, python=sys.executable):
    """Downloads the ``mediapipe`` wheel without its dependencies (``pip download --no-deps``) into a temporary
    folder and extracts the detector's weights to ``destination`` (``weights_path()``). Returns the path."""
    destination = pathlib.Path(destination or weights_path())
    with tempfile.TemporaryDirectory() as folder:
        command = [python, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", WHEEL, "-d", folder]
        subprocess.run(command, check=True)
        wheels = sorted(pathlib.Path(folder).glob("mediapipe-*.whl"))
        if not wheels:
            raise ValueError(f"pip download {WHEEL} gave no wheel for this platform")
        return extract_weights(wheels[0], destination)


def anchors():
    """The SSD anchor centres (2254, 2) as (x, y) in [0, 1] of the 224 x 224 input, in the model's output order:
    per group of layers of one stride, rows, then columns, then the group's anchors (2 a layer)."""
    centres = []
    start = 0
    while start < len(STRIDES):
        end = start
        while end < len(STRIDES) and STRIDES[end] == STRIDES[start]:
            end += 1
        cells = int(np.ceil(INPUT_SIZE / STRIDES[start]))
        per_cell = 2 * (end - start)
        y, x = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(x + 0.5) / cells, (y + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2))
        start = end
    return np.concatenate(centres).astype(np.float32)


ANCHORS = anchors()


def decode(regressors, logits, min_score=MIN_SCORE):
    """The model's raw outputs to detections, in [0, 1] coordinates of the letterboxed input.

    Args:
      regressors: (2254, 12) float: box centre x, y, width, height, then 4 keypoints' x, y, in input pixels
        relative to the anchor centre.
      logits: (2254,) or (2254, 1) float scores before the sigmoid.

    Returns:
      scores (N,), face boxes (N, 4) as (xmin, ymin, xmax, ymax), keypoints (N, 4, 2) as (x, y), of the anchors
      scoring at least ``min_score``.
    """
    regressors = np.asarray(regressors, np.float32).reshape(len(ANCHORS), 4 + 2 * NUM_KEYPOINTS)
    logits = np.asarray(logits, np.float32).reshape(len(ANCHORS))
    scores = 0.5 * (1.0 + np.tanh(0.5 * np.clip(logits, -100.0, 100.0)))  # the sigmoid, without overflow
    keep = scores >= min_score
    offsets, anchor, scores = regressors[keep] / INPUT_SIZE, ANCHORS[keep], scores[keep]
    centre, size = offsets[:, :2] + anchor, offsets[:, 2:4]
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    keypoints = offsets[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + anchor[:, None, :]
    return scores, boxes, keypoints


def _iou(box, boxes):
    """IoU of one (xmin, ymin, xmax, ymax) box with (N, 4) boxes."""
    low, high = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(high - low, 0.0, None), axis=1)
    area = np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) - inter
    return inter / np.maximum(area, 1e-12)


def weighted_nms(scores, boxes, keypoints, iou=NMS_IOU):
    """MediaPipe's weighted non-maximum suppression: the best remaining detection and every one overlapping its box
    by more than ``iou`` become one detection, their boxes and keypoints averaged with the scores as weights and
    the best score kept. Returns (scores, boxes, keypoints) best first."""
    order = list(np.argsort(-scores, kind="stable"))
    merged = ([], [], [])
    while order:
        overlap = _iou(boxes[order[0]], boxes[order])
        group = [i for i, o in zip(order, overlap) if o > iou] or [order[0]]
        weights = scores[group] / scores[group].sum()
        merged[0].append(scores[order[0]])
        merged[1].append(np.tensordot(weights, boxes[group], axes=1))
        merged[2].append(np.tensordot(weights, keypoints[group], axes=1))
        order = [i for i, o in zip(order, overlap) if o <= iou and i != order[0]]
    if not merged[0]:
        return np.zeros(0, np.float32), np.zeros((0, 4), np.float32), np.zeros((0, NUM_KEYPOINTS, 2), np.float32)
    return tuple(np.asarray(m, np.float32) for m in merged)


def letterbox(image):
    """(H, W, 3) uint8 RGB -> the model's (1, 224, 224, 3) float32 input in [-1, 1] (the image scaled to fit,
    centred, zero padding) and the (scale, pad_x, pad_y) that map input pixels back: image = (input - pad) / scale."""
    import cv2

    height, width = image.shape[:2]
    scale = INPUT_SIZE / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    pad_x, pad_y = (INPUT_SIZE - new_w) // 2, (INPUT_SIZE - new_h) // 2
    canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.float32)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA).astype(np.float32)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized / 127.5 - 1.0
    return canvas[None], (scale, pad_x, pad_y)


def to_image(points, transform):
    """Points (..., 2) in [0, 1] of the letterboxed input -> image pixels (``letterbox``'s ``transform``)."""
    scale, pad_x, pad_y = transform
    pixels = (np.asarray(points, np.float32) * INPUT_SIZE - np.array([pad_x, pad_y], np.float32)) / scale
    return pixels.astype(np.float32)


def person_boxes(points, box_scale=BOX_SCALE):
    """Keypoints (N, 4, 2) in image pixels -> person boxes (N, 4) x, y, w, h in image pixels: squares centred on
    the hips' midpoint, side ``box_scale`` x the body circle's diameter."""
    points = np.asarray(points, np.float32)
    centre = points[:, 0]
    side = 2.0 * np.linalg.norm(points[:, 1] - points[:, 0], axis=1) * box_scale
    return np.column_stack([centre - side[:, None] / 2, side, side]).astype(np.float32)


class BlazePosePersons:
    """MediaPipe's BlazePose person detector as a person source: ``detector(image, key=None) -> (boxes (M, 4),
    scores (M,))`` with boxes x, y, w, h in image pixels (0-based), best first.

    Args:
      path: the ``.tflite`` file (default: the installed weights, ``installed_weights()``).
      min_score, nms_iou: MediaPipe's score threshold and suppression overlap; box_scale: see ``person_boxes``;
      max_people: at most this many boxes; threads: LiteRT's CPU threads.
    """

    name = "blazepose"

    def __init__(
        self, path=None, min_score=MIN_SCORE, nms_iou=NMS_IOU, box_scale=BOX_SCALE, max_people=20, threads=None
    ):
        from ai_edge_litert.interpreter import Interpreter

        from hourglass_tf.detectors import check_options

        check_options(min_score, nms_iou, box_scale, max_people)

        self.path = pathlib.Path(path) if path is not None else installed_weights()
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"{self.path}: not a TFLite model ({err})") from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        shapes = [tuple(d["shape"]) for d in outputs]
        if [tuple(d["shape"]) for d in inputs] != [(1, INPUT_SIZE, INPUT_SIZE, 3)] or sorted(shapes) != sorted(
            [(1, len(ANCHORS), 4 + 2 * NUM_KEYPOINTS), (1, len(ANCHORS), 1)]
        ):
            raise ValueError(f"{self.path}: not the BlazePose person detector (inputs, outputs: {inputs}, {shapes})")
        self.input = inputs[0]["index"]
        self.regressors = next(d["index"] for d in outputs if d["shape"][-1] == 4 + 2 * NUM_KEYPOINTS)
        self.logits = next(d["index"] for d in outputs if d["shape"][-1] == 1)
        self.options = dict(min_score=float(min_score), nms_iou=float(nms_iou), box_scale=float(box_scale))
        self.max_people = int(max_people)

    def detect(self, image):
        """Detections of one (H, W, 3) uint8 RGB image: scores (M,), keypoints (M, 4, 2) in image pixels, and the
        person boxes (M, 4), best first."""
        from hourglass_tf.detectors import checked_image

        tensor, transform = letterbox(checked_image(image))
        self.interpreter.set_tensor(self.input, tensor)
        self.interpreter.invoke()
        found = decode(
            self.interpreter.get_tensor(self.regressors)[0],
            self.interpreter.get_tensor(self.logits)[0],
            self.options["min_score"],
        )
        scores, _, keypoints = weighted_nms(*found, iou=self.options["nms_iou"])
        scores, keypoints = scores[: self.max_people], keypoints[: self.max_people]
        pixels = to_image(keypoints, transform)
        return scores, pixels, person_boxes(pixels, self.options["box_scale"])

    def __call__(self, image, key=None):
        scores, _, boxes = self.detect(image)
        return boxes, scores.astype(np.float32)


def main(argv=None):
    """``python -m hourglass_tf.blazepose``: installs the weights (``install_weights``) and says where."""
    path = install_weights()
    print(f"installed the BlazePose person detector's weights: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
