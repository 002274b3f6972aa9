"""The one training loop, run by every Ray Train worker: ``train_loop_per_worker(config)``.

It knows no method: the trainable named in the config builds the model, computes the loss and names the
parameter groups. Per epoch it trains on this worker's shard of the Ray Data clip stream, validates on rank 0,
and reports metrics together with a checkpoint (Train V2 keeps only metrics that come with a checkpoint).

Validation runs on rank 0 over the *unsplit* validation set (every worker could read it, only rank 0 does):
the numbers are exact full-set accuracies, not averages of padded per-GPU shards as in the TDN logs, at the
cost of the other workers idling at the report barrier while rank 0 validates.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from actionray.platform.checkpoint import load_state, restore_rng_state, rng_state, save_state
from actionray.platform.config import ExperimentConfig, config_from_dict
from actionray.platform.metrics import confusion_matrix, mean_class_accuracy, top_k_accuracy
from actionray.platform.optim import build_optimizer, build_scheduler, clip_gradients
from actionray.platform.tracking import Tracker, confusion_figure, curves_figure
from actionray.trainables import get_trainable

PROGRESS_PREFIX = "[actionray]"


def seed_everything(seed: int, rank: int = 0, epoch: int = 0) -> None:
    """Seed Python, NumPy and torch from (seed, rank, epoch): a resumed epoch draws what it drew the first time."""
    value = (seed * 1_000_003 + rank * 10_007 + epoch) % (2**31 - 1)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def iters_per_epoch(cfg: ExperimentConfig, world_size: int) -> int:
    """Optimizer steps per epoch on each worker: equal shards of the train list, full batches only."""
    from actionray.platform.data.annotations import read_list

    videos = len(read_list(cfg.data.train_list, cfg.data.root))
    return max(1, (videos // world_size) // cfg.data.batch_size)


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


def train_one_epoch(model, trainable, optimizer, scheduler, scaler, batches, cfg: ExperimentConfig,
                    device: torch.device, tracker: Tracker | None, epoch: int) -> dict[str, float]:
    """One pass over this worker's shard; returns metrics summed over all workers."""
    model.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    loss_sum = correct = seen = wait = 0.0
    term_sums: dict[str, float] = {}
    start = time.perf_counter()
    for batch, waited in _timed(batches):
        wait += waited
        video, label = batch["video"], batch["label"]
        with _autocast(cfg, device):
            loss, logits, terms = trainable.compute_loss(model, {"video": video, "label": label}, cfg)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            clip_gradients(params, cfg.optim.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            clip_gradients(params, cfg.optim.clip_grad_norm)
            optimizer.step()
        scheduler.step()
        n = label.shape[0]
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"epoch {epoch + 1}: loss is {loss_value}; lower optim.lr or enable "
                                     f"optim.clip_grad_norm")
        loss_sum += loss_value * n
        correct += float((logits.detach().argmax(1) == label).sum())
        seen += n
        for key, value in terms.items():
            term_sums[key] = term_sums.get(key, 0.0) + float(value) * n
        if tracker is not None and scheduler.last_epoch % cfg.train.log_every == 0:
            step_metrics = {"step_loss": loss_value, "step_lr": optimizer.param_groups[0]["lr"]}
            step_metrics.update({f"step_{k}": float(v) for k, v in terms.items()})
            tracker.log_metrics(step_metrics, step=scheduler.last_epoch)
    elapsed = time.perf_counter() - start
    keys = sorted(term_sums)
    totals = _all_reduce_sum([loss_sum, correct, seen, wait, elapsed, *(term_sums[k] for k in keys)])
    loss_sum, correct, seen, wait, elapsed = totals[:5]
    if seen == 0:
        raise RuntimeError(f"epoch {epoch + 1}: no training batches reached the workers; check data.train_list "
                           f"and that data.batch_size ({cfg.data.batch_size}) is not larger than each worker's share")
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    metrics = {"train_loss": loss_sum / seen, "train_top1": correct / seen,
               "clips_per_s": seen / (elapsed / world), "data_wait_frac": wait / elapsed if elapsed else 0.0,
               "lr": optimizer.param_groups[0]["lr"]}
    metrics.update({f"train_{k}": totals[5 + i] / seen for i, k in enumerate(keys)})
    return metrics


