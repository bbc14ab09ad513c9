"""Bad flags at every command-line entry: unknown, inconsistent, out of range, missing files. Each ends with a
non-zero exit status and one clear line saying what is wrong, never a traceback and never a half-written output.
The cases live in ``benchmarks/reliability.py`` (``BAD_FLAGS``), whose soak reports them in docs/reliability.md."""

import pytest

from benchmarks import reliability

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return reliability.tiny_model_file(tmp_path_factory.mktemp("cli") / "m.keras")


@pytest.mark.parametrize("script", sorted(reliability.BAD_FLAGS))
def test_bad_flags_end_with_one_clear_line(script, model_file, tmp_path):
    results = reliability.bad_flags(script, model_file, tmp_path)
    problems = [f"{r['args']}: {r['outcome']}: {r['message']}" for r in results if r["outcome"] != "clear error"]
    assert not problems, "\n".join(problems)
