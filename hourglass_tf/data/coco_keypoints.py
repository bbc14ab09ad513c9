"""Any COCO keypoint dataset: the joint set comes from the file, every annotated object becomes a sample.

The COCO keypoint layout is what annotation tools export (CVAT, Label Studio, Roboflow): ``images`` (``id``,
``file_name``), ``annotations`` (``image_id``, ``category_id``, ``bbox`` [x, y, w, h], ``keypoints`` as K
triples x, y, v with v = 0 missing, 1 occluded, 2 visible, ``iscrowd``) and ``categories`` (``id``, ``name``,
``keypoints``: the joint names in order, ``skeleton``: 1-based limb pairs). Pixels are 0-based as stored.

* The joint set is the chosen category's (``options.category``: a name or an id; by default the only category
  that has keypoints). Flip pairs are derived from the joint names (``skeleton.mirror_name``: ``left_*``/
  ``right_*``, ``l_*``/``r_*``, ``front_left_paw``/``front_right_paw``, ...) or given explicitly
  (``options.flip_pairs``: ``"a:b,c:d"`` or a JSON file of name pairs). A joint set without mirror pairs
  trains without flip augmentation and is tested without the flip test (the trainer and the predictor say so).
* An annotation becomes a sample unless it is a crowd, belongs to another category, or has fewer than
  ``options.min_keypoints`` annotated keypoints (each counted in the ``skipped`` report). Its crop is its box by
  the package's rule (``boxes.person_from_box``).
* The PCK normaliser (``options.normalizer``): ``"box"``, the box's longer side (PCK@0.05, mmpose's convention
  for box-normalised PCK), or ``"joint_a:joint_b"``, the distance between two named joints (PCK@0.2, as the
  torso for LSP); NaN where it is unknown (that sample is left out of PCK, and counted).

A malformed file is a ``DataFileError`` naming the file and the record (missing keys, keypoint arrays of the
wrong length, a category without keypoints, limb indices out of range, an annotation of an unknown image).
"""

import dataclasses
import json
import pathlib

import numpy as np

from hourglass_tf import skeleton as skeletons
from hourglass_tf.boxes import person_from_box
from hourglass_tf.data.sample import DataFileError, PoseSample, require_file

DATASET = "coco_keypoints"


@dataclasses.dataclass(frozen=True)
class Options:
    """How to read a COCO keypoint dataset (``--dataset=coco_keypoints``); paths relative to the data folder."""

    category: str = None
    flip_pairs: str = None
    normalizer: str = "box"
    train_file: str = "annotations/train.json"
    val_file: str = "annotations/val.json"
    image_dir: str = "images"
    min_keypoints: int = 1

    def file(self, split):
        return {"train": self.train_file, "valid": self.val_file}[split]


