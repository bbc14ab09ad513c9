"""Drawing: skeletons, heatmap overlays and image grids (uint8 RGB arrays in, out)."""

import colorsys

import cv2
import numpy as np


def _colours(n):
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(1, n), 0.9, 1.0)) for i in range(n)]


def draw_skeleton(image, joints, present, skeleton, radius=None, thickness=None):
    """Draws limbs and joints on a copy of ``image``.

    Args:
      image: (H, W, 3) uint8 RGB.
      joints: (K, 2) (x, y) pixels of ``image``, 0-based.
      present: (K,) bool: joints to draw (limbs need both ends).
      skeleton: the ``Skeleton`` (limbs; left joints drawn in warm colours, right in cool).
    """
    out = np.ascontiguousarray(image.copy())
    size = max(out.shape[:2])
    radius = radius or max(2, size // 100)
    thickness = thickness or max(1, size // 150)
    joints = np.asarray(joints, np.float32)
    present = np.asarray(present, bool)
    limb_colours = _colours(len(skeleton.limbs))
    for (a, b), colour in zip(skeleton.limbs, limb_colours):
        if present[a] and present[b]:
            cv2.line(
                out,
                tuple(np.round(joints[a]).astype(int)),
                tuple(np.round(joints[b]).astype(int)),
                colour,
                thickness,
                cv2.LINE_AA,
            )
    for j, name in enumerate(skeleton.joints):
        if present[j]:
            side = name.split("_")[0]
            colour = (
                (255, 80, 40)
                if side in ("l", "left")
                else (40, 140, 255)
                if side in ("r", "right")
                else (255, 255, 255)
            )
            cv2.circle(out, tuple(np.round(joints[j]).astype(int)), radius, colour, -1, cv2.LINE_AA)
    return out


def heatmap_overlay(image, heatmaps, alpha=0.5):
    """``image`` (H, W, 3) uint8 with the per-pixel maximum of ``heatmaps`` (h, w, K) overlaid in colour."""
    peak = np.clip(np.max(np.asarray(heatmaps, np.float32), axis=-1), 0, 1)
    peak = cv2.resize(peak, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((255 * peak).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    weight = (alpha * peak)[..., None]
    return (image * (1 - weight) + colour * weight).astype(np.uint8)


def grid(images, columns, pad=2):
    """Tiles equally sized (H, W, 3) uint8 images into one image, ``columns`` wide."""
    if not images:
        raise ValueError("grid needs at least one image")
    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    out = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = im
    return out


def save_png(path, image):
    """Writes an RGB uint8 image as PNG; raises OSError naming the path on failure."""
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1])):
        raise OSError(f"{path}: could not write the PNG")
