"""A .keras model on LiteRT: one checked conversion, cached by content, said; TensorFlow when it cannot be had."""

import os
import pathlib

import numpy as np
import pytest

from conftest import TINY, random_batch_norm_statistics
from hourglass_tf import backends, conversion, litert_cache, metadata, people, skeleton
from hourglass_tf.inference import Predictor
from hourglass_tf.metadata import describe, save_keras
from hourglass_tf.model import build_model, conv_flops

SMALL = {**TINY, "num_stacks": 1, "depth": 1, "filters": 8}  # conversions take seconds a layer


def tiny_file(path, seed):
    model = build_model(**SMALL)
    random_batch_norm_statistics(model, seed=seed)  # folded into the convolutions: forgetting it would show
    save_keras(model, path, describe(model, skeleton.MPII))
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(litert_cache.ENVIRONMENT, str(folder))
    return folder / "litert"


@pytest.fixture
def conversions(monkeypatch):
    """Counts the TFLite conversions the package makes."""
    made = []
    convert = conversion.tflite_flatbuffer

    def counted(*args, **kwargs):
        made.append(args[0])
        return convert(*args, **kwargs)

    monkeypatch.setattr(conversion, "tflite_flatbuffer", counted)
    return made


def crops(seed=3, n=2):
    return np.random.default_rng(seed).random((n, TINY["input_size"], TINY["input_size"], 3), np.float32)


def test_the_cache_folder_follows_the_environment():
    assert litert_cache.cache_folder({"HOURGLASS_TF_CACHE": "/c", "XDG_CACHE_HOME": "/x"}) == (
        litert_cache.pathlib.Path("/c/litert")
    )
    assert str(litert_cache.cache_folder({"XDG_CACHE_HOME": "/x"})) == "/x/hourglass_tf/litert"
    assert str(litert_cache.cache_folder({"HOME": "/h"})).endswith(".cache/hourglass_tf/litert")


def test_auto_runs_a_keras_model_on_litert_through_one_checked_conversion(tmp_path, cache, conversions, monkeypatch):
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    path = tiny_file(model_dir / "pose.keras", seed=0)
    said = []
    on_litert = Predictor.from_file(path, runtime="auto", log=said.append)
    on_tensorflow = Predictor.from_file(path)
    assert (on_litert.runtime, on_tensorflow.runtime) == ("litert", "tensorflow")
    assert on_litert.precision == "float32" and on_litert.skeleton == skeleton.MPII  # the description: the file's
    entry = litert_cache.entry(path)
    assert sorted(cache.iterdir()) == [entry.with_suffix(".json"), entry]  # the checked file, its FLOPs; nothing else
    assert litert_cache.remembered_flops(entry) == conv_flops(build_model(**SMALL)) > 0
    assert len(said) == 1 and f"{path} runs on LiteRT: converted to TFLite once" in said[0] and str(entry) in said[0]
    assert sorted(p.name for p in model_dir.iterdir()) == ["pose.keras"]  # nothing written beside the user's model
    a, b = on_litert.predict_crops(crops()), on_tensorflow.predict_crops(crops())
    np.testing.assert_allclose(a["heatmaps"], b["heatmaps"], atol=1e-4 * np.abs(b["heatmaps"]).max())
    np.testing.assert_allclose(a["keypoints"], b["keypoints"], atol=1e-3)

    said.clear()
    again = Predictor.from_file(path, runtime="auto", log=said.append)
    assert again.runtime == "litert" and len(conversions) == 1  # the cached file, not a second conversion
    assert said == [f"{path} runs on LiteRT, through its TFLite conversion cached as {entry}"]

    weighed = []  # the precision's choice weighs the remembered FLOPs: the cached run does not load the model

    def choose(requested, path, info=None, flags=None, flops=None):  # a CPU and model where bfloat16 may pay
        weighed.append(flops)
        return "bfloat16" if flops is None else "float32"

    with monkeypatch.context() as patch:
        patch.setattr(backends, "choose_precision", choose)
        patch.setattr(metadata, "load_keras_model", None)
        assert Predictor.from_file(path, runtime="auto", precision="auto", log=said.append).runtime == "litert"
    assert weighed == [None, litert_cache.remembered_flops(entry)]

    tiny_file(path, seed=1)  # the same name, other weights: a new entry, never the stale one
    changed = Predictor.from_file(path, runtime="litert", log=said.append)
    assert len(conversions) == 2 and len(list(cache.glob("*.tflite"))) == 2
    expected = Predictor.from_file(path).predict_crops(crops())["heatmaps"]
    np.testing.assert_allclose(changed.predict_crops(crops())["heatmaps"], expected, atol=1e-4 * np.abs(expected).max())
    assert np.abs(expected - b["heatmaps"]).max() > 0.1 * np.abs(expected).max()  # the two models differ clearly


