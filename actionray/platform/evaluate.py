"""Evaluation: the method's test protocol run by the platform, batch inference, and score fusion utilities.

``evaluate(cfg, checkpoint=...)`` calls the method's ``test`` (its own protocol: views and fusion for a clip
classifier, proposals and detection mAP for a localization method) and tracks what it returns as an MLflow run
nested under the training run it scores. ``batch_inference`` is what a protocol uses to run the model over a Ray
dataset: a pool of model actors (``map_batches`` with a callable class, one actor per GPU, or per CPU worker slot
on a CPU machine) applies the method's ``score_batch`` to each batch of rows.

Score fusion for classifiers (a library, used by the clip classifiers' protocol and by ``aggregate``): per-video
per-view scores in a Parquet file; views fused by the reference rule: mean of softmax probabilities (TDN/GCNet
pkl_to_results.py), or the maximum of softmax probabilities (TCPNet test_models.py); then top-1/top-5/mean class
accuracy. ``aggregate``: the same fusion over several score files (e.g. 10 clip files x 3 crop files, or an
8+16-frame ensemble), the pkl_to_results workflow.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from actionray.platform.config import ConfigError, ExperimentConfig, default_tracking_uri
from actionray.platform.metrics import mean_class_accuracy, top_k_accuracy

SCORE_COLUMNS = ("index", "view", "label", "scores")


def parse_views(text: str) -> tuple[int, int]:
    """``"10x3"`` -> (clips, crops); crops must be 1 or 3."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise ConfigError(f"--views {text!r}: expected CLIPSxCROPS, e.g. 1x1 or 10x3")
    clips, crops = int(match.group(1)), int(match.group(2))
    if clips < 1 or crops not in (1, 3):
        raise ConfigError(f"--views {text!r}: clips must be >= 1 and crops 1 or 3")
    return clips, crops


def load_weights(model, cfg: ExperimentConfig, checkpoint: str | None, reference_layout: str | None) -> str:
    """Load our checkpoint (folder or state.pt) or a published reference checkpoint; returns what was loaded."""
    from actionray.models import load_reference_checkpoint
    from actionray.platform.checkpoint import load_model_weights

    if checkpoint is None:
        reference = getattr(cfg.method, "reference_checkpoint", None)
        if reference is None:
            raise ConfigError(f"eval: give --checkpoint PATH (a checkpoint folder of a training run, or its state.pt"
                              f"{_suggest_checkpoint(cfg)}), or set method.reference_checkpoint")
        load_reference_checkpoint(model, reference, reference_layout or "auto")
        return reference
    if reference_layout is not None:
        load_reference_checkpoint(model, checkpoint, reference_layout)
        return checkpoint
    load_model_weights(model, checkpoint)
    return checkpoint


def _suggest_checkpoint(cfg: ExperimentConfig) -> str:
    """", e.g. <newest complete checkpoint of this config's latest run>" when there is one on local storage."""
    from actionray.platform.checkpoint import newest_complete_checkpoint

    root = Path(cfg.train.storage_path)
    if "://" in cfg.train.storage_path or not root.is_dir():
        return ""
    for run_dir in sorted((p for p in root.glob(f"{cfg.name}-*") if p.is_dir()), reverse=True):
        found = newest_complete_checkpoint(run_dir)
        if found:
            return f", e.g. {found[0]}"
    return ""


def check_weights(cfg: ExperimentConfig, checkpoint: str | None, reference_layout: str | None) -> None:
    """Load the weights once in the driver, before Ray starts: a checkpoint that does not fit fails here with
    one message naming the file, instead of inside every scoring actor."""
    load_weights(cfg.recipe.build_model(cfg), cfg, checkpoint, reference_layout)


class ModelScorer:
    """Ray Data actor: builds the method's model once, loads the weights, then maps batches of rows through the
    method's ``score_batch(model, batch, device)``."""

    def __init__(self, cfg: ExperimentConfig, checkpoint: str | None, reference_layout: str | None,
                 use_gpu: bool) -> None:
        import torch

        self.cfg = cfg
        self.method = cfg.recipe
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        model = self.method.build_model(cfg)
        load_weights(model, cfg, checkpoint, reference_layout)
        self.model = model.to(self.device).eval()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            return self.method.score_batch(self.model, batch, self.device)


