"""The heatmap codec: joints in crop pixels <-> Gaussian heatmaps (crop geometry: ``geometry``).

Conventions:
* Pixel coordinates are (x, y), 0-based, integer values at pixel centres, in
  every frame: network input (crop) and heatmap.
* Input crop <-> heatmap (stride s = input / heatmap size): pixel k of the heatmap
  covers input pixels s*k .. s*k+s-1, so x_heatmap = (x_input + 0.5) / s - 0.5.

``HeatmapCodec.encode`` makes the training targets and ``HeatmapCodec.decode``
reads predictions, so the two cannot drift apart. Decoding refines the argmax by the
paper's rule (a quarter pixel toward the higher neighbour) or, with ``refine="dark"``, by
DARK (Zhang et al., "Distribution-Aware Coordinate Representation for Human Pose
Estimation", CVPR 2020) as published: the heatmap is first modulated (smoothed by a Gaussian
of the training sigma, zeros beyond the border, and rescaled to its original maximum), then
one Newton step on the log of the modulated heatmap at the argmax. Both are TensorFlow ops
that work eagerly, inside ``tf.data`` and inside exported graphs.
"""

import numpy as np
import tensorflow as tf

QUARTER = 0.25
REFINEMENTS = ("quarter", "dark")


class HeatmapCodec:
    """Joints <-> Gaussian heatmaps, at a fixed input and heatmap resolution.

    Args:
      input_size: side of the network input (crop) in pixels.
      heatmap_size: side of the heatmaps (input_size / 4 for the hourglass).
      sigma: Gaussian standard deviation in heatmap pixels (1 in the paper).
      refine: sub-pixel step of ``decode``: ``"quarter"`` (the paper: a quarter pixel
        toward the higher neighbour) or ``"dark"`` (DARK: the modulated heatmap's log is fitted
        by a quadratic around the argmax and its peak taken, at most half a pixel away; the
        quarter rule where that fit has no maximum, e.g. on the border).
    """

    def __init__(self, input_size=256, heatmap_size=64, sigma=1.0, refine="quarter"):
        for name, value in (("input_size", input_size), ("heatmap_size", heatmap_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, received {name}={value!r}")
        if input_size % heatmap_size:
            raise ValueError(
                f"`input_size` must be a multiple of `heatmap_size`, received input_size={input_size}, "
                f"heatmap_size={heatmap_size}"
            )
        if not sigma > 0:
            raise ValueError(f"`sigma` must be positive, received sigma={sigma!r}")
        if refine not in REFINEMENTS:
            raise ValueError(f"`refine` must be one of {REFINEMENTS}, received refine={refine!r}")
        self.refine = refine
        self.input_size = input_size
        self.heatmap_size = heatmap_size
        self.sigma = float(sigma)
        self.stride = input_size // heatmap_size

    def input_to_heatmap(self, points):
        """(..., 2) crop pixels -> heatmap pixels."""
        return (tf.cast(points, tf.float32) + 0.5) / self.stride - 0.5

    def heatmap_to_input(self, points):
        """(..., 2) heatmap pixels -> crop pixels."""
        return (tf.cast(points, tf.float32) + 0.5) * self.stride - 0.5

    def encode(self, joints, present):
        """Training targets.

        Args:
          joints: (..., K, 2) joints in crop pixels.
          present: (..., K) bool; missing joints get an all-zero heatmap, and so do
            joints outside the crop.

        Returns:
          float32 (..., H, W, K) heatmaps with H = W = heatmap_size, peak 1 at the joint.
        """
        xy = self.input_to_heatmap(joints)
        size = float(self.heatmap_size)
        inside = tf.reduce_all((xy >= -0.5) & (xy < size - 0.5), axis=-1)
        keep = tf.cast(tf.cast(present, tf.bool) & inside, tf.float32)  # (..., K)
        grid = tf.range(self.heatmap_size, dtype=tf.float32)
        dx = grid - xy[..., 0:1]  # (..., K, W)
        dy = grid - xy[..., 1:2]  # (..., K, H)
        gx = tf.exp(-tf.square(dx) / (2.0 * self.sigma**2))
        gy = tf.exp(-tf.square(dy) / (2.0 * self.sigma**2))
        maps = gy[..., :, None] * gx[..., None, :] * keep[..., None, None]  # (..., K, H, W)
        rank = len(maps.shape)
        perm = list(range(rank - 3)) + [rank - 2, rank - 1, rank - 3]
        return tf.transpose(maps, perm)

    def decode(self, heatmaps):
        """Predictions: argmax, then the ``refine`` step (the paper: a quarter pixel toward the higher neighbour).

        Args:
          heatmaps: (N, H, W, K) float heatmaps.

        Returns:
          keypoints: float32 (N, K, 2) in crop pixels.
          scores: float32 (N, K) heatmap maxima.
        """
        xy, scores = self.decode_heatmap_pixels(heatmaps)
        return self.heatmap_to_input(xy), scores

    def modulate(self, heatmaps):
        """DARK's distribution modulation: (N, H, W, K) heatmaps smoothed by a Gaussian of ``sigma``
        (kernel 2 * ceil(3 sigma) + 1, zeros beyond the border), each map rescaled to its original maximum."""
        heatmaps = tf.cast(heatmaps, tf.float32)
        radius = int(np.ceil(3.0 * self.sigma))
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / self.sigma) ** 2)
        taps = (taps / taps.sum()).astype(np.float32)
        channels = tf.shape(heatmaps)[-1]
        kernel = tf.tile(tf.constant(np.outer(taps, taps))[:, :, None, None], [1, 1, channels, 1])
        smooth = tf.nn.depthwise_conv2d(heatmaps, kernel, [1, 1, 1, 1], "SAME")
        peak = tf.reduce_max(heatmaps, axis=[1, 2], keepdims=True)
        smooth_peak = tf.reduce_max(smooth, axis=[1, 2], keepdims=True)
        return smooth * tf.math.divide_no_nan(peak, smooth_peak)

    def decode_heatmap_pixels(self, heatmaps):
        """As ``decode`` but the keypoints stay in heatmap pixels."""
        heatmaps = tf.cast(heatmaps, tf.float32)
        shape = tf.shape(heatmaps)
        n, h, w, k = shape[0], shape[1], shape[2], shape[3]
        flat = tf.reshape(tf.transpose(heatmaps, [0, 3, 1, 2]), [n, k, h * w])
        index = tf.argmax(flat, axis=-1, output_type=tf.int32)
        scores = tf.reduce_max(flat, axis=-1)
        x, y = index % w, index // w

        def value(xx, yy):
            xx = tf.clip_by_value(xx, 0, w - 1)
            yy = tf.clip_by_value(yy, 0, h - 1)
            return tf.gather(flat, yy * w + xx, batch_dims=2)

        interior_x = (x > 0) & (x < w - 1)
        interior_y = (y > 0) & (y < h - 1)
        shift_x = tf.where(interior_x, QUARTER * tf.sign(value(x + 1, y) - value(x - 1, y)), 0.0)
        shift_y = tf.where(interior_y, QUARTER * tf.sign(value(x, y + 1) - value(x, y - 1)), 0.0)
        if self.refine == "dark":
            modulated = tf.reshape(tf.transpose(self.modulate(heatmaps), [0, 3, 1, 2]), [n, k, h * w])

            def log_value(dx, dy):
                xx = tf.clip_by_value(x + dx, 0, w - 1)
                yy = tf.clip_by_value(y + dy, 0, h - 1)
                return tf.math.log(tf.maximum(tf.gather(modulated, yy * w + xx, batch_dims=2), 1e-10))

            centre = log_value(0, 0)
            gx = 0.5 * (log_value(1, 0) - log_value(-1, 0))
            gy = 0.5 * (log_value(0, 1) - log_value(0, -1))
            hxx = log_value(1, 0) - 2.0 * centre + log_value(-1, 0)
            hyy = log_value(0, 1) - 2.0 * centre + log_value(0, -1)
            hxy = 0.25 * (log_value(1, 1) - log_value(-1, 1) - log_value(1, -1) + log_value(-1, -1))
            det = hxx * hyy - hxy * hxy
            # A maximum (negative-definite Hessian) with all eight neighbours inside the map.
            fit = interior_x & interior_y & (hxx < 0.0) & (det > 0.0)
            safe = tf.where(fit, det, 1.0)
            newton_x = tf.clip_by_value(-(hyy * gx - hxy * gy) / safe, -0.5, 0.5)
            newton_y = tf.clip_by_value(-(hxx * gy - hxy * gx) / safe, -0.5, 0.5)
            shift_x = tf.where(fit, newton_x, shift_x)
            shift_y = tf.where(fit, newton_y, shift_y)
        xy = tf.stack([tf.cast(x, tf.float32) + shift_x, tf.cast(y, tf.float32) + shift_y], axis=-1)
        return xy, scores
