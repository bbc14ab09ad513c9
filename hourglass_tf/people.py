"""From a photograph to every person's pose: person sources and the estimator.

``PoseEstimator`` takes an image (an array or a path), asks a person source for boxes, crops every person by
the package's box rule (``geometry.box_to_center_scale``: centre of the box, side 1.25 x its larger side),
runs all of them through the network in one batch (with the flip test), and maps the keypoints back to the
image. Person sources, chosen by the user:

* ``Boxes``: boxes the user gives (x, y, w, h in image pixels);
* ``DetectionsFile``: a detections file in the COCO results layout (a JSON list of ``{"image_id", "bbox",
  "score", "category_id"}``, what mmpose and HRNet feed their top-down models), matched to images by id;
* ``"ssdlite"`` (the default): SSDLite-MobileNetV2 trained on persons (``hourglass_tf.detectors``; its weights come
  from a registry package installed once, nothing is downloaded at run time);
* ``"blazepose"``: MediaPipe's BlazePose person detector (``hourglass_tf.blazepose``; it has seen athletes and
  unusual poses, and finds the body's centre and extent; its weights are copied out of a registry wheel once);
* ``HogDetector``: OpenCV's HOG people detector (Dalal & Triggs; ships with OpenCV, no download). It finds
  upright, whole, unoccluded people of at least about 100 px; it misses sitting, lying, cropped and
  strongly foreshortened people, and fires on some upright clutter (docs/people.md has the measurements);
* any callable ``image -> boxes`` or ``image -> (boxes, scores)``: the user's own detector;
* ``WholeImage``: the whole image as one centred person (the last resort).

Conventions: images are (H, W, 3) uint8 RGB; boxes (M, 4) float32 as x, y, w, h in image pixels, 0-based;
keypoints (K, 3) as x, y in original image pixels (0-based) and the joint's score (heatmap maximum).
"""

import json
import math
import pathlib

import cv2
import numpy as np
import tensorflow as tf

from hourglass_tf import geometry, images
from hourglass_tf.inference import Predictor, parse_scales


class PersonSourceError(ValueError):
    """A person source that cannot be used (bad detections file, bad boxes); the message names it."""


def as_boxes(boxes, scores=None, where="boxes"):
    """Validated ``(boxes (M, 4) float32, scores (M,) float32)``; scores default to 1.

    Raises:
      PersonSourceError: not (M, 4), not finite, or a box without positive width and height.
    """
    boxes = np.asarray(boxes if boxes is not None else np.zeros((0, 4)), np.float32)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    elif boxes.ndim == 1 and boxes.size == 4:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise PersonSourceError(f"{where}: boxes must be (M, 4) as x, y, w, h, received shape {boxes.shape}")
    if not np.all(np.isfinite(boxes)) or np.any(boxes[:, 2:] <= 0):
        bad = int(np.flatnonzero(~np.isfinite(boxes).all(1) | (boxes[:, 2:] <= 0).any(1))[0])
        raise PersonSourceError(f"{where}: box {bad} is {boxes[bad].tolist()}; width and height must be positive")
    scores = np.ones(len(boxes), np.float32) if scores is None else np.asarray(scores, np.float32).reshape(-1)
    if len(scores) != len(boxes):
        raise PersonSourceError(f"{where}: {len(boxes)} boxes but {len(scores)} scores")
    return boxes, scores


def box_of_keypoints(keypoints, min_score=0.2):
    """The tight box (x, y, w, h) of keypoints (K, 3) whose score reaches ``min_score``; None when under 2."""
    keypoints = np.asarray(keypoints, np.float32)
    good = keypoints[keypoints[:, 2] >= min_score, :2]
    if len(good) < 2:
        return None
    lo, hi = good.min(axis=0), good.max(axis=0)
    side = np.maximum(hi - lo, 1.0)
    return np.array([lo[0], lo[1], side[0], side[1]], np.float32)


