"""MediaPipe's BlazePose person detector: anchors, decoding, weighted suppression, the box rule, the weights' install
and the missing-weights message; the real model on an empty picture and on people pasted into a generated one."""

import hashlib
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest

from benchmarks import reliability
from conftest import REPO
from hourglass_tf import blazepose, people, skeleton

INSTALLED = blazepose.weights_path().is_file()
needs_weights = pytest.mark.skipif(not INSTALLED, reason=f"the weights are not installed ({blazepose.INSTALL})")


def test_the_anchors_are_mediapipe_s_layout():
    anchors = blazepose.ANCHORS
    assert anchors.shape == (2254, 2)  # 28 x 28 x 2 + 14 x 14 x 2 + 7 x 7 x 6
    np.testing.assert_allclose(anchors[:2], [[0.5 / 28, 0.5 / 28]] * 2)  # two anchors a cell and layer
    np.testing.assert_allclose(anchors[2], [1.5 / 28, 0.5 / 28])  # then along the row
    np.testing.assert_allclose(anchors[56], [0.5 / 28, 1.5 / 28])  # the next row
    np.testing.assert_allclose(anchors[1568], [0.5 / 14, 0.5 / 14])  # stride 16 starts after 28 x 28 x 2
    tail = anchors[1568 + 392 :]
    assert len(tail) == 294 and (tail[:6] == tail[0]).all()  # the three stride-32 layers share cells: 6 a cell
    np.testing.assert_allclose(anchors[-1], [6.5 / 7, 6.5 / 7])


def _raw(detections, count=2254):
    """Raw outputs with anchors ``index`` regressing a face box and keypoints at given input pixels."""
    regressors = np.zeros((count, 12), np.float32)
    logits = np.full(count, -20.0, np.float32)
    for index, logit, face, points in detections:
        anchor = blazepose.ANCHORS[index] * blazepose.INPUT_SIZE
        regressors[index, :2] = np.array(face[:2]) - anchor
        regressors[index, 2:4] = face[2:]
        regressors[index, 4:] = (np.array(points, np.float32) - anchor).ravel()
        logits[index] = logit
    return regressors, logits


def test_decoding_thresholds_scores_and_places_boxes_and_keypoints_in_input_coordinates():
    points = [[112, 150], [112, 60], [112, 100], [112, 70]]
    regressors, logits = _raw([(900, 3.0, (112, 50, 20, 24), points), (10, -1.0, (5, 5, 4, 4), points)])
    scores, boxes, keypoints = blazepose.decode(regressors, logits)  # MIN_SCORE 0.5: logit -1 is 0.27
    assert len(scores) == 1
    np.testing.assert_allclose(scores, [1 / (1 + np.exp(-3.0))], rtol=1e-5)
    np.testing.assert_allclose(boxes[0] * 224, [102, 38, 122, 62], atol=1e-3)
    np.testing.assert_allclose(keypoints[0] * 224, points, atol=1e-3)
    assert len(blazepose.decode(regressors, logits, min_score=0.2)[0]) == 2
    empty = blazepose.decode(*_raw([]))
    assert [a.shape for a in empty] == [(0,), (0, 4), (0, 4, 2)]


def test_weighted_suppression_averages_overlapping_detections_by_score_and_keeps_the_others():
    scores = np.array([0.6, 0.9, 0.8], np.float32)
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.8, 0.8]], np.float32)
    keypoints = np.zeros((3, 4, 2), np.float32)
    keypoints[0], keypoints[1], keypoints[2] = 0.2, 0.5, 0.9
    kept, merged_boxes, merged = blazepose.weighted_nms(scores, boxes, keypoints)
    np.testing.assert_allclose(kept, [0.9, 0.8])  # best first, the group's best score
    np.testing.assert_allclose(merged[0], (0.6 * 0.2 + 0.9 * 0.5) / 1.5, rtol=1e-6)  # weighted by score
    np.testing.assert_allclose(merged[1], 0.9) and np.testing.assert_allclose(merged_boxes[1], boxes[2])
    nothing = blazepose.weighted_nms(np.zeros(0, np.float32), np.zeros((0, 4)), np.zeros((0, 4, 2)))
    assert [a.shape for a in nothing] == [(0,), (0, 4), (0, 4, 2)]


