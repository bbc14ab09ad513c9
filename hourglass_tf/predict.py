"""Prediction on image files, folders and videos: every person's keypoints as JSON, overlays, COCO results.

Each image gets ``NAME.json`` (``people``: box, score and keypoints in original pixels, 0-based, with scores
and joint names) and ``NAME.png`` with every person's box and skeleton drawn where a joint's score reaches
``min_score``. A video gets ``NAME.json`` (per frame, people with their ``track_id``) and ``NAME.mp4``: people
are tracked from frame to frame and their keypoints smoothed (``tracking.Tracker``). ``coco_results`` collects
every image's people in the COCO keypoint results layout (``pycocotools`` scores it). A bad input (unreadable,
not an image) is reported and skipped; the others are still processed.
"""

import json
import pathlib
import time

import cv2
import numpy as np

from hourglass_tf import visualize
from hourglass_tf.people import read_rgb, to_json
from hourglass_tf.tracking import Tracker

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def collect_inputs(paths):
    """Expands folders (their images and videos, sorted); keeps files and missing paths as given."""
    out = []
    for path in map(pathlib.Path, paths):
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES))
        else:
            out.append(path)
    return out


def overlay(image, people, skeleton, min_score):
    """Every person's box (with its track id) and skeleton drawn on a copy of ``image``."""
    drawn = np.ascontiguousarray(image).copy()
    for person in people:
        x, y, w, h = (int(round(float(v))) for v in person["box"])
        cv2.rectangle(drawn, (x, y), (x + w, y + h), (255, 255, 255), 1)
        if "track_id" in person:
            cv2.putText(
                drawn, str(person["track_id"]), (x + 2, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1
            )
        keypoints = np.asarray(person["keypoints"])
        drawn = visualize.draw_skeleton(drawn, keypoints[:, :2], keypoints[:, 2] >= min_score, skeleton)
    return drawn


def predict_image_file(estimator, path, output_dir, min_score=0.2, boxes=None):
    """One image: returns (written paths, people)."""
    image = read_rgb(path)
    people = estimator(image, boxes=boxes, key=str(path))
    json_path = output_dir / f"{path.stem}.json"
    record = {
        "input": str(path),
        "image_size": [image.shape[1], image.shape[0]],
        "joints": list(estimator.skeleton.joints),
        "people": [to_json(p) for p in people],
    }
    json_path.write_text(json.dumps(record, indent=1))
    png_path = output_dir / f"{path.stem}.png"
    visualize.save_png(png_path, overlay(image, people, estimator.skeleton, min_score))
    return [json_path, png_path], people


def predict_video_file(estimator, path, output_dir, min_score=0.2, tracker_options=None):
    """One video, tracked and smoothed: returns (written paths, frame count, seconds spent)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: not a readable video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    tracker = Tracker(estimator, **(tracker_options or {}))
    frames, writer = [], None
    video_path = output_dir / f"{path.stem}.mp4"
    start = time.perf_counter()
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            rgb = frame[..., ::-1].copy()
            people = tracker(rgb, len(frames) / fps)
            frames.append({"frame": len(frames), "people": [to_json(p) for p in people]})
            drawn = overlay(rgb, people, estimator.skeleton, min_score)[..., ::-1]
            if writer is None:
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                writer = cv2.VideoWriter(str(video_path), fourcc, fps, (drawn.shape[1], drawn.shape[0]))
            writer.write(np.ascontiguousarray(drawn))
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    seconds = time.perf_counter() - start
    if not frames:
        raise ValueError(f"{path}: not a readable video (no frame decoded)")
    json_path = output_dir / f"{path.stem}.json"
    record = {
        "input": str(path),
        "fps": fps,
        "joints": list(estimator.skeleton.joints),
        "detector_runs": tracker.detector_runs,
        "frames": frames,
    }
    json_path.write_text(json.dumps(record, indent=1))
    return [json_path, video_path], len(frames), seconds


def coco_image_id(path):
    """The COCO image id of a file: its numeric stem (``000000397133.jpg`` -> 397133), else the stem."""
    stem = pathlib.Path(path).stem
    return int(stem) if stem.isdigit() else stem


def predict_inputs(
    estimator, paths, output_dir, min_score=0.2, boxes=None, tracker_options=None, image_ids=None, log=print
):
    """Runs every input; writes ``coco_results.json`` for the images; returns (written paths, {input: error}).

    ``image_ids`` maps file names to COCO image ids (default: ``coco_image_id``).
    """
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written, failed, results = [], {}, []
    for path in collect_inputs(paths):
        try:
            if not path.is_file():
                raise ValueError(f"{path}: no such file")
            if path.suffix.lower() in VIDEO_SUFFIXES:
                paths_out, count, seconds = predict_video_file(estimator, path, output_dir, min_score, tracker_options)
                log(f"{path}: {count} frames, {count / seconds:.1f} frames/s: {', '.join(map(str, paths_out))}")
            else:
                paths_out, people = predict_image_file(estimator, path, output_dir, min_score, boxes)
                image_id = (image_ids or {}).get(path.name, coco_image_id(path))
                results.extend(to_json(p, image_id=image_id) for p in people)
                log(f"{path}: {len(people)} people: {', '.join(map(str, paths_out))}")
            written.extend(paths_out)
        except (ValueError, OSError) as err:
            failed[str(path)] = str(err)
            log(f"error: {err}")
    if results or not failed:
        coco_path = output_dir / "coco_results.json"
        coco_path.write_text(json.dumps(results))
        written.append(coco_path)
    return written, failed
