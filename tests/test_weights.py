"""Published-weight conversion: parity with PyTorch on fixtures written by real PyTorch, refusals, safety.

The fixtures in fixtures/weights/ were written by tests/make_weight_fixtures.py (PyTorch, the ports' module
layouts in tests/torch_reference.py), with the heatmaps PyTorch computed for a fixed image.
"""

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from conftest import REPO
from hourglass_tf import metadata, skeleton
from hourglass_tf.model import build_model
from hourglass_tf.weights import convert, torch_files

FIXTURES = REPO / "tests" / "fixtures" / "weights"
CASES = [
    ("psh_2stack_zip.pt", "pytorch_stacked_hourglass", 2),
    ("psh_1stack_legacy.pt", "pytorch_stacked_hourglass", 1),
    ("pytorch_pose_2stack_zip.pth.tar", "pytorch_pose", 2),
    ("pytorch_pose_1stack_legacy.pth.tar", "pytorch_pose", 1),
]


@pytest.mark.parametrize("name, fmt, stacks", CASES)
def test_converted_heatmaps_equal_pytorch_s_for_every_stack(name, fmt, stacks):
    model, info, report = convert.convert(FIXTURES / name, input_size=64)
    reference = np.load(FIXTURES / f"{name.split('.')[0]}.npz")
    outputs = model(reference["image"], training=False)
    heatmaps = np.stack([np.asarray(outputs[f"stack_{s}"]) for s in range(1, stacks + 1)])
    assert heatmaps.shape == reference["heatmaps"].shape
    # float32 in both, different summation orders: within 1e-4 of the magnitude (random weights reach 160).
    scale = max(1.0, float(np.abs(reference["heatmaps"]).max()))
    assert np.abs(heatmaps - reference["heatmaps"]).max() <= 1e-4 * scale
    assert report["format"] == fmt and report["num_stacks"] == stacks and report["filters"] == 16
    assert info.skeleton == skeleton.MPII and info.provenance["format"] == fmt
    assert info.architecture["variant"] == ("pytorch_pose" if fmt == "pytorch_pose" else "hg.lua")
    if fmt == "pytorch_pose":  # the mean subtraction lives in the model, as a stock layer
        assert model.get_layer("input_mean").get_config()["mean"] == list(convert.PYTORCH_POSE_MPII_MEAN)
        assert info.preprocessing
    else:
        assert report["unused_parameters"] > 0  # the skip convolutions built but never used


