"""Data sources: what rows a method's data produce, and from where; the training loop reads only this interface.

A method's ``data(cfg)`` returns a :class:`DataSource`. The driver asks it for the Ray datasets and the Ray Train
``DataConfig`` that shards them; each training worker asks the same kind of object (built again from the same
config) for its steps per epoch and its model batches, and closes it when the run ends. The clip source below is
today's decoded-clip pipeline (``pipeline.py`` + ``ingest.py``): decoding in Ray Data tasks, exact disjoint
shards per epoch, one execution for all epochs, uint8 through the object store, bounded memory, counted skips.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence, runtime_checkable

import torch

from actionray.platform.data.sampling import Split

if TYPE_CHECKING:
    import ray.data
    import ray.train

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class DataInput:
    """One data set a run reads, as MLflow records it (``Tracker.log_data_inputs`` -> ``mlflow.log_input``).

    ``digest``: SHA-256 (first 16 hex digits) of the file's bytes and of ``selection`` (which of its entries this
    run takes, e.g. a feature set's holdout videos), so two runs share a digest only when they read the same list
    content the same way. ``counts``: entries, rows per epoch, videos ... (the MLflow dataset profile)."""

    name: str  # e.g. "ucf101_train_split_1_videos.txt"
    context: str  # "train" | "validation" | "test" (the mlflow.data.context input tag)
    source: str  # the file's path
    digest: str
    counts: dict[str, int] = field(default_factory=dict)


def content_digest(path: str | Path, selection: Any = None) -> str:
    """SHA-256 of a file's bytes followed by the JSON of ``selection`` (None: the file alone), 16 hex digits."""
    h = hashlib.sha256(Path(path).read_bytes())
    if selection is not None:
        h.update(json.dumps(selection, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def list_inputs(lists: Sequence[tuple[str, str]], root: str | None, rows_per_entry: dict[str, int] | None = None
                ) -> list[DataInput]:
    """``DataInput`` of list files ``[(context, path), ...]``: digest of the file and of ``root`` (relative
    paths in the list resolve against it), counts ``entries`` and ``rows_per_epoch``."""
    from actionray.platform.data.annotations import read_list

    out = []
    for context, path in lists:
        entries = len(read_list(path, root))
        rows = entries * (rows_per_entry or {}).get(context, 1)
        out.append(DataInput(name=Path(path).name, context=context, source=str(path),
                             digest=content_digest(path, {"root": root} if root else None),
                             counts={"entries": entries, "rows_per_epoch": rows}))
    return out


@runtime_checkable
class DataSource(Protocol):
    """The rows of one method's data (module docstring)."""

    def datasets(self) -> dict[str, "ray.data.Dataset"]:
        """The datasets a TorchTrainer streams: "train" (sharded per worker) and "val" (rank 0 reads it)."""
        ...

    def dataset_config(self) -> "ray.train.DataConfig":
        """How Ray Train hands ``datasets()`` to the workers."""
        ...

    def steps_per_epoch(self, world_size: int) -> int:
        """Optimizer steps per epoch on each of ``world_size`` workers (the lr schedule is per step)."""
        ...

    def batches(self, shard: Any, split: Split, *, epoch: int, device: torch.device) -> Iterator[Batch]:
        """One pass of a worker's ``shard`` of ``split`` as model batches on ``device``."""
        ...

    def close(self) -> None:
        """Stop whatever this object still streams (called by the loop at the end of a run, error or not)."""
        ...

    # Optional: ``inputs() -> list[DataInput]``, the data a training run reads (logged to MLflow as dataset inputs
    # when the run starts, ``tracking.start_run``; compared across rows by ``actionray report``).


class ClipSource:
    """Decoded clips from list files: rows ``video`` uint8 (N, H, W, 3), ``label``, ``index``, ``epoch``,
    ``valid``, ``view``, ``frame_indices``; batches normalised to float32 (B, N, 3, H, W) on the device.

    A method whose row is not one sampled clip passes ``rows`` (a ``pipeline.RowDecoder``, e.g. several clips of
    one video per row); ``normalise=False`` hands batches on as uint8 for a method that augments on the device."""

    def __init__(self, cfg, rows: Any = None, normalise: bool = True) -> None:
        from actionray.platform.data.ingest import TrainStreams

        self.cfg, self.rows, self.normalise = cfg, rows, normalise
        self.streams = TrainStreams()

    def datasets(self) -> dict[str, "ray.data.Dataset"]:
        from actionray.platform.data.pipeline import build_clip_dataset

        return {split: build_clip_dataset(self.cfg, split, rows=self.rows) for split in ("train", "val")}

    def dataset_config(self) -> "ray.train.DataConfig":
        from actionray.platform.data.ingest import dataset_config

        return dataset_config(self.cfg)

    def steps_per_epoch(self, world_size: int) -> int:
        """Equal shards of the train rows (videos x ``data.clips_per_video``), full batches only."""
        from actionray.platform.data.annotations import read_list

        videos = len(read_list(self.cfg.data.train_list, self.cfg.data.root))
        rows = videos * self.cfg.data.clips_per_video
        return max(1, (rows // world_size) // self.cfg.data.batch_size)

    def batches(self, shard: Any, split: Split, *, epoch: int, device: torch.device) -> Iterator[Batch]:
        from actionray.platform.data.ingest import iter_model_batches

        return iter_model_batches(shard, self.cfg, split, epoch=epoch, device=device, streams=self.streams,
                                  normalise=self.normalise)

    def inputs(self) -> list[DataInput]:
        """The train and val lists (digest of content and ``data.root``; entries, rows per epoch)."""
        data = self.cfg.data
        return list_inputs([("train", data.train_list), ("validation", data.val_list)], data.root,
                           {"train": data.clips_per_video})

    def test_dataset(self) -> "ray.data.Dataset":
        """One row per test view (``eval.clips`` x ``eval.crops``), in list order."""
        from actionray.platform.data.pipeline import build_clip_dataset

        return build_clip_dataset(self.cfg, "test", rows=self.rows)

    def close(self) -> None:
        self.streams.close()
