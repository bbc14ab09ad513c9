"""Evaluation files: annotations and predictions in the formats of the original code, MPII and this package.

File conventions (converted at the boundary to 0-based pixels):
* annotations ``.mat`` in the evaluator layout: ``pos_gt_src`` (16, 2, N),
  ``headboxes_src`` (2, 2, N), ``jnt_missing`` (16, N); 1-based (MATLAB) pixels.
* annotations ``.h5`` of the original code: ``part`` (N, K, 2) 1-based, a joint at
  (0, 0) missing, ``normalize`` (N,) head or torso size, optional ``visible``.
* predictions ``.h5`` with ``preds`` (N, K, 2) and ``.mat`` with ``preds`` (N, K, 2)
  (the MPII submission) or ``pos_pred_src`` (K, 2, N): 1-based, as the original code
  and the MPII tools write them.
* predictions ``.npy``: (N, K, 2) 0-based pixels, this package's convention.
"""

import json
import pathlib

import h5py
import numpy as np
import scipy.io

from hourglass_tf import metrics
from hourglass_tf.data.sample import DataFileError, load_h5, load_mat, require_file
from hourglass_tf.skeleton import MPII, get_skeleton


def load_annotations(path, skeleton=None):
    """Ground truth from an annotation file (see the module docstring).

    Args:
      skeleton: the joint set (``Skeleton`` or name) of an ``.h5`` file, whose layout does not
        say it (the original code wrote MPII and FLIC alike); the evaluator ``.mat`` is MPII.

    Returns:
      dict ``gt`` (N, K, 2) 0-based pixels, ``present`` (N, K) bool, ``visible`` (N, K)
      bool, ``normalizer`` (N,), ``skeleton``, ``threshold`` (PCKh@0.5 for MPII, else PCK@0.2).
    """
    path = require_file(path)
    if isinstance(skeleton, str):
        skeleton = get_skeleton(skeleton)
    if path.suffix == ".mat":
        mat = load_mat(path)
        missing = [k for k in ("pos_gt_src", "headboxes_src", "jnt_missing") if k not in mat]
        if missing:
            raise DataFileError(path, f"missing variable(s) {missing}; expected pos_gt_src, headboxes_src, jnt_missing")
        gt = np.asarray(mat["pos_gt_src"], np.float64).transpose(2, 0, 1) - 1.0
        boxes = np.asarray(mat["headboxes_src"], np.float64)
        present = np.asarray(mat["jnt_missing"]).T == 0
        if boxes.shape != (2, 2, len(gt)) or present.shape != gt.shape[:2]:
            raise DataFileError(
                path,
                f"inconsistent sizes: pos_gt_src {mat['pos_gt_src'].shape}, headboxes_src "
                f"{boxes.shape}, jnt_missing {mat['jnt_missing'].shape}",
            )
        normalizer = metrics.HEAD_SIZE_FACTOR * np.linalg.norm(boxes[1] - boxes[0], axis=0)
        visible = present
        if skeleton is not None and skeleton.joints != MPII.joints:
            raise DataFileError(path, f"the evaluator .mat layout holds MPII joints, not {skeleton.name}")
        skeleton = MPII
    elif path.suffix in (".h5", ".hdf5"):
        data = load_h5(path)
        missing = [k for k in ("part", "normalize") if k not in data]
        if missing:
            raise DataFileError(path, f"missing dataset(s) {missing}; found {sorted(data)}")
        part = np.asarray(data["part"], np.float64)
        if part.ndim != 3 or part.shape[2] != 2 or len(data["normalize"]) != len(part):
            raise DataFileError(
                path,
                f"'part' must be (N, K, 2) with N = len(normalize); found {part.shape} and {len(data['normalize'])}",
            )
        present = np.all(part > 0, axis=2)
        gt = part - 1.0
        normalizer = np.asarray(data["normalize"], np.float64)
        visible = present & (np.asarray(data["visible"]) > 0) if "visible" in data else present
        if skeleton is None:
            raise DataFileError(
                path, "an .h5 annotation file does not say its joint set: name it (--skeleton=mpii or flic)"
            )
    else:
        raise DataFileError(path, f"unsupported annotation file type {path.suffix!r}; expected .mat or .h5")
    if skeleton.num_joints != gt.shape[1]:
        raise DataFileError(
            path, f"holds {gt.shape[1]} joints per person, but {skeleton.name} has {skeleton.num_joints}"
        )
    return {
        "gt": gt,
        "present": present,
        "visible": visible,
        "normalizer": normalizer,
        "skeleton": skeleton,
        "threshold": metrics.pck_threshold(skeleton.name),
    }


