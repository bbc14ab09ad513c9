"""Export: every format against the Keras model on the same inputs (tiny models)."""

import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY, random_batch_norm_statistics
from hourglass_tf import skeleton
from hourglass_tf.codec import HeatmapCodec
from hourglass_tf.export import export_model
from hourglass_tf.inference import Predictor
from hourglass_tf.model import build_model


def export(model, *args, **kwargs):
    """``export_model`` for the tiny MPII-joint model object (its description built from the skeleton)."""
    return export_model(model, *args, skeleton=skeleton.MPII, **kwargs)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(3)
    model = build_model(**TINY)
    random_batch_norm_statistics(model)  # trained-like statistics: the exports' folded batch norms must agree
    # Non-trivial heads so decoded keypoints are meaningful to compare.
    for name in ("stack_1", "stack_2"):
        kernel, bias = model.get_layer(name).get_weights()
        model.get_layer(name).set_weights(
            [np.random.default_rng(0).normal(0, 0.3, kernel.shape).astype(np.float32), bias]
        )
    crops = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    expected = model.predict_on_batch(crops.astype(np.float32) / 255.0)["stack_2"]
    return model, crops, expected, tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def exported(tiny):
    """The tiny model exported once to every unquantized format; the tests read these files and write elsewhere."""
    model, _, _, root = tiny
    return export(model, root / "all", formats=("keras", "saved_model", "tflite", "onnx"))


def test_saved_model_signatures_match_keras(tiny, exported):
    model, crops, expected, root = tiny
    loaded = tf.saved_model.load(str(exported["saved_model"]))
    assert set(loaded.signatures) >= {"serving_default", "predict_image"}
    out = loaded.signatures["serving_default"](images=tf.constant(crops))
    assert set(out) == {"heatmaps", "keypoints", "scores"}
    assert np.abs(out["heatmaps"].numpy() - expected).max() < 1e-4
    keypoints, scores = HeatmapCodec(64, 16).decode(expected)
    np.testing.assert_array_equal(out["keypoints"].numpy(), keypoints.numpy())
    np.testing.assert_allclose(out["scores"].numpy(), scores.numpy(), atol=1e-4)
    info = json.loads((root / "all" / "export.json").read_text())
    assert info["num_stacks"] == 2 and info["input_size"] == 64 and info["num_joints"] == 16
    assert info["batch_norm_folded"] > 0


def test_predict_image_signature_matches_the_predictor_and_refuses_bad_boxes(tiny, exported):
    model, crops, _, _ = tiny
    loaded = tf.saved_model.load(str(exported["saved_model"]))
    image = np.random.default_rng(2).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    png = tf.io.encode_png(image)
    out = loaded.signatures["predict_image"](image_bytes=png, box=tf.constant([20.0, 10.0, 60.0, 70.0]))
    reference = Predictor(model, skeleton=skeleton.MPII, flip_test=False).predict_image(image, box=(20, 10, 60, 70))
    np.testing.assert_allclose(out["keypoints"].numpy(), reference["keypoints"], atol=1e-3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside the image"):
        loaded.signatures["predict_image"](image_bytes=png, box=tf.constant([500.0, 10.0, 60.0, 70.0]))
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures["predict_image"](
            image_bytes=tf.constant(b"not an image"), box=tf.constant([0.0, 0.0, 9.0, 9.0])
        )
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        loaded.signatures["serving_default"](images=tf.constant(crops.astype(np.float32)))  # wrong dtype
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=r"\(N, 64, 64, 3\)"):
        loaded.signatures["serving_default"](images=tf.constant(crops[:, :32]))  # wrong size
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        loaded.signatures["serving_default"](images=tf.constant(crops[0]))  # wrong rank


def _tflite_heatmaps(path, images):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner()
    (input_name,) = runner.get_input_details()
    outputs = [runner(**{input_name: image[None]}) for image in images]
    (output_name,) = outputs[0]
    return np.concatenate([o[output_name] for o in outputs])


