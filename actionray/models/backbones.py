"""2D ResNet trunks (torchvision layouts), local ImageNet weight loading and the partial-BN switch.

Weights are never downloaded: ``pretrained`` is a path to a torchvision-layout state_dict such as
``resnet50-19c8e357.pth``, read with ``torch.load(weights_only=True)``. Nothing here fixes the input size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from actionray.compat import import_torchvision

__all__ = [
    "RESNET_NAMES", "resnet_layout", "feature_dim", "build_resnet", "stem_output_size", "read_state_dict",
    "load_matching_weights", "PartialBNMixin", "apply_partial_bn",
]

RESNET_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
_BLOCK_COUNTS = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
    "resnet101": ("bottleneck", [3, 4, 23, 3]),
    "resnet152": ("bottleneck", [3, 8, 36, 3]),
}


def resnet_layout(name: str) -> tuple[str, list[int]]:
    """('basic' | 'bottleneck', blocks per stage) for a ResNet name; raises on an unknown name."""
    if name not in _BLOCK_COUNTS:
        raise ValueError(f"backbone {name!r}: unknown; choose one of {', '.join(RESNET_NAMES)}")
    kind, counts = _BLOCK_COUNTS[name]
    return kind, list(counts)


def feature_dim(name: str) -> int:
    """Channels of layer4's output (the pooled per-frame feature size): 512 basic, 2048 bottleneck."""
    return 512 if resnet_layout(name)[0] == "basic" else 2048


def stem_output_size(input_size: int) -> int:
    """Side of the map after conv1 (7x7/2, pad 3) and maxpool (3x3/2, pad 1): 224 -> 56, 112 -> 28."""
    side = (input_size + 2 * 3 - 7) // 2 + 1
    return (side + 2 * 1 - 3) // 2 + 1


def build_resnet(name: str = "resnet50", *, pretrained: str | Path | None = None,
                 layer4_stride: int = 2) -> nn.Module:
    """A torchvision ResNet trunk with ``fc = Identity``: (N, 3, H, W) -> pooled features (N, D).

    ``layer4_stride=1`` keeps layer4 at the layer3 resolution (TCPNet's 14x14 at 224) without dilation.
    """
    resnet_layout(name)
    tv = import_torchvision()
    model = getattr(tv.models, name)(weights=None)
    if pretrained is not None:
        state = read_state_dict(pretrained, what=f"{name} ImageNet weights")
        load_matching_weights(model, state, source=str(pretrained), ignore_prefixes=("fc.",),
                              allow_missing=lambda key: key.startswith("fc."))
    model.fc = nn.Identity()
    if layer4_stride not in (1, 2):
        raise ValueError(f"layer4_stride must be 1 or 2, got {layer4_stride}")
    if layer4_stride == 1:
        first = model.layer4[0]
        strided = first.conv2 if hasattr(first, "conv3") else first.conv1  # torchvision v1.5: stride on 3x3
        strided.stride = (1, 1)
        first.downsample[0].stride = (1, 1)
    return model


def read_state_dict(path: str | Path, *, what: str = "weights") -> dict[str, torch.Tensor]:
    """Load a state_dict from a local file (weights_only); unwraps a {'state_dict': ...} checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what}: file not found: {path} (weights are never downloaded; place the .pth file there, "
            f"e.g. torchvision's resnet50-19c8e357.pth, or set model.pretrained: null)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickle errors, truncated files, non-tensor payloads
        raise ValueError(f"{what}: cannot read {path} as a weights-only torch file: {error}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{what}: {path} does not hold a state_dict (mapping of names to tensors)")
    return dict(obj)


def _always_optional(key: str) -> bool:
    # Pre-1.0 torchvision checkpoints (resnet50-19c8e357.pth) predate BN's num_batches_tracked buffer.
    return key.endswith("num_batches_tracked")


def load_matching_weights(target: nn.Module, state: dict[str, torch.Tensor], *, source: str,
                          ignore_prefixes: tuple[str, ...] = (),
                          allow_missing: Callable[[str], bool] = lambda key: False) -> None:
    """Copy ``state`` into ``target`` by key: every non-ignored key must be used, shapes must match, and
    every target key must be provided unless ``allow_missing(key)``; errors list all mismatches."""
    own = target.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    unexpected = sorted(k for k in state if k not in own)
    missing = sorted(k for k in own if k not in state and not allow_missing(k) and not _always_optional(k))
    shapes = sorted(f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                    for k, v in state.items() if k in own and v.shape != own[k].shape)
    if unexpected or missing or shapes:
        lines = [f"{source}: weights do not match the model"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys) - 20} more)" if len(keys) > 20 else "")
                lines.append(f"  {title} ({len(keys)}): {shown}")
        raise ValueError("\n".join(lines))
    target.load_state_dict(state, strict=False)


def apply_partial_bn(module: nn.Module, keep: nn.Module | None = None) -> None:
    """Freeze every BatchNorm except ``keep`` (default: the first one in module order): eval mode, no grad."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    keep = keep if keep is not None else (bns[0] if bns else None)
    for bn in bns:
        if bn is keep:
            continue
        bn.eval()
        for p in bn.parameters():
            p.requires_grad_(False)


class PartialBNMixin:
    """Adds the TSN partial-BN switch to an nn.Module: re-applied on every ``train()``, which returns self."""

    partial_bn: bool = False

    def partial_bn_keep(self) -> nn.Module | None:
        """The one BatchNorm that stays trainable (override to name it; default: first in module order)."""
        return None

    def set_partial_bn(self, enabled: bool) -> None:
        """Switch partial BN on/off; switching off makes every BN trainable again."""
        self.partial_bn = enabled
        if not enabled:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    for p in m.parameters():
                        p.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True):  # type: ignore[override]
        super().train(mode)  # type: ignore[misc]
        if mode and self.partial_bn:
            apply_partial_bn(self, self.partial_bn_keep())
        return self
