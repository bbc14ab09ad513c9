"""The tf.data pipeline: samples or TFRecord shards -> augmented crops and heatmap targets.

Per sample, in graph mode: read/parse -> decode (JPEG/PNG; grayscale, RGBA and
16-bit converted to 8-bit RGB) -> one affine matrix from centre, scale, rotation,
scaling and flip -> one warp of the image (core ``ImageProjectiveTransformV3``) ->
the same matrix on the joints -> left/right joint swap on flip (from the skeleton)
-> colour jitter -> Gaussian heatmaps from the ``HeatmapCodec``.

Elements:
  training: ``(image, {"stack_1": hm, ..., "stack_N": hm})`` with image
    (B, R, R, 3) float32 RGB in [0, 1] and hm (B, R/4, R/4, K) float32.
  validation (``training=False``): no augmentation; with ``with_meta=True`` a
    third element ``meta`` holds what back-projection and metrics need:
    ``matrix`` (B, 3, 3) original image -> crop pixels, ``joints`` (B, K, 2)
    original pixels, ``present``/``visible`` (B, K), ``center`` (B, 2), ``scale``,
    ``normalizer`` (B,), ``id`` (B,) strings; and the target's view:
    ``crop_joints`` (B, K, 2) crop pixels and ``crop_present`` (B, K), in the
    heatmap channel order (left/right swapped where ``flip``). Missing joints read 0.

Randomness is stateless, seeded from ``seed`` and a per-element stream
(``tf.data.Dataset.random``), so a seeded pipeline gives the same batches every run.
"""

import os
import pathlib

import numpy as np
import tensorflow as tf

from hourglass_tf import images
from hourglass_tf.codec import HeatmapCodec
from hourglass_tf.data.augmentation import NO_AUGMENTATION, Augmentation  # noqa: F401 - pipeline.Augmentation
from hourglass_tf.data.sample import SkipReport, sample_problem
from hourglass_tf.geometry import apply_matrix, crop_matrix, warp_image

# ---------------------------------------------------------------- sources


def inspect_sample(sample, root, decode=True, last_image=None):
    """Why ``sample`` is unusable, or None; and its decoded image when ``decode``.

    Checks, in order: image path escaping ``root``; missing image; undecodable image
    (the same TF decoder the pipeline uses, so corrupt or truncated files fail here);
    bad scale or centre; no annotated joint; joints far outside the image.

    Args:
      sample: a ``PoseSample``.
      root: absolute, normalised dataset root the ``image_path`` is relative to.
      decode: decode the image (needed to catch corrupt files and to know its size).
      last_image: optional dict the caller keeps between calls; it holds the last decoded
        image, so people of the same photo (consecutive in every reader) decode it once.

    Returns:
      (problem or None, (H, W, 3) uint8 RGB array or None)
    """
    # Lexical check: ``..`` and absolute paths may not leave the root; symlinked folders inside it may.
    path = pathlib.Path(os.path.normpath(root / sample.image_path))
    if not path.is_relative_to(root):
        return "image path escapes the dataset root", None
    if not path.is_file():
        return "missing image", None
    image = size = None
    if decode:
        cache = {} if last_image is None else last_image
        if path not in cache:
            cache.clear()
            try:
                cache[path] = decode_image(tf.io.read_file(str(path))).numpy()
            except tf.errors.OpError:
                cache[path] = None
        image = cache[path]
        if image is None:
            return "corrupt or unreadable image", None
        size = (image.shape[1], image.shape[0])
    return sample_problem(sample, size), image


def check_samples(samples, root, decode=True):
    """Splits samples into usable ones and a ``SkipReport``: bad samples never reach tf.data.

    See ``inspect_sample`` for the checks. Returns (kept samples, SkipReport).
    """
    root = pathlib.Path(os.path.abspath(root))
    report = SkipReport()
    last_image = {}
    kept = report.keep(samples, lambda sample: inspect_sample(sample, root, decode, last_image)[0])
    return kept, report


