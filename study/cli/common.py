"""Arguments shared by several commands."""

from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """CONFIG plus repeatable ``--set KEY.PATH=VALUE`` overrides, for every command that takes a config."""
    parser.add_argument("config", metavar="CONFIG", help="training config YAML (see configs/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one config value, e.g. --set train.epochs=3 (repeatable; a bare train.epochs=3 after "
             "CONFIG works too)",
    )
