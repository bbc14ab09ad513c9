"""``evaluate_model``: a model on a dataset split, every result written to a folder."""

import json
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
    refine=None,
    test_scales=(1.0,),
    options=None,
    oks_sigmas=None,
    precision="float32",
):
    """Predicts a split with a model (any format) and writes every result to ``output_dir``.

    Writes: ``predictions.h5`` / ``predictions.mat`` (1-based, original layout and MPII
    submission), ``metrics.json`` (table, per joint, curves, AUC, per-stack accuracy,
    occlusion analysis), ``pck_curve.png``, ``presence_pr.png`` and, from raw files,
    ``examples.png`` (best, median, worst people).

    ``refine`` is the decoder's sub-pixel step (``HeatmapCodec``): ``"quarter"`` (the
    paper's) or ``"dark"``, None for the model's own (its description's ``decoding``);
    ``test_scales`` the person box multipliers whose heatmaps are averaged (``Predictor``;
    the paper's single scale by default). ``metrics.json`` records both.

    ``options`` (``coco_keypoints.Options``) says how a ``coco_keypoints`` dataset is read. For COCO-format
    data (``coco``, ``coco_keypoints``) read from ``data_dir``, ``coco_results.json`` is written and scored by
    ``pycocotools`` (OKS AP/AR, ``coco_ap`` in the metrics; ``oks_sigmas``: one value or one per joint, see
    ``coco_eval.sigmas_for``). ``precision``: ``float32`` (the reported figures), or ``bfloat16`` / ``auto`` for
    a ``.keras`` model (``backends.choose_precision``).

    Returns:
      the ``metrics.json`` dict.
    """
    from hourglass_tf.data import coco_keypoints, pipeline, readers, sources, tfrecords
    from hourglass_tf.inference import Predictor, predict_dataset

    if dataset == coco_keypoints.DATASET:
        options = options or coco_keypoints.Options()
    meta = tfrecords.read_meta(tfrecord_dir) if tfrecord_dir is not None and dataset == coco_keypoints.DATASET else None
    # A model without a description is taken to predict the dataset's joints; one with a description must.
    predictor = Predictor.from_file(
        model_path,
        skeleton=readers.dataset_skeleton(dataset, data_dir, options, meta, split),
        flip_test=flip_test,
        refine=refine,
        scales=test_scales,
        precision=precision,
    )
    source, skeleton, report, count = sources.load_source(
        dataset, split, data_dir, tfrecord_dir, input_size=predictor.input_size, options=options
    )
    if max_samples:
        source = source.take(max_samples)
        count = min(count, max_samples)
    data = pipeline.make_dataset(
        source, skeleton, 1, batch_size, input_size=predictor.input_size, training=False, with_meta=True
    )
    pred = predict_dataset(predictor, data, all_stacks=True, progress=progress, total=count, source=source)
    threshold = metrics.pck_threshold(dataset, options.normalizer if options else None)
    result = metrics.evaluate(
        pred["keypoints"], pred["joints"], pred["present"], pred["normalizer"], skeleton, threshold
    )
    result.update(
        dataset=dataset,
        split=split,
        model=str(model_path),
        flip_test=predictor.flip_test,
        refine=predictor.codec.refine,
        precision=predictor.precision,
        test_scales=list(predictor.scales),
        people=int(len(pred["keypoints"])),
        skipped=report.as_dict(),
        stack_accuracy=stack_accuracy(pred, skeleton, threshold),
        occlusion=occlusion_analysis(pred, skeleton, threshold),
    )
    output_dir = pathlib.Path(output_dir)
    if data_dir is not None and dataset in ("coco", coco_keypoints.DATASET):
        from hourglass_tf.evaluation import coco_eval

        if dataset == "coco":
            gt_file = (
                pathlib.Path(data_dir)
                / "annotations"
                / f"person_keypoints_{'train' if split == 'train' else 'val'}2017.json"
            )
            category = 1
        else:
            gt_file, category = coco_keypoints.category_id(data_dir, options, split)
        gt = coco_eval.ground_truth(gt_file, category)
        results = coco_eval.keypoint_results(pred, coco_eval.annotation_image_ids(gt), category)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "coco_results.json").write_text(json.dumps(results))
        result["coco_ap"] = coco_eval.oks_ap(gt, results, coco_eval.sigmas_for(skeleton, oks_sigmas))
    write_predictions(pred["keypoints"], output_dir)
    np.save(output_dir / "predictions.npy", pred["keypoints"])
    (output_dir / "ids.txt").write_text("\n".join(pred["id"]) + "\n")
    write_json(result, output_dir / "metrics.json")
    name = "PCKh" if threshold == 0.5 else "PCK"
    plot_curves(result, output_dir / "pck_curve.png", f"{name}, {dataset} {split}")
    plot_presence(result["occlusion"]["presence"], output_dir / "presence_pr.png")
    if data_dir is not None:
        samples = {s.sample_id: s.image_path for s in readers.load_dataset(dataset, data_dir, split, options)}
        example_grid(pred, data_dir, [samples[i] for i in pred["id"]], skeleton, output_dir / "examples.png")
    return result
