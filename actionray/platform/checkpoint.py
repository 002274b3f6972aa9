"""Training state on disk: one ``state.pt`` per checkpoint folder, written atomically.

The loop writes into a fresh temporary folder and hands it to ``ray.train.report``; Ray copies the folder into
run storage before ``report`` returns (synchronous upload), so storage only ever holds complete checkpoints.
Inside the folder ``state.pt`` is written as ``state.pt.tmp`` and renamed (``os.replace`` is atomic on POSIX),
so a crash mid-write never leaves a truncated file under the final name.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actionray.errors import UserError

STATE_FILE = "state.pt"
RUN_INFO = "actionray_run.json"  # in the run folder: MLflow run id, run name, the checkpoint metric (platform.train)
SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of a run's checkpoints and their metrics
log = logging.getLogger(__name__)


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used: the message names the file and says what is wrong."""


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states (restored on resume so a resumed run repeats exactly), in types that
    ``torch.load(weights_only=True)`` reads: tuples, ints, floats and tensors."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))}


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def _plain(value: Any) -> Any:
    """NumPy scalars and arrays inside a state (e.g. metrics in its history) as Python numbers and tensors."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    return value


def save_state(folder: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (model/optimizer/scheduler state dicts, epoch, RNG, config) to ``folder/state.pt``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / STATE_FILE
    tmp = folder / (STATE_FILE + ".tmp")
    torch.save(_plain(state), tmp)
    os.replace(tmp, final)
    return final


def load_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a state written by :func:`save_state`; ``path`` is the folder or the ``state.pt`` file."""
    path = Path(path)
    file = path / STATE_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no training state at {file} (expected a checkpoint folder with {STATE_FILE})")
    try:
        # weights_only=True: save_state writes only tensors, numbers, strings and containers (no pickled code).
        return torch.load(file, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 -- pickle/zip/torch raise many types for a file that is not ours
        first = (str(error).splitlines() or [""])[0][:200]
        raise CheckpointError(f"{file}: not a readable PyTorch checkpoint ({type(error).__name__}: {first})") from None


def model_state_from_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Only the model weights of one of our checkpoints (for evaluation)."""
    return _model_weights(load_state(path), path)


def _model_weights(state: Any, path: str | Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path}: not an actionray training checkpoint (no 'model' weights); for published "
                              f"weights pass --reference-layout auto")
    return state["model"]


def load_model_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load one of our checkpoints into ``model`` (strict); a mismatch is summarised (counts, a few examples,
    which model the checkpoint was trained as) instead of listing every key."""
    state = load_state(path)
    weights = _model_weights(state, path)
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    reshaped = [k for k in own if k in weights and tuple(own[k].shape) != tuple(weights[k].shape)]
    if not (missing or unexpected or reshaped):
        model.load_state_dict(weights)
        return
    parts = [f"{len(missing)} of its {len(own)} tensors missing" + (f" (e.g. {missing[0]})" if missing else ""),
             f"{len(unexpected)} unexpected" + (f" (e.g. {unexpected[0]})" if unexpected else "")]
    if reshaped:
        k = reshaped[0]
        parts.append(f"{len(reshaped)} of another shape (e.g. {k}: {tuple(weights[k].shape)} in the checkpoint, "
                     f"{tuple(own[k].shape)} here)")
    raise CheckpointError(f"{path}: does not fit this config's {type(model).__name__}: {', '.join(parts)}; "
                          f"{_trained_as(state)}")


def _trained_as(state: dict[str, Any]) -> str:
    """Which model a checkpoint holds, from the config it was saved with."""
    config = state.get("config") if isinstance(state, dict) else None
    if not isinstance(config, dict):
        return "it carries no config (not written by actionray train)"
    method, data = config.get("method") or {}, config.get("data") or {}
    details = [f"method.backbone={method['backbone']}"] if method.get("backbone") else []
    details += [f"data.{k}={data[k]}" for k in ("num_segments", "num_classes") if data.get(k) is not None]
    return (f"it looks like a checkpoint of method {method.get('name', '?')}"
            + (f" ({', '.join(details)})" if details else "") + f" from config {config.get('name', '?')!r}")


def checkpoint_folders(run_dir: str | Path) -> list[Path]:
    """The ``checkpoint_*`` folders of a run, oldest first (Ray Train names them ``checkpoint_<UTC time>``)."""
    run_dir = Path(run_dir)
    return sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir()) if run_dir.is_dir() else []