@torch.no_grad()
def validate(model, batches, cfg: ExperimentConfig, device: torch.device) -> tuple[dict[str, float], np.ndarray]:
    """1 clip, centre crop over the whole validation set; returns metrics and the confusion matrix."""
    model.eval()
    scores, labels = [], []
    for batch in batches:
        with _autocast(cfg, device):
            logits = model(batch["video"])
        scores.append(logits.float().cpu())
        labels.append(batch["label"].cpu())
    if not scores:
        raise RuntimeError(f"validation produced no batches; check data.val_list ({cfg.data.val_list})")
    logits, label = torch.cat(scores), torch.cat(labels)
    top1, top5 = top_k_accuracy(logits.numpy(), label.numpy(), (1, 5))
    metrics = {"val_loss": float(F.cross_entropy(logits, label)), "val_top1": top1, "val_top5": top5,
               "val_mean_class_acc": mean_class_accuracy(logits.numpy(), label.numpy())}
    matrix = confusion_matrix(logits.argmax(1).numpy(), label.numpy(), cfg.data.num_classes)
    return metrics, matrix


def progress_line(epoch: int, epochs: int, metrics: dict[str, float]) -> str:
    """The per-epoch line printed by rank 0 (it reaches the driver and ``ray job logs``)."""
    parts = [f"{PROGRESS_PREFIX} epoch {epoch}/{epochs}", f"loss {metrics['train_loss']:.4f}",
             f"top1 {100 * metrics['train_top1']:.1f}%"]
    if "val_top1" in metrics and metrics.get("val_epoch") == epoch:
        parts.append(f"val_top1 {100 * metrics['val_top1']:.1f}% val_top5 {100 * metrics['val_top5']:.1f}%")
    parts += [f"lr {metrics['lr']:.3g}", f"clips/s {metrics['clips_per_s']:.1f}",
              f"data_wait {100 * metrics['data_wait_frac']:.0f}%"]
    return " | ".join(parts)


def _maybe_inject_fault(fault: dict[str, Any] | None, epoch: int, rank: int) -> None:
    """Test hook (ACTIONRAY_FAULT_AFTER_EPOCH on the driver): kill this worker process once, after ``epoch``."""
    if not fault or fault["after_epoch"] != epoch or fault.get("rank", 0) != rank:
        return
    marker = Path(fault["marker"])
    if marker.exists():
        return
    import ray.train

    # report() returns once the checkpoint is uploaded, but the controller registers it asynchronously: wait
    # until it has, so the test checks restart semantics, not this race (a real crash comes mid-epoch).
    ray.train.get_all_reported_checkpoints(timeout_s=120)
    marker.write_text(f"pid {os.getpid()} killed after epoch {epoch}\n")
    os._exit(1)


