"""The one sample record every reader produces, and the report of skipped samples.

Coordinate convention (everywhere in the package): (x, y) pixels, 0-based,
integer values at pixel centres, in the original image. Readers convert their
file's convention at the boundary.
"""

import collections
import dataclasses
import math
import pathlib

import numpy as np


class DataFileError(ValueError):
    """An annotation or image file is missing, unreadable or not in the expected layout."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def require_file(path):
    """``path`` as a Path; DataFileError naming it when it is not a file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataFileError(path, "file not found")
    return path


def require_folder(path, what="dataset folder"):
    """``path`` as a Path; DataFileError naming it when it is not a folder. This module imports no TensorFlow: the
    scripts say a mistyped folder before it loads."""
    path = pathlib.Path(path)
    if not path.is_dir():
        raise DataFileError(path, f"{what} not found")
    return path


def require_data_folders(data_dir=None, tfrecord_dir=None):
    """``require_folder`` for a run's raw dataset folder and TFRecord shard folder, those given."""
    for folder, what in ((data_dir, "dataset folder"), (tfrecord_dir, "TFRecord shard folder")):
        if folder is not None:
            require_folder(folder, what)


def load_mat(path, **kwargs):
    """``scipy.io.loadmat`` with DataFileError naming the file when it is missing or unreadable."""
    import scipy.io

    path = require_file(path)
    try:
        return scipy.io.loadmat(str(path), **kwargs)
    except Exception as err:  # scipy raises several types for a bad file
        raise DataFileError(path, f"not a readable MATLAB .mat file ({err})") from err


def load_h5(path):
    """Every dataset of an HDF5 file as {name: array}; DataFileError naming the file on failure."""
    import h5py

    path = require_file(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise DataFileError(path, f"not a readable HDF5 file ({err})") from err
    with handle:
        return {key: handle[key][()] for key in handle}


@dataclasses.dataclass
class PoseSample:
    """One annotated person.

    Attributes:
      image_path: path of the image relative to the dataset root (``/`` separators).
      joints: (K, 2) float32, (x, y) in original-image pixels, 0-based.
      present: (K,) bool, the joint is annotated (its coordinates are meaningful).
      visible: (K,) bool, the joint is annotated and not occluded.
      center: (2,) float32 person centre (x, y), original-image pixels, 0-based.
      scale: person box side / 200 px.
      normalizer: the metric's normaliser in pixels (MPII head size, LSP/FLIC
        torso size), NaN when unknown.
      sample_id: unique id within the dataset (string).
      dataset: dataset name (``mpii``, ``lsp``, ``flic``, ``coco``, ``synthetic``).
    """

    image_path: str
    joints: np.ndarray
    present: np.ndarray
    visible: np.ndarray
    center: np.ndarray
    scale: float
    normalizer: float
    sample_id: str
    dataset: str

    def __post_init__(self):
        self.joints = np.asarray(self.joints, np.float32).reshape(-1, 2)
        k = len(self.joints)
        self.present = np.asarray(self.present, bool).reshape(k)
        self.visible = np.asarray(self.visible, bool).reshape(k) & self.present
        self.center = np.asarray(self.center, np.float32).reshape(2)
        self.scale = float(self.scale)
        self.normalizer = float(self.normalizer)
        self.sample_id = str(self.sample_id)

    @property
    def num_joints(self):
        return len(self.joints)


@dataclasses.dataclass
class SkipReport:
    """Counts of samples kept and skipped, with the first offenders' ids per reason."""

    kept: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: dict = dataclasses.field(default_factory=dict)
    max_examples: int = 5

    def skip(self, reason, sample_id):
        self.skipped[reason] += 1
        ids = self.examples.setdefault(reason, [])
        if len(ids) < self.max_examples:
            ids.append(str(sample_id))

    def keep(self, samples, problem_of):
        """The samples for which ``problem_of(sample)`` is None, in order; the others are
        counted under the reason it returns. ``kept`` becomes the number returned."""
        kept = []
        for sample in samples:
            problem = problem_of(sample)
            if problem:
                self.skip(problem, sample.sample_id)
            else:
                kept.append(sample)
        self.kept = len(kept)
        return kept

    def merge(self, other):
        self.kept += other.kept
        for reason, count in other.skipped.items():
            self.skipped[reason] += count
            ids = self.examples.setdefault(reason, [])
            ids.extend(other.examples.get(reason, [])[: max(0, self.max_examples - len(ids))])
        return self

    @property
    def total_skipped(self):
        return sum(self.skipped.values())

    def as_dict(self):
        return {"kept": self.kept, "skipped": dict(self.skipped), "first_ids": dict(self.examples)}

    def summary(self):
        lines = [f"kept {self.kept}, skipped {self.total_skipped}"]
        for reason, count in sorted(self.skipped.items()):
            lines.append(f"  {reason}: {count} (first: {', '.join(self.examples[reason])})")
        return "\n".join(lines)


def sample_problem(sample, image_size=None, far_factor=1.0):
    """The reason ``sample`` cannot be trained on, or None.

    Args:
      sample: a ``PoseSample``.
      image_size: (width, height) of its image when known; joints farther than
        ``far_factor`` x the image size outside it make the sample unusable.
    """
    if not math.isfinite(sample.scale) or sample.scale <= 0:
        return "bad scale"
    if not np.all(np.isfinite(sample.center)):
        return "bad center"
    present = sample.present & np.all(np.isfinite(sample.joints), axis=1)
    if not present.any():
        return "no annotated joint"
    if image_size is not None:
        width, height = image_size
        xy = sample.joints[present]
        margin = far_factor * np.array([width, height], np.float32)
        if np.any(xy < -margin) or np.any(xy > np.array([width, height]) + margin):
            return "joints far outside the image"
    return None


def _side_pair(skel, part):
    """(left index, right index) of ``part`` (``shoulder``, ``hip``) in ``skel``, or None."""
    for left, right in (("l_", "r_"), ("left_", "right_")):
        if left + part in skel.joints and right + part in skel.joints:
            return skel.index(left + part), skel.index(right + part)
    return None


def sides_disagree(sample, skel):
    """True when the shoulders and the hips of ``sample`` face opposite ways.

    The left-to-right vector of the shoulders and that of the hips (original-image
    pixels) have a negative dot product: one pair is labelled as seen from the front,
    the other as seen from the back, which a body rarely does and which usually means
    a left/right labelling slip. False when a shoulder or hip is not annotated, or when
    ``skel`` has no left/right shoulders and hips.

    Args:
      sample: a ``PoseSample`` whose joints are in ``skel`` order.
      skel: its ``Skeleton``.
    """
    shoulders, hips = _side_pair(skel, "shoulder"), _side_pair(skel, "hip")
    if shoulders is None or hips is None:
        return False
    if sample.num_joints != skel.num_joints:
        raise ValueError(
            f"sample {sample.sample_id} has {sample.num_joints} joints, the {skel.name} skeleton {skel.num_joints}"
        )
    if not all(sample.present[i] for i in shoulders + hips):
        return False
    shoulder_vector = sample.joints[shoulders[1]] - sample.joints[shoulders[0]]
    hip_vector = sample.joints[hips[1]] - sample.joints[hips[0]]
    return float(np.dot(shoulder_vector, hip_vector)) < 0.0