def test_without_a_good_conversion_auto_runs_tensorflow_and_litert_is_an_error(tmp_path, cache, monkeypatch):
    path = tiny_file(tmp_path / "pose.keras", seed=0)
    other = build_model(**{**SMALL, "num_stacks": 2})  # same input and heatmaps, other weights: a wrong conversion
    wrong = conversion.tflite_flatbuffer(other, tmp_path)

    def failing(*args, **kwargs):
        raise ValueError("the converter cannot lower this op")

    for converter, cause in (
        (failing, "the converter cannot lower this op"),
        (lambda *a, **k: wrong, "disagrees"),
        (lambda *a, **k: b"not a flatbuffer", "LiteRT cannot run the converted model"),
    ):
        monkeypatch.setattr(conversion, "tflite_flatbuffer", converter)
        said = []
        predictor = Predictor.from_file(path, runtime="auto", log=said.append)
        assert predictor.runtime == "tensorflow"
        assert len(said) == 1 and said[0].startswith(f"{path} runs on TensorFlow: its LiteRT conversion failed")
        assert cause in said[0]
        with pytest.raises(ValueError, match=f"{path}: cannot run on LiteRT: .*{cause}"):
            Predictor.from_file(path, runtime="litert", log=said.append)
        assert list(cache.iterdir()) == []  # nothing cached, no temporary left

    blocked = tmp_path / "not_a_folder"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv(litert_cache.ENVIRONMENT, str(blocked))
    said = []
    assert Predictor.from_file(path, runtime="auto", log=said.append).runtime == "tensorflow"
    assert "its LiteRT conversion failed" in said[0] and blocked.read_text().startswith("a file")


def test_which_runtime_each_choice_gives(tmp_path, cache, conversions, monkeypatch):
    path = tiny_file(tmp_path / "pose.keras", seed=0)
    monkeypatch.setattr(backends, "choose_precision", lambda requested, *a, **k: requested)  # bfloat16 allowed here
    said = []
    in_bfloat16 = Predictor.from_file(path, runtime="auto", precision="bfloat16", log=said.append)
    assert (in_bfloat16.runtime, in_bfloat16.precision, conversions, said) == ("tensorflow", "bfloat16", [], [])
    with pytest.raises(ValueError, match="LiteRT runs the model in float32; bfloat16 runs on TensorFlow"):
        Predictor.from_file(path, runtime="litert", precision="bfloat16")
    with pytest.raises(ValueError, match="runtime must be one of"):
        Predictor.from_file(path, runtime="tflite")
    estimator = people.PoseEstimator.from_file(path, people.Boxes([[4, 4, 40, 50]]), runtime="litert")
    assert estimator.predictor.runtime == "litert" and len(conversions) == 1  # what predict.py builds
    tflite = tmp_path / "pose.tflite"
    tflite.write_bytes(litert_cache.entry(path).read_bytes())
    assert Predictor.from_file(tflite, skeleton="mpii", runtime="auto").runtime == "litert"
    with pytest.raises(ValueError, match="runs on litert; runtime='tensorflow' is a choice for a .keras model"):
        Predictor.from_file(tflite, skeleton="mpii", runtime="tensorflow")


def test_an_export_folder_runs_its_float32_tflite_unless_its_saved_model_computes_in_bfloat16(tmp_path):
    from hourglass_tf.backends import _exported_tflite

    (tmp_path / "model.tflite").write_bytes(b"the exported float32 network")
    assert [_exported_tflite(tmp_path, runtime) for runtime in (None, "tensorflow")] == [None, None]
    for precision, auto in (("float32", tmp_path / "model.tflite"), ("bfloat16", None)):
        (tmp_path / "hourglass_tf.json").write_text(f'{{"export": {{"precision": "{precision}"}}}}')
        assert _exported_tflite(tmp_path, "auto") == auto
        assert _exported_tflite(tmp_path, "litert") == tmp_path / "model.tflite"
    (tmp_path / "model.tflite").unlink()
    assert _exported_tflite(tmp_path, "litert") is None


def test_the_cache_keeps_the_entries_used_last_and_nothing_else_is_touched(tmp_path):
    names = [f"m{i}-{i:020d}-tf2.21.0-c1.tflite" for i in range(litert_cache.KEEP + 3)]
    for age, name in enumerate(names):  # names[0] used last
        for path in (tmp_path / name, (tmp_path / name).with_suffix(".json")):
            path.write_text("x")
            os.utime(path, (1e9 - age, 1e9 - age))
    litert_cache.used(tmp_path / names[-1])  # the oldest, used now
    (tmp_path / "notes.txt").write_text("the user's")
    removed = litert_cache.prune(tmp_path)
    assert sorted(p.name for p in removed) == sorted(names[litert_cache.KEEP - 1 : -1])
    kept = sorted(p.name for p in tmp_path.glob("*.tflite"))
    assert kept == sorted([*names[: litert_cache.KEEP - 1], names[-1]])
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == sorted(pathlib.Path(n).stem for n in kept)
    assert (tmp_path / "notes.txt").read_text() == "the user's"
