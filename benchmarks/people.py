"""Measurements of the photo-to-poses path (docs/people.md): detector coverage and its PCK cost on LSPET, and
tracking/smoothing on a generated video with known joints.

    .venv/bin/python benchmarks/people.py --model=MODEL.keras --lspet=../shared/data/lspet --out=runs/people.json
    .venv/bin/python benchmarks/people.py --model=runs/demo/best.keras --video_only --out=runs/video.json

``lspet_detection``: for each LSPET validation photo (one annotated person each), whether the HOG detector's best
box covers the person (IoU with the box of the annotated joints >= 0.5; all annotated joints inside the crop the
box makes), and the limb PCK@0.2 of the model fed with the detected box (the whole image when the detector finds
nobody) against the annotated box. ``video_smoothing``: jitter (mean frame-to-frame acceleration of the
keypoints, px/frame^2) and error (mean distance to the true joints, px) with and without the One-Euro filter,
and frames per second end to end (tracking, detector every N frames, network, filter).
"""

import json
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from hourglass_tf import geometry, metrics, people, tracking  # noqa: E402
from hourglass_tf.inference import Predictor  # noqa: E402


def _joint_box(joints, present):
    """The tight box of the annotated joints (``people.box_of_keypoints``, the tracker's rule)."""
    return people.box_of_keypoints(np.column_stack([joints, present]), min_score=0.5)


def lspet_detection(model, data_dir, limit=None, detector=None, skeleton=None):
    """Coverage of the detector's best box and the PCK cost of detected boxes on LSPET validation."""
    from hourglass_tf.data.readers import load_dataset

    samples = load_dataset("lspet", data_dir, "valid")[:limit]
    predictor = Predictor.from_file(model, skeleton=skeleton)
    estimator = people.PoseEstimator(predictor)
    detector = detector or people.HogDetector()
    n = len(samples)
    found = covered = contained = 0
    ratios = []
    annotated, detected, whole = (np.zeros((n, predictor.skeleton.num_joints, 2)) for _ in range(3))
    seconds = []
    for i, sample in enumerate(samples):
        image = people.read_rgb(pathlib.Path(data_dir) / sample.image_path)
        truth = _joint_box(sample.joints, sample.present)
        start = time.perf_counter()
        windows, _ = detector.windows(image)
        seconds.append(time.perf_counter() - start)
        boxes, _ = detector(image)
        if len(boxes):
            found += 1
            best = boxes[0]
            covered += people.iou(best, truth)[0, 0] >= 0.5
            centre, scale = geometry.person_from_box(best)
            side = scale * geometry.PERSON_BOX_UNIT
            inside = np.abs(sample.joints[sample.present] - centre).max() <= side / 2
            contained += bool(inside)
            w = windows[0]
            if people.iou(w, truth)[0, 0] > 0.2:
                ratios.append(truth[2:] / w[2:])
        else:
            best = people.WholeImage()(image)[0][0]
        whole[i] = estimator.estimate(image, people.WholeImage()(image)[0])[0]["keypoints"][:, :2]
        annotated[i] = estimator.estimate(image, [geometry.box_from_person(sample.center, sample.scale)])[0][
            "keypoints"
        ][:, :2]
        detected[i] = estimator.estimate(image, [best], check_inside=False)[0]["keypoints"][:, :2]
    gt = np.stack([s.joints for s in samples])
    present = np.stack([s.present for s in samples])
    norm = np.array([s.normalizer for s in samples])
    skel = predictor.skeleton
    pck = {
        name: metrics.evaluate(pred, gt, present, norm, skel, threshold=0.2)["mean_limbs"]
        for name, pred in (("annotated_boxes", annotated), ("detected_boxes", detected), ("whole_image", whole))
    }
    return {
        "photos": n,
        "detector_found_someone": found / n,
        "best_box_iou_ge_0.5": covered / n,
        "best_box_crop_contains_all_joints": contained / n,
        "window_to_joint_box_median_ratio": np.median(np.array(ratios), axis=0).tolist() if ratios else None,
        "detector_ms_median": 1000 * float(np.median(seconds)),
        "limb_pck_0.2": pck,
    }


