"""Your own keypoints: any COCO keypoint JSON trains, evaluates (PCK and pycocotools AP), predicts, exports, serves."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from hourglass_tf import skeleton as skeletons
from hourglass_tf.data import coco_keypoints, quadrupeds, readers
from hourglass_tf.data.sample import DataFileError
from hourglass_tf.distribute import mixed_precision_pays
from hourglass_tf.evaluation import coco_eval


def test_flip_pairs_come_from_left_right_words_in_any_position():
    names = ("nose", "left_front_paw", "right_front_paw", "paw_L", "paw_R", "l_ear", "r_ear", "Left-Eye", "Right-Eye")
    pairs = skeletons.Skeleton("x", names, ()).flip_pairs
    assert sorted(pairs) == [(1, 2), (3, 4), (5, 6), (7, 8)]
    assert skeletons.Skeleton("hand", ("wrist", "thumb1", "thumb2"), ()).flip_pairs == ()
    for fixed in (skeletons.MPII, skeletons.LSP, skeletons.FLIC, skeletons.COCO):  # unchanged for the old sets
        assert all(fixed.joints[a].lower().startswith(("l", "left")) for a, _ in fixed.flip_pairs)
    assert len(skeletons.MPII.flip_pairs) == 6 and len(skeletons.COCO.flip_pairs) == 8


def _coco_file(path, annotations=None, categories=None, images=None):
    category = {"id": 3, "name": "tool", "keypoints": ["tip", "left_grip", "right_grip"], "skeleton": [[1, 2], [1, 3]]}
    data = {
        "images": images if images is not None else [{"id": 1, "file_name": "a.jpg"}],
        "annotations": annotations
        if annotations is not None
        else [
            {
                "id": 5,
                "image_id": 1,
                "category_id": 3,
                "bbox": [10, 20, 40, 60],
                "keypoints": [20, 30, 2, 15, 70, 1, 45, 70, 0],
            }
        ],
        "categories": categories if categories is not None else [category],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_the_reader_takes_joints_limbs_and_flip_pairs_from_the_category(tmp_path):
    _coco_file(tmp_path / "annotations" / "train.json")
    options = coco_keypoints.Options()
    samples, skel, skipped, ids = coco_keypoints.read(tmp_path, "train", options)
    assert skel.joints == ("tip", "left_grip", "right_grip") and skel.limbs == ((0, 1), (0, 2))
    assert skel.flip_pairs == ((1, 2),) and skipped == {} and ids == {"coco_keypoints-5": 1}
    (sample,) = samples
    assert sample.image_path == "images/a.jpg" and sample.present.tolist() == [True, True, False]
    assert sample.visible.tolist() == [True, False, False] and sample.normalizer == 60  # the box's longer side
    explicit = coco_keypoints.Options(flip_pairs="tip:right_grip")
    assert readers.dataset_skeleton("coco_keypoints", tmp_path, explicit).flip_pairs == ((0, 2),)
    by_joints = coco_keypoints.Options(normalizer="tip:left_grip")
    assert coco_keypoints.read(tmp_path, "train", by_joints)[0][0].normalizer == pytest.approx(np.hypot(5, 40))


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"annotations": [{"id": 5, "image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "keypoints": [1, 2, 2]}]},
            r"annotations\[0\] \(id 5\): 3 keypoint values, expected 9",
        ),
        (
            {"annotations": [{"id": 5, "image_id": 1, "category_id": 3, "keypoints": [0] * 9}]},
            r"annotations\[0\] \(id 5\) lacks \['bbox'\]",
        ),
        (
            {
                "annotations": [
                    {"id": 5, "image_id": 9, "category_id": 3, "bbox": [1, 2, 3, 4], "keypoints": [0, 0, 2] * 3}
                ]
            },
            "refers to image_id 9",
        ),
        ({"categories": [{"id": 3, "name": "tool"}]}, "0 categories have keypoints"),
        (
            {"categories": [{"id": 3, "name": "tool", "keypoints": ["a", "b", "c"], "skeleton": [[1, 4]]}]},
            r"skeleton pairs \[\[1, 4\]\] are not 1-based joint indices in 1..3",
        ),
        ({"images": [{"id": 1, "file_name": "../../etc/passwd"}]}, "leaves the image folder"),
        ({"images": [{"id": 1}]}, r"images\[0\] needs id and file_name"),
    ],
)
def test_a_malformed_file_is_refused_naming_the_file_and_the_record(tmp_path, change, message):
    _coco_file(tmp_path / "annotations" / "train.json", **change)
    with pytest.raises(DataFileError, match=rf"train.json: .*{message}"):
        coco_keypoints.read(tmp_path, "train", coco_keypoints.Options())


def test_other_categories_crowds_and_empty_people_are_counted_not_read(tmp_path):
    anns = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 3,
            "bbox": [10, 20, 40, 60],
            "keypoints": [20, 30, 2, 15, 70, 1, 45, 70, 2],
        },
        {"id": 2, "image_id": 1, "category_id": 4, "bbox": [0, 0, 9, 9], "keypoints": [1, 1, 2]},
        {"id": 3, "image_id": 1, "category_id": 3, "iscrowd": 1, "bbox": [0, 0, 9, 9], "keypoints": [0] * 9},
        {"id": 4, "image_id": 1, "category_id": 3, "bbox": [0, 0, 9, 9], "keypoints": [0] * 9},
    ]
    cats = [
        {"id": 3, "name": "tool", "keypoints": ["tip", "left_grip", "right_grip"]},
        {"id": 4, "name": "cup", "keypoints": ["rim"]},
    ]
    _coco_file(tmp_path / "annotations" / "train.json", annotations=anns, categories=cats)
    with pytest.raises(DataFileError, match="2 categories have keypoints"):
        coco_keypoints.read(tmp_path, "train", coco_keypoints.Options())
    samples, _, skipped, _ = coco_keypoints.read(tmp_path, "train", coco_keypoints.Options(category="tool"))
    assert len(samples) == 1 and skipped == {"another category": 1, "crowd": 1, "fewer than 1 keypoints": 1}
    cup, skel, _, _ = coco_keypoints.read(tmp_path, "train", coco_keypoints.Options(category=4))
    assert skel.joints == ("rim",) and len(cup) == 1 and skel.flip_pairs == ()


def test_pycocotools_scores_ground_truth_written_back_as_predictions_at_ap_1(tmp_path):
    quadrupeds.generate(tmp_path, num_train=0, num_valid=6, image_size=96)
    gt_file = tmp_path / "annotations" / "val.json"
    samples, skel, _, ids = coco_keypoints.read(tmp_path, "valid", coco_keypoints.Options())
    pred = {
        "id": np.array([s.sample_id for s in samples]),
        "keypoints": np.stack([s.joints for s in samples]),
        "scores": np.ones((len(samples), skel.num_joints)),
    }
    gt = coco_eval.ground_truth(gt_file)
    results = coco_eval.keypoint_results(pred, coco_eval.annotation_image_ids(gt), 1)
    assert [r["image_id"] for r in results] == [ids[s.sample_id] for s in samples]
    perfect = coco_eval.oks_ap(gt, results, coco_eval.sigmas_for(skel))
    assert perfect["AP"] == pytest.approx(1.0) and perfect["AR"] == pytest.approx(1.0)
    assert perfect["sigmas"] == [coco_eval.DEFAULT_SIGMA] * 15
    pred["keypoints"] = pred["keypoints"] + 6.0  # every keypoint 8.5 px off
    worse = coco_eval.oks_ap(
        gt, coco_eval.keypoint_results(pred, coco_eval.annotation_image_ids(gt), 1), coco_eval.sigmas_for(skel)
    )
    assert worse["AP"] < 0.9
    assert len(coco_eval.sigmas_for(skeletons.COCO)) == 17 and coco_eval.sigmas_for(skel, [0.1])[0] == 0.1
    with pytest.raises(ValueError, match="one positive value or 15"):
        coco_eval.sigmas_for(skel, [0.1, 0.2])


def test_a_joint_set_without_mirror_pairs_is_predicted_without_the_flip_test():
    from hourglass_tf.inference import Predictor
    from hourglass_tf.metadata import describe
    from hourglass_tf.model import build_model

    hand = skeletons.Skeleton("hand", ("wrist", "thumb", "index"), ((0, 1), (0, 2)))
    model = build_model(num_stacks=1, filters=16, depth=2, num_joints=3, input_size=64)
    with pytest.warns(UserWarning, match="'hand' has no mirror pairs: predicting without the flip test"):
        predictor = Predictor(model, info=describe(model, hand), flip_test=True)
    assert predictor.flip_test is False


def _script(name, *args, timeout=600):
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def test_a_custom_skeleton_trains_evaluates_predicts_exports_and_serves_with_its_own_joints(tmp_path):
    """The README's journey on a tiny generated quadruped set, through the CLIs."""
    from hourglass_tf import metadata, serving

    data = tmp_path / "quadrupeds"
    quadrupeds.generate(data, num_train=24, num_valid=6, image_size=96)  # what make_quadrupeds.py calls
    run = tmp_path / "run"
    trained = _script(
        "train.py",
        f"--flagfile={REPO / 'quadruped.flags'}",
        f"--data_dir={data}",
        f"--run_dir={run}",
        "--num_stacks=1",
        "--filters=16",
        "--depth=2",
        "--input_size=64",
        "--batch_size=4",
        "--epochs=1",
        "--steps_per_epoch=2",
        "--time_budget_minutes=0",
        "--lr_drop_fractions=",
        "--val_batch_size=6",
        "--image_summaries=0",
    )
    assert trained.returncode == 0, trained.stdout[-1500:] + trained.stderr[-2000:]
    info = metadata.read_info(run / "best.keras")
    assert info.skeleton.joints == quadrupeds.KEYPOINTS and len(info.skeleton.flip_pairs) == 5
    assert info.provenance["metric"] == "val_pck"
    # quadruped.flags says --mixed_precision=auto: bfloat16 only where this CPU has it, and the script says so
    assert info.precision == ("mixed_bfloat16" if mixed_precision_pays() else "float32")
    assert "--mixed_precision=auto: " + ("on" if mixed_precision_pays() else "off (float32") in trained.stdout

    evaluated = _script(
        "evaluate.py",
        f"--checkpoint={run / 'best.keras'}",
        "--dataset=coco_keypoints",
        f"--data_dir={data}",
        f"--output_dir={tmp_path / 'eval'}",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "PCK@0.05" in evaluated.stdout and "COCO keypoint AP (pycocotools, OKS)" in evaluated.stdout
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 0.0 <= result["coco_ap"]["AP"] <= 1.0 and result["threshold"] == 0.05 and result["people"] >= 6

    predicted = _script(
        "predict.py",
        f"--model={run / 'best.keras'}",
        f"--output_dir={tmp_path / 'pred'}",
        "--detector=none",
        data / "images" / "val_00000.jpg",
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    person = json.loads((tmp_path / "pred" / "val_00000.json").read_text())["people"][0]
    assert [k["joint"] for k in person["keypoints"]] == list(quadrupeds.KEYPOINTS)

    exported = _script(
        "export.py",
        f"--model={run / 'best.keras'}",
        f"--output={tmp_path / 'exported'}",
        "--formats=saved_model,tflite,onnx",
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    saved_model = tmp_path / "exported" / "saved_model" / "1"
    reply = serving.parse_response(serving.serve_in_process(saved_model, serving.metadata_request()))
    described = serving.description(reply)["skeleton"]
    assert described["joints"] == list(quadrupeds.KEYPOINTS) and len(described["flip_pairs"]) == 5
    image = (data / "images" / "val_00001.jpg").read_bytes()
    served = serving.parse_response(
        serving.serve_in_process(saved_model, serving.images_request([image], [[[10, 10, 60, 50]]]))
    )
    assert served["keypoints"].shape == (1, 1, 15, 3)


def test_make_quadrupeds_writes_the_example_and_refuses_to_overwrite(tmp_path):
    done = _script("make_quadrupeds.py", f"--output={tmp_path}", "--num_train=2", "--num_valid=1", "--image_size=64")
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(json.loads((tmp_path / "annotations" / "val.json").read_text())["images"]) == 1
    again = _script("make_quadrupeds.py", f"--output={tmp_path}")
    assert again.returncode == 2 and "pass --overwrite" in again.stderr
