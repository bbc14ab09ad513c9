"""COCO's own keypoint metric: OKS-based AP/AR computed by the official ``pycocotools``, not a re-implementation.

``keypoint_results`` writes predictions in the COCO keypoint results layout (``image_id``, ``category_id``,
``keypoints`` as K triples x, y, score, ``score``); ``oks_ap`` scores them against the ground-truth file with
``pycocotools.cocoeval.COCOeval(iouType="keypoints")``.

Per-keypoint sigmas (how far a keypoint may be for a given OKS): COCO's published values for COCO's 17 person
joints (``COCO_SIGMAS``), otherwise the user's, with ``DEFAULT_SIGMA`` = 0.05 for every keypoint by default (a
middle value: COCO's range from 0.025 for the eyes to 0.107 for the hips). A ground-truth file without ``area``
or ``num_keypoints`` (what COCOeval reads) gets them from the box and the keypoint flags, in memory.
"""

import contextlib
import copy
import io
import json
import pathlib

import numpy as np

from hourglass_tf import skeleton as skeletons

# COCO's keypoint sigmas (cocoapi PythonAPI/pycocotools/cocoeval.py), in COCO's joint order.
COCO_SIGMAS = (
    0.026,
    0.025,
    0.025,
    0.035,
    0.035,
    0.079,
    0.079,
    0.072,
    0.072,
    0.062,
    0.062,
    0.107,
    0.107,
    0.087,
    0.087,
    0.089,
    0.089,
)
DEFAULT_SIGMA = 0.05
SUMMARY = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def sigmas_for(skeleton, given=None):
    """Per-keypoint sigmas: ``given`` (one value or one per joint), COCO's for COCO's joints, else the default."""
    if given is not None:
        values = np.atleast_1d(np.asarray(given, np.float64))
        if values.size == 1:
            values = np.full(skeleton.num_joints, float(values[0]))
        if values.size != skeleton.num_joints or not (values > 0).all():
            raise ValueError(
                f"OKS sigmas must be one positive value or {skeleton.num_joints} (one per joint), received {list(values)}"
            )
        return values
    if tuple(skeleton.joints) == skeletons.COCO.joints:
        return np.array(COCO_SIGMAS)
    return np.full(skeleton.num_joints, DEFAULT_SIGMA)


def ground_truth(path, category_id=None):
    """The ground-truth file as a ``pycocotools`` COCO object (``area``/``num_keypoints``/``iscrowd`` filled in)."""
    from pycocotools.coco import COCO

    data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    data = copy.deepcopy(data)
    data.setdefault("categories", [{"id": 1, "name": "person"}])
    for ann in data.get("annotations", []):
        kp = np.asarray(ann.get("keypoints", []), np.float64).reshape(-1, 3)
        ann.setdefault("num_keypoints", int((kp[:, 2] > 0).sum()))
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
        ann.setdefault("category_id", category_id if category_id is not None else 1)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def annotation_image_ids(gt):
    """{annotation id: image id} of a ground truth (``ground_truth``)."""
    return {annotation_id: ann["image_id"] for annotation_id, ann in gt.anns.items()}


def keypoint_results(pred, ids_to_images, category_id):
    """COCO keypoint results from ``predict_dataset``'s output (``keypoints`` (N, K, 2) original pixels,
    ``scores`` (N, K), ``id`` sample ids ending in the annotation id). The person score is the mean joint score."""
    results = []
    for sample_id, xy, scores in zip(pred["id"], pred["keypoints"], pred["scores"]):
        annotation = int(str(sample_id).rsplit("-", 1)[1])
        triples = np.concatenate([np.asarray(xy, np.float64), np.asarray(scores, np.float64)[:, None]], axis=1)
        results.append(
            {
                "image_id": ids_to_images[annotation],
                "category_id": category_id,
                "keypoints": [round(float(v), 3) for v in triples.reshape(-1)],
                "score": float(np.mean(scores)),
            }
        )
    return results


def oks_ap(gt, results, sigmas):
    """OKS AP/AR of ``results`` (a list of COCO keypoint results) against ``gt`` (``ground_truth``), by pycocotools,
    by the standard protocol: every image and every person of the ground truth take part (COCOeval's own rules
    ignore crowds and people without keypoints, and split by area), whether or not a result names them.

    Returns:
      dict of ``SUMMARY`` names -> values in [0, 1] (-1 where COCOeval has nothing to score), ``sigmas``,
      ``images`` (scored) and ``unmatched_people``: ground-truth people COCOeval scores (not ignored) on
      images with no result at all, i.e. people nothing was predicted for.
    """
    from pycocotools.cocoeval import COCOeval

    if not results:
        raise ValueError("no keypoint results to score")
    with contextlib.redirect_stdout(io.StringIO()):
        detections = gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(gt, detections, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        evaluator.params.imgIds = sorted(gt.getImgIds())
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    with_results = {r["image_id"] for r in results}
    unmatched = sum(
        1
        for ann in gt.dataset.get("annotations", [])
        if ann["image_id"] not in with_results and not ann.get("iscrowd", 0) and ann.get("num_keypoints", 0) > 0
    )
    return {
        **{name: float(v) for name, v in zip(SUMMARY, evaluator.stats)},
        "sigmas": [float(s) for s in sigmas],
        "images": len(evaluator.params.imgIds),
        "unmatched_people": unmatched,
    }


def oks(a, b, area, sigmas):
    """Object keypoint similarity of two people's keypoints (K, 3) as x, y, score, at the object ``area``
    (COCOeval's formula, every joint counted)."""
    variances = (2.0 * np.asarray(sigmas, np.float64)) ** 2
    a, b = np.asarray(a, np.float64).reshape(-1, 3), np.asarray(b, np.float64).reshape(-1, 3)
    d2 = (a[:, 0] - b[:, 0]) ** 2 + (a[:, 1] - b[:, 1]) ** 2
    return float(np.mean(np.exp(-d2 / variances / (2.0 * max(area, np.spacing(1))))))


def oks_nms(results, sigmas, threshold=0.9):
    """OKS non-maximum suppression per image, as HRNet and mmpose apply to top-down results from a detector:
    best score first, a person whose keypoints match a kept one's at OKS > ``threshold`` (at the mean of their
    box areas) is dropped. ``results``: COCO keypoint results with ``bbox``. Returns the kept ones, in order."""
    kept, by_image = [], {}
    for result in sorted(results, key=lambda r: -r["score"]):
        others = by_image.setdefault(result["image_id"], [])
        area = float(result["bbox"][2] * result["bbox"][3])
        if any(
            oks(result["keypoints"], o["keypoints"], (area + o["bbox"][2] * o["bbox"][3]) / 2.0, sigmas) > threshold
            for o in others
        ):
            continue
        others.append(result)
        kept.append(result)
    return kept