def _per_class(matrix: np.ndarray | None) -> list[float] | None:
    """Recall per class from the last validation confusion matrix (None for classes without videos)."""
    if matrix is None:
        return None
    counts = matrix.sum(axis=1)
    return [float(matrix[c, c] / counts[c]) if counts[c] else None for c in range(len(matrix))]


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


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train entry point; ``config`` holds the resolved ``cfg`` dict plus tracking/fault settings."""
    import ray.train
    from ray.train import Checkpoint
    from ray.train.torch import get_device, prepare_model

    from actionray.platform.data.ingest import iter_model_batches

    cfg = config_from_dict(config["cfg"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    seed_everything(cfg.train.seed, rank)
    device = get_device()
    set_torch_threads(cfg.scaling.torch_threads, context.get_local_world_size())
    if cfg.train.deterministic:
        # warn_only: a kernel without a deterministic variant (some CUDA ops) warns instead of failing the run
        torch.use_deterministic_algorithms(True, warn_only=True)
    trainable = get_trainable(cfg.trainable)
    model = trainable.build_model(cfg)

    state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = load_state(folder)
        model.load_state_dict(state["model"])
    if device.type == "cuda" and cfg.train.channels_last:
        to_channels_last(model)
    kwargs = {"find_unused_parameters": True} if world > 1 and trainable.find_unused_parameters else None
    model = prepare_model(model, parallel_strategy_kwargs=kwargs)
    optimizer = build_optimizer(trainable.param_groups(_unwrap(model), cfg), cfg)
    scheduler = build_scheduler(optimizer, cfg, iters_per_epoch(cfg, world))
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and cfg.train.amp == "fp16" else None
    start_epoch, history, best = 0, [], None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history, best = state["epoch"], state["history"], state["best"]
        if rank == 0:
            restore_rng_state(state["rng"])
            print(f"{PROGRESS_PREFIX} resumed from checkpoint at epoch {start_epoch}", flush=True)

    tracker = Tracker(config.get("tracking_uri"), config.get("mlflow_run_id")) if rank == 0 else None
    last_val: dict[str, float] = {}
    matrix = None
    for epoch in range(start_epoch, cfg.train.epochs):
        seed_everything(cfg.train.seed, rank, epoch + 1)
        shard = ray.train.get_dataset_shard("train")
        batches = iter_model_batches(shard, cfg, "train", epoch=epoch, device=device)
        metrics = train_one_epoch(model, trainable, optimizer, scheduler, scaler, batches, cfg, device,
                                  tracker, epoch)
        done = epoch + 1
        if rank == 0 and (done % cfg.train.val_every == 0 or done == cfg.train.epochs):
            val_batches = iter_model_batches(ray.train.get_dataset_shard("val"), cfg, "val", epoch=epoch,
                                             device=device)
            last_val, matrix = validate(_unwrap(model), val_batches, cfg, device)
            last_val["val_epoch"] = done
        # Non-validation epochs repeat the latest validation values (val_epoch says when they were measured) so
        # the checkpoint score attribute exists in every report.
        metrics.update(last_val)
        metrics["epoch"] = done
        key = cfg.train.checkpoint_metric
        if rank == 0 and key in metrics and metrics.get("val_epoch", done) == done:
            better = best is None or (metrics[key] > best["value"] if cfg.train.checkpoint_mode == "max"
                                      else metrics[key] < best["value"])
            if better:
                best = {"metric": key, "value": metrics[key], "epoch": done}
        if rank == 0:
            history.append(dict(metrics))
            print(progress_line(done, cfg.train.epochs, metrics), flush=True)
            tracker.log_metrics(metrics, step=done)
        with tempfile.TemporaryDirectory(prefix="actionray-ckpt-") as tmp:
            ckpt = None
            if rank == 0:
                save_state(tmp, {"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                                 "scheduler": scheduler.state_dict(), "epoch": done, "history": history,
                                 "best": best, "rng": rng_state(), "config": cfg.to_dict()})
                ckpt = Checkpoint.from_directory(tmp)
            # Synchronous upload: storage holds a complete copy when report returns, then tmp is deleted.
            ray.train.report(metrics, checkpoint=ckpt)
        _maybe_inject_fault(config.get("fault"), done, rank)

    if start_epoch >= cfg.train.epochs and history:
        # Resumed from the final checkpoint (e.g. a Tune trial stopped between its last report and its end):
        # nothing to train, but report the final metrics again so the caller (Tune) sees a finished run.
        ray.train.report(dict(history[-1]))
    summary = {"epochs": cfg.train.epochs, "start_epoch": start_epoch, "world_size": world,
               "val_per_class_acc": _per_class(matrix), "final": history[-1] if history else {},
               "best": best, "history": history, "mlflow_run_id": config.get("mlflow_run_id")}
    if rank == 0 and tracker is not None:
        if matrix is not None:
            tracker.log_figure(confusion_figure(matrix), "plots/confusion_matrix.png")
        if history:
            tracker.log_figure(curves_figure(history), "plots/training_curves.png")
        if best:
            tracker.log_metrics({f"best_{best['metric']}": best["value"], "best_epoch": best["epoch"]},
                                step=cfg.train.epochs)
        # No final status here: a driver sets it (fit(), or for trials the sweep driver from Tune's view),
        # so a worker still tearing down can never overwrite it.
    return summary
