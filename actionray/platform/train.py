"""Build and run a Ray Train ``TorchTrainer`` from an ``ExperimentConfig``.

Run names are the resume key: ``fit(cfg)`` starts a fresh run under a new timestamped name
(or refuses an explicit ``train.run_name`` that already exists), ``fit(cfg, resume=True)`` (or ``resume=RUN_DIR``)
re-runs the same name and storage and continues after the newest *complete* checkpoint folder on disk.

Ray Train V2 hands ``get_checkpoint()`` the latest checkpoint of its ``checkpoint_manager_snapshot.json``, which
its controller writes asynchronously after each report, so a killed driver leaves it behind the folders. Train
V2 refuses ``resume_from_checkpoint`` (Ray repo, python/ray/train/v2/api/data_parallel_trainer.py), so the driver
finds the newest folder whose ``state.pt`` loads and passes its path to the loop, which takes it when it is newer
than Ray's (a restart within the same fit gets Ray's own, newer, checkpoint).

Inputs that cannot change on a retry (lists, GPUs and CPUs asked for) are checked in the driver before any run,
MLflow run or Ray worker exists; Ctrl+C / SIGTERM end ``fit`` with :class:`TrainInterrupted` and the MLflow run
KILLED; any other failure marks it FAILED, so no run stays RUNNING.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from actionray.errors import ActionRayError, NoRetryError, UserError
from actionray.platform.config import ConfigError, ExperimentConfig
from actionray.platform.ray_compat import controller_callback_bases
from actionray.platform.raysession import ensure_ray, set_quiet_env, torch_config
from actionray.platform.tracking import Tracker, run_label, start_run, write_json_artifact

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
class ResumePoint:
    """Where ``--resume`` continues: the run's storage and name, and its newest complete checkpoint (if local)."""

    storage: str
    name: str
    checkpoint: Path | None = None
    epoch: int = 0


def _why_empty(run_dir: Path) -> str:
    from actionray.platform.checkpoint import checkpoint_folders

    if checkpoint_folders(run_dir):
        return "its checkpoint folders hold no readable state.pt (cut short while being written)"
    if not [p for p in run_dir.iterdir() if p.name != RUN_INFO]:
        return "it failed at start: the folder holds only its run info"
    return "it stopped before its first epoch ended"


def resume_point(cfg: ExperimentConfig, resume: bool | str | Path) -> ResumePoint:
    """The run ``--resume`` continues (``resume`` = True: the latest of this config; a path: that run folder) and
    the newest complete checkpoint in it; raises ``ConfigError`` when there is nothing to resume."""
    from actionray.platform.checkpoint import newest_complete_checkpoint

    if isinstance(resume, (str, Path)):
        run_dir = Path(resume).expanduser().resolve()
        if not run_dir.is_dir():
            raise ConfigError(f"--resume {resume}: no such run folder")
        storage, name = str(run_dir.parent), run_dir.name
    else:
        storage = cfg.train.storage_path
        name = latest_run(cfg, storage)
        if name is None or (_is_local(storage) and not (Path(storage) / name).is_dir()):
            raise ConfigError(f"--resume: nothing to resume: no run of config {cfg.name!r} under "
                              f"train.storage_path={storage}" + (f" named {name!r}" if name else "")
                              + "; start one without --resume")
        if not _is_local(storage):
            return ResumePoint(storage, name)  # remote storage: Ray's own snapshot decides
        storage = str(Path(storage).resolve())
        run_dir = Path(storage) / name
    found = newest_complete_checkpoint(run_dir)
    if found is None:
        older = [p for p in sorted(run_dir.parent.glob(f"{cfg.name}-*"), reverse=True)
                 if p != run_dir and p.is_dir() and newest_complete_checkpoint(p)]
        hint = f"; to continue an older run pass --resume {older[0]}" if older else ""
        raise ConfigError(f"--resume: nothing to resume in {run_dir}: no complete checkpoint ({_why_empty(run_dir)}); "
                          f"start a fresh run without --resume{hint}")
    folder, state = found
    return ResumePoint(storage, name, folder, int(state["epoch"]))


def check_inputs(cfg: ExperimentConfig) -> None:
    """Before Ray starts: the method's own ``check_inputs(cfg)`` if it has one; for clip data, the lists parse,
    their labels are in range and every worker gets a full batch."""
    from actionray.platform.data.annotations import validate_lists
    from actionray.platform.data.source import ClipSource

    own_check = getattr(cfg.recipe, "check_inputs", None)
    if own_check is not None:
        own_check(cfg)  # the method's own inputs (feature sets, an initial checkpoint ...)
    if not isinstance(cfg.recipe.data(cfg), ClipSource):
        return  # a method with its own data source reads its own inputs
    data = cfg.data
    validate_lists({"data.train_list": data.train_list, "data.val_list": data.val_list}, root=data.root,
                   num_classes=data.num_classes,
                   min_entries={"data.train_list": cfg.scaling.num_workers * data.batch_size})


