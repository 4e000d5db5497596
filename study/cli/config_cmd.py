"""``mssd config show``: print the resolved config, with overrides applied and validated."""

from __future__ import annotations

from study.cli.common import add_config_arguments


def register(subparsers) -> None:
    config = subparsers.add_parser("config", help="inspect training configs")
    actions = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="print the resolved config as a table (or YAML)")
    add_config_arguments(show)
    show.add_argument("--yaml", action="store_true", help="print YAML that `mssd train` accepts")
    show.set_defaults(handler=_show)


def _show(args) -> int:
    """What the run uses: the detector family's ``losses.gt`` keys and the active method's blocks only."""
    from detectors.config import flatten_config, used_config_dict
    from study.config import config_to_yaml, load_config

    cfg = load_config(args.config, args.overrides)
    if args.yaml:
        print(config_to_yaml(cfg, used_only=True), end="")
        return 0
    flat = flatten_config(used_config_dict(cfg))
    width = max(map(len, flat))
    for key, value in flat.items():
        print(f"{key:<{width}}  {value}")
    return 0
