"""COCO keypoint AP by the standard protocol: the number equals plain pycocotools run by hand on the same files."""

import contextlib
import io
import json

import numpy as np
import pytest

from hourglass_tf.evaluation import coco_eval


def _by_hand(gt_file, results_file):
    """What a user runs with pycocotools alone: every default, the ground-truth file as it is."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        evaluator = COCOeval(gt, gt.loadRes(str(results_file)), iouType="keypoints")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(coco_eval.SUMMARY, evaluator.stats))


@pytest.fixture
def coco_val(shared_data):
    path = shared_data / "coco_mini" / "annotations" / "person_keypoints_val2017.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def test_ap_of_perturbed_ground_truth_equals_pycocotools_by_hand_with_people_and_images_left_out(coco_val, tmp_path):
    data = json.loads(coco_val.read_text())
    rng = np.random.default_rng(0)
    people = [a for a in data["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
    images = sorted({a["image_id"] for a in people})
    left_out_images = set(images[::4])  # no result at all on a quarter of the images: their people are misses
    results = []
    for ann in people:
        if ann["image_id"] in left_out_images or rng.random() < 0.2:  # and a fifth of the others' people
            continue
        kp = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        kp[:, :2] += rng.normal(0, 0.04 * np.sqrt(ann["area"]), (17, 2))
        kp[:, 2] = rng.uniform(0.3, 1.0, 17)
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": 1,
                "keypoints": kp.reshape(-1).tolist(),
                "score": float(kp[:, 2].mean()),
            }
        )
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(results))
    ours = coco_eval.oks_ap(coco_eval.ground_truth(coco_val), results, coco_eval.COCO_SIGMAS)
    by_hand = _by_hand(coco_val, results_file)
    assert {k: ours[k] for k in coco_eval.SUMMARY} == pytest.approx(by_hand, abs=1e-12)
    assert ours["images"] == len(data["images"])
    answered = {r["image_id"] for r in results}
    assert ours["unmatched_people"] == sum(a["image_id"] not in answered for a in people) >= len(left_out_images)
    assert 0.1 < ours["AP"] < 0.9  # the left-out people count as misses


def test_evaluation_with_ground_truth_boxes_scores_what_pycocotools_scores_on_its_results_file(coco_val, tmp_path):
    from hourglass_tf import skeleton
    from hourglass_tf.evaluation import evaluate_model
    from hourglass_tf.metadata import describe, save_keras
    from hourglass_tf.model import build_model

    model = build_model(num_stacks=1, num_blocks=1, filters=16, depth=2, num_joints=17, input_size=64)
    save_keras(model, tmp_path / "coco.keras", describe(model, skeleton.COCO))
    out = tmp_path / "eval"
    result = evaluate_model(
        tmp_path / "coco.keras", "coco", "valid", data_dir=str(coco_val.parents[1]), output_dir=out, progress=False
    )
    by_hand = _by_hand(coco_val, out / "coco_results.json")
    assert {k: result["coco_ap"][k] for k in coco_eval.SUMMARY} == pytest.approx(by_hand, abs=1e-12)
    data = json.loads(coco_val.read_text())
    assert result["coco_ap"]["images"] == len(data["images"])
    assert "skipped" in result  # the people the reader could not crop are reported


def test_oks_nms_drops_a_duplicate_person_and_keeps_a_distinct_one():
    kp = np.zeros((17, 3))
    kp[:, 0], kp[:, 1], kp[:, 2] = np.linspace(10, 90, 17), np.linspace(20, 180, 17), 1.0
    near, far = kp.copy(), kp.copy()
    near[:, :2] += 1.0
    far[:, 0] += 200.0

    def result(k, score, image=1):
        return {"image_id": image, "keypoints": k.reshape(-1).tolist(), "score": score, "bbox": [0, 0, 100, 200]}

    kept = coco_eval.oks_nms(
        [result(near, 0.5), result(kp, 0.9), result(far, 0.7), result(kp, 0.4, image=2)], coco_eval.COCO_SIGMAS
    )
    assert [(r["image_id"], r["score"]) for r in kept] == [(1, 0.9), (1, 0.7), (2, 0.4)]
