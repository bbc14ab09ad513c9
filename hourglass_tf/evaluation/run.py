"""``evaluate_model``: a model on a dataset split, every result written to a folder."""

import pathlib

import numpy as np

from hourglass_tf import metrics
from hourglass_tf.evaluation.analyses import occlusion_analysis, stack_accuracy
from hourglass_tf.evaluation.files import write_json, write_predictions
from hourglass_tf.evaluation.plots import example_grid, plot_curves, plot_presence


def evaluate_model(
    model_path,
    dataset,
    split="valid",
    data_dir=None,
    tfrecord_dir=None,
    flip_test=True,
    output_dir="runs/eval",
    batch_size=16,
    max_samples=0,
    progress=True,
    refine="quarter",
    test_scales=(1.0,),
):
    """Predicts a split with a ``.keras`` model and writes every result to ``output_dir``.

    Writes: ``predictions.h5`` / ``predictions.mat`` (1-based, original layout and MPII
    submission), ``metrics.json`` (table, per joint, curves, AUC, per-stack accuracy,
    occlusion analysis), ``pck_curve.png``, ``presence_pr.png`` and, from raw files,
    ``examples.png`` (best, median, worst people).

    ``refine`` is the decoder's sub-pixel step (``HeatmapCodec``): ``"quarter"`` (the
    paper's) or ``"dark"``; ``test_scales`` the person box multipliers whose heatmaps are
    averaged (``Predictor``; the paper's single scale by default). ``metrics.json``
    records both.

    Returns:
      the ``metrics.json`` dict.
    """
    from hourglass_tf.data import pipeline, readers, sources
    from hourglass_tf.inference import Predictor, predict_dataset

    # A model without a description is taken to predict the dataset's joints; one with a description must.
    predictor = Predictor.from_file(
        model_path, skeleton=readers.skeleton_of(dataset), flip_test=flip_test, refine=refine, scales=test_scales
    )
    source, skeleton, report, count = sources.load_source(
        dataset, split, data_dir, tfrecord_dir, input_size=predictor.input_size
    )
    if max_samples:
        source = source.take(max_samples)
        count = min(count, max_samples)
    data = pipeline.make_dataset(
        source, skeleton, 1, batch_size, input_size=predictor.input_size, training=False, with_meta=True
    )
    pred = predict_dataset(predictor, data, all_stacks=True, progress=progress, total=count, source=source)
    threshold = metrics.pck_threshold(dataset)
    result = metrics.evaluate(
        pred["keypoints"], pred["joints"], pred["present"], pred["normalizer"], skeleton, threshold
    )
    result.update(
        dataset=dataset,
        split=split,
        model=str(model_path),
        flip_test=flip_test,
        refine=refine,
        test_scales=list(predictor.scales),
        people=int(len(pred["keypoints"])),
        skipped=report.as_dict(),
        stack_accuracy=stack_accuracy(pred, skeleton, threshold),
        occlusion=occlusion_analysis(pred, skeleton, threshold),
    )
    output_dir = pathlib.Path(output_dir)
    write_predictions(pred["keypoints"], output_dir)
    np.save(output_dir / "predictions.npy", pred["keypoints"])
    (output_dir / "ids.txt").write_text("\n".join(pred["id"]) + "\n")
    write_json(result, output_dir / "metrics.json")
    name = "PCKh" if threshold == 0.5 else "PCK"
    plot_curves(result, output_dir / "pck_curve.png", f"{name}, {dataset} {split}")
    plot_presence(result["occlusion"]["presence"], output_dir / "presence_pr.png")
    if data_dir is not None:
        samples = {s.sample_id: s.image_path for s in readers.load_dataset(dataset, data_dir, split)}
        example_grid(pred, data_dir, [samples[i] for i in pred["id"]], skeleton, output_dir / "examples.png")
    return result
