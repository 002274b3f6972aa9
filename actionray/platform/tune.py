"""Ray Tune over training runs: sweeps of a search space, and the trial machinery ablations reuse.

Train V2 pattern: each trial is a small Tune function ("trial driver") that builds the
config, builds the ``TorchTrainer`` with ``TuneReportCallback`` and fits it. The driver holds a fraction of a
CPU (or one ``driver_slot`` on clusters that define it, 3.3); the trainer's workers and Ray Data decode tasks
are requested separately, so ``max_concurrent_trials`` is computed from what one trial needs in total.

MLflow: one parent run per group (created here, on the Tune driver), one child run per trial (created by
``build_run`` with ``mlflow.parentRunId``), tagged so the UI can filter the group.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from dataclasses import dataclass
from typing import Any, Callable

from actionray.errors import ActionRayError
from actionray.platform.config import ConfigError, ExperimentConfig, dumps
from actionray.platform.report import GROUP_TAG, KIND_TAG, render_sweep, sweep_table
from actionray.search_spaces import SearchSpace, expand_value, format_set_value, validate_space

DRIVER_CPU = 0.25  # the trial driver only waits on fit(); a whole CPU would starve Ray Data (3.3)
DRIVER_SLOT = "driver_slot"  # custom resource on the head node of cluster.yaml
TRIAL_RETRIES = 1


@dataclass
class TrialNeed:
    """Resources one trial holds while it runs: its driver bundle plus the trainer's workers and decoders."""

    driver: dict[str, float]
    cpu: float
    gpu: float

    def fits(self, cluster: dict[str, float]) -> int:
        """How many such trials fit at once into ``cluster`` (``ray.cluster_resources()``)."""
        limits = [math.floor(cluster.get("CPU", 0) / self.cpu + 1e-9) if self.cpu else math.inf]
        if self.gpu:
            limits.append(math.floor(cluster.get("GPU", 0) / self.gpu + 1e-9))
        if DRIVER_SLOT in self.driver:
            limits.append(math.floor(cluster.get(DRIVER_SLOT, 0)))
        return int(min(limits))


def trial_need(cfg: ExperimentConfig, cluster: dict[str, float]) -> TrialNeed:
    """Per-trial resources: driver (driver_slot if the cluster has it, else a CPU fraction), workers, decoders."""
    s = cfg.scaling
    driver = {DRIVER_SLOT: 1} if cluster.get(DRIVER_SLOT, 0) >= 1 else {"cpu": DRIVER_CPU}
    cpu = s.num_workers * s.cpus_per_worker + cfg.data.decode_cpus_reserved + driver.get("cpu", 0.0)
    gpu = s.num_workers * s.gpus_per_worker if s.use_gpu else 0.0
    return TrialNeed(driver=driver, cpu=cpu, gpu=gpu)


def ensure_ray_for_trials(cfg: ExperimentConfig, concurrent: int | None) -> dict[str, float]:
    """Attach to RAY_ADDRESS, or start a local instance big enough for ``concurrent`` trials; returns resources."""
    import logging

    from actionray.platform.raysession import cluster_address, ensure_ray, local_num_cpus, set_quiet_env

    set_quiet_env()
    import ray

    if not ray.is_initialized() and not cluster_address() and concurrent:
        cpus = math.ceil(concurrent * trial_need(cfg, {}).cpu)
        ray.init(address="local", num_cpus=max(local_num_cpus(cfg), cpus), logging_level=logging.WARNING)
    ensure_ray(cfg)
    return ray.cluster_resources()


def plan_concurrency(cfg: ExperimentConfig, cluster: dict[str, float], requested: int | None) -> tuple[TrialNeed, int]:
    """(per-trial need, max concurrent trials); a trial that cannot fit at all fails here, not in a hang."""
    need = trial_need(cfg, cluster)
    fit = need.fits(cluster)
    if fit < 1:
        raise ConfigError(f"one trial needs {need.cpu:g} CPU and {need.gpu:g} GPU (scaling.num_workers x "
                          f"cpus/gpus_per_worker + data.decode_tasks (auto: 1) + driver) but the cluster has "
                          f"{cluster.get('CPU', 0):g} CPU, {cluster.get('GPU', 0):g} GPU: lower them")
    return need, (requested if requested else fit)


