"""Bad flags at every command-line entry: unknown, inconsistent, out of range, missing files. Each ends with a
non-zero exit status and one clear line saying what is wrong, never a traceback and never a half-written output.
The cases live in ``benchmarks/reliability.py`` (``BAD_FLAGS``), whose soak reports them in docs/reliability.md."""

import pytest

from benchmarks import reliability

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return reliability.tiny_model_file(tmp_path_factory.mktemp("cli") / "m.keras")


@pytest.mark.parametrize("script", sorted(reliability.BAD_FLAGS))
def test_bad_flags_end_with_one_clear_line(script, model_file, tmp_path):
    results = reliability.bad_flags(script, model_file, tmp_path)
    problems = [f"{r['args']}: {r['outcome']}: {r['message']}" for r in results if r["outcome"] != "clear error"]
    assert not problems, "\n".join(problems)


def _run_script(script, args, cwd):
    """``python scripts/SCRIPT args`` in a fresh process, through ``reliability.RUN_AND_SAY_IF_TENSORFLOW_LOADED``:
    its stdout ends with "TENSORFLOW_LOADED <True|False>", its exit status is the script's."""
    import subprocess
    import sys

    from conftest import REPO

    wrapper = reliability.RUN_AND_SAY_IF_TENSORFLOW_LOADED
    command = [sys.executable, "-c", wrapper, str(REPO / "scripts" / script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd)


def _train_py_exit(args):
    from conftest import REPO

    return _run_script("train.py", args, REPO)


@pytest.mark.parametrize("precision", ["--nomixed_precision", "--mixed_precision=auto"])
def test_train_py_says_bad_settings_before_tensorflow_loads(tmp_path, precision):
    """The settings are checked by modules that do not import TensorFlow: a bad flag is said in a fraction of a
    second, and the run folder is not made; also when ``auto`` leaves the precision to a check that loads it."""
    run_dir = tmp_path / "run"
    done = _train_py_exit(["--dataset=synthetic", "--batch_size=0", precision, f"--run_dir={run_dir}"])
    assert done.returncode == 2 and done.stdout.split() == ["TENSORFLOW_LOADED", "False"], (
        done.stdout + done.stderr[-2000:]
    )
    assert "batch_size must be a positive integer" in done.stderr
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "written_for, flag, said",
    [
        (64, "--rotation=40", "rotation=40 > 30 degrees"),
        (64, "--input_size=128", "input_size=128 > the 64 px"),
        (None, "--rotation=30", "meta.json: file not found"),
    ],
)
def test_train_py_says_shards_written_for_other_settings_before_tensorflow_loads(tmp_path, written_for, flag, said):
    """A shard folder whose ``meta.json`` does not serve the settings (or that has none) is said before TensorFlow
    loads, also with ``--mixed_precision=auto`` (whose choice loads it), and no run folder is made."""
    from hourglass_tf.data import shard_meta

    shards, run_dir = tmp_path / "shards", tmp_path / "run"
    shards.mkdir()
    if written_for is not None:  # what prepare_data.py --input_size=64 records
        meta = {"dataset": "synthetic", "num_joints": 16, "region": shard_meta.region_bounds(written_for)}
        shard_meta.write_meta(shards, meta)
    argv = ["--dataset=synthetic", f"--tfrecord_dir={shards}", flag, "--mixed_precision=auto", f"--run_dir={run_dir}"]
    done = _train_py_exit(argv)
    assert done.returncode == 2 and done.stdout.split() == ["TENSORFLOW_LOADED", "False"], (
        done.stdout + done.stderr[-2000:]
    )
    assert said in done.stderr and str(shards / "meta.json") in done.stderr, done.stderr[-2000:]
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "script,args,said,status",
    [
        ("predict.py", ["--model=/nonexistent/m.keras", "photo.jpg"], "/nonexistent/m.keras: no such model file", 2),
        (
            "predict.py",
            ["--model=lspet", "/nonexistent/a.jpg", "/nonexistent/b"],
            "/nonexistent/a.jpg, /nonexistent/b",
            2,
        ),
        ("export.py", ["--model=/nonexistent/m.keras", "--output=OUT"], "/nonexistent/m.keras: no such model file", 2),
        ("evaluate.py", ["--checkpoint=/nonexistent/m.keras", "--dataset=synthetic"], "no such model file", 2),
        ("convert_weights.py", ["--input=/nonexistent/w.t7", "--output=OUT/m.keras"], "/nonexistent/w.t7: no such", 2),
        ("train.py", ["--dataset=lspet", "--data_dir=/nonexistent/lspet", "--run_dir=OUT"], "lspet: dataset folder", 2),
        (
            "train.py",
            ["--dataset=lspet", "--tfrecord_dir=/nonexistent/s", "--run_dir=OUT"],
            "s: TFRecord shard folder",
            2,
        ),
        ("prepare_data.py", ["--dataset=lsp", "--source=/nonexistent/lsp", "--output=OUT"], "lsp: dataset folder", 1),
        ("show_data.py", ["--dataset=lsp", "--data_dir=/nonexistent/lsp", "--output=OUT/a.png"], "dataset folder", 1),
    ],
)
def test_a_mistyped_path_is_said_before_tensorflow_loads(tmp_path, script, args, said, status):
    """A model, checkpoint, weights file, dataset or shard folder, or every input, that does not exist: said in a
    fraction of a second with the script's error status, nothing written (the library's loaders say the same when
    called directly)."""
    done = _run_script(script, [a.replace("OUT", str(tmp_path / "out")) for a in args], tmp_path)
    output = done.stdout + done.stderr[-2000:]
    assert done.returncode == status and done.stdout.split()[-2:] == ["TENSORFLOW_LOADED", "False"], output
    assert said in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
