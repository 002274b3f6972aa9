"""``actionray tune | ablate | report``: Ray Tune sweeps, ablation grids, and tables re-rendered from MLflow."""

from __future__ import annotations

import argparse
from pathlib import Path


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base config value for every trial (repeatable)")
    parser.add_argument("--max-concurrent", type=int, default=None, metavar="K",
                        help="trials at once (default: as many as the cluster's CPUs/GPUs fit)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted group of this name")
    parser.add_argument("--name", default=None, help="group name (default: <config name>-sweep-<space> / "
                                                     "<config name>-ablation-<preset>)")


def register(subparsers) -> None:
    """Add the tune, ablate and report commands."""
    p = subparsers.add_parser("tune", help="hyper-parameter sweep of a search space (Ray Tune + ASHA)")
    p.add_argument("config", nargs="?", default=None, help="experiment YAML (omit with --list-spaces)")
    p.add_argument("--space", help="built-in space name, a name in configs/spaces/, or a YAML file")
    p.add_argument("--list-spaces", action="store_true", help="list the named search spaces and exit")
    p.add_argument("--num-samples", type=int, default=4, metavar="N", help="samples (x grid points; default 4)")
    p.add_argument("--scheduler", choices=["asha", "none"], default="asha",
                   help="asha: stop weak trials early on the validation metric (time_attr epoch)")
    _add_common(p)
    p.set_defaults(handler=_tune)

    p = subparsers.add_parser("ablate", help="full grid x seeds, summarised as the papers' ablation table")
    p.add_argument("config", help="experiment YAML")
    p.add_argument("--grid", nargs="+", default=None, metavar="KEY=V1,V2",
                   help="axes, e.g. method.gtm=false,true method.ccl.enabled=false,true (default: the preset's)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per cell (default: preset's, else 1)")
    p.add_argument("--preset", default=None, help="a shipped preset name (actionray/ablation_presets) or a path (e.g. gcnet_ablation)")
    _add_common(p)
    p.set_defaults(handler=_ablate)

    p = subparsers.add_parser("report", help="re-render a finished sweep or ablation from its MLflow child runs")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--sweep", metavar="RUN_ID_OR_NAME")
    group.add_argument("--ablation", metavar="RUN_ID_OR_NAME")
    p.add_argument("--html", metavar="FILE", help="write an HTML page instead of printing Markdown")
    p.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: tracking.experiment)")
    p.set_defaults(handler=_report)


def _list_spaces() -> int:
    from actionray.search_spaces import list_spaces

    for space in list_spaces():
        print(f"{space.name}: {space.description}\n  file: {space.source}")
        for key, domain in space.domains.items():
            print(f"  {key}: {domain.describe()}")
    return 0


def _tune(args) -> int:
    from actionray.config import ConfigError, load_config
    from actionray.search_spaces import load_space

    if args.list_spaces:
        return _list_spaces()
    if not args.config or not args.space:
        raise ConfigError("actionray tune needs CONFIG and --space NAME (see --list-spaces)")
    cfg = load_config(args.config, args.overrides)
    space = load_space(args.space)
    from actionray.platform.tune import run_sweep

    summary = run_sweep(cfg, space, config_path=args.config, overrides=args.overrides, num_samples=args.num_samples,
                        scheduler=args.scheduler, max_concurrent=args.max_concurrent, resume=args.resume,
                        name=args.name)
    return 0 if summary["best"] else 1


def _ablate(args) -> int:
    from actionray.platform.ablation import build_axes, check_requires, load_preset, parse_grid_item, run_ablation
    from actionray.config import ConfigError, load_config

    preset = load_preset(args.preset) if args.preset else None
    overrides = list(preset.overrides if preset else []) + args.overrides
    cfg = load_config(args.config, overrides)
    if preset:
        check_requires(cfg, preset)
    grid = dict(parse_grid_item(item) for item in args.grid) if args.grid else dict(preset.grid if preset else {})
    if not grid:
        raise ConfigError("actionray ablate needs --grid KEY=V1,V2 ... or a --preset with a grid")
    seeds = args.seeds or (preset.seeds if preset else 1)
    summary = run_ablation(cfg, build_axes(grid, preset, catalog=cfg.catalog), seeds=seeds, preset=preset, name=args.name,
                           max_concurrent=args.max_concurrent, resume=args.resume)
    return 1 if summary["errors"] else 0


def _report(args) -> int:
    import os

    from actionray.config import load_config
    from actionray.platform.report import report

    defaults = load_config(None).tracking
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or defaults.uri
    kind, target = ("sweep", args.sweep) if args.sweep else ("ablation", args.ablation)
    text = report(kind, target, tracking_uri=uri, experiment=args.experiment or defaults.experiment,
                  fmt="html" if args.html else "markdown")
    if args.html:
        Path(args.html).write_text(text)
        print(f"wrote {args.html}")
    else:
        print(text)
    return 0
