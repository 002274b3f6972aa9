"""Per-iteration schedules (TDN semantics), parameter groups and gradient clipping."""

import math

import pytest
import torch

from actionray.config import build_config
from actionray.platform.optim import build_optimizer, build_scheduler, clip_gradients, lr_factor


def cfg_with(**schedule):
    epochs = schedule.pop("epochs", 10)
    return build_config({"method": {"name": "tsn"}, "schedule": schedule, "train": {"epochs": epochs}, "optim": {"lr": 0.1}})


def lrs_over(cfg, iters_per_epoch, steps, groups=None):
    model = torch.nn.Linear(2, 2)
    groups = groups or [{"params": list(model.parameters())}]
    opt = build_optimizer(groups, cfg)
    sched = build_scheduler(opt, cfg, iters_per_epoch)
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return out


def test_step_schedule_milestones_are_epochs_converted_to_iterations():
    cfg = cfg_with(name="step", milestones=[2, 3], gamma=0.1)
    lrs = [g[0] for g in lrs_over(cfg, iters_per_epoch=4, steps=14)]
    assert lrs[:8] == pytest.approx([0.1] * 8)        # epochs 0-1
    assert lrs[8:12] == pytest.approx([0.01] * 4)     # epoch 2
    assert lrs[12:] == pytest.approx([0.001] * 2)     # epoch 3


def test_linear_warmup_rises_from_start_factor_then_hands_over():
    cfg = cfg_with(name="constant", warmup_epochs=1, warmup_start_factor=0.01)
    lrs = [g[0] for g in lrs_over(cfg, iters_per_epoch=4, steps=6)]
    assert lrs[0] == pytest.approx(0.001)
    assert lrs[1] < lrs[2] < lrs[3] < 0.1
    assert lrs[4:] == pytest.approx([0.1, 0.1])


def test_step_milestones_count_after_warmup_like_tdn():
    # TDN: milestone iteration = (epoch_milestone - warmup) * iters, counted from the end of warm-up,
    # so the drop lands at absolute epoch 2 either way.
    cfg = cfg_with(name="step", milestones=[2], warmup_epochs=1)
    lrs = [g[0] for g in lrs_over(cfg, iters_per_epoch=2, steps=6)]
    assert lrs[2:4] == pytest.approx([0.1, 0.1])
    assert lrs[4:] == pytest.approx([0.01, 0.01])


def test_cosine_anneals_to_eta_min_over_epochs_after_warmup():
    cfg = cfg_with(name="cosine", eta_min=1e-3, epochs=4)
    iters = 5
    assert lr_factor(0, cfg, iters) == pytest.approx(1.0)
    assert lr_factor(10, cfg, iters) * 0.1 == pytest.approx(0.5 * (0.1 + 1e-3))
    assert lr_factor(20, cfg, iters) * 0.1 == pytest.approx(1e-3)


def test_all_groups_follow_the_schedule_including_fixed_lr_group():
    # GCNet's Mamba group (fixed base lr 0.03) drops x0.1 at milestones too, as in the released main.py
    cfg = cfg_with(name="step", milestones=[1])
    model = torch.nn.Linear(2, 2)
    groups = [{"params": [model.weight]}, {"params": [model.bias], "lr": 0.03}]
    lrs = lrs_over(cfg, iters_per_epoch=2, steps=3, groups=groups)
    assert lrs[0] == pytest.approx([0.1, 0.03])
    assert lrs[2] == pytest.approx([0.01, 0.003])


def test_sgd_uses_momentum_weight_decay_and_nesterov_from_config():
    cfg = build_config({"method": {"name": "tsn"}, "optim": {"lr": 0.1, "momentum": 0.8, "weight_decay": 1e-3, "nesterov": True}})
    opt = build_optimizer([{"params": list(torch.nn.Linear(2, 2).parameters())}], cfg)
    group = opt.param_groups[0]
    assert (group["momentum"], group["weight_decay"], group["nesterov"]) == (0.8, 1e-3, True)


def test_adamw_keeps_per_group_lr_and_decoupled_weight_decay():
    cfg = build_config({"method": {"name": "tsn"}, "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05, "betas": [0.9, 0.99]}})
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer([{"params": [model.weight]}, {"params": [model.bias], "lr": 1e-2}], cfg)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-2]
    assert opt.param_groups[0]["betas"] == (0.9, 0.99) and opt.param_groups[0]["weight_decay"] == 0.05
    # the schedule multiplies every group's own base lr, whatever the optimizer
    sched = build_scheduler(opt, build_config({"method": {"name": "tsn"}, "optim": {"name": "adamw", "lr": 1e-3},
                                               "schedule": {"name": "step", "milestones": [1]}}), 2)
    for _ in range(2):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4, 1e-3])


def test_optimizer_rejects_model_without_trainable_parameters():
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer([{"params": []}], build_config({"method": {"name": "tsn"}}))


def test_gradient_clipping_bounds_total_norm():
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))]
    params[0].grad = torch.full((3,), 3.0)
    params[1].grad = torch.full((4,), 4.0)
    before = clip_gradients(params, max_norm=1.0)
    assert before == pytest.approx(math.sqrt(27 + 64))
    total = torch.linalg.vector_norm(torch.cat([p.grad for p in params]))
    assert float(total) == pytest.approx(1.0, rel=1e-4)


def test_a_scheduler_placed_at_a_step_matches_one_stepped_there():
    """An elastic run resuming at another world size rebuilds its schedule at completed epochs x new steps."""
    cfg = cfg_with(name="step", milestones=[2, 4], warmup_epochs=1, warmup_start_factor=0.01)
    stepped = lrs_over(cfg, iters_per_epoch=5, steps=18)
    for start in (0, 3, 5, 12, 17):
        model = torch.nn.Linear(2, 2)
        opt = build_optimizer([{"params": list(model.parameters())}], cfg)
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
        sched = build_scheduler(opt, cfg, 5, start_step=start)
        assert sched.last_epoch == start
        assert opt.param_groups[0]["lr"] == pytest.approx(stepped[start][0])
