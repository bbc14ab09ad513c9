"""A ``.keras`` model on LiteRT: converted to TFLite once, checked, cached, and reused.

At batch 1 LiteRT (XNNPACK) runs the networks faster than TensorFlow's compiled ``tf.function``: the shipped
LSPET model predicts a person (flip test included) in 21 ms against 30 ms, the paper's 8 stacks in 0.93x the
time, and a cached file opens in 0.01-0.07 s where loading the Keras model takes 1.4-9 s (docs/performance.md). ``backends.load_runner(..., runtime="auto")`` (what ``predict.py`` does by default)
runs a float32 ``.keras`` model through the entry this module keeps for it.

An entry is a ``.tflite`` file in ``cache_folder()``, named by the model file's stem, its SHA-256 and the
converter (TensorFlow's version, this package's ``CONVERSION``): a changed model file, another TensorFlow or
another conversion rule gets a new entry, never a stale one. A conversion is written to a temporary file in the
cache folder, checked against the Keras model (``conversion.TOLERANCES["tflite"]``) and only then renamed into
place, so a reader never meets a partial or unchecked file. Beside it, ``NAME.json`` remembers the model's forward
FLOPs per image (``model.conv_flops``), which ``backends.choose_precision`` weighs, so a cached run does not load
the Keras model to count them. Nothing is written beside the user's model. The folder keeps the ``KEEP`` entries
used last (a use touches its entry; a conversion removes the others), so predicting with one checkpoint after
another does not fill the disk.
"""

import contextlib
import json
import logging
import os
import pathlib
import tempfile
import time

CONVERSION = 1  # raise when what a .keras model is converted into changes (folding, the heatmap head, the converter)
ENVIRONMENT = "HOURGLASS_TF_CACHE"
KEEP = 8  # entries kept: the ones used last
PATTERN = "*-tf*-c*.tflite"  # the names ``entry`` gives; nothing else in the folder is touched


class ConversionError(RuntimeError):
    """A model could not be converted for LiteRT, or its conversion disagreed with it: the message says why."""


def cache_folder(environ=None):
    """Where entries live: ``$HOURGLASS_TF_CACHE/litert``, else ``$XDG_CACHE_HOME/hourglass_tf/litert``, else
    ``~/.cache/hourglass_tf/litert``."""
    environ = os.environ if environ is None else environ
    if environ.get(ENVIRONMENT):
        return pathlib.Path(environ[ENVIRONMENT]).expanduser() / "litert"
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "hourglass_tf" / "litert"


def entry(path, folder=None):
    """The cache entry (a path, which may not exist yet) for the ``.keras`` file ``path``'s current content."""
    import tensorflow as tf

    from hourglass_tf.metadata import file_digest

    path = pathlib.Path(path)
    name = f"{path.stem}-{file_digest(path)[:20]}-tf{tf.__version__}-c{CONVERSION}.tflite"
    return (cache_folder() if folder is None else pathlib.Path(folder)) / name


def remembered_flops(target):
    """The forward FLOPs per image remembered beside the entry ``target`` (an int), or None (no entry yet, or a
    file that does not say)."""
    try:
        flops = json.loads(pathlib.Path(target).with_suffix(".json").read_text())["forward_flops"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return flops if isinstance(flops, int) and flops > 0 else None


def used(target):
    """Marks the entry ``target`` as used now (its modification time), so ``prune`` keeps it; a cache folder that
    cannot be written is left as it is."""
    with contextlib.suppress(OSError):
        os.utime(target)


def prune(folder, keep=KEEP):
    """Removes all but the ``keep`` entries of ``folder`` used last (each with its ``.json``); returns the removed."""

    def last_use(path):
        try:
            return path.stat().st_mtime
        except OSError:  # removed meanwhile by another process
            return 0.0

    entries = sorted(pathlib.Path(folder).glob(PATTERN), key=last_use, reverse=True)
    for old in entries[keep:]:
        for path in (old, old.with_suffix(".json")):
            with contextlib.suppress(OSError):
                path.unlink()
    return entries[keep:]


def _warnings_and_above(record):
    return record.levelno >= logging.WARNING


@contextlib.contextmanager
def _quiet_converter():
    """Drops the INFO lines of TensorFlow's Python loggers (its own and absl's: the SavedModel writer's and the
    converter's, not the user's business) for the block, by a filter removed after it (a level would not hold:
    TensorFlow's imports inside the block reset absl's)."""
    loggers = [logging.getLogger(name) for name in ("tensorflow", "absl")]
    for logger in loggers:
        logger.addFilter(_warnings_and_above)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(_warnings_and_above)


def convert(model, target, check):
    """Converts the float32 Keras ``model`` (its batch norms folded) to the TFLite file ``target``.

    ``check(candidate_path)`` raises ``ConversionError`` when the converted file disagrees with the model; only a
    file that passed it is renamed to ``target``, with the model's forward FLOPs per image beside it
    (``remembered_flops``). Returns the seconds the conversion and its check took.
    Raises ``ConversionError`` for a converter failure, and ``OSError`` when the cache folder cannot be written.
    """
    from hourglass_tf import conversion
    from hourglass_tf.model import conv_flops

    target = pathlib.Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".converting.", dir=target.parent) as scratch:
        try:
            with _quiet_converter():
                flatbuffer = conversion.tflite_flatbuffer(model, scratch)
        except Exception as err:  # the converter raises its own types (ConverterError, ValueError, ...)
            cause = " ".join(str(err).split())[:300]
            raise ConversionError(f"the TFLite converter failed ({type(err).__name__}: {cause})") from err
        candidate = pathlib.Path(scratch) / target.name
        candidate.write_bytes(flatbuffer)
        check(candidate)
        facts = pathlib.Path(scratch) / target.with_suffix(".json").name
        facts.write_text(json.dumps({"forward_flops": int(conv_flops(model))}))
        os.replace(facts, target.with_suffix(".json"))
        os.replace(candidate, target)
    prune(target.parent)
    return time.perf_counter() - start
