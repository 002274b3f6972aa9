"""MLflow tracking: one run per training run, logged by rank 0 only, never fatal.

The driver creates the experiment (once: concurrent creation races) and the run, and passes
the run id to the workers; rank 0 logs into it through ``MlflowClient``. Any tracking error (server down,
database locked) prints one warning and switches that tracker off: training goes on, and what would have been
logged after the failure (metrics, artifacts, the final status) is lost for this process.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actionray.platform.config import default_tracking_uri  # noqa: F401  (re-exported: the tracking default)

if TYPE_CHECKING:
    from actionray.platform.config import ExperimentConfig

# Fail fast on an unreachable server instead of MLflow's default 7 retries with back-off (minutes).
HTTP_ENV_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                     "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}




def configure_http_env() -> dict[str, str]:
    """Set short MLflow HTTP retry/timeout defaults (user values win); returns the values in effect. Also keeps the
    embedded store's one-time schema messages ("Creating initial MLflow database tables...") off the console."""
    for key, value in HTTP_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
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

    def log_metrics(self, metrics: dict[str, float], step: int, run_id: str | None = None) -> None:
        """Numeric metrics at ``step`` (non-numeric values are skipped) into this run, or into ``run_id`` (a child
        run from :meth:`child_runs`)."""
        from mlflow.entities import Metric
        import time

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if items:
            self._call("log_metrics", self.client.log_batch, run_id or self.run_id, metrics=items)

    def metric_steps(self, run_id: str, key: str) -> list[int]:
        """The steps at which ``run_id`` holds metric ``key``."""
        history = self._call("get_metric_history", self.client.get_metric_history, run_id, key)
        return [m.step for m in history or []]

    def log_missing_epochs(self, history: list[dict[str, Any]], run_id: str | None = None) -> None:
        """Each per-epoch metrics dict of ``history`` (its ``epoch`` is the step) that this run, or ``run_id``,
        does not hold yet. Rank 0 logs an epoch only once its checkpoint is in storage, so that no epoch is ever
        logged twice; a run stopped between the two (Ctrl+C, a kill, a lost node, a trial Tune stopped) has the
        epoch in its checkpoint or Tune's result and not in MLflow, and this brings it back."""
        if not self.active or not history:
            return
        logged = set(self.metric_steps(run_id or self.run_id, "epoch"))
        for metrics in history:
            if int(metrics["epoch"]) not in logged:
                self.log_metrics(metrics, step=int(metrics["epoch"]), run_id=run_id)

    def log_params(self, params: dict[str, Any]) -> None:
        """Params as strings, in batches of 100 (MLflow's per-call limit)."""
        from mlflow.entities import Param

        items = [Param(k, param_text(v)) for k, v in params.items()]
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

    def log_table(self, table, artifact_file: str) -> None:
        """A table (pandas DataFrame or dict of columns) as a JSON artifact the MLflow UI shows as a table."""
        self._call("log_table", lambda: self.client.log_table(self.run_id, table, artifact_file))

    def log_data_inputs(self, inputs) -> None:
        """The data sets the run reads (``data.source.DataInput``) as MLflow dataset inputs, what
        ``mlflow.log_input`` records: name, content digest, source (the file), profile (the counts as JSON) and the
        ``mlflow.data.context`` input tag (train / validation)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        datasets = [DatasetInput(Dataset(name=i.name, digest=i.digest, source_type="local",
                                         source=json.dumps({"uri": i.source}), profile=json.dumps(i.counts)),
                                 tags=[InputTag("mlflow.data.context", i.context)]) for i in inputs]
        if datasets:
            self._call("log_inputs", self.client.log_inputs, self.run_id, datasets=datasets)

    def update_status(self, status: str) -> None:
        """Set the run's status: RUNNING reopens it (resume), FINISHED / FAILED / KILLED end it."""
        if status == "RUNNING":
            self._call("reopen run", lambda: self.client.update_run(self.run_id, status))
        else:
            self._call("set_terminated", lambda: self.client.set_terminated(self.run_id, status))

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED / FAILED / KILLED."""
        self.update_status(status)

    def child_runs(self) -> list:
        """The runs nested under this one (``mlflow.parentRunId`` tag), as MLflow ``Run`` objects."""

        def search() -> list:
            experiment_id = self.client.get_run(self.run_id).info.experiment_id
            return list(self.client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{self.run_id}'"))

        return self._call("list child runs", search) or []

    def end_child(self, run_id: str, status: str) -> None:
        """Mark a child run (from :meth:`child_runs`) FINISHED / FAILED / KILLED."""
        self._call("set_terminated", lambda: self.client.set_terminated(run_id, status))


def param_text(value: Any) -> str:
    """A param value as MLflow stores it: lists/dicts as JSON, others as ``str``, cut at 6000 characters."""
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:6000]  # MLflow's param value limit


def run_tags(cfg: ExperimentConfig, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Provenance tags: code revision, library versions, method, config name, plus ``extra``."""
    import mlflow
    import ray
    import torch

    import actionray

    tags = {"actionray.version": actionray.__version__, "torch.version": torch.__version__,
            "ray.version": ray.__version__, "mlflow.version": mlflow.__version__,
            "method": cfg.method.name, "config": cfg.name, **run_facts(cfg)}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    tags.update(reference_tags(cfg))
    tags.update({k: str(v) for k, v in (extra or {}).items()})
    return tags


