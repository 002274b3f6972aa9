"""The project's configs: ``actionray.platform.config`` bound to this project's method catalog.

``load_config(path)`` and ``build_config(tree)`` are what the CLI, scripts and tests call; the platform module
itself takes the catalog as an argument, so it names no method. ``load_config(None)`` gives the embedded demo
defaults (``EMBEDDED_DEFAULTS``), what ``actionray train`` runs without a CONFIG.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from actionray.platform import config as _platform
from actionray.platform.config import ConfigError, ExperimentConfig, dumps
from actionray.trainables import METHODS

__all__ = ["EMBEDDED_DEFAULTS", "build_config", "load_config", "config_from_dict", "ConfigError", "ExperimentConfig",
           "dumps", "METHODS"]

# What ``actionray train`` runs without a CONFIG: the TSN demo (configs/demo_tsn.yaml) on generated videos,
# written to ./demo_data on first use. Small enough for a laptop CPU; the field defaults stay the paper-scale
# values (ResNet-50, 224 px) that the reference configs build on.
EMBEDDED_DEFAULTS: dict[str, Any] = {  # = configs/demo_tsn.yaml (see docs/performance.md for why these values)
    "name": "demo",
    "method": {"name": "tsn", "backbone": "resnet18", "dropout": 0.2, "fc_init_std": 0.01},
    "data": {"train_list": "demo_data/train.txt", "val_list": "demo_data/val.txt", "num_classes": 8,
             "input_size": 64, "scale_size": 72, "multiscale_offsets": 5, "flip": False,
             "synth": {"out_dir": "demo_data", "videos_per_class": 80}},
    "optim": {"lr": 0.005, "weight_decay": 1e-4},
    "schedule": {"name": "cosine", "warmup_epochs": 1, "eta_min": 1e-4},
    "train": {"epochs": 7},
    "scaling": {"torch_threads": 0},
}


def build_config(tree: dict[str, Any], overrides: list[str] | None = None, *, source: str = "<dict>",
                 base_dir: Path | None = None) -> ExperimentConfig:
    """Validate a config tree (it must name its method) plus ``a.b=c`` overrides."""
    return _platform.build_config(tree, overrides, methods=METHODS, source=source, base_dir=base_dir)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """A YAML experiment config (None = the embedded demo defaults) with ``a.b=c`` overrides applied."""
    if path is None:
        return build_config(copy.deepcopy(EMBEDDED_DEFAULTS), overrides, source="<embedded defaults>")
    return _platform.load_config(path, overrides, methods=METHODS)


def config_from_dict(tree: dict[str, Any]) -> ExperimentConfig:
    """Rebuild a config already resolved (e.g. the ``config`` stored in a checkpoint)."""
    return _platform.build_config(tree, None, methods=METHODS, source="<resolved config>", resolve=False)
