"""The shipped flagfiles (mpii.flags, lspet.flags, ...) parse into valid training configurations."""

import pathlib

import pytest
from absl import flags

from hourglass_tf import flags as train_flags

ROOT = pathlib.Path(__file__).resolve().parent.parent
FLAGFILES = sorted(ROOT.glob("*.flags"))


def parse(*args, pays=True):
    """The config the flags give, ``--mixed_precision=auto`` decided as on a machine where it pays (or not)."""
    return parse_with_note(*args, pays=pays)[0]


def parse_with_note(*args, pays=True):
    values = flags.FlagValues()
    train_flags.define_train_flags(values)
    values(["train.py", *args])
    return train_flags.config_from_flags(
        values, choose_mixed_precision=lambda: (pays, f"{'on' if pays else 'off'} (why)")
    )


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
        if text == "auto":  # --mixed_precision=auto, decided by parse's stand-in machine
            text = "true"
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


def test_mixed_precision_auto_is_decided_on_the_machine_and_said():
    for pays in (True, False):
        config, note = parse_with_note(f"--flagfile={ROOT / 'lspet.flags'}", pays=pays)
        assert config.mixed_precision is pays
        assert note == f"--mixed_precision=auto: {'on' if pays else 'off'} (why)"
    # the boolean forms keep their meaning and say nothing
    assert parse_with_note("--mixed_precision", pays=False) == (parse("--mixed_precision=true", pays=False), None)
    assert parse("--mixed_precision", pays=False).mixed_precision is True
    assert parse("--nomixed_precision").mixed_precision is False
    assert parse("--mixed_precision=AUTO", pays=False).mixed_precision is False
    assert train_flags.flags_text(parse("--mixed_precision=auto")).count("--mixed_precision=True\n") == 1
    with pytest.raises(flags.IllegalFlagValueError, match="mixed_precision"):
        parse("--mixed_precision=sometimes")


def test_mixed_precision_auto_checks_the_other_settings_before_it_decides():
    values = flags.FlagValues()
    train_flags.define_train_flags(values)
    values(["train.py", "--mixed_precision=auto", "--batch_size=0"])

    def must_not_be_asked():
        raise AssertionError("the machine was asked before the settings were checked")

    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        train_flags.config_from_flags(values, choose_mixed_precision=must_not_be_asked, validate=True)
    values["batch_size"].value = 4
    values["data_dir"].value = "data"
    pays = lambda: (True, "why")  # noqa: E731
    assert train_flags.config_from_flags(values, choose_mixed_precision=pays, validate=True)[0].mixed_precision
