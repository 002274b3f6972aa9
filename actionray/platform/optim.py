"""SGD (or AdamW) and per-iteration learning-rate schedules (TDN ops/lr_scheduler.py semantics).

Milestones are given in epochs and converted to iterations, as the TDN/GCNet code does, so a schedule behaves
the same whatever the batch size. Every parameter group (including GCNet's fixed-lr Mamba group) is scaled by
the same factor: GCNet's main.py steps one MultiStep scheduler over both groups, so its "fixed" 0.03 also
drops x0.1 at each milestone; we follow the code, not the paper's wording.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from actionray.platform.config import ExperimentConfig


def build_optimizer(param_groups: Iterable[dict[str, Any]], cfg: ExperimentConfig) -> torch.optim.Optimizer:
    """``cfg.optim.name`` (SGD, AdamW or Adam) over ``param_groups`` (each may carry its own ``lr``/``weight_decay``);
    defaults from ``cfg.optim``."""
    groups = [g for g in param_groups if list(g["params"])]
    if not groups:
        raise ValueError("no trainable parameters: every parameter group is empty")
    o = cfg.optim
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    if o.name == "adam":  # coupled L2: weight_decay * w joins the gradient before the moment estimates
        return torch.optim.Adam(groups, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                           nesterov=o.nesterov and o.momentum > 0)


def lr_factor(iteration: int, cfg: ExperimentConfig, iters_per_epoch: int) -> float:
    """Multiplier on each group's base lr after ``iteration`` optimizer steps (warm-up, then the schedule)."""
    s = cfg.schedule
    warmup_iters = int(round(s.warmup_epochs * iters_per_epoch))
    if iteration < warmup_iters:
        # Linear from start_factor to 1 (TDN warms up from lr/100: start_factor 0.01).
        return s.warmup_start_factor + (1.0 - s.warmup_start_factor) * iteration / warmup_iters
    if s.name == "constant":
        return 1.0
    if s.name == "step":
        # TDN: milestone iterations = (epoch_milestone - warmup_epochs) * iters, counted after warm-up.
        after = iteration - warmup_iters
        passed = sum(after >= (m - s.warmup_epochs) * iters_per_epoch for m in s.milestones)
        return s.gamma ** passed
    # cosine: T_max = (epochs - warmup) * iters, annealed towards eta_min (an absolute lr, as in TDN).
    total = max(1, (cfg.train.epochs - s.warmup_epochs) * iters_per_epoch)
    progress = min(1.0, (iteration - warmup_iters) / total)
    eta_ratio = s.eta_min / cfg.optim.lr
    return eta_ratio + (1.0 - eta_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ExperimentConfig, iters_per_epoch: int,
                    start_step: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler to ``step()`` after every optimizer step; its state_dict resumes mid-schedule.

    ``start_step`` > 0 places a new scheduler after that many steps (each group's ``initial_lr`` must be set):
    an elastic run that resumes with another world size has another ``iters_per_epoch``, so its position is
    recomputed from the completed epochs instead of loaded."""
    if iters_per_epoch < 1:
        raise ValueError(f"iters_per_epoch must be >= 1, got {iters_per_epoch}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg, iters_per_epoch),
                                             last_epoch=start_step - 1)


def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_norm: float | None) -> float:
    """Clip by total L2 norm (``--gd``) when ``max_norm`` is set; returns the norm before clipping."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    if max_norm is None:
        return float(torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params])))
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
