"""Joint sets: flip pairs are an involution covering every left/right joint; limbs are valid."""

import numpy as np
import pytest

from hourglass_tf import skeleton


def side_and_part(joint):
    for prefix, side in (("left_", "left"), ("right_", "right"), ("l_", "left"), ("r_", "right")):
        if joint.startswith(prefix):
            return side, joint[len(prefix) :]
    return None, joint


EXPECTED_COUNTS = {"mpii": 16, "lsp": 14, "flic": 11, "coco": 17}


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_joint_counts(name):
    assert skeleton.get_skeleton(name).num_joints == EXPECTED_COUNTS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_flip_permutation_is_an_involution_covering_every_side_joint(name):
    skel = skeleton.get_skeleton(name)
    perm = skel.flip_permutation
    np.testing.assert_array_equal(perm[perm], np.arange(skel.num_joints))
    sided = {i for i, j in enumerate(skel.joints) if j.startswith(("l_", "r_", "left_", "right_"))}
    in_pairs = {i for pair in skel.flip_pairs for i in pair}
    assert in_pairs == sided
    for i in range(skel.num_joints):
        a, b = skel.joints[i], skel.joints[perm[i]]
        if i in sided:
            assert side_and_part(a) == ("left" if side_and_part(b)[0] == "right" else "right", side_and_part(b)[1])
        else:
            assert perm[i] == i


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_limbs_join_distinct_existing_joints_and_are_mirror_closed(name):
    skel = skeleton.get_skeleton(name)
    perm = skel.flip_permutation
    limbs = {frozenset(limb) for limb in skel.limbs}
    for a, b in skel.limbs:
        assert 0 <= a < skel.num_joints and 0 <= b < skel.num_joints and a != b
        assert frozenset((perm[a], perm[b])) in limbs


def test_mpii_order_matches_the_original_code():
    assert skeleton.MPII.joints[:3] == ("r_ankle", "r_knee", "r_hip")
    assert skeleton.MPII.index("pelvis") == 6 and skeleton.MPII.index("head_top") == 9
    assert skeleton.MPII.flip_pairs == ((3, 2), (4, 1), (5, 0), (13, 12), (14, 11), (15, 10))


def test_lspet_is_an_alias_and_unknown_names_are_refused():
    assert skeleton.get_skeleton("LSPET") is skeleton.LSP
    with pytest.raises(ValueError, match="'h36m'"):
        skeleton.get_skeleton("h36m")
    with pytest.raises(ValueError, match="'knee'"):
        skeleton.MPII.index("knee")
