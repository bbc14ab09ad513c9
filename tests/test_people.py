"""From a photo or video to every person's pose: estimator, person sources, tracking, One-Euro, serving a photo."""

import json
import math

import cv2
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from hourglass_tf import export, people, serving, skeleton, tracking
from hourglass_tf.data.synthetic import render_video
from hourglass_tf.inference import Predictor
from hourglass_tf.metadata import describe
from hourglass_tf.model import build_model

TINY = dict(num_stacks=1, num_blocks=1, filters=16, depth=2, num_joints=16, input_size=64)


@pytest.fixture(scope="module")
def tiny():
    model = build_model(**TINY)
    # non-trivial heatmaps: the head starts near zero, so give it weights that make peaks
    head = model.get_layer("stack_1")
    kernel, bias = head.get_weights()
    head.set_weights([np.random.default_rng(1).normal(0, 0.3, kernel.shape).astype(np.float32), bias])
    return model, describe(model, skeleton.MPII)


@pytest.fixture(scope="module")
def saved_model(tiny, tmp_path_factory):
    """``tiny`` exported once to a SavedModel (its signatures are read, not changed, by the tests)."""
    model, info = tiny
    root = tmp_path_factory.mktemp("people_export")
    return export.export_model(model, root / "exported", formats=("saved_model",), info=info)["saved_model"]


def _picture(seed=0, size=(120, 160)):
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_every_person_goes_through_the_network_in_one_batch_with_the_same_result_as_one_at_a_time(tiny):
    model, info = tiny
    predictor = Predictor(model, info=info)
    estimator = people.PoseEstimator(predictor, "whole_image")
    image = _picture()
    boxes = np.array([[10, 5, 40, 90], [60, 20, 50, 80], [100, 0, 55, 110]], np.float32)
    calls = []
    original = predictor.predict_crops
    predictor.predict_crops = lambda crops, **kw: calls.append(len(crops)) or original(crops, **kw)
    together = estimator.estimate(image, boxes, [0.9, 0.8, 0.7])
    assert calls == [3]  # one network batch for the three people
    for box, person in zip(boxes, together):
        alone = estimator.estimate(image, box[None])[0]
        np.testing.assert_allclose(person["keypoints"], alone["keypoints"], atol=1e-3)
        reference = predictor.predict_image(image, box=box)  # the one-person path of earlier versions
        np.testing.assert_allclose(person["keypoints"][:, :2], reference["keypoints"], atol=1e-3)
        assert person["keypoints"].shape == (16, 3) and person["joints"][0] == "r_ankle"
    assert [p["score"] for p in together] == pytest.approx([0.9, 0.8, 0.7])
    with pytest.raises(ValueError, match=r"box \(500.0, 5.0, 40.0, 90.0\) lies outside the 160x120 image"):
        estimator.estimate(image, [[500, 5, 40, 90]])
    with pytest.raises(people.PersonSourceError, match="box 0 is .*width and height must be positive"):
        estimator.estimate(image, [[10, 5, 0, 90]])
    assert estimator.estimate(image, np.zeros((0, 4))) == []


def test_person_sources_whole_image_boxes_callable_and_fallback(tiny):
    model, info = tiny
    predictor = Predictor(model, info=info)
    image = _picture()
    whole = people.PoseEstimator(predictor, "whole_image")(image)
    assert len(whole) == 1
    np.testing.assert_allclose(whole[0]["keypoints"][:, :2], predictor.predict_image(image)["keypoints"], atol=1e-3)
    per_image = people.PoseEstimator(predictor, {"a.jpg": [[10, 5, 40, 90], [60, 20, 50, 80]]})
    assert len(per_image(image, key="photos/a.jpg")) == 2 and per_image(image, key="b.jpg") == []
    mine = people.PoseEstimator(predictor, lambda img: (np.array([[5, 5, 30, 60]]), np.array([0.4])))
    assert [p["score"] for p in mine(image)] == pytest.approx([0.4])
    nobody = people.PoseEstimator(predictor, lambda img: np.zeros((0, 4)), fallback_whole_image=True)
    assert len(nobody(image)) == 1  # the last resort
    capped = people.PoseEstimator(
        predictor, lambda img: ([[5, 5, 30, 60]] * 5, [0.1, 0.5, 0.9, 0.3, 0.7]), max_people=2
    )
    assert [p["score"] for p in capped(image)] == pytest.approx([0.9, 0.7])
    with pytest.raises(people.PersonSourceError, match="person source must be"):
        people.person_source(42)


