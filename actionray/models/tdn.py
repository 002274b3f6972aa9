"""TDN (Temporal Difference Networks, CVPR 2021): short-term TDM at the stem, long-term TDM in layers 2-4.

Follows the TDN repo (ops/tdn_net.py, ops/base_module.py): conv biases everywhere in the backbone, a separate
ImageNet-initialised motion layer1, fusion weights (a, b) = (0.5, 0.5) for T == 8 else (0.75, 0.25), a per-frame
dropout + classifier and logit averaging. The segment count is read from the input, not fixed at build time.
Extension beyond the reference (R50/R101 only): ResNet-18/34 put the L-TDM + shift inside BasicBlock, after the
first 3x3 conv + BN + ReLU (so at the block's output resolution, since BasicBlock strides in its first conv).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from actionray.models.backbones import (PartialBNMixin, load_matching_weights, read_state_dict,
                                        resnet_layout)
from actionray.models.tsn import CONSENSUS, init_classifier, segment_consensus

__all__ = ["TDN", "build_tdn", "LongTermTDM", "TemporalShift", "ShortTermTDM", "fusion_weights"]

FRAMES_PER_SEGMENT = 5  # 5 consecutive frames: 4 differences around the centre RGB frame


def fusion_weights(num_segments: int) -> tuple[float, float]:
    """(a, b) for a*RGB + b*motion: the reference switches on ``num_segments is 8``."""
    return (0.5, 0.5) if num_segments == 8 else (0.75, 0.25)


def _seq(x: torch.Tensor, t: int) -> torch.Tensor:
    """(B*T, ...) -> (B, T, ...)."""
    return x.view((-1, t) + tuple(x.shape[1:]))


class LongTermTDM(nn.Module):
    """Long-term TDM (reference ``mSEModule``): bidirectional cross-segment difference gate on (B*T, P, h, w).

    Output X * (1 + 0.5*A_F + 0.5*A_G) with A = sigmoid(BN(conv)) - 0.5, a gate in (0.5, 1.5).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        q = max(channels // reduction, 1)
        self.reduce = nn.Conv2d(channels, q, 1, bias=False)
        self.reduce_bn = nn.BatchNorm2d(q)
        self.neighbor = nn.Conv2d(q, q, 3, padding=1, groups=q, bias=False)  # depthwise 3x3 on Z_{t+-1}
        self.coarse = nn.Conv2d(q, q, 3, padding=1, bias=False)  # on the 2x-pooled difference
        self.coarse_bn = nn.BatchNorm2d(q)
        self.fine = nn.Conv2d(q, q, 3, padding=1, bias=False)  # reference "smallscale4": full resolution
        self.fine_bn = nn.BatchNorm2d(q)
        self.expand = nn.Conv2d(q, channels, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(channels)

    def _attention(self, diff: torch.Tensor) -> torch.Tensor:
        """A_U = sigmoid(BN(conv1x1((U + U1 + U2) / 3))) - 0.5 for one direction U (B*T, Q, h, w)."""
        coarse = self.coarse_bn(self.coarse(F.avg_pool2d(diff, 2)))
        coarse = F.interpolate(coarse, size=diff.shape[-2:], mode="nearest")
        fine = self.fine_bn(self.fine(diff))
        return torch.sigmoid(self.expand_bn(self.expand((diff + fine + coarse) / 3.0))) - 0.5

    def forward(self, x: torch.Tensor, num_segments: int) -> torch.Tensor:
        """(B*T, P, h, w) -> (B*T, P, h, w)."""
        z = self.reduce_bn(self.reduce(x))
        z_seq, nb_seq = _seq(z, num_segments), _seq(self.neighbor(z), num_segments)
        zero = torch.zeros_like(z_seq[:, :1])
        forward = torch.cat([nb_seq[:, 1:] - z_seq[:, :-1], zero], dim=1).flatten(0, 1)  # F_{T-1} = 0
        backward = torch.cat([zero, nb_seq[:, :-1] - z_seq[:, 1:]], dim=1).flatten(0, 1)  # G_0 = 0
        # Two separate calls as in the reference: train-mode BN statistics are per direction.
        gate = 0.5 * self._attention(forward) + 0.5 * self._attention(backward)
        return x + x * gate


class TemporalShift(nn.Module):
    """Learnable depthwise temporal conv (k=3, zero pad, no bias) initialised as the TSM shift (1/8 + 1/8)."""

    def __init__(self, channels: int, fold_div: int = 8) -> None:
        super().__init__()
        fold = channels // fold_div
        self.conv = nn.Conv1d(channels, channels, 3, padding=1, groups=channels, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:fold, 0, 2] = 1  # channel takes the next segment's value
            self.conv.weight[fold:2 * fold, 0, 0] = 1  # channel takes the previous segment's value
            self.conv.weight[2 * fold:, 0, 1] = 1  # identity

    def forward(self, x: torch.Tensor, num_segments: int) -> torch.Tensor:
        """(B*T, C, h, w) -> (B*T, C, h, w), mixing over T per channel and position."""
        nt, c, h, w = x.shape
        seq = x.view(nt // num_segments, num_segments, c, h, w).permute(0, 3, 4, 2, 1).reshape(-1, c, num_segments)
        seq = self.conv(seq).view(nt // num_segments, h, w, c, num_segments)
        return seq.permute(0, 4, 3, 1, 2).reshape(nt, c, h, w)


def _downsample(inplanes: int, outplanes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=True), nn.BatchNorm2d(outplanes))


class TDNBottleneck(nn.Module):
    """ResNet bottleneck with conv biases; ``temporal`` inserts L-TDM + shift before the 3x3 conv."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, temporal: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=True)
        self.bn1 = nn.BatchNorm2d(planes)
        self.ltdm = LongTermTDM(planes) if temporal else None
        self.shift = TemporalShift(planes) if temporal else None
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=True)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inplanes, planes * 4, stride)

    def forward(self, x: torch.Tensor, num_segments: int) -> torch.Tensor:
        """(B*T, Cin, h, w) -> (B*T, 4P, h/stride, w/stride)."""
        out = self.relu(self.bn1(self.conv1(x)))
        if self.ltdm is not None:
            out = self.shift(self.ltdm(out, num_segments), num_segments)
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class TDNBasicBlock(nn.Module):
    """ResNet basic block with conv biases; ``temporal`` inserts L-TDM + shift between the two 3x3 convs."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, temporal: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=True)
        self.bn1 = nn.BatchNorm2d(planes)
        self.ltdm = LongTermTDM(planes) if temporal else None
        self.shift = TemporalShift(planes) if temporal else None
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inplanes, planes, stride)

    def forward(self, x: torch.Tensor, num_segments: int) -> torch.Tensor:
        """(B*T, Cin, h, w) -> (B*T, P, h/stride, w/stride)."""
        out = self.relu(self.bn1(self.conv1(x)))
        if self.ltdm is not None:
            out = self.shift(self.ltdm(out, num_segments), num_segments)
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def _make_layer(block: type, inplanes: int, planes: int, blocks: int, stride: int, temporal: bool) -> nn.Sequential:
    layers = [block(inplanes, planes, stride, temporal)]
    layers += [block(planes * block.expansion, planes, 1, temporal) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def _run_layer(layer: nn.Sequential, x: torch.Tensor, num_segments: int) -> torch.Tensor:
    for block in layer:
        x = block(x, num_segments)
    return x


class ShortTermTDM(nn.Module):
    """Short-term TDM: stacked RGB differences of 5 frames -> motion maps M0 (stem) and M1 (motion layer1)."""

    def __init__(self, block: type, layer1_blocks: int) -> None:
        super().__init__()
        # The reference keeps the second backbone's conv1 as the inflation source; it is unused in forward
        # (9,472 parameters for R50). Kept (frozen) so parameter counts and reference checkpoints match.
        self.source_conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=True)
        self.source_conv1.requires_grad_(False)
        self.conv = nn.Conv2d(12, 64, 7, stride=2, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _make_layer(block, 64, 64, layer1_blocks, 1, temporal=False)

    def inflate_from_source(self) -> None:
        """conv (12 in) <- source conv1 weight averaged over its 3 input channels, copied 12x (no rescaling)."""
        with torch.no_grad():
            self.conv.weight.copy_(self.source_conv1.weight.mean(dim=1, keepdim=True).expand_as(self.conv.weight))

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B*T, 5, 3, H, W) -> M0 (B*T, 64, H/8, W/8), M1 (B*T, 64*expansion, H/8, W/8)."""
        diffs = (frames[:, 1:] - frames[:, :-1]).flatten(1, 2)  # (B*T, 12, H, W): x2-x1, x3-x2, x4-x3, x5-x4
        m0 = F.max_pool2d(self.relu(self.bn(self.conv(F.avg_pool2d(diffs, 2)))), 3, 2, 1)
        return m0, _run_layer(self.layer1, m0, 1)


class TDN(PartialBNMixin, nn.Module):
    """TDN over (B, T*5, 3, H, W) clips: logits (B, C) from per-frame logits averaged over T."""

    frames_per_segment = FRAMES_PER_SEGMENT

    def __init__(self, num_classes: int, num_segments: int, *, backbone: str = "resnet50",
                 pretrained: str | Path | None = None, dropout: float = 0.5, partial_bn: bool = False,
                 consensus: str = "logit", fc_init_std: float = 0.001) -> None:
        super().__init__()
        if consensus not in CONSENSUS:
            raise ValueError(f"model.consensus: {consensus!r} is not one of {CONSENSUS}")
        kind, counts = resnet_layout(backbone)
        block = TDNBottleneck if kind == "bottleneck" else TDNBasicBlock
        self.num_segments, self.consensus = num_segments, consensus
        self.alpha, self.beta = fusion_weights(num_segments)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=True)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.short_term = ShortTermTDM(block, counts[0])
        self.layer1 = _make_layer(block, 64, 64, counts[0], 1, temporal=False)
        widths = 64 * block.expansion
        self.layer2 = _make_layer(block, widths, 128, counts[1], 2, temporal=True)
        self.layer3 = _make_layer(block, 128 * block.expansion, 256, counts[2], 2, temporal=True)
        self.layer4 = _make_layer(block, 256 * block.expansion, 512, counts[3], 2, temporal=True)
        self.feature_dim = 512 * block.expansion
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.feature_dim, num_classes)
        self._init_weights()
        if pretrained is not None:
            self.load_imagenet(pretrained)
        init_classifier(self.fc, fc_init_std)
        self.partial_bn = partial_bn
        self.train()

    def _init_weights(self) -> None:
        """Reference FBResNet init: conv weights N(0, sqrt(2/(k*k*out))), BN (1, 0); conv biases keep the
        PyTorch default; shift keeps its TSM init (Conv1d); stem conv inflated from the source conv1."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.short_term.inflate_from_source()

    def load_imagenet(self, path: str | Path) -> None:
        """torchvision ImageNet weights -> RGB trunk, motion layer1 and the inflation source conv1 (strict
        except for what ImageNet has no weights for: conv biases, L-TDM, shift, the 12-channel stem, fc)."""
        state = read_state_dict(path, what="ImageNet weights")
        mapped: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if key.startswith("fc."):
                continue
            mapped[key] = value
            if key.startswith("layer1."):
                mapped["short_term." + key] = value
            if key == "conv1.weight":
                mapped["short_term.source_conv1.weight"] = value
        conv_biases = {f"{n}.bias" for n, m in self.named_modules() if isinstance(m, nn.Conv2d) and m.bias is not None}
        not_imagenet = (".ltdm.", ".shift.", "short_term.conv.", "short_term.bn.", "fc.", "gtm.")
        load_matching_weights(self, mapped, source=str(path),
                              allow_missing=lambda k: k in conv_biases or any(s in f".{k}" for s in not_imagenet)
                              or k.startswith(("fc.", "gtm.")))
        self.short_term.inflate_from_source()

    def partial_bn_keep(self) -> nn.Module:
        """Partial BN keeps the RGB stem BN (the reference's first BN in module order)."""
        return self.bn1

    def fuse_stem(self, frames: torch.Tensor) -> torch.Tensor:
        """(B*T, 5, 3, H, W) -> R1' (B*T, 64*expansion, H/4, W/4): RGB stem + layer1 fused with S-TDM."""
        m0, m1 = self.short_term(frames)
        r = F.max_pool2d(self.relu(self.bn1(self.conv1(frames[:, FRAMES_PER_SEGMENT // 2]))), 3, 2, 1)
        r = self.alpha * r + self.beta * F.interpolate(m0, size=r.shape[-2:], mode="nearest")
        r = _run_layer(self.layer1, r, 1)
        return self.alpha * r + self.beta * F.interpolate(m1, size=r.shape[-2:], mode="nearest")

    def after_fusion(self, x: torch.Tensor, num_segments: int) -> torch.Tensor:
        """Hook between the layer1 fusion and layer2 (identity in TDN; GCNet inserts GTM here)."""
        return x

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """(B, T*5, 3, H, W) -> logits (B, C) [, per-segment features (B, T, D)].

        Features are the pooled layer4 output per segment after dropout (what the per-frame classifier sees,
        as in the GCNet CCL code) for "logit" consensus; before dropout for "feature" consensus.
        """
        if x.dim() != 5 or x.shape[2] != 3 or x.shape[1] % FRAMES_PER_SEGMENT:
            raise ValueError(f"{type(self).__name__} input must be (B, T*{FRAMES_PER_SEGMENT}, 3, H, W), "
                             f"got {tuple(x.shape)}")
        b, t = x.shape[0], x.shape[1] // FRAMES_PER_SEGMENT
        r = self.fuse_stem(x.reshape(b * t, FRAMES_PER_SEGMENT, *x.shape[2:]))
        r = self.after_fusion(r, t)
        for layer in (self.layer2, self.layer3, self.layer4):
            r = _run_layer(layer, r, t)
        feats = F.adaptive_avg_pool2d(r, 1).flatten(1).view(b, t, -1)
        logits, feats = segment_consensus(feats, self.fc, self.dropout, self.consensus)
        return (logits, feats) if return_features else logits


def build_tdn(*, num_classes: int, num_segments: int, backbone: str = "resnet50",
              pretrained: str | Path | None = None, dropout: float = 0.5, partial_bn: bool = False,
              consensus: str = "logit", fc_init_std: float = 0.001, input_size: int = 224) -> TDN:
    """TDN builder for the registry (any input size; the fusion upsampling follows the feature shapes)."""
    return TDN(num_classes, num_segments, backbone=backbone, pretrained=pretrained, dropout=dropout,
               partial_bn=partial_bn, consensus=consensus, fc_init_std=fc_init_std)
