"""The ``mssd`` command line: a thin layer over the library.

Each command family lives in its own module exposing ``register(subparsers)``; handlers import their
heavy dependencies (torch, ray, mlflow) inside, so ``mssd --help`` stays instant. User errors
(``MSSDError``) print as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from detectors.errors import MSSDError

# Command modules, in the order their commands appear in --help.
_COMMAND_MODULES = ("config_cmd", "data_cmd", "train_cmd", "study_cmd", "confirm_cmd", "model_cmd", "ablate_cmd",
                    "compare_cmd", "reproduce_cmd")


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default (unless the text already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        # A switch (--verbose, --no-asha) takes no value: its default is the switch not given, and
        # store_false's True would read as if the switch were on by default.
        switch = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction))
        if (not action.option_strings or switch or "(default" in text
                or action.default in (None, False, [], argparse.SUPPRESS) or text == argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def _use_formatter(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _use_formatter(child)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mssd-study")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mssd",
        description="Hyperparameter studies of multi-scale self-distillation (MSSD) for object detection.",
    )
    parser.add_argument("--version", action="version", version=f"mssd {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(f"study.cli.{name}").register(subparsers)
    _use_formatter(parser)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Arguments, with Ultralytics' ``KEY.PATH=VALUE`` habit (``mssd train cfg.yaml train.epochs=3``)
    taken as ``--set KEY.PATH=VALUE`` by every command that has ``--set``."""
    args, extra = parser.parse_known_args(argv)
    assignments = [a for a in extra if "=" in a and not a.startswith("-")]
    stray = [a for a in extra if a not in assignments]
    if stray:
        hint = ("; config values are KEY.PATH=VALUE (or --set KEY.PATH=VALUE)"
                if hasattr(args, "overrides") and not all(a.startswith("-") for a in stray) else "")
        parser.error(f"unrecognized arguments: {' '.join(stray)}{hint}")
    if assignments:
        if not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(assignments)} (mssd {args.command} takes no config "
                         "overrides)")
        args.overrides = [*args.overrides, *assignments]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    try:
        result = args.handler(args)
    except MSSDError as exc:
        _release_study_ray()
        print(f"mssd: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        _release_study_ray()
        print("mssd: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def _release_study_ray() -> None:
    """Before a refusal is printed: end the Ray connection a study of this command made (``--confirm`` after a
    sweep, a refused ``--resume``), so that no trial worker's output, which Ray forwards to this stderr
    whenever it arrives, lands in or after the one line. Nothing to do (and no ray import) otherwise."""
    runtime = sys.modules.get("study.tune.ray_runtime")
    if runtime is not None:
        runtime.release_ray()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
