"""The person detector in the box (SSDLite, hourglass_tf.detectors): decoding, the missing-weights message, the
photo-in SavedModel signature and its parity with PoseEstimator."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from benchmarks import reliability
from conftest import REPO
from hourglass_tf import detectors, people, serving, skeleton

try:
    detectors.graph_path()
    INSTALLED = True
except detectors.MissingDetectorError:
    INSTALLED = False
needs_weights = pytest.mark.skipif(
    not INSTALLED, reason=f"the detector's weights are not installed ({detectors.INSTALL})"
)


def _decode(boxes, scores, classes, width=200, height=100, **options):
    options = {"min_score": 0.3, "nms_iou": 0.5, "max_people": 20, "box_scale": 1.0, **options}
    found, kept = detectors.person_boxes(
        tf.constant(boxes, tf.float32),
        tf.constant(scores, tf.float32),
        tf.constant(classes, tf.int32),
        width,
        height,
        **options,
    )
    return found.numpy(), kept.numpy()


def test_the_graph_answer_becomes_person_boxes_in_pixels_best_first_thresholded_and_suppressed():
    boxes = [
        [0.1, 0.1, 0.9, 0.3],  # a person: y 10-90, x 20-60
        [0.12, 0.1, 0.9, 0.32],  # the same person again, lower score: suppressed
        [0.0, 0.5, 0.5, 1.0],  # another person, scored below the threshold
        [0.2, 0.6, 0.8, 0.9],  # a third, kept
        [0.2, 0.6, 0.8, 0.9],  # not a person (class 2)
    ]
    found, scores = _decode(boxes, [0.9, 0.8, 0.2, 0.5, 0.95], [1, 1, 1, 1, 2])
    np.testing.assert_allclose(found, [[20, 10, 40, 80], [120, 20, 60, 60]], atol=1e-4)
    np.testing.assert_allclose(scores, [0.9, 0.5])
    scaled, _ = _decode(boxes[:1], [0.9], [1], box_scale=0.5)  # the box -> person box rule, about the centre
    np.testing.assert_allclose(scaled, [[30, 30, 20, 40]], atol=1e-4)
    empty, none = _decode(np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    assert empty.shape == (0, 4) and none.shape == (0,)


def test_missing_weights_are_one_line_saying_the_command_that_installs_them(tmp_path):
    fake = tmp_path / "site" / detectors.PACKAGE
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise SystemExit('the package code must never run')\n")
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.full((64, 48, 3), 128, np.uint8))
    from hourglass_tf.metadata import describe, save_keras
    from hourglass_tf.model import build_model

    model = build_model(num_stacks=1, num_blocks=1, filters=16, depth=2, num_joints=16, input_size=64)
    model_file, out, exported = tmp_path / "m.keras", tmp_path / "out", tmp_path / "exported"
    save_keras(model, model_file, describe(model, skeleton.MPII))
    # predict.py finding people, and export.py writing the photo-in SavedModel, need the same file.
    for script, args, output in (
        ("predict.py", [f"--model={model_file}", str(image), f"--output_dir={out}"], out),
        (
            "export.py",
            [f"--model={model_file}", f"--output={exported}", "--detector=ssdlite", "--formats=saved_model"],
            exported,
        ),
    ):
        done = subprocess.run(
            [sys.executable, "-c", reliability.RUN_AND_SAY_IF_TENSORFLOW_LOADED, str(REPO / "scripts" / script), *args],
            capture_output=True,
            text=True,
            timeout=300,
            env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        )
        assert done.returncode == 2, script + done.stdout + done.stderr[-2000:]
        assert detectors.INSTALL in done.stderr and "Traceback" not in done.stderr, script
        assert done.stdout.split()[-2:] == ["TENSORFLOW_LOADED", "False"], script  # said before TensorFlow loads
        assert not output.exists(), script
        others = {
            "predict.py": "--detector=blazepose, --detector=hog or --detector=none",
            "export.py": "--detector=none",
        }
        assert done.stderr.strip().endswith(f"; or choose {others[script]}"), done.stderr  # the program's own choices


def test_a_file_that_is_not_the_detector_graph_is_refused_naming_it(tmp_path):
    (tmp_path / "x.pb").write_bytes(b"\x00not a graph at all")
    with pytest.raises(ValueError, match="x.pb: not"):
        detectors.load_graph_def(tmp_path / "x.pb")
    empty = tf.compat.v1.GraphDef()
    (tmp_path / "empty.pb").write_bytes(empty.SerializeToString())
    with pytest.raises(ValueError, match="empty.pb: not the SSD person detector's graph"):
        detectors.load_graph_def(tmp_path / "empty.pb")


@needs_weights
def test_the_detector_finds_nobody_in_an_empty_picture_and_the_people_pasted_into_a_generated_one(shared_data):
    detector = detectors.SsdLitePersons()
    boxes, scores = detector(np.full((240, 320, 3), 127, np.uint8))
    assert boxes.shape == (0, 4) and scores.shape == (0,)
    photo = people.read_rgb(shared_data / "mpii" / "demo" / "059865848.jpg")  # one person, found at score 0.87
    (box,) = detector(photo)[0][:1]
    x, y, w, h = (int(round(v)) for v in box)
    person = cv2.resize(photo[max(y, 0) : y + h, max(x, 0) : x + w], (180, 200))
    canvas = np.full((260, 480, 3), 200, np.uint8)
    known = [(20, 30), (280, 40)]  # two copies at known places
    for left, top in known:
        canvas[top : top + 200, left : left + 180] = person
    found, _ = detector(canvas)
    truth = np.array([[left, top, 180, 200] for left, top in known], np.float32)
    assert len(found) >= 2
    assert (people.iou(truth, found).max(axis=1) >= 0.5).all(), found


@needs_weights
def test_the_served_photo_in_signature_equals_the_estimator_and_says_its_detector(tmp_path, shared_data):
    from hourglass_tf.export import export_model
    from hourglass_tf.inference import Predictor
    from hourglass_tf.metadata import describe
    from hourglass_tf.model import build_model

    model = build_model(num_stacks=1, num_blocks=1, filters=16, depth=2, num_joints=16, input_size=64)
    info = describe(model, skeleton.MPII)
    saved = export_model(model, tmp_path / "exported", formats=("saved_model",), info=info, detector="ssdlite")
    loaded = tf.saved_model.load(str(saved["saved_model"]))
    estimator = people.PoseEstimator(Predictor(model, info=info, flip_test=False), "ssdlite")
    photos = [shared_data / "mpii" / "demo" / n for n in ("040632747.jpg", "078618267.jpg")]
    blank = cv2.imencode(".png", np.full((90, 120, 3), 127, np.uint8))[1].tobytes()
    for data in [p.read_bytes() for p in photos] + [blank]:
        answer = loaded.signatures["predict_photo"](image_bytes=tf.constant(data))
        mine = estimator(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1].copy())
        assert answer["boxes"].shape[0] == len(mine) == answer["keypoints"].shape[0]
        if mine:
            np.testing.assert_allclose(answer["boxes"].numpy(), [p["box"] for p in mine], atol=1e-3)
            np.testing.assert_allclose(answer["keypoints"].numpy(), [p["keypoints"] for p in mine], atol=1e-3)
    description = json.loads(loaded.signatures["metadata"](request=tf.constant(""))["description"].numpy())
    assert description["export"]["detector"]["name"] == "ssdlite"
    records = serving.read_warmup(saved["saved_model"] / "assets.extra" / serving.WARMUP_FILENAME)
    assert "predict_photo" in [name for name, _ in records]
    reply = serving.serve_in_process(saved["saved_model"], serving.photo_request(photos[0].read_bytes()))
    assert np.asarray(reply["outputs"]["keypoints"]).shape[1:] == (16, 3)
