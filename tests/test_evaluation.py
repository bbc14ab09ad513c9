"""Inference (flip test, back-projection), the evaluate and predict CLIs, the paper's analyses."""

import json
import os
import re
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest
import scipy.io
import tensorflow as tf

from conftest import REPO, TINY
from hourglass_tf import evaluation, skeleton
from hourglass_tf.backends import Runner
from hourglass_tf.codec import HeatmapCodec
from hourglass_tf.data import synthetic
from hourglass_tf.geometry import apply_matrix, crop_matrix, flip_back, person_from_box, warp_image
from hourglass_tf.geometry import back_project as _back_project
from hourglass_tf.inference import Predictor, parse_scales, zoom_about_centre
from hourglass_tf.metadata import describe, save_keras
from hourglass_tf.model import build_model


def back_project(keypoints, matrices):
    return _back_project(keypoints, matrices).numpy()


def script(name, *args):
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=os.environ.copy(),
    )


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model = build_model(**TINY)
    save_keras(model, path, describe(model, skeleton.MPII))
    return path


# ---------------------------------------------------------------- inference


def test_flip_back_is_exact_on_synthetic_heatmaps():
    codec = HeatmapCodec(64, 16)
    rng = np.random.default_rng(0)
    joints = rng.uniform(4, 60, (3, 16, 2)).astype(np.float32)
    present = np.ones((3, 16), bool)
    perm = skeleton.MPII.flip_permutation
    mirrored = np.stack([63.0 - joints[..., 0], joints[..., 1]], axis=-1)[:, perm]
    original = codec.encode(joints, present)
    restored = flip_back(codec.encode(mirrored, present), perm)
    np.testing.assert_allclose(restored.numpy(), original.numpy(), atol=1e-6)


def test_back_projection_inverts_the_crop_transform():
    matrices = np.stack([crop_matrix([120.0, 80.0], 0.7, 64, rotation=r).numpy() for r in (0.0, 25.0)])
    points = np.random.default_rng(1).uniform(50, 200, (2, 5, 2))
    crop_points = np.stack([apply_matrix(matrices[i], points[i]).numpy() for i in range(2)])
    np.testing.assert_allclose(back_project(crop_points, matrices), points, atol=1e-3)


def test_dark_refinement_moves_predictions_by_under_a_heatmap_pixel(tiny_model_file):
    crops = np.random.default_rng(3).random((3, 64, 64, 3), dtype=np.float32)
    quarter = Predictor.from_file(tiny_model_file).predict_crops(crops)
    dark = Predictor.from_file(tiny_model_file, refine="dark").predict_crops(crops)
    np.testing.assert_array_equal(dark["heatmaps"], quarter["heatmaps"])
    shift = np.abs(dark["keypoints"] - quarter["keypoints"])
    stride = 64 / quarter["heatmaps"].shape[1]
    assert shift.max() <= 0.75 * stride + 1e-4 and shift.max() > 0