def _load_json(path, default_category=None):
    path = require_file(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataFileError(path, f"not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise DataFileError(path, f"a COCO file is a JSON object, found a {type(data).__name__}")
    if default_category is not None and "categories" not in data:
        data["categories"] = [default_category]
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataFileError(path, f"missing the list {key!r}; found keys {sorted(data)}")
    return data


def choose_category(data, path, category=None):
    """The category dict to read: by name or id, or the only one with keypoints; DataFileError listing them."""
    with_keypoints = [c for c in data["categories"] if isinstance(c, dict) and c.get("keypoints")]
    listed = [f"{c.get('id')}:{c.get('name')}" for c in data["categories"] if isinstance(c, dict)]
    if category is None:
        if len(with_keypoints) != 1:
            raise DataFileError(
                path,
                f"{len(with_keypoints)} categories have keypoints ({listed}); choose one with --keypoints_category",
            )
        return with_keypoints[0]
    for c in data["categories"]:
        if isinstance(c, dict) and (str(c.get("id")) == str(category) or c.get("name") == category):
            if not c.get("keypoints"):
                raise DataFileError(path, f"category {category!r} has no keypoints")
            return c
    raise DataFileError(path, f"no category {category!r}; the file has {listed}")


def _flip_pairs(spec, joints, where):
    """Explicit flip pairs ``"a:b,c:d"`` or a JSON file of [a, b] name pairs -> index pairs."""
    if spec is None:
        return None
    text = str(spec).strip()
    if text.endswith(".json"):
        try:
            names = json.loads(pathlib.Path(text).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise DataFileError(text, f"not a readable JSON list of joint-name pairs ({err})") from None
    else:
        names = [part.split(":") for part in text.split(",") if part.strip()] if text else []
    pairs = []
    for pair in names:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(n in joints for n in pair)):
            raise DataFileError(where, f"flip pair {pair!r} must name two joints of {list(joints)}")
        pairs.append((joints.index(pair[0]), joints.index(pair[1])))
    return tuple(pairs)


def skeleton_of_category(category, path, flip_pairs=None):
    """A ``Skeleton`` from a COCO category: names = ``keypoints``, limbs = ``skeleton`` (1-based) minus 1."""
    names = category.get("keypoints")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise DataFileError(path, f"category {category.get('name')!r}: keypoints must be a list of joint names")
    limbs = category.get("skeleton") or []
    bad = [
        p
        for p in limbs
        if not (isinstance(p, list) and len(p) == 2 and all(isinstance(i, int) and 1 <= i <= len(names) for i in p))
    ]
    if bad:
        raise DataFileError(
            path,
            f"category {category.get('name')!r}: skeleton pairs {bad[:3]} are not 1-based joint indices in 1..{len(names)}",
        )
    try:
        return skeletons.Skeleton(
            str(category.get("name", "custom")),
            tuple(names),
            tuple((a - 1, b - 1) for a, b in limbs if a != b),
            _flip_pairs(flip_pairs, list(names), path),
        )
    except ValueError as err:
        raise DataFileError(path, str(err)) from None


def category_id(root, options, split):
    """(the annotation file of ``split``, the id of the category read from it)."""
    path = pathlib.Path(root) / options.file(split)
    return path, choose_category(_load_json(path), path, options.category)["id"]


def read_skeleton(root, options, split="train"):
    """The joint set of a dataset folder (its ``split`` file's chosen category)."""
    path = pathlib.Path(root) / options.file(split)
    data = _load_json(path)
    return skeleton_of_category(choose_category(data, path, options.category), path, options.flip_pairs)


def normalizer_of(joints, present, box, skeleton, normalizer):
    """The PCK normaliser of one object (pixels), NaN when unknown."""
    if normalizer == "box":
        return float(max(box[2], box[3]))
    a, b = (skeleton.index(name) for name in normalizer.split(":"))
    if not (present[a] and present[b]):
        return float("nan")
    return float(np.linalg.norm(np.asarray(joints[a]) - np.asarray(joints[b])))


def check_normalizer(normalizer, skeleton):
    """ValueError naming the choice when it is neither ``box`` nor two of the skeleton's joints."""
    if normalizer == "box":
        return
    parts = str(normalizer).split(":")
    if len(parts) != 2 or not all(p in skeleton.joints for p in parts):
        raise ValueError(
            f"pck_normalizer must be 'box' or 'joint_a:joint_b' with joints of {list(skeleton.joints)}, "
            f"received {normalizer!r}"
        )


def read(root, split, options, skeleton=None, dataset=DATASET, min_box_side=0.0):
    """Samples of a split, the skeleton they use, and the counts of annotations left out.

    Returns:
      (samples, skeleton, skipped {reason: count}, {sample_id: image_id})
    """
    return read_file(pathlib.Path(root) / options.file(split), options, skeleton, dataset, min_box_side)


def read_file(path, options, skeleton=None, dataset=DATASET, min_box_side=0.0, default_category=None):
    """``read`` for one annotation file (``default_category`` stands in when the file lists no categories)."""
    path = pathlib.Path(path)
    data = _load_json(path, default_category)
    category = choose_category(data, path, options.category)
    skeleton = skeleton or skeleton_of_category(category, path, options.flip_pairs)
    check_normalizer(options.normalizer, skeleton)
    k = skeleton.num_joints
    files = {}
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise DataFileError(path, f"images[{i}] needs id and file_name; found {image!r}"[:300])
        name = image["file_name"]
        if name.startswith(("/", "\\")) or ".." in pathlib.PurePosixPath(name.replace("\\", "/")).parts:
            raise DataFileError(path, f"images[{i}]: file_name {name!r} leaves the image folder")
        files[image["id"]] = name
    samples, skipped, image_ids = [], {}, {}

    def skip(reason):
        skipped[reason] = skipped.get(reason, 0) + 1

    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}] (id {ann.get('id') if isinstance(ann, dict) else None})"
        if not isinstance(ann, dict):
            raise DataFileError(path, f"{where} is not an object")
        if ann.get("category_id", category["id"]) != category["id"]:
            skip("another category")
            continue
        if ann.get("iscrowd", 0):
            skip("crowd")
            continue
        missing = [key for key in ("image_id", "bbox", "keypoints") if key not in ann]
        if missing:
            raise DataFileError(path, f"{where} lacks {missing}")
        kp = np.asarray(ann["keypoints"], np.float64) if isinstance(ann["keypoints"], list) else np.zeros(0)
        if kp.size != 3 * k:
            raise DataFileError(path, f"{where}: {kp.size} keypoint values, expected {3 * k} ({k} joints x 3)")
        box = np.asarray(ann["bbox"], np.float64) if isinstance(ann["bbox"], list) else np.zeros(0)
        if box.shape != (4,) or not np.isfinite(box).all() or not np.isfinite(kp).all():
            raise DataFileError(path, f"{where}: bbox must be 4 finite numbers and keypoints finite")
        if ann["image_id"] not in files:
            raise DataFileError(path, f"{where} refers to image_id {ann['image_id']!r}, which images does not list")
        kp = kp.reshape(k, 3)
        present = kp[:, 2] > 0
        if present.sum() < options.min_keypoints:
            skip(f"fewer than {options.min_keypoints} keypoints")
            continue
        if box[2] <= 0 or box[3] <= 0 or min(box[2], box[3]) < min_box_side:
            skip("box too small" if min_box_side else "box without area")
            continue
        center, scale = person_from_box(box)
        sample_id = f"{dataset}-{ann.get('id', i)}"
        image_ids[sample_id] = ann["image_id"]
        samples.append(
            PoseSample(
                image_path=f"{options.image_dir}/{files[ann['image_id']]}"
                if options.image_dir
                else files[ann["image_id"]],
                joints=np.where(present[:, None], kp[:, :2], 0.0),
                present=present,
                visible=kp[:, 2] == 2,
                center=center,
                scale=scale,
                normalizer=normalizer_of(kp[:, :2], present, box, skeleton, options.normalizer),
                sample_id=sample_id,
                dataset=dataset,
            )
        )
    return samples, skeleton, skipped, image_ids
