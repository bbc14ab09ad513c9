"""The package against PyTorch on the same network (``make bench TORCH_PYTHON=...``): interleaved cases, medians,
ratios, their targets and their table."""

import pathlib
import statistics

from benchmarks.inference_cases import BACKEND_TITLES
from benchmarks.measure import REPO, log, run_case, short, target

TORCH_SCRIPT = REPO / "benchmarks" / "torch_hourglass.py"

TARGETS = {  # the speed issue's goals
    "bf16_inference_ratio": 0.8,  # package's bfloat16 / PyTorch's autocast time, batch 1 and 8
    "bf16_train_ratio": 0.85,
    "fp32_train_ratio": 1.0,  # float32 keeps its lead
    "first_step_ratio": 3.0,  # the first (tracing) training step, package / PyTorch
    "train_memory_ratio": 1.1,  # peak RSS of the training process, package / PyTorch
}

TF_INFERENCE = {"float32": ("tf_function", "tflite_fp32"), "bfloat16": ("tf_function_bf16",)}  # package runners

TF_TRAINING = {"float32": "plain", "bfloat16": "mixed_precision"}


def _median_of(results, *path):
    values = []
    for result in results:
        value = result
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (int, float)):
            values.append(value)
    return statistics.median(values) if values else None


def side_by_side(
    work_dir,
    torch_python,
    num_stacks=8,
    filters=256,
    input_size=256,
    rounds=2,
    repeats=5,
    train_repeats=3,
    precisions=("float32", "bfloat16"),
    progress=False,
):
    """The package against PyTorch (``TORCH_SCRIPT`` run by ``torch_python``) on the same network, interleaved:
    every case alternates package, PyTorch, package, PyTorch ... (``rounds`` times each for inference, once for
    training), each in a fresh process; reports the medians and their ratio (package / PyTorch).

    Inference: the package's runners (``TF_INFERENCE``: the compiled ``tf.function``, what ``predict.py`` and
    the estimator use for a ``.keras`` model, and LiteRT for an exported ``.tflite``; bfloat16 through
    ``model.bfloat16_copy``) against PyTorch eager ``inference_mode``, the faster of NCHW and channels-last
    (bfloat16 through CPU autocast), batch 1 and 8; the ratio and target use the package's fastest runner.
    Training: the compiled Keras RMSprop step (fused batch norm; ``mixed_precision``) against PyTorch's RMSprop
    step (channels-last; autocast), batch 8, with each side's first step and peak memory.
    """
    model_dir = pathlib.Path(work_dir) / "models" / f"s{num_stacks}_f{filters}_r{input_size}"
    out = {
        "num_stacks": num_stacks,
        "filters": filters,
        "input_size": input_size,
        "rounds": rounds,
        "inference": {},
        "train": {},
    }
    probe = run_case(
        {"kind": "inference", "num_stacks": 1, "filters": 16, "input_size": 64, "batch_sizes": [1], "repeats": 1},
        python=torch_python,
        script=TORCH_SCRIPT,
    )
    if "error" in probe:
        out["error"] = f"{torch_python} cannot run the PyTorch reference: {probe['error']}"
        return out
    info = run_case(
        {
            "kind": "prepare",
            "model_dir": str(model_dir),
            "num_stacks": num_stacks,
            "filters": filters,
            "input_size": input_size,
            "backends": sorted({runner for p in precisions for runner in TF_INFERENCE[p]}),
        }
    )
    if "error" in info:
        out["error"] = info["error"]
        return out
    out["torch"] = probe.get("torch")

    def torch_case(**case):
        model = {"num_stacks": num_stacks, "filters": filters, "input_size": input_size}
        return run_case({**model, **case}, python=torch_python, script=TORCH_SCRIPT)

    for precision in precisions:
        runners = TF_INFERENCE[precision]
        runs = {runner: [] for runner in (*runners, "torch")}
        for r in range(rounds):
            for runner in runners:
                case = {"kind": "inference", "model_dir": str(model_dir), "backend": runner, "repeats": repeats}
                runs[runner].append(run_case(case))
            runs["torch"].append(torch_case(kind="inference", precision=precision, repeats=repeats))
            said = "; ".join(f"{name} {short(results[-1])}" for name, results in runs.items())
            log(progress, f"side by side, inference {precision}, round {r + 1}: {said}")
        out["inference"][precision] = {"runs": runs, "batches": {}}
        for batch in ("1", "8"):
            times = {runner: _median_of(runs[runner], "batches", batch, "seconds") for runner in runners}
            times = {runner: t for runner, t in times.items() if t}
            best = min(times, key=times.get) if times else None
            torch = _median_of(runs["torch"], "batches", batch, "seconds")
            layouts = [r["batches"][batch]["layout"] for r in runs["torch"] if "error" not in r]
            out["inference"][precision]["batches"][batch] = {
                "runners": times,
                "runner": best,
                "package": times.get(best),
                "torch": torch,
                "torch_layout": layouts[0] if layouts else None,
                "ratio": times[best] / torch if best and torch else None,
            }
    for precision in precisions:
        out["train"][precision] = _training_row(num_stacks, filters, input_size, train_repeats, precision, torch_case)
        row = out["train"][precision]
        said = "; ".join(f"{side} {short(row[side])}" for side in ("package", "recompute", "torch"))
        log(progress, f"side by side, training {precision}: {said}")
    return out


