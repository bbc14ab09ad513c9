"""Pictures of results: PCK curves, training curves, presence precision-recall, example grids (PNG, Agg backend)."""

import pathlib

import numpy as np

from hourglass_tf import metrics
from hourglass_tf.evaluation.analyses import per_image_error
from hourglass_tf.evaluation.files import read_training_log


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


def example_grid(pred, dataset_dir, image_paths, skeleton, path, per_group=4, size=192):
    """A PNG of predictions on the original photos: best, median and worst people by per-image error.

    Rows: best, median, worst; each tile the person's crop around its centre with the
    predicted skeleton (and the error in the corner).
    """
    import cv2

    from hourglass_tf import visualize
    from hourglass_tf.data.pipeline import decode_image
    from hourglass_tf.geometry import apply_matrix, crop_matrix

    error = per_image_error(pred)
    order = [i for i in np.argsort(error) if np.isfinite(error[i])]
    if not order:
        raise ValueError("no person with an annotated joint to draw")
    mid = len(order) // 2
    groups = [
        order[:per_group],
        order[max(0, mid - per_group // 2) : mid - per_group // 2 + per_group],
        order[-per_group:][::-1],
    ]
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
