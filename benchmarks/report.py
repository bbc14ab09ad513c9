"""The suite's derived figures (utilisation, margins, the targets) and its Markdown tables."""

import json
import pathlib

from benchmarks import side_by_side
from benchmarks.inference_cases import BACKEND_TITLES, PACKAGE_BACKENDS
from benchmarks.measure import target

TARGETS = {
    "train_utilisation": 0.65,  # 8-stack training step, fraction of the GEMM rate
    "train_peak_gb": 8.0,
    "inference_utilisation": 0.85,  # every package inference path, batch 8
    "inference_peak_gb": 2.0,
    "pipeline_margin": 3.0,
    "video_fps": 25.0,  # one tracked person, 640 x 480, the LSPET-size model with the flip test
    "litert_ratio": 1.10,  # a .keras model's and a SavedModel's time / LiteRT float32's, batch 1 and 8
    "bf16_inference_of_peak": 0.75,  # bfloat16 inference, fraction of the measured bfloat16 peak
}

BFLOAT16_ROWS = ("tf_function_bf16", "mixed_precision")  # backends and training variants computing in bfloat16


def peak_of(results, row_kind):
    """The measured peak (GFLOP/s) of the precision a backend or training variant computes in, or None."""
    peaks = results.get("peaks") or {}
    precision = "bfloat16" if row_kind in BFLOAT16_ROWS else "float32"
    return (peaks.get(precision) or {}).get("best")


def peaks_line(peaks):
    """One line: the measured peaks and the estimate."""
    if not peaks or "error" in peaks:
        return f"not measured ({(peaks or {}).get('error', 'no peak case')})"
    said = ", ".join(
        f"{p} {peaks[p]['best']:.0f} GFLOP/s (GEMM {peaks[p]['gemm']:.0f}, conv {peaks[p]['conv']:.0f})"
        for p in ("float32", "bfloat16")
    )
    estimate = peaks.get("estimate") or {}
    if "float32" in estimate:
        said += (
            f"; estimated from the flags and clock: float32 {estimate['float32']:.0f}, bfloat16 "
            f"{estimate['bfloat16']:.0f} ({estimate['cpus']} CPUs x {estimate['mhz']:.0f} MHz x "
            f"{estimate['fma_lanes_per_cycle']} FMA lanes x 2{', AMX not counted' if estimate['amx'] else ''})"
        )
    return said


def derive(results):
    """Adds utilisation (of the NumPy GEMM rate), the fraction of the precision's measured peak, pipeline margins
    and the target checks."""
    gemm = results["gemm"]["gflops"]
    results.setdefault("pipeline", {})
    for result in results["inference"].values():
        peak = peak_of(results, result.get("backend"))
        for batch in result.get("batches", {}).values():
            batch["utilisation"] = batch["gflops_per_s"] / gemm
            if peak:
                batch["of_peak"] = batch["gflops_per_s"] / peak
    slowest_pipeline = min((r["images_per_s"] for r in results["pipeline"].values()), default=None)
    for result in results["train_step"].values():
        if "error" in result:
            continue
        result["utilisation"] = result["gflops_per_s"] / gemm
        peak = peak_of(results, result.get("variant"))
        if peak:
            result["of_peak"] = result["gflops_per_s"] / peak
        if slowest_pipeline:
            result["pipeline_margin"] = slowest_pipeline / result["images_per_s"]
    targets = []
    ok = {k: v for k, v in results["train_step"].items() if "error" not in v}
    plain = [v for v in ok.values() if v["variant"] == "plain" and not v["default_allocators"]]
    if plain:
        step = max(plain, key=lambda v: v["num_stacks"])
        name = f"training step, {step['num_stacks']} stacks, batch 8"
        targets.append(
            target(f"{name}: fraction of the GEMM rate", step["utilisation"], TARGETS["train_utilisation"], ">=")
        )
        targets.append(target(f"{name}: peak memory (GB)", step["peak_rss_mb"] / 1000, TARGETS["train_peak_gb"], "<="))
        for v in plain:
            if "pipeline_margin" in v:
                targets.append(
                    target(
                        f"input pipeline / training consumption, {v['num_stacks']} stacks",
                        v["pipeline_margin"],
                        TARGETS["pipeline_margin"],
                        ">=",
                    )
                )
    infer = [v for v in results["inference"].values() if "error" not in v and not v["default_allocators"]]
    if infer:
        stacks = max(v["num_stacks"] for v in infer)
        for v in infer:
            if v["num_stacks"] != stacks or v["backend"] not in PACKAGE_BACKENDS or "8" not in v["batches"]:
                continue
            name = f"inference, {stacks} stacks, batch 8, {v['backend']}"
            targets.append(
                target(
                    f"{name}: fraction of the GEMM rate",
                    v["batches"]["8"]["utilisation"],
                    TARGETS["inference_utilisation"],
                    ">=",
                )
            )
            targets.append(
                target(f"{name}: peak memory (GB)", v["peak_rss_mb"] / 1000, TARGETS["inference_peak_gb"], "<=")
            )
        targets += _runner_targets([v for v in infer if v["num_stacks"] == stacks], stacks)
    if "side_by_side" in results and "error" not in results["side_by_side"]:
        targets += side_by_side.targets(results["side_by_side"])
    video = results.get("people", {}).get("video")
    if video:
        targets.append(
            target(
                f"video, one tracked person, 640 x 480, LSPET-size model on {video.get('runtime', 'tensorflow')}: "
                "frames/s",
                video["frames_per_second"],
                TARGETS["video_fps"],
                ">=",
            )
        )
    results["targets"] = targets