def test_a_coco_results_detections_file_is_read_matched_by_image_and_checked(tmp_path):
    records = [
        {"image_id": 397133, "category_id": 1, "bbox": [10, 20, 30, 60], "score": 0.9},
        {"image_id": 397133, "category_id": 1, "bbox": [50, 20, 30, 60], "score": 0.2},
        {"image_id": 397133, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.99},  # a car
        {"image_id": "street", "bbox": [1, 2, 3, 4], "score": 0.5},
    ]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(records))
    source = people.DetectionsFile(path, min_score=0.3)
    boxes, scores = source(None, key="val2017/000000397133.jpg")  # the numeric stem is the id
    np.testing.assert_array_equal(boxes, [[10, 20, 30, 60]]) and np.testing.assert_allclose(scores, [0.9])
    assert source.skipped_category == 1 and len(source(None, key="street.png")[0]) == 1
    assert len(source(None, key="other.jpg")[0]) == 0
    mapped = people.DetectionsFile(path, image_ids={"holiday.jpg": 397133})
    assert len(mapped(None, key="x/holiday.jpg")[0]) == 2
    bad = {
        "not json": (b"{", "not a readable JSON detections file"),
        "a dict": (
            json.dumps({"image_id": 1}).encode(),
            "a detections file is a JSON list of COCO results, found a dict",
        ),
        "no bbox": (json.dumps([{"image_id": 1, "score": 1}]).encode(), r"record 0: needs image_id and bbox"),
        "flat box": (json.dumps([records[0], {"image_id": 1, "bbox": [1, 2, 0, 4]}]).encode(), "record 1: box 0"),
        "short box": (
            json.dumps([{"image_id": 1, "bbox": [1, 2, 3]}]).encode(),
            r"record 0: bbox must be \[x, y, w, h\]",
        ),
        "nan score": (b'[{"image_id": 1, "bbox": [1, 2, 3, 4], "score": NaN}]', "record 0: score must be a number"),
    }
    for name, (content, message) in bad.items():
        broken = tmp_path / f"{name.replace(' ', '_')}.json"
        broken.write_bytes(content)
        with pytest.raises(people.PersonSourceError, match=f"{broken.name}: {message}"):
            people.DetectionsFile(broken)


def _silhouette(image, x0, top, tall, shade=40):
    """A dark standing figure (head, torso, arms, legs) of ``tall`` px; returns its box."""
    u = tall / 8
    c = (shade, shade, shade)
    cv2.circle(image, (int(x0), int(top + u / 2)), int(u * 0.5), c, -1)
    cv2.rectangle(image, (int(x0 - u * 0.8), int(top + u)), (int(x0 + u * 0.8), int(top + 4 * u)), c, -1)
    for s in (-1, 1):
        cv2.line(
            image, (int(x0 + s * u * 0.4), int(top + 4 * u)), (int(x0 + s * u * 0.6), int(top + 8 * u)), c, int(u * 0.5)
        )
        cv2.line(
            image,
            (int(x0 + s * u * 0.8), int(top + 1.2 * u)),
            (int(x0 + s * u * 1.1), int(top + 4.2 * u)),
            c,
            int(u * 0.35),
        )
    return np.array([x0 - 1.4 * u, top, 2.8 * u, tall], np.float32)


def test_the_hog_detector_finds_two_standing_figures_in_a_generated_picture():
    image = np.full((480, 640, 3), 200, np.uint8)
    truth = [_silhouette(image, 180, 110, 250), _silhouette(image, 460, 110, 250)]
    boxes, scores = people.HogDetector()(image)
    assert len(boxes) >= 2 and np.all(np.diff(scores) <= 0)  # best first
    overlaps = people.iou(np.stack(truth), boxes)
    assert (overlaps.max(axis=1) >= 0.5).all(), overlaps  # each figure has its box
    assert len(people.HogDetector()(np.full((480, 640, 3), 200, np.uint8))[0]) == 0  # nobody on a blank wall