def trial_run_name(config: dict[str, Any], trial_id: str) -> str:
    """Train run / MLflow child name: ``<variant>-s<seed>`` for ablation cells, ``trial-<id>`` for sweeps."""
    cell = config.get("cell")
    return f"{cell['variant']}-s{config['seed']}" if cell is not None else f"trial-{trial_id}"


def trial_status(result, epochs: int) -> str:
    """A Tune result in MLflow's words: FAILED, KILLED (stopped early by the scheduler) or FINISHED."""
    if result.error:
        return "FAILED"
    return "FINISHED" if (result.metrics or {}).get("epoch", 0) >= epochs else "KILLED"


def trial_id_of(result) -> str:
    """The trial id from the trial folder name (``trial_<id>``, see ``trial_dirname_creator``)."""
    return os.path.basename(str(result.path).rstrip("/")).removeprefix("trial_")


def _trial(config: dict[str, Any], *, base: ExperimentConfig, group: str, parent_run_id: str | None,
           train_storage: str) -> None:
    """One Tune trial: config = base + the trial's overrides (and ablation cell/seed), then build and fit."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from actionray.platform.train import build_run

    trial_id = tune.get_context().get_trial_id()
    overrides = dict(config.get("overrides", {}))
    tags: dict[str, Any] = {GROUP_TAG: group, "actionray.trial_id": trial_id}
    run_name = trial_run_name(config, trial_id)
    cell = config.get("cell")
    if cell is not None:
        overrides.update(cell["overrides"])
        overrides["train.seed"] = int(config["seed"])
        tags.update({"variant": cell["variant"], "seed": config["seed"], "actionray.cell": cell["index"],
                     **{f"axis.{axis}": label for axis, label in cell["axes"].items()}})
    else:
        tags["actionray.sampled"] = json.dumps(config.get("overrides", {}), default=str)[:5000]
    cfg = base.with_overrides(overrides)
    run = build_run(cfg, run_name=run_name, callbacks=[TuneReportCallback()],
                    mlflow_parent_run_id=parent_run_id, mlflow_tags=tags, storage_path=train_storage)
    # No status write here: a trial stopped by Tune may still be tearing down (and raising) after the sweep
    # driver has set the child's final status from Tune's view (finalize_children), and would overwrite it.
    try:
        run.trainer.fit()
    finally:
        run.release_data()


def group_name(base: str, storage: str, resume: bool) -> str:
    """``base`` when free (or, with resume, the newest existing ``base[-N]``); else the first free ``base-N``."""
    from ray import tune

    def exists(name: str) -> bool:
        return tune.Tuner.can_restore(f"{storage.rstrip('/')}/{name}")

    taken = [base] if exists(base) else []
    n = 2
    while exists(f"{base}-{n}"):
        taken.append(f"{base}-{n}")
        n += 1
    if resume:
        if not taken:
            raise ConfigError(f"--resume: no sweep named {base!r} under {storage} (start one without --resume)")
        return taken[-1]
    return base if not taken else f"{base}-{n}"


def open_parent(cfg: ExperimentConfig, group: str, kind: str, tags: dict[str, Any], resume: bool):
    """The group's MLflow parent run: reused on resume (found by its group tag), else created."""
    from actionray.platform.tracking import Tracker, start_run

    if not cfg.tracking.enabled:
        return Tracker(None, None)
    if resume:
        from actionray.platform.report import mlflow_client

        client = mlflow_client(cfg.tracking.uri)
        exp = client.get_experiment_by_name(cfg.tracking.experiment)
        found = client.search_runs([exp.experiment_id], f"tags.`{GROUP_TAG}` = '{group}' and tags.`{KIND_TAG}` = "
                                   f"'{kind}'", order_by=["attributes.start_time DESC"], max_results=1) if exp else []
        if found:
            return start_run(cfg, group, run_id=found[0].info.run_id)
    tags = {k: v for k, v in tags.items() if v is not None}
    return start_run(cfg, group, tags={KIND_TAG: kind, GROUP_TAG: group, **tags})


