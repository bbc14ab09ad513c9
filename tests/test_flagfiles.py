"""The shipped flagfiles (mpii.flags, lspet.flags, ...) parse into valid training configurations."""

import pathlib

import pytest
from absl import flags

from hourglass_tf import flags as train_flags

ROOT = pathlib.Path(__file__).resolve().parent.parent
FLAGFILES = sorted(ROOT.glob("*.flags"))


def parse(*args):
    values = flags.FlagValues()
    train_flags.define_train_flags(values)
    values(["train.py", *args])
    return train_flags.config_from_flags(values)


def test_the_flagfiles_are_shipped():
    names = {p.name for p in FLAGFILES}
    assert {"mpii.flags", "flic.flags", "coco.flags", "lspet.flags", "demo.flags"} <= names


@pytest.mark.parametrize("path", FLAGFILES, ids=lambda p: p.name)
def test_flagfile_parses_into_a_valid_config(path):
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("--")]
    # A later stage starts from an earlier stage's model, which a fresh clone lacks: a shipped name stands in.
    stand_in = ["--init_weights=lspet"] if any(ln.startswith("--init_weights=") for ln in lines) else []
    config = parse(f"--flagfile={path}", *stand_in)
    config.validate()  # raises ValueError naming every inconsistent choice
    assert lines, f"{path.name} sets no flag"
    for line in lines:  # every line reached the config (none shadowed by a default)
        if stand_in and line.startswith("--init_weights="):
            continue
        name, text = line[2:].split("=", 1)
        value = getattr(config, name)
        expected = text.lower() == "true" if isinstance(value, bool) else type(value)(text)
        assert value == expected, f"{path.name}: --{name}={text} gave {value!r}"


def test_paper_recipe_in_mpii_flags():
    config = parse(f"--flagfile={ROOT / 'mpii.flags'}")
    assert (config.num_stacks, config.filters, config.input_size, config.depth) == (8, 256, 256, 4)
    assert (config.optimizer, config.learning_rate, config.sigma) == ("rmsprop", 2.5e-4, 1.0)


def test_command_line_overrides_the_flagfile():
    config = parse(f"--flagfile={ROOT / 'lspet.flags'}", "--data_dir=/elsewhere", "--epochs=1")
    assert (config.data_dir, config.epochs) == ("/elsewhere", 1)


def test_unknown_flag_in_a_flagfile_is_refused(tmp_path):
    bad = tmp_path / "bad.flags"
    bad.write_text("--dataset=lspet\n--data_dir=x\n--input_sise=96\n")
    with pytest.raises(flags.UnrecognizedFlagError, match="input_sise"):
        parse(f"--flagfile={bad}")
