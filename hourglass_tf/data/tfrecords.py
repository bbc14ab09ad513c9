"""TFRecord shards of person regions, and reading them back as pipeline sources.

Each record stores the region around one person that the largest augmentation can
reach (box side 200 x scale x 1.25, rotated by up to 30 degrees), downscaled when
the image has more pixels than the smallest augmentation scale (0.75) needs at the
target input size, so training decodes small JPEGs. Coordinates stay consistent:
the record's joints and centre are in the stored region's pixels, and ``offset``
(2,) and ``factor`` (2,) map them back: ``region = (original - offset) * factor``.

Files: ``OUTPUT/{split}-00000-of-0000N.tfrecord`` and ``OUTPUT/meta.json`` (dataset,
joint count, input size, counts and the skip report per split).
"""

import math
import os
import pathlib
import struct

import cv2
import numpy as np
import tensorflow as tf

from hourglass_tf.boxes import PERSON_BOX_UNIT
from hourglass_tf.data.pipeline import inspect_sample
from hourglass_tf.data.sample import DataFileError, SkipReport
from hourglass_tf.data.shard_meta import (  # noqa: F401 - the shard folder's meta.json, re-exported here
    MAX_ROTATION_DEG,
    MAX_SCALE,
    MIN_SCALE,
    check_compatible,
    read_meta,
    region_bounds,
    write_meta,
)

JPEG_QUALITY = 95


def region_of(sample, image_size, input_size):
    """Integer region (x0, y0, x1, y1) and downscale factor for one sample.

    The region holds every pixel a crop with scale factor <= 1.25 and rotation
    <= 30 deg can sample; the factor keeps the resolution the 0.75 crop needs.
    """
    width, height = image_size
    side = PERSON_BOX_UNIT * sample.scale * MAX_SCALE
    theta = math.radians(MAX_ROTATION_DEG)
    half = side * (abs(math.cos(theta)) + abs(math.sin(theta))) / 2 + 2
    cx, cy = float(sample.center[0]), float(sample.center[1])
    x0, y0 = max(0, int(math.floor(cx - half))), max(0, int(math.floor(cy - half)))
    x1, y1 = min(width, int(math.ceil(cx + half)) + 1), min(height, int(math.ceil(cy + half)) + 1)
    factor = min(1.0, input_size / (PERSON_BOX_UNIT * sample.scale * MIN_SCALE))
    return (x0, y0, x1, y1), factor


def _float_feature(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(values, np.float32).ravel()))


def _int_feature(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=np.asarray(values, np.int64).ravel()))


