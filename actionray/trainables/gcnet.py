"""GCNet: TDN + Global-local Temporal Modelling (GTM) + Category-supervised Contrastive Learning (CCL).

Default recipe (GCNet README + train.bash): 8 segments x 5 frames, SGD lr 0.0015 (UCF/HMDB) with a second group
holding the Mamba parameters at a fixed base lr 0.03 (``method.mamba_lr``), momentum 0.9, wd 5e-4, steps 25/35
of 50 epochs (both groups x0.1 at each milestone, as the released code does), gradient clip 20, dropout 0.8.
CCL (``method.ccl``) adds ``weight * L_ccl`` on the per-segment features (B, T, D); the released code never adds
it (weight unknown, 1.0 assumed), so it is off unless the config enables it.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from actionray.platform.config import ExperimentConfig, Section
from actionray.platform.method import Batch
from actionray.trainables.clip_classifier import ClassifierConfig, ClipClassifier, cross_entropy


class CCLConfig(Section):
    """Category-supervised Contrastive Learning (GCNet)."""

    enabled: bool = False
    variant: Literal["supcon", "released", "instance"] = "supcon"
    temperature: float = Field(0.1, gt=0.0)
    weight: float = Field(1.0, ge=0.0)


class GCNetConfig(ClassifierConfig):
    """GCNet switches: GTM on/off (off = the TDN baseline), the scan group, the Mamba lr group, CCL."""

    name: Literal["gcnet"] = "gcnet"
    gtm: bool = True  # Global-local Temporal Modeling on/off
    gtm_group: int | None = Field(None, ge=1)  # segments per Mamba scan (reference: 8); None = all T
    mamba_lr: float | None = Field(None, gt=0.0)  # fixed lr group for the Mamba parameters (reference: 0.03)
    ccl: CCLConfig = Field(default_factory=CCLConfig)


class GCNetMethod(ClipClassifier):
    """Cross-entropy plus the optional CCL term; optional fixed-lr Mamba parameter group."""

    def loss_terms(self, cfg: ExperimentConfig) -> tuple[str, ...]:
        return ("ce", "ccl") if cfg.method.ccl.enabled else ("ce",)

    def model_options(self, cfg: ExperimentConfig) -> dict[str, Any]:
        """GTM on/off and its scan group."""
        return {"gtm": cfg.method.gtm, "gtm_group": cfg.method.gtm_group}

    def compute_loss(self, model: torch.nn.Module, batch: Batch,
                     cfg: ExperimentConfig) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """CE on logits (B, C) + weight x CCL on per-segment features (B, T, D) when enabled."""
        ccl_cfg = cfg.method.ccl
        if not ccl_cfg.enabled:
            return super().compute_loss(model, batch, cfg)
        logits, features = model(batch["video"], return_features=True)
        ce = cross_entropy(logits, batch["label"], cfg)
        ccl = contrastive_term(features.float(), batch["label"], cfg)
        loss = ce + ccl_cfg.weight * ccl
        return loss, logits, {"ce": ce.detach(), "ccl": ccl.detach()}

    def param_groups(self, model: torch.nn.Module, cfg: ExperimentConfig) -> list[dict[str, Any]]:
        """Mamba parameters at ``method.mamba_lr`` (when set), everything else at ``optim.lr``."""
        params = [p for p in model.parameters() if p.requires_grad]
        if cfg.method.mamba_lr is None or not cfg.method.gtm:
            return [{"params": params, "name": "all"}]
        from actionray.models import mamba_parameters

        mamba_ids = {id(p) for p in mamba_parameters(model)}
        return [
            {"params": [p for p in params if id(p) not in mamba_ids], "name": "base"},
            {"params": [p for p in params if id(p) in mamba_ids], "name": "mamba", "lr": cfg.method.mamba_lr},
        ]


def contrastive_term(features: torch.Tensor, labels: torch.Tensor, cfg: ExperimentConfig) -> torch.Tensor:
    """The configured CCL variant on features (B, T, D) and labels (B,)."""
    from actionray.trainables import losses

    c = cfg.method.ccl
    if c.variant == "supcon":
        return losses.category_supervised_contrastive_loss(features, labels, temperature=c.temperature)
    if c.variant == "released":
        return losses.released_ccl_loss(features, labels, temperature=c.temperature)
    return losses.instance_contrastive_loss(features, temperature=c.temperature)


METHOD = GCNetMethod("gcnet", GCNetConfig, find_unused_parameters=True)  # inherits TDN's unused conv1 copy
