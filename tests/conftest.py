"""Shared fixtures: quiet TF, tiny models, and the optional ../shared data folder."""

import atexit
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The LiteRT conversions the tests make (predict.py's default runtime, litert_cache) go to a folder of this test
# process, which its child processes inherit, never to the user's cache; removed at exit.
os.environ["HOURGLASS_TF_CACHE"] = tempfile.mkdtemp(prefix="hourglass_tf_test_cache.")
atexit.register(shutil.rmtree, os.environ["HOURGLASS_TF_CACHE"], True)

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ lives beside the package and is not installed
    sys.path.insert(0, str(REPO))


# The test files in decreasing order of their time on 2 cores (a fresh clone's `--durations=0`, 2026-12-07 evening,
# 1,467 s in all). `make test` hands whole files to its two workers in the collection order (pytest-xdist's `--dist
# loadfile --no-loadscope-reorder`), and `pytest_collection_modifyitems` below puts these first, so the last file to
# finish is a short one; by default xdist orders files by their number of tests, which left the long
# test_recompute.py and test_strategies.py for the end. A file not listed runs after these, in name order.
LONGEST_FILES_FIRST = (
    "test_train.py",
    "test_metadata.py",
    "test_export.py",
    "test_model.py",
    "test_recompute.py",
    "test_strategies.py",
    "test_reliability.py",
    "test_weights.py",
    "test_preactivation.py",
    "test_benchmark.py",
    "test_evaluation.py",
    "test_pretrained.py",
    "test_custom_keypoints.py",
    "test_people.py",
    "test_pipeline.py",
    "test_detectors.py",
    "test_precision.py",
    "test_optimizers.py",
    "test_batchnorm.py",
)


def pytest_collection_modifyitems(items):
    """The files of ``LONGEST_FILES_FIRST`` first, in its order; each file's tests keep theirs (the sort is stable)."""
    missing = [name for name in LONGEST_FILES_FIRST if not (REPO / "tests" / name).is_file()]
    if missing:
        raise pytest.UsageError(f"tests/conftest.py LONGEST_FILES_FIRST names files that do not exist: {missing}")
    rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def shared_dir():
    """``$HOURGLASS_SHARED`` or ``../shared`` beside the repository, or None when absent."""
    candidate = pathlib.Path(os.environ.get("HOURGLASS_SHARED", REPO.parent / "shared"))
    return candidate if (candidate / "data").is_dir() else None


@pytest.fixture
def shared_data():
    """Path of ``shared/data``; skips the test when the folder is absent (a user's machine)."""
    root = shared_dir()
    if root is None:
        pytest.skip("../shared/data is absent (set HOURGLASS_SHARED to point at it)")
    return root / "data"


TINY = dict(num_stacks=2, num_blocks=1, filters=16, depth=2, num_joints=16, input_size=64)


def tiny_config(data_dir, run_dir, **overrides):
    """A ``TrainConfig`` of a tiny run on the synthetic set in ``data_dir`` (``TINY``'s network, 3 epochs of
    6 steps of 4 images), writing into ``run_dir``; ``overrides`` replace any field."""
    from hourglass_tf.config import TrainConfig

    fields = dict(
        dataset="synthetic",
        data_dir=str(data_dir),
        **{k: TINY[k] for k in ("num_stacks", "filters", "depth", "input_size")},
        batch_size=4,
        epochs=3,
        steps_per_epoch=6,
        learning_rate=1e-3,
        val_batch_size=8,
        run_dir=str(run_dir),
        image_summaries=2,
        verbose=0,
    )
    fields.update(overrides)
    return TrainConfig(**fields)


@pytest.fixture(autouse=True)
def _float32_policy_around_each_test():
    """Every test starts and ends with Keras' default float32 policy, whatever ran before it."""

    def reset():
        keras = sys.modules.get("keras")
        if keras is not None:
            keras.mixed_precision.set_global_policy("float32")

    reset()
    yield
    reset()


def free_ports(n):
    """``n`` TCP ports on 127.0.0.1 that were free a moment ago (for local multi-worker clusters)."""
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def random_batch_norm_statistics(model, seed=0, shift=0.3, max_variance=2.0):
    """Sets every batch norm's statistics and affine parameters far from their initial values (where folding them
    into a convolution, or forgetting to, shows in the outputs); returns the generator for further draws."""
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0, shift, beta.shape),
                    rng.normal(0, shift, mean.shape),
                    rng.uniform(0.5, max_variance, variance.shape),
                ]
            )
    return rng


PEAK_OF_A_STEP = """
import json
import tensorflow as tf


def peak_of_a_step(model, x, loss_of):
    \"\"\"TensorFlow's allocator peak in a traced gradient step of ``model`` on ``x`` (its second run), in bytes above
    what was held before it.\"\"\"

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = loss_of(model(x, training=True))
        return tape.gradient(loss, model.trainable_weights)

    step(x)
    tf.config.experimental.reset_memory_stats("CPU:0")
    start = tf.config.experimental.get_memory_info("CPU:0")["current"]
    step(x)
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] - start
"""


def allocator_peaks(script):
    """Runs ``script`` after ``PEAK_OF_A_STEP`` in a fresh process with TensorFlow's BFC allocator (as the scripts
    run it) and oneDNN's kernels pinned (TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI or newer;
    Eigen's kernels hold per-call scratch buffers that hide a tiny model's activations, docs/performance.md).
    ``script`` prints one line ``PEAKS {json}``; returns that dict."""
    env = {**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", PEAK_OF_A_STEP + script], capture_output=True, text=True, env=env, cwd=REPO, timeout=600
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("PEAKS ")]
    assert lines, done.stderr[-2000:]
    return json.loads(lines[-1][len("PEAKS ") :])
