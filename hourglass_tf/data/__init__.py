"""Datasets: readers (``readers``), the tf.data pipeline (``pipeline``), TFRecord shards and synthetic data.

``DATASETS`` names the layouts ``readers.read_split`` reads; it lives here, importable without TensorFlow, so a
run's settings are checked before TensorFlow loads.
"""

DATASETS = ("mpii", "lsp", "lspet", "flic", "coco", "synthetic", "coco_keypoints")
