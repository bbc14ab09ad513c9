"""Prediction on image files, folders and videos: every person's keypoints as JSON, overlays, COCO results.

Each image gets ``NAME.json`` (``people``: box, score and keypoints in original pixels, 0-based, with scores
and joint names) and ``NAME.png`` with every person's box and skeleton drawn where a joint's score reaches
``min_score``. A video gets ``NAME.json`` (per frame, people with their ``track_id``) and ``NAME.mp4``: people
are tracked from frame to frame and their keypoints smoothed (``tracking.Tracker``). ``coco_results`` collects
every image's people in the COCO keypoint results layout (``pycocotools`` scores it), rescored and passed
through OKS non-maximum suppression as HRNet and mmpose do (``coco_eval.oks_nms``). A bad input (unreadable,
not an image) is reported and skipped; the others are still processed.
"""

import json
import os
import pathlib
import time

import cv2
import numpy as np

from hourglass_tf import visualize
from hourglass_tf.metadata import remove_stale_temporaries
from hourglass_tf.people import read_rgb, to_json
from hourglass_tf.tracking import Tracker

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def collect_inputs(paths):
    """Expands folders into their photos and videos (sorted); keeps files and missing paths as given.

    Returns:
      (inputs, passed_over): the paths to predict, and the files inside the given folders that are neither
      photos nor videos (by suffix), so the caller can say what it did not read.
    """
    inputs, passed_over = [], []
    for path in map(pathlib.Path, paths):
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
                    inputs.append(child)
                elif child.is_file() and not child.name.startswith("."):
                    passed_over.append(child)
        else:
            inputs.append(path)
    return inputs, passed_over


COCO_RESULTS = "coco_results.json"
PARTIAL = ".partial"  # in the names of files being written: ``.NAME.partial.EXT``, renamed into place whole


def output_stems(inputs):
    """A distinct output name (without suffix) for each input: ``{input: stem}``.

    The stem is the input's path relative to the inputs' common folder, folders joined by ``__``
    (``a/x.jpg`` and ``b/x.jpg`` -> ``a__x``, ``b__x``); inputs that would still share one keep their suffix
    (``x.jpg``, ``x.png`` -> ``x.jpg``, ``x.png``), and ``coco_results`` is never a stem (that file collects
    every image's people).
    """
    inputs = list(dict.fromkeys(pathlib.Path(p) for p in inputs))
    if not inputs:
        return {}
    folders = [os.path.abspath(p.parent) for p in inputs]
    common = pathlib.Path(os.path.commonpath(folders))
    relative = {p: pathlib.Path(os.path.abspath(p)).relative_to(common) for p in inputs}

    def joined(rel, keep_suffix):
        name = rel.name if keep_suffix else rel.stem
        return "__".join([*rel.parent.parts, name])

    plain = {p: joined(rel, False) for p, rel in relative.items()}
    counts = {}
    for stem in plain.values():
        counts[stem] = counts.get(stem, 0) + 1
    stems, taken = {}, {pathlib.Path(COCO_RESULTS).stem}
    for p in inputs:
        stem = plain[p] if counts[plain[p]] == 1 and plain[p] not in taken else joined(relative[p], True)
        base, n = stem, 2
        while stem in taken:
            stem, n = f"{base}-{n}", n + 1
        taken.add(stem)
        stems[p] = stem
    return stems


def planned_outputs(path, stem, output_dir):
    """The files one input writes: ``STEM.json`` and the overlay (``STEM.png``, or ``STEM.mp4`` for a video)."""
    overlay_suffix = ".mp4" if path.suffix.lower() in VIDEO_SUFFIXES else ".png"
    return [output_dir / f"{stem}.json", output_dir / f"{stem}{overlay_suffix}"]


def check_outputs_spare_inputs(inputs, stems, output_dir):
    """ValueError, before anything is written, when an output file would land on an input file."""
    sources = {}
    for path in inputs:
        if path.exists():
            sources[os.path.realpath(path)] = path
    for path in inputs:
        for out in [*planned_outputs(path, stems[path], output_dir), output_dir / COCO_RESULTS]:
            hit = sources.get(os.path.realpath(out))
            if hit is not None:
                raise ValueError(
                    f"{out} would overwrite the input {hit}; nothing was written. "
                    "Choose another --output_dir (outputs are named after their inputs)"
                )


def _partial(path):
    return path.with_name(f".{path.stem}{PARTIAL}{path.suffix}")