class SweepInterrupted(ActionRayError, RuntimeError):
    """Tune stopped on Ctrl+C / SIGUSR1 with trials unfinished; its state is saved for ``--resume``."""


def saved_trial_statuses(path: str) -> list[str]:
    """Each trial's status in the experiment state Tune saved last under ``path``."""
    from ray.tune import ExperimentAnalysis

    return [trial.status for trial in ExperimentAnalysis(path).trials]


def stop_if_interrupted(cfg: ExperimentConfig, group: str, expected: int, parent, kind: str) -> None:
    """Raise ``SweepInterrupted`` (parent run KILLED) when fewer than ``expected`` trials finished or errored.

    On SIGINT Tune saves the experiment state and ``Tuner.fit`` *returns*, with running trials unfinished and
    trials not yet generated missing (with ``max_concurrent`` they are created lazily), so without this check a
    half-run sweep would be summarised and marked FINISHED. The statuses come from the state saved on disk:
    Tune saves it before its clean-up, which marks the running trials TERMINATED in the returned results as if
    they had finished.
    """
    done = sum(status in ("TERMINATED", "ERROR") for status in saved_trial_statuses(experiment_path(cfg, group)))
    unfinished = expected - done
    if unfinished > 0:
        parent.end("KILLED")
        raise SweepInterrupted(f"{kind} {group} interrupted with {unfinished} of {expected} trial(s) unfinished; its "
                               f"state is saved: run the same command with --resume to continue it")


def finalize_children(tracker, results, epochs: int, *, unreported: str | None = None) -> None:
    """Set each child run's final status from Tune's view: FINISHED, KILLED (stopped by ASHA or by an
    interruption) or FAILED; children still RUNNING without a result become ``unreported`` when given.
    Trials never write their own final status (see ``_trial``), so this is the only writer and the child runs
    always agree with the sweep table."""
    if not tracker.active:
        return
    wanted = {trial_run_name(r.config or {}, trial_id_of(r)): trial_status(r, epochs) for r in results}
    last = {trial_run_name(r.config or {}, trial_id_of(r)): r.metrics for r in results if r.metrics}
    for run in tracker.child_runs():
        _log_last_result(tracker, run.info.run_id, last.get(run.info.run_name))
        status = wanted.get(run.info.run_name, unreported if run.info.status == "RUNNING" else None)
        if status and run.info.status != status:
            tracker.end_child(run.info.run_id, status)


def _log_last_result(tracker, run_id: str, metrics: dict[str, Any] | None) -> None:
    """The trial's last result into its child run when the trial did not log that epoch itself: Tune may stop
    the trial (ASHA) as soon as it has the report, before rank 0 logs (``Tracker.log_missing_epochs``); Tune's
    copy is the same dict."""
    if metrics and "epoch" in metrics:
        tracker.log_missing_epochs([{k: v for k, v in metrics.items() if k not in TUNE_RESULT_KEYS}], run_id=run_id)


# What Tune adds to every result (Ray repo, python/ray/tune/result.py, python/ray/air/constants.py); the rest is
# what the loop reported.
TUNE_RESULT_KEYS = frozenset({"timestamp", "training_iteration", "time_this_iter_s", "time_total_s", "pid",
                              "time_since_restore", "iterations_since_restore", "timesteps_since_restore",
                              "timesteps_total", "episodes_total", "done", "node_ip", "hostname", "date",
                              "trial_id", "experiment_tag", "config", "checkpoint_dir_name", "should_checkpoint"})