def _training_row(num_stacks, filters, input_size, repeats, precision, torch_case):
    """One precision's training step: the package as it trains by default, the package with per-stack
    recomputation (``--recompute``, the memory option), then PyTorch, each in a fresh process; and the ratios."""
    case = {
        "kind": "train",
        "num_stacks": num_stacks,
        "batch_size": 8,
        "input_size": input_size,
        "filters": filters,
        "repeats": repeats,
        "variant": TF_TRAINING[precision],
    }
    row = {"package": run_case(case), "recompute": run_case({**case, "recompute": True})}
    row["torch"] = torch = torch_case(kind="train", batch_size=8, repeats=repeats, precision=precision)
    if "error" in torch:
        return row
    for side, prefix in (("package", ""), ("recompute", "recompute_")):
        package = row[side]
        if "error" not in package:
            row[f"{prefix}ratio"] = package["seconds"] / torch["seconds"]
            row[f"{prefix}memory_ratio"] = package["peak_rss_mb"] / torch["peak_rss_mb"]
            row[f"{prefix}first_step_ratio"] = package["first_step_seconds"] / torch["first_step_seconds"]
    return row


def targets(sbs):
    """The speed issue's goals against PyTorch: bfloat16 inference (the package's fastest bfloat16 runner) at
    batch 1 and 8, and training time, first step and peak training memory per precision as the package trains by
    default (its batch norm -> ReLU recomputation; ``--recompute``'s rows are reported beside, not held to a goal;
    float32 inference has no PyTorch goal: it is held to LiteRT's time in ``report.derive``)."""
    targets = []
    stacks = sbs["num_stacks"]
    for batch, row in sbs.get("inference", {}).get("bfloat16", {}).get("batches", {}).items():
        if row["ratio"] is not None:
            name = f"inference, {stacks} stacks, batch {batch}, bfloat16: package ({row['runner']}) / PyTorch time"
            targets.append(target(name, row["ratio"], TARGETS["bf16_inference_ratio"], "<="))
    for precision, row in sbs.get("train", {}).items():
        if "ratio" not in row:
            continue
        goal = TARGETS["bf16_train_ratio" if precision == "bfloat16" else "fp32_train_ratio"]
        name = f"training step, {stacks} stacks, batch 8, {precision}"
        targets.append(target(f"{name}: package / PyTorch time", row["ratio"], goal, "<="))
        targets.append(
            target(f"{name}: package / PyTorch first step", row["first_step_ratio"], TARGETS["first_step_ratio"], "<=")
        )
        targets.append(
            target(f"{name}: package / PyTorch peak memory", row["memory_ratio"], TARGETS["train_memory_ratio"], "<=")
        )
    return targets


def markdown(sbs):
    if not sbs:
        return []
    if "error" in sbs:
        return ["", f"Side by side with PyTorch: failed: {sbs['error'][:300]}"]
    stacks = sbs["num_stacks"]
    lines = [
        "",
        f"Side by side with PyTorch {sbs.get('torch', '')} (same network, {stacks} stacks x {sbs['filters']}, "
        f"{sbs['input_size']} px, random data, interleaved, each case in a fresh process; inference medians of "
        f"{sbs['rounds']} rounds; PyTorch eager, its faster layout)",
        "",
        "| case | hourglass_tf | PyTorch best | ratio |",
        "|---|---|---|---|",
    ]
    for precision, entry in sbs["inference"].items():
        for batch, row in entry["batches"].items():
            if row["ratio"] is None:
                lines.append(f"| inference, batch {batch}, {precision} | failed | | |")
                continue
            for runner, seconds in row["runners"].items():
                ratio = f"{seconds / row['torch']:.2f}"
                lines.append(
                    f"| inference, batch {batch}, {precision}, {BACKEND_TITLES.get(runner, runner)} | "
                    f"{seconds * 1000:.0f} ms | {row['torch'] * 1000:.0f} ms ({row['torch_layout']}) | "
                    + (f"**{ratio}** |" if runner == row["runner"] else f"{ratio} |")
                )
    for precision, row in sbs["train"].items():
        if "ratio" not in row:
            error = row["package"].get("error") or row["torch"].get("error")
            lines.append(f"| training step, batch 8, {precision} | failed: {error[:150]} | | |")
            continue
        package, torch = row["package"], row["torch"]
        lines += [
            f"| training step, batch 8, {precision} | {package['seconds']:.2f} s | {torch['seconds']:.2f} s | "
            f"**{row['ratio']:.2f}** |",
            f"| first training step, {precision} | {package['first_step_seconds']:.1f} s | "
            f"{torch['first_step_seconds']:.1f} s | {row['first_step_ratio']:.2f} |",
            f"| peak process memory, training, {precision} | {package['peak_rss_mb'] / 1000:.2f} GB | "
            f"{torch['peak_rss_mb'] / 1000:.2f} GB | **{row['memory_ratio']:.2f}** |",
        ]
        recomputed = row.get("recompute", {})
        if "recompute_ratio" in row:
            lines += [
                f"| training step, batch 8, {precision}, `--recompute` | {recomputed['seconds']:.2f} s | "
                f"{torch['seconds']:.2f} s | {row['recompute_ratio']:.2f} |",
                f"| peak process memory, training, {precision}, `--recompute` | "
                f"{recomputed['peak_rss_mb'] / 1000:.2f} GB | {torch['peak_rss_mb'] / 1000:.2f} GB | "
                f"{row['recompute_memory_ratio']:.2f} |",
            ]
        elif recomputed:
            lines.append(f"| training, {precision}, `--recompute` | failed: {recomputed.get('error', '')[:150]} | | |")
    return lines
