"""R(2+1)D-18 video ResNet (Tran et al., CVPR 2018) as DCLR releases it, plus the downstream classifier.

The backbone follows the DCLR repo's view_resnet.py (itself a copy of torchvision's models/video/resnet.py):
an R(2+1)D stem (1,7,7) 3->45 then (3,1,1) 45->64, four stages of BasicBlocks whose (2+1)D convolutions
factorise a 3x3x3 kernel into a (1,3,3) spatial conv to ``mid`` channels and a (3,1,1) temporal conv, with
``mid = (Cin * Cout * 27) // (Cin * 9 + 3 * Cout)`` (same number of parameters as the full 3D kernel).
Stages 2-4 halve T, H and W. Depth is a switch: ``layers=(1, 1, 1, 1)`` is what DCLR's ``r2plus1d_18`` builds
(12,487,005 parameters; released DCLR checkpoints have this depth), ``(2, 2, 2, 2)`` is torchvision's
R(2+1)D-18 (31,300,125 parameters = torchvision's ``r2plus1d_18`` without its 400-way ``fc``). Module and key
names equal torchvision's and the DCLR repo's (``stem.0``, ``layer1.0.conv1.0.0`` ...), so their state dicts
map one to one.

Deviation: view_resnet.py reshapes layer4 to a hard-coded 512 x 2 x 7 x 7 (16 frames at 112 px only); here
every size is taken from the tensor, so any clip the strides accept runs (e.g. 4 x 32 x 32 for a CPU demo).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = [
    "Conv2Plus1D", "R2Plus1dStem", "BasicBlock", "R2Plus1D", "R2Plus1DClassifier", "r2plus1d_18",
    "r2plus1d_classifier", "init_video_resnet_weights", "midplanes", "RELEASED_LAYERS", "TORCHVISION_LAYERS",
]

RELEASED_LAYERS: tuple[int, int, int, int] = (1, 1, 1, 1)  # DCLR repo, view_resnet.py r2plus1d_18
TORCHVISION_LAYERS: tuple[int, int, int, int] = (2, 2, 2, 2)  # torchvision models/video/resnet.py r2plus1d_18


def midplanes(in_planes: int, out_planes: int) -> int:
    """(2+1)D mid channels: as many parameters as a full 3x3x3 kernel (Tran et al. 2018, Sec. 3.5)."""
    return (in_planes * out_planes * 27) // (in_planes * 9 + 3 * out_planes)


class Conv2Plus1D(nn.Sequential):
    """(1,3,3) spatial conv -> BN -> ReLU -> (3,1,1) temporal conv; ``stride`` applies to T, H and W."""

    def __init__(self, in_planes: int, out_planes: int, mid_planes: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv3d(in_planes, mid_planes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                      padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(mid_planes),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid_planes, out_planes, kernel_size=(3, 1, 1), stride=(stride, 1, 1),
                      padding=(1, 0, 0), bias=False),
        )


class R2Plus1dStem(nn.Sequential):
    """(1,7,7) conv 3->45 stride (1,2,2) -> BN -> ReLU -> (3,1,1) conv 45->64 -> BN -> ReLU.

    ``width`` (64 as released) scales both: 45 is the (2+1)D mid width of a 3->64 3x7x7 kernel."""

    def __init__(self, width: int = 64) -> None:
        mid = 45 * width // 64
        super().__init__(
            nn.Conv3d(3, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, width, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )


class BasicBlock(nn.Module):
    """Two (2+1)D convs with a residual; both convs use the mid width of (inplanes, planes) as released."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        mid = midplanes(inplanes, planes)
        self.conv1 = nn.Sequential(Conv2Plus1D(inplanes, planes, mid, stride), nn.BatchNorm3d(planes),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(Conv2Plus1D(planes, planes, mid), nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Cin, T, H, W) -> (B, planes, T', H', W')."""
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + residual)


class R2Plus1D(nn.Module):
    """R(2+1)D backbone without pooling or classifier: (B, 3, T, H, W) -> layer4 map (B, 8 width, t, h, w).

    ``width`` is the stem's and layer1's channel count (64 as released; stages are width x 1, 2, 4, 8). A
    narrower network (e.g. 16) is ours, for CPU demos only (docs/models.md); released checkpoints have 64.
    """

    def __init__(self, layers: Sequence[int] = RELEASED_LAYERS, width: int = 64) -> None:
        super().__init__()
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"R(2+1)D layers must be 4 positive block counts, got {tuple(layers)}")
        if width < 4:
            raise ValueError(f"R(2+1)D width must be >= 4, got {width}")
        self.layers = tuple(int(n) for n in layers)
        self.width = int(width)
        self.out_channels = 8 * self.width
        self.stem = R2Plus1dStem(self.width)
        self.inplanes = self.width
        self.layer1 = self._make_layer(self.width, self.layers[0], stride=1)
        self.layer2 = self._make_layer(2 * self.width, self.layers[1], stride=2)
        self.layer3 = self._make_layer(4 * self.width, self.layers[2], stride=2)
        self.layer4 = self._make_layer(8 * self.width, self.layers[3], stride=2)
        init_video_resnet_weights(self)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv3d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                                       nn.BatchNorm3d(planes))
        stage = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        stage += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 8 width, t, h, w) with t = ceil(T / 8), h = ceil(H / 16), w = ceil(W / 16)."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"R(2+1)D expects (B, 3, T, H, W), got {tuple(x.shape)}")
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))


def init_video_resnet_weights(module: nn.Module) -> None:
    """DCLR repo view_resnet.py init: Kaiming fan_out convs, BN weight 1 / bias 0, Linear N(0, 0.01) / bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


class R2Plus1DClassifier(nn.Module):
    """Downstream model (fine-tuning or linear probe): backbone -> global average pool -> dropout -> linear.

    Dropout 0.7 is the DCLR repo's r2plus1d.py (its evaluation script main_lincls.py is not released).

    With ``freeze_backbone`` (linear probe) the backbone has ``requires_grad=False`` and stays in eval mode
    (BN uses its running statistics) even after ``model.train()``; only ``fc`` trains.
    """

    def __init__(self, num_classes: int, layers: Sequence[int] = RELEASED_LAYERS, dropout: float = 0.7,
                 freeze_backbone: bool = False, width: int = 64) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"R2Plus1DClassifier num_classes must be >= 1, got {num_classes}")
        self.backbone = R2Plus1D(layers, width)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.backbone.out_channels, num_classes)
        init_video_resnet_weights(self.fc)
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> "R2Plus1DClassifier":
        """Set train/eval mode; a frozen backbone always stays in eval mode."""
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor, return_features: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, T, H, W) -> logits (B, num_classes), or (logits, pooled features (B, 512))."""
        features = self.backbone(x).mean(dim=(2, 3, 4))
        logits = self.fc(self.dropout(features))
        return (logits, features) if return_features else logits


def r2plus1d_18(layers: Sequence[int] = RELEASED_LAYERS) -> R2Plus1D:
    """R(2+1)D-18 backbone; ``layers=(1, 1, 1, 1)`` as DCLR releases it, ``(2, 2, 2, 2)`` as torchvision."""
    return R2Plus1D(layers)


def r2plus1d_classifier(num_classes: int, *, layers: Sequence[int] = RELEASED_LAYERS, dropout: float = 0.7,
                        freeze_backbone: bool = False, width: int = 64) -> R2Plus1DClassifier:
    """R(2+1)D-18 with dropout and a linear classifier (input (B, 3, T, H, W))."""
    return R2Plus1DClassifier(num_classes, layers=layers, dropout=dropout, freeze_backbone=freeze_backbone,
                              width=width)
