"""The model description travels with every saved model and export; mixed-precision models export to every format."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, TINY
from hourglass_tf import metadata, serving, skeleton
from hourglass_tf.backends import load_model_file
from hourglass_tf.export import ExportError, export_model
from hourglass_tf.inference import Predictor
from hourglass_tf.model import build_model, float32_copy
from hourglass_tf.train import compile_for_training

LSP_TINY = {**TINY, "num_joints": 14}
# A 16-joint set that is not MPII: a joint count names no skeleton.
HAND16 = skeleton.Skeleton(
    "hand16", tuple(f"{side}_finger{i}" for side in ("left", "right") for i in range(8)), ((0, 1), (8, 9))
)


def _saved(tmp_path, kwargs, skel, name="m.keras"):
    model = build_model(**kwargs)
    path = tmp_path / name
    metadata.save_keras(model, path, metadata.describe(model, skel, provenance={"dataset": "test"}))
    return model, path


def test_description_round_trips_and_refuses_bad_files(tmp_path):
    model, path = _saved(tmp_path, TINY, skeleton.MPII)
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any new file, not mkstemp's 0600
    info = metadata.read_keras_info(path)
    assert info.skeleton == skeleton.MPII and info.input_size == (64, 64) and info.stride == 4
    assert info.architecture == {"num_stacks": 2, "num_blocks": 1, "filters": 16, "depth": 2, "variant": "hg.lua"}
    assert metadata.ModelInfo.from_json(info.to_json()) == info
    assert HAND16.flip_pairs == tuple((i, i + 8) for i in range(8))
    assert skeleton.Skeleton.from_dict(HAND16.to_dict()) == HAND16
    with pytest.raises(metadata.MetadataError, match="format_version"):
        metadata.ModelInfo.from_dict({**info.to_dict(), "format_version": 99}, "x.json")
    with pytest.raises(metadata.MetadataError, match="x.json: .*missing"):
        metadata.ModelInfo.from_dict({"format_version": 1}, "x.json")
    (tmp_path / "broken.keras").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(metadata.MetadataError, match="broken.keras"):
        metadata.read_keras_info(tmp_path / "broken.keras")
    with pytest.raises(ValueError, match="joint indices"):
        skeleton.Skeleton("bad", ("a", "b"), ((0, 2),))


def test_a_keras_file_with_its_description_loads_without_the_package(tmp_path):
    model, path = _saved(tmp_path, TINY, skeleton.MPII)
    assert metadata.FILENAME in zipfile.ZipFile(path).namelist()
    x = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys, numpy as np, tensorflow as tf; m = tf.keras.models.load_model(sys.argv[1]); "
        "np.save(sys.argv[2], m(np.load(sys.argv[3]))['stack_2']); "
        "assert not [k for k in sys.modules if k.startswith('hourglass_tf')]"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp_path / "y.npy"), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model(x)["stack_2"], atol=1e-6)


def test_prediction_takes_the_joint_names_from_the_model_not_the_joint_count(tmp_path):
    _, hand = _saved(tmp_path, TINY, HAND16, "hand.keras")
    _, lsp = _saved(tmp_path, LSP_TINY, skeleton.LSP, "lsp.keras")
    assert Predictor.from_file(hand).skeleton == HAND16  # 16 joints, not MPII
    assert Predictor.from_file(lsp).skeleton == skeleton.LSP
    with pytest.raises(metadata.MetadataError, match="own skeleton is 'hand16'"):
        Predictor.from_file(hand, skeleton="mpii")
    plain = tmp_path / "plain.keras"
    build_model(**TINY).save(plain)
    with pytest.raises(metadata.MetadataError, match="plain.keras: .*no hourglass_tf description.*--skeleton"):
        Predictor.from_file(plain)
    assert Predictor.from_file(plain, skeleton="mpii").skeleton == skeleton.MPII
    with pytest.raises(metadata.MetadataError, match="16 heatmap channels but its skeleton 'lsp' has 14"):
        Predictor.from_file(plain, skeleton="lsp")


@pytest.fixture(scope="module")
def lsp_saved_model(tmp_path_factory):
    """A tiny LSP-joint model saved with its description, exported from its file to a SavedModel (read, not
    changed, by the tests)."""
    root = tmp_path_factory.mktemp("lsp")
    _, path = _saved(root, LSP_TINY, skeleton.LSP)
    return export_model(path, root / "exported", formats=("saved_model",))["saved_model"]


def test_an_exported_and_served_model_names_its_joints_without_a_flag(lsp_saved_model, tmp_path):
    """An LSP model's SavedModel, exported from its file: the loader, the served ``metadata`` signature and the folder
    copied elsewhere alone know the joint set. (Every format of an MPII model: test_export's
    ``test_every_exported_format_names_its_joints_without_a_flag``.)"""
    assert load_model_file(lsp_saved_model)[1].skeleton == skeleton.LSP
    assert load_model_file(lsp_saved_model.parent.parent)[1].skeleton == skeleton.LSP  # the exported folder
    payload = json.loads(json.dumps(serving.metadata_request()))  # what goes over the wire
    reply = serving.parse_response(json.dumps(serving.serve_in_process(lsp_saved_model, payload)))
    assert serving.description(reply)["skeleton"]["joints"] == list(skeleton.LSP.joints)
    # The folder copied elsewhere alone still knows itself (nothing is read from beside it; a copy, so the module's
    # other test reads the export where it was written).
    alone = tmp_path / "elsewhere" / "sm"
    shutil.copytree(lsp_saved_model, alone)
    assert load_model_file(alone)[1].skeleton == skeleton.LSP


def test_the_serving_client_prints_the_served_joint_names(lsp_saved_model, tmp_path, monkeypatch):
    saved_model = lsp_saved_model
    image = np.random.default_rng(1).integers(0, 256, (80, 90, 3), dtype=np.uint8)
    (tmp_path / "a.png").write_bytes(tf.io.encode_png(image).numpy())
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import serving_client
    finally:
        sys.path.pop(0)
    monkeypatch.setattr(
        serving,
        "predict_rest",
        lambda server, name, payload: serving.parse_response(serving.serve_in_process(saved_model, payload)),
    )
    from absl import flags

    flags.FLAGS(["serving_client", f"--image={tmp_path / 'a.png'}", "--box=5,5,60,70", "--box=20,10,50,60"])
    printed = []
    monkeypatch.setattr("builtins.print", lambda text, **kw: printed.append(text))
    assert serving_client.main(["serving_client"]) == 0
    people = json.loads(printed[-1])
    assert [p["box"] for p in people] == [[5, 5, 60, 70], [20, 10, 50, 60]]
    assert all([row["joint"] for row in p["keypoints"]] == list(skeleton.LSP.joints) for p in people)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["serving_client", f"--image={tmp_path / 'a.png'}"])  # no box: the whole photo is one person
    assert serving_client.main(["serving_client"]) == 0 and len(json.loads(printed[-1])) == 1


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_mixed_precision_model_exports_float32_keras_and_tflite_files(tmp_path, policy):
    keras.utils.set_random_seed(5)
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model(**{**LSP_TINY, "num_stacks": 1})  # the policy, not the stack count, is what is tested
        compile_for_training(model, keras.optimizers.Adam(1e-3))  # traced once, as train() does
        rng = np.random.default_rng(5)
        x = rng.random((4, 64, 64, 3), dtype=np.float32)
        y = {"stack_1": rng.random((4, 16, 16, 14), dtype=np.float32)}
        for _ in range(3):
            model.train_on_batch(x, y)
        info = metadata.describe(model, skeleton.LSP, precision=policy)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("stem_conv").compute_dtype != "float32"
    reference = float32_copy(model)
    assert {layer.compute_dtype for layer in reference.layers} == {"float32"}
    for a, b in zip(reference.get_weights(), model.get_weights()):  # the trained weights, unchanged
        np.testing.assert_array_equal(a, b)
    crops = (rng.integers(0, 256, (3, 64, 64, 3)) / 255.0).astype(np.float32)
    expected = reference(crops)["stack_1"].numpy()
    paths = {}
    # The .keras file and TFLite (what once exported from a mixed-precision model only in name) from either policy,
    # and the float16 TFLite from bfloat16: after float32_copy (checked above) nothing in the export depends on the
    # training policy. The SavedModel and ONNX of a bfloat16-trained model: the LSPET journey (test_train); int8
    # from a float32 copy: test_export.
    unquantized_formats = ("keras", "tflite")
    for quantize in ("none", "float16") if policy == "mixed_bfloat16" else ("none",):
        formats = unquantized_formats if quantize == "none" else ("tflite",)
        written = export_model(model, tmp_path / quantize, formats=formats, quantize=quantize, info=info)
        paths.update({(fmt if quantize == "none" else f"tflite_{quantize}"): p for fmt, p in written.items()})
    report = json.loads((tmp_path / "none" / "export.json").read_text())
    assert report["trained_precision"] == policy and set(report["max_heatmap_deviation"]) == set(unquantized_formats)
    exported = keras.models.load_model(paths["keras"])
    assert {layer.compute_dtype for layer in exported.layers} == {"float32"}
    assert metadata.read_info(paths["keras"]).precision == policy
    for name, path in paths.items():
        runner, _ = load_model_file(path)
        heatmaps = runner.raw(crops)[-1]
        tolerance = 2e-2 if name == "tflite_float16" else 1e-4
        assert np.abs(heatmaps - expected).max() <= tolerance * max(1.0, np.abs(expected).max()), name


def test_a_converter_failure_is_one_clear_line_and_a_bad_file_is_an_error(tmp_path, monkeypatch):
    from hourglass_tf import export

    _, path = _saved(tmp_path, TINY, skeleton.MPII)

    def failing_tflite(*args, **kwargs):
        print("thousands of lines of converter IR", file=sys.stderr)
        os.write(2, b"and the C++ side's own lines\n")
        raise RuntimeError("loc(...): error: 'tf.Conv2D' op is neither a custom op nor a flex op\n" + "IR\n" * 500)

    monkeypatch.setattr(export, "_export_tflite", failing_tflite)
    with pytest.raises(ExportError) as caught:
        export_model(path, tmp_path / "out", formats=("keras", "tflite"))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("tflite: conversion failed")
    assert "neither a custom op nor a flex op" in message and "out.export.log" in message
    log = (tmp_path / "out.export.log").read_text()
    assert "thousands of lines" in log and "the C++ side's own lines" in log
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))

    def unloadable_onnx(model, target, info_json):
        target.write_bytes(b"not an onnx model")
        return target

    monkeypatch.setattr(export, "_export_onnx", unloadable_onnx)
    with pytest.raises(ExportError, match="onnx: the written model.onnx does not load"):
        export_model(path, tmp_path / "out2", formats=("onnx",))
    assert not (tmp_path / "out2").exists()


def test_importing_the_package_changes_nothing_in_the_process():
    code = (
        "import os, hourglass_tf, hourglass_tf.metrics, hourglass_tf.train; "
        "print(os.environ.get('TF_CPU_ALLOCATOR_USE_BFC'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "None"


def test_the_saving_cache_is_keras_own_sets_for_the_block_only(tmp_path):
    """``keras_saving.saving_cache``: inside the block Keras' ``get_attr_skipset`` returns one cached set per type,
    equal to what it computes uncached; after the block (nested too) Keras is as before; a model saved inside
    it is the file saved outside it. Fails when Keras caches the sets itself (then remove the module) or when
    the function or its key changes."""
    import h5py
    from keras.src.backend.common import global_state
    from keras.src.saving import saving_lib

    from hourglass_tf import keras_saving

    keys = [keras_saving.READ_KEY.format(t) for t in keras_saving.TYPES]
    assert all(global_state.get_global_attribute(k) is None for k in keys)
    uncached = {t: saving_lib.get_attr_skipset(t) for t in keras_saving.TYPES}
    for obj_type, skipset in uncached.items():  # Keras' own cache misses: every call computes the set again
        assert saving_lib.get_attr_skipset(obj_type) is not skipset, f"Keras caches {obj_type}: remove keras_saving"
    with keras_saving.saving_cache():
        cached = {t: saving_lib.get_attr_skipset(t) for t in keras_saving.TYPES}
        with keras_saving.saving_cache():
            assert all(saving_lib.get_attr_skipset(t) is cached[t] for t in cached)
        assert all(saving_lib.get_attr_skipset(t) is cached[t] for t in cached)  # the inner block left them
        assert cached == uncached
    assert all(global_state.get_global_attribute(k) is None for k in keys)

    model = build_model(**TINY)
    model.save(tmp_path / "plain.keras")
    with keras_saving.saving_cache():
        model.save(tmp_path / "cached.keras")

    def contents(path):
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            (tmp_path / "w.h5").write_bytes(archive.read("model.weights.h5"))
        arrays = {}
        with h5py.File(tmp_path / "w.h5") as f:
            f.visititems(lambda name, item: arrays.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
        return config, arrays

    (config_a, arrays_a), (config_b, arrays_b) = contents(tmp_path / "plain.keras"), contents(tmp_path / "cached.keras")
    assert config_a == config_b and sorted(arrays_a) == sorted(arrays_b) and len(arrays_a) == len(model.weights)
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)


def test_the_multi_worker_fixes_are_undone_after_fit(tmp_path):
    code = """
