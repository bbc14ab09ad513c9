"""Evaluation metrics, pure NumPy.

Normalisers:
* MPII PCKh: head size = 0.6 x the diagonal of the annotated head box (the
  ``normalize`` field of the original code's annot h5 holds exactly that).
* LSP / LSPET / FLIC PCK: torso size = distance between the right shoulder and
  the left hip (the definition behind the ``normalize`` field of the original
  code's FLIC annot h5); when either is missing, the left shoulder to the right
  hip; NaN when neither pair is annotated.
"""

import numpy as np

HEAD_SIZE_FACTOR = 0.6


def head_size_from_box(x1, y1, x2, y2):
    """MPII head size: 0.6 x the head box diagonal (pixels)."""
    return HEAD_SIZE_FACTOR * float(np.hypot(x2 - x1, y2 - y1))


def _joint_index(skeleton, side, part):
    for name in (f"{side}_{part}", f"{'right' if side == 'r' else 'left'}_{part}"):
        if name in skeleton.joints:
            return skeleton.joints.index(name)
    raise ValueError(f"the {skeleton.name} skeleton has no {side}_{part} joint for the torso normaliser")


def torso_size(joints, present, skeleton):
    """Torso normaliser of one person.

    Args:
      joints: (K, 2) (x, y) pixels.
      present: (K,) bool, which joints are annotated.
      skeleton: a ``Skeleton`` with shoulder and hip joints on both sides.

    Returns:
      float distance in pixels; NaN when neither shoulder-hip diagonal is annotated.
    """
    joints = np.asarray(joints, np.float64)
    present = np.asarray(present, bool)
    for shoulder_side, hip_side in (("r", "l"), ("l", "r")):
        i = _joint_index(skeleton, shoulder_side, "shoulder")
        j = _joint_index(skeleton, hip_side, "hip")
        if present[i] and present[j]:
            return float(np.linalg.norm(joints[i] - joints[j]))
    return float("nan")