def batch_inference(cfg: ExperimentConfig, dataset, *, checkpoint: str | None, reference_layout: str | None,
                    batch_size: int | None = None) -> dict[str, np.ndarray]:
    """Every row of ``dataset`` through the method's ``score_batch`` in a pool of model actors; the output
    columns gathered on the driver, each stacked into one array. The dataset's pipeline monitor, if it has one,
    ends with the pass (``data/monitor.py``)."""
    import ray

    from actionray.platform.data.monitor import release_monitors

    scored = dataset.map_batches(
        ModelScorer, batch_size=batch_size or cfg.eval.batch_size,
        fn_constructor_kwargs={"cfg": cfg, "checkpoint": checkpoint, "reference_layout": reference_layout,
                               "use_gpu": cfg.scaling.use_gpu},
        compute=ray.data.ActorPoolStrategy(size=_actor_pool_size(cfg)),
        num_gpus=1 if cfg.scaling.use_gpu else 0, num_cpus=1)
    columns: dict[str, list] = {}
    try:
        for batch in scored.iter_batches(batch_size=256, batch_format="numpy"):
            for key, values in batch.items():
                columns.setdefault(key, []).extend(values)
    finally:
        release_monitors([dataset])
    if not columns:
        raise RuntimeError(f"batch inference produced no rows (test data of {cfg.name} is empty?)")
    return {key: np.stack(values) for key, values in columns.items()}


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) scores."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def combine_views(index: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                  combine: str = "mean_prob") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-view scores (V, C) -> per-video fused probabilities (N, C), labels (N,), video indices (N,);
    ``mean_logit`` averages the raw scores instead (VideoMoCo repo, eval.py)."""
    if combine not in ("mean_prob", "max", "mean_logit"):
        raise ValueError(f"combine must be mean_prob, max or mean_logit, got {combine!r}")
    scores = np.asarray(scores, dtype=np.float64)
    probs = scores if combine == "mean_logit" else softmax(scores)
    videos, inverse = np.unique(index, return_inverse=True)
    fused = np.zeros((len(videos), probs.shape[1]))
    if combine in ("mean_prob", "mean_logit"):
        np.add.at(fused, inverse, probs)
        fused /= np.bincount(inverse)[:, None]
    else:
        fused[:] = -np.inf
        np.maximum.at(fused, inverse, probs)
    video_labels = np.zeros(len(videos), dtype=np.int64)
    video_labels[inverse] = labels
    if np.any(video_labels[inverse] != labels):
        raise ValueError("views of the same video carry different labels: score files from different lists?")
    return fused, video_labels, videos


def accuracy_report(fused: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """top-1, top-5 and mean class accuracy (fractions) of fused video scores."""
    top1, top5 = top_k_accuracy(fused, labels, (1, 5))
    hits = fused.argmax(axis=1) == labels
    per_class = {int(c): float(hits[labels == c].mean()) for c in np.unique(labels)}
    return {"top1": top1, "top5": top5, "mean_class_acc": mean_class_accuracy(fused, labels),
            "videos": int(len(labels)), "per_class_acc": per_class}


def write_scores(path: str | Path, index, view, labels, scores) -> Path:
    """Parquet: one row per (video, view) with the raw score vector."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"index": np.asarray(index, dtype=np.int64), "view": np.asarray(view, dtype=np.int64),
                      "label": np.asarray(labels, dtype=np.int64),
                      "scores": pa.array(list(np.asarray(scores, dtype=np.float32)), type=pa.list_(pa.float32()))})
    pq.write_table(table, path)
    return path


def read_scores(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(index, view, label, scores (V, C)) from a file written by :func:`write_scores`."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    missing = [c for c in SCORE_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: not a score file (missing columns {missing})")
    columns = table.to_pydict()
    return (np.asarray(columns["index"]), np.asarray(columns["view"]), np.asarray(columns["label"]),
            np.asarray(columns["scores"], dtype=np.float64))


def _actor_pool_size(cfg: ExperimentConfig) -> int:
    import ray

    if cfg.scaling.use_gpu:
        return max(1, int(ray.cluster_resources().get("GPU", 1)))
    return max(1, cfg.scaling.num_workers)


def evaluate(cfg: ExperimentConfig, *, checkpoint: str | None = None, reference_layout: str | None = None,
             clips: int | None = None, crops: int | None = None, output: str | None = None,
             log_to_mlflow: bool = True, parent_run_id: str | None = None) -> dict[str, Any]:
    """Run the method's test protocol on ``cfg`` with a checkpoint; returns its report (metrics and what the
    protocol adds, e.g. the score or predictions file) and logs it to MLflow."""
    from actionray.platform.raysession import ensure_ray

    overrides = {"eval.clips": clips or cfg.eval.clips, "eval.crops": crops or cfg.eval.crops}
    cfg = cfg.with_overrides(overrides)
    if checkpoint is not None and not Path(checkpoint).exists():
        raise ConfigError(f"--checkpoint {checkpoint}: no such file or folder")
    if checkpoint is not None:
        from actionray.platform.checkpoint import resolve_checkpoint

        checkpoint = str(resolve_checkpoint(checkpoint))  # a run folder: its best checkpoint
    check_weights(cfg, checkpoint, reference_layout)
    ensure_ray(cfg)
    evaluation = cfg.recipe.test(cfg, checkpoint=checkpoint, reference_layout=reference_layout, output=output)
    report = {**evaluation.artifacts.get("report", {}), **evaluation.metrics,
              "checkpoint": checkpoint or getattr(cfg.method, "reference_checkpoint", None)}
    report.update({k.removeprefix("test_"): v for k, v in evaluation.metrics.items()})
    if cfg.reference is not None:
        report["reference"] = compare_with_reference(cfg, evaluation.metrics)
    if log_to_mlflow and cfg.tracking.enabled:
        views = report.get("views")
        test_list = Path(cfg.data.test_list or cfg.data.val_list).stem  # the list and views tell evals apart
        name = f"eval {test_list}" + (f" {views}" if views else "") + f" · {cfg.name}"
        _log_eval(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location, name, report,
                  [Path(f) for f in evaluation.artifacts.get("files", [])], cfg, evaluation.metrics, parent_run_id)
    return report


