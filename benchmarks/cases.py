"""Runs one benchmark case in this fresh process and prints its result (``measure.run_case`` starts it):

    python benchmarks/cases.py '{"kind": "inference", ...}'

A case's peak memory (``peak_rss_mb``) is then its own, and no policy or strategy of one case leaks into the next.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repository: benchmarks/ is not installed

from benchmarks import inference_cases, peaks, people_cases, training_cases  # noqa: E402
from benchmarks.measure import RESULT_PREFIX, peak_rss_mb  # noqa: E402

CASES = {
    "prepare": inference_cases.prepare_models,
    "inference": inference_cases.inference_case,
    "train": training_cases.train_step_case,
    "people": people_cases.people_case,
    "peak": peaks.peak_case,
}


def run(case):
    """The result dict of one case (``kind`` names it in ``CASES``), with the process's peak memory."""
    case = dict(case)
    function = CASES[case.pop("kind")]
    result = function(**case)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/cases.py CASE_JSON")
    from hourglass_tf import runtime

    runtime.tune_allocators()  # as the package's scripts do (HOURGLASS_TF_TUNE_ALLOCATORS=0: the defaults rows)
    case = json.loads(sys.argv[1])
    if case.get("kind") == "train":
        runtime.use_onednn_for_training()  # as train.py does
    print(RESULT_PREFIX + json.dumps(run(case)), flush=True)
