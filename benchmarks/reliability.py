"""The reliability soak: kill -9 at random moments and damaged files of every kind, through the CLIs, each outcome
recorded; writes docs/reliability.md.

    .venv/bin/python benchmarks/reliability.py --kills=12 --out=docs/reliability.md

Kills: a tiny training run (synthetic data, 1 stack) is started and killed with SIGKILL after a random delay
(before training starts, during steps, validation, checkpoint and backup writes), ``--kills`` times, then run
to its end. After each kill every ``.keras`` file on disk must load through the package's loader, and the
resumed run must end with every epoch logged once. Damaged files: each kind is made on purpose and handed to
the CLI that reads it; the outcome is classified as survived (the run goes on, saying what it did), a clear
error (exit status != 0, the file named, no traceback) or a traceback / hang (a finding).
"""

import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PY = sys.executable
TINY = [
    "--dataset=synthetic",
    "--num_stacks=1",
    "--filters=16",
    "--depth=2",
    "--input_size=64",
    "--batch_size=4",
    "--val_batch_size=8",
    "--image_summaries=0",
    "--verbose=0",
    "--learning_rate=1e-3",
    "--steps_per_epoch=8",
]


UNKNOWN = ("--no_such_flag=1", "Unknown command line flag 'no_such_flag'")

# script -> [(arguments, what the output must say)]; MODEL: a tiny .keras model, OUT: a folder that must stay empty
BAD_FLAGS = {
    "train.py": [
        UNKNOWN,
        ("--dataset=synthetic --batch_size=0", "batch_size"),
        ("--dataset=synthetic --num_stacks=-1", "num_stacks"),
        ("--dataset=synthetic --input_size=100", "input_size"),
        ("--dataset=no_such_set", "no_such_set"),
        ("--dataset=synthetic --learning_rate=-1", "learning_rate"),
        ("--flagfile=/nonexistent/x.flags", "x.flags"),
        ("--dataset=lspet --data_dir=/nonexistent/lspet --epochs=1", "/nonexistent/lspet"),
    ],
    "evaluate.py": [
        UNKNOWN,
        ("--checkpoint=/nonexistent/m.keras --dataset=synthetic --data_dir=/tmp", "m.keras"),
        ("--predictions=/nonexistent/p.mat --annotations=/nonexistent/a.mat", "/nonexistent/"),
        ("--checkpoint=MODEL --dataset=synthetic --data_dir=/tmp --test_scales=x", "test scales must be numbers"),
    ],
    "predict.py": [
        UNKNOWN,
        ("--model=/nonexistent/m.keras photo.jpg", "m.keras"),
        ("--model=MODEL --bbox=1,2,3 photo.jpg", "bbox"),
        ("--model=MODEL --center=10,10 photo.jpg", "scale"),
        ("--model=MODEL /nonexistent/photo.jpg", "photo.jpg"),
        ("--model=MODEL", "input"),
        ("--model=MODEL --test_scales=1,0 photo.jpg", "test scales must be one or more positive numbers"),
    ],
    "export.py": [
        UNKNOWN,
        ("--model=/nonexistent/m.keras --output=OUT", "m.keras"),
        ("--model=MODEL --output=OUT --formats=keras,tensorrt", "tensorrt"),
        ("--model=MODEL --output=OUT --num_stacks=5", "num_stacks"),
        ("--model=MODEL --output=OUT --quantize=int4", "int4"),
    ],
    "convert_weights.py": [
        UNKNOWN,
        ("--input=/nonexistent/w.t7 --output=OUT/m.keras", "w.t7"),
        ("--input=MODEL --output=OUT/m.keras --from=torch7", "not a binary Torch7 file"),
    ],
    "prepare_data.py": [
        UNKNOWN,
        ("--source=/tmp --output=OUT", "dataset"),
        ("--dataset=lspet --source=/nonexistent/lspet --output=OUT", "/nonexistent/lspet"),
    ],
    "serving_client.py": [
        UNKNOWN,
        ("--image=/nonexistent/p.jpg", "p.jpg"),
        ("--image=MODEL --box=1,2", "box"),
    ],
    "show_data.py": [UNKNOWN, ("--dataset=synthetic --data_dir=/nonexistent/syn", "/nonexistent/syn")],
    "make_quadrupeds.py": [UNKNOWN, ("--num_train=-5 --output=OUT", "num_train")],
    "profile_step.py": [UNKNOWN, ("--num_stacks=0", "num_stacks")],
    "benchmark.py": [UNKNOWN, ("--backends=tensorrt --work_dir=OUT", "tensorrt")],
    "demo.py": [UNKNOWN],
    "ship_model.py": [
        UNKNOWN,
        ("--checkpoint=/nonexistent/c.keras --recipe=/nonexistent/r.flags", "r.flags"),
        ("--checkpoint=MODEL --recipe=/nonexistent/r.flags --name=mpii", "'mpii' is not a shipped model's name"),
    ],
}


