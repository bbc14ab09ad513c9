"""Process-wide CPU allocator settings: an explicit call, ``tune_allocators()``, made by the package's scripts.

Importing ``hourglass_tf`` does not apply them; a program that wants them calls
``hourglass_tf.runtime.tune_allocators()`` before TensorFlow runs its first op.

Measured on a 2-core CPU machine (docs/performance.md): a batch of 8 at 256 px has activation
tensors above glibc's default mmap threshold, so every step maps fresh pages and takes millions
of minor page faults. Two settings remove that:

* ``TF_CPU_ALLOCATOR_USE_BFC=true``: TensorFlow's best-fit-with-coalescing allocator keeps freed
  tensor memory for reuse. TensorFlow reads it when it creates its CPU allocator, so it only
  takes effect when ``tune_allocators()`` runs before TensorFlow runs its first op (every
  script here calls it at its top). An explicit value in the environment is kept.
* glibc ``mallopt``: mmap threshold 256 MiB and trim threshold 4 GiB (the same as
  ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=4294967296``),
  applied at once through ``ctypes``; a no-op where the C library is not glibc.

``HOURGLASS_TF_TUNE_ALLOCATORS=0`` in the environment turns both off (the benchmark's
"default allocators" rows use it).

Also here, read-only: what the CPU can do (``cpu_flags``, ``cpu_has_bfloat16``), which training's precision
choice and inference's runner choice both read.
"""

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 20
TRIM_THRESHOLD = (4 << 30) - 1  # mallopt takes an int
ENV_SWITCH = "HOURGLASS_TF_TUNE_ALLOCATORS"

applied = {}  # what tune_allocators() set, for tests and the benchmark report


def enabled():
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def tune_allocators():
    """Applies the settings above unless switched off; returns what was applied (a dict)."""
    applied.clear()
    if not enabled():
        return dict(applied)
    if "TF_CPU_ALLOCATOR_USE_BFC" not in os.environ:
        os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
        applied["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return dict(applied)
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1:
        applied["mmap_threshold"] = MMAP_THRESHOLD
    if mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1:
        applied["trim_threshold"] = TRIM_THRESHOLD
    return dict(applied)


BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with bfloat16 arithmetic


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU feature flags the kernel reports (an empty set where there is no /proc/cpuinfo)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bfloat16(flags=None):
    """Whether the CPU has bfloat16 arithmetic (``BFLOAT16_CPU_FLAGS``); ``flags`` default to ``cpu_flags()``.
    Without it TensorFlow emulates bfloat16, slower than float32."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in BFLOAT16_CPU_FLAGS)
