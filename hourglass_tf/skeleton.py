"""Joint sets of the supported datasets: names in dataset order, flip pairs, limbs.

This module is the one place that knows joint orders; readers, the pipeline
(left/right swap on horizontal flip), the metrics and the drawing code all read
it. "Left" and "right" are the person's own left and right.

* ``MPII`` (16): the MPII Human Pose order used by the original code.
* ``LSP`` (14): LSP and LSP Extended ``joints.mat`` order.
* ``FLIC`` (11): the upper-body joints used in FLIC's evaluation, in the order
  of the original code's ``annot/*.h5`` (lsho, lelb, lwri, rsho, relb, rwri,
  lhip, rhip, leye, reye, nose).
* ``COCO`` (17): COCO person keypoints order.
"""

import dataclasses

import numpy as np

_SIDES = {"l": "r", "r": "l", "left": "right", "right": "left", "L": "R", "R": "L", "Left": "Right", "Right": "Left"}
_SEPARATORS = "_- ."


def _tokens(name):
    """``"front_left_paw"`` -> ["front", "_", "left", "_", "paw"] (separators kept, so names rebuild exactly)."""
    out, word = [], ""
    for ch in name:
        if ch in _SEPARATORS:
            out += [word, ch] if word else [ch]
            word = ""
        else:
            word += ch
    return out + [word] if word else out


def mirror_name(name):
    """The name of the other side's joint: a ``left``/``right`` (``l``/``r``, any case shown) word swapped.

    ``l_ankle`` -> ``r_ankle``, ``left_eye`` -> ``right_eye``, ``front_left_paw`` -> ``front_right_paw``,
    ``paw_L`` -> ``paw_R``; None when the name has no side word (or more than one).
    """
    parts = _tokens(name)
    sides = [i for i, p in enumerate(parts) if p in _SIDES]
    if len(sides) != 1:
        return None
    parts[sides[0]] = _SIDES[parts[sides[0]]]
    return "".join(parts)


