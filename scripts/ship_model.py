"""Writes a trained checkpoint as a model shipped with the package (hourglass_tf/models/NAME.keras).

    python scripts/ship_model.py --checkpoint=runs/lspet/best.keras --name=lspet --recipe=lspet.flags \
        --run_dir=runs/lspet --evaluations=flip:runs/lspet/eval,dark:runs/lspet/eval_dark

The file keeps the checkpoint's description and adds to its provenance the recipe (the flagfile's text), the
commit, the training time (the run's log.csv) and the validation figures of each named evaluation folder
(``scripts/evaluate.py``'s metrics.json: limbs and mean). The model card hourglass_tf/models/NAME.md is written
by hand.
"""

import json
import pathlib
import subprocess
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "The trained .keras model (a run's best.keras).")
flags.DEFINE_string("name", "lspet", "The shipped model's name (hourglass_tf.pretrained.MODELS).")
flags.DEFINE_string("recipe", None, "The flagfile that trained it (its text is stored).")
flags.DEFINE_string("run_dir", None, "The run's folder: its log.csv gives the training time.")
flags.DEFINE_list("evaluations", [], "LABEL:FOLDER pairs of evaluate.py output folders (metrics.json).")
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
        figures[f"{label}_settings"] = {k: result[k] for k in ("refine", "test_scales", "flip_test", "people")}
    return figures


def training_seconds(run_dir):
    """The sum of the run's epoch times (``epoch_seconds`` in log.csv; resumed processes included)."""
    from hourglass_tf.evaluation import read_training_log

    log = read_training_log(pathlib.Path(run_dir) / "log.csv")
    return round(float(log["epoch_seconds"].sum()), 1) if "epoch_seconds" in log else None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from hourglass_tf import pretrained

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    try:
        path = pretrained.ship(
            FLAGS.checkpoint,
            FLAGS.name,
            recipe=pathlib.Path(FLAGS.recipe).read_text(),
            figures=figures_from(FLAGS.evaluations),
            training_seconds=training_seconds(FLAGS.run_dir) if FLAGS.run_dir else None,
            commit=commit,
        )
    except (ValueError, OSError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"written {path} ({path.stat().st_size / 1e6:.1f} MB): {pretrained.summary(FLAGS.name)}")
    return 0


if __name__ == "__main__":
    app.run(main)
