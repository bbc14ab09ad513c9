"""Dataset readers: annotation files -> lists of ``PoseSample`` (0-based pixels).

Every reader converts its file's convention at the boundary:

* MPII official ``mpii_human_pose_v1_u12_1.mat``: 1-based MATLAB pixels -> minus 1.
  Person centre and scale get the usual adjustment so crops keep the feet
  (centre y + 15 x scale, scale x 1.25, as the original code and the PyTorch ports do).
  Head size = 0.6 x head-box diagonal.
* Original code's ``annot/*.h5`` (MPII 16 joints, FLIC 11 joints): 1-based pixels
  -> minus 1 (joints and centre); a joint at (0, 0) (1-based) is missing; centre,
  scale and ``normalize`` are used as stored (the stored MPII centre/scale already
  hold the adjustment above).
* MPII JSON of the PyTorch ports (HRNet layout: a list of ``image``, ``center``,
  ``scale``, ``joints``, ``joints_vis``): 1-based pixels (the values equal the
  original h5's) -> minus 1; raw centre/scale, adjusted as for the .mat. Optional
  keys written by the synthetic dataset: ``head_size`` (PCKh normaliser) and
  ``joints_visible`` (occlusion flags; otherwise visible = annotated).
* LSP / LSP Extended ``joints.mat``: 3x14xN (original LSP, third row 0 = visible,
  occluded joints keep meaningful coordinates) or 14x3xN (LSPET, third column
  1 = visible; joints with 0 carry meaningless coordinates and are missing). Pixel
  coordinates are taken as 0-based. Image ``i`` (from 1) is ``images/im%05d.jpg``
  (``im%04d.jpg`` also accepted, the original LSP naming).
* FLIC ``examples.mat``: 29 joint slots, the 11 evaluated ones kept, 1-based -> minus 1.
* COCO person keypoints JSON: 0-based pixels as stored; v = 0 missing, 1 occluded,
  2 visible.

Centre and scale derived from joints (LSP, FLIC ``examples.mat``), the documented
rule: centre = middle of the bounding box of the annotated joints; person box side =
1.25 x the larger side of that box (at least 32 px); scale = side / 200.

COCO people become single-person samples with this rule: skip ``iscrowd`` people,
people with fewer than 5 annotated keypoints and people whose box is smaller than
32 x 32 px (COCO's 'small' objects); centre = box centre; side = 1.25 x the larger
box side; scale = side / 200.
"""

import json
import pathlib
import posixpath

import numpy as np

from hourglass_tf import metrics, skeleton
from hourglass_tf.boxes import center_scale_from_joints
from hourglass_tf.data import DATASETS, coco_keypoints
from hourglass_tf.data.sample import DataFileError, PoseSample, load_h5, load_mat, require_file, require_folder

MPII_CENTER_SHIFT = 15.0  # pixels per unit of scale, downwards
MPII_SCALE_PAD = 1.25
COCO_MIN_KEYPOINTS = 5
COCO_MIN_BOX_SIDE = 32.0
FLIC_SLOTS = (0, 1, 2, 3, 4, 5, 6, 9, 12, 13, 16)  # 0-based slots of the 29 kept for evaluation
LSPET_VALID_START = 8001  # images 1..8000 train, 8001..9000 validation


def _image_path(prefix, name):
    """``prefix/name`` with ``/`` separators (no leading ``/`` when ``prefix`` is empty)."""
    return posixpath.join(prefix, str(name)) if prefix else str(name)


def _loadmat(path):
    return load_mat(path, squeeze_me=True, struct_as_record=False)


def _mpii_adjust(center, scale):
    """Raw MPII objpos/scale -> the crop centre/scale used for training and testing."""
    center = np.array(center, np.float64)
    center[1] += MPII_CENTER_SHIFT * scale
    return center, scale * MPII_SCALE_PAD


# ---------------------------------------------------------------- original code's h5


