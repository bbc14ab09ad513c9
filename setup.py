"""Installs hourglass_tf: `make install` (or `pip install -e .[dev,onnx]`)."""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "hourglass_tf" / "__init__.py").read_text()).group(1)

setup(
    name="hourglass_tf",
    version=VERSION,
    description="Stacked Hourglass Networks for Human Pose Estimation (Newell et al., ECCV 2016) in Keras 3 / TF 2",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["hourglass_tf", "hourglass_tf.*"]),
    package_data={"hourglass_tf": ["models/*.keras", "models/*.md"]},  # the shipped models (hourglass_tf.pretrained)
    python_requires=">=3.10,<3.14",
    install_requires=[
        "tensorflow>=2.21,<2.22",  # brings Keras 3
        "numpy>=1.26,<3",
        "opencv-python-headless>=4.8,<5",
        "absl-py>=2.0,<3",
        "h5py>=3.10,<4",
        "scipy>=1.11,<2",
        "matplotlib>=3.8,<4",
        "tensorboard>=2.19,<3",  # TensorFlow 2.21 no longer installs it
        "tensorflow-serving-api>=2.21,<2.22",  # PredictionLog protos of the SavedModel's warm-up file
        "pycocotools>=2.0.8,<3",  # COCO's official keypoint AP
        "pillow>=10",  # reads photo headers (sizes) before decoding: hourglass_tf.images
        "ai-edge-litert>=2.0,<3",  # LiteRT: predicting with a .tflite, and checking a .tflite export
    ],
    extras_require={
        "onnx": ["tf2onnx>=1.17,<2", "onnx>=1.16,<2", "onnxruntime>=1.18,<2"],
        "dev": [
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",
            "ruff==0.17.6",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
