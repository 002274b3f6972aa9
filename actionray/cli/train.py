"""``actionray train | eval | aggregate | ui``: training runs, multi-view tests, score fusion, the MLflow UI."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def _add_config(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("config", nargs=None if required else "?", default=None,
                        help="experiment YAML (configs/*.yaml)" + ("" if required else
                                                                    "; omitted = the embedded demo defaults"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=0.01 (repeatable)")
    parser.add_argument("--progress", action="store_true",
                        help="show Ray Data's progress bars (off by default: one line per epoch)")


def register(subparsers) -> None:
    """Add the train, eval, aggregate and ui commands."""
    p = subparsers.add_parser("train", help="train a model on Ray Train (local or RAY_ADDRESS cluster)")
    _add_config(p, required=False)
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                   help="continue a run after its newest complete checkpoint: the latest run of this config (or "
                        "train.run_name), or the run folder RUN_DIR")
    p.add_argument("--json", action="store_true",
                   help="print the run's result as JSON on stdout (always written to <run folder>/result.json)")
    p.set_defaults(handler=_train)

    p = subparsers.add_parser("eval", help="multi-view test of a checkpoint as Ray Data batch inference")
    _add_config(p, required=True)
    p.add_argument("--checkpoint", help="our checkpoint folder/state.pt; default: method.reference_checkpoint")
    p.add_argument("--reference-layout", default=None,
                   help="load --checkpoint as a published reference checkpoint with this key layout (e.g. auto)")
    p.add_argument("--views", default=None, metavar="CLIPSxCROPS", help="e.g. 1x1 or 10x3 (default: eval.*)")
    p.add_argument("--output", default=None, help="Parquet file for per-video per-view scores")
    p.set_defaults(handler=_eval)

    p = subparsers.add_parser("aggregate", help="combine several score files and report accuracy")
    p.add_argument("scores", nargs="+", help="Parquet score files written by `actionray eval`")
    p.add_argument("--combine", choices=["mean_prob", "max"], default="mean_prob")
    p.add_argument("--tracking-uri", default=None, help="MLflow URI to log the result to (default: embedded)")
    p.add_argument("--no-tracking", action="store_true")
    p.set_defaults(handler=_aggregate)

    p = subparsers.add_parser("ui", help="serve the MLflow UI on the embedded tracking store")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--backend-store-uri", default=None, help="default: sqlite:///<cwd>/mlflow.db")
    p.set_defaults(handler=_ui)


def _load(args):
    from actionray.config import load_config
    from actionray.platform.raysession import show_ray_progress

    if getattr(args, "progress", False):
        show_ray_progress()
    return load_config(args.config, args.overrides)


def _train(args) -> int:
    from actionray.platform.train import TrainInterrupted, fit
    from actionray.synthetic.videos import prepare_data

    if isinstance(args.resume, str) and args.config is None and Path(args.resume).is_file():
        args.config, args.resume = args.resume, True  # `train --resume CONFIG`: the flag, then the config
    cfg = _load(args)
    prepare_data(cfg)  # the demo configs (and the embedded defaults) generate their videos on first use
    prepare_inputs = getattr(cfg.recipe, "prepare_inputs", None)
    if prepare_inputs is not None:
        prepare_inputs(cfg)  # e.g. the feature demo configs (method.synth_features) generate their feature set
    try:
        summary = fit(cfg, resume=args.resume)
    except TrainInterrupted as stop:
        return _interrupted(stop, args)
    final = summary.get("final", {})
    keys = ("run_name", "run_path", "best_checkpoint", "mlflow_run_id", "val_per_class_acc")
    result = {k: summary.get(k) for k in keys} | {
        "best": summary.get("best"), "final": {k: v for k, v in final.items() if isinstance(v, (int, float))}}
    run_path = summary.get("run_path")
    if run_path and "://" not in str(run_path) and Path(run_path).is_dir():
        (Path(run_path) / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(summary_lines(cfg, result, args.config)), flush=True)
    return 0


def _shown(cfg, metric: str, value) -> str:
    """``value`` of ``metric`` as the progress line shows it (percent for the method's percent metrics)."""
    if not isinstance(value, (int, float)):
        return "n/a"
    return f"{100 * value:.1f}%" if metric in cfg.recipe.metrics(cfg).percent else f"{value:.4g}"


def summary_lines(cfg, result: dict, config: str | None) -> list[str]:
    """What a person reads when a run ends: the best metric and its epoch, the run folder (result.json, how to
    test it), the MLflow run and how to look at it."""
    from actionray.platform.tracking import default_tracking_uri

    best, final = result.get("best") or {}, result.get("final") or {}
    metric = best.get("metric") or cfg.checkpoint_metric[0]
    done = final.get("epoch", "?")
    head = (f"[actionray] done: best {metric} {_shown(cfg, metric, best.get('value'))} at epoch {best.get('epoch')}"
            if best.get("value") is not None else f"[actionray] done: no epoch reported {metric}")
    lines = [f"{head} ({done} of {cfg.train.epochs} epochs; last {metric} {_shown(cfg, metric, final.get(metric))})"]
    run_path = result.get("run_path")
    if run_path:
        test = f"actionray eval {shlex.quote(config) if config else 'CONFIG'} --checkpoint {shlex.quote(run_path)}"
        lines.append(f"[actionray] run folder: {run_path} (result.json; its best checkpoint is tested by: {test})")
    if result.get("mlflow_run_id"):
        uri = cfg.tracking.uri
        if uri.startswith(("http://", "https://")):
            ui = f"open {uri}"
        elif uri == default_tracking_uri():
            ui = "actionray ui"
        else:
            ui = f"actionray ui --backend-store-uri {shlex.quote(uri)}"
        lines.append(f"[actionray] MLflow run {result['mlflow_run_id']}: see it with  {ui}")
    return lines


def _interrupted(stop, args) -> int:
    """One line after Ctrl+C / SIGTERM: the last saved epoch and the exact command that continues the run."""
    import ray

    ray.shutdown()  # stop the workers first, so no checkpoint upload is under way while the folders are read
    epoch = stop.saved_epoch()
    if epoch == 0:
        print(f"interrupted ({stop.signal_name}) before epoch 1 was saved: nothing to resume; run the same command "
              f"again to start over", file=sys.stderr, flush=True)
        return 130
    command = ["actionray", "train", *([args.config] if args.config else []),
               *(arg for value in args.overrides for arg in ("--set", value)), "--resume", str(stop.run_dir)]
    print(f"interrupted ({stop.signal_name}) after epoch {epoch} of {stop.epochs} (saved in {stop.run_dir}); "
          f"resume with: {shlex.join(command)}", file=sys.stderr, flush=True)
    return 130


def _eval(args) -> int:
    from actionray.platform.evaluate import evaluate, parse_views

    cfg = _load(args)
    if args.checkpoint is not None and Path(args.checkpoint).exists():
        from actionray.platform.checkpoint import resolve_checkpoint

        args.checkpoint = str(resolve_checkpoint(args.checkpoint))  # a run folder: its best checkpoint
    clips, crops = parse_views(args.views) if args.views else (cfg.eval.clips, cfg.eval.crops)
    report = evaluate(cfg, checkpoint=args.checkpoint, reference_layout=args.reference_layout, clips=clips,
                      crops=crops, output=args.output, parent_run_id=_training_run_id(args.checkpoint))
    print(json.dumps(report, indent=2))
    if "reference" in report:
        from actionray.platform.evaluate import reference_line

        print(reference_line(report["reference"]), file=sys.stderr, flush=True)
    return 0


def _training_run_id(checkpoint: str | None) -> str | None:
    """The MLflow run of the training run a checkpoint comes from (its run folder's run info), or None."""
    from actionray.platform.train import RUN_INFO

    if checkpoint is None:
        return None
    path = Path(checkpoint).resolve()
    folder = path.parent if path.is_file() else path
    info = folder.parent / RUN_INFO
    try:
        return json.loads(info.read_text()).get("mlflow_run_id") if info.is_file() else None
    except (OSError, ValueError):
        return None


def _aggregate(args) -> int:
    from actionray.platform.evaluate import aggregate

    report = aggregate(args.scores, combine=args.combine, tracking_uri=args.tracking_uri,
                       tracking=not args.no_tracking)
    print(json.dumps(report, indent=2))
    return 0


def _ui(args) -> int:
    import os
    import subprocess
    from pathlib import Path

    from actionray.platform.tracking import default_tracking_uri

    uri = args.backend_store_uri or default_tracking_uri()
    if "://" in uri and uri.split("://", 1)[0] in ("http", "https"):
        print(f"error: the tracking URI {uri} (MLFLOW_TRACKING_URI) is a server, not a store: open it in a browser, "
              f"or pass --backend-store-uri", file=sys.stderr)
        return 2
    busy = _port_in_use(args.host, args.port)
    if busy:
        print(f"error: cannot serve the MLflow UI on {args.host}:{args.port}: {busy}; "
              f"choose another port with --port", file=sys.stderr)
        return 2
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--artifacts-destination",
               str(Path.cwd().resolve() / "mlartifacts"), "--host", args.host, "--port", str(args.port),
               "--workers", "1"]
    base = f"http://{args.host}:{args.port}"
    print(f"MLflow UI on {base} (store {uri}); Ctrl-C stops it", flush=True)
    print(_runs_page_hint(uri, base), flush=True)
    return subprocess.call(command, env=os.environ.copy())


