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


def _detector(name):
    """A person source by name: ``ssdlite`` (the default detector), ``blazepose``, ``hog``."""
    return people.person_source(name)


def lspet_detection(model, data_dir, limit=None, detector="ssdlite", skeleton=None, refine=False, search=None):
    """The detector on LSPET validation (one annotated athlete a photo): how often a detection covers the athlete
    (IoU >= 0.5 with the box of the annotated joints), the box calibration (annotated crop side over the detection's
    larger side, and the centre offset over that side), and the limb PCK@0.2 of ``model`` fed with the detection
    that overlaps the athlete most (the whole image when there is none) against the annotated boxes and the whole
    image. ``refine``: also the second pass that re-crops from the first pass's keypoints. ``search``: also
    ``PoseEstimator(recrop=True, search=...)``, a ``people.BoxSearch`` about the detection, each try with its
    second pass (``people.BOX_SEARCH``: ``predict.py --box_search``)."""
    from hourglass_tf.data.readers import load_dataset

    samples = load_dataset("lspet", data_dir, "valid")[:limit]
    predictor = Predictor.from_file(model, skeleton=skeleton) if model else None
    estimator = people.PoseEstimator(predictor, "whole_image") if predictor else None
    source = _detector(detector)
    n = len(samples)
    found = someone = 0
    ratios, offsets, seconds = [], [], []
    k = predictor.skeleton.num_joints if predictor else 14
    annotated, detected, whole, refined, searched = (np.zeros((n, k, 2)) for _ in range(5))
    searching = (
        people.PoseEstimator(predictor, "whole_image", recrop=True, search=search) if predictor and search else None
    )
    for i, sample in enumerate(samples):
        image = people.read_rgb(pathlib.Path(data_dir) / sample.image_path)
        truth = geometry.box_from_person(sample.center, sample.scale)
        joint_box = _joint_box(sample.joints, sample.present)
        start = time.perf_counter()
        boxes, _ = source(image)
        seconds.append(time.perf_counter() - start)
        best = None
        if len(boxes):
            someone += 1
            overlaps = people.iou(joint_box, boxes)[0]
            j = int(np.argmax(overlaps))
            best = boxes[j]
            if overlaps[j] >= 0.5:
                found += 1
            if overlaps[j] >= 0.3:
                side = max(best[2], best[3])
                ratios.append(truth[2] / side)
                offsets.append((truth[:2] + truth[2:] / 2 - best[:2] - best[2:] / 2) / side)
        if estimator is None:
            continue
        box = best if best is not None else people.WholeImage()(image)[0][0]
        whole[i] = estimator.estimate(image, people.WholeImage()(image)[0])[0]["keypoints"][:, :2]
        annotated[i] = estimator.estimate(image, [truth])[0]["keypoints"][:, :2]
        first = estimator.estimate(image, [box], check_inside=False)[0]
        detected[i] = first["keypoints"][:, :2]
        if refine:  # PoseEstimator(recrop=True)'s second pass (the tracker's rule between frames)
            refined[i] = estimator.estimate_again(image, [first])[0]["keypoints"][:, :2]
        if searching is not None:
            searched[i] = searching.estimate_people(image, [box], check_inside=False)[0]["keypoints"][:, :2]
    result = {
        "photos": n,
        "detector": detector,
        "someone_detected": someone / n,
        "athlete_found_iou_0.5": found / n,
        "annotated_side_over_detection_side_median": float(np.median(ratios)) if ratios else None,
        "centre_offset_over_side_median": np.median(np.array(offsets), axis=0).tolist() if offsets else None,
        "detector_ms_median": 1000 * float(np.median(seconds)),
    }
    if estimator is not None:
        gt = np.stack([s.joints for s in samples])
        present = np.stack([s.present for s in samples])
        norm = np.array([s.normalizer for s in samples])
        runs = [("annotated_boxes", annotated), ("detected_boxes", detected), ("whole_image", whole)]
        if refine:
            runs.append(("detected_then_keypoint_boxes", refined))
        if searching is not None:
            result["search"] = repr(search)
            runs.append(("detected_box_search_then_keypoint_boxes", searched))
        result["limb_pck_0.2"] = {
            name: metrics.evaluate(pred, gt, present, norm, predictor.skeleton, threshold=0.2)["mean_limbs"]
            for name, pred in runs
        }
    return result


def _coco_splits(root):
    """(split, its annotation JSON) for coco_mini's train2017 and val2017 splits present under ``root``."""
    for split in ("train2017", "val2017"):
        path = pathlib.Path(root) / "annotations" / f"person_keypoints_{split}.json"
        if path.exists():
            yield split, json.loads(path.read_text())


