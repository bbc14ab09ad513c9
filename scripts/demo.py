"""The main job on the embedded default (`make demo`): synthetic data -> training -> evaluation -> pictures.

    python scripts/demo.py --flagfile=demo.flags

1. generates the synthetic dataset into --data_dir when it is not there;
2. trains with the flags (demo.flags: a small model, a fixed 1,200 steps: about 5 minutes on 2 fast CPU cores,
   said before training from the first steps), starting afresh in a run folder it made itself (a folder it
   did not make is never deleted);
3. evaluates the best checkpoint on the synthetic validation split with the paper's flip test (PCKh@0.5);
4. writes skeleton overlays of validation images (best, median and worst people) and the PCKh curve;
5. prints where everything is and writes RUN_DIR/summary.json (val_pckh in percent, train_seconds, paths).
"""

import json
import os
import pathlib
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hourglass_tf import runtime  # noqa: E402

runtime.tune_allocators()  # before TensorFlow's first op: the allocator settings the package measured faster
runtime.use_onednn_for_training()  # oneDNN's kernels on every x86 CPU: faster training steps on AVX2 ones

from absl import app, flags  # noqa: E402

from hourglass_tf import flags as train_flags  # noqa: E402

train_flags.define_train_flags()
flags.DEFINE_integer("synthetic_train", 1000, "Synthetic training images to generate when --data_dir has none.")
flags.DEFINE_integer("synthetic_valid", 200, "Synthetic validation images to generate when --data_dir has none.")
FLAGS = flags.FLAGS
DEMO_MARK = ".made_by_demo"  # the demo only ever deletes a run folder that holds this file


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from hourglass_tf import evaluation, metrics
    from hourglass_tf.data import synthetic
    from hourglass_tf.train import train

    try:
        config, precision_note = train_flags.config_from_flags(validate=True)  # demo.flags: --mixed_precision=auto
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if config.dataset != "synthetic" or config.data_dir is None:
        raise app.UsageError("the demo runs on --dataset=synthetic with a --data_dir (see demo.flags)")
    if precision_note:
        print(precision_note)
    start = time.time()
    data_dir, run_dir = pathlib.Path(config.data_dir), pathlib.Path(config.run_dir)
    if run_dir.exists():
        if not (run_dir / DEMO_MARK).is_file():
            print(
                f"error: {run_dir} exists and was not made by the demo; the demo starts afresh and would delete it. "
                "Give another --run_dir, or remove the folder yourself",
                file=sys.stderr,
            )
            return 2
        print(f"removing the previous demo run in {run_dir}")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / DEMO_MARK).write_text("made by scripts/demo.py, which deletes this folder when it runs again\n")
    if not (data_dir / "annot" / "valid.json").exists():
        print(f"[1/4] generating the synthetic dataset in {data_dir}")
        synthetic.generate(data_dir, FLAGS.synthetic_train, FLAGS.synthetic_valid, seed=config.seed)
    else:
        print(f"[1/4] synthetic dataset found in {data_dir}")
    (run_dir / "flags.txt").write_text(train_flags.flags_text(config))
    print(
        f"[2/4] training ({config.epochs} epochs of {config.num_stacks} stacks x {config.filters} features, "
        f"{config.input_size} px)"
    )
    trained = train(config)["summary"]
    print("[3/4] evaluating the best checkpoint on the validation split (flip test)")
    eval_dir = run_dir / "eval"
    result = evaluation.evaluate_model(
        run_dir / "best.keras",
        "synthetic",
        "valid",
        data_dir=str(data_dir),
        flip_test=True,
        output_dir=eval_dir,
        progress=False,
    )
    print(metrics.format_table(result, "PCKh"))
    print("[4/4] pictures written")
    summary = {
        "val_pckh": result["summary"]["Mean"],
        "val_pckh_table": result["summary"],
        "val_pckh_during_training": trained["val_pckh"],
        "stack_accuracy": result["stack_accuracy"],
        "train_seconds": round(trained["train_seconds"], 1),
        "total_seconds": round(time.time() - start, 1),
        "epochs": trained["epochs_run"],
        "mixed_precision": config.mixed_precision,
        "paths": {
            "best_model": str(run_dir / "best.keras"),
            "last_model": str(run_dir / "last.keras"),
            "training_log": str(run_dir / "log.csv"),
            "tensorboard": str(run_dir / "logs"),
            "overlays": str(eval_dir / "examples.png"),
            "pckh_curve": str(eval_dir / "pck_curve.png"),
            "metrics": str(eval_dir / "metrics.json"),
            "predictions": str(eval_dir / "predictions.h5"),
            "summary": str(run_dir / "summary.json"),
        },
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("val_pckh", "train_seconds", "total_seconds")}, indent=2))
    for name, path in summary["paths"].items():
        print(f"  {name:12s} {path}")
    print(f"validation PCKh@0.5 (flip test): {summary['val_pckh']:.1f} %")
    return 0


if __name__ == "__main__":
    app.run(main)
