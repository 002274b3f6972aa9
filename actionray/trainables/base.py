"""What a method must provide to the platform, and the registry that finds it by name.

A trainable is the method's recipe: how to build its network from the config, how to turn a batch into a
loss, and which parameter groups the optimizer gets. The training loop calls only these three functions,
so it names no method.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from actionray.platform.config import ExperimentConfig

Batch = dict[str, torch.Tensor]  # "video" float32 (B, N, 3, H, W), "label" int64 (B,)
LossOutput = tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]


@runtime_checkable
class Trainable(Protocol):
    """A method's recipe; see :mod:`actionray.trainables.tsn` for the simplest one."""

    name: str
    # DDP must tolerate parameters that get no gradient (TDN keeps a dead conv1 copy registered).
    find_unused_parameters: bool

    def build_model(self, cfg: ExperimentConfig) -> torch.nn.Module: ...

    def compute_loss(self, model: torch.nn.Module, batch: Batch, cfg: ExperimentConfig) -> LossOutput: ...

    def param_groups(self, model: torch.nn.Module, cfg: ExperimentConfig) -> list[dict[str, Any]]: ...


_MODULES = {"tsn": "tsn", "tdn": "tdn", "gcnet": "gcnet", "tcp": "tcp"}


def get_trainable(name: str) -> Trainable:
    """The trainable registered under ``name`` (tsn, tdn, gcnet, tcp)."""
    if name not in _MODULES:
        raise KeyError(f"unknown trainable {name!r}; known: {', '.join(sorted(_MODULES))}")
    module = importlib.import_module(f"actionray.trainables.{_MODULES[name]}")
    return module.TRAINABLE


def build_model_from_config(cfg: ExperimentConfig, **extra: Any) -> torch.nn.Module:
    """``actionray.models.build_model`` with every model/data option of ``cfg`` (shared by all methods)."""
    from actionray.models import build_model

    m, d = cfg.model, cfg.data
    return build_model(
        m.name, num_classes=d.num_classes, num_segments=d.num_segments, backbone=m.backbone,
        pretrained=m.pretrained, dropout=m.dropout, partial_bn=m.partial_bn, consensus=m.consensus,
        fc_init_std=m.fc_init_std, input_size=d.input_size, **extra)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, cfg: ExperimentConfig) -> torch.Tensor:
    """Video-level cross-entropy with the configured label smoothing. logits (B, C), labels (B,)."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=cfg.loss.label_smoothing)


def all_parameters(model: torch.nn.Module) -> list[dict[str, Any]]:
    """One group holding every trainable parameter (TDN/GCNet apply no per-group lr/decay multipliers)."""
    return [{"params": [p for p in model.parameters() if p.requires_grad], "name": "all"}]


class SupervisedTrainable:
    """Cross-entropy on the video score: TSN, TDN and TCPNet differ only in the model they build."""

    find_unused_parameters = False

    def __init__(self, name: str, find_unused_parameters: bool = False) -> None:
        self.name = name
        self.find_unused_parameters = find_unused_parameters

    def build_model(self, cfg: ExperimentConfig) -> torch.nn.Module:
        """The network named by ``cfg.model.name``."""
        return build_model_from_config(cfg)

    def compute_loss(self, model: torch.nn.Module, batch: Batch, cfg: ExperimentConfig) -> LossOutput:
        """Cross-entropy on logits (B, C) of the video batch (B, N, 3, H, W)."""
        logits = model(batch["video"])
        ce = cross_entropy(logits, batch["label"], cfg)
        return ce, logits, {"ce": ce.detach()}

    def param_groups(self, model: torch.nn.Module, cfg: ExperimentConfig) -> list[dict[str, Any]]:
        """A single group (the reference recipes' effective behaviour)."""
        return all_parameters(model)