def _bytes_feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def encode_record(sample, image, input_size):
    """A serialized ``tf.train.Example`` of ``sample``'s region of ``image`` (H, W, 3) uint8 RGB."""
    (x0, y0, x1, y1), factor = region_of(sample, (image.shape[1], image.shape[0]), input_size)
    region = image[y0:y1, x0:x1]
    if region.size == 0:
        raise ValueError(f"sample {sample.sample_id}: the person region lies outside the image")
    if factor < 1.0:
        # With fx = fy and no dsize, OpenCV maps pixel centres exactly: x' = (x + 0.5) * f - 0.5.
        region = cv2.resize(region, (0, 0), fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    factors = np.array([factor, factor], np.float64)
    # Pixel centres: region = (original - x0 + 0.5) * f - 0.5 = (original - offset) * f.
    offset = np.array([x0, y0], np.float64) - 0.5 + 0.5 / factors
    ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(region[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"sample {sample.sample_id}: JPEG encoding failed")
    joints = np.where(sample.present[:, None], (sample.joints - offset) * factors, 0.0)
    feature = {
        "image": _bytes_feature(jpeg.tobytes()),
        "joints": _float_feature(joints),
        "present": _int_feature(sample.present),
        "visible": _int_feature(sample.visible),
        "center": _float_feature((sample.center - offset) * factors),
        "scale": _float_feature([sample.scale * float(np.mean(factors))]),
        "normalizer": _float_feature([sample.normalizer]),
        "offset": _float_feature(offset),
        "factor": _float_feature(factors),
        "id": _bytes_feature(sample.sample_id.encode()),
        "image_path": _bytes_feature(sample.image_path.encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shards(samples, root, output_dir, split, input_size=256, samples_per_shard=1000, progress=True):
    """Converts ``samples`` (images under ``root``) into ``OUTPUT/{split}-*.tfrecord`` shards.

    Bad samples are skipped and counted (escaping path, missing, corrupt or
    truncated image, bad scale or centre, no annotated joint, joints far outside).
    Shards are written under temporary names and renamed when complete.

    Returns:
      SkipReport of the split.
    """
    root = pathlib.Path(os.path.abspath(root))
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = SkipReport()
    bar = tf.keras.utils.Progbar(len(samples), unit_name="sample") if progress and samples else None
    every = max(1, len(samples) // 20)
    num_shards = max(1, math.ceil(len(samples) / samples_per_shard))
    finals = [output_dir / f"{split}-{s:05d}-of-{num_shards:05d}.tfrecord" for s in range(num_shards)]
    temps = [final.with_name(f".{final.name}.tmp") for final in finals]
    writers = []
    last_image = {}
    try:
        writers = [tf.io.TFRecordWriter(str(tmp)) for tmp in temps]
        for i, sample in enumerate(samples):
            problem, image = inspect_sample(sample, root, last_image=last_image)
            if problem:
                report.skip(problem, sample.sample_id)
            else:
                shard = report.kept % num_shards
                record = encode_record(sample, image, input_size)
                _checked_io(temps[shard], lambda: writers[shard].write(record))  # noqa: B023 - called at once
                report.kept += 1
            if bar is not None and ((i + 1) % every == 0 or i == len(samples) - 1):
                bar.update(i + 1)
        for writer, tmp in zip(writers, temps):  # the last bytes reach the disk here: a full disk fails now
            _checked_io(tmp, writer.close)
    except BaseException:
        for writer, tmp in zip(writers, temps):
            try:
                writer.close()
            except tf.errors.OpError:
                pass
            tmp.unlink(missing_ok=True)
        raise
    # Only now replace the split's previous shards: an interrupted run leaves them intact.
    for old in output_dir.glob(f"{split}-*.tfrecord"):
        if old not in finals:
            old.unlink()
    for tmp, final in zip(temps, finals):
        tmp.replace(final)
    return report


def _checked_io(path, write):
    """Runs ``write``; TensorFlow's write errors (a full disk, a file-size limit) become one OSError naming the
    file, so that callers report one line instead of a traceback from the TensorFlow runtime."""
    try:
        return write()
    except tf.errors.OpError as error:
        raise OSError(f"{path}: cannot write ({error.message.strip()}); the previous shards are untouched") from None


def record_offsets(path):
    """Byte offsets of the records in one TFRecord file, found by walking its length fields (nothing decoded).

    Raises:
      DataFileError naming the file when a record's length field or body runs past the end (a truncated or
      half-copied shard).
    """
    path = pathlib.Path(path)
    size = path.stat().st_size
    offsets, offset = [], 0
    with open(path, "rb") as f:
        while offset < size:
            header = f.read(12)  # uint64 length, uint32 masked CRC of the length
            if len(header) < 12:
                raise DataFileError(path, f"truncated: record {len(offsets)} at byte {offset} has no complete header")
            (length,) = struct.unpack("<Q", header[:8])
            end = offset + 12 + length + 4  # the body and the uint32 masked CRC of the body
            if end > size:
                raise DataFileError(
                    path, f"truncated: record {len(offsets)} at byte {offset} needs {end} bytes, the file has {size}"
                )
            f.seek(end)
            offsets.append(offset)
            offset = end
    return offsets


def count_records(path):
    """Records in one TFRecord file (``record_offsets``: the length fields walked, nothing decoded)."""
    return len(record_offsets(path))


def verify_records(path):
    """Reads every record of one TFRecord file with its checksums (TensorFlow's reader checks the CRC of each
    length and body). Returns the record count; DataFileError naming the file, the record and its byte offset
    when one is damaged (the reader would stop there and drop every record after it)."""
    offsets = record_offsets(path)
    read = 0
    try:
        for _ in tf.data.TFRecordDataset(str(path)).batch(256):
            read = min(read + 256, len(offsets))
    except tf.errors.DataLossError:
        read = _records_before_damage(path, read)
        raise DataFileError(
            path,
            f"damaged: record {read} at byte {offsets[read]} fails its checksum; the {len(offsets) - read} "
            f"record(s) from there on cannot be read. Write the shards again (scripts/prepare_data.py)",
        ) from None
    return len(offsets)


def _records_before_damage(path, start):
    """How many records read whole before the first damaged one (counting one at a time from ``start``)."""
    count = 0
    try:
        for _ in tf.data.TFRecordDataset(str(path)).skip(start):
            count += 1
    except tf.errors.DataLossError:
        pass
    return start + count


def check_shards(shard_dir, split, expected):
    """Every ``split`` shard whole, every record's checksums right and, together, the ``expected`` records
    ``meta.json`` recorded.

    A shard cut short or damaged inside would otherwise end each epoch early (TensorFlow's reader stops at the
    damaged record) or stop training deep inside TensorFlow; a missing one would silently shrink the data.
    Raises DataFileError naming the shard (and the record and byte offset) or the folder.
    """
    files = sorted(pathlib.Path(shard_dir).glob(f"{split}-*.tfrecord"))
    found = sum(verify_records(path) for path in files)
    if found != expected:
        raise DataFileError(
            shard_dir,
            f"the {split} shards hold {found} records, meta.json recorded {expected} (a shard missing or replaced?)",
        )
    return found


def read_shards(shard_dir, split, num_joints, shuffle_files=False, seed=0):
    """Per-sample dicts (the ``samples_to_dataset`` format) from ``shard_dir/{split}-*.tfrecord``."""
    files = sorted(str(p) for p in pathlib.Path(shard_dir).glob(f"{split}-*.tfrecord"))
    if not files:
        raise DataFileError(shard_dir, f"no {split}-*.tfrecord shards found")
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "joints": tf.io.FixedLenFeature([num_joints * 2], tf.float32),
        "present": tf.io.FixedLenFeature([num_joints], tf.int64),
        "visible": tf.io.FixedLenFeature([num_joints], tf.int64),
        "center": tf.io.FixedLenFeature([2], tf.float32),
        "scale": tf.io.FixedLenFeature([], tf.float32),
        "normalizer": tf.io.FixedLenFeature([], tf.float32),
        "offset": tf.io.FixedLenFeature([2], tf.float32),
        "factor": tf.io.FixedLenFeature([2], tf.float32),
        "id": tf.io.FixedLenFeature([], tf.string),
    }

    def parse(serialized):
        example = tf.io.parse_single_example(serialized, spec)
        example["joints"] = tf.reshape(example["joints"], [num_joints, 2])
        example["present"] = tf.cast(example["present"], tf.bool)
        example["visible"] = tf.cast(example["visible"], tf.bool)
        return example

    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        dataset = dataset.shuffle(len(files), seed=seed)
    dataset = dataset.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(4, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
