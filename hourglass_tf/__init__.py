"""hourglass_tf: Stacked Hourglass Networks for Human Pose Estimation in Keras 3."""

__version__ = "0.1.0"

from hourglass_tf.model import build_model, output_names, truncate  # noqa: E402
from hourglass_tf.skeleton import COCO, FLIC, LSP, MPII, Skeleton, get_skeleton  # noqa: E402

__all__ = [
    "COCO", "FLIC", "LSP", "MPII", "Skeleton",
    "build_model", "get_skeleton", "output_names", "truncate",
]  # fmt: skip
