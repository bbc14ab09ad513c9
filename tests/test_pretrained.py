"""The shipped model: found by name or by default, described, loadable without the package, and predicting."""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from conftest import REPO, TINY
from hourglass_tf import metadata, pretrained, skeleton
from hourglass_tf.model import build_model

LSP_TINY = {**TINY, "num_joints": 14}
MAX_BYTES = 10 * 1024 * 1024


def _ship_tiny(tmp_path):
    """A tiny model shipped as ``lspet`` into tmp_path/models; (folder, checkpoint)."""
    model = build_model(**LSP_TINY)
    checkpoint = tmp_path / "best.keras"
    metadata.save_keras(model, checkpoint, metadata.describe(model, skeleton.LSP, provenance={"dataset": "lspet"}))
    folder = tmp_path / "models"
    figures = {"limb_pck_flip": 12.5}
    pretrained.ship(
        checkpoint,
        "lspet",
        recipe="--dataset=lspet\n",
        figures=figures,
        commit="abc",
        folder=folder,
        training_seconds=100,
    )
    (folder / "lspet.md").write_text("# card\n")
    return folder, checkpoint


def test_names_resolve_to_shipped_files_and_none_to_the_default_said_once(tmp_path, monkeypatch):
    folder, _ = _ship_tiny(tmp_path)
    monkeypatch.setattr(pretrained, "FOLDER", folder)
    said = []
    assert pretrained.resolve(None, said.append) == folder / "lspet.keras"
    assert len(said) == 1 and "lspet" in said[0] and "12.50 limb PCK" in said[0] and "lsp joints (14)" in said[0]
    assert pretrained.resolve("lspet", said.append) == folder / "lspet.keras" and len(said) == 1
    assert pretrained.resolve("runs/x/best.keras") == "runs/x/best.keras"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lspet").mkdir()  # a user's own folder of that name is never shadowed
    assert pretrained.resolve("lspet") == "lspet"
    with pytest.raises(ValueError, match="no shipped model is named 'mpii'.*lspet"):
        pretrained.path("mpii")
    monkeypatch.setattr(pretrained, "FOLDER", tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="missing from this installation"):
        pretrained.path("lspet")


def test_ship_keeps_the_description_and_adds_recipe_commit_and_figures(tmp_path):
    folder, checkpoint = _ship_tiny(tmp_path)
    before = metadata.read_keras_info(checkpoint)
    after = metadata.read_keras_info(folder / "lspet.keras")
    assert after.skeleton == before.skeleton and after.input_size == before.input_size
    shipped = after.provenance["pretrained"]
    assert shipped["recipe"] == "--dataset=lspet\n" and shipped["commit"] == "abc"
    assert shipped["figures"] == {"limb_pck_flip": 12.5} and after.provenance["dataset"] == "lspet"
    with pytest.raises(ValueError, match="not a shipped model's name"):
        pretrained.ship(checkpoint, "coco", recipe="", figures={}, folder=folder)
    assert after.decoding == "quarter"  # the checkpoint's, unless the shipping chooses another
    dark = pretrained.ship(checkpoint, "lspet", recipe="", figures={}, decoding="dark", folder=tmp_path / "dark")
    assert metadata.read_keras_info(dark).decoding == "dark"
    with pytest.raises(ValueError, match="decoding must be one of"):
        pretrained.ship(checkpoint, "lspet", recipe="", figures={}, decoding="soft-argmax", folder=tmp_path / "bad")


def test_a_model_trained_in_stages_from_a_shipped_model_inherits_its_training_time(tmp_path, monkeypatch):
    folder, _ = _ship_tiny(tmp_path)
    monkeypatch.setattr(pretrained, "FOLDER", folder)
    monkeypatch.chdir(tmp_path)
    model = build_model(**LSP_TINY)

    def stage_from(start):
        checkpoint = tmp_path / "stage.keras"
        provenance = {"dataset": "lspet", "config": {"init_weights": start}}
        metadata.save_keras(model, checkpoint, metadata.describe(model, skeleton.LSP, provenance=provenance))
        return checkpoint

    assert pretrained.inherited_training_seconds(stage_from("lspet")) == 100.0
    assert pretrained.inherited_training_seconds(stage_from("runs/stage_2/best.keras")) == 0.0
    assert pretrained.inherited_training_seconds(stage_from(None)) == 0.0
    (tmp_path / "lspet").mkdir()  # a folder of that name is what the run started from, not the shipped model
    assert pretrained.inherited_training_seconds(stage_from("lspet")) == 0.0