import tensorflow as tf
from keras.src.backend.tensorflow import trainer
from hourglass_tf.distribute import multi_worker_fit_fixes
from hourglass_tf.model import build_model
strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    model = build_model(num_stacks=1, filters=16, depth=1, num_joints=2, input_size=32)
original = trainer.reduce_per_replica
with multi_worker_fit_fixes(model, strategy):
    assert trainer.reduce_per_replica is not original and "_maybe_symbolic_build" in vars(model)
assert trainer.reduce_per_replica is original and "_maybe_symbolic_build" not in vars(model)
with multi_worker_fit_fixes(model, tf.distribute.get_strategy()):
    assert trainer.reduce_per_replica is original
print("OK")
"""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO, env=env
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-2000:]


def test_unsafe_keras_files_are_refused_by_the_package_loaders_and_their_code_never_runs(tmp_path):
    """A .keras file with a Lambda layer (pickled bytecode) or a class Keras does not know: refused, with why."""
    marker = tmp_path / "ran.txt"
    side_effect = lambda x, path=str(marker): (open(path, "w").write("the Lambda ran"), x)[1]  # noqa: E731
    inputs = keras.Input((8,))
    keras.Model(inputs, keras.layers.Lambda(side_effect)(inputs)).save(tmp_path / "lambda.keras")
    marker.unlink()
    with pytest.raises(metadata.MetadataError, match=r"lambda.keras: not a loadable .keras model .*safe_mode"):
        metadata.load_keras_model(tmp_path / "lambda.keras")
    assert not marker.exists()

    @keras.saving.register_keras_serializable(package="elsewhere")
    class Custom(keras.layers.Layer):
        def call(self, x):
            return x

    keras.Model(inputs, Custom()(inputs)).save(tmp_path / "custom.keras")
    keras.saving.get_custom_objects().clear()  # a program that does not have the class
    with pytest.raises(metadata.MetadataError, match=r"custom.keras: not a loadable .keras model .*Custom"):
        metadata.load_keras_model(tmp_path / "custom.keras")


def test_a_description_belongs_to_its_file_another_tflite_beside_it_is_refused(tmp_path):
    import shutil

    from hourglass_tf.backends import load_model_file
    from hourglass_tf.export import export_model
    from hourglass_tf.metadata import MetadataError, describe

    models = {}
    for name, joints, sk in (("a", 16, skeleton.MPII), ("b", 14, skeleton.LSP)):
        model = build_model(num_stacks=1, num_blocks=1, filters=16, depth=2, num_joints=joints, input_size=64)
        export_model(model, tmp_path / name, formats=("tflite",), info=describe(model, sk))
        models[name] = tmp_path / name / "model.tflite"
    files = json.loads((tmp_path / "b" / "hourglass_tf.json").read_text())["export"]["files"]
    assert list(files) == ["model.tflite"] and len(files["model.tflite"]) == 64
    _, info = load_model_file(models["b"])
    assert info.skeleton.name == "lsp"
    shutil.copy(models["a"], tmp_path / "b" / "model.tflite")  # another model's file beside b's description
    with pytest.raises(MetadataError, match="written for another model.tflite"):
        load_model_file(tmp_path / "b" / "model.tflite")
    shutil.copy(models["a"], tmp_path / "b" / "renamed.tflite")
    with pytest.raises(MetadataError, match="describes model.tflite, not renamed.tflite"):
        load_model_file(tmp_path / "b" / "renamed.tflite")
