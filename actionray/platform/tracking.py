"""MLflow tracking: one run per training run, logged by rank 0 only, never fatal.

The driver creates the experiment (once: concurrent creation races, platform_apis 4.2) and the run, and passes
the run id to the workers; rank 0 logs into it through ``MlflowClient``. Any tracking error (server down,
database locked) prints one warning and switches that tracker off: training goes on, and what would have been
logged after the failure (metrics, artifacts, the final status) is lost for this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from actionray.platform.config import ExperimentConfig

# Fail fast on an unreachable server instead of MLflow's default 7 retries with back-off (minutes).
HTTP_ENV_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                     "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def configure_http_env() -> dict[str, str]:
    """Set short MLflow HTTP retry/timeout defaults (user values win); returns the values in effect."""
    for key, value in HTTP_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in HTTP_ENV_DEFAULTS}


class Tracker:
    """Logs into one MLflow run; after the first failure it warns once and ignores every later call."""

    def __init__(self, uri: str | None, run_id: str | None) -> None:
        self.uri, self.run_id = uri, run_id
        self.active = bool(uri and run_id)
        self._client = None

    @property
    def client(self):
        if self._client is None:
            configure_http_env()
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _call(self, what: str, fn, *args, **kwargs) -> Any:
        if not self.active:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 -- tracking must never end a training run
            self.active = False
            print(f"[actionray] WARNING: MLflow {what} failed at {self.uri} ({type(error).__name__}: "
                  f"{str(error).splitlines()[0][:200]}); tracking is off for the rest of this run, "
                  f"training continues.", file=sys.stderr, flush=True)
            return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Numeric metrics at ``step`` (non-numeric values are skipped)."""
        from mlflow.entities import Metric
        import time

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if items:
            self._call("log_metrics", self.client.log_batch, self.run_id, metrics=items)

    def log_params(self, params: dict[str, Any]) -> None:
        """Params as strings, in batches of 100 (MLflow's per-call limit)."""
        from mlflow.entities import Param

        items = [Param(k, _param_text(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self._call("log_params", self.client.log_batch, self.run_id, params=items[start:start + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Run tags (values as strings)."""
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        if items:
            self._call("set_tags", self.client.log_batch, self.run_id, tags=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a local file into the run's artifacts."""
        self._call("log_artifact", self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        """A small text/JSON/YAML artifact."""
        self._call("log_text", self.client.log_text, self.run_id, text, artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        """A matplotlib figure as a PNG artifact."""
        self._call("log_figure", self.client.log_figure, self.run_id, figure, artifact_file)

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED / FAILED / KILLED."""
        self._call("set_terminated", self.client.set_terminated, self.run_id, status)


def _param_text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:6000]  # MLflow's param value limit


def run_tags(cfg: ExperimentConfig, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Provenance tags: code revision, library versions, trainable, config name, plus ``extra``."""
    import mlflow
    import ray
    import torch

    import actionray

    tags = {"actionray.version": actionray.__version__, "torch.version": torch.__version__,
            "ray.version": ray.__version__, "mlflow.version": mlflow.__version__,
            "trainable": cfg.trainable, "config": cfg.name}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    tags.update({k: str(v) for k, v in (extra or {}).items()})
    return tags


def git_commit() -> str | None:
    """HEAD of the repository holding this package, or None (e.g. inside a Ray job's unpacked working dir)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def start_run(cfg: ExperimentConfig, run_name: str, *, parent_run_id: str | None = None,
              tags: dict[str, Any] | None = None, run_id: str | None = None) -> Tracker:
    """Driver side: create (or reuse ``run_id``) the MLflow run for a training run and log config + tags.

    Returns an inactive tracker when tracking is disabled or the backend is unreachable (warned once).
    """
    if not cfg.tracking.enabled:
        return Tracker(None, None)
    tracker = Tracker(cfg.tracking.uri, "pending")

    def create() -> str:
        client = tracker.client
        experiment = client.get_experiment_by_name(cfg.tracking.experiment)
        if experiment is None:
            location = cfg.tracking.artifact_location
            if location and "://" not in location:
                location = Path(location).resolve().as_uri()
            experiment_id = client.create_experiment(cfg.tracking.experiment, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        all_tags = run_tags(cfg, tags)
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
        return run.info.run_id

    if run_id is not None:
        tracker.run_id = run_id
        tracker._call("reopen run", tracker.client.update_run, run_id, "RUNNING")
        return tracker
    new_id = tracker._call("create run", create)
    if new_id is None:
        return Tracker(None, None)
    tracker.run_id = new_id
    from actionray.platform.config import dumps

    tracker.log_params(cfg.flat())
    tracker.log_text(dumps(cfg), "config/resolved.yaml")
    return tracker


def confusion_figure(matrix, class_names: list[str] | None = None):
    """A matplotlib figure of a (C, C) confusion matrix (rows = truth, columns = prediction)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.35 * len(matrix))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if class_names and len(class_names) <= 40:
        ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def curves_figure(history: list[dict[str, float]]):
    """Training curves (loss, top-1) per epoch from the loop's per-epoch metric dicts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("train_loss", ax_loss), ("val_loss", ax_loss), ("train_top1", ax_acc), ("val_top1", ax_acc)):
        points = [(h["epoch"], h[key]) for h in history if key in h]
        if points:
            ax.plot(*zip(*points), marker="o", label=key)
    for ax, title in ((ax_loss, "loss"), (ax_acc, "top-1")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    return fig


def write_json_artifact(tracker: Tracker, obj: Any, artifact_file: str) -> None:
    """Log a JSON artifact (e.g. checkpoint paths, never the checkpoint files themselves)."""
    tracker.log_text(json.dumps(obj, indent=2, default=str), artifact_file)


__all__ = ["Tracker", "start_run", "configure_http_env", "run_tags", "confusion_figure", "curves_figure",
           "write_json_artifact"]
