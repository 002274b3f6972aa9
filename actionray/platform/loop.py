"""The one training loop, run by every Ray Train worker: ``train_loop_per_worker(config)``.

It knows no method: the method object that the config names (``cfg.recipe``, :mod:`actionray.platform.method`)
builds the model, names the parameter groups, provides the data source, turns a batch into a loss and named
metrics, and validates. Per epoch the loop trains on this worker's shard of the method's data stream, validates on
rank 0, and reports metrics together with a checkpoint (Train V2 keeps only metrics that come with a checkpoint).

Validation runs on rank 0 over the *unsplit* validation set (every worker could read it, only rank 0 does):
the numbers are exact full-set metrics, not averages of padded per-GPU shards as in the TDN logs, at the
cost of the other workers idling at the report barrier while rank 0 validates.

Worker hooks (``build_run(..., worker_hooks=...)``) are objects with ``after_epoch(epoch, rank)``, called on
every worker after each epoch's report, and/or ``after_step(epoch, step, rank)``, called after each
training step: a place for user extensions (and for tests that kill a worker at an epoch's end or in its middle).
"""

from __future__ import annotations

import math
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from actionray.platform.checkpoint import load_state, restore_rng_state, rng_state, save_state
from actionray.platform.config import ExperimentConfig
from actionray.platform.method import Evaluation, Method, MetricSpec, StepOutput
from actionray.platform.optim import build_optimizer, build_scheduler, clip_gradients
from actionray.platform.system_metrics import start_node_monitor, stop_node_monitor
from actionray.platform.tracking import Tracker, curves_figure

PROGRESS_PREFIX = "[actionray]"


def seed_everything(seed: int, rank: int = 0, epoch: int = 0) -> None:
    """Seed Python, NumPy and torch from (seed, rank, epoch): a resumed epoch draws what it drew the first time."""
    value = (seed * 1_000_003 + rank * 10_007 + epoch) % (2**31 - 1)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def _timed(iterator: Iterator[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], float]]:
    """Yield (batch, seconds spent waiting for it)."""
    iterator = iter(iterator)
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        yield batch, time.perf_counter() - start


def _all_reduce_sum(values: list[float]) -> list[float]:
    """Sum across workers (identity on one worker)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def _autocast(cfg: ExperimentConfig, device: torch.device):
    """bf16/fp16 autocast on GPU only; CPU runs stay fp32 (exact repeats, no slow CPU half paths)."""
    enabled = device.type == "cuda" and cfg.train.amp != "none"
    dtype = torch.bfloat16 if cfg.train.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


def _backward_step(loss: torch.Tensor, optimizer, scaler, params, clip: float | None) -> None:
    """Backward, optional gradient clipping, optimizer step (through the fp16 scaler when there is one)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        clip_gradients(params, clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        clip_gradients(params, clip)
        optimizer.step()


def train_one_epoch(model, method: Method, optimizer, scheduler, scaler, batches, cfg: ExperimentConfig,
                    device: torch.device, tracker: Tracker | None, epoch: int,
                    on_step: Callable[[int], None] | None = None) -> dict[str, float]:
    """One pass over this worker's shard; returns ``train_loss``, ``train_<metric>`` of the method's steps
    (sample-weighted means over all workers), ``lr``, ``clips_per_s`` and ``data_wait_frac``. ``on_step(k)`` is
    called after this worker's k-th step (1-based)."""
    model.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    loss_sum = seen = wait = 0.0
    steps = 0
    sums: dict[str, float] = {}
    start = time.perf_counter()
    for batch, waited in _timed(batches):
        wait += waited
        with _autocast(cfg, device):
            out: StepOutput = method.train_step(model, batch, cfg)
        _backward_step(out.loss, optimizer, scaler, params, cfg.optim.clip_grad_norm)
        scheduler.step()
        n = out.batch_size
        loss_value = float(out.loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"epoch {epoch + 1}: loss is {loss_value}; lower optim.lr or enable "
                                     f"optim.clip_grad_norm")
        loss_sum += loss_value * n
        seen += n
        values = {key: float(value) for key, value in out.metrics.items()}
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value * n
        if tracker is not None and scheduler.last_epoch % cfg.train.log_every == 0:
            step_metrics = {"step_loss": loss_value, "step_lr": optimizer.param_groups[0]["lr"]}
            step_metrics.update({f"step_{k}": v for k, v in values.items()})
            tracker.log_metrics(step_metrics, step=scheduler.last_epoch)
        steps += 1
        if on_step is not None:
            on_step(steps)
    elapsed = time.perf_counter() - start
    keys = sorted(sums)
    totals = _all_reduce_sum([loss_sum, seen, wait, elapsed, *(sums[k] for k in keys)])
    loss_sum, seen, wait, elapsed = totals[:4]
    if seen == 0:
        raise RuntimeError(f"epoch {epoch + 1}: no training batches reached the workers; check the training data "
                           f"and that data.batch_size ({cfg.data.batch_size}) is not larger than each worker's share")
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    metrics = {"train_loss": loss_sum / seen, "clips_per_s": seen / (elapsed / world),
               "data_wait_frac": wait / elapsed if elapsed else 0.0, "lr": optimizer.param_groups[0]["lr"]}
    metrics.update({f"train_{k}": totals[4 + i] / seen for i, k in enumerate(keys)})
    return metrics


def _format_value(key: str, value: float, spec: MetricSpec) -> str:
    return f"{key} {100 * value:.1f}%" if key in spec.percent else f"{key} {value:.4g}"


def progress_line(epoch: int, epochs: int, metrics: dict[str, float], spec: MetricSpec) -> str:
    """The per-epoch line printed by rank 0 (it reaches the driver and ``ray job logs``): the loss, the method's
    progress metrics (validation ones only on the epoch they were measured), lr and throughput."""
    parts = [f"{PROGRESS_PREFIX} epoch {epoch}/{epochs}", f"loss {metrics['train_loss']:.4f}"]
    fresh_val = metrics.get("val_epoch") == epoch
    shown = [k for k in spec.progress if k in metrics and (fresh_val or not k.startswith("val_"))]
    parts += [_format_value(k, metrics[k], spec) for k in shown]
    parts += [f"lr {metrics['lr']:.3g}", f"clips/s {metrics['clips_per_s']:.1f}",
              f"data_wait {100 * metrics['data_wait_frac']:.0f}%"]
    return " | ".join(parts)


def to_channels_last(model: torch.nn.Module) -> None:
    """NHWC storage for the 4-D (conv) weights only: ``Module.to(channels_last)`` raises on 5-D weights
    (TCP's temporal conv)."""
    for param in model.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=torch.channels_last)