def test_init_weights_and_the_predictor_take_a_shipped_name(tmp_path, monkeypatch):
    from hourglass_tf.config import TrainConfig
    from hourglass_tf.inference import Predictor

    folder, _ = _ship_tiny(tmp_path)
    monkeypatch.setattr(pretrained, "FOLDER", folder)
    monkeypatch.chdir(tmp_path)
    TrainConfig(dataset="synthetic", data_dir="d", init_weights="lspet").validate()
    with pytest.raises(ValueError, match="init_weights='nope' is not a file or a shipped model's name"):
        TrainConfig(dataset="synthetic", data_dir="d", init_weights="nope").validate()
    (tmp_path / "lspet").mkdir()  # a user's folder named like the shipped model: resolve would take the folder
    with pytest.raises(ValueError, match="init_weights='lspet' is not a file .*a folder of that name is here"):
        TrainConfig(dataset="synthetic", data_dir="d", init_weights="lspet").validate()
    (tmp_path / "lspet").rmdir()
    said = []
    predictor = Predictor.from_file(None, log=said.append)
    assert predictor.skeleton == skeleton.LSP and said and "no model given" in said[0]


# ---------------------------------------------------------------- the file in the box


def test_the_shipped_file_is_small_described_and_has_a_card():
    path = pretrained.path()
    assert path.stat().st_size <= MAX_BYTES, f"{path} is {path.stat().st_size} bytes"
    info = pretrained.info()
    assert info.skeleton == skeleton.LSP and info.stride == 4 and info.precision in metadata.PRECISIONS
    shipped = info.provenance["pretrained"]
    assert "--dataset=lspet" in shipped["recipe"] and len(shipped["commit"]) == 40
    assert shipped["figures"]["limb_pck_flip"] > 55 and shipped["training_seconds"] > 0
    card = pretrained.card()
    for words in ("LSP Extended", "terms", "fails", f"{shipped['figures']['limb_pck_flip']:.2f}"):
        assert words in card, words


