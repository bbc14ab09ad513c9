"""The PyTorch reference the side-by-side benchmark times is the package's network: equal outputs on copied weights.

Needs a Python with PyTorch: ``HOURGLASS_TORCH_PYTHON=/path/to/python`` (PyTorch is not a dependency of the
package; ``pip install torch==2.13.0 numpy`` into a separate venv is enough). Skips without it.
"""

import json
import os
import subprocess

import keras
import numpy as np
import pytest

from benchmarks import benchmark, side_by_side
from benchmarks.inference_cases import save_weights_npz
from benchmarks.measure import RESULT_PREFIX
from conftest import random_batch_norm_statistics
from hourglass_tf.model import build_model

TORCH_PYTHON = os.environ.get("HOURGLASS_TORCH_PYTHON")
needs_torch = pytest.mark.skipif(
    not TORCH_PYTHON, reason="set HOURGLASS_TORCH_PYTHON to a Python that has PyTorch to compare with PyTorch"
)


def _randomised(model, seed=1):
    """Batch-norm statistics away from (0, 1), so that a wrong copy of any of them shows in the outputs."""
    random_batch_norm_statistics(model, seed, shift=0.1, max_variance=1.5)
    return model


def _torch(case):
    done = subprocess.run(
        [TORCH_PYTHON, str(side_by_side.TORCH_SCRIPT), json.dumps(case)], capture_output=True, text=True, timeout=600
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    assert done.returncode == 0 and lines, done.stderr[-2000:]
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


@needs_torch
@pytest.mark.parametrize("num_stacks,num_blocks,depth", [(2, 1, 2), (1, 2, 3)])
def test_the_pytorch_reference_computes_the_packages_network(tmp_path, num_stacks, num_blocks, depth):
    keras.utils.set_random_seed(0)
    model = _randomised(
        build_model(num_stacks=num_stacks, num_blocks=num_blocks, filters=32, depth=depth, num_joints=5, input_size=64)
    )
    save_weights_npz(model, tmp_path / "w.npz")
    images = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", images)
    _torch(
        {
            "kind": "forward",
            "weights": str(tmp_path / "w.npz"),
            "images": str(tmp_path / "x.npy"),
            "output": str(tmp_path / "out.npz"),
            "num_stacks": num_stacks,
            "num_blocks": num_blocks,
            "filters": 32,
            "depth": depth,
            "num_joints": 5,
        }
    )
    theirs = np.load(tmp_path / "out.npz")
    ours = model.predict(images, verbose=0)
    assert sorted(theirs.files) == sorted(ours)
    for name, heatmaps in ours.items():
        scale = np.abs(heatmaps).max()
        np.testing.assert_allclose(theirs[name], heatmaps, atol=1e-4 * scale, err_msg=name)


@needs_torch
def test_a_weight_file_of_another_network_is_refused_by_layer_name(tmp_path):
    model = build_model(num_stacks=1, filters=16, depth=2, num_joints=5, input_size=64)
    save_weights_npz(model, tmp_path / "w.npz")
    np.save(tmp_path / "x.npy", np.zeros((1, 64, 64, 3), np.float32))
    case = {
        "kind": "forward",
        "weights": str(tmp_path / "w.npz"),
        "images": str(tmp_path / "x.npy"),
        "output": str(tmp_path / "out.npz"),
        "num_stacks": 2,  # the file has one stack
        "num_blocks": 1,
        "filters": 16,
        "depth": 2,
        "num_joints": 5,
    }
    done = subprocess.run(
        [TORCH_PYTHON, str(side_by_side.TORCH_SCRIPT), json.dumps(case)], capture_output=True, text=True
    )
    assert done.returncode != 0 and "does not match" in done.stderr and "hg1_features_back" in done.stderr


@needs_torch
def test_the_side_by_side_reports_ratios_and_targets(tmp_path):
    results = benchmark.run(
        tmp_path / "work",
        quick=True,
        input_size=64,
        filters=16,
        infer_stacks=(1,),
        torch_python=TORCH_PYTHON,
        side_by_side_only=True,
    )
    sbs = results["side_by_side"]
    assert "error" not in sbs, sbs
    for precision in ("float32", "bfloat16"):
        for batch in ("1", "8"):
            row = sbs["inference"][precision]["batches"][batch]
            assert row["package"] > 0 and row["torch"] > 0
            assert row["ratio"] == pytest.approx(row["package"] / row["torch"])
            assert row["package"] == min(row["runners"].values()) and row["runner"] in row["runners"]
        assert set(sbs["inference"][precision]["batches"]["1"]["runners"]) == set(side_by_side.TF_INFERENCE[precision])
        train = sbs["train"][precision]
        assert train["ratio"] == pytest.approx(train["package"]["seconds"] / train["torch"]["seconds"])
        assert train["package"]["recompute"] is False and train["recompute"]["recompute"] is True
        memory = train["package"]["peak_rss_mb"] / train["torch"]["peak_rss_mb"]
        assert train["memory_ratio"] == pytest.approx(memory)
        recomputed = train["recompute"]["peak_rss_mb"] / train["torch"]["peak_rss_mb"]
        assert train["recompute_memory_ratio"] == pytest.approx(recomputed)
    names = [t["name"] for t in results["targets"]]
    # bfloat16 inference at batch 1 and 8 (the fastest runner), training in both precisions as it trains by default
    assert sum("/ PyTorch time" in n for n in names) == 4
    assert sum("/ PyTorch first step" in n for n in names) == 2
    assert sum("package / PyTorch peak memory" in n for n in names) == 2
    assert not any("recompute" in n for n in names)
    table = benchmark.markdown(results)
    assert "Side by side with PyTorch" in table and "| inference, batch 1, bfloat16, compiled" in table
    assert "| inference, batch 8, float32, TFLite fp32" in table
    assert "| peak process memory, training, bfloat16, `--recompute` |" in table


def test_side_by_side_only_needs_a_pytorch_python(tmp_path):
    with pytest.raises(ValueError, match="needs torch_python"):
        benchmark.run(tmp_path, side_by_side_only=True)
    assert not (tmp_path / "synthetic").exists()


def test_a_python_without_the_reference_is_reported_not_raised(tmp_path):
    sbs = side_by_side.side_by_side(tmp_path, "/nonexistent/python", num_stacks=1, filters=16, input_size=64)
    assert "cannot run the PyTorch reference" in sbs["error"]
    assert "failed" in benchmark.markdown({**_empty_results(), "side_by_side": sbs})


def _empty_results():
    return {
        "machine": {"processor": "x", "cpu_threads": 2},
        "settings": {"allocators": "defaults"},
        "gemm": {"gflops": 1.0, "size": 8},
        "pipeline": {},
        "models": {},
        "inference": {},
        "train_step": {},
    }
