"""DCLR downstream evaluation: fine-tuning or linear probing of the pre-trained R(2+1)D, ``method.name:
dclr_downstream`` with ``method.mode: finetune | probe``.

The DCLR repo's evaluation script (main_lincls.py) is not released; its flags are (README, start_eval.sh,
start_freeze.sh): fine-tune lr 0.1, wd 1e-4, batch 64, 10 epochs, x0.1 at 6 and 8; linear probe lr 5, wd 0,
batch 128, same schedule; 16-frame clips, 10 clips per test video. The model is the repo's r2plus1d.py shape
(R(2+1)D, dropout 0.7, one linear layer), here ``R2Plus1DClassifier`` initialised from a DCLR pre-training
checkpoint (``init_checkpoint``: our training checkpoint folder or state.pt, keys ``encoder_q.*``, or a released
``checkpoint_0199.pth.tar``, keys ``module.encoder_q.*``; heads dropped, every backbone key used, a depth
mismatch named). The probe freezes the backbone and keeps it in eval mode (BN running statistics); only ``fc``
trains. Inferred from the VideoMoCo ancestor (eval.py), not from DCLR code: one 32-frame window subsampled by 2
(``data.sampling: dense``, ``dense_window: 32``), RandomResizedCrop 112 + flip for training, and the test
protocol of 10 uniformly spaced clips x centre crop with **logits averaged** per video (``eval.combine:
mean_logit``); top-1, top-5 and mean class accuracy.

Everything else is the clip classifier's (``ClipClassifier``): cross-entropy, validation, batch-inference test.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field

from actionray.models.r2plus1d import R2Plus1DClassifier
from actionray.platform.config import ExperimentConfig, MethodConfig
from actionray.trainables.clip_classifier import ClipClassifier
from actionray.trainables.dclr import Depth

__all__ = ["DCLRDownstreamConfig", "ClipR2Plus1DClassifier", "DCLRDownstream", "METHOD",
           "load_pretrained_encoder"]


class DCLRDownstreamConfig(MethodConfig):
    """The ``method`` section of DCLR fine-tuning / linear probing."""

    name: Literal["dclr_downstream"] = "dclr_downstream"
    mode: Literal["finetune", "probe"] = "finetune"
    layers: Depth = Field(default_factory=lambda: [1, 1, 1, 1])  # must match the pre-trained encoder
    backbone_width: int = Field(64, ge=4)  # 64 as released; narrower only for CPU demos (must match, too)
    dropout: float = Field(0.7, ge=0.0, lt=1.0)  # DCLR repo r2plus1d.py
    init_checkpoint: str | None = None  # DCLR pre-training checkpoint; None = random init (a baseline)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    path_fields: ClassVar[tuple[str, ...]] = ("init_checkpoint",)


class ClipR2Plus1DClassifier(R2Plus1DClassifier):
    """``R2Plus1DClassifier`` on the platform's clip layout: (B, T, 3, H, W) -> logits (B, num_classes)."""

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """(B, T, 3, H, W) normalised clips (dense sampling, T frames) -> logits, or (logits, features (B, 8 width))."""
        if x.dim() != 5 or x.shape[2] != 3:
            raise ValueError(f"DCLR downstream: expected clips (B, T, 3, H, W), got {tuple(x.shape)}")
        return super().forward(x.transpose(1, 2), return_features)


def load_pretrained_encoder(model: R2Plus1DClassifier, path: str) -> None:
    """The query-encoder backbone of a DCLR pre-training checkpoint into ``model.backbone``, strictly: our
    training checkpoint (folder or state.pt, keys ``encoder_q.*``) or a released file (``module.encoder_q.*``)."""
    from actionray.models.dclr import backbone_state_from_pretraining, load_dclr_checkpoint
    from actionray.platform.checkpoint import STATE_FILE, model_state_from_checkpoint

    if Path(path).is_dir() or Path(path).name == STATE_FILE:
        state = model_state_from_checkpoint(path)  # our state.pt also holds RNG states: not weights-only
        model.backbone.load_state_dict(backbone_state_from_pretraining(state, model.backbone.layers))
    else:
        load_dclr_checkpoint(model, path)


class DCLRDownstream(ClipClassifier):
    """Fine-tuning or linear probing of a DCLR encoder (module docstring)."""

    def __init__(self) -> None:
        super().__init__("dclr_downstream", DCLRDownstreamConfig)

    def build_model(self, cfg: ExperimentConfig) -> ClipR2Plus1DClassifier:
        """R(2+1)D + dropout + fc; backbone from ``init_checkpoint`` (strict); frozen in probe mode."""
        m = cfg.method
        model = ClipR2Plus1DClassifier(cfg.data.num_classes, layers=m.layers, dropout=m.dropout,
                                       freeze_backbone=m.mode == "probe", width=m.backbone_width)
        if m.init_checkpoint is not None:
            load_pretrained_encoder(model, m.init_checkpoint)
        return model


METHOD = DCLRDownstream()