def resolve_init_checkpoint(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with a run folder in ``method.init_checkpoint`` replaced by that run's best checkpoint
    (``checkpoint.resolve_checkpoint``), so the workers load the same folder the driver checked."""
    from actionray.platform.checkpoint import resolve_checkpoint

    init = getattr(cfg.method, "init_checkpoint", None)
    if init is None:
        return cfg
    resolved = resolve_checkpoint(init, key="method.init_checkpoint")
    return cfg if str(resolved) == str(init) else cfg.with_overrides({"method.init_checkpoint": str(resolved)})


def check_resources(cfg: ExperimentConfig) -> None:
    """The CPUs and GPUs the workers ask for, plus a CPU for decoding, exist in the Ray cluster (else Train retries
    its start-up forever, or Ray Data waits forever for a CPU the workers took)."""
    import ray

    s = cfg.scaling
    have = ray.cluster_resources()
    workers = s.fewest_workers  # an elastic group starts with what fits, down to its minimum
    asks = [("CPU", workers * s.cpus_per_worker + cfg.data.decode_cpus_reserved,
             "scaling.cpus_per_worker + data.decode_tasks (auto: 1)")]
    if s.use_gpu:
        asks.append(("GPU", workers * s.gpus_per_worker, "scaling.gpus_per_worker"))
    asks += [(kind, workers * amount, f"scaling.worker_resources.{kind}")
             for kind, amount in s.worker_resources.items()]
    if cfg.data.decode_nodes == "cpu_only":
        from actionray.platform.data.pipeline import DECODE_NODE_RESOURCE

        asks.append((DECODE_NODE_RESOURCE, 1e-3, "data.decode_nodes=cpu_only: nodes declaring"))
    for kind, need, key in asks:
        if have.get(kind, 0.0) < need:
            extra = " or set scaling.use_gpu=false" if kind == "GPU" else ""
            count = f"{workers}, the elastic minimum" if s.elastic else f"{workers}"
            raise ConfigError(f"the run needs {need:g} {kind}(s) (scaling.num_workers={count} x {key}) but "
                              f"the Ray cluster has {have.get(kind, 0.0):g}: lower them{extra}, or attach to a "
                              f"cluster that has them (RAY_ADDRESS)")


# Worker errors that a restart from the last checkpoint repeats exactly: Ray Train must not retry them.
# FloatingPointError: the non-finite loss check (a resumed run replays the same batches with the same weights).
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (NoRetryError, FloatingPointError)


def is_permanent(error: BaseException) -> bool:
    """Whether a worker error is one a retry cannot fix (:data:`PERMANENT_ERRORS`)."""
    return isinstance(error, PERMANENT_ERRORS)


class PermanentTrainingError(UserError, NoRetryError, RuntimeError):
    """A worker failed with an error a retry cannot fix (:data:`PERMANENT_ERRORS`); carries its full message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(kind, message)  # both in args: Ray pickles the error from its controller to the driver
        self.kind, self.message = kind, message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def _no_retry_callback():
    """A Ray Train controller callback that turns the failure policy's RETRY into RAISE for permanent errors.

    Train V2's failure policy retries every worker error up to ``FailureConfig.max_failures`` and has no public
    way to classify them (Ray repo, python/ray/train/v2/_internal/execution/failure_handling/default.py). Its
    controller does call ``before_controller_execute_failure_decision`` on callbacks from ``RunConfig.callbacks``,
    and an error raised there becomes a ``ControllerError`` that is not retried (same repo,
    python/ray/train/v2/_internal/execution/controller/controller.py, ``_run_controller_hook``). The worker
    errors are read from the poll that precedes the decision.
    """
    ControllerCallback, WorkerGroupCallback = controller_callback_bases()

    class StopOnPermanentError(ControllerCallback, WorkerGroupCallback):
        def __init__(self) -> None:
            self.permanent: PermanentTrainingError | None = None

        def after_worker_group_poll_status(self, worker_group_status) -> None:
            for error in worker_group_status.errors.values():
                if is_permanent(error):
                    self.permanent = PermanentTrainingError(type(error).__name__, str(error))
                    return

        def before_controller_execute_failure_decision(self, failure_decision) -> None:
            if self.permanent is not None and failure_decision.value == "RETRY":
                raise self.permanent

    return StopOnPermanentError()


def log_skipped_samples(tracker: Tracker, datasets: dict[str, Any], epochs: range,
                        failed: bool = False) -> dict[str, Any]:
    """Samples skipped under ``on_error: skip``, from the datasets' pipeline monitors (data/monitor.py): MLflow
    metrics ``skipped_<split>`` per epoch (step = epoch), the reasons as ``data/skipped_samples.json``, and which
    train entries were decoded on which node per epoch as ``data/decoded_train.json``; returns
    ``{split: {epoch: count}}`` for the run summary. ``epochs`` are this fit's (0-based) epochs; after a
    ``failed`` fit only epochs that skipped something count. Validation passes are alike: counted once, epoch 1."""
    import ray

    from actionray.platform.data.monitor import monitor_of

    counts: dict[str, dict[int, int]] = {}
    reasons: dict[str, dict[str, dict[int, str]]] = {}
    decoded: dict[str, dict[str, Any]] = {}
    for split, dataset in datasets.items():
        monitor = monitor_of(dataset)
        if monitor is None:
            continue
        # every epoch up to this fit's last: a worker-group restart within the fit starts after its checkpoint
        for epoch in range(epochs.stop) if split == "train" else range(1):
            report = ray.get(monitor.report.remote(epoch))
            if split == "train" and report["decoded"]:
                decoded[str(epoch + 1)] = {k: report[k] for k in ("num_rows", "decoded", "repeated", "nodes")}
            if epoch not in epochs or (failed and not report["skipped"]):
                continue
            counts.setdefault(split, {})[epoch + 1] = report["skipped"]
            if report["reasons"]:
                reasons.setdefault(split, {})[str(epoch + 1)] = report["reasons"]
    for split, per_epoch in counts.items():
        for epoch, count in per_epoch.items():
            tracker.log_metrics({f"skipped_{split}": count}, step=epoch)
    if reasons:
        write_json_artifact(tracker, reasons, "data/skipped_samples.json")
    if decoded:
        # Per train epoch: list entries decoded (of num_rows), extra decodes of one entry, rows per Ray node id.
        write_json_artifact(tracker, decoded, "data/decoded_train.json")
    return counts


class TrainInterrupted(ActionRayError):
    """SIGINT/SIGTERM stopped ``fit``; the MLflow run is KILLED and ``run_dir`` keeps every complete checkpoint."""

    def __init__(self, signal_name: str, run_dir: Path | None, epochs: int) -> None:
        super().__init__(f"{signal_name} during training")
        self.signal_name, self.run_dir, self.epochs = signal_name, run_dir, epochs

    def saved_epoch(self) -> int:
        """The last epoch with a complete checkpoint on disk (0: none); ask once Ray has stopped uploading."""
        from actionray.platform.checkpoint import newest_complete_checkpoint

        found = newest_complete_checkpoint(self.run_dir) if self.run_dir else None
        return int(found[1]["epoch"]) if found else 0


class _Signalled(BaseException):
    """Raised in the main thread by the SIGINT/SIGTERM handler of :func:`_fit_interruptible`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


def _fit_interruptible(trainer, on_tick: Callable[[], None] | None = None) -> Any:
    """``trainer.fit()`` with SIGINT and SIGTERM raising :class:`_Signalled` in the calling (main) thread.

    On the main thread Train V2's ``fit`` installs its own SIGINT handler, which aborts the controller and ends
    the process with status 1 (Ray repo, python/ray/train/v2/api/data_parallel_trainer.py,
    ``_register_sigint_handler``); off the main thread it does not (as under Tune). So ``fit`` runs in a helper
    thread and the main thread keeps the signals; it calls ``on_tick`` (the progress bar) twice a second. Called
    off the main thread this is a plain ``fit``.
    """
    if threading.current_thread() is not threading.main_thread():
        return trainer.fit()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as error:  # noqa: BLE001 -- handed to the main thread below
            outcome["error"] = error

    def handler(signum, frame):
        raise _Signalled(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        thread = threading.Thread(target=target, name="actionray-fit", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.5)
            if on_tick is not None and thread.is_alive():
                on_tick()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


@dataclass
class Run:
    """A ``TorchTrainer`` ready to ``fit()``, with the driver-side MLflow run it reports into and its folder."""

    trainer: Any
    tracker: Tracker
    run_dir: Path | None
    name: str

    def release_data(self) -> None:
        """End the pipeline monitors of the run's datasets (data/monitor.py), once nothing reads them any more."""
        from actionray.platform.data.monitor import release_monitors

        release_monitors(list(self.trainer.datasets.values()))


def build_run(cfg: ExperimentConfig, *, run_name: str | None = None, callbacks: Sequence[Any] = (),
              mlflow_parent_run_id: str | None = None, mlflow_tags: dict[str, Any] | None = None,
              storage_path: str | None = None, worker_hooks: Sequence[Any] = (),
              resume_from: str | Path | None = None, mlflow_run_name: str | None = None) -> Run:
    """A ``TorchTrainer`` for ``cfg`` (its method's model, data and step); an existing run folder of the same name
    is resumed by ``fit()``.

    Creates (or, for an existing run folder, reopens) the MLflow run on the calling process and passes its
    id to the workers; ``callbacks`` are ``ray.train.UserCallback`` instances (e.g. Tune's report callback);
    ``worker_hooks`` are picklable objects with ``after_epoch(epoch, rank)`` run on every worker;
    ``resume_from`` is a complete checkpoint folder the loop continues from when Ray's own is older;
    ``mlflow_run_name`` names a new MLflow run (default: the run name). If building
    the trainer fails, the MLflow run is marked FAILED (never left RUNNING).
    """
    set_quiet_env()
    source = cfg.recipe.data(cfg)
    name = run_name or default_run_name(cfg)
    storage = storage_path or cfg.train.storage_path
    if _is_local(storage):
        storage = str(Path(storage).resolve())
    run_dir = Path(storage) / name if _is_local(storage) else None
    info = json.loads((run_dir / RUN_INFO).read_text()) if run_dir and (run_dir / RUN_INFO).is_file() else {}
    tracker = start_run(cfg, name, parent_run_id=mlflow_parent_run_id, tags=mlflow_tags,
                        run_id=info.get("mlflow_run_id"), display_name=mlflow_run_name)
    try:
        trainer = _trainer(cfg, source, name, storage, tracker, callbacks, worker_hooks, resume_from)
    except BaseException as error:
        tracker.end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_INFO).write_text(json.dumps({"mlflow_run_id": tracker.run_id, "run_name": name,
                                                    "checkpoint_metric": list(cfg.checkpoint_metric)}))
    return Run(trainer, tracker, run_dir, name)


