"""A generated dataset that is not human: four-legged figures seen from the side, in COCO keypoint JSON.

The example of training on your own keypoints: ``generate(root)`` writes ``root/images/*.jpg`` and
``root/annotations/{train,val}.json`` in the layout annotation tools export, with a 15-keypoint category
``quadruped`` (``KEYPOINTS``, limbs in ``LIMBS``). The legs are named ``left_front_*`` / ``right_front_*`` /
``left_back_*`` / ``right_back_*``, so the flip pairs come from the names. A figure walking to the image's
right shows its left side: its left legs are drawn in front of the body and its right legs behind it (and
darker), as a camera sees an animal; a mirror image is the same animal walking the other way with its sides
swapped, which is what the flip augmentation assumes.

Each image holds one or two figures on the cluttered backgrounds of ``synthetic``; keypoints are visible (2),
or missing (0) outside the frame. Deterministic in (seed, split, index).
"""

import json
import pathlib

import cv2
import numpy as np

from hourglass_tf.data.synthetic import _background, _texture

KEYPOINTS = (
    "nose",
    "head",
    "left_ear",
    "right_ear",
    "withers",
    "tail_base",
    "tail_tip",
    "left_front_elbow",
    "left_front_paw",
    "right_front_elbow",
    "right_front_paw",
    "left_back_knee",
    "left_back_paw",
    "right_back_knee",
    "right_back_paw",
)
K = {name: i for i, name in enumerate(KEYPOINTS)}
LIMBS = (
    ("nose", "head"),
    ("head", "left_ear"),
    ("head", "right_ear"),
    ("head", "withers"),
    ("withers", "tail_base"),
    ("tail_base", "tail_tip"),
    ("withers", "left_front_elbow"),
    ("left_front_elbow", "left_front_paw"),
    ("withers", "right_front_elbow"),
    ("right_front_elbow", "right_front_paw"),
    ("tail_base", "left_back_knee"),
    ("left_back_knee", "left_back_paw"),
    ("tail_base", "right_back_knee"),
    ("right_back_knee", "right_back_paw"),
)
_SPLIT_OFFSET = {"train": 0, "val": 1_000_003}


def _unit(angle_deg):
    a = np.deg2rad(angle_deg)
    return np.array([np.sin(a), np.cos(a)])  # 0 deg points down the image


def random_figure(rng, length, facing):
    """(15, 2) keypoints of a figure ``length`` px from chest to rump, facing +1 (right) or -1 (left)."""
    p = np.zeros((len(KEYPOINTS), 2))
    body = length
    tilt = rng.uniform(-10, 10)
    axis = np.array([np.cos(np.deg2rad(tilt)), np.sin(np.deg2rad(tilt))]) * facing
    p[K["withers"]] = 0
    p[K["tail_base"]] = -axis * body
    neck = body * rng.uniform(0.35, 0.5)
    neck_angle = rng.uniform(20, 70)  # above the horizontal
    head_dir = np.array([np.cos(np.deg2rad(neck_angle)) * facing, -np.sin(np.deg2rad(neck_angle))])
    p[K["head"]] = p[K["withers"]] + head_dir * neck
    nose_angle = rng.uniform(-30, 40)
    p[K["nose"]] = p[K["head"]] + np.array(
        [np.cos(np.deg2rad(nose_angle)) * facing, np.sin(np.deg2rad(nose_angle))]
    ) * body * rng.uniform(0.2, 0.3)
    for side, offset in (("left", 0.06), ("right", -0.06)):
        p[K[f"{side}_ear"]] = p[K["head"]] + np.array([-facing * (0.08 + offset), -0.18]) * body
    tail_angle = rng.uniform(-60, 60)
    p[K["tail_tip"]] = p[K["tail_base"]] + np.array(
        [-np.cos(np.deg2rad(tail_angle)) * facing, np.sin(np.deg2rad(tail_angle))]
    ) * body * rng.uniform(0.3, 0.55)
    upper, lower = body * rng.uniform(0.3, 0.4), body * rng.uniform(0.3, 0.4)
    for end, (joint_name, start) in (("front", ("elbow", "withers")), ("back", ("knee", "tail_base"))):
        for side, shift in (("left", 0.05), ("right", -0.05)):
            swing = rng.uniform(-35, 35)
            bend = rng.uniform(0, 50) * (1 if end == "front" else -1) * facing
            hip = p[K[start]] + np.array([shift * body * facing, 0.1 * body])
            knee = hip + _unit(swing * facing) * upper
            p[K[f"{side}_{end}_{joint_name}"]] = knee
            p[K[f"{side}_{end}_paw"]] = knee + _unit(swing * facing + bend) * lower
    return p


