"""Dependencies point one way: skeleton/boxes/geometry/codec/model/metadata <- data <- training, inference,
evaluation <- export."""

import ast

from conftest import REPO

PACKAGE = REPO / "hourglass_tf"

# The layer of each module (a package folder counts for every module in it). A module may import its own
# layer and the layers below it, never a layer above.
LAYERS = {
    0: {
        "skeleton",
        "boxes",
        "geometry",
        "images",
        "codec",
        "model",
        "metadata",
        "keras_saving",
        "pretrained",
        "metrics",
        "visualize",
        "batchnorm",
        "recompute",
        "preactivation",
        "optimizers",
        "runtime",
        "conversion",
    },
    1: {"data"},
    2: {
        "inference",
        "inference_options",
        "backends",
        "litert_cache",
        "evaluation",
        "config",
        "callbacks",
        "distribute",
        "train",
        "flags",
        "predict",
        "people",
        "tracking",
        "detectors",
        "detector_files",
        "blazepose",
    },
    3: {"export", "export_options", "serving", "weights"},
}
LAYER_OF = {name: layer for layer, names in LAYERS.items() for name in names}


def _top(module):
    """'hourglass_tf.data.readers' -> 'data'."""
    return module.split(".")[1] if module.count(".") else None


def _imports(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):  # function-level imports count too
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hourglass_tf"):
            if node.module == "hourglass_tf":
                yield from (f"hourglass_tf.{alias.name}" for alias in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("hourglass_tf."))


def test_every_module_has_a_layer():
    modules = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")}
    assert modules - {"__init__"} == set(LAYER_OF), modules ^ set(LAYER_OF)


def test_no_module_imports_a_higher_layer():
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for module in _imports(path):
            target = _top(module)
            if target in LAYER_OF and LAYER_OF[target] > LAYER_OF[own]:
                offences.append(
                    f"{path.relative_to(REPO)} (layer {LAYER_OF[own]}) imports {module} (layer {LAYER_OF[target]})"
                )
    assert not offences, "\n".join(offences)


def test_the_library_does_not_import_the_benchmarks():
    for path in PACKAGE.rglob("*.py"):
        assert "benchmarks" not in {m.split(".")[0] for m in _imports(path)}, path
        assert "import benchmarks" not in path.read_text() and "from benchmarks" not in path.read_text(), path
