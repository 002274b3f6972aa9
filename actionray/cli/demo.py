"""``actionray demo``: the README's main job on the embedded defaults (local Ray, MLflow in ./mlflow.db,
generated videos in ./demo_data).

1. generate the demo videos (once) and validate the lists (``data check``);
2. stream one epoch of clips through the Ray Data pipeline and render a preview of what the model receives;
3. train the TSN and GCNet demo configs on Ray Train, evaluate both (1 clip x centre crop), and print top-1 on
   the temporal-order classes against the appearance classes, plus the command that opens the MLflow UI.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DEMO_METHODS = ("tsn", "gcnet")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the main job on the embedded defaults (generated videos, local Ray, local MLflow)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=None,
                        help="folder holding demo_<method>.yaml (default: the repository's configs/)")
    parser.add_argument("--methods", nargs="+", default=list(DEMO_METHODS),
                        help="demo configs to train and compare (default: %(default)s)")
    parser.add_argument("--data-only", action="store_true", help="stop after the data stage (no training)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override applied to every demo config, e.g. train.epochs=2")
    parser.add_argument("--out", default="runs/demo", help="folder for the preview and the comparison table")
    parser.set_defaults(handler=run_demo)


def _config_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    for candidate in (Path.cwd() / "configs", Path(__file__).resolve().parents[2] / "configs"):
        if (candidate / "demo_tsn.yaml").is_file():
            return candidate
    raise SystemExit("error: demo configs not found; run from the repository root or pass --configs DIR")


def prepare_data(cfg, out: Path) -> None:
    """Generate (once), check, stream one epoch and preview the demo data of ``cfg``."""
    import ray

    from actionray.platform.data.check import check_list, format_report
    from actionray.platform.data.ingest import iter_model_batches
    from actionray.platform.data.pipeline import build_clip_dataset
    from actionray.platform.data.preview import preview
    from actionray.platform.data.synth import generate_from_config

    data = cfg.data
    if not Path(data.train_list).is_file():
        if data.synth is None:
            raise SystemExit(f"error: {data.train_list} does not exist and the config has no data.synth section")
        start = time.perf_counter()
        dataset = generate_from_config(data.synth)
        print(f"[data] generated {len(dataset.class_names)} classes into {dataset.root} "
              f"in {time.perf_counter() - start:.1f}s")
    else:
        print(f"[data] using existing lists {data.train_list}, {data.val_list}")
    for list_file in (data.train_list, data.val_list):
        report = check_list(list_file, root=data.root, num_classes=data.num_classes)
        print(f"[check] {report.summary()}")
        if not report.ok:
            print(format_report(report))
            raise SystemExit(f"error: {list_file} failed validation")

    from actionray.platform.raysession import ensure_ray

    ensure_ray(cfg)
    dataset = build_clip_dataset(cfg, "train", passes=1)
    start, clips, shape = time.perf_counter(), 0, None
    for batch in iter_model_batches(dataset, cfg, "train", epoch=0):
        clips += int(batch["label"].shape[0])
        shape = tuple(batch["video"].shape[1:])
    elapsed = time.perf_counter() - start
    print(f"[stream] one epoch through Ray Data: {clips} clips of {shape} (N, C, H, W) in {elapsed:.1f}s "
          f"= {clips / max(elapsed, 1e-9):.1f} clips/s with {data.decode_tasks} decode tasks")
    sheet, _ = preview(cfg, out / "preview.png", split="train", num_clips=4)
    print(f"[preview] what the model receives: {sheet}")
    del dataset
    assert ray.is_initialized()


def run_demo(args: argparse.Namespace) -> int:
    """Data stage, then train + evaluate + compare the demo methods."""
    from actionray.platform.config import load_config

    config_dir = _config_dir(args.configs)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    configs = {m: load_config(config_dir / f"demo_{m}.yaml", args.overrides) for m in args.methods}
    prepare_data(next(iter(configs.values())), out)
    if args.data_only:
        return 0
    from actionray.platform.compare import train_and_compare

    return train_and_compare(configs, out)
