"""The paper's analyses of a model's predictions: occlusion, annotation presence, per-stack accuracy, per-image error."""

import numpy as np

from hourglass_tf import metrics


def precision_recall(scores, labels):
    """Precision-recall curve of ``scores`` ranking positives ``labels`` first.

    Returns dict ``precision``, ``recall`` (lists, decreasing thresholds) and
    ``average_precision`` (area under the step curve, percent).
    """
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels, bool).ravel()
    if labels.sum() == 0:
        return {"precision": [], "recall": [], "average_precision": float("nan")}
    order = np.argsort(-scores, kind="stable")
    hits = labels[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    precision = tp / (tp + fp)
    recall = tp / labels.sum()
    ap = float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision) * 100)
    step = max(1, len(order) // 200)  # keep the stored curve small
    return {"precision": precision[::step].tolist(), "recall": recall[::step].tolist(), "average_precision": ap}


def occlusion_analysis(pred, skeleton, threshold):
    """Paper Fig. 11: accuracy on visible vs occluded joints, and annotation-presence prediction.

    Args:
      pred: output of ``inference.predict_dataset`` (keypoints, joints, present, visible,
        normalizer, heatmap_mean, heatmap_max).

    Returns:
      dict ``visible`` / ``occluded`` (PCK summaries over annotated joints that are or are
      not visible; ``summary`` is None when the split marks no such joint, as LSPET, whose
      annotated joints are all visible), ``presence`` {``max``, ``mean``: precision-recall of "the joint is
      annotated" ranked by the heatmap's max or mean}.
    """
    out = {}
    for name, mask in (
        ("visible", pred["present"] & pred["visible"]),
        ("occluded", pred["present"] & ~pred["visible"]),
    ):
        if not mask.any():
            out[name] = {"summary": None, "joints": 0}
            continue
        result = metrics.evaluate(pred["keypoints"], pred["joints"], mask, pred["normalizer"], skeleton, threshold)
        out[name] = {"summary": result["summary"], "joints": int(mask.sum())}
    out["presence"] = {
        "max": precision_recall(pred["heatmap_max"], pred["present"]),
        "mean": precision_recall(pred["heatmap_mean"], pred["present"]),
        "annotated_fraction": float(np.mean(pred["present"])),
    }
    return out


def stack_accuracy(pred, skeleton, threshold):
    """Paper Fig. 9: the summary mean of every intermediate stack's predictions."""
    return [
        metrics.evaluate(keypoints, pred["joints"], pred["present"], pred["normalizer"], skeleton, threshold)[
            "summary"
        ]["Mean"]
        for keypoints in pred["stack_keypoints"]
    ]


def per_image_error(pred):
    """Mean normalised error over each person's annotated joints (NaN when none is usable)."""
    errors, _ = metrics.normalized_errors(pred["keypoints"], pred["joints"], pred["present"], pred["normalizer"])
    finite = np.isfinite(errors)
    count = finite.sum(axis=1)
    total = np.where(finite, errors, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
