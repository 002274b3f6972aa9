"""Build and run a Ray Train ``TorchTrainer`` from an ``ExperimentConfig``.

Run names are the resume key (platform_apis 1.7): ``fit(cfg)`` starts a fresh run under a new timestamped name
(or refuses an explicit ``train.run_name`` that already exists), ``fit(cfg, resume=True)`` re-runs the same
name and storage so every worker's ``get_checkpoint()`` returns the latest checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from actionray.platform.config import ConfigError, ExperimentConfig
from actionray.platform.raysession import ensure_ray, set_quiet_env
from actionray.platform.tracking import Tracker, start_run, write_json_artifact

RUN_INFO = "actionray_run.json"  # in the run folder: MLflow run id, so a resumed run logs into the same run


def default_run_name(cfg: ExperimentConfig) -> str:
    """``train.run_name`` or ``<config name>-<UTC timestamp>`` (a fresh name for every fresh run)."""
    return cfg.train.run_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def _is_local(path: str) -> bool:
    return "://" not in path


def latest_run(cfg: ExperimentConfig, storage_path: str) -> str | None:
    """The most recent run folder of this config under local storage (for ``--resume`` without a name)."""
    if cfg.train.run_name:
        return cfg.train.run_name
    root = Path(storage_path)
    runs = sorted(p for p in root.glob(f"{cfg.name}-*") if p.is_dir()) if root.is_dir() else []
    return runs[-1].name if runs else None


@dataclass
class Run:
    """A ``TorchTrainer`` ready to ``fit()``, with the driver-side MLflow run it reports into and its folder."""

    trainer: Any
    tracker: Tracker
    run_dir: Path | None
    name: str


def build_run(cfg: ExperimentConfig, *, run_name: str | None = None, callbacks: Sequence[Any] = (),
              mlflow_parent_run_id: str | None = None, mlflow_tags: dict[str, Any] | None = None,
              storage_path: str | None = None, worker_hooks: Sequence[Any] = ()) -> Run:
    """A ``TorchTrainer`` for ``cfg`` (its method's model, data and step); an existing run folder of the same name
    is resumed by ``fit()``.

    Creates (or, for an existing run folder, reopens) the MLflow run on the calling process and passes its
    id to the workers; ``callbacks`` are ``ray.train.UserCallback`` instances (e.g. Tune's report callback);
    ``worker_hooks`` are picklable objects with ``after_epoch(epoch, rank)`` run on every worker.
    """
    set_quiet_env()
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from actionray.platform.loop import train_loop_per_worker

    source = cfg.recipe.data(cfg)
    name = run_name or default_run_name(cfg)
    storage = storage_path or cfg.train.storage_path
    if _is_local(storage):
        storage = str(Path(storage).resolve())
    run_dir = Path(storage) / name if _is_local(storage) else None
    info = json.loads((run_dir / RUN_INFO).read_text()) if run_dir and (run_dir / RUN_INFO).is_file() else {}
    tracker = start_run(cfg, name, parent_run_id=mlflow_parent_run_id, tags=mlflow_tags,
                        run_id=info.get("mlflow_run_id"))
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_INFO).write_text(json.dumps({"mlflow_run_id": tracker.run_id, "run_name": name}))

    s = cfg.scaling
    resources = {"CPU": s.cpus_per_worker}
    if s.use_gpu:
        resources["GPU"] = s.gpus_per_worker
    loop_config = {"cfg": cfg, "run_name": name, "tracking_uri": cfg.tracking.uri,
                   "mlflow_run_id": tracker.run_id, "worker_hooks": list(worker_hooks)}
    metric, mode = cfg.checkpoint_metric
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        # backend=None: NCCL when the workers hold GPUs, gloo on CPU.
        torch_config=TorchConfig(backend=None),
        scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name, storage_path=storage, callbacks=list(callbacks),
            failure_config=FailureConfig(max_failures=s.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints,
                                               checkpoint_score_attribute=metric,
                                               checkpoint_score_order=mode)),
        datasets=source.datasets(),
        dataset_config=source.dataset_config(),
    )
    return Run(trainer, tracker, run_dir, name)


def fit(cfg: ExperimentConfig, *, resume: bool = False, worker_hooks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train ``cfg`` on Ray (local or the cluster in RAY_ADDRESS); returns the run summary."""
    ensure_ray(cfg)
    storage = cfg.train.storage_path
    if resume:
        name = latest_run(cfg, storage)
        if name is None or (_is_local(storage) and not (Path(storage) / name).is_dir()):
            raise ConfigError(f"--resume: no run of config {cfg.name!r} under train.storage_path={storage}"
                              + (f" named {name!r}" if name else "") + "; start one without --resume")
    else:
        name = default_run_name(cfg)
        if _is_local(storage) and (Path(storage) / name).exists():
            raise ConfigError(f"train.run_name={name!r} already exists under {storage}: pass --resume to "
                              f"continue it, or choose another train.run_name")
    run = build_run(cfg, run_name=name, worker_hooks=worker_hooks)
    tracker = run.tracker
    try:
        result = run.trainer.fit()
    except BaseException:
        tracker.end("FAILED")
        raise
    summary = dict(result.return_value or {})
    best = None
    try:
        best = result.get_best_checkpoint(*cfg.checkpoint_metric)
    except (KeyError, ValueError, RuntimeError):  # no checkpoint carries the metric yet: report no best
        pass
    paths = {"run_path": result.path, "latest_checkpoint": result.checkpoint.path if result.checkpoint else None,
             "best_checkpoint": best.path if best else None}
    write_json_artifact(tracker, paths, "checkpoints.json")
    tracker.end("FINISHED")
    summary.update(paths, run_name=name, mlflow_run_id=tracker.run_id, last_report=dict(result.metrics or {}))
    return summary
