"""A TFRecord shard folder's ``meta.json``: what ``scripts/prepare_data.py`` wrote and the settings it serves.

No TensorFlow here: ``train.py`` checks a shard folder against its settings before TensorFlow loads.
``hourglass_tf.data.tfrecords`` (writing and reading the shards) re-exports these names.
"""

import json
import pathlib

from hourglass_tf.data.sample import DataFileError

MAX_ROTATION_DEG = 30.0
MAX_SCALE = 1.25
MIN_SCALE = 0.75


def write_meta(output_dir, meta):
    """Writes ``meta.json`` atomically (a failed write leaves the previous one and no temporary)."""
    path = pathlib.Path(output_dir) / "meta.json"
    tmp = path.with_name(".meta.json.tmp")
    try:
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def read_meta(shard_dir):
    """``meta.json`` of a shard folder, with a clear error when absent."""
    path = pathlib.Path(shard_dir) / "meta.json"
    if not path.is_file():
        raise DataFileError(path, "file not found: not a folder written by scripts/prepare_data.py")
    return json.loads(path.read_text())


def region_bounds(input_size):
    """What shards written for ``input_size`` hold: the augmentation and input size they serve without loss."""
    return {"max_rotation": MAX_ROTATION_DEG, "min_scale": MIN_SCALE, "max_scale": MAX_SCALE, "input_size": input_size}


def check_compatible(meta, shard_dir, augmentation=None, input_size=None):
    """DataFileError unless shards written with ``meta`` serve ``augmentation`` and ``input_size`` without loss.

    A rotation or a scale factor beyond the stored region reads black borders; a smaller scale
    factor or a larger input than the shards were downscaled for reads blurred crops.
    """
    path = pathlib.Path(shard_dir) / "meta.json"
    bounds = meta.get("region")
    if bounds is None:
        raise DataFileError(
            path,
            "written before shards recorded the augmentation they hold; regenerate them with scripts/prepare_data.py",
        )
    problems = []
    if input_size is not None and input_size > bounds["input_size"]:
        problems.append(
            f"input_size={input_size} > the {bounds['input_size']} px they were written for (blurred crops)"
        )
    if augmentation is not None:
        if augmentation.rotation > bounds["max_rotation"]:
            problems.append(f"rotation={augmentation.rotation:g} > {bounds['max_rotation']:g} degrees (black borders)")
        if augmentation.scale_max > bounds["max_scale"]:
            problems.append(f"scale_max={augmentation.scale_max:g} > {bounds['max_scale']:g} (black borders)")
        if augmentation.scale_min < bounds["min_scale"]:
            problems.append(f"scale_min={augmentation.scale_min:g} < {bounds['min_scale']:g} (blurred crops)")
    if problems:
        raise DataFileError(
            path,
            "the shards do not serve these settings: "
            + "; ".join(problems)
            + f". Regenerate them with scripts/prepare_data.py --input_size={max(input_size or 0, bounds['input_size'])}"
            f" (its region allows rotation <= {MAX_ROTATION_DEG:g} and scale {MIN_SCALE:g}-{MAX_SCALE:g}),"
            " or train from --data_dir",
        )
