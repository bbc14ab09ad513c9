"""The paper's test-time procedure, on compiled graphs.

For a batch of person crops: run the crops and their horizontal mirrors through
the network in one batch, flip the mirrored heatmaps back and swap left/right
channels, average, decode with the ``HeatmapCodec`` (argmax + a quarter pixel
toward the higher neighbour), and map the keypoints back to original-image
pixels through the inverse crop matrix. Scores are the heatmap maxima.

Optionally (``scales``), multi-scale testing: each crop is also zoomed about its
centre as if the person box were ``s`` times larger (``s`` > 1: the person appears
smaller, zeros where the zoomed-out crop leaves the original one), and each
scale's heatmaps are zoomed back by ``s`` into the reference frame before the
average. The paper tests at one scale; ``scales=(1.0,)`` is the default.

Everything runs in a ``tf.function`` with a fixed input signature (eager
``model(x)`` measured 4-7x slower).

Conventions: crops are (N, R, R, 3) float32 RGB in [0, 1]; keypoints (N, K, 2) as
(x, y), 0-based pixels (crop pixels, or original-image pixels after
``back_project``).
"""

import warnings

import numpy as np
import tensorflow as tf

from hourglass_tf import geometry
from hourglass_tf.backends import KerasRunner, Runner, load_model_file
from hourglass_tf.codec import HeatmapCodec
from hourglass_tf.geometry import crop_matrix, warp_image, warp_images
from hourglass_tf.inference_options import parse_scales


