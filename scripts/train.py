"""Trains a stacked hourglass (the paper's recipe by default).

    python scripts/train.py --flagfile=mpii.flags --data_dir=/path/to/mpii
    python scripts/train.py --flagfile=lspet.flags
    python scripts/train.py --flagfile=demo.flags

Every field of ``hourglass_tf.train.TrainConfig`` is a flag. Unknown or inconsistent flags stop the
program before anything is built. Killed runs resume from ``RUN_DIR/backup`` when started again with the
same flags.

Exit status: 0 done (or the time budget spent), 1 unknown flags or an unexpected error (its type and message;
the traceback with --verbose=2), 2 bad flags, data or a reused run folder with other settings, 3 stopped early
(a non-finite loss), 4 a file could not be read or written (the disk-full wording only for ENOSPC/EFBIG; the
checkpoints already written stay whole).
"""

import errno
import os
import pathlib
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hourglass_tf import runtime  # noqa: E402

runtime.tune_allocators()  # before TensorFlow's first op: the allocator settings the package measured faster
runtime.use_onednn_for_training()  # oneDNN's kernels on every x86 CPU: faster training steps on AVX2 ones

from absl import app, flags  # noqa: E402

from hourglass_tf import flags as train_flags  # noqa: E402

train_flags.define_train_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from hourglass_tf.data.sample import require_data_folders

    try:
        require_data_folders(flags.FLAGS.data_dir, flags.FLAGS.tfrecord_dir)  # before auto's check loads TensorFlow
        config, precision_note = train_flags.config_from_flags(validate=True)  # checked, then auto decided
    except ValueError as err:  # (a DataFileError too)
        print(f"error: {err}", file=sys.stderr)
        return 2
    if precision_note:
        print(precision_note)
    from hourglass_tf.data.sample import DataFileError
    from hourglass_tf.train import train  # TensorFlow loads from here: bad flags and folders are said before it

    run_dir = pathlib.Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "flags.txt").write_text(train_flags.flags_text(config))
    try:
        result = train(config)
    except (DataFileError, ValueError) as err:  # the package's own: bad flags, data or run folder
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EFBIG):  # every checkpoint is written beside and renamed
            print(
                f"error: {err}. The disk is full: the run stopped; the checkpoints already written are whole. "
                "Free some space and start the same command again to resume.",
                file=sys.stderr,
            )
        else:
            print(f"error: {type(err).__name__}: {err}. Start the same command again to resume.", file=sys.stderr)
        return 4
    except Exception as err:  # not the package's own: keep its type and message; the traceback with --verbose=2
        if config.verbose >= 2:
            traceback.print_exc()
        print(f"error: unexpected {type(err).__name__}: {err}", file=sys.stderr)
        return 1
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