@pytest.mark.parametrize("quantize, tolerance", [("none", 1e-4), ("float16", 1e-2)])
def test_tflite_matches_keras(tiny, exported, quantize, tolerance):
    model, crops, expected, root = tiny
    if quantize == "none":
        path = exported["tflite"]
    else:
        path = export(model, root / f"tfl_{quantize}", formats=("tflite",), quantize=quantize)["tflite"]
    heatmaps = _tflite_heatmaps(path, crops.astype(np.float32) / 255.0)
    assert np.abs(heatmaps - expected).max() < tolerance * np.abs(expected).max()  # relative to the heatmaps' range
    from ai_edge_litert.interpreter import Interpreter

    assert Interpreter(model_path=str(path)).get_signature_list() == {
        "serving_default": {"inputs": ["image"], "outputs": ["heatmaps"]}
    }
    assert not list(path.parent.glob(".tflite_source.*"))  # the converter's source SavedModel is removed
    if quantize == "none":
        codec = HeatmapCodec(64, 16)
        np.testing.assert_array_equal(codec.decode(heatmaps)[0].numpy(), codec.decode(expected)[0].numpy())
        # The package's runner (every core by default, or one thread) gives the same heatmaps.
        from hourglass_tf.backends import TFLiteRunner

        for threads in (None, 1):
            runner = TFLiteRunner(path, num_threads=threads)
            np.testing.assert_allclose(runner.raw(crops.astype(np.float32) / 255.0)[0], heatmaps, rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="num_threads=0"):
            TFLiteRunner(path, num_threads=0)


def test_tflite_int8_reports_keypoint_agreement_and_its_runner_quantizes_with_the_file_s_parameters(tiny):
    from hourglass_tf.backends import TFLiteRunner

    model, crops, expected, root = tiny
    calibration = np.random.default_rng(4).random((8, 64, 64, 3), dtype=np.float32)
    path = export(model, root / "tfl_int8", formats=("tflite",), quantize="int8", calibration_images=calibration)[
        "tflite"
    ]
    heatmaps = _tflite_heatmaps(path, crops)  # uint8 pixel values in
    codec = HeatmapCodec(64, 16)
    agree = np.linalg.norm(codec.decode(heatmaps)[0].numpy() - codec.decode(expected)[0].numpy(), axis=-1) < 4.0
    print(f"int8 keypoint agreement (within one heatmap pixel): {agree.mean():.2%}")
    assert np.isfinite(heatmaps).all() and agree.mean() > 0.5

    runner = TFLiteRunner(path)
    scale, zero = runner.input_quantization
    assert runner.input_dtype == np.uint8 and scale > 0
    floats = (np.random.default_rng(2).integers(0, 128, (2, 64, 64, 3)) / 255.0).astype(np.float32)
    # The runner quantizes with the file's parameters: feeding the same uint8 tensor by hand agrees.
    manual = np.clip(np.round(floats / scale + zero), 0, 255).astype(np.uint8)
    by_hand = np.concatenate([runner.runner(**{runner.input_name: m[None]})[runner.output_name] for m in manual])
    np.testing.assert_array_equal(runner.raw(floats)[0], by_hand)
    with pytest.raises(ValueError, match="calibration"):
        export(model, root / "no_calib", formats=("tflite",), quantize="int8")


def test_onnx_matches_keras(tiny, exported):
    import onnxruntime

    _, crops, expected, _ = tiny
    session = onnxruntime.InferenceSession(str(exported["onnx"]), providers=["CPUExecutionProvider"])
    (heatmaps,) = session.run(None, {session.get_inputs()[0].name: crops.astype(np.float32) / 255.0})
    assert np.abs(heatmaps - expected).max() < 1e-4


def test_early_exit_export_and_refusals(tiny, tmp_path):
    model, crops, _, _ = tiny
    paths = export(model, tmp_path / "first1", formats=("keras",), num_stacks=1)
    import keras

    assert keras.models.load_model(paths["keras"]).output_names == ["stack_1"]
    with pytest.raises(FileExistsError, match="first1 exists"):
        export(model, tmp_path / "first1", formats=("keras",))
    export(model, tmp_path / "first1", formats=("keras",), overwrite=True)
    with pytest.raises(ValueError, match="formats"):
        export(model, tmp_path / "bad", formats=("pickle",))
    assert not list(tmp_path.glob(".bad*")) and not (tmp_path / "bad").exists()