def test_the_person_box_is_a_square_on_the_hips_sized_by_the_body_circle_in_image_pixels():
    image = np.zeros((100, 200, 3), np.uint8)  # wide: letterboxed with 56 rows of padding above and below
    tensor, transform = blazepose.letterbox(image)
    assert tensor.shape == (1, 224, 224, 3) and transform == (1.12, 0, 56)
    assert tensor[0, 0, 0, 0] == 0.0 and tensor[0, 112, 112, 0] == -1.0  # padding 0, black pixels -1
    hips, circle = np.array([100.0, 50.0]), np.array([100.0, 10.0])  # image pixels: radius 40
    keypoints = ((np.stack([hips, circle, hips, circle]) * 1.12 + [0, 56]) / 224)[None]
    box = blazepose.person_boxes(blazepose.to_image(keypoints, transform), box_scale=0.8)[0]
    np.testing.assert_allclose(box, [100 - 32, 50 - 32, 64, 64], atol=1e-3)


def test_the_weights_come_out_of_the_wheel_checked_and_a_wrong_file_is_refused(tmp_path):
    data = b"not the detector"
    wheel = tmp_path / "mediapipe-0.10.21-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(blazepose.MEMBER, data)
    with pytest.raises(ValueError, match=f"has SHA-256 {hashlib.sha256(data).hexdigest()}, expected"):
        blazepose.extract_weights(wheel, tmp_path / "out" / "pose_detection.tflite")
    assert not (tmp_path / "out" / "pose_detection.tflite").exists()
    empty = tmp_path / "mediapipe-0.10.22-py3-none-any.whl"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("mediapipe/__init__.py", "")
    with pytest.raises(ValueError, match="no mediapipe/modules/pose_detection/pose_detection.tflite inside"):
        blazepose.extract_weights(empty, tmp_path / "out" / "pose_detection.tflite")


def test_missing_weights_are_one_line_saying_the_command_that_installs_them(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    with pytest.raises(blazepose.MissingWeightsError, match=f"run `{blazepose.INSTALL}`"):
        people.person_source("blazepose")
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.full((64, 48, 3), 128, np.uint8))
    from hourglass_tf.metadata import describe, save_keras
    from hourglass_tf.model import build_model

    model = build_model(num_stacks=1, num_blocks=1, filters=16, depth=2, num_joints=16, input_size=64)
    save_keras(model, tmp_path / "m.keras", describe(model, skeleton.MPII))
    code = "import sys; sys.prefix = sys.argv.pop(1)\n" + reliability.RUN_AND_SAY_IF_TENSORFLOW_LOADED
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), str(REPO / "scripts" / "predict.py")]
        + [f"--model={tmp_path / 'm.keras'}", "--detector=blazepose"]
        + [f"--output_dir={tmp_path / 'out'}", str(image)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stdout + done.stderr[-2000:]
    assert blazepose.INSTALL in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith("; or choose --detector=ssdlite, --detector=hog or --detector=none")
    assert done.stdout.split()[-2:] == ["TENSORFLOW_LOADED", "False"]  # said before TensorFlow loads
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_the_detector_is_refused_naming_it(tmp_path):
    (tmp_path / "x.tflite").write_bytes(b"\x00not a model")
    with pytest.raises(ValueError, match="x.tflite: not a TFLite model"):
        blazepose.BlazePosePersons(tmp_path / "x.tflite")


@needs_weights
def test_the_detector_finds_nobody_in_an_empty_picture_and_the_people_pasted_into_a_generated_one(shared_data):
    detector = blazepose.BlazePosePersons()
    boxes, scores = detector(np.full((240, 320, 3), 127, np.uint8))
    assert boxes.shape == (0, 4) and scores.shape == (0,)
    photo = people.read_rgb(shared_data / "lspet" / "images" / "im08003.jpg")  # one athlete, found at 0.97
    _, points, (box,) = (a[:1] for a in detector.detect(photo))
    hips = points[0, 0]
    canvas = np.full((photo.shape[0] + 40, 2 * photo.shape[1] + 60, 3), 200, np.uint8)
    known = [(20, 20), (photo.shape[1] + 40, 20)]  # two copies at known places
    for left, top in known:
        canvas[top : top + photo.shape[0], left : left + photo.shape[1]] = photo
    found, _ = detector(canvas)
    assert len(found) >= 2
    truth = np.array([[box[0] + left, box[1] + top, box[2], box[3]] for left, top in known], np.float32)
    assert (people.iou(truth, found).max(axis=1) >= 0.5).all(), (found, truth, hips)
