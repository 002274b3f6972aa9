"""Model registry: ``build_model(name, **options)`` for every recognition network, plus checkpoint loading.

Every builder takes the shared options (num_classes, num_segments, backbone, pretrained, dropout, partial_bn,
consensus, fc_init_std, input_size) and returns an nn.Module whose input is ``(B, N, 3, H, W)`` with
``N = T * frames_per_segment`` (segment-major) and whose ``forward(x, return_features=False)`` gives logits
``(B, num_classes)`` or ``(logits, per-segment features (B, T, D))``.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any, Callable

from torch import nn

__all__ = ["MODEL_NAMES", "build_model", "get_builder", "mamba_parameters", "load_reference_checkpoint"]

# name -> "module:function"; imported on first use so building TSN never imports Mamba code.
_BUILDERS: dict[str, str] = {
    "tsn": "actionray.models.tsn:build_tsn",
    "tdn": "actionray.models.tdn:build_tdn",
    "gcnet": "actionray.models.gcnet:build_gcnet",
    "tcp": "actionray.models.tcp:build_tcp",
}
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def get_builder(name: str) -> Callable[..., nn.Module]:
    """The builder function registered under ``name``; raises naming the known models."""
    if name not in _BUILDERS:
        raise ValueError(f"model {name!r}: unknown; known models: {', '.join(MODEL_NAMES)}")
    module_name, func_name = _BUILDERS[name].split(":")
    return getattr(importlib.import_module(module_name), func_name)


def build_model(name: str, *, num_classes: int, num_segments: int, backbone: str = "resnet50",
                pretrained: str | Path | None = None, dropout: float = 0.5, partial_bn: bool = False,
                consensus: str = "logit", fc_init_std: float = 0.001, gtm: bool = True, input_size: int = 224,
                **method_options: Any) -> nn.Module:
    """Build a registered model; ``gtm`` reaches only builders that take it, other unknown options raise."""
    builder = get_builder(name)
    params = inspect.signature(builder).parameters
    options: dict[str, Any] = dict(num_classes=num_classes, num_segments=num_segments, backbone=backbone,
                                   pretrained=pretrained, dropout=dropout, partial_bn=partial_bn,
                                   consensus=consensus, fc_init_std=fc_init_std, input_size=input_size)
    if "gtm" in params:
        options["gtm"] = gtm
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(k for k in method_options if k not in params and not takes_any)
    if unknown:
        accepted = sorted(k for k in params if k not in options)
        raise TypeError(f"model {name!r}: unknown option(s) {', '.join(unknown)}; "
                        f"method options accepted: {', '.join(accepted) or 'none'}")
    return builder(**options, **method_options)


def mamba_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of every Mamba mixer (names containing '.mamba.' or starting 'mamba.'): GCNet's fixed-lr group."""
    return [p for n, p in model.named_parameters() if ".mamba." in f".{n}"]


def load_reference_checkpoint(model: nn.Module, path: str | Path, layout: str = "auto") -> None:
    """Load a published TDN/GCNet/TSN checkpoint strictly (see ``actionray.models.checkpoints``); a DCLR
    model (``DCLR``: whole checkpoint, ``R2Plus1DClassifier``: backbone only) takes the released DCLR layout; an
    ``ACMNet`` takes the FTCL repo's ``{'epoch', 'model_state_dict'}``."""
    from actionray.models.checkpoints import load_reference_checkpoint as _load
    from actionray.models.dclr import DCLR, load_dclr_checkpoint
    from actionray.models.r2plus1d import R2Plus1DClassifier

    if isinstance(model, (DCLR, R2Plus1DClassifier)):
        if layout not in ("auto", "reference", "dclr"):
            raise ValueError(f"{type(model).__name__}: checkpoint layout must be auto, reference or dclr, "
                             f"got {layout!r}")
        load_dclr_checkpoint(model, path)
        return
    from actionray.models.acmnet import ACMNet, load_ftcl_checkpoint

    if isinstance(model, ACMNet):  # FTCL-repo layout {'epoch', 'model_state_dict'}, no prefix
        if layout not in ("auto", "reference", "ftcl"):
            raise ValueError(f"ACMNet: checkpoint layout must be auto, reference or ftcl, got {layout!r}")
        load_ftcl_checkpoint(model, path)
        return
    _load(model, path, layout=layout)