def test_every_exported_format_names_its_joints_without_a_flag(exported, tmp_path):
    """Each format's loader, the ONNX file's own metadata, the served ``metadata`` signature and a SavedModel folder
    copied elsewhere know the joint set. (An LSP model exported from its file: test_metadata's
    ``test_an_exported_and_served_model_names_its_joints_without_a_flag``.)"""
    import shutil

    import onnx

    from hourglass_tf import metadata, serving
    from hourglass_tf.backends import load_model_file

    joints = list(skeleton.MPII.joints)
    for target in [*exported.values(), pathlib.Path(exported["keras"]).parent]:
        assert load_model_file(target)[1].skeleton == skeleton.MPII, target
    props = {p.key: p.value for p in onnx.load(str(exported["onnx"])).metadata_props}
    assert json.loads(props[metadata.ONNX_KEY])["skeleton"]["joints"] == joints
    payload = json.loads(json.dumps(serving.metadata_request()))  # what goes over the wire
    reply = serving.parse_response(json.dumps(serving.serve_in_process(exported["saved_model"], payload)))
    assert serving.description(reply)["skeleton"]["joints"] == joints
    moved = tmp_path / "elsewhere" / "sm"  # nothing is read from beside the folder
    shutil.copytree(exported["saved_model"], moved)
    assert load_model_file(moved)[1].skeleton == skeleton.MPII


@pytest.mark.parametrize(
    "options, said",
    [
        (dict(formats=[]), "formats must be a non-empty subset"),
        (dict(formats=["keras", "tensorrt"]), "received formats=['keras', 'tensorrt']"),
        (dict(formats=["tflite"], quantize="int4"), "received quantize='int4'"),
        (dict(formats=["keras"], precision="float16"), "received precision='float16'"),
        (dict(formats=["saved_model", "onnx"], precision="bfloat16"), "TFLite and ONNX files are float32"),
        (dict(formats=["keras"], num_stacks=0), "positive integer, received num_stacks=0"),
        (dict(formats=["keras"], num_stacks=3, model_stacks=2), "at most the model's 2 stacks, received num_stacks=3"),
        (dict(formats=["saved_model"], detector="yolo"), "received detector='yolo'"),
    ],
)
def test_export_options_that_do_not_go_together_are_refused_saying_what_was_received(options, said):
    """The checks ``scripts/export.py`` makes before TensorFlow loads, and ``export_model`` makes on its arguments."""
    from hourglass_tf import export_options

    with pytest.raises(ValueError) as refused:
        export_options.check(**options)
    assert said in str(refused.value)
    export_options.check(["keras", "saved_model"], "none", "bfloat16", 2, 2, "ssdlite")  # these go together


def test_flip_test_inside_the_saved_model(tiny, tmp_path):
    model, crops, _, _ = tiny
    path = export(model, tmp_path / "flip", formats=("saved_model",), flip_test=True)["saved_model"]
    out = tf.saved_model.load(str(path)).signatures["serving_default"](images=tf.constant(crops))
    reference = Predictor(model, skeleton=skeleton.MPII, flip_test=True).predict_crops(crops.astype(np.float32) / 255.0)
    np.testing.assert_allclose(out["heatmaps"].numpy(), reference["heatmaps"], atol=1e-4)