def iou(a, b):
    """Intersection over union of boxes a (M, 4) and b (N, 4) (x, y, w, h) -> (M, N)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y2 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return inter / np.maximum(union, 1e-9)


class PersonSource:
    """Base: ``source(image, key=None) -> (boxes (M, 4), scores (M,))``; ``key`` names the image (its path)."""

    name = "source"

    def __call__(self, image, key=None):
        raise NotImplementedError


class WholeImage(PersonSource):
    """The whole image as one centred person (``geometry.whole_image_person``)."""

    name = "whole_image"

    def __call__(self, image, key=None):
        height, width = np.asarray(image).shape[:2]
        return as_boxes([geometry.box_from_person(*geometry.whole_image_person(width, height))], where="whole image")


class Boxes(PersonSource):
    """Fixed boxes (M, 4) for every image, or a dict {image key: boxes} (a missing key: no person)."""

    name = "boxes"

    def __init__(self, boxes, scores=None):
        if isinstance(boxes, dict):
            self.table = {str(k): as_boxes(v, where=f"boxes of {k}") for k, v in boxes.items()}
            self.fixed = None
        else:
            self.table, self.fixed = None, as_boxes(boxes, scores)

    def __call__(self, image, key=None):
        if self.fixed is not None:
            return self.fixed
        for candidate in _keys(key):
            if candidate in self.table:
                return self.table[candidate]
        return as_boxes(None)


def _keys(key):
    """The names an image may be listed under: the key itself, its file name, its stem, the stem as a number."""
    if key is None:
        return []
    path = pathlib.Path(str(key))
    keys = [str(key), path.name, path.stem]
    if path.stem.isdigit():
        keys.append(str(int(path.stem)))
    return keys


class DetectionsFile(PersonSource):
    """Person boxes from a detections file in the COCO results layout.

    The file is a JSON list of ``{"image_id": int or str, "bbox": [x, y, w, h], "score": float,
    "category_id": int}`` (``category_id`` optional; only ``category_id`` records are kept). An image is
    matched by its id: ``image_ids`` maps file names to ids (``images`` of a COCO annotation file, see
    ``image_ids_from_coco``), otherwise a numeric file stem is the id (COCO's ``000000397133.jpg`` -> 397133)
    and any other stem or file name is matched as a string id.

    Raises:
      PersonSourceError: the file is not JSON, not a list, or a record lacks a field or has a bad box or
        score; the message names the file and the record's index.
    """

    name = "detections"

    def __init__(self, path, min_score=0.0, category_id=1, image_ids=None):
        self.path = pathlib.Path(path)
        try:
            records = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise PersonSourceError(f"{self.path}: not a readable JSON detections file ({err})") from None
        if not isinstance(records, list):
            raise PersonSourceError(
                f"{self.path}: a detections file is a JSON list of COCO results, found a {type(records).__name__}"
            )
        self.table = {}
        self.skipped_category = 0
        for i, record in enumerate(records):
            where = f"{self.path}: record {i}"
            if not isinstance(record, dict) or not {"image_id", "bbox"} <= set(record):
                found = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise PersonSourceError(f"{where}: needs image_id and bbox (found {found})")
            if category_id is not None and record.get("category_id", category_id) != category_id:
                self.skipped_category += 1
                continue
            score = record.get("score", 1.0)
            if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score):
                raise PersonSourceError(f"{where}: score must be a number, received {score!r}")
            bbox = record["bbox"]
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
                raise PersonSourceError(f"{where}: bbox must be [x, y, w, h], received {bbox!r}")
            as_boxes([bbox], where=where)
            if score < min_score:
                continue
            self.table.setdefault(str(record["image_id"]), []).append((bbox, float(score)))
        self.image_ids = {str(k): str(v) for k, v in (image_ids or {}).items()}

    def image_id(self, key):
        """The id the file uses for the image ``key`` (a path), or None when it lists none of its names."""
        candidates = [self.image_ids[k] for k in _keys(key) if k in self.image_ids] + _keys(key)
        return next((c for c in candidates if c in self.table), None)

    def __call__(self, image, key=None):
        found = self.table.get(self.image_id(key), [])
        return as_boxes([b for b, _ in found], [s for _, s in found], where=str(self.path))


def image_ids_from_coco(path):
    """{file_name: image id} from a COCO annotation file's ``images``; PersonSourceError naming the file."""
    try:
        data = json.loads(pathlib.Path(path).read_text())
        return {str(image["file_name"]): image["id"] for image in data["images"]}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise PersonSourceError(f"{path}: not a COCO annotation file with images[].file_name and id ({err})") from None


class HogDetector(PersonSource):
    """OpenCV's default HOG + linear SVM people detector (64 x 128 window; no download).

    Args:
      min_side: images whose longer side is shorter are upscaled to it first (the detector's window needs
        people of about 100 px and more).
      min_score: SVM margin a detection needs.
      max_people: keep the best ``max_people`` boxes.
      box_scale: (width, height) factors that map the detector's window to the box of the person's joints, the
        box convention the network was trained with (measured on LSPET, docs/people.md); applied about the
        window's centre.
    """

    name = "hog"
    BOX_SCALE = (0.55, 0.85)

    def __init__(self, min_side=480, min_score=0.0, max_people=20, box_scale=BOX_SCALE, win_stride=8, pyramid=1.05):
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.min_side = min_side
        self.min_score = min_score
        self.max_people = max_people
        self.box_scale = tuple(float(v) for v in box_scale)
        self.win_stride = (int(win_stride), int(win_stride))
        self.pyramid = float(pyramid)

    def windows(self, image):
        """The detector's raw windows (M, 4) in image pixels and SVM margins (M,), best first."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise PersonSourceError(f"image must be (H, W, 3) RGB, received shape {image.shape}")
        zoom = max(1.0, self.min_side / max(image.shape[:2]))
        gray = cv2.cvtColor(np.ascontiguousarray(image, np.uint8), cv2.COLOR_RGB2GRAY)
        if zoom > 1.0:
            gray = cv2.resize(gray, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
        rects, weights = self.hog.detectMultiScale(
            gray, winStride=self.win_stride, padding=(8, 8), scale=self.pyramid, groupThreshold=2
        )
        if len(rects) == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        boxes = np.asarray(rects, np.float32) / zoom
        scores = np.asarray(weights, np.float32).reshape(-1)
        order = np.argsort(-scores)
        return boxes[order], scores[order]

    def __call__(self, image, key=None):
        boxes, scores = self.windows(image)
        keep = scores >= self.min_score
        boxes, scores = boxes[keep][: self.max_people], scores[keep][: self.max_people]
        return as_boxes(scale_boxes(boxes, self.box_scale), scores, where="hog")


class CallableSource(PersonSource):
    """A user's detector: ``fn(image) -> boxes`` or ``fn(image) -> (boxes, scores)``."""

    def __init__(self, fn):
        self.fn = fn
        self.name = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, image, key=None):
        found = self.fn(image)
        if isinstance(found, tuple) and len(found) == 2:
            return as_boxes(found[0], found[1], where=f"person source {self.name}")
        return as_boxes(found, where=f"person source {self.name}")