def zoom_about_centre(images, factor):
    """Zooms (N, S, S, C) images by ``factor`` about the frame centre ((S - 1) / 2, (S - 1) / 2).

    A point p of the input lands at c + factor * (p - c) in the output (pixel-centre
    convention, bilinear, zeros outside). Zooming a crop by 1 / s gives the crop of a
    box s times larger around the same centre (up to the zeros beyond the original
    crop); zooming its heatmaps by s maps them back, because the crop and heatmap
    centres correspond under the codec's stride mapping.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be (N, S, S, C), received shape {images.shape}")
    size = images.shape[1]
    shift = (size - 1) / 2.0 * (1.0 - factor)
    matrix = tf.constant([[factor, 0.0, shift], [0.0, factor, shift], [0.0, 0.0, 1.0]], tf.float32)
    return warp_images(images, matrix, size)


class Predictor:
    """Runs a stacked hourglass with the paper's test-time procedure, on any backend.

    Args:
      model: a Keras model (input (N, R, R, 3), outputs ``stack_1`` ... ``stack_S``) or a
        ``backends.Runner`` (``Predictor.from_file`` picks one from the file).
      info: the model's ``metadata.ModelInfo``; or
      skeleton: the joint set, for a model without a description (its input and stride are
        read from the model). Exactly one of the two.
      flip_test: average with the mirrored crop (the paper's procedure). A joint set without
        mirror pairs is predicted without it (a warning says so).
      refine: the codec's sub-pixel step, ``"quarter"`` (the paper's) or ``"dark"``; None: the model's own
        (``info.decoding``: what its description says it was validated with, the paper's rule unless chosen).
      scales: test scales, person box side multipliers whose heatmaps are averaged
        (``(1.0,)``: the paper's single scale; e.g. ``(0.9, 1.0, 1.1)``). Each scale
        costs one more pass (two with the flip test).
    """

    def __init__(self, model, info=None, skeleton=None, flip_test=True, refine=None, scales=(1.0,)):
        self.runner = model if isinstance(model, Runner) else KerasRunner(model)
        if (info is None) == (skeleton is None):
            raise ValueError(
                f"give the model's description (info) or its skeleton, not both or neither; "
                f"received info={info!r}, skeleton={skeleton!r}"
            )
        if info is None:
            from hourglass_tf.metadata import ModelInfo

            info = ModelInfo(
                skeleton=skeleton,
                input_size=self.runner.input_size,
                stride=self.runner.input_size // self.runner.heatmap_size,
            )
        info.check_model(self.runner.num_joints, (self.runner.input_size, self.runner.input_size))
        self.info = info
        self.skeleton = info.skeleton
        self.input_size = self.runner.input_size
        self.codec = HeatmapCodec(
            self.input_size, self.runner.heatmap_size, sigma=info.sigma, refine=refine or info.decoding
        )
        if flip_test and not self.skeleton.flip_pairs:
            warnings.warn(
                f"the joint set {self.skeleton.name!r} has no mirror pairs: predicting without the flip test",
                stacklevel=2,
            )
            flip_test = False
        self.flip_test = flip_test
        self.scales = parse_scales(scales)
        self.precision = getattr(self.runner, "precision", "float32")
        self.runtime = self.runner.runtime

    @classmethod
    def from_file(
        cls,
        path=None,
        skeleton=None,
        flip_test=True,
        refine=None,
        scales=(1.0,),
        log=print,
        precision="float32",
        runtime=None,
    ):
        """Loads ``.keras``, a SavedModel or ``exported/NAME`` folder, ``.tflite`` or ``.onnx`` with its description.

        ``path``: a model file or folder, or a shipped model's name (``pretrained.MODELS``); None takes the
        default shipped model and says so through ``log``. ``skeleton`` (a ``Skeleton`` or name) is needed only
        for a model that carries no description. ``precision``: ``float32``, ``bfloat16`` or ``auto`` for a
        ``.keras`` model (``backends.choose_precision``); the predictor's ``precision`` says what it runs in.
        ``runtime``: what runs a ``.keras`` model, ``tensorflow``, ``litert`` (a TFLite conversion made once and
        cached, ``litert_cache``) or ``auto`` (LiteRT in float32; ``backends.load_runner``), said through ``log``;
        None: TensorFlow for ``.keras``, every other format on its own runtime. The predictor's ``runtime`` says
        which runs it.
        """
        from hourglass_tf import pretrained

        runner, info = load_model_file(pretrained.resolve(path, log), skeleton, precision, runtime, log)
        return cls(runner, info=info, flip_test=flip_test, refine=refine, scales=scales)

    def all_stack_heatmaps(self, crops):
        """Heatmaps (S, N, H, W, K) float32 NumPy: every stack (Keras) or the last (exported formats).

        With several test scales, the average of each scale's heatmaps in the reference frame.
        """
        permutation = self.skeleton.flip_permutation if self.flip_test else None
        crops = np.asarray(crops, np.float32)
        total = 0.0
        for scale in self.scales:
            batch = crops if scale == 1.0 else zoom_about_centre(crops, 1.0 / scale).numpy()
            stacks = np.asarray(self.runner(batch, permutation), np.float32)
            if scale != 1.0:
                flat = stacks.reshape((-1,) + stacks.shape[2:])
                stacks = zoom_about_centre(flat, scale).numpy().reshape(stacks.shape)
            total = total + stacks
        return total / len(self.scales)

    def decode(self, heatmaps):
        """(N, H, W, K) heatmaps -> keypoints (N, K, 2) crop pixels, scores (N, K)."""
        keypoints, scores = self.codec.decode(tf.convert_to_tensor(heatmaps, tf.float32))
        return keypoints.numpy(), scores.numpy()

    def predict_crops(self, crops, all_stacks=False):
        """Person crops (N, R, R, 3) float32 in [0, 1] -> dict of NumPy arrays.

        Returns:
          ``keypoints`` (N, K, 2) crop pixels, ``scores`` (N, K), ``heatmaps`` (N, H, W, K)
          of the last stack; with ``all_stacks`` also ``stack_heatmaps`` (S, N, H, W, K).
        """
        crops = np.asarray(crops, np.float32)
        if crops.ndim != 4 or crops.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(
                f"crops must be (N, {self.input_size}, {self.input_size}, 3) float32, received shape {crops.shape}"
            )
        stacks = self.all_stack_heatmaps(crops)
        keypoints, scores = self.decode(stacks[-1])
        result = {"keypoints": keypoints, "scores": scores, "heatmaps": stacks[-1]}
        if all_stacks:
            result["stack_heatmaps"] = stacks
        return result

    def crop(self, image, center, scale):
        """(H, W, 3) uint8 RGB image -> (crop (R, R, 3) float32 in [0, 1], original->crop matrix (3, 3))."""
        matrix = crop_matrix(np.asarray(center, np.float32), float(scale), self.input_size)
        crop = warp_image(tf.convert_to_tensor(image, tf.float32) / 255.0, matrix, self.input_size)
        return crop.numpy(), matrix.numpy()

    def predict_image(self, image, center=None, scale=None, box=None):
        """One person in a full image -> keypoints (K, 2) in original pixels and scores (K,).

        The person is given by ``box`` (x, y, w, h), or ``center`` and ``scale``; with
        neither, the whole image is one centred person.
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) RGB, received shape {image.shape}")
        height, width = image.shape[:2]
        if box is not None:
            if geometry.boxes_outside(box, width, height)[0]:
                raise ValueError(f"box {tuple(box)} lies outside the {width}x{height} image")
            center, scale = geometry.person_from_box(box)
        elif center is None or scale is None:
            center, scale = geometry.whole_image_person(width, height)
        elif not scale > 0:
            raise ValueError(f"scale must be positive, received scale={scale}")
        crop, matrix = self.crop(image, center, scale)
        result = self.predict_crops(crop[None])
        keypoints = geometry.back_project(result["keypoints"], matrix[None]).numpy()[0]
        return {
            "keypoints": keypoints,
            "scores": result["scores"][0],
            "center": np.asarray(center),
            "scale": float(scale),
            "crop": crop,
            "crop_keypoints": result["keypoints"][0],
            "heatmaps": result["heatmaps"][0],
        }


class MissingSamplesError(ValueError):
    """Samples of an evaluation split failed in the pipeline; the message names them."""


def predict_dataset(predictor, dataset, all_stacks=False, progress=True, total=None, source=None):
    """Runs a validation pipeline (``make_dataset(..., training=False, with_meta=True)``).

    Every sample counts: with ``total`` (the number of samples the pipeline was given) a sample
    that failed in the pipeline (its image changed on disk, say) raises ``MissingSamplesError``
    naming it (its ``id`` from ``source``, the per-sample source, when given), instead of
    shrinking the denominator.

    Returns:
      dict of NumPy arrays over the whole split: ``keypoints`` (N, K, 2) original pixels,
      ``scores`` (N, K), ``heatmap_mean``/``heatmap_max`` (N, K) of the last stack,
      ``joints``/``present``/``visible``/``normalizer``/``id``/``center``/``scale`` from the
      meta, and with ``all_stacks`` ``stack_keypoints`` (S, N, K, 2) original pixels.
    """
    import keras

    bar = keras.utils.Progbar(total, unit_name="person") if progress else None
    parts = {}
    seen = 0
    for crops, _, meta in dataset:
        result = predictor.predict_crops(crops.numpy(), all_stacks=all_stacks)
        matrices = meta["matrix"].numpy()
        batch = {
            "keypoints": geometry.back_project(result["keypoints"], matrices).numpy(),
            "scores": result["scores"],
            "heatmap_mean": result["heatmaps"].mean(axis=(1, 2)),
            "heatmap_max": result["heatmaps"].max(axis=(1, 2)),
        }
        if all_stacks:
            batch["stack_keypoints"] = np.stack(
                [geometry.back_project(predictor.decode(h)[0], matrices).numpy() for h in result["stack_heatmaps"]]
            )
        for key in ("joints", "present", "visible", "normalizer", "id", "center", "scale", "index"):
            batch[key] = meta[key].numpy()
        for key, value in batch.items():
            parts.setdefault(key, []).append(value)
        seen += len(crops)
        if bar is not None:
            bar.update(seen)
    if not parts and not total:
        raise ValueError("the evaluation dataset yielded no batch")
    out = {k: np.concatenate(v, axis=1 if k == "stack_keypoints" else 0) for k, v in parts.items()}
    positions = out.pop("index", np.zeros(0, np.int64))
    if total is not None and len(positions) != total:
        from hourglass_tf.data.pipeline import sample_ids

        missing = sorted(set(range(total)) - set(positions.tolist()))
        names = sample_ids(source, missing) if source is not None else [f"#{p}" for p in missing]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        raise MissingSamplesError(
            f"{len(missing)} of {total} evaluation samples failed to load or decode "
            f"(file changed or unreadable?): {shown}"
        )
    out["id"] = np.array([i.decode() if isinstance(i, bytes) else str(i) for i in out["id"]])
    return out
