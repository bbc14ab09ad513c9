"""Prediction on image files, folders and videos: JSON keypoints and skeleton overlays.

Each input gets ``NAME.json`` (keypoints in original pixels, 0-based, with scores and
joint names) and ``NAME.png`` (``NAME.mp4`` for a video) with the skeleton drawn where
the score reaches ``min_score``. A bad input (unreadable, not an image, box outside the
image) is reported and skipped; the others are still processed.
"""

import json
import pathlib

import cv2
import numpy as np

from hourglass_tf import visualize

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


def _person(predictor, image, box, center, scale):
    return predictor.predict_image(image, center=center, scale=scale, box=box)


def _record(result, skeleton):
    return {
        "keypoints": [
            {"joint": name, "x": float(x), "y": float(y), "score": float(s)}
            for name, (x, y), s in zip(skeleton.joints, result["keypoints"], result["scores"])
        ],
        "center": [float(v) for v in result["center"]],
        "scale": result["scale"],
    }


def _overlay(image, result, skeleton, min_score):
    return visualize.draw_skeleton(image, result["keypoints"], result["scores"] >= min_score, skeleton)


def read_image(path):
    """(H, W, 3) uint8 RGB; ValueError naming the file when it is not a readable image."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    return image[..., ::-1].copy()


def predict_file(predictor, path, output_dir, box=None, center=None, scale=None, min_score=0.2):
    """Predicts one image or video; returns the paths written. Raises ValueError/OSError for a bad input."""
    path = pathlib.Path(path)
    output_dir = pathlib.Path(output_dir)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    skeleton = predictor.skeleton
    if path.suffix.lower() in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise ValueError(f"{path}: not a readable video")
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        frames, writer = [], None
        video_path = output_dir / f"{path.stem}.mp4"
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                rgb = frame[..., ::-1].copy()
                result = _person(predictor, rgb, box, center, scale)
                frames.append(_record(result, skeleton))
                drawn = _overlay(rgb, result, skeleton, min_score)[..., ::-1]
                if writer is None:
                    writer = cv2.VideoWriter(
                        str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (drawn.shape[1], drawn.shape[0])
                    )
                writer.write(np.ascontiguousarray(drawn))
        finally:
            capture.release()
            if writer is not None:
                writer.release()
        if not frames:
            raise ValueError(f"{path}: not a readable video (no frame decoded)")
        json_path = output_dir / f"{path.stem}.json"
        json_path.write_text(
            json.dumps({"input": str(path), "joints": list(skeleton.joints), "frames": frames}, indent=1)
        )
        return [json_path, video_path]
    image = read_image(path)
    result = _person(predictor, image, box, center, scale)
    json_path = output_dir / f"{path.stem}.json"
    json_path.write_text(
        json.dumps(
            {"input": str(path), "image_size": [image.shape[1], image.shape[0]], **_record(result, skeleton)}, indent=1
        )
    )
    png_path = output_dir / f"{path.stem}.png"
    visualize.save_png(png_path, _overlay(image, result, skeleton, min_score))
    return [json_path, png_path]


def predict_inputs(predictor, paths, output_dir, box=None, center=None, scale=None, min_score=0.2, log=print):
    """Runs ``predict_file`` on every input; returns (written paths, {input: error message})."""
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written, failed = [], {}
    for path in collect_inputs(paths):
        try:
            paths_out = predict_file(predictor, path, output_dir, box, center, scale, min_score)
            written.extend(paths_out)
            log(f"{path}: {', '.join(str(p) for p in paths_out)}")
        except (ValueError, OSError) as err:
            failed[str(path)] = str(err)
            log(f"error: {err}")
    return written, failed
