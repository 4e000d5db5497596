"""Habits of a newcomer at the command line: --version, help on every option with its default,
Ultralytics-style KEY.PATH=VALUE arguments, "did you mean" for a misspelt key, --set errors that name
the override, and result lines with enough digits to tell 0.00012 from 0."""

from __future__ import annotations

import argparse

import pytest
from study_helpers import REPO

from detectors.errors import ConfigError

SMOKE = str(REPO / "configs" / "smoke.yaml")


def _parsers(parser: argparse.ArgumentParser, name: str = "mssd"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _parsers(child, f"{name} {sub}")


def test_version_prints_the_package_version(capsys):
    from importlib.metadata import version

    from study.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"mssd {version('mssd-study')}"


def test_every_option_has_help_and_shows_its_default():
    from study.cli import build_parser

    missing, no_default = [], []
    for name, parser in _parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not action.help or action.help == argparse.SUPPRESS:
                if action.help != argparse.SUPPRESS:
                    missing.append(label)
                continue
            switch = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction,
                                         argparse._StoreConstAction))  # no value: nothing to show
            shown = action.default not in (None, False, [], argparse.SUPPRESS) and action.option_strings and not switch
            if shown and "(default" not in formatter._expand_help(action):
                no_default.append(label)
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"defaults not shown: {no_default}"


def test_key_path_value_arguments_are_taken_as_set_overrides(capsys):
    from study.cli import main

    assert main(["config", "show", SMOKE, "train.epochs=3", "--set", "train.batch_size=2"]) == 0
    out = capsys.readouterr().out
    assert any(line.split() == ["train.epochs", "3"] for line in out.splitlines())
    assert any(line.split() == ["train.batch_size", "2"] for line in out.splitlines())


def test_a_stray_argument_gets_the_set_hint(capsys):
    from study.cli import main

    with pytest.raises(SystemExit) as info:
        main(["config", "show", SMOKE, "epochs"])
    assert info.value.code == 2 and "KEY.PATH=VALUE" in capsys.readouterr().err


def test_an_unknown_key_suggests_the_close_one():
    from study.config import load_config

    with pytest.raises(ConfigError, match=r"train.epochz: unknown key; did you mean train.epochs\?"):
        load_config(SMOKE, ["train.epochz=3"])
    with pytest.raises(ConfigError, match=r"losses.mssd.gama: unknown key; did you mean losses.mssd.gamma\?"):
        load_config(SMOKE, ["losses.mssd.gama=0.1"])


def test_an_error_in_a_misspelt_section_names_the_override_not_the_file():
    from study.config import load_config

    with pytest.raises(ConfigError) as info:
        load_config(SMOKE, ["trian.epochs=3"])
    assert str(info.value).startswith("--set trian: unknown key; did you mean train?")


def test_result_lines_keep_small_values_and_name_the_metric():
    from study.cli.train_cmd import done_line
    from study.tune import StudySummary

    line = done_line({"map": 0.000123, "ap50": 0.0004567, "ap75": 0.0}, "runs/x/checkpoints/best.pt")
    assert line.startswith("done: map 0.000123  ap50 0.0004567  ap75 0") and "best.pt" in line
    summary = StudySummary("s", REPO, "sqlite:///x", {"completed": 1}, "abc", 0.000123, 0, 1.0, metric="ap50")
    assert "best trial abc: ap50 0.000123" in summary.describe("runs")


def test_every_help_page_renders(capsys):
    """argparse formats help strings with %: a bare '95 % CI' in a subcommand's help crashed `mssd --help`."""
    from study.cli import build_parser

    for name, parser in _parsers(build_parser()):
        assert parser.format_help(), name