@dataclasses.dataclass(frozen=True)
class Skeleton:
    """A dataset's joint layout.

    Attributes:
      name: dataset name.
      joints: joint names in dataset order.
      limbs: pairs of joint indices joined when drawing a skeleton.
      pairs: explicit ((left_index, right_index), ...) mirror pairs; None derives them from
        the names (``mirror_name``: one ``left``/``right`` or ``l``/``r`` word swapped, e.g.
        ``l_ankle``/``r_ankle``, ``left_eye``/``right_eye``, ``front_left_paw``/``front_right_paw``).
    """

    name: str
    joints: tuple
    limbs: tuple
    pairs: tuple = None

    def __post_init__(self):
        joints = tuple(str(j) for j in self.joints)
        if not joints or len(set(joints)) != len(joints):
            raise ValueError(f"skeleton {self.name!r}: joint names must be non-empty and unique, received {joints}")
        object.__setattr__(self, "joints", joints)
        for field in ("limbs", "pairs"):
            value = getattr(self, field)
            if value is None:
                continue
            try:
                value = tuple((int(a), int(b)) for a, b in value)
            except (TypeError, ValueError):
                raise ValueError(f"skeleton {self.name!r}: {field} must be index pairs, received {value!r}") from None
            bad = [p for p in value if not all(0 <= i < len(joints) for i in p) or p[0] == p[1]]
            if bad:
                raise ValueError(
                    f"skeleton {self.name!r}: {field} {bad} are not pairs of two different joint "
                    f"indices in 0..{len(joints) - 1}"
                )
            object.__setattr__(self, field, value)

    @property
    def num_joints(self):
        return len(self.joints)

    def to_dict(self):
        """JSON-ready description: name, joints, limbs and the flip pairs in use."""
        return {
            "name": self.name,
            "joints": list(self.joints),
            "limbs": [list(p) for p in self.limbs],
            "flip_pairs": [list(p) for p in self.flip_pairs],
        }

    @classmethod
    def from_dict(cls, data):
        """The inverse of ``to_dict``; ValueError naming what is missing or malformed."""
        if not isinstance(data, dict):
            raise ValueError(f"a skeleton description is a JSON object, received {type(data).__name__}")
        missing = [k for k in ("name", "joints", "limbs") if k not in data]
        if missing:
            raise ValueError(f"skeleton description lacks {missing}; found keys {sorted(data)}")
        skeleton = cls(str(data["name"]), tuple(data["joints"]), tuple(data["limbs"]), data.get("flip_pairs"))
        derived = dataclasses.replace(skeleton, pairs=None)
        return derived if skeleton.pairs is None or skeleton.pairs == derived.flip_pairs else skeleton

    @property
    def flip_pairs(self):
        """((left_index, right_index), ...): the explicit ``pairs``, or derived from the joint names."""
        if self.pairs is not None:
            return self.pairs
        pairs = []
        for i, joint in enumerate(self.joints):
            twin = mirror_name(joint)
            is_left = any(word.lower() in ("l", "left") for word in _tokens(joint))
            if twin in self.joints and is_left:
                pairs.append((i, self.joints.index(twin)))
        return tuple(pairs)

    @property
    def flip_permutation(self):
        """Index array p with ``flipped[..., j, :] = joints[..., p[j], :]`` after a mirror."""
        perm = np.arange(self.num_joints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def index(self, joint_name):
        """Index of ``joint_name``; ValueError naming the skeleton when unknown."""
        if joint_name not in self.joints:
            raise ValueError(f"joint {joint_name!r} is not in the {self.name} skeleton {self.joints}")
        return self.joints.index(joint_name)


def _limbs(joints, pairs):
    """Limb index pairs from ``"a:b c:d ..."`` joint-name pairs."""
    return tuple((joints.index(a), joints.index(b)) for a, b in (pair.split(":") for pair in pairs.split()))


_MPII_JOINTS = tuple(
    """
    r_ankle r_knee r_hip l_hip l_knee l_ankle pelvis thorax upper_neck head_top r_wrist r_elbow r_shoulder
    l_shoulder l_elbow l_wrist
    """.split()
)
MPII = Skeleton(
    "mpii",
    _MPII_JOINTS,
    _limbs(
        _MPII_JOINTS,
        """
        r_ankle:r_knee r_knee:r_hip r_hip:pelvis l_ankle:l_knee l_knee:l_hip l_hip:pelvis pelvis:thorax
        thorax:upper_neck upper_neck:head_top r_wrist:r_elbow r_elbow:r_shoulder r_shoulder:thorax
        l_wrist:l_elbow l_elbow:l_shoulder l_shoulder:thorax
        """,
    ),
)

_LSP_JOINTS = tuple(
    """
    r_ankle r_knee r_hip l_hip l_knee l_ankle r_wrist r_elbow r_shoulder l_shoulder l_elbow l_wrist neck
    head_top
    """.split()
)
LSP = Skeleton(
    "lsp",
    _LSP_JOINTS,
    _limbs(
        _LSP_JOINTS,
        """
        r_ankle:r_knee r_knee:r_hip l_ankle:l_knee l_knee:l_hip r_hip:l_hip r_hip:r_shoulder l_hip:l_shoulder
        r_wrist:r_elbow r_elbow:r_shoulder r_shoulder:neck l_wrist:l_elbow l_elbow:l_shoulder l_shoulder:neck
        neck:head_top
        """,
    ),
)

_FLIC_JOINTS = tuple(
    """
    l_shoulder l_elbow l_wrist r_shoulder r_elbow r_wrist l_hip r_hip l_eye r_eye nose
    """.split()
)
FLIC = Skeleton(
    "flic",
    _FLIC_JOINTS,
    _limbs(
        _FLIC_JOINTS,
        """
        l_wrist:l_elbow l_elbow:l_shoulder r_wrist:r_elbow r_elbow:r_shoulder l_shoulder:r_shoulder
        l_shoulder:l_hip r_shoulder:r_hip l_hip:r_hip l_eye:nose r_eye:nose
        """,
    ),
)

_COCO_JOINTS = tuple(
    """
    nose left_eye right_eye left_ear right_ear left_shoulder right_shoulder left_elbow right_elbow left_wrist
    right_wrist left_hip right_hip left_knee right_knee left_ankle right_ankle
    """.split()
)
COCO = Skeleton(
    "coco",
    _COCO_JOINTS,
    _limbs(
        _COCO_JOINTS,
        """
        left_ankle:left_knee left_knee:left_hip right_ankle:right_knee right_knee:right_hip left_hip:right_hip
        left_shoulder:left_hip right_shoulder:right_hip left_shoulder:right_shoulder left_shoulder:left_elbow
        right_shoulder:right_elbow left_elbow:left_wrist right_elbow:right_wrist left_eye:right_eye
        nose:left_eye nose:right_eye left_eye:left_ear right_eye:right_ear left_ear:left_shoulder
        right_ear:right_shoulder
        """,
    ),
)

SKELETONS = {s.name: s for s in (MPII, LSP, FLIC, COCO)}


def get_skeleton(name):
    """The ``Skeleton`` called ``name`` (``mpii``, ``lsp``, ``flic``, ``coco``; ``lspet`` = ``lsp``)."""
    key = {"lspet": "lsp"}.get(str(name).lower(), str(name).lower())
    if key not in SKELETONS:
        raise ValueError(f"unknown skeleton {name!r}; expected one of {sorted(SKELETONS) + ['lspet']}")
    return SKELETONS[key]
