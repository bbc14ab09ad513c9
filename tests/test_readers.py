"""Dataset readers on files the tests generate, and on the real ../shared files when present."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import scipy.io

from hourglass_tf import skeleton
from hourglass_tf.data import readers, sources
from hourglass_tf.data.sample import DataFileError, PoseSample, sides_disagree

# ---------------------------------------------------------------- generated files


def write_annot_h5(path, parts, names, k=16):
    with h5py.File(path, "w") as f:
        f["imgname"] = np.array([n.encode() for n in names])
        f["part"] = parts
        f["center"] = np.tile([[50.0, 60.0]], (len(parts), 1))
        f["scale"] = np.full(len(parts), 1.5)
        f["visible"] = np.ones((len(parts), k))
        f["normalize"] = np.full(len(parts), 30.0)


def test_annot_h5_converts_one_based_and_marks_zero_joints_missing(tmp_path):
    parts = np.full((2, 16, 2), 10.0)
    parts[0, 3] = [21.0, 31.0]
    parts[1, 5] = 0.0
    write_annot_h5(tmp_path / "valid.h5", parts, ["a.jpg", "b.jpg"])
    samples = readers.read_annot_h5(tmp_path / "valid.h5", skeleton.MPII, "mpii")
    assert len(samples) == 2
    np.testing.assert_allclose(samples[0].joints[3], [20.0, 30.0])
    np.testing.assert_allclose(samples[0].center, [49.0, 59.0])
    assert samples[0].image_path == "images/a.jpg"
    assert samples[1].present.sum() == 15 and not samples[1].present[5]
    assert samples[0].normalizer == 30.0 and samples[0].scale == 1.5


def test_annot_h5_layout_errors_name_the_file(tmp_path):
    write_annot_h5(tmp_path / "bad.h5", np.zeros((2, 14, 2)), ["a.jpg", "b.jpg"], k=14)
    with pytest.raises(DataFileError, match=r"bad\.h5.*\(N, 16, 2\).*\(2, 14, 2\)"):
        readers.read_annot_h5(tmp_path / "bad.h5", skeleton.MPII, "mpii")
    with h5py.File(tmp_path / "short.h5", "w") as f:
        f["imgname"] = np.array([b"a.jpg"])
        f["part"] = np.zeros((2, 16, 2))
        f["center"] = np.zeros((2, 2))
        f["scale"] = np.ones(2)
    with pytest.raises(DataFileError, match=r"short\.h5.*'imgname' has 1 rows but 'part' has 2"):
        readers.read_annot_h5(tmp_path / "short.h5", skeleton.MPII, "mpii")
    with pytest.raises(DataFileError, match=r"missing\.h5: file not found"):
        readers.read_annot_h5(tmp_path / "missing.h5", skeleton.MPII, "mpii")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DataFileError, match=r"text\.h5: not a readable HDF5"):
        readers.read_annot_h5(tmp_path / "text.h5", skeleton.MPII, "mpii")


def test_mpii_json_is_one_based_and_gets_the_centre_adjustment(tmp_path):
    joints = [[11.0, 21.0]] * 16
    row = {"image": "x.jpg", "center": [101.0, 201.0], "scale": 2.0, "joints": joints, "joints_vis": [1] * 15 + [0]}
    (tmp_path / "a.json").write_text(json.dumps([row]))
    (sample,) = readers.read_mpii_json(tmp_path / "a.json")
    np.testing.assert_allclose(sample.joints[0], [10.0, 20.0])
    np.testing.assert_allclose(sample.center, [100.0, 200.0 + 15 * 2.0])
    assert sample.scale == pytest.approx(2.5)
    assert not sample.present[15] and np.isnan(sample.normalizer)
    (tmp_path / "b.json").write_text(json.dumps([{"image": "x.jpg"}]))
    with pytest.raises(DataFileError, match=r"b\.json: person 0 lacks key"):
        readers.read_mpii_json(tmp_path / "b.json")


def _mpii_mat(path, names, train_flags):
    def point(j, x, y, vis):
        return {"id": j, "x": x, "y": y, "is_visible": vis}

    annolist = np.empty(len(names), dtype=object)
    for i, name in enumerate(names):
        rect = {
            "x1": 10.0,
            "y1": 10.0,
            "x2": 40.0,
            "y2": 50.0,
            "scale": 2.0,
            "objpos": {"x": 101.0, "y": 151.0},
            "annopoints": {"point": np.array([point(0, 11.0, 21.0, 1), point(9, 31.0, 41.0, "0")], dtype=object)},
        }
        annolist[i] = {"image": {"name": name}, "annorect": np.array([rect], dtype=object)}
    scipy.io.savemat(path, {"RELEASE": {"annolist": annolist, "img_train": np.array(train_flags)}})


def test_mpii_official_mat_reader(tmp_path):
    _mpii_mat(tmp_path / "m.mat", ["a.jpg", "b.jpg", "c.jpg"], [1, 1, 0])
    (tmp_path / "valid_images.txt").write_text("b.jpg\n")
    train = readers.read_mpii_mat(tmp_path / "m.mat", "train", tmp_path / "valid_images.txt")
    valid = readers.read_mpii_mat(tmp_path / "m.mat", "valid", tmp_path / "valid_images.txt")
    assert [s.image_path for s in train] == ["images/a.jpg"]
    assert [s.image_path for s in valid] == ["images/b.jpg"]
    s = train[0]
    np.testing.assert_allclose(s.joints[0], [10.0, 20.0])
    np.testing.assert_allclose(s.joints[9], [30.0, 40.0])
    assert s.present.sum() == 2 and s.visible[0] and not s.visible[9]
    np.testing.assert_allclose(s.center, [100.0, 150.0 + 30.0])
    assert s.scale == pytest.approx(2.5)
    assert s.normalizer == pytest.approx(0.6 * np.hypot(30, 40))
    scipy.io.savemat(tmp_path / "wrong.mat", {"annolist": np.zeros(3)})
    with pytest.raises(DataFileError, match=r"wrong\.mat: expected the variable 'RELEASE'"):
        readers.read_mpii_mat(tmp_path / "wrong.mat", "all")


@pytest.mark.parametrize("layout", ["lspet", "lsp"])
def test_lsp_layouts(tmp_path, layout):
    rng = np.random.default_rng(0)
    xy = rng.uniform(20, 80, (4, 14, 2))
    flag = np.ones((4, 14))
    flag[1, 2] = 0
    (tmp_path / "images").mkdir()
    if layout == "lspet":  # 14x3xN, 1 = visible, 0 = missing
        joints = np.concatenate([xy, flag[..., None]], axis=2).transpose(1, 2, 0)
        (tmp_path / "images" / "im00001.jpg").write_bytes(b"")
    else:  # 3x14xN, 0 = visible, occluded keep coordinates
        joints = np.concatenate([xy, 1 - flag[..., None]], axis=2).transpose(2, 1, 0)
        (tmp_path / "images" / "im0001.jpg").write_bytes(b"")
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": joints})
    samples = readers.read_lsp(tmp_path)
    assert len(samples) == 4
    np.testing.assert_allclose(samples[0].joints, xy[0], rtol=1e-6)
    assert samples[3].image_path == ("images/im00004.jpg" if layout == "lspet" else "images/im0004.jpg")
    if layout == "lspet":
        assert not samples[1].present[2]
    else:
        assert samples[1].present[2] and not samples[1].visible[2]
    lo, hi = xy[0].min(0), xy[0].max(0)
    np.testing.assert_allclose(samples[0].center, (lo + hi) / 2, rtol=1e-5)
    assert samples[0].scale == pytest.approx(max(1.25 * np.max(hi - lo), 32) / 200)
    r_sho, l_hip = skeleton.LSP.index("r_shoulder"), skeleton.LSP.index("l_hip")
    assert samples[0].normalizer == pytest.approx(np.linalg.norm(xy[0, r_sho] - xy[0, l_hip]))
    train = readers.load_dataset(layout, tmp_path, "train")
    valid = readers.load_dataset(layout, tmp_path, "valid")
    assert len(train) + len(valid) == 4 and train[-1].sample_id != valid[0].sample_id


def test_lsp_wrong_layout_names_file_and_shape(tmp_path):
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": np.zeros((2, 14, 5))})
    with pytest.raises(DataFileError, match=r"joints\.mat: 'joints' must be 14x3xN .* found 2x14x5"):
        readers.read_lsp(tmp_path)
    scipy.io.savemat(tmp_path / "joints.mat", {"points": np.zeros((14, 3, 5))})
    with pytest.raises(DataFileError, match="expected the variable 'joints'"):
        readers.read_lsp(tmp_path)


def test_flic_examples_mat(tmp_path):
    coords = np.full((2, 29), np.nan)
    for slot in readers.FLIC_SLOTS:
        coords[:, slot] = [slot + 11.0, slot + 21.0]
    examples = np.array(
        [
            {"coords": coords, "filepath": "f1.jpg", "istrain": 1, "istest": 0},
            {"coords": coords, "filepath": "f2.jpg", "istrain": 0, "istest": 1},
        ],
        dtype=object,
    )
    scipy.io.savemat(tmp_path / "examples.mat", {"examples": examples})
    train = readers.read_flic_mat(tmp_path / "examples.mat", "train")
    valid = readers.read_flic_mat(tmp_path / "examples.mat", "valid")
    assert [s.image_path for s in train] == ["images/f1.jpg"] and [s.image_path for s in valid] == ["images/f2.jpg"]
    np.testing.assert_allclose(train[0].joints[7], [9 + 10.0, 9 + 20.0])  # r_hip is slot 10 (1-based)
    assert train[0].present.all() and np.isfinite(train[0].normalizer)


def test_coco_rule_skips_crowd_sparse_and_tiny_people(tmp_path):
    kp_full = [v for j in range(17) for v in (10.0 + j, 20.0 + j, 2)]
    kp_sparse = [v for j in range(17) for v in ((10.0, 20.0, 1) if j < 4 else (0, 0, 0))]
    anns = [
        {"id": 1, "image_id": 7, "iscrowd": 0, "category_id": 1, "bbox": [0, 0, 60, 100], "keypoints": kp_full},
        {"id": 2, "image_id": 7, "iscrowd": 1, "category_id": 1, "bbox": [0, 0, 60, 100], "keypoints": kp_full},
        {"id": 3, "image_id": 7, "iscrowd": 0, "category_id": 1, "bbox": [0, 0, 60, 100], "keypoints": kp_sparse},
        {"id": 4, "image_id": 7, "iscrowd": 0, "category_id": 1, "bbox": [0, 0, 20, 30], "keypoints": kp_full},
    ]
    (tmp_path / "k.json").write_text(json.dumps({"images": [{"id": 7, "file_name": "i.jpg"}], "annotations": anns}))
    (sample,) = readers.read_coco(tmp_path / "k.json", "val2017")
    assert sample.sample_id == "coco-1" and sample.image_path == "val2017/i.jpg"
    np.testing.assert_allclose(sample.center, [30, 50])
    assert sample.scale == pytest.approx(1.25 * 100 / 200)
    np.testing.assert_allclose(sample.joints[5], [15.0, 25.0])


def test_load_dataset_refuses_unknown_names_and_missing_folders(tmp_path):
    with pytest.raises(ValueError, match="'h36m'"):
        readers.load_dataset("h36m", tmp_path, "train")
    with pytest.raises(ValueError, match="split='test'"):
        readers.load_dataset("mpii", tmp_path, "test")
    with pytest.raises(DataFileError, match="nowhere: dataset folder not found"):
        readers.load_dataset("mpii", tmp_path / "nowhere", "train")
    with pytest.raises(DataFileError, match="no MPII annotations"):
        readers.load_dataset("mpii", tmp_path, "train")


# ---------------------------------------------------------------- real files in ../shared


def test_lspet_real_count_and_split(shared_data):
    train = readers.load_dataset("lspet", shared_data / "lspet", "train")
    valid = readers.load_dataset("lspet", shared_data / "lspet", "valid")
    assert (len(train), len(valid)) == (8000, 1000)
    assert train[0].image_path == "images/im00001.jpg" and valid[0].image_path == "images/im08001.jpg"
    assert (shared_data / "lspet" / valid[-1].image_path).is_file()
    # visible=0 joints are missing (their coordinates are meaningless).
    raw = scipy.io.loadmat(shared_data / "lspet" / "joints.mat")["joints"]
    np.testing.assert_array_equal(train[0].present, raw[:, 2, 0] > 0)


def test_mpii_valid_h5_real(shared_data):
    samples = readers.load_dataset("mpii", shared_data / "mpii", "valid")
    assert len(samples) == 2958
    with h5py.File(shared_data / "mpii" / "annot" / "valid.h5") as f:
        part = f["part"][()]
    present = samples[0].present
    np.testing.assert_allclose(samples[0].joints[present], part[0][present] - 1.0)


def test_the_five_shared_mpii_images_join_rows_0_to_4_of_valid_h5(shared_data):
    h5_samples = readers.load_dataset("mpii", shared_data / "mpii", "valid")[:5]
    json_samples = readers.read_mpii_json(shared_data / "mpii" / "images" / "test_mpii.json", image_prefix="")
    assert [s.image_path for s in json_samples] == [s.image_path.split("/")[-1] for s in h5_samples]
    for js, hs in zip(json_samples, h5_samples):
        assert (shared_data / "mpii" / "images" / js.image_path).is_file()
        np.testing.assert_allclose(js.center, hs.center, atol=1e-3)
        assert js.scale == pytest.approx(hs.scale, rel=1e-5)
        # The h5 stores integer pixels; the JSON keeps MPII's fractional neck and head top.
        np.testing.assert_allclose(js.joints[hs.present], hs.joints[hs.present], atol=1.0)


def test_coco_mini_real(shared_data):
    train = readers.load_dataset("coco", shared_data / "coco_mini", "train")
    valid = readers.load_dataset("coco", shared_data / "coco_mini", "valid")
    assert len(train) > 0 and len(valid) > 0
    for s in train + valid:
        assert (shared_data / "coco_mini" / s.image_path).is_file()
        assert s.present.sum() >= readers.COCO_MIN_KEYPOINTS


def test_flic_annotations_real(shared_data):
    train = readers.load_dataset("flic", shared_data / "flic", "train")
    valid = readers.load_dataset("flic", shared_data / "flic", "valid")
    assert (len(train), len(valid)) == (3987, 1016)
    assert valid[0].num_joints == 11 and valid[0].normalizer == pytest.approx(162.539, abs=1e-3)


# ---------------------------------------------------------------- left/right consistency


def _person(skel, points):
    """A PoseSample of ``skel`` with the named joints at ``points`` {name: (x, y)}; the rest missing."""
    joints = np.zeros((skel.num_joints, 2), np.float32)
    present = np.zeros(skel.num_joints, bool)
    for name, xy in points.items():
        joints[skel.index(name)] = xy
        present[skel.index(name)] = True
    return PoseSample("images/a.jpg", joints, present, present, (50, 50), 1.0, 30.0, "p", skel.name)


# A person facing the camera: their right side on the image's left.
_FRONT = {"r_shoulder": (40, 20), "l_shoulder": (60, 20), "r_hip": (43, 60), "l_hip": (57, 60)}


def _rotate(points, degrees):
    angle = np.deg2rad(degrees)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return {name: tuple(rot @ (np.array(xy) - 50) + 50) for name, xy in points.items()}


def test_sides_disagree_flags_one_pair_labelled_the_other_way():
    lsp = skeleton.LSP
    assert not sides_disagree(_person(lsp, _FRONT), lsp)
    swapped_hips = {**_FRONT, "r_hip": _FRONT["l_hip"], "l_hip": _FRONT["r_hip"]}
    assert sides_disagree(_person(lsp, swapped_hips), lsp)
    # Seen from the back (both pairs mirrored) is consistent; so is a body lying on its side or upside down.
    back = {name: (100 - x, y) for name, (x, y) in _FRONT.items()}
    assert not sides_disagree(_person(lsp, back), lsp)
    for degrees in (90, 180, 250):
        assert not sides_disagree(_person(lsp, _rotate(_FRONT, degrees)), lsp)
        assert sides_disagree(_person(lsp, _rotate(swapped_hips, degrees)), lsp)
    # A missing hip leaves nothing to compare.
    one_hip = {k: v for k, v in swapped_hips.items() if k != "l_hip"}
    assert not sides_disagree(_person(lsp, one_hip), lsp)
    # Every skeleton with left/right shoulders and hips, whichever prefix it uses.
    for skel in (skeleton.MPII, skeleton.FLIC):
        assert sides_disagree(_person(skel, swapped_hips), skel)
    coco = {name.replace("r_", "right_").replace("l_", "left_"): xy for name, xy in swapped_hips.items()}
    assert sides_disagree(_person(skeleton.COCO, coco), skeleton.COCO)
    with pytest.raises(ValueError, match="has 14 joints, the mpii skeleton 16"):
        sides_disagree(_person(lsp, swapped_hips), skeleton.MPII)


def test_load_source_drops_side_conflicts_from_raw_files_only(tmp_path):
    import cv2

    (tmp_path / "images").mkdir()
    xy = np.tile(np.array([[50.0, 50.0]]), (4, 14, 1)) + np.arange(14)[None, :, None]  # distinct joints
    lsp = skeleton.LSP
    for n in range(4):
        for name, point in _FRONT.items():
            xy[n, lsp.index(name)] = point
        cv2.imwrite(str(tmp_path / "images" / f"im{n + 1:05d}.jpg"), np.full((100, 100, 3), 120, np.uint8))
    xy[1, [lsp.index("r_hip"), lsp.index("l_hip")]] = xy[1, [lsp.index("l_hip"), lsp.index("r_hip")]]
    joints = np.concatenate([xy, np.ones((4, 14, 1))], axis=2).transpose(1, 2, 0)  # 14x3xN
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": joints})

    _, _, report, count = sources.load_source("lspet", "train", tmp_path)  # 4 < 8,001 people: the first 2 train
    assert (count, report.total_skipped) == (2, 0)
    _, _, report, count = sources.load_source("lspet", "train", tmp_path, drop_side_conflicts=True)
    assert count == report.kept == 1
    assert report.skipped[sources.SIDE_CONFLICT] == 1 and report.examples[sources.SIDE_CONFLICT] == ["lspet-2"]
    with pytest.raises(ValueError, match="drop_side_conflicts needs the raw annotations"):
        sources.load_source("lspet", "train", tfrecord_dir=tmp_path, drop_side_conflicts=True)


def test_the_dataset_readers_and_the_box_rule_load_without_tensorflow():
    """Reading annotations (and writing the generated example sets) needs no TensorFlow: ``make_quadrupeds.py``
    starts in a fraction of a second, and the box rule the readers apply is ``boxes.box_rule``, the one the graphs
    run (test_evaluation checks both give the same bits)."""
    modules = ["hourglass_tf.boxes", *(f"hourglass_tf.data.{m}" for m in ("readers", "coco_keypoints", "synthetic"))]
    modules.append("hourglass_tf.data.quadrupeds")
    code = f"import sys; import {', '.join(modules)}; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False"]