def set_torch_threads(threads: int | None, local_workers: int) -> None:
    """Apply ``scaling.torch_threads`` (None keeps Ray's OMP_NUM_THREADS; 0 splits the node's cores)."""
    if threads is None:
        return
    if threads == 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cores // max(1, local_workers))
    torch.set_num_threads(threads)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


@dataclass
class RunState:
    """What a checkpoint carries besides the weights: where the run is and what it has seen."""

    start_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] | None = None


def _setup_worker(cfg: ExperimentConfig):
    """Rank, world size and device of this worker; seeds, torch threads and determinism applied."""
    import ray.train
    from ray.train.torch import get_device

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    seed_everything(cfg.train.seed, rank)
    set_torch_threads(cfg.scaling.torch_threads, context.get_local_world_size())
    if cfg.train.deterministic:
        # warn_only: a kernel without a deterministic variant (some CUDA ops) warns instead of failing the run
        torch.use_deterministic_algorithms(True, warn_only=True)
    return rank, world, get_device()


def _restore_checkpoint(resume_from: str | None = None, run_dir: str | None = None) -> dict[str, Any] | None:
    """The state to continue from, the newest of: the checkpoint Ray Train hands this worker (a restart within
    this fit), the driver's ``resume_from`` folder (the newest complete one when ``--resume`` started), and the
    newest complete checkpoint in the run's local storage folder ``run_dir``; None for a fresh start.

    Ray's own checkpoint comes from its controller, which registers a report asynchronously: a group that
    fails right after an epoch's checkpoint reached storage (a lost node) would otherwise train that epoch again
    and log it to MLflow twice. The folders are the truth (``newest_complete_checkpoint``).

    Each state is loaded at most once: the three are usually folders of the same run (Ray names them
    ``checkpoint_<UTC time>``, so names order them), and a folder named no later than the newest complete one
    on disk is not read again (a DCLR state is hundreds of MB)."""
    import ray.train

    from actionray.platform.checkpoint import newest_complete_checkpoint

    found = newest_complete_checkpoint(run_dir) if run_dir is not None else None
    candidates = [found[1]] if found else []

    def newer(folder: str) -> bool:
        return found is None or Path(folder).name > found[0].name

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None and newer(checkpoint.path):
        with checkpoint.as_directory() as folder:
            candidates.append(load_state(folder))
    if resume_from is not None and newer(resume_from):
        candidates.append(load_state(resume_from))
    return max(candidates, key=lambda state: state["epoch"], default=None)


