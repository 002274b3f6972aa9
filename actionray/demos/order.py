"""``actionray demo order``: the README's main job on the embedded defaults (local Ray, MLflow in ./mlflow.db,
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
from typing import Any

import numpy as np

from actionray.demos.claims import Arm, ClaimResult
from actionray.platform.config import ExperimentConfig
from actionray.platform.report import mean_std_text

DEMO_METHODS = ("tsn", "gcnet")
# --tiny: the smoke-test size (tests/test_demo.py): one epoch on 3 short videos per class
TINY = ["train.epochs=1", "data.synth.videos_per_class=3", "data.synth.frames=16", "data.synth.width=64",
        "data.synth.height=48", "data.num_segments=2", "data.input_size=32", "data.scale_size=36",
        "data.batch_size=4", "data.decode_tasks=1", "train.log_every=50"]


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
    from actionray.platform.data.ingest import TrainStreams, iter_model_batches
    from actionray.platform.data.pipeline import build_clip_dataset
    from actionray.platform.data.preview import preview
    from actionray.synthetic.videos import generate_from_config

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
    with TrainStreams() as streams:
        for batch in iter_model_batches(dataset, cfg, "train", epoch=0, streams=streams):
            clips += int(batch["label"].shape[0])
            shape = tuple(batch["video"].shape[1:])
    elapsed = time.perf_counter() - start
    print(f"[stream] one epoch through Ray Data: {clips} clips of {shape} (N, C, H, W) in {elapsed:.1f}s "
          f"= {clips / max(elapsed, 1e-9):.1f} clips/s with {data.decode_tasks} decode tasks")
    sheet, _ = preview(cfg, out / "preview.png", split="train", num_clips=4)
    print(f"[preview] what the model receives: {sheet}")
    del dataset
    assert ray.is_initialized()


CLAIM = ("GCNet (TDN's short- and long-term difference modules plus the GTM) separates classes that only "
         "temporal order tells apart, which TSN, averaging per-frame logits, cannot: higher top-1 on the "
         "temporal-order classes of the generated demo set")
DEFAULT_SEEDS = 1


def run(args: argparse.Namespace) -> "ClaimResult | None":
    """Data stage, then train + evaluate + compare the demo methods over seeds; the claimed arm is GCNet when
    it is among ``--methods`` (else the last method), against every other method."""
    from actionray.config import load_config

    config_dir = _config_dir(args.configs)
    methods = args.methods or list(DEMO_METHODS)
    out = Path(args.out or "runs/demo").resolve()
    out.mkdir(parents=True, exist_ok=True)
    overrides = [*(TINY if args.tiny else []), *args.overrides]
    configs = {m: load_config(config_dir / f"demo_{m}.yaml", overrides) for m in methods}
    prepare_data(next(iter(configs.values())), out)
    if args.data_only:
        return None
    seeds = list(range(args.seeds or DEFAULT_SEEDS))
    return train_and_compare(configs, out, seeds)


# --- the comparison table: train several configs, evaluate each, top-1 per class group ---------------------
# Groups come from the generated demo data: classes that only temporal order separates (moving left vs right,
# growing vs shrinking, appearing vs disappearing) against classes that appearance alone separates.


def class_names_of(cfg: ExperimentConfig) -> list[str]:
    """Class names from ``data.class_names`` or the generated data set's classInd.txt."""
    from actionray.platform.data.preview import load_class_names

    path = cfg.data.class_names
    if path is None and cfg.data.synth is not None:
        path = str(Path(cfg.data.synth.out_dir) / "classInd.txt")
    return load_class_names(path, cfg.data.num_classes)


def group_accuracy(fused: np.ndarray, labels: np.ndarray, groups: dict[str, list[int]]) -> dict[str, float]:
    """Top-1 over the videos whose true class is in each group; fused (V, C) scores, labels (V,)."""
    predictions = fused.argmax(axis=1)
    out = {}
    for name, members in groups.items():
        mask = np.isin(labels, members)
        out[name] = float((predictions[mask] == labels[mask]).mean()) if mask.any() else float("nan")
    out["all"] = float((predictions == labels).mean())
    return out


