"""The contract between the platform and a method: everything a method declares in one place.

A method is one module (or package) under ``actionray/trainables/`` that defines ``METHOD``, an object with the
attributes and functions of :class:`Method`, plus one line in the catalog (``actionray/trainables/__init__.py``).
The platform (training loop, Tune, ablations, tracking, CLI) calls only what is declared here, so it runs a clip
classifier (TSN, TDN, GCNet, TCPNet), contrastive pre-training or a localization method on snippet features the
same way. ``docs/adding_a_method.md`` walks through the three shapes.

What a method owns:
- ``config_class``: its config section (a :class:`~actionray.platform.config.MethodConfig` subclass).
- ``build_model(cfg)``: its network(s) as one ``nn.Module`` (a MoCo wrapper holds both encoders and its queues).
- ``data(cfg)``: its :class:`~actionray.platform.data.source.DataSource` (what rows, from what source).
- ``param_groups(model, cfg)``: optimizer groups (e.g. GCNet's fixed-lr Mamba group).
- ``train_step(model, batch, cfg)``: one batch -> :class:`StepOutput` (loss and named metrics).
- ``validate(model, batches, cfg)``: the validation split during training -> :class:`Evaluation`.
- ``metrics(cfg)``: :class:`MetricSpec`, the primary metric and direction (checkpoint selection, Tune), every
  metric name it reports (config checks, ablation and sweep tables) and which ones read as percentages.
- ``test(cfg, weights)``: its test protocol (multi-view fusion, proposals and mAP ...) -> :class:`Evaluation`.
- optional ``check_config(cfg)``: checks across sections when the config is built (e.g. a MoCo queue length
  against ``data.batch_size x scaling.num_workers``); a ValueError naming the keys becomes a ConfigError.
- optional ``prepare_inputs(cfg)``: generate the demo inputs its config asks for (e.g. a synthetic feature set)
  when they are missing; ``actionray train`` calls it before anything starts.
- optional ``check_inputs(cfg)``: check the files the run will read (a feature set, an initial checkpoint) before
  Ray starts; raise ConfigError naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Literal, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from actionray.platform.config import ExperimentConfig, MethodConfig
    from actionray.platform.data.source import DataSource

Batch = dict[str, torch.Tensor]


@dataclass
class StepOutput:
    """What one training step returns: the scalar ``loss`` to back-propagate, named per-batch ``metrics`` (means
    over the batch, e.g. ``top1`` or a loss term; logged as ``train_<name>``) and the ``batch_size`` they average."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)
    batch_size: int = 1


@dataclass
class Evaluation:
    """Named scalar ``metrics`` (already prefixed, e.g. ``val_top1``) and ``artifacts``: file name -> a matplotlib
    figure, a str, or a JSON-able object (written to MLflow by the platform)."""

    metrics: dict[str, float]
    artifacts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricSpec:
    """The metrics a method reports. ``primary`` picks the best checkpoint and is Tune's default objective;
    ``reported`` lists every per-epoch metric name; ``progress`` the ones shown on the per-epoch line;
    ``percent`` the fractions shown as percentages in lines and tables."""

    primary: str
    mode: Literal["max", "min"]
    reported: tuple[str, ...]
    progress: tuple[str, ...] = ()
    percent: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.primary not in self.reported:
            raise ValueError(f"MetricSpec: primary metric {self.primary!r} is not among reported {self.reported}")

    @property
    def table(self) -> tuple[str, ...]:
        """Columns of ablation tables: the primary metric first, then the other validation metrics but the loss."""
        others = [m for m in self.reported if m.startswith("val_") and m not in (self.primary, "val_loss")]
        return (self.primary, *others)

    @property
    def sweep(self) -> tuple[str, ...]:
        """Columns of sweep tables: every validation metric, the training loss and the epoch."""
        return (*dict.fromkeys([self.primary, *(m for m in self.reported if m.startswith("val_"))]),
                "train_loss", "epoch")


@runtime_checkable
class Method(Protocol):
    """A method's whole contract with the platform (module docstring)."""

    name: str
    config_class: type["MethodConfig"]
    # DDP must tolerate parameters that get no gradient (TDN keeps a dead conv1 copy registered).
    find_unused_parameters: bool

    def metrics(self, cfg: "ExperimentConfig") -> MetricSpec: ...

    def build_model(self, cfg: "ExperimentConfig") -> torch.nn.Module: ...

    def data(self, cfg: "ExperimentConfig") -> "DataSource": ...

    def param_groups(self, model: torch.nn.Module, cfg: "ExperimentConfig") -> list[dict[str, Any]]: ...

    def train_step(self, model: torch.nn.Module, batch: Batch, cfg: "ExperimentConfig") -> StepOutput: ...

    def validate(self, model: torch.nn.Module, batches: Iterable[Batch], cfg: "ExperimentConfig") -> Evaluation: ...


def all_parameters(model: torch.nn.Module) -> list[dict[str, Any]]:
    """One group holding every trainable parameter (the default of most recipes)."""
    return [{"params": [p for p in model.parameters() if p.requires_grad], "name": "all"}]
