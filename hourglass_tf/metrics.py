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


# ---------------------------------------------------------------- PCK / PCKh

MPII_EXCLUDED_FROM_MEAN = ("pelvis", "thorax")
TABLE_PARTS = ("head_top", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")
TABLE_NAMES = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")
DEFAULT_THRESHOLDS = np.round(np.linspace(0.0, 0.5, 51), 4)
PCKH_DATASETS = ("mpii", "synthetic")  # MPII's 16-joint layout: PCKh@0.5; the others PCK@0.2 (torso)


BOX_PCK_THRESHOLD = 0.05  # PCK normalised by the box's longer side: mmpose's PCK@0.05
JOINT_PCK_THRESHOLD = 0.2  # by a torso-like length between two joints, as LSP's torso: PCK@0.2


def pck_threshold(dataset, normalizer=None):
    """The benchmark threshold of ``dataset`` (a dataset or skeleton name): 0.5 (PCKh) for MPII layouts, 0.2
    (torso) for the others; for a ``coco_keypoints`` dataset it follows its ``normalizer`` ("box": 0.05, a joint
    pair: 0.2)."""
    if dataset == "coco_keypoints":
        return BOX_PCK_THRESHOLD if normalizer in (None, "box") else JOINT_PCK_THRESHOLD
    return 0.5 if dataset in PCKH_DATASETS else 0.2


def _check_arrays(pred, gt, present, normalizer):
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    present = np.asarray(present, bool)
    normalizer = np.asarray(normalizer, np.float64)
    if pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"predictions must be (N, K, 2), received shape {pred.shape}")
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth must have the predictions' shape {pred.shape}, received {gt.shape}")
    if present.shape != pred.shape[:2]:
        raise ValueError(f"present must be (N, K) = {pred.shape[:2]}, received {present.shape}")
    if normalizer.shape != pred.shape[:1]:
        raise ValueError(f"normalizer must be (N,) = {pred.shape[:1]}, received {normalizer.shape}")
    return pred, gt, present, normalizer


def normalized_errors(pred, gt, present, normalizer):
    """Distance / normaliser per joint.

    Args:
      pred, gt: (N, K, 2) (x, y) pixels in the same frame and convention.
      present: (N, K) bool, annotated joints (others are excluded).
      normalizer: (N,) pixels (head size or torso size); people with a non-finite or
        non-positive normaliser are excluded.

    Returns:
      (errors (N, K) float64 with NaN where excluded, valid (N, K) bool)
    """
    pred, gt, present, normalizer = _check_arrays(pred, gt, present, normalizer)
    valid = present & (np.isfinite(normalizer) & (normalizer > 0))[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        errors = np.linalg.norm(pred - gt, axis=-1) / normalizer[:, None]
    return np.where(valid, errors, np.nan), valid


def _is_correct(errors, valid, threshold):
    """(N, K) bool: annotated and error < threshold (strictly); excluded (NaN) errors never are."""
    return valid & (np.nan_to_num(errors, nan=np.inf) < threshold)


def pck_per_joint(errors, valid, threshold):
    """(correct counts (K,), annotated counts (K,)): a joint is correct when error < threshold (strictly)."""
    return np.sum(_is_correct(errors, valid, threshold), axis=0), np.sum(valid, axis=0)


def left_right_swaps(pred, gt, present, normalizer, skeleton, threshold):
    """Misses that land on the other side's joint: the classic left/right confusion.

    A scored joint counts as swapped when it is not correct (error >= threshold) but lies
    within the threshold of the annotated mirror joint (left wrist predicted on the right
    wrist). Joints without a mirror (head, neck) are never swapped.

    Args:
      pred, gt: (N, K, 2) (x, y) pixels, same frame and convention.
      present: (N, K) annotated joints; normalizer: (N,) pixels; threshold: as for PCK.
      skeleton: the joint set (its ``flip_permutation`` names the mirror joints).

    Returns:
      (swapped counts (K,), scored counts (K,)), the latter as ``pck_per_joint`` counts them.
    """
    errors, valid = normalized_errors(pred, gt, present, normalizer)
    perm = skeleton.flip_permutation
    if len(perm) != errors.shape[1]:
        raise ValueError(f"the {skeleton.name} skeleton has {len(perm)} joints, the predictions {errors.shape[1]}")
    mirror_errors, mirror_valid = normalized_errors(pred, gt[:, perm], present[:, perm], normalizer)
    missed = valid & ~_is_correct(errors, valid, threshold)
    on_mirror = _is_correct(mirror_errors, mirror_valid, threshold)
    swapped = missed & on_mirror & (perm != np.arange(len(perm)))[None]
    return np.sum(swapped, axis=0), np.sum(valid, axis=0)


def mean_joints(skeleton):
    """Indices averaged in the summary: MPII without pelvis and thorax (14 joints), else every joint."""
    return [i for i, j in enumerate(skeleton.joints) if not (skeleton.name == "mpii" and j in MPII_EXCLUDED_FROM_MEAN)]


def limb_joints(skeleton):
    """Joints of the limbs and hips (no head, neck, face, pelvis or thorax): 12 for LSP and MPII."""
    return [
        i
        for i, j in enumerate(skeleton.joints)
        if j.split("_", 1)[-1] in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")
    ]


def _percent(correct, count):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, 100.0 * correct / np.maximum(count, 1), np.nan)


