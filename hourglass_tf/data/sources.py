"""One call from a dataset name and folder (raw files or TFRecord shards) to a pipeline source."""

import numpy as np

from hourglass_tf.data import pipeline, readers, tfrecords
from hourglass_tf.data.sample import SkipReport, sides_disagree

SIDE_CONFLICT = "shoulders and hips face opposite ways"


def load_source(
    dataset,
    split,
    data_dir=None,
    tfrecord_dir=None,
    decode_check=True,
    drop_side_conflicts=False,
    augmentation=None,
    input_size=None,
    options=None,
    need_normalizers=False,
):
    """Per-sample source for ``pipeline.make_dataset``.

    ``options``: how a ``coco_keypoints`` dataset is read (``coco_keypoints.Options``; its joint set comes from
    its annotation file, or from the shards' ``meta.json``).

    With ``tfrecord_dir``, ``augmentation`` and ``input_size`` (the settings the source will be
    read with) are checked against what the shards were written for (``tfrecords.check_compatible``).

    Exactly one of ``data_dir`` (a dataset root in the layout ``readers.load_dataset``
    documents) and ``tfrecord_dir`` (a folder written by ``scripts/prepare_data.py``).
    ``drop_side_conflicts`` skips the people whose shoulders and hips face opposite ways
    (``sample.sides_disagree``: usually a left/right labelling slip), counted in the
    report under "shoulders and hips face opposite ways"; raw files only.
    ``need_normalizers`` (a split that PCK will score): a split in which no person has a normaliser (head or
    torso size) is a ValueError naming it, instead of a metric that reads NaN.

    Returns:
      (source dataset, skeleton, SkipReport, number of samples)
    """
    if (data_dir is None) == (tfrecord_dir is None):
        raise ValueError(
            f"give exactly one of data_dir and tfrecord_dir, received data_dir={data_dir!r}, tfrecord_dir={tfrecord_dir!r}"
        )
    if tfrecord_dir is not None:
        if drop_side_conflicts:
            raise ValueError(
                f"{tfrecord_dir}: drop_side_conflicts needs the raw annotations (data_dir); "
                "TFRecord shards are read as written"
            )
        meta = tfrecords.read_meta(tfrecord_dir)
        skeleton = readers.dataset_skeleton(dataset, meta=meta)
        if meta["num_joints"] != skeleton.num_joints:
            raise ValueError(
                f"{tfrecord_dir}: shards hold {meta['num_joints']} joints ({meta['dataset']}), "
                f"but --dataset={dataset} has {skeleton.num_joints}"
            )
        tfrecords.check_compatible(meta, tfrecord_dir, augmentation, input_size)
        report = SkipReport(kept=meta["splits"].get(split, {}).get("kept", 0))
        tfrecords.check_shards(tfrecord_dir, split, report.kept)
        source = tfrecords.read_shards(tfrecord_dir, split, skeleton.num_joints)
        if need_normalizers:
            batches = source.map(lambda e: e["normalizer"]).batch(4096)
            normalizers = np.concatenate([np.zeros(0), *(b.numpy() for b in batches)])
            _check_normalizers(normalizers, f"{tfrecord_dir} ({split} shards)")
        return source, skeleton, report, report.kept
    samples, skeleton = readers.load_split(dataset, data_dir, split, options)
    kept, report = pipeline.check_samples(samples, data_dir, decode=decode_check)
    if drop_side_conflicts:
        kept = report.keep(kept, lambda sample: SIDE_CONFLICT if sides_disagree(sample, skeleton) else None)
    if not kept:
        raise ValueError(f"{data_dir}: no usable {split} sample out of {len(samples)}: {report.summary()}")
    if need_normalizers:
        _check_normalizers([s.normalizer for s in kept], f"{data_dir} ({dataset} {split} split)")
    return pipeline.samples_to_dataset(kept, data_dir), skeleton, report, len(kept)


def _check_normalizers(normalizers, where):
    """ValueError naming ``where`` when no person has a usable normaliser (finite, > 0): PCK would be NaN."""
    values = np.asarray(normalizers, np.float64)
    if not np.any(np.isfinite(values) & (values > 0)):
        raise ValueError(
            f"{where}: no person has a normaliser (head or torso size), so PCK cannot be computed; "
            "check the annotations (head boxes, torso joints) of this split"
        )