DEFAULT_DETECTOR = "ssdlite"


def person_source(spec):
    """A ``PersonSource`` from a name (``"ssdlite"``: the SSDLite person detector, ``hourglass_tf.detectors``;
    ``"blazepose"``: MediaPipe's BlazePose person detector, ``hourglass_tf.blazepose``; ``"hog"``: OpenCV's HOG;
    ``"whole_image"``/``"none"``), a detections file path, a ``PersonSource``, boxes (M, 4) or any callable. A
    detector without its weights installed is an error (``FileNotFoundError``) that says the command installing
    them."""
    if isinstance(spec, PersonSource):
        return spec
    if spec is None or (isinstance(spec, str) and spec in ("none", "whole_image")):
        return WholeImage()
    if isinstance(spec, str) and spec == "hog":
        return HogDetector()
    if isinstance(spec, str) and spec == "ssdlite":
        from hourglass_tf import detectors

        return CallableSource(detectors.SsdLitePersons())
    if isinstance(spec, str) and spec == "blazepose":
        from hourglass_tf import blazepose

        return CallableSource(blazepose.BlazePosePersons())
    if isinstance(spec, (str, pathlib.Path)) and str(spec).endswith(".json"):
        return DetectionsFile(spec)
    if callable(spec):
        return CallableSource(spec)
    if isinstance(spec, (list, tuple, np.ndarray, dict)):
        return Boxes(spec)
    raise PersonSourceError(
        f"person source must be 'ssdlite', 'blazepose', 'hog', 'whole_image', a detections .json file, boxes or a callable, "
        f"received {spec!r}"
    )


