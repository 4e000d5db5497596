"""``mssd model info``: parameters and GFLOPs of a config's detector and its training-only parts."""

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
