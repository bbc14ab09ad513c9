"""What a model is: the description that travels with every model the package saves.

One small, versioned JSON object (``ModelInfo``): the skeleton (joint names in heatmap-channel
order, flip pairs, limbs), the input (size, layout, colour, value range), the output stride,
the heatmap codec (sigma, decoding), the architecture (``build_model``'s arguments and the
variant), the precision the model was trained in, and its provenance (dataset, metric, settings,
source file). Prediction, evaluation, export and the serving client read it; nothing guesses a
joint set from a joint count.

Where it is stored (``FILENAME`` = ``hourglass_tf.json`` everywhere):

* ``.keras``: an extra entry ``hourglass_tf.json`` in the file's zip archive. Keras ignores
  entries it does not know, so ``tf.keras.models.load_model`` still loads the file in a
  program that never imports ``hourglass_tf``; ``read_info`` reads the entry.
* SavedModel: ``assets.extra/hourglass_tf.json`` (TF Serving copies ``assets.extra`` but
  never reads this file), and the ``metadata`` signature returns the same JSON as a string, so
  a TF Serving client can ask the server (``serving.metadata_request``).
* exported folders: ``hourglass_tf.json`` beside ``model.tflite`` / ``model.onnx``; ONNX files
  also carry it in ``metadata_props`` (key ``hourglass_tf``), readable from ONNX Runtime's
  ``get_modelmeta().custom_metadata_map``.

A model without the description (saved by other code, or before it existed) still works when
the caller names the skeleton: ``resolve_info(path, skeleton=...)``.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import zipfile

from hourglass_tf import skeleton as skeletons
from hourglass_tf.keras_saving import saving_cache

FORMAT_VERSION = 1
FILENAME = "hourglass_tf.json"
ONNX_KEY = "hourglass_tf"
DECODINGS = ("quarter", "dark")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
INPUT = {"layout": "NHWC", "color": "RGB", "dtype": "float32", "range": [0.0, 1.0]}


class MetadataError(ValueError):
    """A model's description is missing, unreadable or does not fit the model."""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """The description of one model.

    Attributes:
      skeleton: the ``Skeleton`` (joint names in heatmap-channel order, flip pairs, limbs).
      input_size: (height, width) of the network input in pixels.
      stride: input pixels per heatmap pixel (4 for the hourglass).
      sigma: Gaussian sigma of the training targets, in heatmap pixels.
      decoding: the sub-pixel rule the model was validated with (``quarter``: the paper's).
      architecture: ``build_model`` arguments (``num_stacks``, ``num_blocks``, ``filters``,
        ``depth``) and ``variant`` (``hg.lua`` unless stated).
      precision: the Keras dtype policy the model was trained under. Saved files compute in
        float32 whatever this says.
      preprocessing: what the model does to its input inside the graph before the network
        (e.g. a per-channel mean a converted model subtracts), as stock Keras layers; empty for
        this package's own models. The caller always feeds ``INPUT`` (RGB in [0, 1]).
      provenance: where the weights come from: ``dataset``, ``metric`` and its ``value``,
        ``config`` (training settings), or ``source`` and ``format`` for converted files.
    """

    skeleton: skeletons.Skeleton
    input_size: tuple
    stride: int = 4
    sigma: float = 1.0
    decoding: str = "quarter"
    architecture: dict = dataclasses.field(default_factory=dict)
    precision: str = "float32"
    preprocessing: tuple = ()
    provenance: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        size = self.input_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
            raise MetadataError(f"input_size must be (height, width) positive integers, received {self.input_size!r}")
        object.__setattr__(self, "input_size", size)
        if not isinstance(self.stride, int) or self.stride <= 0 or size[0] % self.stride or size[1] % self.stride:
            raise MetadataError(f"stride must be a positive divisor of the input size {size}, received {self.stride!r}")
        if self.decoding not in DECODINGS:
            raise MetadataError(f"decoding must be one of {DECODINGS}, received {self.decoding!r}")
        if self.precision not in PRECISIONS:
            raise MetadataError(f"precision must be one of {PRECISIONS}, received {self.precision!r}")
        object.__setattr__(self, "preprocessing", tuple(self.preprocessing))

    @property
    def heatmap_size(self):
        return (self.input_size[0] // self.stride, self.input_size[1] // self.stride)

    def to_dict(self):
        return {
            "format_version": FORMAT_VERSION,
            "skeleton": self.skeleton.to_dict(),
            "input": {**INPUT, "size": list(self.input_size)},
            "preprocessing": list(self.preprocessing),
            "output": {
                "stride": self.stride,
                "heatmap_size": list(self.heatmap_size),
                "sigma": self.sigma,
                "decoding": self.decoding,
            },
            "architecture": dict(self.architecture),
            "precision": self.precision,
            "provenance": dict(self.provenance),
        }

    def to_json(self):
        return json.dumps(self.to_dict(), indent=1, default=str)

    @classmethod
    def from_dict(cls, data, where="model description"):
        """The inverse of ``to_dict``; MetadataError naming ``where`` and the problem."""
        try:
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, found {type(data).__name__}")
            version = data.get("format_version")
            if version != FORMAT_VERSION:
                raise ValueError(
                    f"format_version {version!r} is not {FORMAT_VERSION} (written by another version of hourglass_tf?)"
                )
            missing = [k for k in ("skeleton", "input", "output") if k not in data]
            if missing:
                raise ValueError(f"missing {missing}")
            output = data["output"]
            return cls(
                skeleton=skeletons.Skeleton.from_dict(data["skeleton"]),
                input_size=tuple(int(v) for v in data["input"]["size"]),
                stride=int(output["stride"]),
                sigma=float(output.get("sigma", 1.0)),
                decoding=output.get("decoding", "quarter"),
                architecture=dict(data.get("architecture", {})),
                precision=data.get("precision", "float32"),
                preprocessing=tuple(data.get("preprocessing", ())),
                provenance=dict(data.get("provenance", {})),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise MetadataError(f"{where}: not a valid hourglass_tf model description: {err}") from None

    @classmethod
    def from_json(cls, text, where="model description"):
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise MetadataError(f"{where}: the model description is not valid JSON ({err})") from None
        return cls.from_dict(data, where)

    def check_model(self, num_joints, input_size, where="model"):
        """MetadataError when a model's joint count or input size disagrees with this description."""
        if num_joints != self.skeleton.num_joints:
            raise MetadataError(
                f"{where}: the model has {num_joints} heatmap channels but its skeleton "
                f"{self.skeleton.name!r} has {self.skeleton.num_joints} joints"
            )
        if tuple(input_size) != self.input_size:
            raise MetadataError(
                f"{where}: the model takes {tuple(input_size)} inputs but its description says {self.input_size}"
            )


def describe(
    model,
    skeleton,
    *,
    sigma=1.0,
    decoding="quarter",
    precision="float32",
    provenance=None,
    preprocessing=(),
):
    """``ModelInfo`` for a Keras model built by ``build_model`` (architecture and variant read from it).

    ``skeleton``: a ``Skeleton`` or a skeleton name.
    """
    from hourglass_tf.model import architecture_of

    if isinstance(skeleton, str):
        skeleton = skeletons.get_skeleton(skeleton)
    arch = architecture_of(model)
    height, width = arch.pop("input_size")
    num_joints = arch.pop("num_joints")
    heatmap = model.get_layer("stack_1").output.shape[1]
    info = ModelInfo(
        skeleton=skeleton,
        input_size=(height, width),
        stride=height // int(heatmap),
        sigma=float(sigma),
        decoding=decoding,
        architecture=arch,
        precision=precision,
        preprocessing=tuple(preprocessing),
        provenance=dict(provenance or {}),
    )
    info.check_model(num_joints, (height, width), model.name)
    return info


# ---------------------------------------------------------------- .keras files


TEMPORARY_SUFFIX = ".tmp.keras"  # Keras saves only to names ending in .keras


def remove_stale_temporaries(folder, log=print, pattern=f".*{TEMPORARY_SUFFIX}"):
    """Deletes the files matching ``pattern`` (default: the ``.NAME.*.tmp.keras`` of a save killed half-way) in
    ``folder``; the saved files themselves are never partial (they are renamed into place whole). Says how many;
    returns the count."""
    stale = sorted(pathlib.Path(folder).glob(pattern))
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log(f"removed {len(stale)} half-written temporary file(s) a killed run left in {folder}")
    return len(stale)


def _new_temporary(path):
    """A new empty file ``.STEM.XXXXXXXX.tmp.keras`` beside ``path``, created with the permissions of any new file
    (0666 less the umask, as ``open`` gives; ``tempfile.mkstemp``'s 0600 would make the renamed model unreadable
    to others)."""
    while True:
        tmp = path.parent / f".{path.stem}.{os.urandom(4).hex()}{TEMPORARY_SUFFIX}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return str(tmp)
        except FileExistsError:
            continue


def save_keras(model, path, info):
    """Saves ``model`` as a ``.keras`` file with ``info`` inside, atomically (temporary file, then rename).

    A kill or a full disk leaves the previous file at ``path`` untouched. The model is saved as
    given; callers that want a float32 file pass ``model.float32_copy(model)``.
    """

    def write(tmp):
        with saving_cache():
            model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(FILENAME, info.to_json())

    return _write_atomically(path, write)


def copy_keras(source, path):
    """Copies the ``.keras`` file ``source`` to ``path`` with ``save_keras``' guarantees (a previous file at
    ``path`` stays whole until the copy is complete)."""
    return _write_atomically(path, lambda tmp: shutil.copyfile(source, tmp))


def _write_atomically(path, write):
    """``write(temporary)``, then the temporary renamed to ``path``; on any failure the temporary is removed and
    ``path`` is as it was (an ``OSError`` names ``path``)."""
    path = pathlib.Path(path)
    tmp = _new_temporary(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:  # a full disk, say: say which file could not be written
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise OSError(
            err.errno, f"cannot write {path} ({err.strerror or err}); the previous file is untouched"
        ) from None
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_keras_info(path):
    """The ``ModelInfo`` inside a ``.keras`` file, or None when it carries none."""
    path = pathlib.Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            if FILENAME not in archive.namelist():
                return None
            text = archive.read(FILENAME).decode("utf-8")
    except (zipfile.BadZipFile, OSError) as err:
        raise MetadataError(f"{path}: not a readable .keras file ({err})") from None
    return ModelInfo.from_json(text, str(path))


def load_keras_model(path):
    """``keras.models.load_model`` in ``safe_mode`` (a Lambda layer's code is refused, not run), uncompiled.

    MetadataError naming the file and the cause when it is missing, truncated, not a model or unsafe.
    """
    import keras

    path = pathlib.Path(path)
    if not path.is_file():
        raise MetadataError(f"{path}: no such model file")
    try:
        with saving_cache():
            return keras.models.load_model(path, safe_mode=True, compile=False)
    except (ValueError, TypeError, OSError, zipfile.BadZipFile, KeyError, EOFError) as err:
        raise MetadataError(f"{path}: not a loadable .keras model ({type(err).__name__}: {_cause(err)})") from None


def _cause(err):
    """The telling part of a Keras loading error, on one line: the innermost "Exception encountered" without the
    object configs Keras appends (they can be pages long)."""
    text = str(err).rsplit("Exception encountered:", 1)[-1]
    for cut in (" Full object config", "\n\nconfig=", "config={"):
        text = text.split(cut, 1)[0]
    return " ".join(text.split())[:600]


def load_keras(path, skeleton=None):
    """Loads a ``.keras`` file safely (Keras ``safe_mode``: no Lambda code runs) with its description.

    Returns:
      (keras.Model, ModelInfo). The description comes from the file, or is built from the model
      and ``skeleton`` (a ``Skeleton`` or a name) when the file has none; a named ``skeleton``
      that contradicts the file's is an error.
    """
    model = load_keras_model(path)
    stored = read_keras_info(path)
    return model, resolve(stored, skeleton, str(path), lambda s: describe(model, s))


# ---------------------------------------------------------------- JSON beside exported files


def write_json(info, path):
    path = pathlib.Path(path)
    path.write_text(info.to_json())
    return path


def read_json(path):
    path = pathlib.Path(path)
    return ModelInfo.from_json(path.read_text(), str(path))


def read_info(path):
    """The description stored with any model file or folder the package reads, or None.

    ``.keras`` (zip entry); a SavedModel folder (``assets.extra/``); ``.tflite`` / ``.onnx`` (the
    ``hourglass_tf.json`` beside them); an exported folder (its ``hourglass_tf.json``).
    """
    path = pathlib.Path(path)
    if path.suffix.lower() == ".keras":
        return read_keras_info(path)
    candidates = [path / "assets.extra" / FILENAME, path / FILENAME] if path.is_dir() else [path.parent / FILENAME]
    for candidate in candidates:
        if candidate.is_file():
            if not path.is_dir():
                check_describes(candidate, path)
            return read_json(candidate)
    return None


def file_digest(path):
    """SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_describes(description, path):
    """MetadataError when the description file ``description`` (an export's ``hourglass_tf.json``) lists the
    files it describes (``export.files``: name -> SHA-256) and ``path`` is not one of them, byte for byte. An
    older description without the list is taken as it is."""
    try:
        files = (json.loads(pathlib.Path(description).read_text()).get("export") or {}).get("files")
    except (ValueError, AttributeError):
        return  # read_json names a malformed description
    if files is None:
        return
    path = pathlib.Path(path)
    if path.name not in files:
        raise MetadataError(
            f"{description} describes {', '.join(sorted(files))}, not {path.name}: it belongs to another export"
        )
    if file_digest(path) != files[path.name]:
        raise MetadataError(
            f"{path}: the description beside it ({description}) was written for another {path.name} "
            "(its SHA-256 differs); export the model again, or move the file to its own description"
        )


def resolve(stored, skeleton, where, build):
    """The description to use: ``stored`` (checked against a named ``skeleton``), or ``build(skeleton)``.

    Args:
      stored: the ``ModelInfo`` read from the model, or None.
      skeleton: None, a ``Skeleton`` or a skeleton name the caller gives.
      where: the model's path, for messages.
      build: callable Skeleton -> ModelInfo for a model without a description.
    """
    if isinstance(skeleton, str):
        skeleton = skeletons.get_skeleton(skeleton)
    if stored is not None:
        if skeleton is not None and skeleton.joints != stored.skeleton.joints:
            raise MetadataError(
                f"{where}: the model's own skeleton is {stored.skeleton.name!r} "
                f"{stored.skeleton.joints}, not {skeleton.name!r}"
            )
        return stored
    if skeleton is None:
        raise MetadataError(
            f"{where}: the model carries no hourglass_tf description (saved by other code?); "
            f"name its joint set, e.g. --skeleton={'|'.join(sorted(skeletons.SKELETONS))}"
        )
    return build(skeleton)
