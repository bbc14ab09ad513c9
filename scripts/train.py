"""Trains a stacked hourglass (the paper's recipe by default).

    python scripts/train.py --flagfile=mpii.flags --data_dir=/path/to/mpii
    python scripts/train.py --flagfile=lspet.flags
    python scripts/train.py --flagfile=demo.flags

Every field of ``hourglass_tf.train.TrainConfig`` is a flag. Unknown or inconsistent flags stop the
program before anything is built. Killed runs resume from ``RUN_DIR/backup`` when started again with the
same flags.

Exit status: 0 done (or the time budget spent), 1 unknown flags, 2 bad flags or data, 3 stopped early (a
non-finite loss), 4 a file could not be written (a full disk, say: the checkpoints already written stay whole).
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hourglass_tf import runtime  # noqa: E402

runtime.tune_allocators()  # before TensorFlow's first op: the allocator settings the package measured faster

from absl import app  # noqa: E402

from hourglass_tf import flags as train_flags  # noqa: E402

train_flags.define_train_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from hourglass_tf.data.sample import DataFileError
    from hourglass_tf.train import train

    config = train_flags.config_from_flags()
    try:
        config.validate()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run_dir = pathlib.Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "flags.txt").write_text(train_flags.flags_text(config))
    try:
        result = train(config)
    except (DataFileError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, say: every checkpoint is written beside and renamed (metadata.save_keras)
        print(
            f"error: {err}. The run stopped; the checkpoints already written are whole. "
            "Free some space and start the same command again to resume.",
            file=sys.stderr,
        )
        return 4
    summary = result["summary"]
    print(
        f"done: {summary['epochs_run']} epoch(s) in {summary['train_seconds']:.0f} s; "
        f"{config.metric_name} = {summary[config.metric_name]}; run directory {run_dir}"
    )
    if summary["stopped_because"]:
        print(f"stopped early: {summary['stopped_because']}")
        # the time budget ending a run is its plan (exit 0); anything else stopping it is not (exit 3)
        return 0 if summary["stopped_because"].startswith("time budget") else 3
    return 0


if __name__ == "__main__":
    app.run(main)