def summary_table(correct, count, skeleton):
    """The benchmark table from per-joint counts.

    Returns:
      dict with ``Head`` (head top), ``Shoulder`` ... ``Ankle`` (left and right pooled: the
      average of the two sides' percentages), ``Mean`` (over ``mean_joints``, weighted by
      annotated-joint counts, as the MPII benchmark and mmpose report), ``Mean_unweighted``
      (plain average of those joints' percentages, as the widely copied Python
      evaluator prints). Parts the skeleton lacks are left out. Percent.
    """
    per_joint = _percent(correct, count)
    table = {}
    for part, name in zip(TABLE_PARTS, TABLE_NAMES):
        idx = [i for i, j in enumerate(skeleton.joints) if j == part or j.split("_", 1)[-1] == part]
        if idx:
            table[name] = float(np.nanmean(per_joint[idx])) if np.any(count[idx] > 0) else float("nan")
    joints = mean_joints(skeleton)
    table["Mean"] = float(_percent(correct[joints].sum(), count[joints].sum()))
    scored = per_joint[joints][np.isfinite(per_joint[joints])]
    table["Mean_unweighted"] = float(scored.mean()) if scored.size else float("nan")
    return table


def evaluate(pred, gt, present, normalizer, skeleton, threshold=0.5, thresholds=DEFAULT_THRESHOLDS):
    """PCK at ``threshold`` x normaliser (PCKh@0.5 for MPII, PCK@0.2 for LSP/FLIC), with curves.

    Args:
      pred, gt: (N, K, 2) pixels, same frame and convention.
      present: (N, K) annotated joints.
      normalizer: (N,) head size (MPII) or torso size (LSP/FLIC).
      skeleton: the joint set (names the per-joint values and the table groups).
      threshold: the reported threshold.
      thresholds: thresholds of the curve (default 0 to 0.5 in steps of 0.01).

    Returns:
      dict: ``threshold``, ``summary`` (``summary_table``), ``mean_limbs`` (count-weighted
      over ``limb_joints``, percent), ``per_joint`` {name: percent},
      ``counts`` {name: annotated joints}, ``curve`` {``thresholds``, ``mean`` (count-weighted
      over ``mean_joints``), ``per_joint`` {name: [...]}}, ``auc`` (area under the mean
      curve divided by the threshold range, percent), ``swapped`` {``per_joint`` {name:
      percent of scored joints}, ``limbs`` (over ``limb_joints``)} from ``left_right_swaps``.
    """
    errors, valid = normalized_errors(pred, gt, present, normalizer)
    correct, count = pck_per_joint(errors, valid, threshold)
    per_joint = _percent(correct, count)
    thresholds = np.asarray(thresholds, np.float64)
    joints = mean_joints(skeleton)
    limbs = limb_joints(skeleton)
    curve_joint = np.stack([_percent(*pck_per_joint(errors, valid, t)) for t in thresholds])  # (T, K)
    curve_mean = np.array([_percent(*(c[joints].sum() for c in pck_per_joint(errors, valid, t))) for t in thresholds])
    swapped, _ = left_right_swaps(pred, gt, present, normalizer, skeleton, threshold)
    span = thresholds[-1] - thresholds[0]
    auc = float(np.trapezoid(curve_mean, thresholds) / span) if span > 0 else float(curve_mean[0])
    return {
        "threshold": float(threshold),
        "summary": summary_table(correct, count, skeleton),
        "mean_limbs": float(_percent(correct[limbs].sum(), count[limbs].sum())),
        "per_joint": {name: float(v) for name, v in zip(skeleton.joints, per_joint)},
        "counts": {name: int(c) for name, c in zip(skeleton.joints, count)},
        "curve": {
            "thresholds": thresholds.tolist(),
            "mean": curve_mean.tolist(),
            "per_joint": {name: curve_joint[:, k].tolist() for k, name in enumerate(skeleton.joints)},
        },
        "auc": auc,
        "swapped": {
            "per_joint": {name: float(v) for name, v in zip(skeleton.joints, _percent(swapped, count))},
            "limbs": float(_percent(swapped[limbs].sum(), count[limbs].sum())),
        },
    }


def format_table(result, title="PCK"):
    """The summary as a printable table (percent, two decimals)."""
    summary = result["summary"]
    names = list(summary)
    head = f"{title}@{result['threshold']:g}"
    lines = [
        " | ".join([head.ljust(10)] + [n.rjust(8) for n in names]),
        " | ".join([" " * 10] + [f"{summary[n]:8.2f}" for n in names]),
    ]
    return "\n".join(lines)
