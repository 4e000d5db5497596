"""A switch's help never states a default value: `--no-asha` is off unless given, not "(default: True)"."""

import argparse

from study.cli import build_parser


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield name, child
                yield from ((f"{name} {n}", c) for n, c in _subparsers(child))


def test_no_switch_help_in_any_command_shows_a_default():
    offenders = []
    for name, parser in _subparsers(build_parser()):
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)) and action.help:
                line = next(ln for ln in text.splitlines() if action.option_strings[-1] in ln.split())
                if "(default: True)" in line or "(default: False)" in line:
                    offenders.append(f"{name} {action.option_strings[-1]}")
    assert not offenders, offenders


def test_tune_no_asha_help_says_what_it_does_without_a_default():
    (tune,) = [p for n, p in _subparsers(build_parser()) if n == "tune"]
    line = next(ln for ln in tune.format_help().splitlines() if ln.strip().startswith("--no-asha"))
    assert "default" not in line