def read_annot_h5(path, skel, dataset, image_prefix="images"):
    """The original code's ``annot/*.h5`` (MPII or FLIC): 1-based -> 0-based.

    Args:
      path: the h5 file, with ``imgname``, ``part`` (N, K, 2), ``center`` (N, 2),
        ``scale`` (N,), and optionally ``visible`` (N, K) and ``normalize`` (N,).
      skel: the ``Skeleton`` whose joint count ``part`` must have.
      dataset: dataset name for the samples.
      image_prefix: folder of the images relative to the dataset root.
    """
    path = pathlib.Path(path)
    data = load_h5(path)
    missing = [k for k in ("imgname", "part", "center", "scale") if k not in data]
    if missing:
        raise DataFileError(path, f"missing dataset(s) {missing}; found {sorted(data)}")
    part = data["part"].astype(np.float64)
    n = len(part)
    if part.shape[1:] != (skel.num_joints, 2):
        raise DataFileError(path, f"'part' must be (N, {skel.num_joints}, 2) for {skel.name}, found {part.shape}")
    fields = {"imgname": data["imgname"], "center": data["center"], "scale": data["scale"]}
    fields["visible"] = data["visible"] if "visible" in data else np.ones(part.shape[:2])
    fields["normalize"] = data["normalize"] if "normalize" in data else np.full(n, np.nan)
    for key, value in fields.items():
        if len(value) != n:
            raise DataFileError(path, f"'{key}' has {len(value)} rows but 'part' has {n}")
    samples = []
    for i in range(n):
        present = np.all(part[i] > 0, axis=1)
        name = fields["imgname"][i]
        name = name.decode() if isinstance(name, bytes) else str(name)
        samples.append(
            PoseSample(
                image_path=_image_path(image_prefix, name),
                joints=np.where(present[:, None], part[i] - 1.0, 0.0),
                present=present,
                visible=fields["visible"][i] > 0,
                center=np.asarray(fields["center"][i], np.float64) - 1.0,
                scale=fields["scale"][i],
                normalizer=fields["normalize"][i],
                sample_id=f"{dataset}-{path.stem}-{i}",
                dataset=dataset,
            )
        )
    return samples


# ---------------------------------------------------------------- MPII JSON and .mat


def read_mpii_json(path, image_prefix="images", dataset="mpii"):
    """The PyTorch ports' MPII JSON (HRNet layout, 1-based pixels, raw centre/scale)."""
    path = require_file(path)
    try:
        rows = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataFileError(path, f"not valid JSON ({err})") from err
    if not isinstance(rows, list):
        raise DataFileError(path, f"expected a JSON list of people, found {type(rows).__name__}")
    samples = []
    for i, row in enumerate(rows):
        missing = [k for k in ("image", "center", "scale", "joints", "joints_vis") if k not in row]
        if missing:
            raise DataFileError(path, f"person {i} lacks key(s) {missing}")
        joints = np.asarray(row["joints"], np.float64)
        present = np.asarray(row["joints_vis"]) > 0
        if joints.shape != (skeleton.MPII.num_joints, 2) or present.shape != (skeleton.MPII.num_joints,):
            raise DataFileError(
                path,
                f"person {i}: 'joints' must be (16, 2) and 'joints_vis' (16,), found {joints.shape}, {present.shape}",
            )
        center, scale = _mpii_adjust(row["center"], float(row["scale"]))
        samples.append(
            PoseSample(
                image_path=_image_path(image_prefix, row["image"]),
                joints=np.where(present[:, None], joints - 1.0, 0.0),
                present=present,
                visible=np.asarray(row.get("joints_visible", present)) > 0,
                center=center - 1.0,
                scale=scale,
                normalizer=row.get("head_size", float("nan")),
                sample_id=str(row.get("id", f"{dataset}-{path.stem}-{i}")),
                dataset=dataset,
            )
        )
    return samples


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return list(value.ravel())
    return [value]


def _flag(value):
    if isinstance(value, (str, bytes)):
        value = value.decode() if isinstance(value, bytes) else value
        return value.strip() == "1"
    if isinstance(value, np.ndarray):
        return bool(value.size) and bool(value.ravel()[0])
    return bool(value)


