"""Writes a trained checkpoint as a model shipped with the package (hourglass_tf/models/NAME.keras).

    python scripts/ship_model.py --checkpoint=runs/lspet_long/best.keras --name=lspet \
        --recipe=lspet.flags,lspet_long.flags --run_dir=runs/lspet,runs/lspet_long \
        --evaluations=flip:runs/lspet_long/eval,dark:runs/lspet_long/eval_dark,bfloat16:runs/lspet_long/eval_bf16

The file keeps the checkpoint's description and adds to its provenance the recipe (the flagfile's text), the
commit, the training time (the runs' log.csv files, plus the training time of the shipped model the first of
them started from, when it started from one by name: ``--init_weights=lspet``) and the validation figures of
each named evaluation folder (``scripts/evaluate.py``'s metrics.json: limbs and mean). The model card
hourglass_tf/models/NAME.md is written by hand.
"""

import json
import pathlib
import subprocess
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "The trained .keras model (a run's best.keras).")
flags.DEFINE_string("name", "lspet", "The shipped model's name (hourglass_tf.pretrained.MODELS).")
flags.DEFINE_list("recipe", None, "The flagfile(s) that trained it, stage by stage (their text is stored).")
flags.DEFINE_list("run_dir", [], "The run folder(s), stage by stage: their log.csv files give the training time.")
flags.DEFINE_list(
    "evaluations",
    [],
    "LABEL:FOLDER pairs of evaluate.py output folders (metrics.json). With both 'flip' (float32) and 'bfloat16' "
    "(--precision=bfloat16), the bfloat16 check is stored: passed when the limb PCK moved at most "
    "backends.BFLOAT16_TOLERANCE points.",
)
flags.DEFINE_enum(
    "decoding",
    None,
    ["quarter", "dark"],
    "The sub-pixel rule the shipped model is decoded with by default (its description's decoding); chosen on "
    "the validation figures. Default: the checkpoint's (quarter for a model trained here).",
)
flags.mark_flags_as_required(["checkpoint", "recipe"])


def figures_from(evaluations):
    """{LABEL_limbs: ..., LABEL_mean: ...} from each LABEL:FOLDER's metrics.json (percent)."""
    figures = {}
    for item in evaluations:
        label, _, folder = item.partition(":")
        if not folder:
            raise ValueError(f"--evaluations takes LABEL:FOLDER pairs, received {item!r}")
        result = json.loads((pathlib.Path(folder) / "metrics.json").read_text())
        figures[f"limb_pck_{label}"] = round(result["mean_limbs"], 2)
        figures[f"mean_pck_{label}"] = round(result["summary"]["Mean"], 2)
        figures[f"{label}_settings"] = {
            k: result.get(k) for k in ("refine", "test_scales", "flip_test", "precision", "people")
        }
    return figures


def bfloat16_check(figures):
    """The bfloat16 accuracy check from the 'flip' and 'bfloat16' evaluations, or None without both."""
    from hourglass_tf.backends import BFLOAT16_TOLERANCE

    if "limb_pck_flip" not in figures or "limb_pck_bfloat16" not in figures:
        return None
    change = figures["limb_pck_bfloat16"] - figures["limb_pck_flip"]
    return {
        "limb_pck_float32": figures["limb_pck_flip"],
        "limb_pck_bfloat16": figures["limb_pck_bfloat16"],
        "tolerance": BFLOAT16_TOLERANCE,
        "passed": abs(change) <= BFLOAT16_TOLERANCE,
    }


def training_seconds(run_dir):
    """The sum of the run's epoch times (``epoch_seconds`` in log.csv; resumed processes included)."""
    from hourglass_tf.evaluation import read_training_log

    log = read_training_log(pathlib.Path(run_dir) / "log.csv")
    return round(float(log["epoch_seconds"].sum()), 1)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from hourglass_tf import pretrained

    if FLAGS.name not in pretrained.MODELS:
        raise app.UsageError(f"{FLAGS.name!r} is not a shipped model's name; add it to pretrained.MODELS first")

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    try:
        figures = figures_from(FLAGS.evaluations)
        path = pretrained.ship(
            FLAGS.checkpoint,
            FLAGS.name,
            recipe="".join(f"# ---- {name}\n{pathlib.Path(name).read_text()}" for name in FLAGS.recipe),
            figures=figures,
            bfloat16_check=bfloat16_check(figures),
            training_seconds=(
                sum(training_seconds(run) for run in FLAGS.run_dir)
                + pretrained.inherited_training_seconds(FLAGS.checkpoint)
                if FLAGS.run_dir
                else None
            ),
            commit=commit,
            decoding=FLAGS.decoding,
        )
    except (ValueError, OSError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"written {path} ({path.stat().st_size / 1e6:.1f} MB): {pretrained.summary(FLAGS.name)}")
    return 0


if __name__ == "__main__":
    app.run(main)