def reference_tags(cfg: ExperimentConfig) -> dict[str, str]:
    """``reference.metric``, ``reference.value``, ``reference.source`` of the config's reference block (the
    published number the recipe should reproduce, docs/reproduce.md); empty when it has none."""
    ref = getattr(cfg, "reference", None)
    if ref is None:
        return {}
    return {"reference.metric": ref.metric, "reference.value": str(ref.value), "reference.source": ref.source}


def run_facts(cfg: ExperimentConfig) -> dict[str, str]:
    """What tells runs of one method apart at a glance: backbone (when the method has one), frames, seed."""
    backbone = getattr(cfg.method, "backbone", None)
    data = cfg.data
    frames = f"{data.num_segments}" + (f"x{data.frames_per_segment}" if data.frames_per_segment > 1 else "")
    return {**({"backbone": str(backbone)} if backbone else {}), "frames": frames, "seed": str(cfg.train.seed)}


def run_label(cfg: ExperimentConfig, run_name: str) -> str:
    """An MLflow run name for a training run: ``tsn resnet18 8f seed0 · demo-20260101-120000`` (the run folder
    last, so a row in the UI leads to its checkpoints)."""
    facts = run_facts(cfg)
    parts = [cfg.method.name, facts.get("backbone"), f"{facts['frames']}f", f"seed{facts['seed']}"]
    return " ".join(p for p in parts if p) + f" · {run_name}"