def test_the_one_euro_filter_follows_the_published_equations():
    """Casiez et al. 2012, written out here for one scalar, against the package's vectorised filter."""

    def reference(samples, times, min_cutoff, beta, d_cutoff):
        def alpha(cutoff, dt):
            r = 2 * math.pi * cutoff * dt
            return r / (r + 1)

        out, x_prev, dx_prev, t_prev = [], None, 0.0, None
        for x, t in zip(samples, times):
            if x_prev is None:
                x_prev, t_prev = x, t
                out.append(x)
                continue
            dt = t - t_prev
            dx = (x - x_prev) / dt
            dx_hat = alpha(d_cutoff, dt) * dx + (1 - alpha(d_cutoff, dt)) * dx_prev
            cutoff = min_cutoff + beta * abs(dx_hat)
            x_hat = alpha(cutoff, dt) * x + (1 - alpha(cutoff, dt)) * x_prev
            out.append(x_hat)
            x_prev, dx_prev, t_prev = x_hat, dx_hat, t
        return np.array(out)

    rng = np.random.default_rng(0)
    times = np.cumsum(rng.uniform(0.02, 0.05, 200))
    signal = 100 * np.sin(times * 3)[:, None] + rng.normal(0, 2, (200, 3))
    for params in (
        {"min_cutoff": 1.0, "beta": 0.0, "d_cutoff": 1.0},
        {"min_cutoff": 0.5, "beta": 0.3, "d_cutoff": 2.0},
    ):
        f = tracking.OneEuroFilter(**params)
        mine = np.stack([f(x, t) for x, t in zip(signal, times)])
        for k in range(3):
            np.testing.assert_allclose(mine[:, k], reference(signal[:, k], times, **params), rtol=1e-9, atol=1e-9)
    steady = tracking.OneEuroFilter()
    assert all(np.allclose(steady(np.full(4, 7.0), t / 25), 7.0) for t in range(10))  # a still signal stays
    with pytest.raises(ValueError, match="timestamps must increase"):
        steady(np.zeros(4), 0.0)
    with pytest.raises(ValueError, match="min_cutoff must be positive, received min_cutoff=0"):
        tracking.OneEuroFilter(min_cutoff=0)


class _OracleEstimator:
    """Stands in for the network: for each box, the true joints of the person whose joint box overlaps it most
    (plus noise); the detector gives the true boxes of the current frame. Tests the tracker alone."""

    skeleton = skeleton.MPII

    def __init__(self, joints):
        self.joints, self.t, self.rng = joints, 0, np.random.default_rng(0)

    def truth_boxes(self):
        return np.stack(
            [people.box_of_keypoints(np.concatenate([j, np.ones((16, 1))], 1)) for j in self.joints[self.t]]
        )

    def boxes(self, frame, key=None):
        return self.truth_boxes(), np.ones(len(self.joints[self.t]), np.float32)

    def estimate(self, frame, boxes, scores=None, check_inside=True):
        truth = self.truth_boxes()
        out = []
        for box, score in zip(boxes, scores):
            who = int(np.argmax(people.iou(box, truth)[0]))
            xy = self.joints[self.t, who] + self.rng.normal(0, 1.5, (16, 2))
            keypoints = np.concatenate([xy, np.full((16, 1), 0.8)], axis=1).astype(np.float32)
            out.append(
                {"box": box, "score": float(score), "keypoints": keypoints, "joints": list(self.skeleton.joints)}
            )
        return out


def test_the_tracker_keeps_each_person_s_identity_and_runs_the_detector_only_every_n_frames():
    frames, joints = render_video(seed=4, num_frames=60, image_size=(240, 320), num_people=2, height=0.6)
    oracle = _OracleEstimator(joints)
    tracker = tracking.Tracker(oracle, detect_every=20, smoothing=None)
    owner = {}  # track id -> the true person it follows
    for t in range(len(frames)):
        oracle.t = t
        found = tracker(frames[t], t / 25)
        assert len(found) == 2
        for person in found:
            err = np.linalg.norm(joints[t][:, None] - person["keypoints"][None, :, :2], axis=-1).mean(axis=-1)
            owner.setdefault(person["track_id"], set()).add(int(np.argmin(err)))
    assert sorted(owner) == [1, 2] and all(len(v) == 1 for v in owner.values())  # two ids, never swapped
    assert tracker.detector_runs == 3  # frames 0, 20 and 40