def test_the_cli_writes_a_keras_file_that_loads_without_the_package_and_knows_itself(tmp_path):
    out = tmp_path / "psh.keras"
    run = [
        sys.executable,
        str(REPO / "scripts" / "convert_weights.py"),
        f"--input={FIXTURES / 'psh_2stack_zip.pt'}",
        f"--output={out}",
        "--input_size=64",
    ]
    done = subprocess.run(run, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout[: done.stdout.rindex("}") + 1])["format"] == "pytorch_stacked_hourglass"
    info = metadata.read_info(out)
    assert info.provenance["source"] == "psh_2stack_zip.pt" and len(info.provenance["sha256"]) == 64
    again = subprocess.run(run, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert again.returncode == 2 and "exists" in again.stderr  # nothing overwritten unasked
    wrong = subprocess.run(
        [*run[:2], "--from=pytorch_pose", *run[2:], "--overwrite"],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )
    assert (
        wrong.returncode == 2 and "--from=pytorch_pose, but the file has the pytorch_stacked_hourglass" in wrong.stderr
    )


def _zip_checkpoint(path, payload):
    """A zip-layout file whose data.pkl is ``payload`` (bytes)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", "3\n")


class _Forbidden:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_a_pickle_naming_a_forbidden_global_is_refused_without_running_it(tmp_path, capfd):
    _zip_checkpoint(tmp_path / "evil.pt", pickle.dumps({"state_dict": _Forbidden()}))
    with pytest.raises(
        torch_files.UnsafeCheckpointError, match=r"evil.pt: refused to load the global (posix|nt)\.system"
    ):
        torch_files.load(tmp_path / "evil.pt")
    assert "must never run" not in capfd.readouterr().out
    legacy = io.BytesIO()
    for part in (torch_files.LEGACY_MAGIC, 1001, {"little_endian": True}):
        pickle.dump(part, legacy)
    legacy.write(pickle.dumps(_Forbidden()))
    (tmp_path / "evil_legacy.pt").write_bytes(legacy.getvalue())
    with pytest.raises(torch_files.UnsafeCheckpointError, match="system"):
        torch_files.load(tmp_path / "evil_legacy.pt")


@pytest.mark.parametrize("name", ["psh_2stack_zip.pt", "pytorch_pose_1stack_legacy.pth.tar"])
def test_truncated_empty_and_foreign_files_are_refused_by_name(tmp_path, name):
    data = (FIXTURES / name).read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(torch_files.CheckpointError, match="cut.pt"):
        torch_files.load(tmp_path / "cut.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(torch_files.CheckpointError, match="empty.pt: empty file"):
        torch_files.load(tmp_path / "empty.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(torch_files.CheckpointError, match="neither a zip nor a legacy"):
        torch_files.load(tmp_path / "text.pt")


def test_a_checkpoint_of_another_network_is_refused_with_what_was_found(tmp_path):
    state = {"backbone.conv.weight": np.zeros((4, 3, 3, 3), np.float32)}
    with pytest.raises(convert.ConversionError, match=r"found keys backbone.conv.weight.*expected 'pre.0.conv.weight'"):
        convert.detect_format(state, "x.pt")
    with pytest.raises(convert.ConversionError, match="no state dict of tensors"):
        convert.state_dict_of({"epoch": 3}, "x.pt")
    checkpoint = torch_files.load(FIXTURES / "psh_1stack_legacy.pt")
    state = convert.state_dict_of(checkpoint, "x.pt")
    state["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(convert.ConversionError, match="do not belong to the network.*extra.weight"):
        model = build_model(input_size=64, **convert.architecture("pytorch_stacked_hourglass", state))
        used = convert._assign(
            model,
            convert.layer_map("pytorch_stacked_hourglass", convert.architecture("pytorch_stacked_hourglass", state)),
            state,
            "x.pt",
        )
        convert._unused("pytorch_stacked_hourglass", state, used, "x.pt")
    with pytest.raises(convert.ConversionError, match="16 joints but the skeleton 'lsp' has 14"):
        convert.convert(FIXTURES / "psh_1stack_legacy.pt", skeleton="lsp", input_size=64)


def test_the_published_layouts_parameter_counts():
    """pytorch_stacked_hourglass's files hold hg.lua's 25,434,112 live parameters plus unused skip convolutions."""
    arch = {"num_stacks": 8, "num_blocks": 1, "filters": 256, "depth": 4, "num_joints": 16}
    keras_model = build_model(**arch)
    trainable = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
    assert trainable == 25_434_112
    layers = convert.layer_map("pytorch_stacked_hourglass", arch)
    assert layers["hg8_d1_bottom_res1_conv1"] == "hgs.7.0.low2.low2.low2.low2.conv1.conv"
    assert layers["hg1_heatmaps_back"] == "merge_preds.0.conv.conv"
    # Every pytorch_stacked_hourglass Residual builds a 1x1 skip convolution; those whose input and output
    # widths match never use it. Counted from the network: 7,385,216 parameters its 8-stack files carry unused.
    names = {layer.name for layer in keras_model.layers}
    unused = 0
    for name in names:
        if name.endswith("_bn1") and name.replace("_bn1", "_skip") not in names:
            channels = keras_model.get_layer(name).input.shape[-1]
            unused += channels * channels + channels
    assert unused == 7_385_216 and trainable + unused == 32_819_328


def test_init_weights_fine_tunes_a_converted_model_on_another_joint_set(tmp_path):
    """A converted pytorch-pose model (MPII, 16 joints) starts an LSP-layout run: heads start afresh, the rest loads."""
    from hourglass_tf.data import synthetic
    from hourglass_tf.train import TrainConfig, build_compiled_model, train

    model, info, _ = convert.convert(FIXTURES / "pytorch_pose_1stack_legacy.pth.tar", input_size=64)
    start = tmp_path / "converted.keras"
    metadata.save_keras(model, start, info)
    config = TrainConfig(
        dataset="synthetic",
        data_dir="unused",
        num_stacks=1,
        filters=16,
        depth=4,
        input_size=64,
        init_weights=str(start),
    )
    tuned = build_compiled_model(config)
    assert tuned.get_layer("input_mean").get_config()["mean"] == list(convert.PYTORCH_POSE_MPII_MEAN)
    for name in ("stem_conv", "stem_res2_conv2", "hg1_d4_skip_res1_conv1", "stack_1"):  # 16 joints: all fit
        for a, b in zip(tuned.get_layer(name).get_weights(), model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    np.testing.assert_allclose(tuned(x)["stack_1"], model(x)["stack_1"], atol=1e-5)  # the same network

    data = tmp_path / "data"
    synthetic.generate(data, num_train=16, num_valid=4, image_size=96, seed=2)
    result = train(
        TrainConfig(
            dataset="synthetic",
            data_dir=str(data),
            num_stacks=1,
            filters=16,
            depth=4,
            input_size=64,
            batch_size=4,
            epochs=1,
            steps_per_epoch=2,
            val_batch_size=4,
            image_summaries=0,
            verbose=0,
            run_dir=str(tmp_path / "run"),
            init_weights=str(start),
        )
    )
    assert result["summary"]["epochs_run"] == 1 and metadata.read_info(tmp_path / "run" / "last.keras")
    with pytest.raises(ValueError, match="init_weights='missing.keras' is not a file"):
        TrainConfig(dataset="synthetic", data_dir="x", init_weights="missing.keras").validate()


def test_heads_whose_joint_count_differs_start_afresh(tmp_path):
    from hourglass_tf.model import build_model
    from hourglass_tf.train import load_matching_weights

    source = build_model(num_stacks=2, filters=16, depth=2, num_joints=16, input_size=64)
    target = build_model(num_stacks=2, filters=16, depth=2, num_joints=14, input_size=64)
    loaded, fresh = load_matching_weights(target, source)
    assert set(fresh) == {"stack_1", "stack_2", "hg1_heatmaps_back"} and "hg1_features_back" in loaded


def test_a_storage_claiming_more_bytes_than_the_file_is_refused_before_allocating(monkeypatch):
    """A forged element count (here 2**40 for every storage) is refused before memory is allocated or read."""

    class Forged(torch_files._Unpickler):
        def persistent_load(self, pid):
            return super().persistent_load((*pid[:4], 2**40, *pid[5:]))

    monkeypatch.setattr(torch_files, "_Unpickler", Forged)
    with pytest.raises(torch_files.CheckpointError, match="claims .* bytes, more than the file has"):
        torch_files.load(FIXTURES / "psh_1stack_legacy.pt")
    with pytest.raises(torch_files.CheckpointError, match="holds .* bytes, expected"):
        torch_files.load(FIXTURES / "psh_2stack_zip.pt")


# --- Torch7 (.t7): fixtures written by tests/t7_reference.py, references by its NumPy forward pass -------------

T7_CASES = [("hg_t7_2stack.t7", 2, "hg.lua", 4), ("hg_t7_1stack_umich.t7", 1, "umich_t7", 2)]


@pytest.mark.parametrize("name, stacks, variant, depth", T7_CASES)
def test_a_torch7_model_converts_to_the_reference_heatmaps_of_every_stack(name, stacks, variant, depth):
    """The .t7 layout (nn.gModule of hg.lua's modules) maps onto build_model exactly, with or without a residual
    after each hourglass; cudnn modules, CUDA tensors and old batch norm's running_std are read too."""
    model, info, report = convert.convert(FIXTURES / name, input_size=64)
    reference = np.load(FIXTURES / name.replace(".t7", ".npz"))
    outputs = model(reference["image"], training=False)
    heatmaps = np.stack([np.asarray(outputs[f"stack_{s}"]) for s in range(1, stacks + 1)])
    scale = max(1.0, float(np.abs(reference["heatmaps"]).max()))
    assert np.abs(heatmaps - reference["heatmaps"]).max() <= 1e-4 * scale
    assert report["format"] == "torch7" and (report["num_stacks"], report["depth"]) == (stacks, depth)
    assert info.architecture["variant"] == variant and info.provenance["format"] == "torch7"
    assert info.skeleton == skeleton.MPII and not info.preprocessing  # RGB in [0, 1], as pose-hg-demo feeds it


def test_the_umich_t7_variant_has_no_residual_after_each_hourglass():
    """8 x 256: 25,434,112 (hg.lua) less eight 256-channel residual modules of 214,528 parameters each."""
    from hourglass_tf.model import architecture_of, build_model

    model = build_model(variant="umich_t7")
    assert model.count_params() - sum(int(np.prod(w.shape)) for w in model.non_trainable_weights) == 23_717_888
    assert 25_434_112 - 23_717_888 == 8 * 214_528
    assert architecture_of(model)["variant"] == "umich_t7"
    assert "hg1_out_res1_add" not in {layer.name for layer in model.layers}


def test_the_cli_recognises_a_t7_file_and_the_result_fine_tunes_and_serves_with_its_joint_names(tmp_path):
    from hourglass_tf import export, serving
    from hourglass_tf.model import architecture_of
    from hourglass_tf.train import TrainConfig, build_compiled_model

    out = tmp_path / "umich.keras"
    run = [sys.executable, str(REPO / "scripts" / "convert_weights.py"), f"--output={out}", "--input_size=64"]
    done = subprocess.run(
        [*run, f"--input={FIXTURES / 'hg_t7_1stack_umich.t7'}"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    info = metadata.read_info(out)
    assert info.provenance["format"] == "torch7" and info.architecture["variant"] == "umich_t7"
    with pytest.raises(convert.ConversionError, match="--from=torch7, but the file is not a binary Torch7 file"):
        convert.convert(FIXTURES / "psh_1stack_legacy.pt", fmt="torch7")

    config = TrainConfig(
        dataset="synthetic", data_dir="x", num_stacks=1, filters=16, depth=2, input_size=64, init_weights=str(out)
    )
    tuned = build_compiled_model(config)
    assert architecture_of(tuned)["variant"] == "umich_t7"  # the run keeps the file's layout, all layers loaded
    converted = metadata.load_keras_model(out)
    x = np.random.default_rng(1).random((1, 64, 64, 3), dtype=np.float32)
    np.testing.assert_allclose(tuned(x)["stack_1"], converted(x)["stack_1"], atol=1e-5)

    paths = export.export_model(str(out), tmp_path / "exported", formats=("saved_model", "tflite", "onnx"))
    reply = serving.parse_response(serving.serve_in_process(paths["saved_model"], serving.metadata_request()))
    assert serving.description(reply)["skeleton"]["joints"] == list(skeleton.MPII.joints)
    assert json.loads((paths["onnx"].parent / "hourglass_tf.json").read_text())["architecture"]["variant"] == "umich_t7"


def test_broken_and_foreign_t7_files_are_refused_by_name(tmp_path):
    from hourglass_tf.weights import torch7

    data = (FIXTURES / "hg_t7_1stack_umich.t7").read_bytes()
    for cut in (len(data) // 3, len(data) - 5):
        (tmp_path / "cut.t7").write_bytes(data[:cut])
        with pytest.raises(
            torch7.Torch7Error, match=r"cut.t7: (truncated|.*more than the file holds \(truncated or forged\))"
        ):
            convert.convert(tmp_path / "cut.t7")
    # a storage claiming 2**40 floats: refused before anything is allocated
    forged = bytearray(data)
    at = data.index(b"torch.CudaStorage") + len(b"torch.CudaStorage")
    forged[at : at + 8] = (2**40).to_bytes(8, "little")
    (tmp_path / "forged.t7").write_bytes(bytes(forged))
    with pytest.raises(torch7.Torch7Error, match="forged.t7: a torch.CudaStorage claims 1099511627776 elements"):
        torch7.load(tmp_path / "forged.t7")
    # another network: an nn.Sequential, or a graph that is not hg.lua's
    import t7_reference

    writer = t7_reference.Writer()
    writer.write(t7_reference.sequential(t7_reference.conv(3, 8, 3, 1, 1)))
    (tmp_path / "seq.t7").write_bytes(bytes(writer.out))
    with pytest.raises(convert.ConversionError, match="seq.t7: holds a nn.Sequential, expected the nn.gModule"):
        convert.convert(tmp_path / "seq.t7")
    gmodule, nodes = t7_reference.hg_graph(num_stacks=1, filters=8, depth=1)
    nodes[2].module.typename = "nn.SpatialFullConvolution"  # the stem is not a 7x7 convolution any more
    writer = t7_reference.Writer()
    writer.write(gmodule)
    (tmp_path / "other.t7").write_bytes(bytes(writer.out))
    with pytest.raises(convert.ConversionError, match="other.t7: expected one 7x7 convolution of the RGB input"):
        convert.convert(tmp_path / "other.t7")
    with pytest.raises(convert.ConversionError, match="--from=pytorch_pose, but the file is a Torch7"):
        convert.convert(FIXTURES / "hg_t7_2stack.t7", fmt="pytorch_pose")
