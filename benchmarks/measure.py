"""What every benchmark case shares: medians of repeated timings, memory, the GEMM reference, and running one case
in a fresh process (``run_case``). NumPy only: the PyTorch reference (``torch_hourglass.py``) imports it too."""

import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]

RESULT_PREFIX = "BENCH_RESULT "

CASES_SCRIPT = REPO / "benchmarks" / "cases.py"  # runs one case: python benchmarks/cases.py CASE_JSON


def median_seconds(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb():
    """This process's peak resident memory so far, in MB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


def current_rss_mb():
    try:
        pages = int(pathlib.Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return None


def gemm_rate(size=1024, repeats=5):
    """The machine's float32 matrix-multiply rate through NumPy, in GFLOP/s (utilisation reference)."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    b = a.T.copy()
    seconds = median_seconds(lambda: a @ b, repeats)
    return {"gflops": 2 * size**3 / seconds / 1e9, "size": size, "seconds": seconds}


def run_case(case, default_allocators=False, timeout=3600, python=None, script=None):
    """Runs one case in a fresh Python process; its result dict, or {"error": ...} when it failed.

    ``python`` and ``script`` default to this interpreter and ``CASES_SCRIPT``; the side-by-side runs PyTorch's
    cases with ``python=<a Python with PyTorch>`` and ``script=side_by_side.TORCH_SCRIPT``.
    """
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if default_allocators:
        env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
        env["HOURGLASS_TF_TUNE_ALLOCATORS"] = "0"
    command = [python or sys.executable, str(script or CASES_SCRIPT), json.dumps(case)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    except OSError as error:
        return {"error": f"cannot run {command[0]}: {error}"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
            result["default_allocators"] = default_allocators
            return result
    tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
    return {"error": f"exit status {done.returncode}: " + " | ".join(tail)}


def log(progress, message):
    if progress:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def short(result):
    if "error" in result:
        return "failed: " + result["error"]
    if "batches" in result:
        return ", ".join(f"batch {b}: {r['seconds'] * 1000:.0f} ms" for b, r in result["batches"].items())
    return f"{result['seconds']:.2f} s/step, first {result['first_step_seconds']:.0f} s, peak {result['peak_rss_mb']:.0f} MB"


def target(name, measured, target, sense):
    met = measured >= target if sense == ">=" else measured <= target
    return {"name": name, "measured": measured, "target": target, "sense": sense, "met": bool(met)}
