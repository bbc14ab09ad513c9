"""PCKh / PCK: hand-computed cases everywhere, the published numbers on the shared MPII file."""

import numpy as np
import pytest
import scipy.io

from hourglass_tf import metrics, skeleton

SUMMARY_KEYS = ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Mean_unweighted"]


def test_correct_means_strictly_below_the_threshold_and_missing_joints_are_excluded():
    gt = np.zeros((1, 3, 2))
    pred = np.array([[[4.99, 0.0], [5.0, 0.0], [100.0, 0.0]]])
    present = np.array([[True, True, False]])
    errors, valid = metrics.normalized_errors(pred, gt, present, np.array([10.0]))
    correct, count = metrics.pck_per_joint(errors, valid, 0.5)
    np.testing.assert_array_equal(correct, [1, 0, 0])  # 5.0 / 10 == 0.5 is not below 0.5
    np.testing.assert_array_equal(count, [1, 1, 0])
    assert np.isnan(errors[0, 2])


def test_people_without_a_usable_normaliser_are_excluded():
    errors, valid = metrics.normalized_errors(
        np.zeros((3, 1, 2)), np.zeros((3, 1, 2)), np.ones((3, 1), bool), np.array([np.nan, 0.0, 2.0])
    )
    np.testing.assert_array_equal(valid[:, 0], [False, False, True])


def test_mpii_table_groups_sides_and_weights_the_mean_by_counts():
    n, k = 4, 16
    gt = np.zeros((n, k, 2))
    pred = np.zeros((n, k, 2))
    present = np.ones((n, k), bool)
    mpii = skeleton.MPII
    r_wri, l_wri, pelvis = mpii.index("r_wrist"), mpii.index("l_wrist"), mpii.index("pelvis")
    pred[:, r_wri] = 100.0  # every right wrist wrong
    present[1:, l_wri] = False  # one left wrist annotated (and right)
    pred[:, pelvis] = 100.0  # pelvis wrong but excluded from the mean
    result = metrics.evaluate(pred, gt, present, np.full(n, 10.0), mpii)
    s = result["summary"]
    assert list(s) == SUMMARY_KEYS
    assert s["Wrist"] == pytest.approx((0.0 + 100.0) / 2)
    assert s["Head"] == 100.0 and s["Shoulder"] == 100.0
    # 14 joints: 13 x 4 annotated minus 3 left wrists; wrong: the 4 right wrists.
    total = 14 * 4 - 3
    assert s["Mean"] == pytest.approx(100.0 * (total - 4) / total)
    assert s["Mean_unweighted"] == pytest.approx(100.0 * 13 / 14)
    assert result["per_joint"]["pelvis"] == 0.0 and result["counts"]["l_wrist"] == 1


def test_curve_and_auc_on_a_known_error_distribution():
    n = 100
    gt = np.zeros((n, 1, 2))
    pred = np.zeros((n, 1, 2))
    pred[:, 0, 0] = np.linspace(0.0, 0.99, n)  # normalised errors uniform on [0, 1)
    lsp_like = skeleton.Skeleton("one", ("r_wrist",), ())
    result = metrics.evaluate(
        pred, gt, np.ones((n, 1), bool), np.ones(n), lsp_like, threshold=0.2, thresholds=np.linspace(0, 1, 101)
    )
    curve = np.array(result["curve"]["mean"])
    assert curve[0] == 0.0 and curve[-1] == 100.0 and np.all(np.diff(curve) >= 0)
    assert result["per_joint"]["r_wrist"] == pytest.approx(20.0)
    assert result["auc"] == pytest.approx(50.0, abs=1.0)


def test_lsp_limb_mean_leaves_out_head_and_neck():
    lsp = skeleton.LSP
    gt = np.zeros((2, 14, 2))
    pred = np.zeros((2, 14, 2))
    pred[:, [lsp.index("neck"), lsp.index("head_top")]] = 50.0
    result = metrics.evaluate(pred, gt, np.ones((2, 14), bool), np.full(2, 10.0), lsp, threshold=0.2)
    assert result["mean_limbs"] == 100.0
    assert result["summary"]["Mean"] == pytest.approx(100.0 * 12 / 14)
    assert result["summary"]["Head"] == 0.0


@pytest.mark.parametrize(
    "pred_shape, present_shape, norm_shape, fragment",
    [
        ((2, 16), (2, 16), (2,), r"\(N, K, 2\)"),
        ((2, 16, 2), (2, 15), (2,), "present"),
        ((2, 16, 2), (2, 16), (3,), "normalizer"),
    ],
)
def test_bad_shapes_raise_value_error(pred_shape, present_shape, norm_shape, fragment):
    gt = np.zeros(pred_shape)
    with pytest.raises(ValueError, match=fragment):
        metrics.normalized_errors(np.zeros(pred_shape), gt, np.ones(present_shape, bool), np.ones(norm_shape))


def test_published_pckh_of_the_shared_mpii_predictions(shared_data):
    mat = scipy.io.loadmat(shared_data / "mpii" / "eval" / "detections_our_format.mat")
    pred = mat["pos_pred_src"].transpose(2, 0, 1)
    gt = mat["pos_gt_src"].transpose(2, 0, 1)
    present = mat["jnt_missing"].T == 0
    boxes = mat["headboxes_src"]
    head = metrics.HEAD_SIZE_FACTOR * np.linalg.norm(boxes[1] - boxes[0], axis=0)
    summary = metrics.evaluate(pred, gt, present, head, skeleton.MPII)["summary"]
    expected = [95.60, 92.71, 83.36, 76.74, 81.93, 73.36, 65.45, 82.34, 81.46]
    assert list(summary) == SUMMARY_KEYS
    np.testing.assert_allclose([summary[k] for k in SUMMARY_KEYS], expected, atol=0.01)


def test_left_right_swaps_count_misses_that_land_on_the_mirror_joint():
    sk = skeleton.LSP
    r_wrist, l_wrist, head = sk.index("r_wrist"), sk.index("l_wrist"), sk.index("head_top")
    gt = np.zeros((2, 14, 2))
    gt[:, r_wrist], gt[:, l_wrist], gt[:, head] = (0.0, 0.0), (10.0, 0.0), (5.0, 30.0)
    pred = gt.copy()
    pred[:, r_wrist] = (10.0, 1.0)  # on the left wrist: a swap (normaliser 10, threshold 2 px)
    pred[:, head] = (5.0, 0.0)  # far off, but the head has no mirror joint
    present = np.ones((2, 14), bool)
    present[1, l_wrist] = False  # second person: the left wrist is not annotated, so no swap can be seen
    swapped, scored = metrics.left_right_swaps(pred, gt, present, np.array([10.0, 10.0]), sk, 0.2)
    assert swapped[r_wrist] == 1 and swapped.sum() == 1
    assert scored[r_wrist] == 2 and scored[l_wrist] == 1
    result = metrics.evaluate(pred, gt, present, np.array([10.0, 10.0]), sk, threshold=0.2)
    assert result["swapped"]["per_joint"]["r_wrist"] == 50.0 and result["swapped"]["per_joint"]["head_top"] == 0.0
    limb_count = sum(result["counts"][sk.joints[i]] for i in metrics.limb_joints(sk))
    assert result["swapped"]["limbs"] == pytest.approx(100.0 / limb_count)
    with pytest.raises(ValueError, match="14 joints, the predictions 16"):
        metrics.left_right_swaps(
            np.zeros((1, 16, 2)), np.zeros((1, 16, 2)), np.ones((1, 16), bool), np.ones(1), sk, 0.2
        )
