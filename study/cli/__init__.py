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
_COMMAND_MODULES = ("config_cmd", "data_cmd", "train_cmd", "study_cmd", "model_cmd", "ablate_cmd",
                    "reproduce_cmd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mssd",
        description="Hyperparameter studies of multi-scale self-distillation (MSSD) for object detection.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(f"study.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except MSSDError as exc:
        print(f"mssd: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("mssd: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