def train_and_evaluate(cfg: ExperimentConfig) -> dict[str, Any]:
    """fit() then a 1-clip centre-crop evaluation of the best checkpoint on the validation list."""
    from actionray.platform.evaluate import combine_views, evaluate, read_scores
    from actionray.platform.train import fit

    start = time.perf_counter()
    summary = fit(cfg)
    train_s = time.perf_counter() - start
    checkpoint = summary.get("best_checkpoint") or summary.get("latest_checkpoint")
    report = evaluate(cfg, checkpoint=checkpoint, clips=1, crops=1)
    index, _, labels, scores = read_scores(report["scores"])
    fused, video_labels, _ = combine_views(index, labels, scores, cfg.eval.combine)
    return {"summary": summary, "report": report, "fused": fused, "labels": video_labels, "train_s": train_s}


def format_table(rows: dict[str, dict[str, str]], columns: list[str]) -> str:
    """A Markdown table: one row per method, top-1 (%) per class group (already formatted cells)."""
    header = "| method | " + " | ".join(f"top-1 {c} (%)" for c in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for method, values in rows.items():
        lines.append(f"| {method} | " + " | ".join(values[c] for c in columns) + " |")
    return "\n".join(lines)


def train_and_compare(configs: dict[str, ExperimentConfig], out: Path, seeds: list[int]) -> ClaimResult:
    """Train and evaluate every config for every seed; save the temporal-vs-appearance table; decide the claim
    on the temporal-order classes (``claims.exceeds_by_larger_std``, GCNet against every other method)."""
    from actionray.synthetic.videos import appearance_classes, temporal_classes

    stamp = time.strftime("%Y%m%d-%H%M%S")
    columns = ["temporal-order classes", "appearance classes", "all"]
    per_seed: dict[str, dict[str, list[float]]] = {m: {c: [] for c in columns} for m in configs}
    arms = {m: Arm(m, "top-1 temporal-order classes") for m in configs}
    for seed in seeds:
        for method, base in configs.items():
            cfg = base.with_overrides([f"train.seed={seed}",
                                       f"train.run_name={base.train.run_name or base.name}-s{seed}-{stamp}"])
            names = class_names_of(cfg)
            groups = {"temporal-order classes": temporal_classes(names),
                      "appearance classes": appearance_classes(names)}
            print(f"[train] {method} seed {seed}: {cfg.method.name} {cfg.data.num_segments} segments, "
                  f"{cfg.train.epochs} epochs on {cfg.scaling.num_workers} Ray Train worker(s)", flush=True)
            result = train_and_evaluate(cfg)
            accuracy = group_accuracy(result["fused"], result["labels"], groups)
            for column in columns:
                per_seed[method][column].append(accuracy[column])
            arms[method].add(seed, accuracy["temporal-order classes"], appearance=accuracy["appearance classes"],
                             all=accuracy["all"], mlflow_run=result["summary"].get("mlflow_run_id"))
            print(f"[eval] {method}: top-1 {100 * result['report']['top1']:.1f}% on {len(result['labels'])} val "
                  f"videos (trained in {result['train_s']:.0f}s; MLflow run "
                  f"{result['summary'].get('mlflow_run_id')})", flush=True)
    rows = {m: {c: (mean_std_text(v) if len(seeds) > 1 else f"{100 * v[0]:.1f}") for c, v in cols.items()}
            for m, cols in per_seed.items()}
    table = format_table(rows, columns)
    (out / "comparison.md").write_text(table + "\n")
    print("\n" + table + "\n")
    print(f"[done] table saved to {out / 'comparison.md'}")
    winner = "gcnet" if "gcnet" in configs else list(configs)[-1]
    return ClaimResult.decide("order", CLAIM, list(arms.values()), winner,
                              settings={"methods": list(configs), "seeds": seeds, "split": "val",
                                        "view": "1 clip x centre crop"})
