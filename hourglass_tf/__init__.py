"""hourglass_tf: Stacked Hourglass Networks for Human Pose Estimation in Keras 3.

Attributes load on first use, so ``import hourglass_tf.metrics`` (pure NumPy) does not
pay for importing TensorFlow. Importing the package changes nothing in the process: the
allocator tuning the package's scripts use is an explicit call, ``hourglass_tf.runtime.tune_allocators()``.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "build_model": "hourglass_tf.model",
    "output_names": "hourglass_tf.model",
    "truncate": "hourglass_tf.model",
    "Skeleton": "hourglass_tf.skeleton",
    "get_skeleton": "hourglass_tf.skeleton",
    "MPII": "hourglass_tf.skeleton",
    "LSP": "hourglass_tf.skeleton",
    "FLIC": "hourglass_tf.skeleton",
    "COCO": "hourglass_tf.skeleton",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hourglass_tf' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