def _write_text(path, text):
    tmp = _partial(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_png(path, image):
    tmp = _partial(path)
    visualize.save_png(tmp, image)
    os.replace(tmp, path)


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


def predict_image_file(estimator, path, output_dir, min_score=0.2, boxes=None, stem=None):
    """One image: writes ``STEM.json`` and ``STEM.png`` (``stem``: default the file's); returns (written, people)."""
    image = read_rgb(path)
    people = estimator(image, boxes=boxes, key=str(path))
    json_path, png_path = planned_outputs(path, stem or path.stem, output_dir)
    record = {
        "input": str(path),
        "image_size": [image.shape[1], image.shape[0]],
        "joints": list(estimator.skeleton.joints),
        "people": [to_json(p) for p in people],
    }
    _write_text(json_path, json.dumps(record, indent=1))
    _write_png(png_path, overlay(image, people, estimator.skeleton, min_score))
    return [json_path, png_path], people


def predict_video_file(estimator, path, output_dir, min_score=0.2, tracker_options=None, stem=None):
    """One video, tracked and smoothed, to ``STEM.json`` and ``STEM.mp4`` (``stem``: default the file's); returns
    (written paths, frame count, seconds spent). Both files appear whole or not at all."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: not a readable video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    tracker = Tracker(estimator, **(tracker_options or {}))
    frames, writer = [], None
    json_path, video_path = planned_outputs(path, stem or path.stem, output_dir)
    partial_video = _partial(video_path)
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
                writer = cv2.VideoWriter(str(partial_video), fourcc, fps, (drawn.shape[1], drawn.shape[0]))
            writer.write(np.ascontiguousarray(drawn))
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    seconds = time.perf_counter() - start
    if not frames:
        partial_video.unlink(missing_ok=True)
        raise ValueError(f"{path}: not a readable video (no frame decoded)")
    record = {
        "input": str(path),
        "fps": fps,
        "joints": list(estimator.skeleton.joints),
        "detector_runs": tracker.detector_runs,
        "frames": frames,
    }
    _write_text(json_path, json.dumps(record, indent=1))
    os.replace(partial_video, video_path)
    return [json_path, video_path], len(frames), seconds


def coco_image_id(path):
    """The COCO image id of a file: its numeric stem (``000000397133.jpg`` -> 397133), else the stem."""
    stem = pathlib.Path(path).stem
    return int(stem) if stem.isdigit() else stem


def predict_inputs(
    estimator, paths, output_dir, min_score=0.2, boxes=None, tracker_options=None, image_ids=None, log=print
):
    """Runs every input; writes ``coco_results.json`` for the images.

    Each input's files are named by ``output_stems`` (distinct for every input). An output that would land
    on an input is refused (ValueError) before anything is written; files a killed run left half-written in
    ``output_dir`` are removed first. ``image_ids`` maps file names to COCO image ids (default:
    ``coco_image_id``).

    Returns:
      (written paths, {input: error}, passed over): the files on disk now, the inputs that failed, and the
      files in the given folders that are neither photos nor videos.
    """
    output_dir = pathlib.Path(output_dir)
    inputs, passed_over = collect_inputs(paths)
    stems = output_stems(inputs)
    check_outputs_spare_inputs(inputs, stems, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output_dir, log, pattern=f".*{PARTIAL}*")  # what a killed run left half-written
    for path in passed_over:
        log(f"{path}: passed over (not a photo or video: {', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})")
    written, failed, results = [], {}, []
    for path in stems:
        try:
            if not path.is_file():
                raise ValueError(f"{path}: no such file")
            if path.suffix.lower() in VIDEO_SUFFIXES:
                paths_out, count, seconds = predict_video_file(
                    estimator, path, output_dir, min_score, tracker_options, stem=stems[path]
                )
                log(f"{path}: {count} frames, {count / seconds:.1f} frames/s: {', '.join(map(str, paths_out))}")
            else:
                paths_out, people = predict_image_file(estimator, path, output_dir, min_score, boxes, stem=stems[path])
                image_id = (image_ids or {}).get(path.name, coco_image_id(path))
                results.extend(to_json(p, image_id=image_id) for p in people)
                log(
                    f"{path}: {len(people)} {'person' if len(people) == 1 else 'people'}: {', '.join(map(str, paths_out))}"
                )
            written.extend(paths_out)
        except (ValueError, OSError) as err:
            failed[str(path)] = str(err)
            log(f"error: {err}")
    if results or not failed:
        from hourglass_tf.evaluation import coco_eval

        # a person found twice (two detector boxes on one person) is scored once, as HRNet and mmpose do
        results = coco_eval.oks_nms(results, coco_eval.sigmas_for(estimator.skeleton))
        coco_path = output_dir / COCO_RESULTS
        _write_text(coco_path, json.dumps(results))
        written.append(coco_path)
    return [p for p in dict.fromkeys(written) if p.is_file()], failed, passed_over