def _runs_page_hint(uri: str, base: str, experiment: str = "actionray") -> str:
    """Where the runs are and which columns compare them (MLflow's runs table shows none of them by default)."""
    from mlflow.tracking import MlflowClient

    try:
        found = MlflowClient(uri).get_experiment_by_name(experiment)
    except Exception:  # noqa: BLE001 -- an empty or new store: the hint is still useful without the id
        found = None
    # MLflow 3 opens an experiment in its GenAI (traces) view unless the URL asks for the training-runs table
    # (seen in a browser, docs/training.md "What the MLflow UI shows").
    page = (f"{base}/#/experiments/{found.experiment_id}/runs?workflowType=machine_learning" if found else
            f"{base} (no '{experiment}' runs yet)")
    return (f"runs of experiment '{experiment}': {page}\n"
            "compare them: in the runs table open 'Columns' and tick the metrics val_top1 (or the method's primary "
            "metric: val_map_avg, val_loss; fractions, not percent), test_top1 (evaluation runs), train_loss, the "
            "parameter optim.lr and the tag method; untick Dataset, Source and Models to make room; evaluation runs "
            "sit under the training run they score, sweeps and ablations are parent runs: expand them ([+]) to see "
            "their trials")


def _port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound (e.g. "address already in use"), or None when it is free.

    MLflow's server logs a bind failure and still exits 0, so the UI command checks the port first.
    """
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT leftover is no conflict
            probe.bind(address)
    except OSError as error:
        return (error.strerror or str(error)).lower()
    return None
