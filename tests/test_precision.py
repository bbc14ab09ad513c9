"""bfloat16 inference: a copy computing in bfloat16 with float32 heatmaps, chosen only where it is safe and pays."""

import json

import numpy as np
import pytest

from conftest import TINY, random_batch_norm_statistics
from hourglass_tf import metadata, skeleton
from hourglass_tf.backends import choose_precision, load_model_file
from hourglass_tf.codec import HeatmapCodec
from hourglass_tf.model import bfloat16_copy, build_model, fold_batch_norm, output_names

WITH = {"avx512f", "avx512_bf16"}
WITHOUT = {"avx512f", "avx2"}


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(0)  # the same random network whatever ran before in this process
    built = build_model(**TINY)
    random_batch_norm_statistics(built)
    for name in output_names(built):  # heads that make peaks, so decoded keypoints mean something
        kernel, bias = built.get_layer(name).get_weights()
        built.get_layer(name).set_weights([np.random.default_rng(0).normal(0, 0.3, kernel.shape), bias])
    return built


def test_the_bfloat16_copy_computes_in_bfloat16_and_answers_float32_heatmaps(model):
    import keras
    import tensorflow as tf

    copy = bfloat16_copy(fold_batch_norm(model))
    heads = set(output_names(model))
    for layer in copy.layers[1:]:
        assert layer.compute_dtype == ("float32" if layer.name in heads else "bfloat16"), layer.name
        if isinstance(layer, keras.layers.Conv2D):  # cast once here, not at every call
            assert {w.dtype for w in layer.weights} == {"float32" if layer.name in heads else "bfloat16"}, layer.name
    # no weight is cast in the graph: the convolutions read bfloat16 variables, the batch norms float32 ones
    crops = tf.constant(np.random.default_rng(1).random((4, 64, 64, 3), dtype=np.float32))
    graph = tf.function(lambda x: copy(x, training=False)).get_concrete_function(crops).graph
    for op in graph.get_operations():
        if op.type == "Cast":
            assert op.inputs[0].op.type != "ReadVariableOp", op.name
    crops = np.random.default_rng(1).random((4, 64, 64, 3), dtype=np.float32)
    expected, got = model(crops, training=False), copy(crops, training=False)
    for name in heads:
        assert got[name].dtype == "float32"
        scale = float(np.max(np.abs(expected[name])))
        assert float(np.max(np.abs(np.asarray(got[name]) - np.asarray(expected[name])))) < 5e-2 * scale
    # The peaks: where a float32 peak stands above everything more than one heatmap pixel from it by more than
    # twice the largest bfloat16 error, the bfloat16 peak cannot leave its 3 x 3 neighbourhood. A random model's
    # flat maps have few such peaks, so the rule is checked where it applies (and must apply somewhere).
    last = output_names(model)[-1]
    full, half = np.asarray(expected[last]), np.asarray(got[last])
    error = float(np.max(np.abs(half - full)))
    n, h, w, k = full.shape
    flat_full = full.transpose(0, 3, 1, 2).reshape(n * k, h, w)
    flat_half = half.transpose(0, 3, 1, 2).reshape(n * k, h, w)
    checked = 0
    for f, b in zip(flat_full, flat_half):
        y, x = np.unravel_index(np.argmax(f), f.shape)
        rest = f.copy()
        rest[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = -np.inf
        if f[y, x] - rest.max() > 2 * error:
            checked += 1
            by, bx = np.unravel_index(np.argmax(b), b.shape)
            assert max(abs(by - y), abs(bx - x)) <= 1, (y, x, by, bx)
    assert checked >= 0.1 * n * k, checked
    keypoints = [np.asarray(HeatmapCodec(64, 16).decode(maps)[0]) for maps in (full, half)]
    assert np.isfinite(keypoints[1]).all() and keypoints[1].shape == keypoints[0].shape


def test_auto_picks_bfloat16_only_for_a_checked_keras_model_on_a_cpu_with_bfloat16(model):
    passed = metadata.describe(model, skeleton.MPII, provenance={"bfloat16_check": {"passed": True}})
    failed = metadata.describe(model, skeleton.MPII, provenance={"bfloat16_check": {"passed": False}})
    unchecked = metadata.describe(model, skeleton.MPII)
    assert choose_precision("auto", "m.keras", passed, WITH) == "bfloat16"
    assert choose_precision("auto", "m.keras", passed, WITH, flops=55e9) == "bfloat16"
    assert choose_precision("auto", "m.keras", passed, WITH, flops=0.9e9) == "float32"  # too small to pay
    assert choose_precision("auto", "m.keras", passed, WITHOUT) == "float32"  # emulated bfloat16 is slower
    assert choose_precision("auto", "m.keras", failed, WITH) == "float32"
    assert choose_precision("auto", "m.keras", unchecked, WITH) == "float32"
    assert choose_precision("auto", "exported/m/model.tflite", passed, WITH) == "float32"
    assert choose_precision("float32", "m.keras", passed, WITH) == "float32"
    assert choose_precision("bfloat16", "m.keras", unchecked, WITHOUT) == "bfloat16"  # asked for: as asked
    with pytest.raises(ValueError, match="bfloat16 inference runs a .keras model"):
        choose_precision("bfloat16", "m.onnx", passed, WITH)
    with pytest.raises(ValueError, match="precision must be one of"):
        choose_precision("float16", "m.keras")


def test_a_keras_file_runs_in_the_precision_asked(model, tmp_path):
    path = tmp_path / "m.keras"
    metadata.save_keras(model, path, metadata.describe(model, skeleton.MPII))
    crops = np.random.default_rng(2).random((2, 64, 64, 3), dtype=np.float32)
    runs = {p: load_model_file(path, precision=p)[0] for p in ("float32", "bfloat16", "auto")}
    assert {p: r.precision for p, r in runs.items()} == {
        "float32": "float32",
        "bfloat16": "bfloat16",
        "auto": "float32",
    }
    checked = tmp_path / "checked.keras"  # passed its bfloat16 check, but a tiny model: bfloat16 would not pay
    provenance = {"bfloat16_check": {"passed": True}}
    metadata.save_keras(model, checked, metadata.describe(model, skeleton.MPII, provenance=provenance))
    assert load_model_file(checked, precision="auto")[0].precision == "float32"
    full, half = runs["float32"].raw(crops), runs["bfloat16"].raw(crops)
    assert half.dtype == np.float32 and 0 < np.max(np.abs(half - full)) < 5e-2 * np.max(np.abs(full))


def test_a_bfloat16_saved_model_export_is_checked_and_said(model, tmp_path):
    from hourglass_tf.export import export_model

    paths = export_model(model, tmp_path / "bf16", formats=("saved_model",), skeleton="mpii", precision="bfloat16")
    report = json.loads((tmp_path / "bf16" / "export.json").read_text())
    assert report["precision"] == "bfloat16" and 0 < report["max_heatmap_deviation"]["saved_model_bfloat16"]
    assert paths["saved_model"].is_dir()
    with pytest.raises(ValueError, match="TFLite and ONNX files are float32"):
        export_model(model, tmp_path / "x", formats=("tflite",), skeleton="mpii", precision="bfloat16")