def tiny_model_file(path):
    """A tiny 2-stack MPII model saved with its description (what the bad-flag cases point --model at)."""
    from hourglass_tf.metadata import describe, save_keras
    from hourglass_tf.model import build_model
    from hourglass_tf.skeleton import MPII

    model = build_model(num_stacks=2, filters=16, depth=2, num_joints=16, input_size=64)
    save_keras(model, path, describe(model, MPII))
    return path


# Runs a script as ``python script args`` does, then says on stdout whether TensorFlow was imported (also when the
# script exits with an error status).
RUN_AND_SAY_IF_TENSORFLOW_LOADED = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    print("TENSORFLOW_LOADED", "tensorflow" in sys.modules, flush=True)
"""


def bad_flags(script, model_file, work):
    """Runs every ``BAD_FLAGS`` case of ``script`` (in parallel processes).

    Returns a list of dicts: ``args``, ``outcome`` ("clear error": non-zero exit, the expected words said, no
    traceback, nothing written to OUT, and all of it before TensorFlow loaded (a bad flag costs a fraction of a
    second, not TensorFlow's import); otherwise what went wrong) and ``message`` (the last line said).
    """
    work = pathlib.Path(work)
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for i, (args, expected) in enumerate(BAD_FLAGS[script]):
        out = work / f"out{i}"
        argv = [a.replace("MODEL", str(model_file)).replace("OUT", str(out)) for a in args.split()]
        process = subprocess.Popen(
            [PY, "-c", RUN_AND_SAY_IF_TENSORFLOW_LOADED, str(REPO / "scripts" / script), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=work,
        )
        runs.append((args, expected, out, process))
    results = []
    for args, expected, out, process in runs:
        stdout, stderr = process.communicate(timeout=600)
        tensorflow_loaded = "TENSORFLOW_LOADED True" in stdout
        said = stdout.replace(f"TENSORFLOW_LOADED {tensorflow_loaded}", "") + stderr
        lines = [
            line for line in said.strip().splitlines() if line and not line.startswith(("I0000", "W0000", "E0000"))
        ]
        if "Traceback (most recent call last)" in said:
            outcome = "traceback"
        elif process.returncode == 0:
            outcome = "exit status 0"
        elif expected not in said:
            outcome = f"does not say {expected!r}"
        elif out.exists() and any(out.iterdir()):
            outcome = f"wrote {sorted(p.name for p in out.iterdir())}"
        elif tensorflow_loaded:
            outcome = "said after TensorFlow loaded"
        else:
            outcome = "clear error"
        message = next((line for line in reversed(lines) if expected in line), lines[-1] if lines else "")
        results.append({"script": script, "args": args, "outcome": outcome, "message": message[:240]})
    return results


def png_bomb(width=40_000, height=40_000, seed=0):
    """A valid ~2 KB PNG whose IHDR declares ``width`` x ``height`` (CRC fixed, so every decoder believes it)."""
    import struct
    import zlib

    import cv2
    import numpy as np

    small = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    data = bytearray(cv2.imencode(".png", small)[1].tobytes())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def jpeg_bomb(width=30_000, height=30_000, seed=0):
    """A ~2 KB JPEG whose SOF0 frame header declares ``width`` x ``height``."""
    import struct

    import cv2
    import numpy as np

    small = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    data = bytearray(cv2.imencode(".jpg", small)[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_bomb(width=12_000, height=12_000, frames=1):
    """A GIF of a few dozen bytes: a ``width`` x ``height`` logical screen and ``frames`` 1 x 1 frames (each
    decodes to the whole screen: many frames multiply it)."""
    import struct

    head = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + bytes(6)  # 2-colour global table
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"  # one pixel, LZW
    return head + frame * frames + b"\x3b"


def bmp_bomb(width=20_000, height=20_000):
    """A 54-byte BMP header declaring ``width`` x ``height`` at 24 bits, with no pixels behind it."""
    import struct

    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + len(info) - 40, 0, 0, 54) + info


def webp_bomb(width=16_383, height=16_383, frames=0, seed=0):
    """A small lossy WebP whose VP8 frame header declares ``width`` x ``height``; with ``frames`` > 0 an animated
    WebP (VP8X) with a ``width`` x ``height`` canvas and that many ANMF frames of a few bytes."""
    import io
    import struct

    import numpy as np
    from PIL import Image

    small = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(small).save(out, format="WEBP")
    data = bytearray(out.getvalue())
    if not frames:
        data[26:30] = struct.pack("<HH", width, height)
        return bytes(data)
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x02, 0, 0, 0])
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    anim = b"ANIM" + struct.pack("<I", 6) + bytes(6)
    payload = bytes(data[12:])  # the VP8 chunk
    anmf_body = bytes(6) + (23).to_bytes(3, "little") + (31).to_bytes(3, "little") + bytes(4) + payload
    anmf = (b"ANMF" + struct.pack("<I", len(anmf_body)) + anmf_body + (b"\x00" if len(anmf_body) % 2 else b"")) * frames
    body = b"WEBP" + vp8x + anim + anmf
    return b"RIFF" + struct.pack("<I", len(body)) + body


FILE_SIZE_LIMIT = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
script = sys.argv[2]
sys.argv = [script] + sys.argv[3:]
runpy.run_path(script, run_name="__main__")
"""


def run_with_file_size_limit(limit, script, args, timeout=600):
    """Runs ``scripts/<script>`` with every file it writes limited to ``limit`` bytes: (exit status, output)."""
    return _run(["-c", FILE_SIZE_LIMIT, limit, REPO / "scripts" / script, *args], timeout)


def _snapshot(folder):
    folder = pathlib.Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(args, timeout=600):
    done = subprocess.run([PY, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    return done.returncode, done.stdout + done.stderr


def _logged_epochs(run_dir):
    path = run_dir / "log.csv"
    if not path.exists():
        return []
    lines = path.read_text().strip().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines if line]


def kill_soak(work, kills=12, epochs=100, seed=0):
    from hourglass_tf import metadata
    from hourglass_tf.callbacks import BACKUP_METADATA

    data = work / "data"
    run = work / "run"
    args = [REPO / "scripts" / "train.py", *TINY, f"--data_dir={data}", f"--run_dir={run}", f"--epochs={epochs}"]
    rng = random.Random(seed)
    records = []
    for k in range(kills):
        log = open(work / f"kill{k}.log", "w")
        process = subprocess.Popen([PY, *map(str, args)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        delay = rng.uniform(5, 13)
        deadline = time.time() + delay
        while time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        finished = process.poll() is not None
        if not finished:
            process.send_signal(signal.SIGKILL)
        process.wait()
        log.close()
        logged = _logged_epochs(run)
        unreadable = []
        temporaries = len(list(run.glob(".*.tmp.keras")))  # a save killed half-way; removed at the next start
        for path in sorted(p for p in run.glob("*.keras") if not p.name.startswith(".")):
            try:
                metadata.load_keras_model(path)
            except metadata.MetadataError as err:
                unreadable.append(str(err))
        meta = run / "backup" / BACKUP_METADATA
        try:
            backup_epoch = json.loads(meta.read_text())["epoch"] if meta.exists() else 0
        except (ValueError, KeyError):
            backup_epoch = None
        records.append(
            {
                "kill": k + 1,
                "after_seconds": round(delay, 1),
                "run_had_finished": finished,
                "epochs_logged": len(logged),
                "backup_epoch": backup_epoch,
                "completed_epochs_not_in_backup": (len(logged) - backup_epoch) if backup_epoch is not None else None,
                "unreadable_checkpoints": unreadable,
                "half_written_temporaries": temporaries,
            }
        )
        if finished:
            break
    code, output = _run(args)
    logged = _logged_epochs(run)
    return {
        "kills": records,
        "final_exit_status": code,
        "final_epochs_logged": logged,
        "every_epoch_once": logged == list(range(epochs)),
        "unreadable_checkpoints_seen": sum(len(r["unreadable_checkpoints"]) for r in records),
        "temporaries_left_at_the_end": len(list(run.glob(".*.tmp.keras"))),
        "final_output_tail": output.strip().splitlines()[-2:],
    }


def _classify(code, output, name, survived_phrase=None):
    if "Traceback (most recent call last)" in output:
        return "traceback"
    if code == 0:
        return "survived" if survived_phrase is None or survived_phrase in output else "ran (no notice)"
    return "clear error naming the file" if name in output else "error (file not named)"


def damaged_files(work):
    """Each damaged-file kind through the CLI that reads it: (kind, entry point, outcome, message)."""
    from hourglass_tf.callbacks import BACKUP_WEIGHTS
    from hourglass_tf.export import export_model

    data, run = work / "data", work / "run"
    model = run / "best.keras"
    exported = work / "exported"
    if not exported.exists():
        export_model(model, exported, formats=("saved_model", "tflite", "onnx"))
    photo = data / "images" / sorted(os.listdir(data / "images"))[0]
    cases = []

    def case(kind, entry, args, name, survived_phrase=None):
        code, output = _run(args)
        lines = [
            line for line in output.strip().splitlines() if line and not line.startswith(("I0000", "W0000", "E0000"))
        ]
        message = next(
            (line for line in reversed(lines) if name in line or "error" in line.lower()), lines[-1] if lines else ""
        )
        cases.append(
            {
                "kind": kind,
                "entry": entry,
                "outcome": _classify(code, output, name, survived_phrase),
                "message": message[:240],
            }
        )

    def damaged(src, dst, how):
        data_bytes = pathlib.Path(src).read_bytes()
        pathlib.Path(dst).write_bytes({"empty": b"", "truncated": data_bytes[: len(data_bytes) // 2]}[how])
        return dst

    for how in ("empty", "truncated"):
        bad = damaged(model, work / f"{how}.keras", how)
        case(
            f"{how} .keras",
            "predict.py",
            [REPO / "scripts" / "predict.py", f"--model={bad}", f"--output_dir={work / 'p'}", photo],
            bad.name,
        )
        bad = damaged(exported / "model.tflite", work / f"{how}.tflite", how)
        case(
            f"{how} .tflite",
            "predict.py",
            [REPO / "scripts" / "predict.py", f"--model={bad}", f"--output_dir={work / 'p'}", photo],
            bad.name,
        )
        bad = damaged(exported / "model.onnx", work / f"{how}.onnx", how)
        case(
            f"{how} .onnx",
            "predict.py",
            [REPO / "scripts" / "predict.py", f"--model={bad}", f"--output_dir={work / 'p'}", photo],
            bad.name,
        )
        bad = damaged(REPO / "tests" / "fixtures" / "weights" / "hg_t7_2stack.t7", work / f"{how}.t7", how)
        case(
            f"{how} .t7 weights",
            "convert_weights.py",
            [REPO / "scripts" / "convert_weights.py", f"--input={bad}", f"--output={work / 'c.keras'}", "--overwrite"],
            bad.name,
        )
        bad = damaged(photo, work / f"{how}.jpg", how)
        case(
            f"{how} photo",
            "predict.py",
            [REPO / "scripts" / "predict.py", f"--model={model}", f"--output_dir={work / 'p'}", bad],
            bad.name,
        )
    broken = work / "broken_data"
    shutil.copytree(data, broken, dirs_exist_ok=True)
    damaged(data / "annot" / "valid.json", broken / "annot" / "valid.json", "truncated")
    case(
        "truncated annotation file",
        "evaluate.py",
        [
            REPO / "scripts" / "evaluate.py",
            f"--checkpoint={model}",
            "--dataset=synthetic",
            f"--data_dir={broken}",
            f"--output_dir={work / 'e'}",
        ],
        "valid.json",
    )
    shards = work / "damaged_shards"
    _run(
        [
            REPO / "scripts" / "prepare_data.py",
            f"--source={data}",
            f"--output={shards}",
            "--dataset=synthetic",
            "--input_size=64",
            "--samples_per_shard=20",
        ]
    )
    first = sorted(shards.glob("train-*.tfrecord"))[0]
    damaged(first, first, "truncated")
    case(
        "truncated TFRecord shard",
        "train.py",
        [
            REPO / "scripts" / "train.py",
            *TINY,
            f"--tfrecord_dir={shards}",
            f"--run_dir={work / 'shard_run'}",
            "--epochs=1",
        ],
        first.name,
    )
    # backups: the latest damaged (the previous one is used), both damaged (moved aside, fresh start)
    for how, phrase in (("latest", "resuming from the previous one"), ("both", "starting fresh")):
        again = work / f"run_{how}"
        shutil.copytree(run, again, dirs_exist_ok=True)
        damaged(again / "backup" / BACKUP_WEIGHTS, again / "backup" / BACKUP_WEIGHTS, "truncated")
        if how == "both":
            damaged(again / "backup" / f"{BACKUP_WEIGHTS}.bkp", again / "backup" / f"{BACKUP_WEIGHTS}.bkp", "truncated")
        epochs = len(_logged_epochs(again)) + 1
        case(
            f"{how} backup truncated",
            "train.py (resume)",
            [REPO / "scripts" / "train.py", *TINY, f"--data_dir={data}", f"--run_dir={again}", f"--epochs={epochs}"],
            "backup",
            phrase,
        )
    return cases


def photo_kinds(work):
    """Photos of every kind through predict.py: (kind, outcome, message) rows."""
    import cv2
    import numpy as np

    model = work / "run" / "best.keras"
    photos = work / "photos"
    photos.mkdir(exist_ok=True)
    rgb = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    kinds = {
        "grayscale PNG": ("gray.png", cv2.imencode(".png", rgb[..., 0])[1].tobytes()),
        "RGBA PNG": ("rgba.png", cv2.imencode(".png", np.dstack([rgb, rgb[..., :1]]))[1].tobytes()),
        "16-bit PNG": ("deep.png", cv2.imencode(".png", rgb.astype(np.uint16) * 257)[1].tobytes()),
        "BMP": ("photo.bmp", cv2.imencode(".bmp", rgb)[1].tobytes()),
        "PNG declaring 40,000 x 40,000 (2 KB)": ("bomb.png", png_bomb()),
        "JPEG declaring 30,000 x 30,000 (2 KB)": ("bomb.jpg", jpeg_bomb()),
    }
    rows = []
    for kind, (name, data) in kinds.items():
        (photos / name).write_bytes(data)
        out = work / "photo_out" / pathlib.Path(name).stem
        code, output = _run(
            [
                REPO / "scripts" / "predict.py",
                f"--model={model}",
                f"--output_dir={out}",
                "--detector=none",
                photos / name,
            ]
        )
        if "Traceback (most recent call last)" in output:
            outcome = "traceback"
        elif (out / f"{pathlib.Path(name).stem}.json").exists():
            outcome = "predicted"
        else:
            outcome = "refused, file named" if name in output else "refused (file not named)"
        lines = [line for line in output.splitlines() if name in line or "refused" in line]
        rows.append({"kind": kind, "outcome": outcome, "message": (lines[-1] if lines else "")[:240]})
    return rows


def full_disk(work):
    """Each writer under a file-size limit: (what, outcome, previous files intact, message) rows."""
    from hourglass_tf.data import synthetic  # noqa: F401 - the data folder exists already

    data, rows = work / "data", []

    def row(what, code, output, folder, before):
        lines = [line for line in output.strip().splitlines() if "error" in line.lower() or "large" in line]
        rows.append(
            {
                "what": what,
                "outcome": "traceback"
                if "Traceback (most recent call last)" in output
                else ("clear error" if code != 0 else "exit status 0"),
                "intact": _snapshot(folder) == before,
                "message": (lines[-1] if lines else "")[:240],
            }
        )

    shards = work / "shards"
    args = [f"--source={data}", f"--output={shards}", "--dataset=synthetic", "--input_size=64"]
    _run([REPO / "scripts" / "prepare_data.py", *args])
    before = _snapshot(shards)
    code, output = run_with_file_size_limit(max(len(b) for b in before.values()) // 3, "prepare_data.py", args)
    row("TFRecord shards (prepare_data.py)", code, output, shards, before)

    run = work / "full_run"
    shutil.copytree(work / "run", run, dirs_exist_ok=True)
    before = _snapshot(run)
    epochs = len(_logged_epochs(run)) + 2
    code, output = run_with_file_size_limit(
        20_000, "train.py", [*TINY, f"--data_dir={data}", f"--run_dir={run}", f"--epochs={epochs}"]
    )
    after = _snapshot(run)
    kept = all(after.get(k) == v for k, v in before.items() if k.endswith(".keras"))
    row("checkpoints (train.py)", code, output, run, before)
    rows[-1]["intact"] = kept  # the log and the backup may grow: the checkpoints must be whole

    exported = work / "full_export"
    _run(
        [
            REPO / "scripts" / "export.py",
            f"--model={work / 'run' / 'best.keras'}",
            f"--output={exported}",
            "--formats=keras,saved_model",
        ]
    )
    # Exported again from the previous export's own model.keras (no optimizer state): Keras writes the file's
    # weights entry to a temporary file when it reads it, and the new model.keras is that entry plus the model's
    # configuration, so a limit between the two lets the model load and stops the export's first file.
    source = work / "export_source.keras"
    shutil.copy(exported / "model.keras", source)
    with zipfile.ZipFile(source) as archive:
        weights = max(info.file_size for info in archive.infolist() if info.filename.endswith(".h5"))
    before = _snapshot(exported)
    code, output = run_with_file_size_limit(
        (weights + source.stat().st_size) // 2,
        "export.py",
        [
            f"--model={source}",
            f"--output={exported}",
            "--formats=keras,saved_model",
            "--overwrite",
        ],
    )
    row("export (export.py --overwrite)", code, output, exported, before)
    return rows


def _error_message(text):
    """The telling part of a TensorFlow error: an assertion's message, a decoder's complaint, or the first line."""
    import re

    found = re.search(r"assertion failed: \[([^\]]+)\]", text)
    if found:
        return found.group(1).rstrip(". ")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    skip = ("Graph execution error", "<stack traces unavailable>", "Detected at node", "File ", "[[")
    telling = [line for line in lines if not line.startswith(skip)]
    return (telling or lines or [""])[0]


def serving_requests(work):
    """Malformed requests to every signature of the exported SavedModel: (signature, request, outcome, message)."""
    import cv2
    import numpy as np
    import tensorflow as tf

    saved_model = work / "exported" / "saved_model" / "1"
    signatures = tf.saved_model.load(str(saved_model)).signatures
    size = int(signatures["serving_default"].structured_input_signature[1]["images"].shape[1])
    jpeg = cv2.imencode(".jpg", np.full((90, 120, 3), 128, np.uint8))[1].tobytes()
    box = tf.constant([10.0, 5.0, 40.0, 60.0])
    cases = [
        ("serving_default", "float32 crops", {"images": tf.zeros([1, size, size, 3])}),
        ("serving_default", "rank 3", {"images": tf.zeros([size, size, 3], tf.uint8)}),
        ("serving_default", "crops of the wrong size", {"images": tf.zeros([1, size // 2, size // 2, 3], tf.uint8)}),
        ("serving_default", "empty batch", {"images": tf.zeros([0, size, size, 3], tf.uint8)}),
        ("predict_image", "undecodable bytes", {"image_bytes": tf.constant(b"not a photo"), "box": box}),
        ("predict_image", "PNG decompression bomb", {"image_bytes": tf.constant(png_bomb()), "box": box}),
        ("predict_image", "JPEG decompression bomb", {"image_bytes": tf.constant(jpeg_bomb()), "box": box}),
        ("predict_image", "box outside the image", {"image_bytes": tf.constant(jpeg), "box": box + 500.0}),
        ("predict_image", "box of zero width", {"image_bytes": tf.constant(jpeg), "box": box * [1, 1, 0, 1]}),
        (
            "predict_images",
            "empty batch",
            {
                "image_bytes": tf.constant([], tf.string),
                "boxes": tf.zeros([0, 1, 4]),
                "box_count": tf.zeros([0], tf.int32),
            },
        ),
        (
            "predict_images",
            "box_count beyond the boxes",
            {"image_bytes": tf.constant([jpeg]), "boxes": box[None, None], "box_count": tf.constant([2])},
        ),
        (
            "predict_images",
            "one bomb among good photos",
            {
                "image_bytes": tf.constant([jpeg, png_bomb()]),
                "boxes": tf.stack([box[None], box[None]]),
                "box_count": tf.constant([1, 1]),
            },
        ),
    ]
    rows = []
    for signature, request, inputs in cases:
        try:
            signatures[signature](**inputs)
            outcome, message = "answered", ""
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            outcome = "refused"
            message = _error_message(str(error))
        rows.append({"signature": signature, "request": request, "outcome": outcome, "message": message[:200]})
    return rows


def _table(columns, rows):
    """Markdown table lines; a ``|`` inside a cell is escaped."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |")
    return lines


def markdown(result):
    soak = result["kill_soak"]
    lines = [
        "# Reliability",
        "",
        f"Measured {result['date']} on this machine by `.venv/bin/python benchmarks/reliability.py --kills={result['kills_asked']}` "
        "(rerun it to refresh this page); the fast cases run in CI as `pytest -m reliability`.",
        "",
        "## kill -9 during training",
        "",
        f"A tiny run of {result['epochs']} epochs was killed with SIGKILL {len(soak['kills'])} times at random moments "
        "(5–13 s after each start: during start-up, steps, validation, checkpoint and backup writes), then run to its end.",
        "",
        "| kill | after (s) | epochs logged | backup epoch | finished epochs not in the backup | unreadable checkpoints "
        "(last/best.keras) | half-written temporary files |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in soak["kills"]:
        lines.append(
            f"| {r['kill']} | {r['after_seconds']} | {r['epochs_logged']} | {r['backup_epoch']} | "
            f"{r['completed_epochs_not_in_backup']} | {len(r['unreadable_checkpoints'])} | "
            f"{r['half_written_temporaries']} |"
        )
    lines += [
        "",
        f"After the last start the run ended with exit status {soak['final_exit_status']}; "
        f"{len(soak['final_epochs_logged'])} epochs logged — every epoch of {result['epochs']} exactly once: "
        f"**{'yes' if soak['every_epoch_once'] else 'no'}**. "
        f"Unreadable checkpoints seen after any kill: **{soak['unreadable_checkpoints_seen']}**. A kill loses at most "
        "the epoch in progress (it is run again from the backup of the last finished one). A kill during a save "
        "leaves the previous checkpoint whole and a hidden `.last.*.tmp.keras` beside it, which the next start "
        f"removes (left at the end: {soak['temporaries_left_at_the_end']}).",
        "",
        "## Damaged files",
        "",
    ]
    lines += _table(
        ("kind", "read by", "outcome", "what it said"),
        [(c["kind"], c["entry"], c["outcome"], c["message"]) for c in result["damaged"]],
    )
    lines += [
        "",
        "A truncated JPEG is decoded as far as it goes (OpenCV fills the rest) and predicted; a damaged exported model "
        "or weights file stops the CLI with the file named; a damaged backup never stops a run.",
        "",
        "## A full disk",
        "",
        "`pytest -m reliability` writes under a file-size limit (`RLIMIT_FSIZE`, SIGXFSZ ignored: a write past it "
        "fails with EFBIG as on a full disk): saving a checkpoint fails with `OSError: cannot write .../last.keras "
        "(File too large)`, the previous `last.keras` is untouched and no temporary is left; `train.py` stops with "
        "that line and exit status 4, and once there is space the same command resumes; an export fails with one "
        "`ExportError` line (`keras: conversion failed (OSError: ... File too large)`), the previous export folder "
        "is untouched and no staging folder is left; `prepare_data.py` stops with `cannot write` naming the shard, "
        "and the split's previous shards and `meta.json` are untouched.",
        "",
    ]
    if result.get("full_disk"):
        lines += [
            "",
            "The same through the command-line programs, each run under a file-size limit below what it must write:",
            "",
        ]
        lines += _table(
            ("writer", "outcome", "previous files intact", "what it said"),
            [(r["what"], r["outcome"], "yes" if r["intact"] else "**no**", r["message"]) for r in result["full_disk"]],
        )
    if result.get("photos"):
        lines += ["", "## Photos of every kind (predict.py)", ""]
        lines += _table(
            ("photo", "outcome", "what it said"), [(r["kind"], r["outcome"], r["message"]) for r in result["photos"]]
        )
        lines += [
            "",
            "A photo whose header declares more than 100 megapixels (`hourglass_tf.images.MAX_IMAGE_PIXELS`) is refused "
            "before decoding, in Python (`people.read_rgb`), in the training pipeline and in the SavedModel's "
            "signatures; 2 KB of PNG declaring 40,000 x 40,000 would otherwise ask for 4.8 GB.",
        ]
    if result.get("serving"):
        lines += [
            "",
            "## Serving requests (the SavedModel's signatures)",
            "",
            "| signature | request | outcome | message |",
        ]
        lines.append("|---|---|---|---|")
        for r in result["serving"]:
            lines.append(f"| {r['signature']} | {r['request']} | {r['outcome']} | {r['message'].replace('|', '/')} |")
    if result.get("bad_flags"):
        counts = {}
        for r in result["bad_flags"]:
            counts.setdefault(r["script"], []).append(r)
        lines += [
            "",
            "## Bad flags at every command-line entry",
            "",
            "Unknown, inconsistent and out-of-range flags and missing files (`benchmarks/reliability.py` `BAD_FLAGS`; "
            "also `tests/test_cli_flags.py`). A clear error: non-zero exit status, the expected words said, no "
            "traceback, nothing written, and said before TensorFlow loaded.",
            "",
        ]
        lines += _table(
            ("program", "cases", "clear errors", "others"),
            [
                (
                    script,
                    len(rows),
                    sum(r["outcome"] == "clear error" for r in rows),
                    "; ".join(f"`{r['args']}`: {r['outcome']}" for r in rows if r["outcome"] != "clear error"),
                )
                for script, rows in sorted(counts.items())
            ],
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_integer("kills", 12, "SIGKILLs during the training run.")
    flags.DEFINE_integer("epochs", 100, "Epochs of the killed run.")
    flags.DEFINE_integer("seed", 0, "Seed of the kill moments.")
    flags.DEFINE_string("out", "docs/reliability.md", "The page to write.")
    flags.DEFINE_string("json", "runs/reliability.json", "The raw results.")

    def main(argv):
        from hourglass_tf.data import synthetic

        f = flags.FLAGS
        work = pathlib.Path(tempfile.mkdtemp(prefix="hourglass_reliability_"))
        synthetic.generate(work / "data", num_train=48, num_valid=8, image_size=96, seed=1)
        result = {
            "date": time.strftime("%Y-%m-%d"),
            "kills_asked": f.kills,
            "epochs": f.epochs,
            "kill_soak": kill_soak(work, f.kills, f.epochs, f.seed),
        }
        result["damaged"] = damaged_files(work)
        result["photos"] = photo_kinds(work)
        result["full_disk"] = full_disk(work)
        result["serving"] = serving_requests(work)
        model_file = tiny_model_file(work / "flags_model.keras")
        result["bad_flags"] = [r for script in sorted(BAD_FLAGS) for r in bad_flags(script, model_file, work / "flags")]
        pathlib.Path(f.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(f.json).write_text(json.dumps(result, indent=1))
        pathlib.Path(f.out).write_text(markdown(result))
        print(markdown(result))
        shutil.rmtree(work, ignore_errors=True)

    app.run(main)
