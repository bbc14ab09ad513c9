"""Files a user hands over are sacred: prediction outputs never land on an input or on each other."""

import hashlib
import json

import cv2
import numpy as np
import pytest

from hourglass_tf import predict, skeleton
from hourglass_tf.data.synthetic import render_video


class _NobodyEstimator:
    """Finds one fixed person in every image; enough to write every output file."""

    skeleton = skeleton.MPII

    def __call__(self, image, boxes=None, key=None):
        keypoints = np.zeros((16, 3), np.float32)
        return [{"box": np.array([1.0, 1.0, 5.0, 5.0]), "score": 1.0, "keypoints": keypoints, "joints": []}]


def _photo(path, seed=0):
    image = np.random.default_rng(seed).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    ok = cv2.imwrite(str(path), image)
    assert ok
    return path


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_output_stems_are_distinct_for_same_stems_in_two_folders_and_for_two_suffixes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    stems = predict.output_stems([a / "x.jpg", b / "x.jpg", a / "y.jpg", a / "y.png", a / "coco_results.jpg"])
    assert stems == {
        a / "x.jpg": "a__x",
        b / "x.jpg": "b__x",
        a / "y.jpg": "a__y.jpg",
        a / "y.png": "a__y.png",
        a / "coco_results.jpg": "a__coco_results",
    }
    # one folder: plain stems; the results file's name is never taken by an input
    assert predict.output_stems([a / "x.jpg", a / "z.png"]) == {a / "x.jpg": "x", a / "z.png": "z"}
    assert predict.output_stems([a / "coco_results.png"]) == {a / "coco_results.png": "coco_results.png"}


def test_same_stems_in_two_folders_and_two_suffixes_each_keep_their_results(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    inputs = [
        _photo(tmp_path / "a" / "x.jpg", 1),
        _photo(tmp_path / "b" / "x.jpg", 2),
        _photo(tmp_path / "a" / "y.jpg", 3),
        _photo(tmp_path / "a" / "y.png", 4),
    ]
    out = tmp_path / "out"
    written, failed, passed_over = predict.predict_inputs(_NobodyEstimator(), inputs, out, log=lambda m: None)
    assert not failed and not passed_over
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["a__x.json", "a__x.png", "b__x.json", "b__x.png", "a__y.jpg.json", "a__y.jpg.png"]
        + ["a__y.png.json", "a__y.png.png", "coco_results.json"]
    )
    assert sorted(written) == sorted(out / n for n in names)  # the count is what is on disk
    for path in inputs:  # each JSON names its own input
        stem = predict.output_stems(inputs)[path]
        assert json.loads((out / f"{stem}.json").read_text())["input"] == str(path)


def test_an_output_that_would_land_on_an_input_is_refused_before_anything_is_written(tmp_path):
    photo = _photo(tmp_path / "x.png")
    other = _photo(tmp_path / "other.jpg", 5)
    before = {p: _digest(p) for p in (photo, other)}
    with pytest.raises(ValueError, match="would overwrite the input .*x.png"):
        predict.predict_inputs(_NobodyEstimator(), [other, photo], tmp_path, log=lambda m: None)
    assert {p: _digest(p) for p in (photo, other)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.jpg", "x.png"]  # nothing written


def test_a_video_with_the_output_dir_equal_to_its_folder_is_refused_and_its_bytes_unchanged(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    frames, _ = render_video(seed=1, num_frames=5, image_size=(64, 64))
    clip = videos / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 64))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    before = _digest(clip)
    with pytest.raises(ValueError, match="would overwrite the input"):
        predict.predict_inputs(_NobodyEstimator(), [clip], videos, log=lambda m: None)
    assert _digest(clip) == before and [p.name for p in videos.iterdir()] == ["clip.mp4"]


def test_files_that_are_not_photos_are_reported_and_half_written_files_of_a_killed_run_removed(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "a.jpg")
    (photos / "notes.txt").write_text("not a photo")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".a.partial.png").write_bytes(b"half a png")  # what a kill during the overlay's write leaves
    messages = []
    written, failed, passed_over = predict.predict_inputs(_NobodyEstimator(), [photos], out, log=messages.append)
    assert passed_over == [photos / "notes.txt"] and not failed
    assert any("notes.txt: passed over" in m for m in messages)
    assert any("removed 1 half-written temporary file" in m for m in messages)
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png", "coco_results.json"]