def _trainer(cfg: ExperimentConfig, source, name: str, storage: str, tracker: Tracker, callbacks: Sequence[Any],
             worker_hooks: Sequence[Any], resume_from: str | Path | None):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from actionray.platform.loop import train_loop_per_worker

    s = cfg.scaling
    resources = {"CPU": s.cpus_per_worker, **s.worker_resources}
    if s.use_gpu:
        resources["GPU"] = s.gpus_per_worker
    loop_config = {"cfg": cfg, "run_name": name, "tracking_uri": cfg.tracking.uri,
                   "mlflow_run_id": tracker.run_id, "worker_hooks": list(worker_hooks),
                   "resume_from": str(resume_from) if resume_from else None,
                   "run_dir": str(Path(storage) / name) if _is_local(storage) else None}
    metric, mode = cfg.checkpoint_metric
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=torch_config(),  # gloo on CPU, NCCL on GPUs; one-node groups rendezvous on loopback
        # (min, max): Train V2's elastic policy (docs/training.md, "Elastic training").
        scaling_config=ScalingConfig(num_workers=(s.min_workers, s.num_workers) if s.elastic else s.num_workers,
                                     use_gpu=s.use_gpu, resources_per_worker=resources,
                                     elastic_resize_monitor_interval_s=s.resize_interval_s),
        run_config=RunConfig(
            name=name, storage_path=storage, callbacks=[*callbacks, _no_retry_callback()],
            failure_config=FailureConfig(max_failures=s.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints,
                                               checkpoint_score_attribute=metric,
                                               checkpoint_score_order=mode)),
        datasets=source.datasets(),
        dataset_config=source.dataset_config(),
    )