def close_running_children(tracker, status: str) -> None:
    """Mark every child run still RUNNING as ``status`` (Tune itself failed, so there is no result to read)."""
    finalize_children(tracker, [], 0, unreported=status)


def experiment_path(cfg: ExperimentConfig, group: str) -> str:
    """Where Tune keeps the group's experiment state (``--resume`` restores it from here)."""
    return f"{cfg.train.storage_path.rstrip('/')}/{group}"


def run_trials(cfg: ExperimentConfig, param_space: dict[str, Any], *, group: str, parent_run_id: str | None,
               num_samples: int, max_concurrent: int, need: TrialNeed, scheduler=None, resume: bool = False):
    """Fit one Tune experiment of training trials under ``<storage>/<group>``; returns the ResultGroup."""
    from ray import tune

    storage = cfg.train.storage_path.rstrip("/")
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=cfg, group=group, parent_run_id=parent_run_id,
                             train_storage=f"{storage}/{group}-train"),
        need.driver)
    if cfg.train.val_every > 1:
        # Epochs between validations report no val_* keys; Tune's strict check would fail those results.
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    path = experiment_path(cfg, group)
    if resume:
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(metric=cfg.checkpoint_metric[0], mode=cfg.checkpoint_metric[1],
                                        num_samples=num_samples, max_concurrent_trials=max_concurrent,
                                        scheduler=scheduler,
                                        trial_name_creator=lambda t: f"trial_{t.trial_id}",
                                        trial_dirname_creator=lambda t: f"trial_{t.trial_id}"),
            run_config=tune.RunConfig(name=group, storage_path=storage, verbose=0,
                                      # One retry of a lost trial driver (node lost, OOM kill): build_run
                                      # reuses the run name, so Train resumes from its checkpoint.
                                      failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES)))
    return tuner.fit()


def asha(cfg: ExperimentConfig):
    """ASHA on the checkpoint metric with ``time_attr="epoch"`` (monotone across resumes, unlike iterations)."""
    from ray.tune.schedulers import ASHAScheduler

    grace = min(cfg.train.epochs, max(1, cfg.train.val_every))
    return ASHAScheduler(time_attr="epoch", max_t=cfg.train.epochs, grace_period=grace, reduction_factor=3)


def retrain_command(config_path: str | None, overrides: list[str], sampled: dict[str, Any],
                    catalog=None) -> str:
    """``actionray train CONFIG --set ...`` that reproduces a trial (user overrides first, sampled values last)."""
    parts = ["actionray", "train", config_path or "<CONFIG>"]
    for text in overrides:
        parts += ["--set", text]
    for key, value in sampled.items():
        for dotted, leaf in expand_value(key, value, catalog).items():
            parts += ["--set", f"{dotted}={format_set_value(leaf)}"]
    return " ".join(shlex.quote(p) for p in parts)