def _square(boxes):
    """Boxes (M, 4) x, y, w, h -> squares of the same centre and the larger side."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    side = boxes[:, 2:].max(axis=1, keepdims=True)
    return np.concatenate([boxes[:, :2] + boxes[:, 2:] / 2 - side / 2, side, side], axis=1)


def _match(overlaps, threshold=0.5):
    """Greedy one-to-one matching of (people, detections) overlaps at ``threshold``, best overlap first;
    (matched people, used detections) as boolean arrays."""
    matched, used = np.zeros(overlaps.shape[0], bool), np.zeros(overlaps.shape[1], bool)
    for t, d in sorted(np.argwhere(overlaps >= threshold).tolist(), key=lambda td: -overlaps[td[0], td[1]]):
        if not matched[t] and not used[d]:
            matched[t] = used[d] = True
    return matched, used


def coco_detection(coco_dir, detector="ssdlite", min_keypoints=8):
    """The detector on the COCO photos: recall at IoU >= 0.5 with COCO's person boxes, of the people with at least
    ``min_keypoints`` keypoints and of all people (crowds aside); precision: the share of detections that match a
    person (one detection per person, best overlap first); the detector's time per photo and per person found.
    Also the same recall between squares (each box's centre, its larger side): what the crop the network sees
    depends on, and fair to a detector whose boxes are squares (``blazepose``)."""
    root = pathlib.Path(coco_dir)
    source = _detector(detector)
    counts = {"people": 0, "people_min_kp": 0, "hits": 0, "hits_min_kp": 0, "detections": 0, "true": 0}
    counts.update(square_hits=0, square_hits_min_kp=0, square_true=0)
    seconds = []
    for split, data in _coco_splits(root):
        by_image = {}
        for a in data["annotations"]:
            if not a.get("iscrowd"):
                by_image.setdefault(a["image_id"], []).append((a["bbox"], a.get("num_keypoints", 0)))
        for image in data["images"]:
            file = root / split / image["file_name"]
            if not file.exists():
                continue
            rgb = people.read_rgb(file)
            start = time.perf_counter()
            boxes, _ = source(rgb)
            seconds.append(time.perf_counter() - start)
            truth = by_image.get(image["id"], [])
            many = np.array([kp >= min_keypoints for _, kp in truth], bool)
            counts["people"] += len(truth)
            counts["people_min_kp"] += int(many.sum())
            counts["detections"] += len(boxes)
            if not (len(truth) and len(boxes)):
                continue
            truth_boxes = np.array([b for b, _ in truth], np.float32)
            for prefix, a, b in (("", truth_boxes, boxes), ("square_", _square(truth_boxes), _square(boxes))):
                matched, used = _match(people.iou(a, b))
                counts[f"{prefix}hits"] += int(matched.sum())
                counts[f"{prefix}hits_min_kp"] += int((matched & many).sum())
                counts[f"{prefix}true"] += int(used.sum())
    return {
        "detector": detector,
        "photos": len(seconds),
        **counts,
        f"recall_iou_0.5_min_{min_keypoints}_keypoints": counts["hits_min_kp"] / max(counts["people_min_kp"], 1),
        "recall_iou_0.5_all_people": counts["hits"] / max(counts["people"], 1),
        "precision_iou_0.5": counts["true"] / max(counts["detections"], 1),
        f"square_recall_iou_0.5_min_{min_keypoints}_keypoints": counts["square_hits_min_kp"]
        / max(counts["people_min_kp"], 1),
        "square_recall_iou_0.5_all_people": counts["square_hits"] / max(counts["people"], 1),
        "square_precision_iou_0.5": counts["square_true"] / max(counts["detections"], 1),
        "detector_ms_median": 1000 * float(np.median(seconds)) if seconds else None,
    }


def _coco_name(name):
    """An LSP/MPII joint name in COCO's words (``r_ankle`` -> ``right_ankle``), or the name itself."""
    for short, long in (("r_", "right_"), ("l_", "left_")):
        if name.startswith(short):
            return long + name[len(short) :]
    return name


def coco_keypoint_ap(model, coco_dir, sources=("ground_truth", "ssdlite", "blazepose"), recrop=False, search=None):
    """COCO keypoint AP (pycocotools, the standard OKS protocol of ``coco_eval.oks_ap``: every image and person) on
    the coco_mini photos, the model fed with the ground-truth person boxes and with each detector's.

    A model of another joint set (the shipped LSP model) is scored on the COCO joints it shares, by name (LSP's 12
    limb joints: shoulders, elbows, wrists, hips, knees, ankles): the other COCO joints (the face) are removed from
    the ground truth, so OKS counts only shared joints; COCO's sigmas. Results are rescored and passed through OKS
    non-maximum suppression as ``predict.py``'s ``coco_results.json`` is. ``recrop``, ``search``: the
    estimator's options (``predict.py --recrop``, ``--box_search``).
    """
    import tempfile

    from hourglass_tf import skeleton as skeletons
    from hourglass_tf.evaluation import coco_eval

    predictor = Predictor.from_file(model)
    coco_joints = skeletons.COCO.joints
    to_coco = {
        i: coco_joints.index(_coco_name(n))
        for i, n in enumerate(predictor.skeleton.joints)
        if _coco_name(n) in coco_joints
    }
    shared = sorted(to_coco.values())
    root = pathlib.Path(coco_dir)
    truth = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    photos = []
    for split, data in _coco_splits(root):
        for annotation in data["annotations"]:
            keypoints = np.asarray(annotation["keypoints"], np.float64).reshape(-1, 3)
            keep = np.zeros(len(keypoints), bool)
            keep[shared] = True
            keypoints[~keep] = 0.0
            annotation = dict(annotation, keypoints=keypoints.reshape(-1).tolist())
            annotation["num_keypoints"] = int((keypoints[:, 2] > 0).sum())
            truth["annotations"].append(annotation)
        truth["images"].extend(data["images"])
        photos.extend((root / split / image["file_name"], image["id"]) for image in data["images"])
    with tempfile.TemporaryDirectory() as folder:
        gt_path = pathlib.Path(folder) / "gt.json"
        gt_path.write_text(json.dumps(truth))
        gt = coco_eval.ground_truth(gt_path)
    boxes_of = {}
    for annotation in truth["annotations"]:
        if not annotation.get("iscrowd"):
            boxes_of.setdefault(annotation["image_id"], []).append(annotation["bbox"])
    sigmas = np.array(coco_eval.COCO_SIGMAS)
    result = {"photos": len(photos), "joints_scored": [coco_joints[j] for j in shared], "recrop": recrop}
    result["search"] = repr(search)
    for source in sources:
        estimator = people.PoseEstimator(
            predictor, "whole_image" if source == "ground_truth" else source, recrop=recrop, search=search
        )
        results = []
        for file, image_id in photos:
            image = people.read_rgb(file)
            if source == "ground_truth":
                given = boxes_of.get(image_id, [])
                found = estimator(image, boxes=given) if given else []
            else:
                found = estimator(image)
            for person in found:
                keypoints = np.zeros((len(coco_joints), 3), np.float32)
                for i, j in to_coco.items():
                    keypoints[j] = person["keypoints"][i]
                results.append(people.to_json(dict(person, keypoints=keypoints), image_id=image_id))
        results = coco_eval.oks_nms(results, sigmas)
        result[source] = coco_eval.oks_ap(gt, results, sigmas) if results else None
    return result


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
    flags.DEFINE_bool(
        "coco_ap", False, "With --coco and --model: COCO keypoint AP with ground-truth and detected boxes."
    )
    flags.DEFINE_string("detector", "ssdlite", "Person detector: ssdlite, blazepose or hog.")
    flags.DEFINE_bool("refine", False, "LSPET: also the second pass that re-crops from the first pass's keypoints.")
    flags.DEFINE_bool(
        "box_search",
        False,
        "LSPET: also people.BOX_SEARCH about the detection, each try with the second pass (21x the time); "
        "--coco_ap: that instead of --refine alone.",
    )
    flags.DEFINE_string("out", "runs/people.json", "Where the JSON goes.")

    def main(argv):
        f = flags.FLAGS
        result = {}
        if f.coco and not f.video_only:
            result["coco"] = coco_detection(f.coco, f.detector)
            print(json.dumps(result["coco"], indent=1))
        if f.coco and f.coco_ap and f.model:
            result["coco_ap"] = coco_keypoint_ap(
                f.model,
                f.coco,
                recrop=f.refine or f.box_search,
                search=people.BOX_SEARCH if f.box_search else None,
            )
            print(json.dumps(result["coco_ap"], indent=1))
        if f.lspet and not f.video_only:
            result["lspet"] = lspet_detection(
                f.model,
                f.lspet,
                f.limit,
                f.detector,
                f.skeleton,
                f.refine,
                search=people.BOX_SEARCH if f.box_search else None,
            )
            print(json.dumps(result["lspet"], indent=1))
        if f.video_only or not (f.lspet or f.coco):
            result["video"] = video_smoothing(f.model, skeleton=f.skeleton)
            print(json.dumps(result["video"], indent=1))
        pathlib.Path(f.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(f.out).write_text(json.dumps(result, indent=1))

    app.run(main)