def test_smoothing_steadies_tracked_keypoints_on_a_generated_video():
    frames, joints = render_video(seed=5, num_frames=50, image_size=(240, 320), num_people=1)

    def jitter(track):
        return float(np.linalg.norm(track[2:] - 2 * track[1:-1] + track[:-2], axis=-1).mean())

    tracks = {}
    for name, smoothing in (("raw", None), ("smoothed", tracking.ONE_EURO)):
        oracle = _OracleEstimator(joints)
        tracker = tracking.Tracker(oracle, smoothing=smoothing)
        track = []
        for t in range(len(frames)):
            oracle.t = t
            track.append(tracker(frames[t], t / 25)[0]["keypoints"][:, :2])
        tracks[name] = np.stack(track)
    assert jitter(tracks["smoothed"]) < 0.7 * jitter(tracks["raw"])
    error = {n: np.linalg.norm(tr - joints[:, 0], axis=-1).mean() for n, tr in tracks.items()}
    assert error["smoothed"] < error["raw"] + 1.0  # steadier without drifting off


def test_the_whole_image_signature_equals_the_python_estimator_and_its_warmup_file_runs(tiny, saved_model):
    model, info = tiny
    photos = [_picture(1, (100, 140)), _picture(2, (90, 120))]
    jpegs = [cv2.imencode(".jpg", p[..., ::-1])[1].tobytes() for p in photos]
    boxes = [[[10, 5, 40, 80], [60, 10, 50, 70]], [[20, 10, 60, 70]]]
    payload = json.loads(json.dumps(serving.images_request(jpegs, boxes)))  # what goes over the wire
    reply = serving.parse_response(json.dumps(serving.serve_in_process(saved_model, payload)))
    assert reply["keypoints"].shape == (2, 2, 16, 3)
    np.testing.assert_array_equal(reply["valid"], [[1, 1], [1, 0]])
    assert not reply["keypoints"][1, 1].any()  # the padding row stays empty
    estimator = people.PoseEstimator(Predictor(model, info=info, flip_test=False), "whole_image")
    for i, jpeg in enumerate(jpegs):
        decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[..., ::-1].copy()
        expected = np.stack([p["keypoints"] for p in estimator.estimate(decoded, boxes[i])])
        np.testing.assert_allclose(reply["keypoints"][i, : len(boxes[i])], expected, atol=2e-3)
    tensors = serving._payload_tensors(payload)  # what the gRPC client sends
    assert tensors["image_bytes"].dtype == object and tensors["boxes"].shape == (2, 2, 4)
    refused = serving.serve_in_process(saved_model, serving.images_request(jpegs[:1], [[[500, 5, 40, 80]]]))
    assert "a box lies outside its image" in refused["error"]
    flat = serving.serve_in_process(saved_model, serving.images_request(jpegs[:1], [[[5, 5, 0, 80]]]))
    assert "box width and height must be positive" in flat["error"]
    too_many = serving.images_request(jpegs[:1], [[[5, 5, 40, 80]]])
    too_many["inputs"]["box_count"] = [2]
    assert "box_count exceeds the boxes given" in serving.serve_in_process(saved_model, too_many)["error"]
    garbage = serving.serve_in_process(saved_model, serving.images_request([b"not an image"], [[[5, 5, 40, 80]]]))
    assert "error" in garbage and "outputs" not in garbage  # undecodable bytes: refused, no answer
    # the warm-up file: one record per signature, each runs
    records = serving.read_warmup(saved_model / "assets.extra" / serving.WARMUP_FILENAME)
    loaded = tf.saved_model.load(str(saved_model))
    assert sorted(name for name, _ in records) == sorted(loaded.signatures)
    for name, inputs in records:
        outputs = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
        assert all(np.isfinite(v.numpy()).all() for v in outputs.values() if v.dtype.is_floating), name