def read_mpii_mat(path, split="train", valid_images=None, image_prefix="images"):
    """The official ``mpii_human_pose_v1_u12_1.mat`` (``RELEASE`` struct), 1-based -> 0-based.

    Args:
      path: the .mat file.
      split: ``train`` (training images not in the validation list), ``valid``
        (people of the validation images) or ``all`` (every annotated person of
        the training images).
      valid_images: path of the standard validation image list (``valid_images.txt``
        of the original code, 2,958 people); required for ``train`` and ``valid``.
    """
    if split not in ("train", "valid", "all"):
        raise ValueError(f"split must be 'train', 'valid' or 'all', received split={split!r}")
    mat = _loadmat(path)
    if "RELEASE" not in mat:
        raise DataFileError(
            path, f"expected the variable 'RELEASE', found {sorted(k for k in mat if not k.startswith('__'))}"
        )
    release = mat["RELEASE"]
    try:
        annolist = _as_list(release.annolist)
        img_train = np.atleast_1d(release.img_train)
    except AttributeError as err:
        raise DataFileError(path, f"'RELEASE' lacks the field {err.name!r}") from err
    if len(img_train) != len(annolist):
        raise DataFileError(path, f"'img_train' has {len(img_train)} entries but 'annolist' has {len(annolist)}")
    valid_names = None
    if split != "all":
        if valid_images is None:
            raise ValueError(f"split={split!r} needs valid_images (the standard validation image list)")
        valid_names = set(require_file(valid_images).read_text().split())
    samples = []
    for i, entry in enumerate(annolist):
        if not img_train[i]:
            continue
        name = str(entry.image.name)
        if valid_names is not None and (name in valid_names) != (split == "valid"):
            continue
        for r, rect in enumerate(_as_list(getattr(entry, "annorect", None))):
            points = _as_list(getattr(getattr(rect, "annopoints", None), "point", None))
            if not points or not hasattr(rect, "objpos") or not hasattr(rect, "scale"):
                continue
            try:
                objpos = (float(rect.objpos.x), float(rect.objpos.y))
                raw_scale = float(rect.scale)
            except (AttributeError, TypeError, ValueError):
                continue
            joints = np.zeros((16, 2))
            present = np.zeros(16, bool)
            visible = np.zeros(16, bool)
            for point in points:
                j = int(point.id)
                joints[j] = (float(point.x) - 1.0, float(point.y) - 1.0)
                present[j] = True
                visible[j] = _flag(getattr(point, "is_visible", 1))
            head = metrics.head_size_from_box(float(rect.x1), float(rect.y1), float(rect.x2), float(rect.y2))
            center, scale = _mpii_adjust(objpos, raw_scale)
            samples.append(
                PoseSample(
                    image_path=_image_path(image_prefix, name),
                    joints=joints,
                    present=present,
                    visible=visible,
                    center=center - 1.0,
                    scale=scale,
                    normalizer=head,
                    sample_id=f"mpii-{i}-{r}",
                    dataset="mpii",
                )
            )
    return samples


# ---------------------------------------------------------------- LSP / LSPET


def read_lsp(root, indices=None, dataset="lsp"):
    """LSP or LSP Extended: ``ROOT/joints.mat`` and ``ROOT/images/im%05d.jpg``.

    Args:
      root: the dataset folder.
      indices: 1-based image numbers to keep (all when None).
    """
    root = pathlib.Path(root)
    path = root / "joints.mat"
    mat = _loadmat(path)
    if "joints" not in mat:
        raise DataFileError(
            path, f"expected the variable 'joints', found {sorted(k for k in mat if not k.startswith('__'))}"
        )
    joints = np.asarray(mat["joints"], np.float64)
    if joints.ndim == 2:
        joints = joints[..., None]
    if joints.shape[:2] == (14, 3):  # LSPET: x, y, visible (1 = visible; 0 = meaningless coordinates)
        xy, flag = joints[:, :2].transpose(2, 0, 1), joints[:, 2].T
        present = flag > 0
        visible = present
        pattern = "im%05d.jpg"
    elif joints.shape[:2] == (3, 14):  # original LSP: x, y, occluded (0 = visible)
        xy, flag = joints[:2].transpose(2, 1, 0), joints[2].T
        present = np.ones_like(flag, bool)
        visible = flag == 0
        pattern = "im%04d.jpg"
    else:
        raise DataFileError(
            path, f"'joints' must be 14x3xN (LSPET) or 3x14xN (LSP), found {'x'.join(map(str, joints.shape))}"
        )
    n = len(xy)
    if not (root / "images" / (pattern % 1)).exists() and (root / "images" / ("im%05d.jpg" % 1)).exists():
        pattern = "im%05d.jpg"
    numbers = range(1, n + 1) if indices is None else indices
    samples = []
    for number in numbers:
        if not 1 <= number <= n:
            raise ValueError(f"image number {number} is outside 1..{n} of {path}")
        i = number - 1
        center, scale = center_scale_from_joints(xy[i], present[i])
        samples.append(
            PoseSample(
                image_path=f"images/{pattern % number}",
                joints=np.where(present[i][:, None], xy[i], 0.0),
                present=present[i],
                visible=visible[i],
                center=center,
                scale=scale,
                normalizer=metrics.torso_size(xy[i], present[i], skeleton.LSP),
                sample_id=f"{dataset}-{number}",
                dataset=dataset,
            )
        )
    return samples


