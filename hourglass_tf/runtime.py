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

``use_onednn_for_training()``, called by the training scripts only: oneDNN's kernels on x86 CPUs where TensorFlow
would leave them off (measured faster for training, slower for batch-1 inference).

Also here, read-only: what the CPU can do (``cpu_flags``, ``cpu_has_bfloat16``), which training's precision
choice and inference's runner choice both read.
"""

import ctypes
import ctypes.util
import os
import platform

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


ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
X86_MACHINES = ("x86_64", "amd64")  # platform.machine(), lower-cased, of the CPUs use_onednn_for_training serves


def use_onednn_for_training(machine=None):
    """For the training scripts, before TensorFlow loads: TensorFlow's oneDNN kernels on every x86 CPU.

    TensorFlow turns oneDNN on by itself only on x86 CPUs with AVX-512 VNNI, AVX-VNNI or AMX, and runs its Eigen
    kernels elsewhere (AVX2 machines). Measured on an AVX2-only AMD EPYC (docs/performance.md, 2026-12-06): with
    oneDNN a float32 training step took 15 % less time (2 stacks x 128 at 128 px, batch 16: 0.87-0.92 -> 0.74-0.77 s),
    but a batch-1 forward pass 75 % more (0.12 -> 0.21 s), so only training calls this. Where oneDNN is already
    TensorFlow's default the setting changes nothing; nothing is set on other architectures (``machine``: default
    ``platform.machine()``) or when the environment gives ``TF_ENABLE_ONEDNN_OPTS`` (``=0`` keeps Eigen). Returns
    what it set (also in ``applied``).
    """
    machine = platform.machine() if machine is None else machine
    if ONEDNN_ENV in os.environ or machine.lower() not in X86_MACHINES:
        return {}
    os.environ[ONEDNN_ENV] = "1"
    applied[ONEDNN_ENV] = "1"
    return {ONEDNN_ENV: "1"}


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
