"""Crop geometry: person box -> centre/scale, the crop matrix, warping, back-projection, flip-back.

The one place for every mapping between original-image pixels and network-input pixels;
data, inference, export and evaluation all call it.

Conventions:
* Pixel coordinates are (x, y), 0-based, integer values at pixel centres, in every frame:
  original image, network input (crop) and heatmap.
* A person is a ``center`` (x, y) in original pixels and a ``scale``: the side of the person
  box is ``PERSON_BOX_UNIT * scale`` pixels (the MPII convention).
* A box (x, y, w, h) becomes a person by ``boxes.box_rule`` (``box_to_center_scale`` on tensors,
  ``person_from_box`` on one box in NumPy): centre of the box, side ``BOX_PAD`` x the larger box side.
* The crop of a person: the box of side 200 x scale x scale_factor around ``center``
  (rotated by ``rotation`` degrees counter-clockwise, optionally mirrored) is mapped onto the
  input_size x input_size crop, ``center`` landing on the crop's centre ((R - 1) / 2, (R - 1) / 2).

Functions taking or returning tensors are TensorFlow ops that work eagerly, inside
``tf.data`` and inside exported graphs.
"""

import math

import tensorflow as tf

# The box rule and its NumPy helpers live in ``boxes`` (no TensorFlow there, so the dataset readers load without
# it); they are re-exported here with the rest of the crop geometry.
from hourglass_tf.boxes import (  # noqa: F401 - re-exported
    BOX_PAD,
    MIN_BOX_SIDE,
    PERSON_BOX_UNIT,
    box_from_person,
    box_rule,
    boxes_outside,
    center_scale_from_joints,
    person_from_box,
    whole_image_person,
)


def box_to_center_scale(boxes):
    """Person boxes (..., 4) as x, y, w, h in pixels -> centres (..., 2) and scales (...,), float32 tensors.

    The rule: centre of the box, box side ``BOX_PAD`` x the larger of w and h, scale = side / 200.
    Width and height are not checked here (graph code asserts them; ``person_from_box`` raises).
    """
    x, y, w, h = tf.unstack(tf.cast(boxes, tf.float32), 4, axis=-1)
    cx, cy, scale = box_rule(x, y, w, h, tf.maximum)
    return tf.stack([cx, cy], axis=-1), scale


def crop_matrix(center, scale, output_size, rotation=0.0, scale_factor=1.0, flip=False):
    """3x3 affine matrix from original-image pixels to crop pixels.

    Args:
      center: (2,) person centre (x, y) in original pixels.
      scale: person box side / 200.
      output_size: side R of the square crop in pixels.
      rotation: degrees, counter-clockwise as seen in the image.
      scale_factor: augmentation factor; > 1 takes a larger box (person appears smaller).
      flip: mirror the crop horizontally (x -> R - 1 - x).

    Returns:
      float32 (3, 3) matrix M with [x_crop, y_crop, 1]^T = M [x, y, 1]^T.
    """
    center = tf.cast(tf.reshape(center, [2]), tf.float32)
    side = tf.cast(scale, tf.float32) * tf.cast(scale_factor, tf.float32) * PERSON_BOX_UNIT
    size = tf.cast(output_size, tf.float32)
    zoom = size / side
    theta = tf.cast(rotation, tf.float32) * (math.pi / 180.0)
    # Counter-clockwise in the image (y down) is a negative angle in the maths frame.
    cos, sin = tf.cos(theta), tf.sin(theta)
    mirror = tf.where(tf.cast(flip, tf.bool), -1.0, 1.0)
    half = (size - 1.0) / 2.0
    a = mirror * zoom * cos
    b = mirror * zoom * sin
    c = -zoom * sin
    d = zoom * cos
    tx = half - (a * center[0] + b * center[1])
    ty = half - (c * center[0] + d * center[1])
    return tf.reshape(tf.stack([a, b, tx, c, d, ty, 0.0, 0.0, 1.0]), [3, 3])


def apply_matrix(matrix, points):
    """Maps (..., 2) points through a 3x3 affine ``matrix`` (float32)."""
    points = tf.cast(points, tf.float32)
    matrix = tf.cast(matrix, tf.float32)
    return tf.linalg.matvec(matrix[:2, :2], points) + matrix[:2, 2]


def back_project(keypoints, matrices):
    """Crop pixels (N, K, 2) -> original pixels through the inverse of (N, 3, 3) original->crop matrices.

    Computed in float64 (the inverse of a zoomed matrix loses digits in float32); returns a float64 tensor.
    """
    keypoints = tf.cast(keypoints, tf.float64)
    inverse = tf.linalg.inv(tf.cast(matrices, tf.float64))
    return tf.einsum("nij,nkj->nki", inverse[:, :2, :2], keypoints) + inverse[:, None, :2, 2]


def warp_image(image, matrix, output_size):
    """Crops ``image`` (H, W, C) float32 with the original->crop ``matrix`` (bilinear, zeros outside)."""
    return warp_images(tf.cast(image, tf.float32)[None], matrix, output_size)[0]


def warp_images(images, matrix, output_size):
    """``warp_image`` for a batch: (N, H, W, C) float32 through one original->output ``matrix`` (3, 3), or
    one matrix per image (N, 3, 3).

    Uses TF's core ``ImageProjectiveTransformV3`` op (no TF Addons): it samples the input at
    inverse(matrix) applied to each output pixel centre.
    """
    inverse = tf.linalg.inv(tf.reshape(tf.cast(matrix, tf.float32), [-1, 3, 3]))
    inverse = inverse / inverse[:, 2:3, 2:3]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32),
        transforms=tf.reshape(inverse, [-1, 9])[:, :8],
        output_shape=tf.constant([output_size, output_size], tf.int32),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def crop_boxes(image, boxes, output_size):
    """The crops of several person boxes of one image, in one op.

    Args:
      image: (H, W, 3) image, float32 in [0, 1] (or any float values: the crops keep them).
      boxes: (M, 4) person boxes x, y, w, h in image pixels, each of positive width and height (the
        ``box_to_center_scale`` rule makes each a person).
      output_size: crop side R.

    Returns:
      crops (M, R, R, 3) float32 (bilinear, zeros outside, as ``warp_image``) and the original->crop
      matrices (M, 3, 3) float32 (``crop_matrix`` of each box's centre and scale).
    """
    centers, scales = box_to_center_scale(tf.reshape(boxes, [-1, 4]))
    matrices = tf.map_fn(
        lambda person: crop_matrix(person[0], person[1], output_size),
        (centers, scales),
        fn_output_signature=tf.TensorSpec([3, 3], tf.float32),
    )
    images = tf.repeat(tf.cast(image, tf.float32)[None], tf.shape(matrices)[0], axis=0)
    return warp_images(images, matrices, output_size), matrices


def flip_back(heatmaps, flip_permutation):
    """Heatmaps of mirrored crops -> heatmaps in the unmirrored frame with left/right swapped.

    (..., H, W, K) -> (..., H, W, K), any leading axes. Exact: mirroring input pixel
    x -> R - 1 - x maps heatmap pixel u -> W - 1 - u under the codec's pixel-centre convention.
    """
    return tf.gather(tf.reverse(heatmaps, axis=[-2]), tf.constant(flip_permutation, tf.int32), axis=-1)


def average_with_mirror(heatmaps, mirrored, flip_permutation):
    """The flip test's average: (heatmaps + flip_back(mirrored)) / 2, both (..., H, W, K)."""
    return (heatmaps + flip_back(mirrored, flip_permutation)) / 2.0
