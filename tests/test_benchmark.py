"""The benchmark runs (tiny settings) and reports every field; speed itself is not tested."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import benchmark, measure

# The two runners the targets compare (the other backends' rows are the same case with another runner loader,
# each loader tested by test_export): two fewer processes and no ONNX conversion, 12 s of the suite.
BACKENDS = ("tf_function", "tflite_fp32")


def test_quick_benchmark_reports_every_field(tmp_path):
    results = benchmark.run(
        tmp_path / "work",
        shared_data=None,
        quick=True,
        input_size=64,
        filters=16,
        infer_stacks=(1,),
        train_stacks=(1,),
        backends=BACKENDS,
    )
    json_path, md_path = benchmark.write(results, tmp_path / "out")
    loaded = json.loads(json_path.read_text())
    assert loaded["gemm"]["gflops"] > 0
    peaks = loaded["peaks"]
    assert "error" not in peaks, peaks
    for precision in ("float32", "bfloat16"):
        assert peaks[precision]["best"] == max(peaks[precision]["gemm"], peaks[precision]["conv"]) > 0
    (pipe,) = loaded["pipeline"].values()
    assert pipe["images_per_s"] > 0 and pipe["batch_size"] == 8 and pipe["input_size"] == 64
    model = loaded["models"]["1 stacks"]
    assert "error" not in model, model
    assert model["flops"] > 0 and model["peak_rss_mb"] > 0
    assert set(loaded["inference"]) == {f"1 stacks, {b}" for b in BACKENDS}
    for key, result in loaded["inference"].items():
        assert "error" not in result, (key, result)
        assert result["peak_rss_mb"] > 0 and result["load_seconds"] > 0
        assert set(result["batches"]) == {"1", "8"}
        for batch in result["batches"].values():
            for field in ("seconds", "images_per_s", "gflops_per_s", "utilisation", "of_peak"):
                assert batch[field] > 0, (key, field)
            assert batch["of_peak"] == pytest.approx(batch["gflops_per_s"] / peaks["float32"]["best"])
    step = loaded["train_step"]["1 stacks, plain"]
    assert "error" not in step, step
    for key in (
        "images_per_s",
        "seconds",
        "first_step_seconds",
        "pipeline_margin",
        "gflops_per_s",
        "utilisation",
        "of_peak",
        "peak_rss_mb",
    ):
        assert step[key] > 0, key
    found = loaded["people"]
    assert "error" not in found, found
    assert set(found["people"]) == {"1", "4", "8"} and all(r["people_per_s"] > 0 for r in found["people"].values())
    assert found["video"]["frames_per_second"] > 0 and found["video"]["detector_runs"] == 2  # frames 0 and 30 of 40
    assert found["runtime"] == found["video"]["runtime"] == "litert"  # what predict.py runs the .keras model on
    assert found["video_tensorflow"]["runtime"] == "tensorflow" and found["video_tensorflow"]["frames_per_second"] > 0
    names = [t["name"] for t in loaded["targets"]]
    assert any("fraction of the GEMM rate" in n and "training" in n for n in names)
    assert any("peak memory" in n and "inference" in n for n in names)
    assert any("input pipeline" in n for n in names)
    assert any("video, one tracked person" in n for n in names)
    assert sum("tf_function / LiteRT float32 time" in n for n in names) == 2  # batch 1 and 8
    for target in loaded["targets"]:
        assert isinstance(target["met"], bool) and target["measured"] > 0
    table = md_path.read_text()
    for fragment in (
        "input pipeline",
        "TFLite fp32",
        "compiled `tf.function`, batch norm folded",
        "of GEMM",
        "of peak",
        "Peak per precision",
        "peak RSS",
        "| target |",
        "people/s",
        "frames/s** end to end on litert",
        "On TensorFlow (`--runtime=tensorflow`)",
    ):
        assert fragment in table, fragment


def test_the_fma_estimate_reads_the_vector_width_from_the_flags():
    from benchmarks import peaks

    assert peaks.fma_lanes({"avx512f", "fma"}, "GenuineIntel", 6) == 32
    assert peaks.fma_lanes({"avx512f", "fma"}, "AuthenticAMD", 25) == 16  # Zen 4: 512-bit FMAs in two halves
    assert peaks.fma_lanes({"avx512f", "fma"}, "AuthenticAMD", 26) == 32  # Zen 5
    assert peaks.fma_lanes({"avx2", "fma"}, "AuthenticAMD", 23) == 16
    estimate = peaks.fma_estimate(cpus=2)
    if "error" not in estimate:
        lanes = estimate["fma_lanes_per_cycle"]
        assert estimate["float32"] == pytest.approx(2 * estimate["mhz"] / 1000 * lanes * 2)
        assert estimate["bfloat16"] in (estimate["float32"], 2 * estimate["float32"])


def test_a_failing_case_is_reported_not_raised(tmp_path):
    result = measure.run_case({"kind": "inference", "model_dir": str(tmp_path / "missing"), "backend": "tf_function"})
    assert "error" in result and "bench_model.json" in result["error"]


def test_unknown_backend_is_rejected_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="unknown backends"):
        benchmark.run(tmp_path, backends=("tensorrt",))
    assert not (tmp_path / "synthetic").exists()


def _import_env(**overrides):
    """What ``runtime.tune_allocators()`` (the call every script makes) sets, in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPU_ALLOCATOR_USE_BFC", "HOURGLASS_TF_TUNE_ALLOCATORS")}
    env.update(overrides)
    code = (
        "import json, os; from hourglass_tf import runtime; runtime.tune_allocators(); "
        "print(json.dumps([os.environ.get('TF_CPU_ALLOCATOR_USE_BFC'), runtime.applied]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_tune_allocators_sets_the_allocator_options():
    bfc, applied = _import_env()
    assert bfc == "true" and applied["TF_CPU_ALLOCATOR_USE_BFC"] == "true"
    if sys.platform.startswith("linux"):
        assert applied["mmap_threshold"] == 256 << 20


def test_training_asks_for_onednn_on_x86_only_and_keeps_an_explicit_choice(monkeypatch):
    from hourglass_tf import runtime

    monkeypatch.setattr(runtime, "applied", {})
    monkeypatch.setenv(runtime.ONEDNN_ENV, "restored after the test")
    monkeypatch.delenv(runtime.ONEDNN_ENV)
    assert runtime.use_onednn_for_training(machine="aarch64") == {} and runtime.ONEDNN_ENV not in os.environ
    assert runtime.use_onednn_for_training(machine="x86_64") == {"TF_ENABLE_ONEDNN_OPTS": "1"}
    assert os.environ[runtime.ONEDNN_ENV] == "1" and runtime.applied == {"TF_ENABLE_ONEDNN_OPTS": "1"}
    monkeypatch.setenv(runtime.ONEDNN_ENV, "0")  # the user's choice
    assert runtime.use_onednn_for_training(machine="AMD64") == {} and os.environ[runtime.ONEDNN_ENV] == "0"


def test_allocator_options_can_be_switched_off_and_explicit_values_are_kept():
    assert _import_env(HOURGLASS_TF_TUNE_ALLOCATORS="0") == [None, {}]
    bfc, applied = _import_env(TF_CPU_ALLOCATOR_USE_BFC="false")
    assert bfc == "false" and "TF_CPU_ALLOCATOR_USE_BFC" not in applied


def test_profiler_breakdown_attributes_the_step_to_op_types(tmp_path):
    from benchmarks import profiling

    step = profiling.trace_train_step(
        tmp_path / "trace", num_stacks=1, filters=16, input_size=64, batch_size=2, steps=1
    )
    assert step["step_seconds"] > 0
    breakdown = profiling.op_breakdown(tmp_path / "trace")
    ops = breakdown["ops"]
    # The convolutions' forward and both backward kernels appear, with one forward per Conv2D layer.
    conv_forward = sum(r["count"] for k, r in ops.items() if k.endswith("Conv2D"))
    assert conv_forward >= 50, ops.keys()
    assert any("BackpropInput" in k for k in ops) and any("BackpropFilter" in k for k in ops)
    assert breakdown["total_op_seconds"] == pytest.approx(sum(r["seconds"] for r in ops.values()))
    peak = breakdown["peak_allocated_bytes"]  # None where this process's allocator reports no events
    assert peak is None or peak > 0
    assert "Conv2D" in profiling.markdown(breakdown, step["step_seconds"])
    with pytest.raises(ValueError, match="no profiler trace"):
        profiling.op_breakdown(tmp_path / "empty")


def _write_trace(path, allocations):
    """A hand-made profiler trace: two convolutions on the host plane and ``allocations`` (bytes held after each)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    plane = space.planes.add(name="/host:CPU")
    plane.stat_metadata[1].name = "bytes_allocated"
    plane.event_metadata[1].name = "MemoryAllocation"
    plane.event_metadata[2].name = "model/conv:_MklNativeConv2D"
    line = plane.lines.add()
    for duration_ps in (2_000_000_000, 1_000_000_000):
        line.events.add(metadata_id=2, duration_ps=duration_ps)
    for held in allocations:
        line.events.add(metadata_id=1).stats.add(metadata_id=1, int64_value=held)
    path.mkdir(parents=True)
    (path / "host.xplane.pb").write_bytes(space.SerializeToString())


def test_the_breakdown_reads_the_allocator_peak_and_says_when_there_is_none(tmp_path):
    from benchmarks import profiling

    _write_trace(tmp_path / "bfc", [3 << 20, 7 << 20, 5 << 20])
    breakdown = profiling.op_breakdown(tmp_path / "bfc")
    assert breakdown["ops"] == {"Conv2D": {"seconds": pytest.approx(3e-3), "count": 2}}
    assert breakdown["peak_allocated_bytes"] == 7 << 20
    assert "0.01 GB" in profiling.markdown(breakdown)
    _write_trace(tmp_path / "default", [])  # TensorFlow's default CPU allocator without oneDNN: no events
    breakdown = profiling.op_breakdown(tmp_path / "default")
    assert breakdown["peak_allocated_bytes"] is None
    assert "not recorded" in profiling.markdown(breakdown) and "0.00 GB" not in profiling.markdown(breakdown)


def test_op_type_names_are_readable():
    from benchmarks import profiling

    assert profiling.op_type("model/conv/Conv2D:_MklNativeConv2D") == "Conv2D"
    assert profiling.op_type("a/b:_MklNativeFusedConv2D") == "FusedConv2D"
    assert profiling.op_type("a/b:AddV2") == "AddV2"


def test_runner_targets_hold_the_keras_runner_to_litert_and_bfloat16_to_its_peak():
    from benchmarks import report

    def batches(one, eight, of_peak=None):
        rows = {"1": {"seconds": one}, "8": {"seconds": eight}}
        if of_peak is not None:
            rows["1"]["of_peak"] = rows["8"]["of_peak"] = of_peak
        return rows

    rows = [
        {"backend": "tflite_fp32", "batches": batches(0.100, 0.800)},
        {"backend": "tf_function", "batches": batches(0.117, 0.760)},
        {"backend": "tf_function_bf16", "batches": batches(0.08, 0.5, of_peak=0.6)},
    ]
    found = {t["name"]: t for t in report._runner_targets(rows, 8)}
    one = found["inference, 8 stacks, batch 1, tf_function / LiteRT float32 time"]
    eight = found["inference, 8 stacks, batch 8, tf_function / LiteRT float32 time"]
    assert one["measured"] == pytest.approx(1.17) and not one["met"]
    assert eight["measured"] == pytest.approx(0.95) and eight["met"]
    assert not found["inference, 8 stacks, batch 1, bfloat16: fraction of the bfloat16 peak"]["met"]
    assert not any("saved_model" in name for name in found)  # no SavedModel row measured: no target made up