def newest_complete_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """(folder, state) of the newest checkpoint on disk whose ``state.pt`` exists and loads, or None.

    The folders themselves are the truth, not Ray's ``checkpoint_manager_snapshot.json``: the controller writes
    that snapshot asynchronously after each report, so a killed driver leaves it behind the folders. A folder
    without ``state.pt`` (or with one cut short while Ray copied it into storage) is skipped.
    """
    for folder in reversed(checkpoint_folders(run_dir)):
        if not (folder / STATE_FILE).is_file():
            continue
        try:
            return folder, load_state(folder)
        except Exception as error:  # noqa: BLE001 -- a truncated copy fails in torch.load/pickle with varied types
            why = " ".join(str(error).split())[:300]
            log.warning("skipping unreadable checkpoint %s, trying the one before it: %s", folder, why)
            continue
    return None


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def best_checkpoint(run_dir: str | Path) -> tuple[Path, str]:
    """(folder, how it was chosen) of a run folder's best checkpoint: by the metric the run selected checkpoints
    with (its ``actionray_run.json``), over the checkpoints Ray Train recorded with their metrics
    (``checkpoint_manager_snapshot.json``) whose ``state.pt`` is on disk; the newest complete checkpoint when the
    run records no metric. Raises ``CheckpointError`` when the run has no complete checkpoint."""
    run_dir = Path(run_dir)
    metric = _json(run_dir / RUN_INFO).get("checkpoint_metric")
    if isinstance(metric, list) and len(metric) == 2:
        name, mode = metric
        scored = [(r["metrics"][name], r) for r in _json(run_dir / SNAPSHOT).get("checkpoint_results", [])
                  if isinstance(r, dict) and isinstance(r.get("metrics"), dict)
                  and isinstance(r["metrics"].get(name), (int, float))
                  and (run_dir / str(r.get("checkpoint_dir_name")) / STATE_FILE).is_file()]
        if scored:
            value, record = (max if mode == "max" else min)(scored, key=lambda pair: pair[0])
            epoch = record["metrics"].get("epoch")
            return (run_dir / record["checkpoint_dir_name"],
                    f"its best checkpoint: {name} {value:.4g}" + (f" at epoch {epoch}" if epoch is not None else ""))
    found = newest_complete_checkpoint(run_dir)
    if found is None:
        raise CheckpointError(f"{run_dir}: a run folder without a complete checkpoint (no checkpoint_* folder with a "
                              f"readable {STATE_FILE})")
    return found[0], f"its newest complete checkpoint (epoch {found[1].get('epoch', '?')}; the run records no " \
                     f"checkpoint metric)"


def resolve_checkpoint(path: str | Path, key: str = "--checkpoint") -> Path:
    """Where a checkpoint is expected (``--checkpoint``, ``method.init_checkpoint``): a checkpoint folder or file
    as it is, and a run folder (what ``actionray train`` prints as the run's path) as that run's best checkpoint
    (``best_checkpoint``, said in one line on stderr). Anything else is returned unchanged for the caller's own
    errors (no such file ...); a folder that is neither a checkpoint nor a run is a ``CheckpointError``."""
    p = Path(path)
    if "://" in str(path) or not p.is_dir() or (p / STATE_FILE).is_file():
        return p
    if not checkpoint_folders(p):
        raise CheckpointError(f"{key} {path}: neither a checkpoint folder (no {STATE_FILE}) nor a run folder (no "
                              f"checkpoint_* folders)")
    folder, how = best_checkpoint(p)
    print(f"[actionray] {key} {path} is a run folder: using {how}, {folder.name}", file=sys.stderr, flush=True)
    return folder
