"""The reliability campaign's fast part (``pytest -m reliability``): damaged files are survived or named.

The soak (kill -9 at random moments, every corrupt-file kind end to end) is ``benchmarks/reliability.py``, which
writes docs/reliability.md.
"""

import json
import os

import h5py
import numpy as np
import pytest

from hourglass_tf.callbacks import BACKUP_METADATA, BACKUP_WEIGHTS, check_backup

pytestmark = pytest.mark.reliability


def _backup(folder, epoch, suffix=""):
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / f"{BACKUP_WEIGHTS}{suffix}", "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.full((64, 64), epoch, np.float32))
    (folder / f"{BACKUP_METADATA}{suffix}").write_text(json.dumps({"epoch": epoch}))


def _damage(path, how):
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"\x00not json{" * 3}[how])


@pytest.mark.parametrize(
    "damaged, how",
    [
        (BACKUP_WEIGHTS, "truncated"),
        (BACKUP_WEIGHTS, "empty"),
        (BACKUP_METADATA, "garbage"),
        (BACKUP_METADATA, "empty"),
    ],
)
def test_a_damaged_latest_backup_falls_back_to_the_previous_one(tmp_path, damaged, how):
    folder = tmp_path / "backup"
    _backup(folder, 3)
    _backup(folder, 2, ".bkp")
    _damage(folder / damaged, how)
    said = []
    assert check_backup(folder, said.append) == "previous"
    assert json.loads((folder / BACKUP_METADATA).read_text())["epoch"] == 2
    with h5py.File(folder / BACKUP_WEIGHTS, "r") as f:
        assert f["layers/dense/vars/0"][0, 0] == 2
    assert len(said) == 1 and "does not read" in said[0] and "resuming from the previous one" in said[0]


def test_an_unreadable_backup_is_moved_aside_and_the_run_starts_fresh(tmp_path):
    folder = tmp_path / "backup"
    _backup(folder, 3)
    _backup(folder, 2, ".bkp")
    _damage(folder / BACKUP_WEIGHTS, "truncated")
    _damage(folder / f"{BACKUP_METADATA}.bkp", "garbage")
    said = []
    assert check_backup(folder, said.append) == "fresh"
    assert not folder.exists()
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("backup.unreadable-")]
    assert sorted(os.listdir(aside)) == sorted(
        [BACKUP_WEIGHTS, BACKUP_METADATA, f"{BACKUP_WEIGHTS}.bkp", f"{BACKUP_METADATA}.bkp"]
    )
    assert "starting fresh" in said[0] and str(aside) in said[0]


def test_an_intact_or_missing_backup_is_left_alone(tmp_path):
    assert check_backup(tmp_path / "none", print) == "none"
    _backup(tmp_path / "backup", 5)
    assert check_backup(tmp_path / "backup", lambda m: pytest.fail(m)) == "latest"
    (tmp_path / "backup" / BACKUP_METADATA).write_text(json.dumps({"epoch": -1}))
    assert check_backup(tmp_path / "backup", print) == "fresh"  # no previous one to fall back to


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
@pytest.mark.parametrize("content", [b"", b"\x08\x07garbage, not a model" * 20])
def test_a_broken_exported_model_is_a_clear_error_naming_the_file(tmp_path, suffix, content):
    from hourglass_tf.backends import load_runner

    path = tmp_path / f"model{suffix}"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"model\{suffix}: not a loadable \{suffix} model \(\w+: "):
        load_runner(path)
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(content)
    with pytest.raises(ValueError, match=r"sm: not a loadable SavedModel model"):
        load_runner(tmp_path / "sm")


def test_half_written_temporaries_of_a_killed_save_are_removed_at_the_next_start(tmp_path):
    from hourglass_tf.metadata import remove_stale_temporaries

    (tmp_path / ".last.abc123.tmp.keras").write_bytes(b"PK\x03\x04 half")
    (tmp_path / "last.keras").write_bytes(b"the real one")
    said = []
    assert remove_stale_temporaries(tmp_path, said.append) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.keras"] and "removed 1 half-written" in said[0]
    assert remove_stale_temporaries(tmp_path, said.append) == 0 and len(said) == 1


FULL_DISK = """
import resource, signal, sys, pathlib
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
from hourglass_tf import metadata, skeleton
from hourglass_tf.model import build_model
model = build_model(num_stacks=1, filters=16, depth=2, num_joints=16, input_size=64)
info = metadata.describe(model, skeleton.MPII)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # the model needs about 2 MB
try:
    metadata.save_keras(model, sys.argv[1], info)
except OSError as err:
    print("REFUSED", type(err).__name__, err)
"""


