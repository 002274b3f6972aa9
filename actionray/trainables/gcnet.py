"""GCNet: TDN + Global-local Temporal Modelling (GTM) + Category-supervised Contrastive Learning (CCL).

Default recipe (GCNet README + train.bash, recognition.md 3.5): 8 segments x 5 frames, SGD lr 0.0015
(UCF/HMDB) with a second group holding the Mamba parameters at a fixed base lr 0.03, momentum 0.9, wd 5e-4,
steps 25/35 of 50 epochs (both groups x0.1 at each milestone, as the released code does), gradient clip 20,
dropout 0.8. CCL (``loss.ccl``) adds ``weight * L_ccl`` on the per-segment features (B, T, D); the released
code never adds it (weight unknown, 1.0 assumed), so it is off unless the config enables it.
"""

from __future__ import annotations

from typing import Any

import torch

from actionray.platform.config import ExperimentConfig
from actionray.trainables.base import Batch, LossOutput, build_model_from_config, cross_entropy


class GCNetTrainable:
    """Cross-entropy plus the optional CCL term; optional fixed-lr Mamba parameter group."""

    name = "gcnet"
    find_unused_parameters = True  # inherits TDN's unused conv1 copy

    def build_model(self, cfg: ExperimentConfig) -> torch.nn.Module:
        """GCNet (``model.gtm: false`` gives the TDN baseline of the ablation)."""
        return build_model_from_config(cfg, gtm=cfg.model.gtm, gtm_group=cfg.model.gtm_group)

    def compute_loss(self, model: torch.nn.Module, batch: Batch, cfg: ExperimentConfig) -> LossOutput:
        """CE on logits (B, C) + weight x CCL on per-segment features (B, T, D) when enabled."""
        ccl_cfg = cfg.loss.ccl
        if not ccl_cfg.enabled:
            logits = model(batch["video"])
            ce = cross_entropy(logits, batch["label"], cfg)
            return ce, logits, {"ce": ce.detach()}
        logits, features = model(batch["video"], return_features=True)
        ce = cross_entropy(logits, batch["label"], cfg)
        ccl = contrastive_term(features.float(), batch["label"], cfg)
        loss = ce + ccl_cfg.weight * ccl
        return loss, logits, {"ce": ce.detach(), "ccl": ccl.detach()}

    def param_groups(self, model: torch.nn.Module, cfg: ExperimentConfig) -> list[dict[str, Any]]:
        """Mamba parameters at ``optim.mamba_lr`` (when set), everything else at ``optim.lr``."""
        params = [p for p in model.parameters() if p.requires_grad]
        if cfg.optim.mamba_lr is None or not cfg.model.gtm:
            return [{"params": params, "name": "all"}]
        from actionray.models import mamba_parameters

        mamba_ids = {id(p) for p in mamba_parameters(model)}
        return [
            {"params": [p for p in params if id(p) not in mamba_ids], "name": "base"},
            {"params": [p for p in params if id(p) in mamba_ids], "name": "mamba", "lr": cfg.optim.mamba_lr},
        ]


def contrastive_term(features: torch.Tensor, labels: torch.Tensor, cfg: ExperimentConfig) -> torch.Tensor:
    """The configured CCL variant on features (B, T, D) and labels (B,)."""
    from actionray.trainables import losses

    c = cfg.loss.ccl
    if c.variant == "supcon":
        return losses.category_supervised_contrastive_loss(features, labels, temperature=c.temperature)
    if c.variant == "released":
        return losses.released_ccl_loss(features, labels, temperature=c.temperature)
    return losses.instance_contrastive_loss(features, temperature=c.temperature)


TRAINABLE = GCNetTrainable()