# ---------------------------------------------------------------- FLIC


def read_flic_mat(path, split="train", image_prefix="images"):
    """FLIC ``examples.mat``: ``train`` (istrain) or ``valid`` (istest) people, 11 joints, 1-based -> 0-based."""
    if split not in ("train", "valid"):
        raise ValueError(f"split must be 'train' or 'valid', received split={split!r}")
    mat = _loadmat(path)
    if "examples" not in mat:
        raise DataFileError(
            path, f"expected the variable 'examples', found {sorted(k for k in mat if not k.startswith('__'))}"
        )
    samples = []
    for i, example in enumerate(_as_list(mat["examples"])):
        coords = np.asarray(example.coords, np.float64)
        if coords.shape != (2, 29):
            raise DataFileError(path, f"example {i}: 'coords' must be 2x29, found {coords.shape}")
        if not _flag(example.istrain if split == "train" else example.istest):
            continue
        xy = coords.T[list(FLIC_SLOTS)] - 1.0
        present = np.all(np.isfinite(xy), axis=1)
        xy = np.where(present[:, None], xy, 0.0)
        center, scale = center_scale_from_joints(xy, present)
        samples.append(
            PoseSample(
                image_path=_image_path(image_prefix, example.filepath),
                joints=xy,
                present=present,
                visible=present,
                center=center,
                scale=scale,
                normalizer=metrics.torso_size(xy, present, skeleton.FLIC),
                sample_id=f"flic-{i}",
                dataset="flic",
            )
        )
    return samples


# ---------------------------------------------------------------- COCO


def read_coco(path, image_prefix):
    """COCO person keypoints JSON as single-person samples (rule in the module docstring).

    The person category of the general reader (``coco_keypoints.read_file``) with COCO's 17-joint skeleton,
    people with at least 5 keypoints and a box of at least 32 x 32 px, and the torso as the PCK normaliser.

    Args:
      path: ``person_keypoints_*.json``.
      image_prefix: folder of its images relative to the dataset root (``val2017``).
    """
    person = {"id": 1, "name": "person", "keypoints": list(skeleton.COCO.joints)}
    options = coco_keypoints.Options(category="person", image_dir=image_prefix, min_keypoints=COCO_MIN_KEYPOINTS)
    samples, _, _, _ = coco_keypoints.read_file(
        path, options, skeleton.COCO, "coco", min_box_side=COCO_MIN_BOX_SIDE, default_category=person
    )
    for sample in samples:
        sample.normalizer = metrics.torso_size(sample.joints, sample.present, skeleton.COCO)
    return samples


# ---------------------------------------------------------------- one entry point

SPLITS = ("train", "valid")


def skeleton_of(dataset):
    """The joint set a dataset's samples use (a fixed one; ``coco_keypoints`` reads its own: ``dataset_skeleton``)."""
    if dataset == coco_keypoints.DATASET:
        raise ValueError("coco_keypoints datasets define their joints in their files: use dataset_skeleton")
    return skeleton.get_skeleton({"synthetic": "mpii"}.get(dataset, dataset))