def _runner_targets(rows, stacks):
    """The speed issue's inference goals on the largest model: ``.keras`` (``tf_function``) and SavedModel within
    ``litert_ratio`` of LiteRT's float32 time, bfloat16 at ``bf16_inference_of_peak`` of its peak; batch 1 and 8."""
    by_backend = {v["backend"]: v["batches"] for v in rows}
    litert = by_backend.get("tflite_fp32", {})
    targets = []
    for backend in ("tf_function", "saved_model"):
        for batch in sorted(set(by_backend.get(backend, {})) & set(litert)):
            ratio = by_backend[backend][batch]["seconds"] / litert[batch]["seconds"]
            name = f"inference, {stacks} stacks, batch {batch}, {backend} / LiteRT float32 time"
            targets.append(target(name, ratio, TARGETS["litert_ratio"], "<="))
    for batch, row in sorted(by_backend.get("tf_function_bf16", {}).items()):
        if "of_peak" in row:
            name = f"inference, {stacks} stacks, batch {batch}, bfloat16: fraction of the bfloat16 peak"
            targets.append(target(name, row["of_peak"], TARGETS["bf16_inference_of_peak"], ">="))
    return targets


def markdown(results):
    """Markdown tables of ``run``'s results."""
    gemm = results["gemm"]
    lines = [
        f"Machine: {results['machine']['processor']}, {results['machine']['cpu_threads']} CPU threads; "
        f"NumPy float32 GEMM ({gemm['size']}^3): **{gemm['gflops']:.1f} GFLOP/s** (the utilisation reference). "
        f"Allocators: {results['settings']['allocators']}.",
        "",
        f"Peak per precision (the best of a 2048^3 matrix multiply and a 3x3 convolution in TensorFlow): "
        f"{peaks_line(results.get('peaks'))}.",
        "",
    ]
    if results["pipeline"]:
        lines += ["| input pipeline (augmented, batch 8) | images/s |", "|---|---|"]
        for name, r in results["pipeline"].items():
            lines.append(f"| {name}, {r['input_size']} px | {r['images_per_s']:.0f} |")
    if results["inference"]:
        flops = {k: v.get("flops") for k, v in results["models"].items()}
        lines += [
            "",
            "Inference (random crops, float32 in; forward FLOPs from the layer shapes: "
            + ", ".join(f"{k} {f / 1e9:.2f} GFLOP" for k, f in flops.items() if f)
            + " per image)",
            "",
            "| model | backend | batch 1 latency | batch 1 of peak | batch 8 time | batch 8 images/s | batch 8 GFLOP/s "
            "| of GEMM | of peak | peak RSS |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for key, r in results["inference"].items():
            stacks = key.split(",")[0]
            title = BACKEND_TITLES.get(r.get("backend"), key) + (
                ", default allocators" if r.get("default_allocators") else ""
            )
            if "error" in r:
                lines.append(f"| {stacks} | {key.split(', ', 1)[1]} | failed: {r['error'][:120]} | | | | | | | |")
                continue
            b1, b8 = r["batches"].get("1"), r["batches"].get("8")
            cells = [
                f"{b1['seconds'] * 1000:.0f} ms" if b1 else "",
                f"{b1['of_peak']:.0%}" if b1 and "of_peak" in b1 else "",
                f"{b8['seconds']:.2f} s" if b8 else "",
                f"{b8['images_per_s']:.2f}" if b8 else "",
                f"{b8['gflops_per_s']:.0f}" if b8 else "",
                f"{b8['utilisation']:.0%}" if b8 else "",
                f"{b8['of_peak']:.0%}" if b8 and "of_peak" in b8 else "",
            ]
            lines.append(f"| {stacks} | {title} | " + " | ".join(cells) + f" | {r['peak_rss_mb'] / 1000:.2f} GB |")
    if results["train_step"]:
        lines += [
            "",
            "Training step (batch 8, RMSprop, `train_on_batch` = the `model.fit` step; 3x forward FLOPs)",
            "",
            "| model | variant | s / step | images/s | GFLOP/s | of GEMM | of peak | first step (tracing) | peak RSS "
            "| pipeline margin |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for key, r in results["train_step"].items():
            stacks, variant = key.split(", ", 1)
            if "error" in r:
                lines.append(f"| {stacks} | {variant} | failed: {r['error'][:120]} | | | | | | | |")
                continue
            margin = f"{r['pipeline_margin']:.0f}x" if "pipeline_margin" in r else ""
            of_peak = f"{r['of_peak']:.0%}" if "of_peak" in r else ""
            lines.append(
                f"| {stacks} | {variant} | {r['seconds']:.2f} | {r['images_per_s']:.2f} | {r['gflops_per_s']:.0f} | "
                f"{r['utilisation']:.0%} | {of_peak} | {r['first_step_seconds']:.0f} s | {r['peak_rss_mb'] / 1000:.2f} GB "
                f"| {margin} |"
            )
    found = results.get("people", {})
    if "people" in found:
        model = found["model"]
        lines += [
            "",
            f"Photo to poses (LSPET-size model: {model['num_stacks']} stacks x {model['filters']} at "
            f"{model['input_size']} px, flip test, on {found.get('runtime', 'tensorflow')} as predict.py runs it; "
            f"one 640 x 480 image, every person in one batch)",
            "",
            "| people in the image | time | people/s |",
            "|---|---|---|",
        ]
        for n, r in found["people"].items():
            lines.append(f"| {n} | {r['seconds'] * 1000:.1f} ms | {r['people_per_s']:.0f} |")
        v = found["video"]
        growth = (
            f"{v['rss_mb_at_end'] - v['rss_mb_at_frame_20']:+.0f} MB from frame 20 to {v['frames']}"
            if v.get("rss_mb_at_end") and v.get("rss_mb_at_frame_20")
            else "n/a"
        )
        lines += [
            "",
            f"Video, one tracked person, {v['frame_size'][0]} x {v['frame_size'][1]}: **{v['frames_per_second']:.1f} "
            f"frames/s** end to end on {v.get('runtime', 'tensorflow')} ({v['frames']} frames, detector "
            f"{v['detector_runs']} times, One-Euro filter); memory {growth}."
            + (
                f" On TensorFlow (`--runtime=tensorflow`): {found['video_tensorflow']['frames_per_second']:.1f} frames/s."
                if "video_tensorflow" in found
                else ""
            ),
        ]
    elif "error" in found:
        lines += ["", f"Photo to poses: failed: {found['error'][:200]}"]
    lines += side_by_side.markdown(results.get("side_by_side"))
    if results.get("targets"):
        lines += ["", "| target | measured | goal | met |", "|---|---|---|---|"]
        for t in results["targets"]:
            lines.append(
                f"| {t['name']} | {t['measured']:.2f} | {t['sense']} {t['target']:g} | {'yes' if t['met'] else '**no**'} |"
            )
    return "\n".join(lines) + "\n"


def write(results, output_dir):
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "bench.json").write_text(json.dumps(results, indent=2))
    (output_dir / "bench.md").write_text(markdown(results))
    return output_dir / "bench.json", output_dir / "bench.md"
