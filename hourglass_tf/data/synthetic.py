"""The built-in synthetic dataset: procedurally rendered articulated figures, MPII's 16 joints.

Each image holds one annotated figure with plausible proportions and joint-angle
limits (hips and shoulders swing within human ranges, knees and elbows bend one
way), limbs, torso and head filled with random colours and textures (solid,
stripes, checks, noise), on a cluttered random background with distractor figures
behind it and occluders in front; figures may be rotated, of any size and cut off
by the frame. The figure faces the camera, so its left side is on the image's
right before rotation: telling left from right needs the articulated structure,
not a colour.

Annotations are written in the MPII JSON layout of the PyTorch ports
(``annot/train.json``, ``annot/valid.json``: 1-based pixels, raw centre/scale) and
read back with ``readers.read_mpii_json`` -- the same code path as real MPII data.
Extra keys: ``head_size`` (PCKh normaliser: 0.6 x the head box diagonal) and
``joints_visible`` (0 where an occluder covers the joint). Joints outside the frame
are not annotated (``joints_vis`` 0), as in MPII.

Deterministic: image ``i`` of a split depends only on (seed, split, i).
"""

import json
import pathlib

import cv2
import numpy as np

from hourglass_tf.boxes import BOX_PAD, PERSON_BOX_UNIT
from hourglass_tf.data.readers import MPII_CENTER_SHIFT, MPII_SCALE_PAD
from hourglass_tf.metrics import HEAD_SIZE_FACTOR
from hourglass_tf.skeleton import MPII

J = {name: i for i, name in enumerate(MPII.joints)}
_SPLIT_OFFSET = {"train": 0, "valid": 1_000_003}


def _unit(angle_deg):
    a = np.deg2rad(angle_deg)
    return np.array([np.sin(a), np.cos(a)])  # 0 deg points down the image (y grows downwards)


def random_pose(rng, height):
    """(16, 2) joints of a figure about ``height`` px tall, pelvis at the origin, upright.

    Angles are measured from 'straight down', positive towards the figure's left
    (the image's right for a figure facing the camera).
    """
    p = np.zeros((16, 2))
    u = height / 8.0  # a head-height unit
    torso, thigh, shin = u * rng.uniform(2.6, 3.1), u * rng.uniform(1.9, 2.3), u * rng.uniform(1.8, 2.2)
    upper_arm, forearm = u * rng.uniform(1.3, 1.6), u * rng.uniform(1.2, 1.5)
    hip_half, shoulder_half = u * rng.uniform(0.45, 0.65), u * rng.uniform(0.8, 1.05)
    lean = rng.uniform(-15, 15)
    up = -_unit(lean)
    side = np.array([-up[1], up[0]])  # towards the figure's left (the image's right when upright)
    p[J["pelvis"]] = 0
    p[J["thorax"]] = up * torso
    p[J["upper_neck"]] = p[J["thorax"]] + up * u * rng.uniform(0.35, 0.55)
    p[J["head_top"]] = p[J["upper_neck"]] + -_unit(lean + rng.uniform(-20, 20)) * u * rng.uniform(1.0, 1.2)
    for s, sign in (("l", 1.0), ("r", -1.0)):
        p[J[f"{s}_hip"]] = sign * side * hip_half
        thigh_angle = lean + sign * rng.uniform(-15, 45) + rng.uniform(-30, 30) * (rng.random() < 0.3)
        p[J[f"{s}_knee"]] = p[J[f"{s}_hip"]] + _unit(thigh_angle) * thigh
        knee_bend = rng.uniform(0, 120) * (1 if rng.random() < 0.5 else -1) * (rng.random() < 0.6)
        p[J[f"{s}_ankle"]] = p[J[f"{s}_knee"]] + _unit(thigh_angle + knee_bend) * shin
        p[J[f"{s}_shoulder"]] = p[J["thorax"]] + sign * side * shoulder_half
        arm_angle = lean + sign * rng.uniform(0, 170)
        p[J[f"{s}_elbow"]] = p[J[f"{s}_shoulder"]] + _unit(arm_angle) * upper_arm
        elbow_bend = sign * rng.uniform(0, 150) * (1 if rng.random() < 0.7 else -0.3)
        p[J[f"{s}_wrist"]] = p[J[f"{s}_elbow"]] + _unit(arm_angle + elbow_bend) * forearm
    return p


