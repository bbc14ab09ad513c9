"""The CPU's arithmetic peak per precision, measured and estimated, so every row can say how close to it it runs.

* measured (``peak_case``, a case in its own process): the best rate TensorFlow reaches on a large matrix
  multiply (2048^3) and on a large 3x3 convolution (batch 8, 64 x 64, 256 -> 256 channels, the hourglass's
  widest), in float32 and in bfloat16; the best of the two is the precision's peak.
* estimated (``fma_estimate``, from ``/proc/cpuinfo``): logical CPUs x clock x FMA lanes per cycle x 2 FLOPs;
  the lanes from the vector flags and vendor (AVX-512: 2 x 512-bit FMA pipes on Intel and AMD Zen 5, 2 x 256 on
  Zen 4; AVX2: 2 x 256), bfloat16 twice float32 where ``avx512_bf16`` is listed. The clock is the one the
  kernel reports (often the base clock, so a boosting CPU measures above the estimate); AMX is named, not
  counted.
"""

import os
import pathlib
import time

import numpy as np

from benchmarks.measure import median_seconds

GEMM_SIZE = 2048
CONV_SHAPE = {"batch": 8, "size": 64, "channels": 256}


def _cpuinfo():
    """(flags set, MHz or None, vendor, family) of the first CPU in /proc/cpuinfo (empty on other systems)."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return set(), None, "", 0
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    try:
        mhz = float(fields.get("cpu MHz", ""))
    except ValueError:
        mhz = None
    family = int(fields["cpu family"]) if fields.get("cpu family", "").isdigit() else 0
    return set(fields.get("flags", "").split()), mhz, fields.get("vendor_id", ""), family


def fma_lanes(flags, vendor, family):
    """Single-precision FMA lanes per core per cycle from the CPU's flags (see the module docstring)."""
    if "avx512f" in flags:
        return 16 if vendor == "AuthenticAMD" and family < 26 else 32  # Zen 4 splits 512-bit FMAs into two
    if "fma" in flags:
        return 16
    return 4  # SSE: one 128-bit multiply and one add


def fma_estimate(cpus=None):
    """{"float32", "bfloat16"} GFLOP/s estimated from the flags and clock, with what they rest on."""
    flags, mhz, vendor, family = _cpuinfo()
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not mhz:
        return {"error": "no clock in /proc/cpuinfo"}
    lanes = fma_lanes(flags, vendor, family)
    float32 = cpus * mhz / 1000 * lanes * 2
    return {
        "float32": float32,
        "bfloat16": float32 * (2 if "avx512_bf16" in flags else 1),
        "cpus": cpus,
        "mhz": mhz,
        "fma_lanes_per_cycle": lanes,
        "amx": "amx_bf16" in flags,
    }


def _rates(dtype, repeats):
    """GFLOP/s of the GEMM and the convolution of the module docstring in ``dtype`` (a TensorFlow dtype)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    n = GEMM_SIZE
    b, s, c = CONV_SHAPE["batch"], CONV_SHAPE["size"], CONV_SHAPE["channels"]
    a = tf.constant(rng.random((n, n), dtype=np.float32), dtype)
    images = tf.constant(rng.random((b, s, s, c), dtype=np.float32), dtype)
    kernel = tf.constant(rng.normal(0, 0.05, (3, 3, c, c)).astype(np.float32), dtype)
    matmul = tf.function(lambda: tf.reduce_sum(tf.cast(tf.linalg.matmul(a, a), tf.float32)))
    conv = tf.function(lambda: tf.reduce_sum(tf.cast(tf.nn.conv2d(images, kernel, 1, "SAME"), tf.float32)))
    gemm_seconds = median_seconds(lambda: matmul().numpy(), repeats, warmup=2)
    conv_seconds = median_seconds(lambda: conv().numpy(), repeats, warmup=2)
    rates = {"gemm": 2 * n**3 / gemm_seconds / 1e9, "conv": 2 * b * s * s * 9 * c * c / conv_seconds / 1e9}
    return {**rates, "best": max(rates.values())}


def peak_case(repeats=5):
    """Measured GFLOP/s per precision: {"float32": {"gemm", "conv", "best"}, "bfloat16": {...}, "estimate": ...}."""
    import tensorflow as tf

    out = {"estimate": fma_estimate()}
    for name, dtype in (("float32", tf.float32), ("bfloat16", tf.bfloat16)):
        out[name] = _rates(dtype, repeats)
    out["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return out
