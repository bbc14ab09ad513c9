"""The person-box rule without TensorFlow: a box (x, y, w, h) or the annotated joints -> a person (centre, scale).

A person is a ``center`` (x, y) in original pixels, 0-based, and a ``scale``: the side of the person box is
``PERSON_BOX_UNIT * scale`` pixels (the MPII convention). A box becomes a person by ``box_rule``: centre of the
box, side ``BOX_PAD`` x the larger box side. The rule is written once, here, over any arithmetic:
``geometry.box_to_center_scale`` runs it on TensorFlow tensors (inside ``tf.data`` and exported graphs), and the
dataset readers and command-line checks run it on NumPy values through this module, which imports no TensorFlow.
"""

import numpy as np

PERSON_BOX_UNIT = 200.0  # person box side in pixels = PERSON_BOX_UNIT * scale
BOX_PAD = 1.25  # person box side = BOX_PAD x the larger side of a tight box
MIN_BOX_SIDE = 32.0  # smallest person box side (pixels) derived from joints


def box_rule(x, y, w, h, maximum=np.maximum):
    """The box rule on box coordinates of any array type: returns (centre x, centre y, scale).

    ``maximum`` is the element-wise maximum of that type (``np.maximum``; ``tf.maximum`` for tensors). Float32
    inputs give float32 results, the same bits with either library (the same operations in the same order).
    """
    return x + w / 2.0, y + h / 2.0, BOX_PAD * maximum(w, h) / PERSON_BOX_UNIT


def boxes_outside(boxes, width, height):
    """(M,) bool: which boxes (M, 4) as x, y, w, h lie entirely outside a ``width`` x ``height`` image."""
    x, y, w, h = np.asarray(boxes, np.float64).reshape(-1, 4).T
    return (x >= width) | (y >= height) | (x + w <= 0) | (y + h <= 0)


def box_from_person(center, scale):
    """The inverse of the box rule: the square box (x, y, w, h) whose person is ``center``, ``scale``."""
    side = float(scale) * PERSON_BOX_UNIT / BOX_PAD
    return np.array([center[0] - side / 2, center[1] - side / 2, side, side], np.float32)


def person_from_box(box):
    """One box (x, y, w, h) -> (centre (2,) float32 NumPy, scale float); ValueError for a box without area."""
    values = tuple(float(v) for v in np.asarray(box, np.float64).ravel())
    if len(values) != 4:
        raise ValueError(f"a box is x, y, w, h, received {box!r}")
    if not (values[2] > 0 and values[3] > 0):
        raise ValueError(f"box width and height must be positive, received box={values}")
    cx, cy, scale = box_rule(*np.asarray(values, np.float32))
    return np.array([cx, cy], np.float32), float(scale)


def center_scale_from_joints(joints, present):
    """The box of the annotated joints -> (centre (2,) float32, scale): side BOX_PAD x the larger side, >= 32 px.

    Returns (NaN, NaN) when no joint is present.
    """
    xy = np.asarray(joints, np.float64)[np.asarray(present, bool)]
    if len(xy) == 0:
        return np.array([np.nan, np.nan], np.float32), float("nan")
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    side = max(BOX_PAD * float(np.max(hi - lo)), MIN_BOX_SIDE)
    return ((lo + hi) / 2).astype(np.float32), side / PERSON_BOX_UNIT


def whole_image_person(width, height):
    """The person who fills a width x height image: centre of the image, box side = the larger side."""
    return np.array([(width - 1) / 2, (height - 1) / 2], np.float32), max(width, height) / PERSON_BOX_UNIT