def compare_with_reference(cfg: ExperimentConfig, metrics: dict[str, Any]) -> dict[str, Any]:
    """Ours against the config's ``reference`` block: {metric, ours, reference, difference (ours - reference),
    source, setting}; a ``val_`` reference metric is compared with its ``test_`` twin, the number eval measures.
    ``ours``/``difference`` are None when the protocol did not report the metric."""
    ref = cfg.reference
    key = ref.metric if ref.metric in metrics else "test_" + ref.metric.removeprefix("val_")
    ours = metrics.get(key)
    ours = float(ours) if isinstance(ours, (int, float)) else None
    return {"metric": key, "ours": ours, "reference": ref.value,
            "difference": None if ours is None else ours - ref.value, "source": ref.source, "setting": ref.setting}


def reference_line(comparison: dict[str, Any]) -> str:
    """One line for the console: ``test_top1: ours 85.12 %, reference 83.03 % (source), difference +2.09 points``
    (fractions shown as percent when they are fractions)."""
    def show(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f} %" if 0.0 <= value <= 1.0 else f"{value:.4g}"

    c = comparison
    diff = ("n/a" if c["difference"] is None else f"{100 * c['difference']:+.2f} points"
            if 0.0 <= c["reference"] <= 1.0 else f"{c['difference']:+.4g}")
    return (f"{c['metric']}: ours {show(c['ours'])}, reference {show(c['reference'])} ({c['source']}; "
            f"{c['setting']}), difference {diff}")


def aggregate(paths: Sequence[str], *, combine: str = "mean_prob", tracking_uri: str | None = None,
              tracking: bool = True, experiment: str = "actionray") -> dict[str, Any]:
    """Fuse several score files (views of the same test list) and report accuracy (pkl_to_results)."""
    if not paths:
        raise ValueError("aggregate: no score files given")
    parts = [read_scores(p) for p in paths]
    widths = {p[3].shape[1] for p in parts}
    if len(widths) != 1:
        raise ValueError(f"score files disagree on the number of classes: {sorted(widths)}")
    index = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[2] for p in parts])
    scores = np.concatenate([p[3] for p in parts])
    fused, video_labels, _ = combine_views(index, labels, scores, combine)
    report = accuracy_report(fused, video_labels)
    report.update({"files": [str(p) for p in paths], "combine": combine, "views_total": int(len(index))})
    if tracking:
        uri = tracking_uri or default_tracking_uri()
        metrics = {f"test_{k}": report[k] for k in ("top1", "top5", "mean_class_acc")}
        _log_eval(uri, experiment, str(Path.cwd().resolve() / "mlartifacts"), "aggregate", report, [], None, metrics)
    return report


def _log_eval(uri: str, experiment: str, artifact_location: str | None, run_name: str, report: dict[str, Any],
              artifacts: list[Path], cfg: ExperimentConfig | None, metrics: dict[str, float],
              parent_run_id: str | None = None) -> None:
    """One MLflow run per evaluation (nested under ``parent_run_id`` when given): the metrics, params
    views/combine/checkpoint, the score or predictions file."""
    from actionray.platform.tracking import configure_http_env, create_run

    configure_http_env()
    tags = {"kind": "eval"} | ({"method": cfg.method.name, "config": cfg.name} if cfg else {})
    tracker = create_run(uri, experiment, artifact_location, run_name, tags, parent_run_id)
    if not tracker.active:
        return
    run_id = tracker.run_id
    tracker.log_params({k: v for k, v in report.items() if k in ("views", "combine", "checkpoint", "files")})
    if cfg is not None and cfg.reference is not None:
        from actionray.platform.tracking import reference_tags

        tracker.log_params(reference_tags(cfg))
        tracker.set_tags(reference_tags(cfg))
        difference = report.get("reference", {}).get("difference")
        if difference is not None:
            metrics = {**metrics, "reference_difference": difference}
    tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=0)
    for path in artifacts:
        tracker.log_artifact(path, "scores")
    tracker.end("FINISHED")
    report["mlflow_run_id"] = run_id