def _texture(rng, shape):
    """A (H, W, 3) uint8 texture: solid, stripes, checks or noise, in random colours."""
    h, w = shape
    c1 = rng.integers(0, 256, 3)
    kind = rng.integers(4)
    if kind == 0:
        return np.broadcast_to(c1.astype(np.uint8), (h, w, 3))
    c2 = rng.integers(0, 256, 3)
    yy, xx = np.mgrid[0:h, 0:w]
    period = rng.uniform(4, 14)
    if kind == 1:
        angle = rng.uniform(0, np.pi)
        mask = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0)[..., None]
    elif kind == 2:
        mask = (((xx // period).astype(int) + (yy // period).astype(int)) % 2 == 0)[..., None]
    else:
        noise = cv2.resize(rng.random((max(2, h // 8), max(2, w // 8))), (w, h))
        mask = noise[..., None]
        return (c1 * mask + c2 * (1 - mask)).astype(np.uint8)
    return np.where(mask, c1, c2).astype(np.uint8)


def _paint(image, mask, rng):
    """Fills the pixels where ``mask`` is set with a fresh random texture (only its bounding box is made)."""
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return
    region = mask[y : y + h, x : x + w] > 0
    image[y : y + h, x : x + w][region] = _texture(rng, (h, w))[region]


def _background(rng, size):
    h, w = size
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, h)[:, None, None]
    image = np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).astype(np.uint8).copy()
    for _ in range(rng.integers(8, 25)):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if kind == 0:
            cv2.rectangle(
                image, (x, y), (x + int(rng.integers(5, w // 2)), y + int(rng.integers(5, h // 2))), colour, -1
            )
        elif kind == 1:
            cv2.circle(image, (x, y), int(rng.integers(3, w // 6)), colour, -1)
        else:
            cv2.line(image, (x, y), (int(rng.integers(0, w)), int(rng.integers(0, h))), colour, int(rng.integers(1, 6)))
    noise = rng.normal(0, rng.uniform(2, 12), image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def _draw_figure(image, rng, joints, height):
    """Draws limbs, torso and head with random textures; returns the figure's mask."""
    h, w = image.shape[:2]
    mask_all = np.zeros((h, w), np.uint8)
    u = height / 8.0
    parts = [
        [J["l_hip"], J["r_hip"], J["r_shoulder"], J["l_shoulder"]],  # torso polygon
    ]
    limbs = [
        ("r_hip", "r_knee", 0.55),
        ("r_knee", "r_ankle", 0.45),
        ("l_hip", "l_knee", 0.55),
        ("l_knee", "l_ankle", 0.45),
        ("r_shoulder", "r_elbow", 0.42),
        ("r_elbow", "r_wrist", 0.35),
        ("l_shoulder", "l_elbow", 0.42),
        ("l_elbow", "l_wrist", 0.35),
        ("thorax", "upper_neck", 0.3),
    ]
    order = rng.permutation(len(limbs) + 2)
    for item in order:
        mask = np.zeros((h, w), np.uint8)
        if item < len(limbs):
            a, b, width = limbs[item]
            cv2.line(
                mask,
                tuple(np.round(joints[J[a]]).astype(int)),
                tuple(np.round(joints[J[b]]).astype(int)),
                1,
                max(2, int(width * u)),
            )
        elif item == len(limbs):
            cv2.fillPoly(mask, [np.round(joints[parts[0]]).astype(np.int32)], 1)
        else:
            centre = (joints[J["upper_neck"]] + joints[J["head_top"]]) / 2
            radius = max(2, int(np.linalg.norm(joints[J["head_top"]] - joints[J["upper_neck"]]) / 2))
            cv2.circle(mask, tuple(np.round(centre).astype(int)), radius, 1, -1)
        _paint(image, mask, rng)
        mask_all |= mask
    # Hands and feet as small blobs so the extremities have an end.
    for name in ("l_wrist", "r_wrist", "l_ankle", "r_ankle"):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(image, tuple(np.round(joints[J[name]]).astype(int)), max(2, int(0.22 * u)), colour, -1)
    return mask_all


def _place(rng, pose, image_size, height, truncate):
    """Rotates and positions a pose inside (or partly outside) the frame."""
    h, w = image_size
    angle = rng.uniform(-40, 40) if rng.random() < 0.5 else rng.uniform(-10, 10)
    if rng.random() < 0.05:
        angle += 180  # upside down now and then (gymnastics)
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = pose @ rot.T
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    slack = np.array([w, h]) - (hi - lo)
    margin = 0.35 * (hi - lo) if truncate else np.zeros(2)
    offset = np.array([rng.uniform(-margin[i], max(slack[i], 0) + margin[i]) for i in range(2)]) - lo
    return pts + offset


def render_example(rng, image_size=(256, 256)):
    """One image and its annotation dict (0-based pixels; ``joints_vis``/``joints_visible`` flags)."""
    h, w = image_size
    image = _background(rng, image_size)
    for _ in range(rng.integers(0, 3)):  # distractor figures behind the annotated one
        dh = rng.uniform(0.3, 0.8) * h
        _draw_figure(image, rng, _place(rng, random_pose(rng, dh), image_size, dh, True), dh)
    height = rng.uniform(0.55, 0.95) * h
    joints = _place(rng, random_pose(rng, height), image_size, height, truncate=rng.random() < 0.2)
    _draw_figure(image, rng, joints, height)
    occluded = np.zeros(16, bool)
    for _ in range(rng.integers(0, 3)):  # occluders in front
        mask = np.zeros((h, w), np.uint8)
        x, y = int(rng.uniform(0, w)), int(rng.uniform(0, h))
        sx, sy = int(rng.uniform(0.08, 0.3) * w), int(rng.uniform(0.08, 0.3) * h)
        if rng.random() < 0.5:
            cv2.rectangle(mask, (x, y), (x + sx, y + sy), 1, -1)
        else:
            cv2.ellipse(mask, (x, y), (sx // 2, sy // 2), rng.uniform(0, 180), 0, 360, 1, -1)
        _paint(image, mask, rng)
        xi = np.clip(np.round(joints).astype(int), [0, 0], [w - 1, h - 1])
        occluded |= mask[xi[:, 1], xi[:, 0]] > 0
    inside = np.all((joints >= 0) & (joints <= np.array([w - 1, h - 1])), axis=1)
    # Head box: the square around the head circle, whose diameter is the neck-to-head-top segment.
    head_box = np.linalg.norm(joints[J["head_top"]] - joints[J["upper_neck"]])
    annotation = {
        "joints": joints,
        "present": inside,
        "visible": inside & ~occluded,
        "head_size": HEAD_SIZE_FACTOR * float(np.hypot(head_box, head_box)),
        "box": (joints.min(axis=0), joints.max(axis=0)),
    }
    return image, annotation


def _to_mpii_json_row(name, annotation):
    """MPII JSON row (1-based, raw centre/scale: the reader adds 15 x scale to y and multiplies scale by 1.25)."""
    lo, hi = annotation["box"]
    final_center = (lo + hi) / 2
    final_scale = BOX_PAD * float(np.max(hi - lo)) / PERSON_BOX_UNIT
    raw_scale = final_scale / MPII_SCALE_PAD
    raw_center = final_center - np.array([0.0, MPII_CENTER_SHIFT * raw_scale])
    present = annotation["present"]
    joints = np.where(present[:, None], annotation["joints"] + 1.0, 0.0)
    return {
        "image": name,
        "center": [round(float(v) + 1.0, 3) for v in raw_center],
        "scale": round(raw_scale, 5),
        "joints": [[round(float(x), 3), round(float(y), 3)] for x, y in joints],
        "joints_vis": [int(v) for v in present],
        "joints_visible": [int(v) for v in annotation["visible"]],
        "head_size": round(annotation["head_size"], 3),
    }


def generate(root, num_train=1000, num_valid=200, image_size=256, seed=0, quality=90):
    """Writes the synthetic dataset under ``root`` (``images/``, ``annot/{train,valid}.json``).

    Returns:
      dict split -> number of images written.
    """
    for name, value in (("num_train", num_train), ("num_valid", num_valid), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"`{name}` must be a non-negative integer, received {name}={value!r}")
    if image_size < 32:
        raise ValueError(f"`image_size` must be at least 32, received image_size={image_size}")
    root = pathlib.Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annot").mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, count in (("train", num_train), ("valid", num_valid)):
        rows = []
        for i in range(count):
            rng = np.random.default_rng([seed, _SPLIT_OFFSET[split] + i])
            image, annotation = render_example(rng, (image_size, image_size))
            name = f"{split}_{i:06d}.jpg"
            ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise RuntimeError(f"JPEG encoding failed for {name}")
            (root / "images" / name).write_bytes(data.tobytes())
            rows.append(_to_mpii_json_row(name, annotation))
        tmp = root / "annot" / f".{split}.json.tmp"
        tmp.write_text(json.dumps(rows))
        tmp.replace(root / "annot" / f"{split}.json")
        counts[split] = count
    return counts


def render_video(seed=0, num_frames=60, image_size=(240, 320), num_people=1, height=0.7):
    """A generated video with known joints: figures walking across a fixed background, limbs swinging.

    Each figure moves between two random poses (a smooth swing, about one cycle a second at 25 fps) while
    its pelvis travels along a straight line with a small bob; textures stay the same from frame to frame.
    Figures are ``height`` x the frame height tall and spaced so they do not overlap at the start.

    Returns:
      frames (T, H, W, 3) uint8 RGB and joints (T, P, 16, 2) float32 as x, y in pixels, 0-based (MPII order).
    """
    rng = np.random.default_rng(seed)
    h, w = image_size
    background = _background(rng, image_size)
    tall = height * h
    figures = []
    for p in range(num_people):
        a, b = random_pose(rng, tall), random_pose(rng, tall)
        b = a + 0.35 * (b - a)  # a moderate swing
        lane = (p + 0.5) / num_people * w
        start = np.array([lane + rng.uniform(-0.05, 0.05) * w, 0.55 * h])
        velocity = np.array([rng.uniform(-0.25, 0.25) * w / num_frames * 2, 0.0])
        figures.append((a, b, start, velocity, int(rng.integers(2**31)), rng.uniform(0, 2 * np.pi)))
    frames = np.zeros((num_frames, h, w, 3), np.uint8)
    joints = np.zeros((num_frames, num_people, 16, 2), np.float32)
    for t in range(num_frames):
        image = background.copy()
        for p, (a, b, start, velocity, texture_seed, phase) in enumerate(figures):
            mix = 0.5 - 0.5 * np.cos(2 * np.pi * t / 25.0 + phase)
            pose = a + mix * (b - a)
            centre = start + velocity * t + np.array([0.0, 0.02 * h * np.sin(2 * np.pi * t / 12.5 + phase)])
            pose = pose - (pose.min(axis=0) + pose.max(axis=0)) / 2 + centre
            _draw_figure(image, np.random.default_rng(texture_seed), pose, tall)
            joints[t, p] = pose
        frames[t] = image
    return frames, joints