def _draw(image, rng, p, length, facing):
    """Far legs, body, near legs, head; textures from ``rng``."""
    h, w = image.shape[:2]
    near, far = ("left", "right") if facing > 0 else ("right", "left")
    thick = max(2, int(0.09 * length))
    coat = _texture(rng, (h, w)).copy()
    dark = (coat * 0.55).astype(np.uint8)

    def line(a, b, width, colour_image):
        mask = np.zeros((h, w), np.uint8)
        cv2.line(mask, tuple(np.round(p[K[a]]).astype(int)), tuple(np.round(p[K[b]]).astype(int)), 1, width)
        image[mask > 0] = colour_image[mask > 0]

    for end, joint in (("front", "elbow"), ("back", "knee")):
        start = "withers" if end == "front" else "tail_base"
        line(start, f"{far}_{end}_{joint}", thick, dark)
        line(f"{far}_{end}_{joint}", f"{far}_{end}_paw", max(2, thick * 3 // 4), dark)
    mask = np.zeros((h, w), np.uint8)
    centre = (p[K["withers"]] + p[K["tail_base"]]) / 2 + np.array([0, 0.05 * length])
    axis = p[K["withers"]] - p[K["tail_base"]]
    angle = float(np.degrees(np.arctan2(axis[1], axis[0])))
    cv2.ellipse(
        mask, tuple(np.round(centre).astype(int)), (int(0.62 * length), int(0.22 * length)), angle, 0, 360, 1, -1
    )
    image[mask > 0] = coat[mask > 0]
    line("tail_base", "tail_tip", max(2, thick // 2), coat)
    line("withers", "head", max(3, int(0.14 * length)), coat)
    for end, joint in (("front", "elbow"), ("back", "knee")):
        start = "withers" if end == "front" else "tail_base"
        line(start, f"{near}_{end}_{joint}", thick, coat)
        line(f"{near}_{end}_{joint}", f"{near}_{end}_paw", max(2, thick * 3 // 4), coat)
    head = np.zeros((h, w), np.uint8)
    cv2.circle(head, tuple(np.round(p[K["head"]]).astype(int)), max(3, int(0.12 * length)), 1, -1)
    cv2.line(
        head,
        tuple(np.round(p[K["head"]]).astype(int)),
        tuple(np.round(p[K["nose"]]).astype(int)),
        1,
        max(3, int(0.1 * length)),
    )
    for ear in ("left_ear", "right_ear"):
        cv2.line(
            head,
            tuple(np.round(p[K["head"]]).astype(int)),
            tuple(np.round(p[K[ear]]).astype(int)),
            1,
            max(2, int(0.05 * length)),
        )
    image[head > 0] = coat[head > 0]
    cv2.circle(image, tuple(np.round(p[K["nose"]]).astype(int)), max(2, int(0.03 * length)), (20, 20, 20), -1)


def render(rng, size=(192, 192), people=None):
    """One image and its figures' keypoints [(15, 2), ...] (0-based pixels)."""
    h, w = size
    image = _background(rng, size)
    count = people or (1 if rng.random() < 0.7 else 2)
    figures = []
    for i in range(count):
        length = rng.uniform(0.28, 0.42) * w / (1 if count == 1 else 1.4)
        facing = 1 if rng.random() < 0.5 else -1
        p = random_figure(rng, length, facing)
        lo, hi = p.min(axis=0), p.max(axis=0)
        slot = (i + 0.5) / count * w
        cx = slot + rng.uniform(-0.08, 0.08) * w
        cy = rng.uniform(0.45, 0.6) * h
        p = p - (lo + hi) / 2 + np.array([cx, cy])
        _draw(image, rng, p, length, facing)
        figures.append(p)
    return image, figures


def generate(root, num_train=600, num_valid=100, image_size=192, seed=0, quality=90):
    """Writes the dataset (images and COCO keypoint JSON) under ``root``; returns the annotation paths."""
    root = pathlib.Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    category = {
        "id": 1,
        "name": "quadruped",
        "supercategory": "animal",
        "keypoints": list(KEYPOINTS),
        "skeleton": [[K[a] + 1, K[b] + 1] for a, b in LIMBS],
    }
    paths = []
    for split, count in (("train", num_train), ("val", num_valid)):
        images, annotations = [], []
        for i in range(count):
            rng = np.random.default_rng([seed, _SPLIT_OFFSET[split] + i])
            image, figures = render(rng, (image_size, image_size))
            name = f"{split}_{i:05d}.jpg"
            cv2.imwrite(str(root / "images" / name), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
            images.append({"id": i + 1, "file_name": name, "width": image_size, "height": image_size})
            for p in figures:
                inside = np.all((p >= 0) & (p <= image_size - 1), axis=1)
                flags = np.where(inside, 2, 0)
                kp = np.concatenate([np.where(inside[:, None], p, 0.0), flags[:, None]], axis=1)
                lo, hi = p[inside].min(axis=0), p[inside].max(axis=0)
                pad = 0.08 * (hi - lo)
                x0, y0 = np.maximum(lo - pad, 0)
                x1, y1 = np.minimum(hi + pad, image_size - 1)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i + 1,
                        "category_id": 1,
                        "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                        "area": round(float((x1 - x0) * (y1 - y0)), 2),
                        "keypoints": [
                            round(float(v), 2) if j % 3 != 2 else int(v) for j, v in enumerate(kp.reshape(-1))
                        ],
                        "num_keypoints": int(inside.sum()),
                        "iscrowd": 0,
                    }
                )
        path = root / "annotations" / f"{split}.json"
        path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [category]}))
        paths.append(path)
    return paths