def _build_training(cfg: ExperimentConfig, method: Method, state: dict[str, Any] | None, world: int,
                    steps_per_epoch: int, device: torch.device):
    """Model (restored, DDP-wrapped), optimizer, per-step scheduler and fp16 scaler.

    Elastic runs (``scaling.num_workers: [min, max]``) keep the per-worker batch and scale every group's learning
    rate linearly with the global batch, ``lr x world / max`` (Goyal et al. 2017, "Accurate, Large Minibatch SGD");
    a fixed-size group has world = max and its configured lr. Resuming with another world size than the
    checkpoint's places the schedule at ``completed epochs x steps_per_epoch(world)`` (docs/training.md)."""
    from ray.train.torch import prepare_model

    model = method.build_model(cfg)
    if state is not None:
        model.load_state_dict(state["model"])
    if device.type == "cuda" and cfg.train.channels_last:
        to_channels_last(model)
    kwargs = {"find_unused_parameters": True} if world > 1 and method.find_unused_parameters else None
    model = prepare_model(model, parallel_strategy_kwargs=kwargs)
    optimizer = build_optimizer(method.param_groups(_unwrap(model), cfg), cfg)
    bases = [group["lr"] * world / cfg.scaling.num_workers for group in optimizer.param_groups]
    for group, base in zip(optimizer.param_groups, bases):
        group["lr"] = base
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and cfg.train.amp == "fp16" else None
    if state is None:
        return model, optimizer, build_scheduler(optimizer, cfg, steps_per_epoch), scaler
    if state.get("world_size", world) == world:
        scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        return model, optimizer, scheduler, scaler
    optimizer.load_state_dict(state["optimizer"])  # moments; its lrs belong to the old world size
    for group, base in zip(optimizer.param_groups, bases):
        group["initial_lr"] = base
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch, start_step=state["epoch"] * steps_per_epoch)
    return model, optimizer, scheduler, scaler


def _run_state(state: dict[str, Any] | None, rank: int) -> RunState:
    if state is None:
        return RunState()
    if rank == 0:
        restore_rng_state(state["rng"])
        print(f"{PROGRESS_PREFIX} resumed from checkpoint at epoch {state['epoch']}", flush=True)
    return RunState(state["epoch"], state["history"], state["best"])


def _update_best(run: RunState, metrics: dict[str, float], cfg: ExperimentConfig, done: int) -> None:
    """Track the best value of the checkpoint metric over the epochs where it was measured."""
    key, mode = cfg.checkpoint_metric
    if key not in metrics or metrics.get("val_epoch", done) != done and key.startswith("val_"):
        return
    value = metrics[key]
    if run.best is None or (value > run.best["value"] if mode == "max" else value < run.best["value"]):
        run.best = {"metric": key, "value": value, "epoch": done}


def _report(metrics: dict[str, float], state: dict[str, Any] | None) -> None:
    """``ray.train.report`` with a checkpoint folder written atomically on rank 0 (``state`` None elsewhere)."""
    import ray.train
    from ray.train import Checkpoint

    with tempfile.TemporaryDirectory(prefix="actionray-ckpt-") as tmp:
        checkpoint = None
        if state is not None:
            save_state(tmp, state)
            checkpoint = Checkpoint.from_directory(tmp)
        # Synchronous upload: storage holds a complete copy when report returns, then tmp is deleted.
        ray.train.report(metrics, checkpoint=checkpoint)


def _log_artifacts(tracker: Tracker, evaluation: Evaluation | None, history: list[dict[str, float]],
                   spec: MetricSpec, best: dict[str, Any] | None, epochs: int) -> None:
    """The last validation's artifacts, the training curves and the best value, into the MLflow run."""
    from actionray.platform.tracking import log_artifact_object

    for name, artifact in (evaluation.artifacts if evaluation else {}).items():
        log_artifact_object(tracker, artifact() if callable(artifact) else artifact, name)
    if history:
        log_artifact_object(tracker, curves_figure(history, ("train_loss", "val_loss"),
                                                   (spec.primary, spec.primary.replace("val_", "train_", 1))),
                            "plots/training_curves.png")
    if best:
        tracker.log_metrics({f"best_{best['metric']}": best["value"], "best_epoch": best["epoch"]}, step=epochs)


def _step_hooks(hooks, epoch: int, rank: int) -> Callable[[int], None] | None:
    """``after_step(epoch, step, rank)`` of the worker hooks that define it (epoch and step 1-based), or None."""
    stepping = [hook for hook in hooks or () if hasattr(hook, "after_step")]
    if not stepping:
        return None

    def after_step(step: int) -> None:
        for hook in stepping:
            hook.after_step(epoch, step, rank)

    return after_step


