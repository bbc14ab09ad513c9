"""Evaluation: prediction and annotation files, model-driven evaluation, the paper's analyses.

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
from hourglass_tf.skeleton import for_joint_count


def load_annotations(path):
    """Ground truth from an annotation file (see the module docstring).

    Returns:
      dict ``gt`` (N, K, 2) 0-based pixels, ``present`` (N, K) bool, ``visible`` (N, K)
      bool, ``normalizer`` (N,), ``skeleton``, ``threshold`` (0.5 for 16-joint MPII
      files, else 0.2).
    """
    path = require_file(path)
    if path.suffix == ".mat":
        mat = load_mat(path)
        missing = [k for k in ("pos_gt_src", "headboxes_src", "jnt_missing") if k not in mat]
        if missing:
            raise DataFileError(path, f"missing variable(s) {missing}; expected pos_gt_src, headboxes_src, jnt_missing")
        gt = np.asarray(mat["pos_gt_src"], np.float64).transpose(2, 0, 1) - 1.0
        boxes = np.asarray(mat["headboxes_src"], np.float64)
        present = np.asarray(mat["jnt_missing"]).T == 0
        if boxes.shape != (2, 2, len(gt)) or present.shape != gt.shape[:2]:
            raise DataFileError(path, f"inconsistent sizes: pos_gt_src {mat['pos_gt_src'].shape}, headboxes_src "
                                      f"{boxes.shape}, jnt_missing {mat['jnt_missing'].shape}")  # fmt: skip
        normalizer = metrics.HEAD_SIZE_FACTOR * np.linalg.norm(boxes[1] - boxes[0], axis=0)
        visible = present
    elif path.suffix in (".h5", ".hdf5"):
        data = load_h5(path)
        missing = [k for k in ("part", "normalize") if k not in data]
        if missing:
            raise DataFileError(path, f"missing dataset(s) {missing}; found {sorted(data)}")
        part = np.asarray(data["part"], np.float64)
        if part.ndim != 3 or part.shape[2] != 2 or len(data["normalize"]) != len(part):
            raise DataFileError(path, f"'part' must be (N, K, 2) with N = len(normalize); found {part.shape} and "
                                      f"{len(data['normalize'])}")  # fmt: skip
        present = np.all(part > 0, axis=2)
        gt = part - 1.0
        normalizer = np.asarray(data["normalize"], np.float64)
        visible = present & (np.asarray(data["visible"]) > 0) if "visible" in data else present
    else:
        raise DataFileError(path, f"unsupported annotation file type {path.suffix!r}; expected .mat or .h5")
    skeleton = for_joint_count(gt.shape[1])
    return {"gt": gt, "present": present, "visible": visible, "normalizer": normalizer, "skeleton": skeleton,
            "threshold": metrics.pck_threshold(skeleton.name)}  # fmt: skip


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


def evaluate_files(annotations_path, predictions_path):
    """PCKh (16-joint MPII) or PCK@0.2 of a prediction file against an annotation file."""
    annotations = load_annotations(annotations_path)
    preds = load_predictions(predictions_path, len(annotations["gt"]), annotations["gt"].shape[1])
    return metrics.evaluate(preds, annotations["gt"], annotations["present"], annotations["normalizer"],
                            annotations["skeleton"], threshold=annotations["threshold"])  # fmt: skip


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


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path):
    """Writes ``fig`` as a PNG at ``path`` (making its folder), closes it, returns the Path."""
    plt = _pyplot()
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(result, path, title="PCK"):
    """PCK(h) versus threshold: the mean curve and one curve per table part."""
    plt = _pyplot()
    thresholds = result["curve"]["thresholds"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(thresholds, result["curve"]["mean"], color="black", linewidth=2.5, label=f"Mean (AUC {result['auc']:.1f})")
    per_joint = result["curve"]["per_joint"]
    for part, name in zip(metrics.TABLE_PARTS, metrics.TABLE_NAMES):
        curves = [np.array(c) for j, c in per_joint.items() if j == part or j.split("_", 1)[-1] == part]
        if curves:
            ax.plot(thresholds, np.nanmean(curves, axis=0), label=name)
    ax.set_xlabel("normalised distance threshold")
    ax.set_ylabel("detection rate, %")
    ax.set_title(title)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save_figure(fig, path)


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


def plot_training_log(log_path, path, title="training"):
    """Training curve of a run: summed training loss (log scale) and the validation metric (percent) per epoch."""
    plt = _pyplot()
    log = read_training_log(log_path)
    epochs = log["epoch"] + 1
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, log["loss"], "o-", color="tab:blue", label="training loss (sum over stacks)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="tab:blue")
    metric = next((name for name in ("val_pckh", "val_pck") if name in log), None)
    if metric is not None:
        right = ax.twinx()
        right.plot(epochs, log[metric], "s-", color="tab:red", label=metric)  # logged in percent
        right.set_ylabel(f"{metric} (validation), %", color="tab:red")
        right.set_ylim(0, 100)
    if "elapsed_seconds" in log:
        minutes = log["elapsed_seconds"][-1] / 60
        title = f"{title} ({minutes:.0f} min)"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save_figure(fig, path)


# ---------------------------------------------------------------- the paper's analyses


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
    for name, mask in (("visible", pred["present"] & pred["visible"]), ("occluded", pred["present"] & ~pred["visible"])):
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
        metrics.evaluate(keypoints, pred["joints"], pred["present"], pred["normalizer"], skeleton, threshold)["summary"]["Mean"]
        for keypoints in pred["stack_keypoints"]
    ]


def per_image_error(pred):
    """Mean normalised error over each person's annotated joints (NaN when none is usable)."""
    errors, _ = metrics.normalized_errors(pred["keypoints"], pred["joints"], pred["present"], pred["normalizer"])
    finite = np.isfinite(errors)
    count = finite.sum(axis=1)
    total = np.where(finite, errors, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def example_grid(pred, dataset_dir, image_paths, skeleton, path, per_group=4, size=192):
    """A PNG of predictions on the original photos: best, median and worst people by per-image error.

    Rows: best, median, worst; each tile the person's crop around its centre with the
    predicted skeleton (and the error in the corner).
    """
    import cv2

    from hourglass_tf import visualize
    from hourglass_tf.codec import apply_matrix, crop_matrix
    from hourglass_tf.data.pipeline import decode_image

    error = per_image_error(pred)
    order = [i for i in np.argsort(error) if np.isfinite(error[i])]
    if not order:
        raise ValueError("no person with an annotated joint to draw")
    mid = len(order) // 2
    groups = [order[:per_group], order[max(0, mid - per_group // 2) : mid - per_group // 2 + per_group],
              order[-per_group:][::-1]]  # fmt: skip
    tiles = []
    for group in groups:
        for i in group:
            image = decode_image(open(pathlib.Path(dataset_dir) / image_paths[i], "rb").read()).numpy()
            matrix = crop_matrix(pred["center"][i], pred["scale"][i], size)
            crop = cv2.warpAffine(image, matrix.numpy()[:2], (size, size), flags=cv2.INTER_LINEAR)
            keypoints = apply_matrix(matrix, pred["keypoints"][i]).numpy()
            tile = visualize.draw_skeleton(crop, keypoints, pred["present"][i], skeleton)
            cv2.putText(tile, f"{error[i]:.2f}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
            tiles.append(tile)
        tiles.extend([np.zeros((size, size, 3), np.uint8)] * (per_group - len(group)))
    visualize.save_png(path, visualize.grid(tiles, per_group))
    return path


def evaluate_model(model_path, dataset, split="valid", data_dir=None, tfrecord_dir=None, flip_test=True,
                   output_dir="runs/eval", batch_size=16, max_samples=0, progress=True, refine="quarter",
                   test_scales=(1.0,)):  # fmt: skip
    """Predicts a split with a ``.keras`` model and writes every result to ``output_dir``.

    Writes: ``predictions.h5`` / ``predictions.mat`` (1-based, original layout and MPII
    submission), ``metrics.json`` (table, per joint, curves, AUC, per-stack accuracy,
    occlusion analysis), ``pck_curve.png``, ``presence_pr.png`` and, from raw files,
    ``examples.png`` (best, median, worst people).

    ``refine`` is the decoder's sub-pixel step (``HeatmapCodec``): ``"quarter"`` (the
    paper's) or ``"dark"``; ``test_scales`` the person box multipliers whose heatmaps are
    averaged (``Predictor``; the paper's single scale by default). ``metrics.json``
    records both.

    Returns:
      the ``metrics.json`` dict.
    """
    from hourglass_tf.data import pipeline, readers, sources
    from hourglass_tf.inference import Predictor, predict_dataset

    predictor = Predictor.from_file(model_path, flip_test=flip_test, refine=refine, scales=test_scales)
    source, skeleton, report, count = sources.load_source(dataset, split, data_dir, tfrecord_dir)
    if predictor.skeleton.num_joints != skeleton.num_joints:
        raise ValueError(f"{model_path} predicts {predictor.skeleton.num_joints} joints but {dataset} has {skeleton.num_joints}")
    if max_samples:
        source = source.take(max_samples)
        count = min(count, max_samples)
    data = pipeline.make_dataset(source, skeleton, 1, batch_size, input_size=predictor.input_size, training=False,
                                 with_meta=True)  # fmt: skip
    pred = predict_dataset(predictor, data, all_stacks=True, progress=progress, total=count)
    threshold = metrics.pck_threshold(dataset)
    result = metrics.evaluate(pred["keypoints"], pred["joints"], pred["present"], pred["normalizer"], skeleton, threshold)
    result.update(
        dataset=dataset, split=split, model=str(model_path), flip_test=flip_test, refine=refine,
        test_scales=list(predictor.scales),
        people=int(len(pred["keypoints"])),
        skipped=report.as_dict(), stack_accuracy=stack_accuracy(pred, skeleton, threshold),
        occlusion=occlusion_analysis(pred, skeleton, threshold),
    )  # fmt: skip
    output_dir = pathlib.Path(output_dir)
    write_predictions(pred["keypoints"], output_dir)
    np.save(output_dir / "predictions.npy", pred["keypoints"])
    (output_dir / "ids.txt").write_text("\n".join(pred["id"]) + "\n")
    write_json(result, output_dir / "metrics.json")
    name = "PCKh" if threshold == 0.5 else "PCK"
    plot_curves(result, output_dir / "pck_curve.png", f"{name}, {dataset} {split}")
    plot_presence(result["occlusion"]["presence"], output_dir / "presence_pr.png")
    if data_dir is not None:
        samples = {s.sample_id: s.image_path for s in readers.load_dataset(dataset, data_dir, split)}
        example_grid(pred, data_dir, [samples[i] for i in pred["id"]], skeleton, output_dir / "examples.png")
    return result


def plot_presence(presence, path):
    """Precision-recall of predicting annotation presence from heatmap max / mean (paper Fig. 11 right)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for key in ("max", "mean"):
        curve = presence[key]
        ax.plot(curve["recall"], curve["precision"], label=f"heatmap {key} (AP {curve['average_precision']:.1f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("is the joint annotated?")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return _save_figure(fig, path)
