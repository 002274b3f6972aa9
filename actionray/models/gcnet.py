"""GCNet: TDN plus the Global-local Temporal Module (GTM) after the layer1 fusion (GCNet repo, ops/tdn_net_mamba.py
and ops/con_se.py). CCL lives in ``actionray.trainables.losses``.

GTM on X (B*T, C, h, w), C = 256 for R50 (64 for R18/34): the first C/2 channels go through the global branch
(1x1 Conv1d to 2 channels, LayerNorm over the h*w positions, one Mamba token per frame, transposed 1x1 conv back),
the other C/2 through the local branch (SE twice, 7x7 and 3x3 depthwise paths, 1x1 fuse); the output is
0.5 * concat(global, local) + 0.5 * X. Two deliberate generalisations of the reference:
- Sequence grouping: the reference regroups every 8 consecutive frames into one Mamba sequence (hard-coded 8).
  Here ``gtm_group=None`` (default) runs one causal scan over all T segments of a video; ``gtm_group=8``
  reproduces the reference (two independent 8-frame scans per video at T = 16; identical at T = 8).
- Spatial size: the LayerNorm width and Mamba's d_model = 2*h*w are derived from ``input_size`` at build time
  (56*56 = 3136 and 6272 at 224 px as in the reference); another input size at run time raises a clear error.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from actionray.models.backbones import stem_output_size
from actionray.models.mamba import Mamba
from actionray.models.tdn import TDN

__all__ = ["GCNet", "GlobalLocalTemporalModule", "LocalTemporalBranch", "SqueezeExcitation", "build_gcnet"]


class SqueezeExcitation(nn.Module):
    """SE channel attention: GAP -> FC C->C/r -> ReLU -> FC C/r->C -> sigmoid -> scale (FCs without bias)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, max(channels // reduction, 1), bias=False)
        self.fc2 = nn.Linear(max(channels // reduction, 1), channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, C, h, w)."""
        weights = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * weights[:, :, None, None]


def _conv_in_silu(channels: int, kernel: int) -> nn.Sequential:
    """1x1 conv with bias (kernel 1) or depthwise kxk conv without bias, then InstanceNorm (no affine), SiLU."""
    if kernel == 1:
        conv = nn.Conv2d(channels, channels, 1, bias=True)
    else:
        conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=False)
    return nn.Sequential(conv, nn.InstanceNorm2d(channels), nn.SiLU())


class LocalTemporalBranch(nn.Module):
    """GTM local branch (reference ``conblock``): per-frame SE (applied twice, shared weights: "TLKF") and two
    depthwise paths 1x1 -> DW7 -> 1x1 and 1x1 -> DW3 -> 1x1 ("TDF"), fused by a 1x1 conv. No temporal mixing."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.se = SqueezeExcitation(channels)
        self.pw7_in, self.dw7, self.pw7_out = (_conv_in_silu(channels, k) for k in (1, 7, 1))
        self.pw3_in, self.dw3, self.pw3_out = (_conv_in_silu(channels, k) for k in (1, 3, 1))
        self.fuse = nn.Conv2d(3 * channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, C, h, w)."""
        attended = self.se(self.se(x))
        wide = self.pw7_out(self.dw7(self.pw7_in(x)))
        narrow = self.pw3_out(self.dw3(self.pw3_in(x)))
        return self.fuse(torch.cat([attended, wide, narrow], dim=1))


class GlobalLocalTemporalModule(nn.Module):
    """GTM: (B*T, C, h, w) -> (B*T, C, h, w); global Mamba scan over time on half the channels, local convs on
    the other half, blended 0.5/0.5 with the input."""

    def __init__(self, channels: int, spatial_size: int, group: int | None = None, tokens: int = 2) -> None:
        super().__init__()
        half = channels // 2
        self.positions = spatial_size * spatial_size
        self.spatial_size, self.group, self.tokens = spatial_size, group, tokens
        self.reduce = nn.Conv1d(half, tokens, 1, bias=True)
        self.norm = nn.LayerNorm(self.positions)  # over positions, per frame and channel (reference: 3136)
        self.mamba = Mamba(d_model=tokens * self.positions, d_state=16, d_conv=4, expand=2)
        self.expand = nn.ConvTranspose1d(tokens, half, 1, bias=True)
        self.local = LocalTemporalBranch(half)

    def global_branch(self, x: torch.Tensor, num_segments: int) -> torch.Tensor:
        """(B*T, C/2, h, w) -> (B*T, C/2, h, w): one Mamba token per frame, causal over each frame group."""
        nt, half, h, w = x.shape
        if h * w != self.positions:
            raise ValueError(f"GTM was built for a {self.spatial_size}x{self.spatial_size} layer1 map (set by "
                             f"input_size at build time), got {h}x{w}; rebuild the model with this input size")
        group = self.group or num_segments
        if num_segments % group:
            raise ValueError(f"GTM group {group} must divide the number of segments {num_segments}")
        tokens = self.norm(self.reduce(x.flatten(2)))  # (B*T, 2, h*w)
        tokens = self.mamba(tokens.reshape(nt // group, group, -1))  # (B*T/group, group, 2*h*w)
        return self.expand(tokens.reshape(nt, self.tokens, h * w)).view(nt, half, h, w)

    def forward(self, x: torch.Tensor, num_segments: int) -> torch.Tensor:
        """(B*T, C, h, w) -> 0.5 * concat(global, local) + 0.5 * x."""
        x_global, x_local = x.chunk(2, dim=1)
        out = torch.cat([self.global_branch(x_global, num_segments), self.local(x_local)], dim=1)
        return 0.5 * out + 0.5 * x


class GCNet(TDN):
    """TDN + GTM after the layer1 fusion; ``gtm=False`` is exactly TDN (same parameters, same forward)."""

    def __init__(self, num_classes: int, num_segments: int, *, gtm: bool = True, gtm_group: int | None = None,
                 input_size: int = 224, **tdn_options) -> None:
        super().__init__(num_classes, num_segments, **tdn_options)
        if gtm_group is not None and gtm_group < 1:
            raise ValueError(f"gtm_group must be >= 1 or None, got {gtm_group}")
        channels = 64 * self.layer1[0].expansion
        self.gtm = GlobalLocalTemporalModule(channels, stem_output_size(input_size), gtm_group) if gtm else None

    def after_fusion(self, x: torch.Tensor, num_segments: int) -> torch.Tensor:
        """GTM on the fused layer1 feature (B*T, C, h, w)."""
        return x if self.gtm is None else self.gtm(x, num_segments)


def build_gcnet(*, num_classes: int, num_segments: int, backbone: str = "resnet50",
                pretrained: str | Path | None = None, dropout: float = 0.5, partial_bn: bool = False,
                consensus: str = "logit", fc_init_std: float = 0.001, input_size: int = 224, gtm: bool = True,
                gtm_group: int | None = None) -> GCNet:
    """GCNet builder for the registry; ``input_size`` fixes the GTM LayerNorm / Mamba width."""
    return GCNet(num_classes, num_segments, gtm=gtm, gtm_group=gtm_group, input_size=input_size,
                 backbone=backbone, pretrained=pretrained, dropout=dropout, partial_bn=partial_bn,
                 consensus=consensus, fc_init_std=fc_init_std)