def _start_node_monitor(cfg: ExperimentConfig, config: dict[str, Any]):
    """The worker with local rank 0 samples its node's system metrics into the run (platform/system_metrics.py)."""
    import ray.train

    context = ray.train.get_context()
    if context.get_local_rank() != 0:
        return None
    return start_node_monitor(config.get("tracking_uri"), config.get("mlflow_run_id"), context.get_node_rank(),
                              cfg.tracking.system_metrics_interval_s)


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train entry point; ``config`` holds the resolved config object ``cfg``, the MLflow run and hooks."""
    import ray.train

    cfg: ExperimentConfig = config["cfg"]
    method = cfg.recipe
    spec = method.metrics(cfg)
    rank, world, device = _setup_worker(cfg)
    source = method.data(cfg)
    node_monitor = _start_node_monitor(cfg, config)
    try:
        state = _restore_checkpoint(config.get("resume_from"), config.get("run_dir"))
        steps_per_epoch = source.steps_per_epoch(world)
        model, optimizer, scheduler, scaler = _build_training(cfg, method, state, world, steps_per_epoch, device)
        run = _run_state(state, rank)
        if rank == 0 and world != cfg.scaling.num_workers:
            print(f"{PROGRESS_PREFIX} elastic: training with {world} of {cfg.scaling.num_workers} workers from epoch "
                  f"{run.start_epoch + 1}, lr x {world}/{cfg.scaling.num_workers}, "
                  f"{steps_per_epoch} steps per epoch", flush=True)
        tracker = Tracker(config.get("tracking_uri"), config.get("mlflow_run_id")) if rank == 0 else None
        if tracker is not None:  # epochs of the restored checkpoint that a stop kept out of MLflow
            tracker.log_missing_epochs(run.history)
        last_val: dict[str, float] = {}
        evaluation: Evaluation | None = None
        for epoch in range(run.start_epoch, cfg.train.epochs):
            seed_everything(cfg.train.seed, rank, epoch + 1)
            batches = source.batches(ray.train.get_dataset_shard("train"), "train", epoch=epoch, device=device)
            metrics = train_one_epoch(model, method, optimizer, scheduler, scaler, batches, cfg, device, tracker,
                                      epoch, _step_hooks(config.get("worker_hooks"), epoch + 1, rank))
            done = epoch + 1
            # Also the first epoch of a (re)start: every report then carries the checkpoint score attribute (Ray
            # warns about each report without it), and the curve starts where training does.
            if rank == 0 and (done % cfg.train.val_every == 0 or done == cfg.train.epochs or not last_val):
                val_batches = source.batches(ray.train.get_dataset_shard("val"), "val", epoch=epoch, device=device)
                with _autocast(cfg, device):
                    evaluation = method.validate(_unwrap(model), val_batches, cfg)
                last_val = {**evaluation.metrics, "val_epoch": done}
            # Non-validation epochs repeat the latest validation values (val_epoch says when they were measured) so
            # the checkpoint score attribute exists in every report.
            metrics.update(last_val)
            metrics["epoch"] = done
            if cfg.scaling.elastic:
                metrics["world_size"] = world
            saved = None
            if rank == 0:
                _update_best(run, metrics, cfg, done)
                run.history.append(dict(metrics))
                print(progress_line(done, cfg.train.epochs, metrics, spec), flush=True)
                saved = {"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "epoch": done, "history": run.history,
                         "best": run.best, "rng": rng_state(), "config": cfg.to_dict(), "world_size": world}
            _report(metrics, saved)
            if rank == 0:
                # After the checkpoint is in storage: an interrupt before it leaves no MLflow value of an epoch
                # that --resume trains again (each epoch once in MLflow).
                tracker.log_metrics(metrics, step=done)
            for hook in config.get("worker_hooks") or ():
                if hasattr(hook, "after_epoch"):
                    hook.after_epoch(done, rank)
    finally:
        stop_node_monitor(node_monitor)  # never raises
        source.close()

    if run.start_epoch >= cfg.train.epochs and run.history:
        # Resumed from the final checkpoint (e.g. a Tune trial stopped between its last report and its end):
        # nothing to train, but report the final metrics again so the caller (Tune) sees a finished run.
        ray.train.report(dict(run.history[-1]))
    if rank == 0 and tracker is not None:
        # No final status here: a driver sets it (fit(), or for trials the sweep driver from Tune's view),
        # so a worker still tearing down can never overwrite it.
        _log_artifacts(tracker, evaluation, run.history, spec, run.best, cfg.train.epochs)
    return {"epochs": cfg.train.epochs, "start_epoch": run.start_epoch, "world_size": world,
            "final": run.history[-1] if run.history else {}, "best": run.best, "history": run.history,
            "mlflow_run_id": config.get("mlflow_run_id"),
            **{name.removesuffix(".json"): obj for name, obj in (evaluation.artifacts if evaluation else {}).items()
               if name.endswith(".json")}}
