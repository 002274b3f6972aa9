"""The claims demos (``actionray demo NAME``): small generated tasks where a method's paper mechanism is what
separates it from its baseline, run with seeds and controls, decided by a rule fixed in advance
(``claims.exceeds_by_larger_std``).

Each demo module defines ``CLAIM`` (the claim in words), ``DEFAULT_SEEDS`` and ``run(args) -> ClaimResult``.
The names are resolved lazily, so ``actionray demo order`` never imports the DCLR or FTCL code.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["DEMOS", "demo_module"]

DEMOS: dict[str, str] = {
    "order": "actionray.demos.order",  # GCNet vs TSN on temporal-order classes (the README's main job)
    "dclr": "actionray.demos.dclr",  # DCLR vs plain MoCo vs random on a background-biased motion task
    "ftcl": "actionray.demos.ftcl",  # FTCL vs ACM-Net (+FSD, +LCS) on ordered-phase snippet features
}


def demo_module(name: str) -> ModuleType:
    """The module of demo ``name`` (one of ``DEMOS``)."""
    return importlib.import_module(DEMOS[name])