def run_sweep(cfg: ExperimentConfig, space: SearchSpace, *, config_path: str | None = None,
              overrides: list[str] = (), num_samples: int = 4, scheduler: str = "asha",
              max_concurrent: int | None = None, resume: bool = False, name: str | None = None,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run a sweep of ``space`` around ``cfg``; log parent/children to MLflow; return best trial and table."""
    validate_space(space, cfg)
    cluster = ensure_ray_for_trials(cfg, max_concurrent)
    need, concurrent = plan_concurrency(cfg, cluster, max_concurrent)
    group = group_name(name or f"{cfg.name}-sweep-{space.name}", cfg.train.storage_path, resume)
    spec = cfg.recipe.metrics(cfg)
    keys = sorted({k for key, d in space.domains.items() for c in d.candidates() for k in expand_value(key, c, cfg.catalog)})
    parent = open_parent(cfg, group, "sweep", {"actionray.space": space.name, "actionray.sweep_keys": json.dumps(keys),
                                              "actionray.metric": cfg.checkpoint_metric[0],
                                              "actionray.mode": cfg.checkpoint_metric[1],
                                              "actionray.metrics": json.dumps(list(spec.sweep)),
                                              "actionray.percent": json.dumps(sorted(spec.percent))}, resume)
    echo(f"sweep {group}: space {space.name} ({', '.join(space.keys())}), {num_samples} sample(s), "
         f"{concurrent} trial(s) at once (one needs {need.cpu:g} CPU, {need.gpu:g} GPU), "
         f"scheduler {scheduler}, MLflow parent {parent.run_id}")
    try:
        results = run_trials(cfg, {"overrides": space.param_space()}, group=group, parent_run_id=parent.run_id,
                             num_samples=num_samples, max_concurrent=concurrent, need=need,
                             scheduler=asha(cfg) if scheduler == "asha" else None, resume=resume)
    except BaseException:
        close_running_children(parent, "FAILED")
        parent.end("FAILED")
        raise
    finalize_children(parent, results, cfg.train.epochs)
    stop_if_interrupted(cfg, group, num_samples * space.num_grid_points(), parent, "sweep")
    summary = summarise_sweep(cfg, results, keys, group, config_path, list(overrides), parent)
    parent.end("FINISHED" if summary["best"] else "FAILED")
    echo(summary["text"])
    return summary


def summarise_sweep(cfg: ExperimentConfig, results, keys: list[str], group: str, config_path: str | None,
                    overrides: list[str], parent) -> dict[str, Any]:
    """Results table (all trials, best first), best config + retrain command; logged to the parent run."""
    metric, mode = cfg.checkpoint_metric
    spec = cfg.recipe.metrics(cfg)
    from actionray.platform.tracking import param_text

    rows = []
    for result in results:
        # Values as the child run's params show them (full trial config, MLflow's text form), so this table
        # and the one `actionray report` rebuilds from MLflow agree.
        flat = cfg.with_overrides((result.config or {}).get("overrides", {})).flat()
        rows.append({"run": f"trial-{trial_id_of(result)}", "status": trial_status(result, cfg.train.epochs),
                     **{k: param_text(flat.get(k)) for k in keys},
                     **{m: (result.metrics or {}).get(m) for m in
                        spec.sweep}})
    table = sweep_table(rows, keys, metric, mode, spec.sweep, tuple(spec.percent))
    best = None
    try:
        best = results.get_best_result(metric=metric, mode=mode, scope="last")
    except (RuntimeError, ValueError, KeyError):  # no trial reported the metric (all failed): best stays None
        pass
    text = render_sweep(table, f"sweep {group}")
    out: dict[str, Any] = {"group": group, "table": table, "best": None, "parent_run_id": parent.run_id, "text": text}
    if best is not None and best.metrics and metric in best.metrics:
        sampled = best.config.get("overrides", {})
        best_cfg = cfg.with_overrides(sampled)
        command = retrain_command(config_path, overrides, sampled, cfg.catalog)
        out.update(best={"trial_id": best.metrics.get("trial_id"), "metrics": {metric: best.metrics[metric]},
                         "overrides": sampled}, command=command, best_config=dumps(best_cfg))
        out["text"] = (text + f"\nbest trial {best.metrics.get('trial_id')}: {metric} = {best.metrics[metric]:.4f}\n"
                       f"retrain it with:\n  {command}\n")
        parent.log_text(out["best_config"], "best/config.yaml")
        parent.log_text(command + "\n", "best/retrain_command.txt")
        parent.set_tags({"actionray.best_trial": best.metrics.get("trial_id")})
        parent.log_metrics({f"best_{metric}": best.metrics[metric]}, step=0)
    if parent.active:
        parent.log_table(table, "sweep/results.json")
        parent.log_text(table.to_csv(index=False), "sweep/results.csv")
        parent.log_text(text, "sweep/results.md")
    return out


__all__ = ["SweepInterrupted", "stop_if_interrupted",
           "TrialNeed", "trial_need", "plan_concurrency", "ensure_ray_for_trials", "run_trials", "run_sweep",
           "group_name", "open_parent", "finalize_children", "retrain_command", "asha"]