def load_predictions(path, num_people=None, num_joints=None):
    """Predictions (N, K, 2) 0-based from ``.h5``/``.mat`` (1-based) or ``.npy`` (0-based).

    Raises DataFileError naming the file when the count or joint layout does not match
    ``num_people`` / ``num_joints``.
    """
    path = require_file(path)
    if path.suffix == ".npy":
        preds = np.load(path, allow_pickle=False).astype(np.float64)
    elif path.suffix in (".h5", ".hdf5"):
        data = load_h5(path)
        if "preds" not in data:
            raise DataFileError(path, f"expected the dataset 'preds', found {sorted(data)}")
        preds = np.asarray(data["preds"], np.float64) - 1.0
    elif path.suffix == ".mat":
        mat = load_mat(path)
        if "preds" in mat:
            preds = np.asarray(mat["preds"], np.float64) - 1.0
        elif "pos_pred_src" in mat:
            preds = np.asarray(mat["pos_pred_src"], np.float64).transpose(2, 0, 1) - 1.0
        else:
            raise DataFileError(path, "expected the variable 'preds' (N, K, 2) or 'pos_pred_src' (K, 2, N)")
    else:
        raise DataFileError(path, f"unsupported prediction file type {path.suffix!r}; expected .h5, .mat or .npy")
    if preds.ndim != 3 or preds.shape[2] != 2:
        raise DataFileError(path, f"predictions must be (N, K, 2), found shape {preds.shape}")
    if num_people is not None and len(preds) != num_people:
        raise DataFileError(path, f"holds {len(preds)} people but the annotations have {num_people}")
    if num_joints is not None and preds.shape[1] != num_joints:
        raise DataFileError(path, f"holds {preds.shape[1]} joints per person but the annotations have {num_joints}")
    return preds


def evaluate_files(annotations_path, predictions_path, skeleton=None):
    """PCKh (MPII) or PCK@0.2 of a prediction file against an annotation file (``skeleton``: see ``load_annotations``)."""
    annotations = load_annotations(annotations_path, skeleton)
    preds = load_predictions(predictions_path, len(annotations["gt"]), annotations["gt"].shape[1])
    return metrics.evaluate(
        preds,
        annotations["gt"],
        annotations["present"],
        annotations["normalizer"],
        annotations["skeleton"],
        threshold=annotations["threshold"],
    )


def write_predictions(preds, output_dir, stem="predictions"):
    """Writes (N, K, 2) 0-based predictions as the original code's ``.h5`` and the MPII ``.mat`` (both 1-based)."""
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    one_based = np.asarray(preds, np.float64) + 1.0
    with h5py.File(output_dir / f"{stem}.h5", "w") as f:
        f["preds"] = one_based
    scipy.io.savemat(output_dir / f"{stem}.mat", {"preds": one_based})
    return output_dir / f"{stem}.h5", output_dir / f"{stem}.mat"


def write_json(result, path):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=float))
    return path


_MISSING = ("", None, "NA", "nan", "NaN")  # CSVLogger writes NA for a validation key an epoch did not log


def read_training_log(path):
    """The ``log.csv`` of a run (Keras CSVLogger) as a dict column -> float array, rows by epoch.

    Missing values (CSVLogger's ``NA``, empty cells) become NaN.

    Raises:
      DataFileError: the file is missing, empty or not a CSV log with an ``epoch`` column.
    """
    import csv

    path = require_file(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "epoch" not in rows[0]:
        raise DataFileError(path, "not a training log (no rows, or no 'epoch' column)")
    columns = {}
    for name in rows[0]:
        try:
            columns[name] = np.array([np.nan if row[name] in _MISSING else float(row[name]) for row in rows])
        except ValueError as err:
            raise DataFileError(path, f"column {name!r} is not numeric ({err})") from None
    return columns