def _best_effort(fn, *args) -> Any:
    """Bookkeeping after a fit (skip counts) must not hide the fit's own outcome: warn and go on."""
    try:
        return fn(*args)
    except Exception as error:  # noqa: BLE001
        print(f"[actionray] WARNING: {fn.__name__} failed ({type(error).__name__}: {error})", flush=True)
        return None


class LiveOutput:
    """The driver's console during a fit: worker lines without Ray's noise, and on a terminal a live progress bar
    fed by rank 0 through a :class:`~actionray.platform.progress.ProgressBoard` actor (``platform/progress.py``)."""

    def __init__(self, bar=None, board=None, hooks: Sequence[Any] = (), restore: Callable[[], None] = lambda: None):
        self.bar, self.board, self.hooks, self._restore = bar, board, list(hooks), restore

    @classmethod
    def start(cls, cfg: ExperimentConfig, stream=None) -> "LiveOutput":
        """Call after Ray is up, on the driver's main thread (``stream``: default stderr)."""
        import uuid

        import ray

        from actionray.platform.data.monitor import NAMESPACE, on_this_node
        from actionray.platform.progress import ProgressBoard, StepProgress, TerminalBar, filter_worker_lines

        if threading.current_thread() is not threading.main_thread():
            return cls()
        source = cfg.recipe.data(cfg)
        bar = TerminalBar(cfg.train.epochs, source.steps_per_epoch, stream)
        if not bar.enabled:
            return cls(restore=filter_worker_lines())
        name = f"actionray_progress_{uuid.uuid4().hex[:12]}"
        board = ray.remote(num_cpus=0)(ProgressBoard).options(name=name, namespace=NAMESPACE,
                                                              scheduling_strategy=on_this_node()).remote()
        return cls(bar, board, [StepProgress(name, NAMESPACE)], filter_worker_lines(bar))

    def tick(self) -> None:
        """Redraw the bar from the board (skipped when the board does not answer within a second)."""
        if self.board is None:
            return
        import ray

        try:
            epoch, step, world = ray.get(self.board.read.remote(), timeout=1.0)
        except Exception:  # noqa: BLE001 -- a slow answer only delays the bar
            return
        self.bar.update(epoch, step, world)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.clear()
        self._restore()
        if self.board is not None:
            import ray

            ray.kill(self.board)


