"""Every clip classifier learns: its real training step overfits a fixed batch.

The overfit tests run the method's own ``train_step`` with the optimizer the platform builds from the method's
parameter groups (no Ray), so a broken loss, a detached head, a parameter group that leaves weights out or a
wrong sign shows up as a loss that does not fall. Data that carries no signal through the whole platform is
caught by the short fits of ``tests/test_fit_beats_chance.py`` (each method through ``fit`` on easy generated
videos, against chance and an untrained control) and by the method-contract fit (``tests/test_method_contract.py``).
"""

from __future__ import annotations

import pytest
import torch

from actionray.config import build_config
from actionray.platform.optim import build_optimizer

# method section, frames per segment, input size, lr, steps, required loss ratio (last / first)
# TDN and GCNet need 64 px: their long-term difference module pools the last stage's map (1x1 at 32 px).
# TCPNet's covariance head starts slowly from a random init: a larger lr and more steps.
LEARNERS = {
    "tsn": ({"name": "tsn"}, 1, 32, 0.01, 6, 0.2),
    "tdn": ({"name": "tdn"}, 5, 64, 0.01, 6, 0.3),
    "gcnet_ccl": ({"name": "gcnet", "ccl": {"enabled": True, "weight": 0.1}}, 5, 64, 0.01, 6, 0.3),
    "tcp": ({"name": "tcp", "tcp_reduced_dim": 16}, 1, 32, 0.05, 12, 0.4),
}


def learner_config(key: str):
    """A tiny ResNet-18 config of the method (2 segments, 4 classes, no dropout, no weight decay)."""
    method, frames_per_segment, size, lr, _, _ = LEARNERS[key]
    return build_config({
        "method": {**method, "backbone": "resnet18", "dropout": 0.0, "fc_init_std": 0.01},
        "data": {"num_classes": 4, "num_segments": 2, "frames_per_segment": frames_per_segment, "input_size": size},
        "optim": {"lr": lr, "weight_decay": 0.0},
    })


def overfit_losses(key: str, frozen: bool = False) -> list[float]:
    """Losses of ``steps`` real training steps on one fixed batch of 8 clips (B, N, 3, H, W); ``frozen`` sets
    every group's lr to 0 (the config rejects optim.lr=0)."""
    *_, steps, _ = LEARNERS[key]
    cfg = learner_config(key)
    method = cfg.recipe
    torch.manual_seed(0)
    model = method.build_model(cfg).train()
    optimizer = build_optimizer(method.param_groups(model, cfg), cfg)
    for group in optimizer.param_groups if frozen else ():
        group["lr"] = 0.0
    n, size = cfg.data.num_segments * cfg.data.frames_per_segment, cfg.data.input_size
    batch = {"video": torch.randn(8, n, 3, size, size, generator=torch.Generator().manual_seed(0)),
             "label": torch.arange(8) % 4}
    losses = []
    for _ in range(steps):
        out = method.train_step(model, batch, cfg)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert out.batch_size == 8 and "top1" in out.metrics
    return losses


@pytest.mark.parametrize("key", list(LEARNERS))
def test_the_real_training_step_overfits_a_fixed_batch(key):
    *_, ratio = LEARNERS[key]
    losses = overfit_losses(key)
    assert losses[-1] < ratio * losses[0], losses


def test_the_overfit_check_fails_when_nothing_is_learned():
    """The check above can fail: with lr 0 the same steps leave the loss where it started."""
    losses = overfit_losses("tsn", frozen=True)
    assert not losses[-1] < LEARNERS["tsn"][-1] * losses[0], losses
