"""TSN: a shared 2D ResNet per frame, segmental consensus (average), dropout and a linear classifier."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from actionray.models.backbones import PartialBNMixin, build_resnet, feature_dim

__all__ = ["TSN", "build_tsn", "init_classifier"]

CONSENSUS = ("logit", "feature")


def init_classifier(fc: nn.Linear, std: float) -> None:
    """fc weight ~ N(0, std), bias 0 (TDN repo std 0.001; MMAction2 TSN 0.01)."""
    nn.init.normal_(fc.weight, 0.0, std)
    nn.init.zeros_(fc.bias)


class TSN(PartialBNMixin, nn.Module):
    """Temporal Segment Network over (B, T, 3, H, W) clips, one frame per segment.

    consensus="feature" (MMAction2 TSNHead): mean of pooled features over all frames -> dropout -> fc.
    consensus="logit" (TDN-repo TSN wrapper): dropout -> fc per frame -> mean of logits.
    """

    frames_per_segment = 1

    def __init__(self, num_classes: int, num_segments: int, *, backbone: str = "resnet50",
                 pretrained: str | Path | None = None, dropout: float = 0.5, partial_bn: bool = False,
                 consensus: str = "logit", fc_init_std: float = 0.001) -> None:
        super().__init__()
        if consensus not in CONSENSUS:
            raise ValueError(f"model.consensus: {consensus!r} is not one of {CONSENSUS}")
        self.num_segments = num_segments
        self.consensus = consensus
        self.backbone = build_resnet(backbone, pretrained=pretrained)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(feature_dim(backbone), num_classes)
        init_classifier(self.fc, fc_init_std)
        self.partial_bn = partial_bn
        self.train()

    def partial_bn_keep(self) -> nn.Module:
        """Partial BN keeps the stem BN (the first BN after conv1) trainable."""
        return self.backbone.bn1

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """(B, T, 3, H, W) -> logits (B, C) [, per-segment features (B, T, D)].

        Features are what the consensus averages before the classifier: after dropout for "logit" consensus
        (the TDN-repo wrapper's Dropout-replaced fc), before dropout for "feature" consensus (dropout acts on
        the averaged video feature there).
        """
        if x.dim() != 5 or x.shape[2] != 3:
            raise ValueError(f"TSN input must be (B, T, 3, H, W), got {tuple(x.shape)}")
        b, t = x.shape[:2]
        feats = self.backbone(x.flatten(0, 1)).view(b, t, -1)
        logits, feats = segment_consensus(feats, self.fc, self.dropout, self.consensus)
        return (logits, feats) if return_features else logits


def segment_consensus(feats: torch.Tensor, fc: nn.Module, dropout: nn.Module,
                      consensus: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-segment features (B, T, D) -> (video logits (B, C), the features CCL sees (B, T, D)).

    "feature": MMAction2 TSNHead (mean over segments, then dropout + fc); "logit": the TDN-repo wrapper
    (dropout + fc per segment, then the mean of the logits).
    """
    if consensus == "feature":
        return fc(dropout(feats.mean(dim=1))), feats
    feats = dropout(feats)
    return fc(feats).mean(dim=1), feats


def build_tsn(*, num_classes: int, num_segments: int, backbone: str = "resnet50",
              pretrained: str | Path | None = None, dropout: float = 0.5, partial_bn: bool = False,
              consensus: str = "logit", fc_init_std: float = 0.001, input_size: int = 224) -> TSN:
    """TSN builder for the registry (``input_size`` is accepted for the shared signature; TSN is size-free)."""
    return TSN(num_classes, num_segments, backbone=backbone, pretrained=pretrained, dropout=dropout,
               partial_bn=partial_bn, consensus=consensus, fc_init_std=fc_init_std)