def fit(cfg: ExperimentConfig, *, resume: bool | str | Path = False,
        worker_hooks: Sequence[Any] = (), progress_stream=None) -> dict[str, Any]:
    """Train ``cfg`` on Ray (local or the cluster in RAY_ADDRESS); returns the run summary.

    ``resume``: True continues the latest run of this config (or ``train.run_name``), a path that run folder.
    ``progress_stream``: where the live progress bar goes (default stderr; drawn only on a terminal).
    Raises ``ConfigError`` for bad input (before Ray starts where it can be checked) and
    :class:`TrainInterrupted` on SIGINT/SIGTERM.
    """
    cfg = resolve_init_checkpoint(cfg)
    check_inputs(cfg)
    point = None
    if resume:
        point = resume_point(cfg, resume)
        storage, name = point.storage, point.name
        if point.checkpoint is not None:
            after = (f"training continues at epoch {point.epoch + 1}" if point.epoch < cfg.train.epochs else
                     f"all {cfg.train.epochs} epochs are done (raise train.epochs to train more)")
            print(f"[actionray] resuming run {name} from {point.checkpoint.name} (epoch {point.epoch} of "
                  f"{cfg.train.epochs}): {after}", flush=True)
    else:
        storage, name = cfg.train.storage_path, default_run_name(cfg)
        if _is_local(storage) and (Path(storage) / name).exists():
            raise ConfigError(f"train.run_name={name!r} already exists under {storage}: pass --resume to "
                              f"continue it, or choose another train.run_name")
    ensure_ray(cfg)
    check_resources(cfg)
    live = LiveOutput.start(cfg, progress_stream)
    try:
        run = build_run(cfg, run_name=name, storage_path=storage, worker_hooks=[*worker_hooks, *live.hooks],
                        resume_from=point.checkpoint if point else None, mlflow_run_name=run_label(cfg, name))
    except BaseException:
        live.close()
        raise
    try:
        return _train_and_record(cfg, run, name, live)
    finally:
        _best_effort(run.release_data)  # the run's pipeline monitors end with it, however it ended


def _train_and_record(cfg: ExperimentConfig, run: Run, name: str, live: LiveOutput) -> dict[str, Any]:
    """``fit`` once its run is built: train, then close the MLflow run with what the run's records hold."""
    tracker = run.tracker
    try:
        result = _fit_interruptible(run.trainer, on_tick=live.tick)
    except _Signalled as stop:
        tracker.end("KILLED")
        raise TrainInterrupted(str(stop), run.run_dir, cfg.train.epochs) from None
    except BaseException:
        _best_effort(log_skipped_samples, tracker, run.trainer.datasets, range(cfg.train.epochs), True)
        tracker.end("FAILED")
        raise
    finally:
        live.close()
    summary = dict(result.return_value or {})
    done = [int(h["epoch"]) for h in summary.get("history", [])]
    trained = range(summary.get("start_epoch", 0), max(done, default=0))
    summary["skipped"] = _best_effort(log_skipped_samples, tracker, run.trainer.datasets, trained)
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
