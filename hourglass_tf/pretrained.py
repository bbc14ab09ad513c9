"""The models shipped with the package, by name: ``hourglass_tf.pretrained("lspet")``.

Each shipped model is package data in ``hourglass_tf/models/``: ``NAME.keras``, a float32 ``.keras`` file with
its description inside (``metadata.ModelInfo``: skeleton, input size, stride; its provenance names the data, the
recipe, the commit and the validation figures), and ``NAME.md``, its model card (what it was trained on, where it
fails, the data's terms of use). ``pip install`` installs both; nothing is downloaded.

Every place that takes a model takes a shipped name too (``predict.py``, ``export.py``, ``evaluate.py
--checkpoint``, ``train.py --init_weights``), and prediction without a model uses ``DEFAULT`` and says so on one
line (``resolve``). An existing file or folder of the same name as a shipped model wins: a user's own
``lspet`` folder is never shadowed.
"""

import pathlib

FOLDER = pathlib.Path(__file__).parent / "models"
MODELS = {
    "lspet": "LSP's 14 joints; trained on LSP Extended's athletes (lspet.flags)",
}
DEFAULT = "lspet"
SUFFIX = ".keras"


def names():
    """The shipped models' names, sorted."""
    return sorted(MODELS)


def path(name=DEFAULT):
    """The ``.keras`` file of the shipped model ``name``; ValueError naming the choices or the missing file."""
    if name not in MODELS:
        raise ValueError(f"no shipped model is named {name!r}; the shipped models: {', '.join(names())}")
    file = FOLDER / f"{name}{SUFFIX}"
    if not file.is_file():
        raise ValueError(
            f"{file}: the shipped model {name!r} is missing from this installation (reinstall hourglass_tf)"
        )
    return file


def card(name=DEFAULT):
    """The model card of the shipped model ``name`` (Markdown text)."""
    return path(name).with_suffix(".md").read_text(encoding="utf-8")


def info(name=DEFAULT):
    """The description (``metadata.ModelInfo``) stored in the shipped model ``name``."""
    from hourglass_tf import metadata

    return metadata.read_keras_info(path(name))


def pretrained(name=DEFAULT):
    """The shipped model ``name`` as an uncompiled ``keras.Model`` (float32; loaded in Keras ``safe_mode``).

    Its input is (N, H, W, 3) RGB in [0, 1] with H = W = ``info(name).input_size``; its outputs ``stack_1`` ...
    ``stack_S`` are (N, H/4, W/4, K) heatmaps in the order of ``info(name).skeleton.joints``.
    """
    from hourglass_tf import metadata

    return metadata.load_keras_model(path(name))


def summary(name=DEFAULT):
    """One line saying what the shipped model ``name`` is: joints, input size and its validation figure."""
    description = info(name)
    provenance = description.provenance
    figures = (provenance.get("pretrained") or {}).get("figures") or {}
    figure = figures.get("limb_pck_flip")
    size = description.input_size[0]
    said = f"{description.skeleton.name} joints ({description.skeleton.num_joints}), {size} px input"
    if figure is not None:
        said += f", {float(figure):.2f} limb PCK@0.2 on {provenance.get('dataset', '?')} validation"
    return f"the shipped model {name!r} ({said})"


def inherited_training_seconds(checkpoint):
    """The training time (seconds) of the shipped model a checkpoint's run started from, else 0.

    A run started with ``--init_weights=NAME`` (a shipped model's name, as the stages of a recipe are) inherits that
    model's ``training_seconds``, so a shipped model made in stages counts all of them, even when the earlier
    stages' run folders are gone. A start from a file path, or no start, inherits nothing.
    """
    from hourglass_tf import metadata

    config = (metadata.read_keras_info(checkpoint).provenance or {}).get("config") or {}
    start = config.get("init_weights")
    if not names_shipped_model(start):
        return 0.0
    return float((info(start).provenance.get("pretrained") or {}).get("training_seconds") or 0.0)


def resolve(model, log=print):
    """The model path to load for a ``--model`` (or ``--checkpoint``, ``--init_weights``) value.

    None: the default shipped model, said through ``log`` on one line. A shipped model's name that is not an
    existing file or folder: that model's file. Anything else is returned unchanged (a path).
    """
    if model is None:
        file = path(DEFAULT)
        log(f"no model given: using {summary(DEFAULT)}, {file}")
        return file
    if names_shipped_model(model):
        return path(str(model))
    return model


def no_such_model(path):
    """The one message for a model path that does not exist."""
    return f"{path}: no such model file or folder"


def check_model_argument(value):
    """ValueError (``no_such_model``) unless a ``--model``/``--checkpoint`` value is None (the default shipped model),
    a shipped model's name or an existing file or folder. Imports nothing heavy: the scripts say a mistyped path
    before TensorFlow loads (0.1 s instead of 4-5 s)."""
    if value is not None and not names_shipped_model(value) and not pathlib.Path(value).exists():
        raise ValueError(no_such_model(value))


def names_shipped_model(value):
    """Whether a model argument names a shipped model: one of ``MODELS`` that is not an existing file or folder
    (a user's own ``lspet`` folder is never shadowed)."""
    return value is not None and str(value) in MODELS and not pathlib.Path(value).exists()


def ship(
    checkpoint,
    name,
    *,
    recipe,
    figures,
    training_seconds=None,
    commit=None,
    bfloat16_check=None,
    decoding=None,
    folder=None,
):
    """Writes a trained ``.keras`` checkpoint as the shipped model ``name`` (``folder``/NAME.keras).

    The model is saved as it is (a checkpoint the package wrote already computes in float32) with its description;
    its provenance gains ``pretrained``: the name, the recipe (the flagfile's text), the commit, the validation
    ``figures`` (a dict, e.g. ``limb_pck_flip``) and the training time. ``bfloat16_check`` (a dict with
    ``passed``), when given, is stored as the provenance's ``bfloat16_check``, which lets ``--precision=auto`` run
    the model in bfloat16 (``backends.choose_precision``). ``decoding`` (``"quarter"`` or ``"dark"``), when given,
    becomes the description's ``decoding``: the sub-pixel rule every predictor and export of the model then uses
    unless told otherwise (choose it on the validation figures). The model card ``NAME.md`` is written by hand.

    Returns:
      the written ``.keras`` path.
    """
    import dataclasses

    from hourglass_tf import metadata

    if name not in MODELS:
        raise ValueError(f"{name!r} is not a shipped model's name; add it to pretrained.MODELS first ({names()})")
    model, description = metadata.load_keras(checkpoint)
    folder = pathlib.Path(folder or FOLDER)
    folder.mkdir(parents=True, exist_ok=True)
    provenance = {
        **description.provenance,
        "pretrained": {
            "name": name,
            "checkpoint": pathlib.Path(checkpoint).name,
            "recipe": recipe,
            "commit": commit,
            "figures": dict(figures),
            "training_seconds": training_seconds,
        },
    }
    if bfloat16_check is not None:
        provenance["bfloat16_check"] = dict(bfloat16_check)
    shipped = dataclasses.replace(description, provenance=provenance, decoding=decoding or description.decoding)
    return metadata.save_keras(model, folder / f"{name}{SUFFIX}", shipped)