def test_predict_accepts_every_exported_format(exported, tmp_path):
    """The CLI on the exported folder (its model.tflite: predict.py's runtime is auto); the same library call
    predict.py makes on each file, and on the folder with each runtime."""
    import os
    import subprocess
    import sys

    import cv2

    from conftest import REPO
    from hourglass_tf.people import PoseEstimator
    from hourglass_tf.predict import predict_inputs

    paths = dict(exported)
    export_dir = paths["saved_model"].parent.parent
    image = np.random.default_rng(6).integers(0, 256, (80, 100, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "predict.py"),
            f"--model={export_dir}",
            f"--output_dir={tmp_path / 'out_cli'}",
            "--bbox=10,5,70,60",
            str(tmp_path / "a.png"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{export_dir} runs on LiteRT: its exported model.tflite" in result.stdout

    def keypoints_of(out):
        data = json.loads((out / "a.json").read_text())
        return np.array([[k["x"], k["y"]] for k in data["people"][0]["keypoints"]])

    reference = keypoints_of(tmp_path / "out_cli")
    paths["saved_model_base"] = paths["saved_model"].parent  # TF Serving's base path: it takes the highest version
    by_runtime = {runtime: Predictor.from_file(export_dir, runtime=runtime) for runtime in (None, "auto", "tensorflow")}
    assert {k: type(v.runner).__name__ for k, v in by_runtime.items()} == {
        None: "SavedModelRunner",
        "auto": "TFLiteRunner",
        "tensorflow": "SavedModelRunner",
    }
    for name in ("keras", "tflite", "onnx", "saved_model", "saved_model_base"):
        estimator = PoseEstimator(Predictor.from_file(paths[name]), [[10, 5, 70, 60]])
        written, failed, _ = predict_inputs(
            estimator, [tmp_path / "a.png"], tmp_path / f"out_{name}", log=lambda m: None
        )
        assert not failed, failed
        np.testing.assert_allclose(keypoints_of(tmp_path / f"out_{name}"), reference, atol=0.5, err_msg=name)


def test_unknown_model_files_are_refused(tmp_path):
    from hourglass_tf.backends import load_runner

    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="weights.bin: unknown model format"):
        load_runner(tmp_path / "weights.bin")
    with pytest.raises(ValueError, match="no such model"):
        load_runner(tmp_path / "missing.keras")
    (tmp_path / "empty" / "1").mkdir(parents=True)  # a numbered folder without a SavedModel is not one
    with pytest.raises(ValueError, match="empty: no SavedModel"):
        load_runner(tmp_path / "empty")


def test_serving_client_payloads_round_trip_through_the_saved_model(tiny, exported):
    from hourglass_tf import serving

    model, crops, expected, _ = tiny
    saved_model = exported["saved_model"]
    payload = json.loads(json.dumps(serving.crops_request(crops)))  # exactly what goes over the wire
    result = serving.parse_response(json.dumps(serving.serve_in_process(saved_model, payload)))
    assert np.abs(result["heatmaps"] - expected).max() < 1e-4 and result["keypoints"].shape == (4, 16, 2)

    image = np.random.default_rng(7).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    png = tf.io.encode_png(image).numpy()
    payload = json.loads(json.dumps(serving.image_request(png, (20, 10, 60, 70))))
    result = serving.parse_response(serving.serve_in_process(saved_model, payload))
    reference = Predictor(model, skeleton=skeleton.MPII, flip_test=False).predict_image(image, box=(20, 10, 60, 70))
    np.testing.assert_allclose(result["keypoints"], reference["keypoints"], atol=1e-3)

    refused = serving.serve_in_process(saved_model, serving.image_request(png, (500, 10, 60, 70)))
    with pytest.raises(ValueError, match=r"(?s)refused the request: .*box lies outside the image"):
        serving.parse_response(refused)
    with pytest.raises(ValueError, match="uint8"):
        serving.crops_request(crops.astype(np.float32))


def test_a_model_described_with_dark_decoding_is_decoded_with_it_by_every_format(tiny, tmp_path):
    """The description's ``decoding`` is the rule the predictor and the SavedModel's in-graph decoder use unless told
    otherwise, so a served model answers what ``predict.py`` answers; an explicit ``refine`` still wins. (TFLite and
    ONNX files are decoded by ``Predictor`` from the same description.)"""
    from hourglass_tf import metadata

    model, crops, _, _ = tiny
    checkpoint = tmp_path / "dark.keras"
    metadata.save_keras(model, checkpoint, metadata.describe(model, skeleton.MPII, sigma=1.5, decoding="dark"))
    paths = export_model(checkpoint, tmp_path / "exported", formats=("saved_model",))
    inputs = crops.astype(np.float32) / 255.0
    reference = Predictor.from_file(checkpoint, flip_test=False)
    assert reference.codec.refine == "dark" and reference.codec.sigma == 1.5
    expected = reference.predict_crops(inputs)
    served = tf.saved_model.load(str(paths["saved_model"])).signatures["serving_default"](images=tf.constant(crops))
    np.testing.assert_allclose(served["keypoints"].numpy(), expected["keypoints"], atol=1e-3)
    quarter = Predictor.from_file(checkpoint, flip_test=False, refine="quarter").predict_crops(inputs)
    assert np.abs(quarter["keypoints"] - expected["keypoints"]).max() > 0.1  # the two rules differ on these maps
    exported = Predictor.from_file(tmp_path / "exported", flip_test=False)  # the description every format carries
    assert exported.codec.refine == "dark" and exported.codec.sigma == 1.5
    plain = Predictor(model, skeleton=skeleton.MPII, flip_test=False)  # no description: the paper's rule
    assert plain.codec.refine == "quarter"