def smooth_image(height, width):
    """(H, W, 3) float32 with large, smooth variations: a misplaced sample shows."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [np.sin(x / 7.0) * np.cos(y / 5.0), np.cos((x + y) / 9.0), (x - y) / (width + height)]
    return (0.5 + 0.5 * np.stack(channels, axis=-1)).astype(np.float32)


@pytest.mark.parametrize("scale", [0.8, 1.25])
def test_zooming_a_crop_by_one_over_s_is_the_crop_of_a_box_s_times_larger(scale):
    image = smooth_image(120, 160)
    center = np.array([80.0, 60.0], np.float32)
    reference = warp_image(image, crop_matrix(center, 0.4, 64), 64)
    larger = warp_image(image, crop_matrix(center, 0.4 * scale, 64), 64).numpy()
    zoomed = zoom_about_centre(reference[None], 1.0 / scale).numpy()[0]
    inner = slice(16, 48)  # inside the reference crop at both scales
    np.testing.assert_allclose(zoomed[inner, inner], larger[inner, inner], atol=0.01)
    shifted = zoom_about_centre(reference[None], 1.0 / scale * 1.02).numpy()[0]  # the check can fail
    assert np.abs(shifted[inner, inner] - larger[inner, inner]).max() > 0.02


@pytest.mark.parametrize("scale", [0.8, 1.25])
def test_zooming_heatmaps_by_s_moves_their_peaks_about_the_centre(scale):
    codec = HeatmapCodec(128, 32, sigma=2.0)
    joints = np.array([[10.3, 18.0], [21.6, 9.2]], np.float32)  # heatmap pixels; the Gaussians stay inside
    heatmaps = zoom_about_centre(codec.encode(codec.heatmap_to_input(joints), np.ones(2, bool))[None], scale)
    maps = heatmaps.numpy()[0]
    y, x = np.mgrid[0:32, 0:32]
    centroids = (
        np.stack([(maps * x[..., None]).sum((0, 1)), (maps * y[..., None]).sum((0, 1))], -1) / maps.sum((0, 1))[:, None]
    )
    np.testing.assert_allclose(centroids, 15.5 + scale * (joints - 15.5), atol=0.02)


class PooledRunner(Runner):
    """A scale-equivariant stand-in for a network: heatmap k = 4x4 average of colour channel k % 3."""

    input_size, heatmap_size, num_joints = 64, 16, 14

    def raw(self, crops):
        pooled = tf.nn.avg_pool2d(tf.convert_to_tensor(crops, tf.float32), 4, 4, "VALID")
        return tf.gather(pooled, [k % 3 for k in range(self.num_joints)], axis=-1).numpy()[None]


def heatmap_centroids(heatmaps, stride):
    """(N, H, W, K) -> (N, K, 2) weighted centres, in crop pixels."""
    y, x = np.mgrid[0 : heatmaps.shape[1], 0 : heatmaps.shape[2]]
    mass = heatmaps.sum((1, 2))
    xy = np.stack([(heatmaps * x[..., None]).sum((1, 2)), (heatmaps * y[..., None]).sum((1, 2))], -1) / mass[..., None]
    return (xy + 0.5) * stride - 0.5


def test_multi_scale_testing_maps_every_scale_back_to_the_reference_frame():
    y, x = np.mgrid[0:64, 0:64].astype(np.float32)
    blobs = [(20.0, 24.0), (40.0, 22.0), (30.0, 41.0)]  # one blob per colour channel, crop pixels
    crops = np.stack([np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * 4.0**2)) for bx, by in blobs], axis=-1)[None]
    single = Predictor(PooledRunner(), skeleton=skeleton.LSP, flip_test=False).predict_crops(crops)["heatmaps"]
    np.testing.assert_allclose(heatmap_centroids(single, 4)[0, :3], blobs, atol=0.05)
    for scales in ((1.25,), (0.8,), (0.8, 1.0, 1.25)):
        multi = Predictor(PooledRunner(), skeleton=skeleton.LSP, flip_test=False, scales=scales).predict_crops(crops)[
            "heatmaps"
        ]
        assert not np.allclose(multi, single, atol=1e-3)  # the zoomed passes ran
        # Not mapped back, the 1.25 pass would put the first blob 2.3 px closer to the centre.
        np.testing.assert_allclose(heatmap_centroids(multi, 4), heatmap_centroids(single, 4), atol=0.1)


@pytest.mark.parametrize("scales", [[], [0.0], [1.0, -0.5], ["x"], [float("nan")], None])
def test_bad_test_scales_are_refused_naming_them(scales):
    with pytest.raises(ValueError, match="test scales must be"):
        parse_scales(scales)
    with pytest.raises(ValueError, match=re.escape(repr(scales))):
        Predictor(PooledRunner(), skeleton=skeleton.LSP, scales=scales)


def test_box_to_center_scale_and_bad_boxes():
    center, scale = person_from_box((10, 20, 100, 200))
    np.testing.assert_allclose(center, [60, 120])
    assert scale == pytest.approx(1.25 * 200 / 200)
    with pytest.raises(ValueError, match=r"received box=\(0.0, 0.0, 0.0, 5.0\)"):
        person_from_box((0, 0, 0, 5))


def test_the_box_rule_gives_the_same_bits_in_numpy_and_in_tensorflow():
    """One rule (``boxes.box_rule``) run by the readers in NumPy and by graphs and signatures in TensorFlow."""
    from hourglass_tf.geometry import box_to_center_scale

    rng = np.random.default_rng(7)
    boxes = np.concatenate([rng.uniform(-50, 900, (200, 2)), rng.uniform(0.3, 700, (200, 2))], axis=1)
    boxes = boxes.astype(np.float32)
    centers, scales = box_to_center_scale(boxes)
    for box, center, scale in zip(boxes, centers.numpy(), scales.numpy()):
        mine = person_from_box(box)
        np.testing.assert_array_equal(mine[0], center)
        assert mine[1] == float(scale)


def test_flip_test_averages_the_mirrored_pass(tiny_model_file):
    plain = Predictor.from_file(tiny_model_file, flip_test=False)
    flipped = Predictor.from_file(tiny_model_file, flip_test=True)
    crops = np.random.default_rng(2).random((2, 64, 64, 3), dtype=np.float32)
    a = plain.all_stack_heatmaps(crops)
    b = plain.all_stack_heatmaps(crops[:, :, ::-1])
    expected = (a[-1] + flip_back(b[-1], skeleton.MPII.flip_permutation).numpy()) / 2
    np.testing.assert_allclose(flipped.predict_crops(crops)["heatmaps"], expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, 64, 64, 3\).*\(2, 32, 32, 3\)"):
        plain.predict_crops(np.zeros((2, 32, 32, 3), np.float32))


def test_predict_image_returns_keypoints_in_original_pixels(tiny_model_file):
    predictor = Predictor.from_file(tiny_model_file)
    image = np.random.default_rng(3).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    result = predictor.predict_image(image, box=(20, 10, 60, 70))
    matrix = crop_matrix(result["center"], result["scale"], 64).numpy()
    np.testing.assert_allclose(
        back_project(result["crop_keypoints"][None], matrix[None])[0], result["keypoints"], atol=1e-3
    )
    with pytest.raises(ValueError, match="outside the 120x90 image"):
        predictor.predict_image(image, box=(500, 10, 60, 70))


# ---------------------------------------------------------------- file-based evaluation


@pytest.fixture
def annotation_files(tmp_path):
    """A 5-person MPII annotation file in both layouts, and predictions in every accepted format."""
    rng = np.random.default_rng(4)
    gt0 = rng.uniform(50, 300, (5, 16, 2))  # 0-based truth
    missing = np.zeros((5, 16), bool)
    missing[0, 3] = True
    boxes = np.stack([gt0[:, 9] - 20, gt0[:, 9] + 20], axis=0).transpose(0, 2, 1)  # (2, 2, N)
    scipy.io.savemat(
        tmp_path / "annot.mat",
        {"pos_gt_src": (gt0 + 1).transpose(1, 2, 0), "headboxes_src": boxes, "jnt_missing": missing.T.astype(np.uint8)},
    )
    head = 0.6 * np.linalg.norm(boxes[1] - boxes[0], axis=0)
    with h5py.File(tmp_path / "annot.h5", "w") as f:
        f["part"] = np.where(missing[..., None], 0.0, gt0 + 1)
        f["normalize"] = head
    pred0 = gt0 + rng.normal(0, 12, gt0.shape)
    with h5py.File(tmp_path / "pred.h5", "w") as f:
        f["preds"] = pred0 + 1
    scipy.io.savemat(tmp_path / "pred.mat", {"preds": pred0 + 1})
    scipy.io.savemat(tmp_path / "pred_src.mat", {"pos_pred_src": (pred0 + 1).transpose(1, 2, 0)})
    np.save(tmp_path / "pred.npy", pred0)
    np.save(tmp_path / "short.npy", pred0[:4])
    np.save(tmp_path / "lsp.npy", pred0[:, :14])
    return tmp_path


def test_every_prediction_format_gives_the_same_result(annotation_files):
    results = [
        evaluation.evaluate_files(annotation_files / a, annotation_files / p, "mpii")["summary"]
        for a in ("annot.mat", "annot.h5")
        for p in ("pred.h5", "pred.mat", "pred_src.mat", "pred.npy")
    ]
    for r in results[1:]:
        assert r == pytest.approx(results[0])
    assert 0 < results[0]["Mean"] < 100


def test_evaluate_cli_file_mode_writes_json_and_plot(annotation_files):
    out = annotation_files
    result = script(
        "evaluate.py",
        f"--annotations={out / 'annot.mat'}",
        f"--predictions={out / 'pred.h5'}",
        f"--output_json={out / 'm.json'}",
        f"--plot={out / 'p.png'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "PCKh@0.5" in result.stdout and "Mean_unweighted" in result.stdout
    data = json.loads((out / "m.json").read_text())
    assert list(data["summary"]) == [
        "Head",
        "Shoulder",
        "Elbow",
        "Wrist",
        "Hip",
        "Knee",
        "Ankle",
        "Mean",
        "Mean_unweighted",
    ]
    assert len(data["per_joint"]) == 16
    assert cv2.imread(str(out / "p.png")) is not None


@pytest.mark.parametrize(
    "pred, fragment",
    [
        ("short.npy", "holds 4 people but the annotations have 5"),
        ("lsp.npy", "holds 14 joints per person but the annotations have 16"),
        ("nothing.h5", "nothing.h5: file not found"),
    ],
)
def test_evaluate_cli_refuses_mismatched_predictions(annotation_files, pred, fragment):
    result = script(
        "evaluate.py", f"--annotations={annotation_files / 'annot.mat'}", f"--predictions={annotation_files / pred}"
    )
    assert result.returncode == 2
    assert fragment in result.stderr and pred in result.stderr


def test_precision_recall_on_a_hand_case():
    pr = evaluation.precision_recall([0.9, 0.8, 0.3, 0.1], [True, False, True, False])
    assert pr["precision"][:3] == pytest.approx([1.0, 0.5, 2 / 3])
    assert pr["recall"][:3] == pytest.approx([0.5, 0.5, 1.0])
    assert pr["average_precision"] == pytest.approx(100 * (0.5 * 1.0 + 0.5 * 2 / 3))


# ---------------------------------------------------------------- model-driven evaluation and predict CLI


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(root, num_train=4, num_valid=6, image_size=96, seed=2)
    return root


def test_model_driven_evaluation_writes_every_result(tiny_model_file, synthetic_dir, tmp_path):
    result = script(
        "evaluate.py",
        f"--checkpoint={tiny_model_file}",
        "--dataset=synthetic",
        f"--data_dir={synthetic_dir}",
        f"--output_dir={tmp_path}",
        "--batch_size=4",
        "--refine=dark",
        "--test_scales=1,1.25",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "per stack: 1:" in result.stdout and "presence AP" in result.stdout
    metrics_json = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics_json["refine"] == "dark" and metrics_json["test_scales"] == [1.0, 1.25]
    assert metrics_json["people"] == 6 and len(metrics_json["stack_accuracy"]) == 2
    assert {"visible", "occluded", "presence"} <= set(metrics_json["occlusion"])
    with h5py.File(tmp_path / "predictions.h5") as f:
        preds = f["preds"][()]
    assert preds.shape == (6, 16, 2)
    np.testing.assert_allclose(scipy.io.loadmat(tmp_path / "predictions.mat")["preds"], preds)
    np.testing.assert_allclose(np.load(tmp_path / "predictions.npy") + 1, preds)
    for png in ("pck_curve.png", "presence_pr.png", "examples.png"):
        assert cv2.imread(str(tmp_path / png)) is not None, png


def test_predict_cli_writes_json_and_png_and_reports_bad_inputs(tiny_model_file, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = np.random.default_rng(5).integers(0, 255, (80, 100, 3), dtype=np.uint8)
    cv2.imwrite(str(inputs / "a.jpg"), image)
    cv2.imwrite(str(inputs / "b.png"), image)
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    out = tmp_path / "out"
    result = script("predict.py", f"--model={tiny_model_file}", f"--output_dir={out}", inputs, notes)
    assert result.returncode == 1  # some inputs failed
    assert f"{tiny_model_file} runs on LiteRT" in result.stdout  # a float32 .keras model: its conversion, said
    assert "broken.jpg: not a photo whose header" in result.stdout and "notes.txt: not a photo whose" in result.stdout
    for name in ("in__a", "in__b"):  # named by their path below the inputs' common folder (tmp_path)
        data = json.loads((out / f"{name}.json").read_text())
        (person,) = data["people"]  # noise: the detector finds nobody, the whole image is the person
        assert len(person["keypoints"]) == 16 and person["keypoints"][0]["joint"] == "r_ankle"
        assert cv2.imread(str(out / f"{name}.png")).shape == (80, 100, 3)
    outside = script(
        "predict.py", f"--model={tiny_model_file}", f"--output_dir={out}", "--bbox=500,500,10,10", inputs / "a.jpg"
    )
    assert outside.returncode == 1 and "outside the 100x80 image" in outside.stdout
    assert "through its TFLite conversion cached as" in outside.stdout  # converted once (conftest's cache folder)
    good = script(
        "predict.py",
        f"--model={tiny_model_file}",
        f"--output_dir={out}",
        "--center=50,40",
        "--scale=0.4",
        inputs / "a.jpg",
    )
    assert good.returncode == 0, good.stderr[-2000:]
    # A bad --test_scales: said before TensorFlow loads (benchmarks/reliability.py BAD_FLAGS, test_cli_flags).


def test_predict_cli_on_a_video(tiny_model_file, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    result = script("predict.py", f"--model={tiny_model_file}", f"--output_dir={tmp_path / 'out'}", video)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    data = json.loads((tmp_path / "out" / "clip.json").read_text())
    assert len(data["frames"]) == 3 and all(len(f["people"]) == 1 for f in data["frames"])
    assert data["frames"][0]["people"][0]["track_id"] == 1 and data["detector_runs"] >= 1
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    tf.keras.backend.clear_session()


def test_training_log_is_read_and_plotted_and_bad_logs_are_named(tmp_path):
    from hourglass_tf.data.sample import DataFileError
    from hourglass_tf.evaluation import plot_training_log, read_training_log

    log = tmp_path / "log.csv"
    log.write_text(
        "epoch,loss,val_pck,learning_rate,elapsed_seconds,val_loss\n0,0.02,31.0,0.002,60,NA\n1,0.015,45.0,0.002,121,\n"
    )
    columns = read_training_log(log)
    np.testing.assert_allclose(columns["val_pck"], [31.0, 45.0])
    assert np.isnan(columns["val_loss"]).all()  # CSVLogger's NA and empty cells
    assert plot_training_log(log, tmp_path / "curve.png").stat().st_size > 0
    (tmp_path / "bad.csv").write_text("epoch,loss\n0,abc\n")
    for bad, fragment in ((tmp_path / "bad.csv", "not numeric"), (tmp_path / "none.csv", "none.csv")):
        with pytest.raises(DataFileError, match=fragment):
            read_training_log(bad)


def test_occlusion_analysis_says_when_no_joint_is_marked_occluded():
    # LSPET marks only visible joints as annotated: the occluded set is empty, reported as such without warnings.
    import warnings

    rng = np.random.default_rng(0)
    joints = rng.uniform(20, 80, (5, 14, 2))
    present = np.ones((5, 14), bool)
    present[0, :3] = False
    pred = {
        "keypoints": joints + 1.0,
        "joints": joints,
        "present": present,
        "visible": present.copy(),
        "normalizer": np.full(5, 30.0),
        "heatmap_max": rng.random((5, 14)),
        "heatmap_mean": rng.random((5, 14)),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = evaluation.occlusion_analysis(pred, skeleton.LSP, 0.2)
        errors = evaluation.per_image_error(pred)
    assert out["occluded"] == {"summary": None, "joints": 0}
    assert out["visible"]["joints"] == 67 and out["visible"]["summary"]["Mean"] == 100.0
    np.testing.assert_allclose(errors, np.sqrt(2) / 30.0)
