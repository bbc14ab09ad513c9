"""Evaluation: files (``files``), the paper's analyses (``analyses``), pictures (``plots``) and a model on a split (``run``).

Everything is importable from here too (``from hourglass_tf import evaluation; evaluation.evaluate_files(...)``).
"""

from hourglass_tf.evaluation.analyses import occlusion_analysis, per_image_error, precision_recall, stack_accuracy
from hourglass_tf.evaluation.files import (
    evaluate_files,
    load_annotations,
    load_predictions,
    read_training_log,
    write_json,
    write_predictions,
)
from hourglass_tf.evaluation.plots import example_grid, plot_curves, plot_presence, plot_training_log
from hourglass_tf.evaluation.run import evaluate_model

__all__ = [
    "evaluate_files",
    "evaluate_model",
    "example_grid",
    "load_annotations",
    "load_predictions",
    "occlusion_analysis",
    "per_image_error",
    "plot_curves",
    "plot_presence",
    "plot_training_log",
    "precision_recall",
    "read_training_log",
    "stack_accuracy",
    "write_json",
    "write_predictions",
]