def git_commit() -> str | None:
    """HEAD of the repository holding this package, or None (e.g. inside a Ray job's unpacked working dir)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def create_run(uri: str, experiment: str, artifact_location: str | None, run_name: str,
               tags: dict[str, Any], parent_run_id: str | None = None) -> Tracker:
    """A new MLflow run (its experiment created on first use) nested under ``parent_run_id`` when given; an
    inactive tracker when the backend is unreachable (warned once)."""
    tracker = Tracker(uri, "pending")

    def create() -> str:
        client = tracker.client
        found = client.get_experiment_by_name(experiment)
        if found is None:
            location = artifact_location
            if location and "://" not in location:
                location = Path(location).resolve().as_uri()
            experiment_id = client.create_experiment(experiment, artifact_location=location)
        else:
            experiment_id = found.experiment_id
        all_tags = dict(tags) | ({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})
        return client.create_run(experiment_id, run_name=run_name, tags=all_tags).info.run_id

    new_id = tracker._call("create run", create)
    if new_id is None:
        return Tracker(None, None)
    tracker.run_id = new_id
    return tracker


def start_run(cfg: ExperimentConfig, run_name: str, *, parent_run_id: str | None = None,
              tags: dict[str, Any] | None = None, run_id: str | None = None,
              display_name: str | None = None) -> Tracker:
    """Driver side: create (or reuse ``run_id``) the MLflow run for a training run and log config + tags; the
    MLflow run is called ``display_name`` when given (sweeps keep ``run_name``: their trials are found by it).

    Returns an inactive tracker when tracking is disabled or the backend is unreachable (warned once).
    """
    if not cfg.tracking.enabled:
        return Tracker(None, None)
    if run_id is not None:
        tracker = Tracker(cfg.tracking.uri, run_id)
        tracker.update_status("RUNNING")
        return tracker
    t = cfg.tracking
    tracker = create_run(t.uri, t.experiment, t.artifact_location, display_name or run_name, run_tags(cfg, tags),
                         parent_run_id)
    if not tracker.active:
        return tracker
    from actionray.platform.config import dumps

    tracker.log_params(cfg.flat())
    tracker.log_text(dumps(cfg), "config/resolved.yaml")
    tracker.log_data_inputs(data_inputs(cfg))
    return tracker


def data_inputs(cfg: ExperimentConfig) -> list:
    """The data a run of ``cfg`` reads: its method's ``DataSource.inputs()`` (list files or a feature set's gt.json
    with its split, each with a content digest and counts); [] for a source without ``inputs`` or when the files
    cannot be read (one warning: tracking never ends a run, and the data check reports missing files)."""
    try:
        source = cfg.recipe.data(cfg)
        try:
            inputs = getattr(source, "inputs", None)
            return list(inputs()) if inputs is not None else []
        finally:
            source.close()
    except Exception as error:  # noqa: BLE001 -- provenance is best effort, like all tracking
        print(f"[actionray] WARNING: the run's data inputs were not logged to MLflow ({type(error).__name__}: "
              f"{str(error).splitlines()[0][:200] if str(error) else ''})", file=sys.stderr, flush=True)
        return []


NORMALIZATIONS = {"true": "rows: each true class sums to 1 (recall)",
                  "pred": "columns: each predicted class sums to 1 (precision)",
                  None: "not normalised (counts)"}


def confusion_figure(matrix, class_names: list[str] | None = None, *, normalize: str | None = "true",
                     max_annotated: int = 12):
    """A figure of a (C, C) confusion matrix of counts (rows = true class, columns = predicted class).

    Colours show the matrix normalised as ``normalize`` says ("true": per row, MMAction2's
    ``confusion_matrix(normalize='true')``; "pred": per column; None: counts), and the title says which. Class
    names label the axes; with at most ``max_annotated`` classes each cell also shows its count.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if normalize not in NORMALIZATIONS:
        raise ValueError(f"confusion_figure normalize={normalize!r}: choose 'true', 'pred' or None")
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {counts.shape}")
    n = len(counts)
    shown = counts.astype(float)
    if normalize is not None:
        axis = 1 if normalize == "true" else 0
        totals = counts.sum(axis=axis, keepdims=True).astype(float)
        shown = np.divide(shown, totals, out=np.zeros_like(shown), where=totals > 0)  # empty class: zeros
    size = max(4.0, 0.35 * n)
    fig, ax = plt.subplots(figsize=(size + 1.5, size + 0.5))
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix, {NORMALIZATIONS[normalize]}", fontsize=9)
    names = list(class_names) if class_names else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"confusion_figure: {len(names)} class names for a {n}x{n} matrix")
    if n <= 40:  # beyond that the names are unreadable; the PNG still shows the pattern
        ax.set_xticks(range(n), names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
    if n <= max_annotated:
        threshold = (shown.max() or 1.0) / 2
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if shown[i, j] > threshold else "black")
    fig.colorbar(image, ax=ax, label="fraction" if normalize else "count")
    fig.tight_layout()
    return fig


def curves_figure(history: list[dict[str, float]], loss_keys: tuple[str, ...] = ("train_loss", "val_loss"),
                  metric_keys: tuple[str, ...] = ("train_top1", "val_top1")):
    """Training curves per epoch from the loop's per-epoch metric dicts: losses left, the method's metric right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    for keys, ax in ((loss_keys, ax_loss), (metric_keys, ax_metric)):
        for key in keys:
            points = [(h["epoch"], h[key]) for h in history if key in h]
            if points:
                ax.plot(*zip(*points), marker="o", label=key)
    epochs = sorted({int(h["epoch"]) for h in history if "epoch" in h})
    for ax, title in ((ax_loss, "loss"), (ax_metric, " / ".join(metric_keys))):
        ax.set_xlabel("epoch")
        if 0 < len(epochs) <= 20:
            ax.set_xticks(epochs)  # one tick per epoch while they fit
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_title(title)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    return fig


def write_json_artifact(tracker: Tracker, obj: Any, artifact_file: str) -> None:
    """Log a JSON artifact (e.g. checkpoint paths, never the checkpoint files themselves)."""
    tracker.log_text(json.dumps(obj, indent=2, default=str), artifact_file)


def log_artifact_object(tracker: Tracker, obj: Any, artifact_file: str) -> None:
    """Log what a method's evaluation returns: a matplotlib figure (then closed), a str, or a JSON-able object."""
    if hasattr(obj, "savefig"):
        tracker.log_figure(obj, artifact_file)
        import matplotlib.pyplot as plt

        plt.close(obj)
    elif isinstance(obj, str):
        tracker.log_text(obj, artifact_file)
    else:
        write_json_artifact(tracker, obj, artifact_file)


__all__ = ["Tracker", "create_run", "start_run", "default_tracking_uri", "configure_http_env", "param_text", "run_tags",
           "run_facts", "run_label", "NORMALIZATIONS", "confusion_figure", "curves_figure", "write_json_artifact", "log_artifact_object"]