def read_rgb(path):
    """(H, W, 3) uint8 RGB from an image file (grayscale, RGBA and 16-bit photos converted); ValueError naming
    the file when it is not a readable image, ``images.ImageTooLargeError`` (a ValueError) when its header
    declares more than ``images.MAX_IMAGE_PIXELS`` pixels (checked before decoding)."""
    try:
        data = pathlib.Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"{path}: not a readable image ({error.strerror or error})") from None
    if not data:
        raise ValueError(f"{path}: an empty file, not an image")
    images.check_size(data, path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # a cut JPEG decodes as far as it goes (imdecode refuses it)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    return image[..., ::-1].copy()


class BoxSearch:
    """Each person's box tried at several scales and vertical shifts, the best tries combined.

    Tries are every (scale, shift) pair: the box scaled by ``scale`` about its centre, then moved down by ``shift``
    times the given box's larger side (negative: up). Each try is predicted (with ``PoseEstimator``'s ``recrop``,
    each makes its second pass); the ``top`` tries whose joints score highest on average are combined by their
    median, joint by joint (x, y and score each; a median stays on one try's limb where a mean would average a
    left/right mix).

    Args:
      scales: positive factors, e.g. ``(0.6, 1.0, 1.5)``.
      shifts: vertical moves as fractions of the given box's larger side, finite.
      top: how many of the best tries are combined, 1 to the number of tries.
    """

    def __init__(self, scales=(1.0,), shifts=(0.0,), top=1):
        self.scales = parse_scales(scales, "BoxSearch scales")
        try:
            self.shifts = tuple(float(v) for v in shifts)
        except (TypeError, ValueError):
            raise ValueError(f"BoxSearch shifts must be numbers, received {shifts!r}") from None
        if not self.shifts or not all(np.isfinite(v) for v in self.shifts):
            raise ValueError(f"BoxSearch shifts must be one or more finite numbers, received {shifts!r}")
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or not 1 <= top <= self.num_tries:
            raise ValueError(f"BoxSearch top must be an integer from 1 to the {self.num_tries} tries, received {top!r}")
        self.top = int(top)

    def __repr__(self):
        return f"BoxSearch(scales={self.scales}, shifts={self.shifts}, top={self.top})"

    @property
    def num_tries(self):
        return len(self.scales) * len(self.shifts)

    def tries(self, boxes):
        """Boxes (N, 4) x, y, w, h -> tries (T * N, 4), try-major: row t * N + i is try t of box i."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        side = boxes[:, 2:].max(axis=1)
        out = []
        for scale in self.scales:
            for shift in self.shifts:
                moved = scale_boxes(boxes, scale)
                moved[:, 1] += np.float32(shift) * side
                out.append(moved)
        return np.concatenate(out)

    def combine(self, keypoints):
        """Keypoints (T, N, K, 3) of each try of each person -> (N, K, 3): the median of the ``top`` best tries
        (by mean joint score; the first of equals in try order)."""
        keypoints = np.asarray(keypoints, np.float32)
        order = np.argsort(-keypoints[..., 2].mean(axis=-1), axis=0, kind="stable")[: self.top]  # (top, N)
        best = np.take_along_axis(keypoints, order[:, :, None, None], axis=0)
        return np.median(best, axis=0).astype(np.float32)


# The search ``PoseEstimator(search=BOX_SEARCH)`` makes (``predict.py --box_search``), chosen on the first 300 LSPET
# validation photos with BlazePose's boxes and the second pass, checked on the other 700 (docs/people.md).
BOX_SEARCH = BoxSearch(scales=(0.6, 0.7, 0.9, 1.0, 1.1, 1.35, 1.5), shifts=(-0.1, 0.0, 0.1), top=5)


def scale_boxes(boxes, factor):
    """Boxes (N, 4) x, y, w, h scaled about their centres by ``factor``, one number or (x, y) -> (N, 4) float32."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    sides = boxes[:, 2:] * np.asarray(factor, np.float32)
    return np.concatenate([centres - sides / 2, sides], axis=1)


def _check_inside(boxes, image):
    """ValueError naming the first box (N, 4) that lies entirely outside ``image`` (H, W, ...)."""
    height, width = image.shape[:2]
    outside = geometry.boxes_outside(boxes, width, height)
    if outside.any():
        box = tuple(float(v) for v in boxes[np.flatnonzero(outside)[0]])
        raise ValueError(f"box {box} lies outside the {width}x{height} image")


class PoseEstimator:
    """Every person's pose in an image: a person source, then one network batch for all of them.

    Args:
      predictor: an ``inference.Predictor`` (``PoseEstimator.from_file`` makes one from a model file).
      people: the person source (see ``person_source``); the SSDLite person detector (``DEFAULT_DETECTOR``) by
        default, ``"whole_image"`` for a photo of one person.
      min_person_score: boxes scoring below are dropped.
      max_people: at most this many people per image (the best scoring).
      fallback_whole_image: when the person source finds nobody, take the whole image as one person.
      recrop: a second pass crops each person again from the first pass's keypoints (the box of the joints scoring
        at least 0.2, ``box_of_keypoints``: the training convention, and the tracker's rule between frames) and
        predicts again; a person whose first pass has under two such joints keeps the first. It costs a second
        network batch and, with detected boxes, gains about 4 limb PCK points on LSPET (docs/people.md).
      search: a ``BoxSearch``: each person's box tried at several scales and shifts, the best tries combined
        (the person's ``box`` and ``score`` stay the given ones). None, the default, is one try; ``BOX_SEARCH`` is
        the measured search (with ``recrop``, about 4 more limb PCK points on LSPET with detected boxes, at 21
        times the network time).

    Calling it returns a list of people, best score first, each a dict: ``box`` (4,) x, y, w, h; ``score``;
    ``keypoints`` (K, 3) x, y in original pixels (0-based) and score; ``joints``, the names from the model's
    description.
    """

    def __init__(
        self,
        predictor,
        people=DEFAULT_DETECTOR,
        min_person_score=None,
        max_people=None,
        fallback_whole_image=False,
        recrop=False,
        search=None,
    ):
        self.predictor = predictor
        self.recrop = bool(recrop)
        if search is not None and not isinstance(search, BoxSearch):
            raise ValueError(f"search must be a people.BoxSearch or None, received {search!r}")
        self.search = search
        self.people = person_source(people)
        self.fallback = WholeImage() if fallback_whole_image else None
        self.min_person_score = min_person_score
        self.max_people = max_people
        self.skeleton = predictor.skeleton
        size = predictor.input_size
        self._crop = tf.function(
            lambda image, boxes: geometry.crop_boxes(tf.cast(image, tf.float32) / 255.0, boxes, size),
            input_signature=[tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([None, 4], tf.float32)],
        )

    @classmethod
    def from_file(
        cls, model=None, people=DEFAULT_DETECTOR, skeleton=None, flip_test=True, refine=None, runtime=None, **kwargs
    ):
        """A model file of any format the package reads or a shipped model's name (``Predictor.from_file``; None:
        the default shipped model; ``runtime="auto"`` runs a float32 ``.keras`` model on LiteRT, as ``predict.py``
        does), and a person source."""
        predictor = Predictor.from_file(model, skeleton=skeleton, flip_test=flip_test, refine=refine, runtime=runtime)
        return cls(predictor, people, **kwargs)

    def boxes(self, image, key=None):
        """The person source's boxes and scores for ``image``, filtered and ordered best first."""
        boxes, scores = self.people(image, key)
        order = np.argsort(-scores, kind="stable")
        boxes, scores = boxes[order], scores[order]
        if self.min_person_score is not None:
            keep = scores >= self.min_person_score
            boxes, scores = boxes[keep], scores[keep]
        if self.max_people is not None:
            boxes, scores = boxes[: self.max_people], scores[: self.max_people]
        if len(boxes) == 0 and self.fallback is not None:
            boxes, scores = self.fallback(image, key)
        return boxes, scores

    def estimate(self, image, boxes, scores=None, check_inside=True):
        """Poses of the given people: one crop per box, one network batch; a list as ``__call__`` returns.

        ``check_inside``: a box entirely outside the image is a ValueError naming it (off for tracking, where a
        person may leave the frame).
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, received {image.dtype} {image.shape}")
        boxes, scores = as_boxes(boxes, scores)
        if len(boxes) == 0:
            return []
        if check_inside:
            _check_inside(boxes, image)
        crops, matrices = self._crop(tf.constant(image), tf.constant(boxes))
        result = self.predictor.predict_crops(crops.numpy())
        keypoints = geometry.back_project(result["keypoints"], matrices).numpy()
        joints = list(self.skeleton.joints)
        return [
            {
                "box": boxes[i],
                "score": float(scores[i]),
                "keypoints": np.concatenate([keypoints[i], result["scores"][i][:, None]], axis=1).astype(np.float32),
                "joints": joints,
            }
            for i in range(len(boxes))
        ]

    def __call__(self, image, boxes=None, key=None):
        """``image``: (H, W, 3) uint8 RGB or a path; ``boxes`` overrides the person source for this call."""
        if isinstance(image, (str, pathlib.Path)):
            key = key if key is not None else str(image)
            image = read_rgb(image)
        if boxes is not None:
            boxes, scores = as_boxes(boxes)
        else:
            boxes, scores = self.boxes(image, key)
        return self.estimate_people(image, boxes, scores)

    def estimate_people(self, image, boxes, scores=None, check_inside=True):
        """``estimate``, then ``recrop``'s second pass, over ``search``'s tries: what ``__call__`` returns."""
        if self.search is None:
            found = self.estimate(image, boxes, scores, check_inside=check_inside)
            return self.estimate_again(image, found) if self.recrop else found
        boxes, scores = as_boxes(boxes, scores)
        if len(boxes) == 0:
            return []
        if check_inside:
            _check_inside(boxes, np.asarray(image))
        tries = self.search.tries(boxes)
        found = self.estimate(image, tries, np.tile(scores, self.search.num_tries), check_inside=False)
        if self.recrop:
            found = self.estimate_again(image, found)
        keypoints = np.stack([person["keypoints"] for person in found]).reshape(
            self.search.num_tries, len(boxes), -1, 3
        )
        combined = self.search.combine(keypoints)
        return [dict(found[i], box=boxes[i], keypoints=combined[i]) for i in range(len(boxes))]

    def estimate_again(self, image, found):
        """The second pass of ``recrop``: each person of ``found`` (``estimate``'s list) cropped again from the box
        of their keypoints (``box_of_keypoints``), or from their box when under two keypoints score 0.2."""
        if not found:
            return found
        boxes = []
        for person in found:
            again = box_of_keypoints(person["keypoints"])
            boxes.append(person["box"] if again is None else again)
        scores = np.array([person["score"] for person in found], np.float32)
        return self.estimate(image, np.asarray(boxes, np.float32), scores, check_inside=False)


CONFIDENT_JOINT = 0.2  # a joint scoring at least this counts in the person's COCO score (HRNet's in_vis_thre)


def to_json(person, image_id=None, category_id=1):
    """One person as JSON: the package's record, and with ``image_id`` the COCO keypoint result layout."""
    keypoints = np.asarray(person["keypoints"], np.float64)
    if image_id is not None:
        # COCO results: flat x, y, score triples; the person's score is the mean score of its confident joints
        # (>= CONFIDENT_JOINT), times the box score when that is a probability (a detector's), as HRNet and
        # mmpose rescore before their OKS non-maximum suppression (coco_eval.oks_nms)
        box_score = float(person["score"])
        confident = keypoints[:, 2][keypoints[:, 2] >= CONFIDENT_JOINT]
        joint_score = float(confident.mean()) if confident.size else 0.0
        score = joint_score * (box_score if 0.0 < box_score <= 1.0 else 1.0)
        return {
            "image_id": image_id,
            "category_id": category_id,
            "keypoints": [round(float(v), 3) for v in keypoints.reshape(-1)],
            "score": score,
            "bbox": [round(float(v), 2) for v in person["box"]],
        }
    out = {
        "box": [float(v) for v in person["box"]],
        "score": float(person["score"]),
        "keypoints": [
            {"joint": name, "x": float(x), "y": float(y), "score": float(s)}
            for name, (x, y, s) in zip(person["joints"], keypoints)
        ],
    }
    if "track_id" in person:
        out["track_id"] = int(person["track_id"])
    return out