def test_a_full_disk_while_saving_leaves_the_previous_checkpoint_whole(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    target = tmp_path / "last.keras"
    target.write_bytes(b"the previous checkpoint")
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(target)], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert "REFUSED" in done.stdout and "File too large" in done.stdout, done.stdout + done.stderr[-2000:]
    assert target.read_bytes() == b"the previous checkpoint"  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["last.keras"]  # no half-written temporary left


FULL_DISK_EXPORT = """
import resource, signal, sys, pathlib
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from hourglass_tf import metadata, skeleton
from hourglass_tf.export import ExportError, export_model
from hourglass_tf.model import build_model
model = build_model(num_stacks=1, filters=16, depth=2, num_joints=16, input_size=64)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
try:
    export_model(model, sys.argv[1], formats=("keras", "saved_model"), info=metadata.describe(model, skeleton.MPII), overwrite=True)
except ExportError as err:
    print("REFUSED", err)
"""


def test_a_full_disk_while_exporting_is_one_clear_error_and_the_previous_export_stays(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "exported"
    out.mkdir()
    (out / "model.keras").write_bytes(b"the previous export")
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK_EXPORT, str(out)], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert "REFUSED keras: conversion failed" in done.stdout and "File too large" in done.stdout, (
        done.stdout + done.stderr[-2000:]
    )
    assert (out / "model.keras").read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "exported.export.log"]  # no staging left


FULL_DISK_SHARDS = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = ["prepare_data.py"] + sys.argv[2:]
runpy.run_path("scripts/prepare_data.py", run_name="__main__")
"""


def test_a_full_disk_while_writing_shards_is_one_clear_line_and_the_previous_shards_stay(tmp_path):
    import subprocess
    import sys

    from conftest import REPO
    from hourglass_tf.data import synthetic

    source, out = tmp_path / "synthetic", tmp_path / "shards"
    synthetic.generate(source, num_train=24, num_valid=8, image_size=128, seed=0)
    args = [f"--source={source}", f"--output={out}", "--dataset=synthetic", "--input_size=64"]

    def prepare(limit, *extra):
        command = [sys.executable, "-c", FULL_DISK_SHARDS, str(limit), *args, *extra]
        return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)

    first = prepare(2**40)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "meta.json" in before and any(name.startswith("train-") for name in before)
    largest = max(len(b) for b in before.values())
    done = prepare(largest // 3, "--samples_per_shard=1000")  # one shard per split, each larger than the limit
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]
    assert "cannot write" in done.stderr and "File too large" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # previous shards and meta.json whole, no .tmp


def test_a_full_disk_during_training_stops_with_one_line_and_the_checkpoints_stay_whole(tmp_path):
    from benchmarks.reliability import TINY, run_with_file_size_limit
    from conftest import REPO  # noqa: F401 - the scripts run from the repository
    from hourglass_tf.data import synthetic

    data, run = tmp_path / "data", tmp_path / "run"
    synthetic.generate(data, num_train=24, num_valid=8, image_size=96, seed=1)
    args = [*TINY, f"--data_dir={data}", f"--run_dir={run}"]
    code, output = run_with_file_size_limit(2**40, "train.py", [*args, "--epochs=1"])
    assert code == 0, output[-2000:]
    checkpoints = {name: (run / name).read_bytes() for name in ("last.keras", "best.keras")}
    code, output = run_with_file_size_limit(20_000, "train.py", [*args, "--epochs=2"])  # a .keras needs 1.6 MB
    assert code == 4, output[-2000:]
    assert "Traceback" not in output
    assert f"cannot write {run / 'last.keras'}" in output and "File too large" in output and "resume" in output
    assert {name: (run / name).read_bytes() for name in checkpoints} == checkpoints
    assert not list(run.glob(".*.tmp.keras"))  # no half-written temporary
    code, output = run_with_file_size_limit(2**40, "train.py", [*args, "--epochs=2"])  # space again: it resumes
    assert code == 0 and "done" in output, output[-2000:]


def test_a_truncated_or_missing_shard_is_named_before_training_starts(tmp_path):
    import subprocess
    import sys

    from benchmarks.reliability import TINY
    from conftest import REPO
    from hourglass_tf.data import synthetic, tfrecords
    from hourglass_tf.data.sample import DataFileError

    source, shards = tmp_path / "synthetic", tmp_path / "shards"
    synthetic.generate(source, num_train=24, num_valid=8, image_size=96, seed=0)
    prepare = [sys.executable, str(REPO / "scripts" / "prepare_data.py"), "--dataset=synthetic", "--input_size=64"]
    subprocess.run([*prepare, f"--source={source}", f"--output={shards}", "--samples_per_shard=10"], check=True)
    assert tfrecords.check_shards(shards, "train", 24) == 24
    first = sorted(shards.glob("train-*.tfrecord"))[0]
    whole = first.read_bytes()
    first.write_bytes(whole[: len(whole) * 2 // 3])  # a half-copied shard
    with pytest.raises(DataFileError, match=rf"{first.name}: truncated: record \d+ at byte \d+"):
        tfrecords.check_shards(shards, "train", 24)
    train = [sys.executable, str(REPO / "scripts" / "train.py"), *TINY, f"--tfrecord_dir={shards}", "--epochs=1"]
    done = subprocess.run([*train, f"--run_dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and first.name in done.stderr and "truncated" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    first.unlink()  # a shard missing altogether: the count no longer matches meta.json
    with pytest.raises(DataFileError, match="the train shards hold 1[0-9] records, meta.json recorded 24"):
        tfrecords.check_shards(shards, "train", 24)


def test_a_damaged_record_inside_a_shard_is_named_with_its_offset_before_training_starts(tmp_path):
    """64 flipped bytes mid-shard: TensorFlow's reader would stop there and drop every record after it."""
    from hourglass_tf.data import readers, synthetic, tfrecords
    from hourglass_tf.data.sample import DataFileError

    source, shards = tmp_path / "synthetic", tmp_path / "shards"
    synthetic.generate(source, num_train=20, num_valid=4, image_size=96, seed=0)
    train = readers.load_dataset("synthetic", source, "train")
    tfrecords.write_shards(train, source, shards, "train", input_size=64, samples_per_shard=20, progress=False)
    (shard,) = shards.glob("train-*.tfrecord")
    offsets = tfrecords.record_offsets(shard)
    assert len(offsets) == 20 and tfrecords.verify_records(shard) == 20
    data = bytearray(shard.read_bytes())
    middle = offsets[10] + 200
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    shard.write_bytes(bytes(data))
    assert tfrecords.count_records(shard) == 20  # the length fields alone do not see it
    with pytest.raises(DataFileError, match=rf"{shard.name}: damaged: record 10 at byte {offsets[10]} .* 10 record"):
        tfrecords.verify_records(shard)