def samples_to_dataset(samples, root):
    """A ``tf.data.Dataset`` of per-sample dicts whose image is read from ``root`` when it is transformed.

    Every element: ``path`` (the image file; ``transform_sample`` reads it, so a file that cannot be read is
    one failed sample there, counted like one that does not decode; TFRecord shards carry ``image``, the encoded
    bytes, instead), ``joints`` (K, 2), ``present``, ``visible`` (K,), ``center`` (2,), ``scale``,
    ``normalizer``, ``id``, and ``offset`` (2,) / ``factor`` (2,) with ``encoded = (original - offset) * factor``
    (identity here; TFRecord shards store person regions).
    """
    if not samples:
        raise ValueError(f"no samples to build a dataset from (root {root})")
    root = pathlib.Path(root)
    columns = {
        "path": np.array([str(root / s.image_path) for s in samples]),
        "joints": np.stack([s.joints for s in samples]).astype(np.float32),
        "present": np.stack([s.present for s in samples]),
        "visible": np.stack([s.visible for s in samples]),
        "center": np.stack([s.center for s in samples]).astype(np.float32),
        "scale": np.array([s.scale for s in samples], np.float32),
        "normalizer": np.array([s.normalizer for s in samples], np.float32),
        "id": np.array([s.sample_id for s in samples]),
    }
    dataset = tf.data.Dataset.from_tensor_slices(columns)

    def read(element):
        element = dict(element)
        element["offset"] = tf.zeros([2], tf.float32)
        element["factor"] = tf.ones([2], tf.float32)
        return element

    return dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE)