def test_predict_cli_finds_several_people_from_a_detections_file_and_writes_coco_results(tiny, tmp_path):
    import subprocess
    import sys

    from hourglass_tf.metadata import save_keras

    model, info = tiny
    save_keras(model, tmp_path / "tiny.keras", info)
    image = np.full((200, 300, 3), 200, np.uint8)
    cv2.imwrite(str(tmp_path / "000000000042.jpg"), image)
    detections = [
        {"image_id": 42, "category_id": 1, "bbox": b, "score": 0.9} for b in ([10, 10, 60, 150], [150, 20, 70, 160])
    ]
    (tmp_path / "dets.json").write_text(json.dumps(detections))
    out = tmp_path / "out"
    run = [
        sys.executable,
        str(REPO / "scripts" / "predict.py"),
        f"--model={tmp_path / 'tiny.keras'}",
        f"--output_dir={out}",
    ]
    done = subprocess.run(
        [*run, f"--detections={tmp_path / 'dets.json'}", "--box_search", tmp_path / "000000000042.jpg"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((out / "000000000042.json").read_text())
    assert [p["box"] for p in record["people"]] == [[10, 10, 60, 150], [150, 20, 70, 160]]  # kept by the search
    results = json.loads((out / "coco_results.json").read_text())
    assert [r["image_id"] for r in results] == [42, 42] and len(results[0]["keypoints"]) == 16 * 3
    both = subprocess.run(
        [*run, "--bbox=1,2,3,4", f"--detections={tmp_path / 'dets.json'}", tmp_path / "000000000042.jpg"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert both.returncode != 0 and "give one person source, received --bbox and --detections" in both.stderr


@pytest.mark.reliability
def test_every_signature_refuses_malformed_requests_with_a_clear_answer(tiny, saved_model):
    """The serving sweep: wrong dtype, rank, size, an empty batch, undecodable bytes, a decompression bomb;
    each is refused by the graph with a message saying what is wrong (TF Serving passes it on), never a crash."""
    from benchmarks.reliability import jpeg_bomb, png_bomb

    model, _ = tiny
    signatures = tf.saved_model.load(str(saved_model)).signatures
    size = model.inputs[0].shape[1]

    def outcome(name, **inputs):
        try:
            signatures[name](**inputs)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            return str(error)
        return "answered"

    crops = tf.zeros([2, size, size, 3], tf.uint8)
    assert "answered" == outcome("serving_default", images=crops)
    for bad, expected in (
        (tf.zeros([2, size, size, 3], tf.float32), "expected to be a uint8 tensor"),  # wrong dtype
        (tf.zeros([size, size, 3], tf.uint8), f"person crops of shape (N, {size}, {size}, 3)"),  # wrong rank
        (tf.zeros([2, size // 2, size // 2, 3], tf.uint8), f"person crops of shape (N, {size}, {size}, 3)"),
        (tf.zeros([0, size, size, 3], tf.uint8), "the batch holds no crop"),
    ):
        assert expected in outcome("serving_default", images=bad), expected
    jpeg = cv2.imencode(".jpg", _picture(1, (100, 140)))[1].tobytes()
    box = tf.constant([10.0, 5.0, 40.0, 80.0])
    assert outcome("predict_image", image_bytes=tf.constant(jpeg), box=box) == "answered"
    for data in (png_bomb(), jpeg_bomb()):
        assert "decompression bomb" in outcome("predict_image", image_bytes=tf.constant(data), box=box)
        reply = serving.serve_in_process(saved_model, serving.images_request([jpeg, data], [[[5, 5, 40, 80]]] * 2))
        assert "decompression bomb" in reply["error"] and "outputs" not in reply
    empty = outcome(
        "predict_images",
        image_bytes=tf.constant([], tf.string),
        boxes=tf.zeros([0, 1, 4]),
        box_count=tf.zeros([0], tf.int32),
    )
    assert "the batch holds no image" in empty
    assert "box width and height must be positive" in outcome(
        "predict_image", image_bytes=tf.constant(jpeg), box=box * 0
    )


def test_a_matched_detection_corrects_the_track_box_carried_from_keypoints():
    detection = np.array([[100.0, 50.0, 60.0, 120.0]], np.float32)

    class Spy:
        skeleton = skeleton.MPII

        def __init__(self):
            self.crops = []

        def boxes(self, frame, key=None):
            return detection, np.array([0.9], np.float32)

        def estimate(self, frame, boxes, scores=None, check_inside=True):
            self.crops.append(np.asarray(boxes, np.float32).copy())
            keypoints = np.zeros((16, 3), np.float32)  # keypoints that drift: a box 10 px right of the last one
            keypoints[:, 0] = np.linspace(boxes[0][0] + 10, boxes[0][0] + 10 + boxes[0][2], 16)
            keypoints[:, 1] = np.linspace(boxes[0][1], boxes[0][1] + boxes[0][3], 16)
            keypoints[:, 2] = 1.0
            return [{"box": boxes[0], "score": 0.9, "keypoints": keypoints, "joints": list(skeleton.MPII.joints)}]

    spy = Spy()
    tracker = tracking.Tracker(spy, detect_every=2, smoothing=None)
    frame = np.zeros((240, 320, 3), np.uint8)
    for _ in range(3):
        tracker(frame)
    # frame 0 crops the detection; frame 1 the drifted keypoint box; frame 2 (the detector again): the detection,
    # where the track would otherwise carry its box 20 px off
    np.testing.assert_allclose(spy.crops[0], detection)
    assert spy.crops[1][0, 0] == detection[0, 0] + 10  # between detections the box follows the keypoints
    np.testing.assert_allclose(spy.crops[2], detection)
    assert [t["id"] for t in tracker.tracks] == [1]  # the same track, corrected, not a new one


def test_recrop_predicts_each_person_again_from_the_box_of_their_first_pass_keypoints(tiny):
    model, info = tiny
    estimator = people.PoseEstimator(Predictor(model, info=info), [[10, 5, 40, 90], [60, 20, 50, 80]], recrop=True)
    image = _picture()
    first = estimator.estimate(image, estimator.boxes(image)[0], [1.0, 1.0])
    calls = []
    original = estimator.estimate
    estimator.estimate = lambda *a, **kw: calls.append(np.asarray(a[1], np.float32).copy()) or original(*a, **kw)
    again = estimator(image)
    assert len(calls) == 2 and len(again) == 2  # one batch for the boxes, one for the re-crops
    for person, box in zip(first, calls[1]):
        expected = people.box_of_keypoints(person["keypoints"])
        np.testing.assert_allclose(box, person["box"] if expected is None else expected, atol=1e-4)
    for person, box in zip(again, calls[1]):
        np.testing.assert_allclose(person["box"], box)
        alone = original(image, box[None], check_inside=False)[0]["keypoints"]
        # the re-crops ran as a batch of two, this one alone: kernels may sum in another order per batch size
        # (TensorFlow's Eigen kernels, on a CPU without oneDNN, differ by 6e-8 in the scores)
        np.testing.assert_allclose(person["keypoints"], alone, rtol=0, atol=1e-5)
    low = [dict(first[0], keypoints=first[0]["keypoints"] * [1, 1, 0])]  # no keypoint scores 0.2: the box stays
    np.testing.assert_allclose(estimator.estimate_again(image, low)[0]["box"], first[0]["box"])
    assert people.PoseEstimator(Predictor(model, info=info), [[10, 5, 40, 90]]).recrop is False  # opt-in


class _BrightnessPredictor:
    """A stand-in network whose joints score 1 - |white fraction of the crop - 0.16|: the crop a quarter wider
    (BOX_PAD 1.25) than a white square scores 1; each joint sits at crop pixel (j, j), so where it lands in the
    image tells which box it was read from."""

    skeleton = skeleton.MPII
    input_size = 32

    def __init__(self):
        self.batches = []

    def predict_crops(self, crops):
        self.batches.append(len(crops))
        fraction = crops.mean(axis=(1, 2, 3))
        k = self.skeleton.num_joints
        scores = np.repeat(1 - np.abs(fraction - 0.16)[:, None], k, axis=1).astype(np.float32)
        keypoints = np.tile(np.arange(k, dtype=np.float32)[None, :, None], (len(crops), 1, 2))
        return {"keypoints": keypoints, "scores": scores}


def test_a_box_search_tries_every_scale_and_shift_in_one_batch_and_combines_the_best_tries():
    image = np.zeros((200, 320, 3), np.uint8)
    image[80:120, 80:120] = 255  # person A: a 40 px square in an 80 px box -> scale 1.0 crops 100 px, 16 % white
    image[80:120, 220:260] = 255  # person B: a 40 px square in a 40 px box -> scale 2.0 crops 100 px
    boxes = np.array([[60, 60, 80, 80], [220, 80, 40, 40]], np.float32)
    predictor = _BrightnessPredictor()
    single = people.PoseEstimator(predictor, "whole_image")

    def alone(box):
        return single.estimate(image, np.asarray(box, np.float32).reshape(1, 4), check_inside=False)[0]["keypoints"]

    # top 1: each person's best-scoring scale, their given box and score kept, one batch for all tries
    best_scale = people.BoxSearch(scales=(0.5, 1.0, 2.0))
    found = people.PoseEstimator(predictor, boxes, search=best_scale)(image)
    assert predictor.batches[-1] == 6  # two people x three scales, one network batch
    for person, box, scale in zip(found, boxes, (1.0, 2.0)):
        np.testing.assert_allclose(person["box"], box)  # the given box, not a try
        np.testing.assert_allclose(person["keypoints"], alone(people.scale_boxes(box, scale)), atol=1e-4)
        assert person["keypoints"][0, 2] == pytest.approx(1.0, abs=0.02)
    # shifts move each try down by that fraction of the given box's larger side, try-major
    search = people.BoxSearch(scales=(1.0, 2.0), shifts=(-0.25, 0.0), top=3)
    tries = search.tries(boxes)
    np.testing.assert_allclose(tries[0], [60, 40, 80, 80])  # try 0 of box 0: scale 1, up by 0.25 x 80
    np.testing.assert_allclose(tries[1 * 2 + 1], [220, 80, 40, 40])  # try 1 of box 1: scale 1, no shift
    np.testing.assert_allclose(tries[2 * 2 + 0], [20, 0, 160, 160])  # try 2 of box 0: scale 2, up 0.25 x 80
    # top 3: the joint-by-joint median of the three best tries
    predictor.batches.clear()
    combined = people.PoseEstimator(predictor, boxes, search=search)(image)
    assert predictor.batches == [8]
    for i, person in enumerate(combined):
        each = np.stack([alone(tries[t * 2 + i]) for t in range(4)])
        best3 = np.argsort(-each[..., 2].mean(axis=1), kind="stable")[:3]
        np.testing.assert_allclose(person["keypoints"], np.median(each[best3], axis=0), atol=1e-4)
    # with the second pass: two batches of all tries
    predictor.batches.clear()
    both = people.PoseEstimator(predictor, boxes, recrop=True, search=people.BOX_SEARCH)(image)
    assert predictor.batches == [2 * people.BOX_SEARCH.num_tries] * 2 and len(both) == 2
    # one try at scale 1 is the plain path
    plain = people.PoseEstimator(predictor, boxes)(image)
    one = people.PoseEstimator(predictor, boxes, search=people.BoxSearch())(image)
    for a, b in zip(plain, one):
        np.testing.assert_allclose(a["keypoints"], b["keypoints"])
    bad = [
        (dict(scales=()), "BoxSearch scales must be .*received"),
        (dict(scales=(1.0, 0.0)), "BoxSearch scales must be .*received"),
        (dict(shifts=(float("nan"),)), "BoxSearch shifts must be .*received"),
        (dict(shifts="up"), "BoxSearch shifts must be .*received"),
        (dict(scales=(1.0, 2.0), top=3), "top must be an integer from 1 to the 2 tries, received 3"),
        (dict(top=0.5), "top must be an integer .*received 0.5"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            people.BoxSearch(**kwargs)
    with pytest.raises(ValueError, match=r"search must be a people.BoxSearch or None, received \(0.5, 1.0\)"):
        people.PoseEstimator(predictor, boxes, search=(0.5, 1.0))
    with pytest.raises(ValueError, match=r"lies outside the 320x200 image"):
        people.PoseEstimator(predictor, boxes, search=search)(image, boxes=[[400, 0, 10, 10]])