def test_log_rows_of_epochs_the_backup_does_not_hold_are_removed_before_resuming(tmp_path):
    """A kill between an epoch's log row and its backup: the epoch runs again, so its first row goes."""
    from hourglass_tf.callbacks import BACKUP_METADATA, backup_epochs, trim_log

    log = tmp_path / "log.csv"
    log.write_text("epoch,loss\n0,0.5\n1,0.4\n2,0.3\n")
    (tmp_path / "backup").mkdir()
    assert backup_epochs(tmp_path / "backup") == 0
    (tmp_path / "backup" / BACKUP_METADATA).write_text(json.dumps({"epoch": 2}))
    said = []
    assert trim_log(log, backup_epochs(tmp_path / "backup"), said.append) == 1
    assert log.read_text() == "epoch,loss\n0,0.5\n1,0.4\n" and "removed 1 row" in said[0]
    assert trim_log(log, 2, said.append) == 0 and len(said) == 1  # nothing more to remove, nothing said
    assert trim_log(tmp_path / "missing.csv", 0) == 0


def test_a_staging_folder_a_killed_export_left_is_removed_by_the_next_export(tmp_path):
    from hourglass_tf import metadata, skeleton
    from hourglass_tf.export import export_model
    from hourglass_tf.model import build_model

    stale = tmp_path / ".exported.staging-k1lled00"
    stale.mkdir()
    (stale / "model.keras").write_bytes(b"half a model")
    unrelated = tmp_path / ".other.staging-k1lled00"  # another output's: not ours to remove
    unrelated.mkdir()
    model = build_model(num_stacks=1, filters=16, depth=2, num_joints=16, input_size=64)
    export_model(model, tmp_path / "exported", formats=("keras",), info=metadata.describe(model, skeleton.MPII))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".other.staging-k1lled00", "exported", "exported.export.log"]
    )


def test_the_demo_never_deletes_a_run_folder_it_did_not_make(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    mine = tmp_path / "my_results"
    mine.mkdir()
    (mine / "thesis.txt").write_text("a user's file")
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), f"--flagfile={REPO / 'demo.flags'}", f"--run_dir={mine}"]
        + [f"--data_dir={tmp_path / 'data'}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 2 and "was not made by the demo" in done.stderr, done.stderr[-2000:]
    assert (mine / "thesis.txt").read_text() == "a user's file" and not (tmp_path / "data").exists()


def test_copy_keras_replaces_the_file_whole_or_not_at_all(tmp_path):
    from hourglass_tf.metadata import copy_keras

    source, target = tmp_path / "last.keras", tmp_path / "best.keras"
    source.write_bytes(b"this epoch's model")
    target.write_bytes(b"the previous best")
    with pytest.raises(OSError, match="cannot write .*best.keras"):
        copy_keras(tmp_path / "missing.keras", target)
    assert target.read_bytes() == b"the previous best"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras", "last.keras"]  # no temporary left
    copy_keras(source, target)
    assert target.read_bytes() == b"this epoch's model"