def decode_image(data):
    """Encoded JPEG/PNG/BMP/GIF bytes -> (H, W, 3) uint8 RGB (grayscale, RGBA, 16-bit converted); a header that
    declares more than ``images.MAX_IMAGE_PIXELS`` pixels fails before decoding."""
    image = tf.io.decode_image(images.checked_tf(data), channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


# ---------------------------------------------------------------- per-sample transform


def _random_params(seed, augmentation):
    """Rotation (deg), scale factor, flip (bool), colour gains (3,) from a stateless seed (2,)."""
    u = tf.random.stateless_uniform([7], seed=seed)
    rotation = (2.0 * u[0] - 1.0) * augmentation.rotation
    rotation = tf.where(u[6] < augmentation.rotation_prob, rotation, 0.0)
    scale = augmentation.scale_min + u[1] * (augmentation.scale_max - augmentation.scale_min)
    flip = (u[2] < 0.5) if augmentation.flip else tf.constant(False)
    gains = 1.0 + (2.0 * u[3:6] - 1.0) * augmentation.color
    return rotation, scale, flip, gains


def transform_sample(element, seed, codec, flip_permutation, augmentation):
    """One sample dict -> (image (R, R, 3) float32 in [0, 1], heatmaps (R/4, R/4, K), meta dict)."""
    size = codec.input_size
    rotation, scale_factor, flip, gains = _random_params(seed, augmentation)
    encoded = element["image"] if "image" in element else tf.io.read_file(element["path"])
    image = tf.cast(decode_image(encoded), tf.float32) / 255.0
    # Encoded image pixels (a stored region) <-> original pixels: enc = (orig - offset) * factor.
    fx, fy = element["factor"][0], element["factor"][1]
    ox, oy = element["offset"][0], element["offset"][1]
    to_encoded = tf.reshape(tf.stack([fx, 0.0, -ox * fx, 0.0, fy, -oy * fy, 0.0, 0.0, 1.0]), [3, 3])
    encoded_to_crop = crop_matrix(element["center"], element["scale"], size, rotation, scale_factor, flip)
    matrix = encoded_to_crop @ to_encoded
    crop = warp_image(image, encoded_to_crop, size)
    crop = tf.clip_by_value(crop * gains, 0.0, 1.0)
    crop.set_shape([size, size, 3])

    joints = apply_matrix(encoded_to_crop, element["joints"])
    present, visible = element["present"], element["visible"]
    permutation = tf.constant(flip_permutation, tf.int32)
    joints = tf.where(flip, tf.gather(joints, permutation), joints)
    present = tf.where(flip, tf.gather(present, permutation), present)
    visible = tf.where(flip, tf.gather(visible, permutation), visible)
    heatmaps = codec.encode(joints, present)
    joints = tf.where(present[:, None], joints, 0.0)

    original = apply_matrix(tf.linalg.inv(to_encoded), element["joints"])
    original = tf.where(element["present"][:, None], original, 0.0)  # missing joints read 0, as in the readers
    meta = {
        "matrix": matrix,
        "joints": original,
        "crop_joints": joints,
        "crop_present": present,
        "present": element["present"],
        "visible": element["visible"],
        "center": apply_matrix(tf.linalg.inv(to_encoded), element["center"]),
        "scale": element["scale"] / tf.reduce_mean(element["factor"]),
        "normalizer": element["normalizer"],
        "id": element["id"],
        "flip": flip,
    }
    return crop, heatmaps, meta


def make_dataset(
    source,
    skeleton,
    num_stacks,
    batch_size,
    input_size=256,
    sigma=1.0,
    training=True,
    augmentation=None,
    with_meta=False,
    seed=0,
    shuffle_buffer=2048,
    drop_remainder=None,
    failures=None,
    skip=0,
):
    """Batches for ``model.fit`` / evaluation from a per-sample source.

    Args:
      source: dataset from ``samples_to_dataset`` or ``tfrecords.read_shards``.
      skeleton: the ``Skeleton`` (flip swap).
      num_stacks: how many ``stack_i`` targets to yield (the same heatmaps each).
      batch_size: batch size (global batch under a distribution strategy).
      input_size: crop side; heatmaps are input_size / 4.
      training: shuffle, augment and repeat-safe; ``False`` = no augmentation, fixed order.
      augmentation: ``Augmentation`` (the paper's by default when training).
      with_meta: add the meta dict as a third element (evaluation).
      seed: seed of the shuffle and of the augmentation.
      drop_remainder: defaults to ``training``.
      failures: a ``FailureCount`` that counts the samples dropped because they failed (see below).
      skip: elements of the shuffled stream to pass over before any is decoded: the stream then goes on exactly
        as one that yielded those first (their shuffle positions and augmentation seeds are drawn and
        dropped), without their cost. A resumed training run starts where its backup ended this way.

    The element order is fixed (parallel maps keep it), so a seeded pipeline repeats itself.
    A sample that fails to decode or transform is dropped, never silently: ``failures`` counts it,
    and with ``with_meta`` every element carries its number (``meta["index"]``) so the missing ones
    can be named (``inference.predict_dataset`` does).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive integer, received batch_size={batch_size!r}")
    if isinstance(num_stacks, bool) or not isinstance(num_stacks, int) or num_stacks <= 0:
        raise ValueError(f"`num_stacks` must be a positive integer, received num_stacks={num_stacks!r}")
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise ValueError(f"`skip` must be a non-negative integer, received skip={skip!r}")
    codec = HeatmapCodec(input_size, input_size // 4, sigma)
    if augmentation is None:
        augmentation = Augmentation() if training else NO_AUGMENTATION
    if drop_remainder is None:
        drop_remainder = training
    flip_permutation = skeleton.flip_permutation
    dataset = source
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    dataset = tf.data.Dataset.zip(dataset, seeds)
    if skip:
        dataset = dataset.skip(skip)  # before the numbering: element numbers (failure counting) start at 0
    dataset = dataset.enumerate()

    @tf.autograph.experimental.do_not_convert  # plain TensorFlow ops, no Python control flow on tensors
    def transform(index, pair):
        element, element_seed = pair
        crop, heatmaps, meta = transform_sample(element, element_seed, codec, flip_permutation, augmentation)
        targets = {f"stack_{s}": heatmaps for s in range(1, num_stacks + 1)}
        if with_meta:
            return index, (crop, targets, {**meta, "index": index})
        return index, (crop, targets)

    # A sample that fails here (its file changed on disk after check_samples, or a bug) is dropped so an
    # epoch never dies mid-way, but never silently: the gaps in the element numbers are counted into
    # ``failures`` (training), and validation carries each element's number in ``meta["index"]`` so
    # ``inference.predict_dataset`` reports every missing sample by name.
    if failures is None:
        dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
    else:
        dataset = failures.guarded(dataset, transform)
    dataset = dataset.map(lambda index, element: element)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


MAX_FAILURES_IN_A_ROW = 256
FAILURES_IN_A_ROW = "training samples in a row failed to decode or transform"


class FailureCount:
    """How many samples a training pipeline dropped because they failed to decode or transform (a process-local
    count), and the guard that stops it when ``max_in_a_row`` fail one after another.

    ``make_dataset(..., failures=FailureCount())`` counts; ``total()`` reads the count so far, and
    ``since_last()`` what was added since its previous call (the training loop reports it per epoch).

    Samples are transformed in chunks of ``max_in_a_row``, each followed by a marker that passes every error
    filter, so even when every sample fails (a moved folder, a permission change) the pipeline keeps
    yielding, and the guard raises ``InvalidArgumentError`` saying ``FAILURES_IN_A_ROW`` instead of
    looping without a word.
    """

    def __init__(self, max_in_a_row=MAX_FAILURES_IN_A_ROW):
        if isinstance(max_in_a_row, bool) or not isinstance(max_in_a_row, int) or max_in_a_row < 1:
            raise ValueError(f"max_in_a_row must be a positive integer, received max_in_a_row={max_in_a_row!r}")
        self.max_in_a_row = max_in_a_row
        with tf.init_scope():
            self.variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="dropped_samples")
        self._reported = 0

    def guarded(self, indexed, transform):
        """``indexed`` ((index, pair) elements) transformed by ``transform``, failures dropped, counted and
        guarded; yields (index, element)."""
        structure = indexed.map(transform).element_spec[1]
        marker = tf.nest.map_structure(lambda spec: tf.zeros([d or 0 for d in spec.shape], spec.dtype), structure)

        def chunk(indices, pairs):
            done = tf.data.Dataset.from_tensor_slices((indices, pairs))
            done = done.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
            done = done.map(lambda index, element: (index, False, element))
            return done.concatenate(tf.data.Dataset.from_tensors((indices[-1], True, marker)))

        dataset = indexed.batch(self.max_in_a_row).flat_map(chunk)
        initial = (tf.constant(-1, tf.int64), tf.constant(0, tf.int64), tf.constant(False))
        dataset = dataset.scan(initial, self._count).filter(self._keep)
        return dataset.map(lambda index, is_marker, tripped, element: (index, element))

    def _count(self, state, element):
        """The scan's step: counts the failures before ``element`` and marks every element from the one that
        trips the guard on (``_keep`` raises there). It never raises itself, so its state stays true and, once
        tripped, counts nothing more however many elements a parallel consumer still pulls."""
        previous, in_a_row, tripped = state
        index, is_marker, sample = element
        # a sample arriving: those between it and the previous one failed; a marker: those up to it did
        gap = tf.where(is_marker, index - previous, index - previous - 1)
        in_a_row = in_a_row + gap
        counted = tf.where(tripped, tf.constant(0, tf.int64), gap)
        tripped = tf.logical_or(tripped, in_a_row >= self.max_in_a_row)
        with tf.control_dependencies([self.variable.assign_add(counted)]):
            in_a_row = tf.where(is_marker, in_a_row, tf.constant(0, tf.int64))
            return (index, in_a_row, tripped), (index, is_marker, tripped, sample)

    def _keep(self, index, is_marker, tripped, element):
        """The filter after the scan: the guard's error from the tripping element on; samples kept, markers not."""
        check = tf.debugging.assert_equal(
            tripped, tf.constant(False), message=f"{self.max_in_a_row} {FAILURES_IN_A_ROW}"
        )
        with tf.control_dependencies([check]):
            return tf.logical_not(is_marker)

    def total(self):
        return int(self.variable.numpy())

    def since_last(self):
        total = self.total()
        new, self._reported = total - self._reported, total
        return new


def sample_ids(source, positions):
    """The ``id`` of the elements of a per-sample ``source`` at ``positions`` (element numbers from 0)."""
    wanted = set(int(p) for p in positions)
    ids = {}
    for position, sample_id in source.map(lambda e: e["id"]).enumerate():
        if int(position) in wanted:
            value = sample_id.numpy()
            ids[int(position)] = value.decode() if isinstance(value, bytes) else str(value)
            if len(ids) == len(wanted):
                break
    return [ids.get(p, f"#{p}") for p in sorted(wanted)]
