"""Training state on disk: one ``state.pt`` per checkpoint folder, written atomically.

The loop writes into a fresh temporary folder and hands it to ``ray.train.report``; Ray copies the folder into
run storage before ``report`` returns (synchronous upload), so storage only ever holds complete checkpoints.
Inside the folder ``state.pt`` is written as ``state.pt.tmp`` and renamed (``os.replace`` is atomic on POSIX),
so a crash mid-write never leaves a truncated file under the final name.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.pt"


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states (restored on resume so a resumed run repeats exactly)."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_state(folder: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (model/optimizer/scheduler state dicts, epoch, RNG, config) to ``folder/state.pt``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / STATE_FILE
    tmp = folder / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, final)
    return final


def load_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a state written by :func:`save_state`; ``path`` is the folder or the ``state.pt`` file."""
    path = Path(path)
    file = path / STATE_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no training state at {file} (expected a checkpoint folder with {STATE_FILE})")
    # weights_only=False: the state holds RNG tuples and the config dict, written by us.
    return torch.load(file, map_location=map_location, weights_only=False)


def model_state_from_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Only the model weights of one of our checkpoints (for evaluation)."""
    return load_state(path)["model"]