def test_the_shipped_file_loads_with_plain_keras_in_a_program_without_the_package():
    code = (
        "import sys, zipfile, json, numpy as np, tensorflow as tf\n"
        f"m = tf.keras.models.load_model({str(pretrained.path())!r}, compile=False)\n"
        "info = json.loads(zipfile.ZipFile(sys.argv[1]).read('hourglass_tf.json'))\n"
        "size = info['input']['size'][0]\n"
        "out = m(np.zeros((1, size, size, 3), np.float32))\n"
        "assert not any(name.startswith('hourglass_tf') for name in sys.modules), 'the package was imported'\n"
        "last = out[f\"stack_{info['architecture']['num_stacks']}\"]\n"
        "print(json.dumps([info['skeleton']['name'], list(last.shape)]))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", code, str(pretrained.path())], capture_output=True, text=True, env=env, cwd="/"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    name, shape = json.loads(done.stdout.strip().splitlines()[-1])
    size = pretrained.info().input_size[0]
    assert name == "lsp" and shape == [1, size // 4, size // 4, 14]


def test_an_installation_gets_the_model_and_its_card(tmp_path):
    """What ``pip install`` copies: setup.py's build of the package into tmp_path holds the shipped files whole."""
    done = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    built = tmp_path / "hourglass_tf" / "models"
    for name in ("lspet.keras", "lspet.md"):
        assert (built / name).read_bytes() == (pretrained.FOLDER / name).read_bytes(), name
    with zipfile.ZipFile(built / "lspet.keras") as archive:  # a real .keras file, not a pointer to one
        assert metadata.FILENAME in archive.namelist()


# A generated photo of a known pose: a person standing with arms half raised, facing the camera (their right on
# the image's left), drawn in clothes and skin colours on a plain wall. (x, y) in pixels, 0-based, LSP's joints.
STANDING = {
    "r_ankle": (76, 230),
    "r_knee": (78, 182),
    "r_hip": (82, 132),
    "l_hip": (110, 132),
    "l_knee": (114, 182),
    "l_ankle": (116, 230),
    "r_wrist": (40, 138),
    "r_elbow": (52, 102),
    "r_shoulder": (72, 66),
    "l_shoulder": (120, 66),
    "l_elbow": (140, 102),
    "l_wrist": (152, 138),
    "neck": (96, 52),
    "head_top": (96, 22),
}


def standing_person():
    """(256, 192, 3) uint8 RGB picture of ``STANDING``."""
    import cv2

    image = np.full((256, 192, 3), (200, 205, 210), np.uint8)
    at = {name: np.array(xy) for name, xy in STANDING.items()}
    skin, shirt, trousers = (224, 172, 140), (60, 90, 170), (40, 40, 50)

    def limb(a, b, colour, width):
        cv2.line(image, tuple(int(v) for v in at[a]), tuple(int(v) for v in at[b]), colour, width, cv2.LINE_AA)

    for side in "rl":
        limb(f"{side}_hip", f"{side}_knee", trousers, 14)
        limb(f"{side}_knee", f"{side}_ankle", trousers, 14)
    torso = np.array([at["r_hip"], at["l_hip"], at["l_shoulder"], at["r_shoulder"]], np.int32)
    cv2.fillPoly(image, [torso], shirt)
    for side in "rl":
        limb(f"{side}_shoulder", f"{side}_elbow", shirt, 11)
        limb(f"{side}_elbow", f"{side}_wrist", skin, 9)
    cv2.line(image, (96, 62), (96, 52), skin, 10, cv2.LINE_AA)
    cv2.ellipse(image, (96, 37), (12, 16), 0, 0, 360, skin, -1, cv2.LINE_AA)  # face
    cv2.ellipse(image, (96, 26), (12, 7), 0, 180, 360, (50, 30, 20), -1)  # hair
    for side in "rl":
        x, y = at[f"{side}_ankle"]
        cv2.ellipse(image, (int(x), int(y) + 4), (9, 5), 0, 0, 360, (20, 20, 20), -1)  # shoes
    return image


def _within_pck(keypoints, joints, threshold=0.2):
    """Which of ``joints``' (K, 2+) predicted ``keypoints`` lie within ``threshold`` x the torso (LSP's PCK)."""
    truth = np.array([STANDING[name] for name in joints], np.float64)
    torso = np.linalg.norm(truth[joints.index("r_shoulder")] - truth[joints.index("l_hip")])
    return np.linalg.norm(np.asarray(keypoints)[:, :2] - truth, axis=1) <= threshold * torso


def test_the_shipped_model_finds_a_known_pose_in_a_generated_picture():
    from hourglass_tf import people
    from hourglass_tf.inference import Predictor

    said = []
    estimator = people.PoseEstimator(Predictor.from_file(None, log=said.append), people.Boxes([[20, 10, 150, 240]]))
    (person,) = estimator(standing_person())
    hits = _within_pck(person["keypoints"], list(person["joints"]))
    assert hits.all(), dict(zip(person["joints"], hits))
    assert len(said) == 1 and "the shipped model 'lspet'" in said[0]


def test_predict_without_a_model_uses_the_shipped_one_and_says_so(tmp_path):
    import cv2

    photo = tmp_path / "standing.png"
    cv2.imwrite(str(photo), standing_person()[..., ::-1])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "predict.py"), f"--output_dir={out}", str(photo)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    said = [line for line in done.stdout.splitlines() if line.startswith("no model given")]
    assert len(said) == 1 and "'lspet'" in said[0] and str(pretrained.path()) in said[0], done.stdout
    result = json.loads((out / "standing.json").read_text())
    best = result["people"][0]  # the detector's best box (or the whole picture when it finds nobody)
    keypoints = [(k["x"], k["y"]) for k in best["keypoints"]]
    assert _within_pck(keypoints, [k["joint"] for k in best["keypoints"]]).sum() >= 12, best


def test_export_takes_the_shipped_model_by_name(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "export.py"),
            "--model=lspet",
            f"--output={tmp_path / 'lspet'}",
            "--formats=keras",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    exported = metadata.read_keras_info(tmp_path / "lspet" / "model.keras")
    assert exported.provenance["pretrained"] == pretrained.info().provenance["pretrained"]