def coco_detection(coco_dir, detector=None, min_keypoints=8):
    """HOG on the COCO photos: recall and precision at IoU 0.5 against the joint boxes of the people annotated
    with at least ``min_keypoints`` keypoints (not crowds), and the detector's time per photo."""
    root = pathlib.Path(coco_dir)
    detector = detector or people.HogDetector()
    people_total = hits = boxes_total = true_boxes = 0
    seconds = []
    for split in ("train2017", "val2017"):
        path = root / "annotations" / f"person_keypoints_{split}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        by_image = {}
        for a in data["annotations"]:
            if a.get("iscrowd") or a.get("num_keypoints", 0) < min_keypoints:
                continue
            k = np.asarray(a["keypoints"], np.float32).reshape(-1, 3)
            by_image.setdefault(a["image_id"], []).append(_joint_box(k[:, :2], k[:, 2] > 0))
        for image in data["images"]:
            file = root / split / image["file_name"]
            if not file.exists():
                continue
            rgb = people.read_rgb(file)
            start = time.perf_counter()
            boxes, _ = detector(rgb)
            seconds.append(time.perf_counter() - start)
            truth = by_image.get(image["id"], [])
            people_total += len(truth)
            boxes_total += len(boxes)
            if len(truth) and len(boxes):
                overlaps = people.iou(np.stack(truth), boxes)
                hits += int((overlaps.max(axis=1) >= 0.5).sum())
                true_boxes += int((overlaps.max(axis=0) >= 0.5).sum())
    return {
        "photos": len(seconds),
        "people": people_total,
        "recall_iou_0.5": hits / max(people_total, 1),
        "precision_iou_0.5": true_boxes / max(boxes_total, 1),
        "detector_ms_median": 1000 * float(np.median(seconds)) if seconds else None,
    }


def _jitter(track):
    """Mean |x[t+1] - 2 x[t] + x[t-1]| over joints and frames (px / frame^2)."""
    accel = track[2:] - 2 * track[1:-1] + track[:-2]
    return float(np.linalg.norm(accel, axis=-1).mean())


def video_smoothing(model, frames=150, seed=3, detect_every=30, skeleton=None, size=(480, 640), smoothing=None):
    """Jitter and error with and without smoothing, and end-to-end frames/s, on a generated one-person video."""
    from hourglass_tf.data.synthetic import render_video

    video, truth = render_video(seed=seed, num_frames=frames, image_size=size, num_people=1)
    predictor = Predictor.from_file(model, skeleton=skeleton)
    now = [0]  # the detector stands in for a perfect one: the true joints' box of the current frame
    box_source = people.CallableSource(lambda image: _joint_box(truth[now[0], 0], np.ones(16, bool))[None])
    out = {}
    for name, options in (("raw", None), ("one_euro", smoothing or tracking.ONE_EURO)):
        estimator = people.PoseEstimator(predictor, box_source)
        tracker = tracking.Tracker(estimator, detect_every=detect_every, smoothing=options)
        tracker(video[0], 0.0)  # compile
        tracker = tracking.Tracker(estimator, detect_every=detect_every, smoothing=options)
        keypoints = np.full((frames, 16, 2), np.nan)
        start = time.perf_counter()
        for t in range(frames):
            now[0] = t
            found = tracker(video[t], t / 25.0)
            if found:
                keypoints[t] = found[0]["keypoints"][:, :2]
        seconds = time.perf_counter() - start
        error = np.linalg.norm(keypoints - truth[:, 0], axis=-1)
        out[name] = {
            "jitter_px_per_frame2": _jitter(keypoints),
            "mean_error_px": float(np.nanmean(error)),
            "median_error_px": float(np.nanmedian(error)),
            "frames_per_second": frames / seconds,
            "detector_runs": tracker.detector_runs,
        }
    out["truth_jitter_px_per_frame2"] = _jitter(truth[:, 0])
    out["frame_size"] = list(size[::-1])
    return out


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("model", None, "Model file.")
    flags.DEFINE_string("lspet", None, "LSPET folder (skipped when absent).")
    flags.DEFINE_string("skeleton", None, "Joint set of a model without a description.")
    flags.DEFINE_integer("limit", None, "First N validation photos.")
    flags.DEFINE_string("coco", None, "coco_mini folder: the detector's recall and precision.")
    flags.DEFINE_bool("video_only", False, "Only the video measurement.")
    flags.DEFINE_string("out", "runs/people.json", "Where the JSON goes.")

    def main(argv):
        f = flags.FLAGS
        result = {}
        if f.coco and not f.video_only:
            result["coco"] = coco_detection(f.coco)
            print(json.dumps(result["coco"], indent=1))
        if f.lspet and not f.video_only:
            result["lspet"] = lspet_detection(f.model, f.lspet, f.limit, skeleton=f.skeleton)
            print(json.dumps(result["lspet"], indent=1))
        if f.video_only or not (f.lspet or f.coco):
            result["video"] = video_smoothing(f.model, skeleton=f.skeleton)
            print(json.dumps(result["video"], indent=1))
        pathlib.Path(f.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(f.out).write_text(json.dumps(result, indent=1))

    app.run(main)