def dataset_skeleton(dataset, root=None, options=None, meta=None, split="train"):
    """The joint set of a dataset: fixed by name, or for ``coco_keypoints`` read from its ``split`` annotation
    file (``root`` and ``options``) or from TFRecord shards' ``meta``."""
    if dataset != coco_keypoints.DATASET:
        return skeleton_of(dataset)
    if meta is not None:
        if not isinstance(meta.get("skeleton"), dict):
            raise ValueError("these TFRecord shards do not describe their joint set (written before coco_keypoints)")
        return skeleton.Skeleton.from_dict(meta["skeleton"])
    if root is None:
        raise ValueError("a coco_keypoints dataset needs its folder to know its joints")
    return coco_keypoints.read_skeleton(root, options or coco_keypoints.Options(), split)


def load_split(dataset, root, split, options=None):
    """``(samples, skeleton)`` of a split, its annotation file read once (``load_dataset``, ``dataset_skeleton``)."""
    if dataset == coco_keypoints.DATASET:
        samples, skel, _, _ = coco_keypoints.read(
            _split_root(dataset, root, split), split, options or coco_keypoints.Options()
        )
        return samples, skel
    return load_dataset(dataset, root, split), skeleton_of(dataset)


def _split_root(dataset, root, split):
    """``root`` as a Path, after checking the dataset name, the split and that the folder exists."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, received split={split!r}")
    return require_folder(root)


def load_dataset(dataset, root, split, options=None):
    """Samples of ``split`` (``train`` or ``valid``) of a dataset in its standard folder layout.

    Layouts (ROOT = ``root``):
      mpii: ``ROOT/annot/{train,valid}.h5`` (original code), else ``ROOT/annot/{train,valid}.json``
        (PyTorch ports), else ``ROOT/mpii_human_pose_v1_u12_1.mat`` with
        ``ROOT/annot/valid_images.txt``; images in ``ROOT/images/``.
      synthetic: ``ROOT/annot/{train,valid}.json`` (MPII JSON layout), ``ROOT/images/``.
      lspet: ``ROOT/joints.mat``, ``ROOT/images/im%05d.jpg``; images 1-8000 train, 8001-N valid.
      lsp: ``ROOT/joints.mat`` (3x14xN or 14x3xN); first half train, second half valid (LSP's
        1000/1000 split).
      flic: ``ROOT/annot/{train,valid}.h5`` (original code), else ``ROOT/examples.mat``; ``ROOT/images/``.
      coco: ``ROOT/annotations/person_keypoints_{train,val}2017.json``, images in
        ``ROOT/{train,val}2017/``.
      coco_keypoints: any COCO keypoint files, ``ROOT/annotations/{train,val}.json`` and ``ROOT/images/``
        unless ``options`` (``coco_keypoints.Options``) name others.
    """
    root = _split_root(dataset, root, split)
    annot = root / "annot"
    if dataset == coco_keypoints.DATASET:
        return load_split(dataset, root, split, options)[0]
    if dataset == "synthetic":
        return read_mpii_json(annot / f"{split}.json", dataset="synthetic")
    if dataset == "mpii":
        if (annot / f"{split}.h5").exists():
            return read_annot_h5(annot / f"{split}.h5", skeleton.MPII, "mpii")
        if (annot / f"{split}.json").exists():
            return read_mpii_json(annot / f"{split}.json")
        mat = root / "mpii_human_pose_v1_u12_1.mat"
        if mat.exists():
            return read_mpii_mat(mat, split, valid_images=annot / "valid_images.txt")
        raise DataFileError(
            root, f"no MPII annotations: expected annot/{split}.h5, annot/{split}.json or mpii_human_pose_v1_u12_1.mat"
        )
    if dataset in ("lsp", "lspet"):
        samples = read_lsp(root, dataset=dataset)
        count = len(samples)
        first_valid = LSPET_VALID_START if dataset == "lspet" and count >= LSPET_VALID_START else count // 2 + 1
        return samples[: first_valid - 1] if split == "train" else samples[first_valid - 1 :]
    if dataset == "flic":
        if (annot / f"{split}.h5").exists():
            return read_annot_h5(annot / f"{split}.h5", skeleton.FLIC, "flic")
        return read_flic_mat(root / "examples.mat", split)
    coco_split = {"train": "train2017", "valid": "val2017"}[split]
    return read_coco(root / "annotations" / f"person_keypoints_{coco_split}.json", coco_split)
