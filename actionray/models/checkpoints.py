"""Strict loading of published checkpoints in the TDN-repo / GCNet-repo / TSN-wrapper key layouts.

Reference layout (TSN wrapper of the TDN code base): the backbone lives under ``base_model.`` and the classifier
is ``new_fc.`` (``base_model.fc.`` when trained with dropout 0). TDN parts are named ``conv1_temp`` (dead
inflation source), ``conv1_5.{0,1}`` (S-TDM stem), ``resnext_layer1`` (motion layer1), ``layerK_bak`` and, per
block, ``mse`` (L-TDM) and ``shift.conv``. GCNet adds ``conv1dfirst``, ``norm``, ``bash_model`` (Mamba),
``convidsecond`` and ``cb`` (local branch) under ``base_model.``, and registers ``bash_model``/``cb`` a second
time on the wrapper: those duplicate keys must be equal and are consumed too. A DDP ``module.`` prefix and a
``{'state_dict': ...}`` wrapper are removed first. Every checkpoint key must be used and every model key provided.

MMAction2 layout (TSN only; MMAction2 repo, mmaction/models/backbones/resnet.py and heads/tsn_head.py): every
conv+BN pair is an mmcv ``ConvModule`` (``.conv`` / ``.bn``), so the stem is ``backbone.conv1.{conv,bn}``, a block's
``convM``/``bnM`` become ``convM.conv``/``convM.bn``, the shortcut is ``downsample.{conv,bn}`` and the classifier
``cls_head.fc_cls``; mmengine saves it inside ``{'meta', 'state_dict', ...}`` (the data preprocessor's mean/std
are non-persistent buffers, so absent). Its TSNHead averages features before the fc; in eval (no dropout) that
equals our "logit" consensus, since the fc is linear.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from actionray.models.backbones import read_state_dict

__all__ = ["LAYOUTS", "reference_key_candidates", "convert_state_dict", "load_reference_checkpoint"]

LAYOUTS = ("auto", "ours", "reference", "tsn", "tdn", "gcnet", "tcp", "mmaction2")

# Our name -> reference name, applied in order to a key (regex on dotted names).
_TDN_RULES = [
    (r"^short_term\.source_conv1\.", "conv1_temp."),
    (r"^short_term\.conv\.", "conv1_5.0."),
    (r"^short_term\.bn\.", "conv1_5.1."),
    (r"^short_term\.layer1\.", "resnext_layer1."),
    (r"^layer([1-4])\.", r"layer\1_bak."),
    (r"\.ltdm\.reduce\.", ".mse.conv1."),
    (r"\.ltdm\.reduce_bn\.", ".mse.bn1."),
    (r"\.ltdm\.neighbor\.", ".mse.conv2."),
    (r"\.ltdm\.expand\.", ".mse.conv3."),
    (r"\.ltdm\.expand_bn\.", ".mse.bn3."),
    (r"\.ltdm\.coarse\.", ".mse.conv3_smallscale2."),
    (r"\.ltdm\.coarse_bn\.", ".mse.bn3_smallscale2."),
    (r"\.ltdm\.fine\.", ".mse.conv3_smallscale4."),
    (r"\.ltdm\.fine_bn\.", ".mse.bn3_smallscale4."),
]
_GTM_RULES = [
    (r"^gtm\.reduce\.", "conv1dfirst."),
    (r"^gtm\.norm\.", "norm."),
    (r"^gtm\.mamba\.", "bash_model."),
    (r"^gtm\.expand\.", "convidsecond."),
    (r"^gtm\.local\.se\.", "cb.seblock."),
    (r"^gtm\.local\.pw7_in\.", "cb.conv1b7."),
    (r"^gtm\.local\.dw7\.", "cb.conv77."),
    (r"^gtm\.local\.pw7_out\.", "cb.conv1a7."),
    (r"^gtm\.local\.pw3_in\.", "cb.conv1b3."),
    (r"^gtm\.local\.dw3\.", "cb.conv33."),
    (r"^gtm\.local\.pw3_out\.", "cb.conv1a3."),
    (r"^gtm\.local\.fuse\.", "cb.finalconv11."),
]


def _model_kind(model: nn.Module) -> str:
    from actionray.models.gcnet import GCNet
    from actionray.models.tcp import TCPNet
    from actionray.models.tdn import TDN
    from actionray.models.tsn import TSN

    if isinstance(model, GCNet):
        return "gcnet" if model.gtm is not None else "tdn"
    if isinstance(model, TDN):
        return "tdn"
    if isinstance(model, TCPNet):
        return "tcp"
    if isinstance(model, TSN):
        return "tsn"
    raise ValueError(f"no reference checkpoint layout is known for {type(model).__name__}; use layout='ours'")


# Our (torchvision ResNet) name -> MMAction2 ResNet name, applied in order (regex on dotted names). The stem's
# conv1/bn1 and each block's convM/bnM follow the same ConvModule rule.
_MMACTION2_RULES = [
    (r"^fc\.", "cls_head.fc_cls."),
    (r"\.conv([1-3])\.(weight|bias)$", r".conv\1.conv.\2"),
    (r"\.bn([1-3])\.", r".conv\1.bn."),
    (r"\.downsample\.0\.", ".downsample.conv."),
    (r"\.downsample\.1\.", ".downsample.bn."),
]


def reference_key_candidates(key: str, kind: str) -> list[str]:
    """Reference names for one of our keys (first = preferred; GCNet's Mamba/conblock also have a duplicate)."""
    if kind == "mmaction2":
        name = key
        for pattern, replacement in _MMACTION2_RULES:
            name = re.sub(pattern, replacement, name)
        return [name]
    if kind == "tcp":  # TCPNet-repo names live next to the model (actionray/models/tcp.py)
        from actionray.models.tcp import reference_key_candidates as tcp_candidates

        return tcp_candidates(key)
    if key.startswith("fc."):
        return ["new_fc." + key[3:], "base_model.fc." + key[3:]]  # base_model.fc when trained with dropout 0
    if kind == "tsn":
        return ["base_model." + key[len("backbone."):]] if key.startswith("backbone.") else [key]
    rules = _TDN_RULES + (_GTM_RULES if kind == "gcnet" else [])
    name = key
    for pattern, replacement in rules:
        name = re.sub(pattern, replacement, name)
    names = ["base_model." + name]
    if name.startswith(("bash_model.", "cb.")):
        names.append(name)  # the wrapper's second registration of the same module
    return names


def _strip_ddp(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def _resolve_layout(layout: str, state: dict[str, torch.Tensor], model: nn.Module) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"checkpoint layout {layout!r}: unknown; choose one of {', '.join(LAYOUTS)}")
    if layout == "auto":
        layout = ("reference" if any(k.startswith(("base_model.", "new_fc.")) for k in state) else
                  "mmaction2" if any(k.startswith(("cls_head.", "backbone.conv1.conv.")) for k in state) else
                  "ours")
    if layout == "ours":
        return layout
    kind = _model_kind(model)
    if layout == "mmaction2":
        if kind != "tsn":
            raise ValueError(f"checkpoint layout 'mmaction2' (MMAction2 TSN) does not fit a {type(model).__name__} "
                             f"model (its reference layout is {kind!r})")
        return layout
    if layout != "reference" and layout != kind:
        raise ValueError(f"checkpoint layout {layout!r} does not fit a {type(model).__name__} model "
                         f"(its reference layout is {kind!r})")
    return kind


def convert_state_dict(model: nn.Module, state: dict[str, torch.Tensor], *, layout: str = "auto",
                       source: str = "<state_dict>") -> dict[str, torch.Tensor]:
    """Map a checkpoint state_dict onto ``model``'s keys; raises listing missing / unexpected / mismatched keys."""
    state = _strip_ddp(dict(state))
    kind = _resolve_layout(layout, state, model)
    own = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing, shapes, conflicts = [], [], []
    for key, target in own.items():
        names = [key] if kind == "ours" else reference_key_candidates(key, kind)
        found = [n for n in names if n in state]
        if not found:
            if key.endswith("num_batches_tracked"):
                converted[key] = target  # absent from checkpoints saved before PyTorch 0.4.1
                continue
            missing.append(key if names == [key] else f"{names[0]} (for {key})")
            continue
        used.update(found)
        value = state[found[0]]
        if any(not torch.equal(state[n], value) for n in found[1:]):
            conflicts.append(" vs ".join(found))
        if value.shape != target.shape:
            shapes.append(f"{found[0]}: checkpoint {tuple(value.shape)} vs model {tuple(target.shape)}")
        converted[key] = value
    unexpected = sorted(set(state) - used)
    if missing or unexpected or shapes or conflicts:
        lines = [f"{source}: checkpoint ({kind} layout) does not match {type(model).__name__}"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes),
                            ("duplicate copies differ", conflicts)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys) - 20} more)" if len(keys) > 20 else "")
                lines.append(f"  {title} ({len(keys)}): {shown}")
        raise ValueError("\n".join(lines))
    return converted


def load_reference_checkpoint(model: nn.Module, path: str | Path, layout: str = "auto") -> None:
    """Load a checkpoint file (torch.load weights_only) into ``model`` strictly: every key used, none missing."""
    state = read_state_dict(path, what="reference checkpoint")
    model.load_state_dict(convert_state_dict(model, state, layout=layout, source=str(path)), strict=True)
