"""The benchmark runs (tiny settings) and reports every field; speed itself is not tested."""

import json

from hourglass_tf import benchmark


def test_quick_benchmark_reports_every_field(tmp_path):
    results = benchmark.run(tmp_path / "work", shared_data=None, quick=True, input_size=64, filters=16, train_stacks=(1,))
    json_path, md_path = benchmark.write(results, tmp_path / "out")
    loaded = json.loads(json_path.read_text())
    assert loaded["gemm"]["gflops"] > 0
    (pipe,) = loaded["pipeline"].values()
    assert pipe["images_per_s"] > 0 and pipe["batch_size"] == 8 and pipe["input_size"] == 64
    step = loaded["train_step"]["1 stacks"]
    for key in ("images_per_s", "seconds", "first_step_seconds", "pipeline_margin"):
        assert step[key] > 0, key
    table = md_path.read_text()
    assert "input pipeline" in table and "training step, 1 stacks" in table and "target >= 3x" in table
