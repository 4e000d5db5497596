"""``mssd model info``: parameters and GFLOPs of a config's detector and its training-only parts;
``mssd model list``: every detector of the zoo (family, size, parameters, the implementation it matches)."""

from __future__ import annotations

from study.cli.common import add_config_arguments


def register(subparsers) -> None:
    model = subparsers.add_parser("model", help="inspect detectors")
    actions = model.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = actions.add_parser(
        "info",
        help="print parameters and GFLOPs: inference model, then MSSD/MAD training-only parts",
    )
    add_config_arguments(info)
    info.add_argument(
        "--img",
        type=int,
        default=640,
        metavar="PIXELS",
        help="square input size for the GFLOPs count (default 640, as Ultralytics and the paper report)",
    )
    info.set_defaults(handler=_info)

    listing = actions.add_parser("list", help="every detector: family, size, parameters, upstream reference")
    listing.add_argument("--classes", type=int, default=None, metavar="N",
                         help="class count the parameters are counted at (default: the default data.classes, 3)")
    listing.set_defaults(handler=_list)


def _info(args) -> int:
    from detectors.distillation import build_distillation_for
    from detectors.errors import ConfigError
    from detectors.model_info import format_model_info, model_info
    from detectors.zoo import build_detector_for, family_of
    from study.config import load_config

    cfg = load_config(args.config, args.overrides)
    multiple = family_of(cfg.detector.name).recipe.stride_multiple
    if args.img < multiple or args.img % multiple:
        raise ConfigError(f"--img: expected a positive multiple of {multiple} (the largest stride of "
                          f"{cfg.detector.name}), got {args.img}")
    model = build_detector_for(cfg)
    # losses.method's training-only parts; a teacher method's teacher is built, not loaded (no file needed)
    distillation = build_distillation_for(cfg, model, load_teacher=False)
    info = model_info(
        model, name=cfg.detector.name, num_classes=cfg.num_classes, img_size=args.img, distillation=distillation
    )
    print(format_model_info(info))
    return 0


def _list(args) -> int:
    from detectors.config import DataConfig
    from detectors.errors import ConfigError
    from detectors.zoo import FAMILIES, REFERENCES, count_parameters

    classes = len(DataConfig().classes) if args.classes is None else args.classes
    if classes < 1:
        raise ConfigError(f"--classes: expected a class count >= 1, got {classes}")
    rows = [(family.name, size, f"{count_parameters(size, classes) / 1e6:.2f} M",
             REFERENCES.get(family.name, "") if i == 0 else "")
            for family in FAMILIES.values() for i, size in enumerate(family.sizes)]
    header = ("family", "detector", f"params ({classes} cl.)", "reference")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(3)]
    for row in [header, *rows]:
        print("  ".join(f"{v:<{w}}" if c != 2 else f"{v:>{w}}" for c, (v, w) in enumerate(zip(row, widths, strict=False)))
              + f"  {row[3]}".rstrip())
    print(f"\nparameters: sum(p.numel()) as built for {classes} classes (training-only parts excluded); "
          "`mssd model info CONFIG` adds GFLOPs and the MSSD/MAD parts")
    return 0
