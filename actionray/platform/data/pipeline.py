"""The Ray Data clip pipeline: list rows -> decoded, augmented uint8 clips, streamed to training workers.

list file -> sampled frame indices -> decoded uint8 clip -> transforms -> **batch** -> model.

Driver side, ``build_clip_dataset(cfg, split)``: the dataset's input is the positions 0..N-1 of one pass
(``from_items``); the list itself (path, num_frames, label, list line) travels once per decode task as an Arrow
table in the UDF's arguments. ``map_batches`` maps each position to a list entry (through a fresh permutation of
(seed, epoch) for train: a full shuffle every epoch without an all-to-all shuffle stage; in list order for
val/test), then decodes + samples + transforms it in a pool of ``cfg.data.decode_tasks`` CPU tasks, never inside
a training worker. Output rows:
``video`` uint8 (N, S, S, 3), ``label``/``index``/``epoch`` int64, ``frame_indices`` int64 (N,) (the sampled
frames, for traceability) and for test ``view`` int64 (one row per clip x crop view, ``view = clip * crops +
crop``). Clips stay uint8 through the object store; ``iter_model_batches`` normalises on the worker's device.

Epochs. Ray Data re-executes the pipeline on every pass but a UDF is not told which pass it is in (Ray 2.60
keeps a private ``DataContext._execution_idx``, counted only for successful executions: unusable). So each
dataset owns a small named actor, the *pipeline monitor*: ``iter_model_batches(..., epoch=e)`` sets its epoch
before iterating and the decode UDF reads it once per batch, drawing offsets from (seed, epoch, index).
This is race-free with ``streaming_split``: a new execution starts only after every worker has reached the
epoch barrier (i.e. after all set the epoch), and a worker's pass ends only when the previous execution has
produced everything. Each row carries its ``epoch``; a batch from another epoch is counted and reported.

Bad samples. A ``DecodeError`` (missing, empty, truncated, corrupt file; index past the end) is raised with
the list line under ``on_error=raise``; under ``skip`` the row is dropped, recorded with its reason in the
monitor, logged at the end of the pass, and the pass fails with ``TooManySkippedError`` when the skipped
fraction exceeds ``cfg.data.max_skip_fraction``.
"""

from __future__ import annotations

import functools
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import ray
import torch

from actionray.platform.data.annotations import read_list
from actionray.platform.data.decode import DecodeError, open_video
from actionray.platform.data.sampling import SamplingSpec, Split, sample_clip
from actionray.platform.data.transforms import build_clip_transform, flip_label, normalize

__all__ = [
    "build_clip_dataset", "dataset_config", "iter_model_batches", "skip_report", "TooManySkippedError",
    "PipelineMonitor", "list_for_split", "MONITOR_KEY", "transform_rng", "DecodeJob", "decode_sample",
]

log = logging.getLogger(__name__)
MONITOR_KEY = "actionray.pipeline_monitor"  # DataContext config key holding the monitor actor's name
NAMESPACE = "actionray"
_OWNED_MONITORS: dict[str, Any] = {}  # monitors created by this process, kept referenced


class TooManySkippedError(RuntimeError):
    """More samples were skipped in one pass than ``data.max_skip_fraction`` allows."""


@ray.remote(num_cpus=0)
class PipelineMonitor:
    """Per-dataset state shared by the driver, decode tasks and training workers: epoch and skipped rows."""

    def __init__(self, num_rows: int):
        self.num_rows = num_rows
        self.epoch = 0
        self.skipped: dict[int, dict[int, str]] = {}  # epoch -> {index: "path: reason"}

    def set_epoch(self, epoch: int) -> int:
        self.epoch = int(epoch)
        return self.epoch

    def get_epoch(self) -> int:
        return self.epoch

    def record_skip(self, epoch: int, index: int, reason: str) -> None:
        self.skipped.setdefault(int(epoch), {})[int(index)] = reason

    def report(self, epoch: int) -> dict[str, Any]:
        skipped = self.skipped.get(int(epoch), {})
        return {"epoch": int(epoch), "num_rows": self.num_rows, "skipped": len(skipped),
                "reasons": dict(sorted(skipped.items()))}


@functools.lru_cache(maxsize=64)
def _monitor(name: str):
    return ray.get_actor(name, namespace=NAMESPACE)


def transform_rng(seed: int, epoch: int, index: int, clip: int = 0) -> np.random.Generator:
    """The augmentation stream of a sample (separate from the sampling stream of the same key)."""
    return np.random.default_rng([seed, epoch, index, clip, 1])


@dataclass(frozen=True)
class DecodeJob:
    """Everything a decode task needs for one split; pickled once into ``fn_kwargs``."""

    data: Any  # DataConfig
    split: Split
    spec: SamplingSpec
    seed: int
    on_error: str
    monitor: str
    crops: int = 1
    test_scale_size: int | None = None

    @classmethod
    def from_config(cls, cfg, split: Split, monitor: str = "") -> "DecodeJob":
        """The decode settings of ``split`` from an ExperimentConfig (test views from ``cfg.eval``)."""
        test = split == "test"
        spec = SamplingSpec.from_config(cfg.data, clips=cfg.eval.clips if test else 1)
        on_error = cfg.data.on_error_train if split == "train" else cfg.data.on_error_eval
        return cls(data=cfg.data, split=split, spec=spec, seed=cfg.train.seed, on_error=on_error,
                   monitor=monitor, crops=cfg.eval.crops if test else 1,
                   test_scale_size=cfg.eval.scale_size if test else None)


def list_table(records, list_file: str):
    """The list entries as an Arrow table (compact, cheap to unpickle in every decode task)."""
    import pyarrow as pa

    return pa.table({"path": [r.path for r in records], "num_frames": [r.num_frames for r in records],
                     "label": [r.label for r in records], "source": [f"{list_file}:{r.line}" for r in records]})


@functools.lru_cache(maxsize=2)
def pass_order(split: Split, seed: int, epoch: int, num_rows: int) -> np.ndarray:
    """List index of each position of a pass: a permutation of (seed, epoch) for train, list order otherwise."""
    if split != "train":
        return np.arange(num_rows)
    return np.random.default_rng([seed, epoch, 2]).permutation(num_rows)


def decode_sample(job: DecodeJob, path: str, num_frames: int, label: int, index: int, epoch: int) -> dict[str, list]:
    """One list row -> column lists for each of its views (1 for train/val, clips x crops for test):
    video uint8 (N, S, S, 3), label, index, epoch, frame_indices (N,), view. Raises ``DecodeError``."""
    data = job.data
    clips = job.spec.clips if job.split == "test" else 1
    with open_video(path, "frames" if data.format == "frames" else "video", frame_template=data.frame_template,
                    short_side=data.decode_short_side, num_frames=num_frames if num_frames > 0 else None) as reader:
        n = len(reader)  # videos: decoded length (as MMAction2 VideoDataset and TDN); frames: the list's count
        per_clip = [sample_clip(job.spec, n, job.split, job.seed, epoch, index, c) for c in range(clips)]
        frames = reader.get(np.concatenate(per_clip))
    out: dict[str, list] = {"video": [], "label": [], "index": [], "epoch": [], "frame_indices": [], "view": []}
    length = job.spec.clip_length
    for c, indices in enumerate(per_clip):
        clip = frames[c * length:(c + 1) * length]
        for crop in range(job.crops if job.split == "test" else 1):
            view_crop = crop if job.crops == 3 else None
            transform = build_clip_transform(data, job.split, view_crop, scale_size=job.test_scale_size)
            video, flipped = transform(clip, transform_rng(job.seed, epoch, index, c))
            out["video"].append(video)
            out["label"].append(flip_label(label, flipped, data.flip_label_map))
            out["index"].append(index)
            out["epoch"].append(epoch)
            out["frame_indices"].append(indices)
            out["view"].append(c * job.crops + crop)
    return out


def _decode_batch(batch: dict[str, np.ndarray], job: DecodeJob, entries) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data UDF: a batch of pass positions -> decoded clip rows; yields per row for test (bounded heap)."""
    epoch = ray.get(_monitor(job.monitor).get_epoch.remote()) if job.split == "train" else 0
    indices = pass_order(job.split, job.seed, epoch, entries.num_rows)[batch["id"]]
    rows = entries.take(indices).to_pydict()
    columns: dict[str, list] = {}
    for path, num_frames, label, index, source in zip(rows["path"], rows["num_frames"], rows["label"],
                                                      indices.tolist(), rows["source"]):
        try:
            row = decode_sample(job, path, num_frames, label, index, epoch)
        except DecodeError as error:
            reason = f"{error.path}: {error.reason} ({source})"
            if job.on_error == "raise":
                raise DecodeError(error.path, f"{error.reason} (list entry {index}, {source}, "
                                              f"split {job.split})") from None
            ray.get(_monitor(job.monitor).record_skip.remote(epoch, index, reason))
            continue
        for key, values in row.items():
            columns.setdefault(key, []).extend(values)
        if job.split == "test":
            yield _stack(columns)
            columns = {}
    if columns:
        yield _stack(columns)


def _stack(columns: dict[str, list]) -> dict[str, np.ndarray]:
    return {key: np.stack(values).astype(np.int64) if key != "video" else np.stack(values)
            for key, values in columns.items()}


def _block_bytes(job: DecodeJob) -> int:
    """Output block target: about one UDF call's clips, so each decode batch streams out as it is ready
    (the 128 MiB default would hold back ~100 clips per block and delay the first batch)."""
    side = job.test_scale_size if job.crops == 3 else job.data.input_size
    views = job.spec.clips * job.crops if job.split == "test" else 1
    rows = views if job.split == "test" else job.data.decode_batch_size
    return max(1 << 20, int(1.5 * rows * job.spec.clip_length * side * side * 3))


def list_for_split(cfg, split: Split) -> str:
    """The list file of a split: train_list, val_list, or test_list (falls back to val_list)."""
    if split == "train":
        return cfg.data.train_list
    if split == "val":
        return cfg.data.val_list
    if split == "test":
        return cfg.data.test_list or cfg.data.val_list
    raise ValueError(f"split must be train|val|test, got {split!r}")


def _execution_options(cfg, split: Split):
    from ray.data import ExecutionOptions, ExecutionResources

    limit = cfg.data.object_store_limit_mb
    resources = ExecutionResources(object_store_memory=limit * 2**20) if limit is not None else None
    options = ExecutionOptions(preserve_order=split != "train" or cfg.train.deterministic)
    if resources is not None:
        options.resource_limits = resources
    return options


def build_clip_dataset(cfg, split: Split, *, list_file: str | None = None) -> "ray.data.Dataset":
    """A streaming dataset of decoded, transformed uint8 clips for ``split`` (see the module docstring)."""
    data = cfg.data
    list_file = list_file or list_for_split(cfg, split)
    records = read_list(list_file, root=data.root, num_classes=data.num_classes)
    # ``source`` (list file:line) lets a decode error name the line to fix
    entries = list_table(records, list_file)
    monitor_name = f"actionray_pipeline_{split}_{uuid.uuid4().hex[:12]}"
    # Owned by the creating process (the driver or a Tune trial); the handle is kept so it lives as long.
    _OWNED_MONITORS[monitor_name] = PipelineMonitor.options(name=monitor_name, namespace=NAMESPACE).remote(
        len(records))
    job = DecodeJob.from_config(cfg, split, monitor_name)
    # ~4 blocks per decode task balances the pool; a block is decoded by one streaming task that yields every
    # decode_batch_size rows, so big blocks do not mean big memory. The train shuffle is the UDF's per-epoch
    # permutation: Ray Data's random_shuffle would add an all-to-all stage before every pass (measured: 5-12 %
    # more CPU per clip on 96-clip passes, docs/performance.md).
    # from_items, not ray.data.range: the positions sit in the object store up front, so no read tasks compete
    # with the decode tasks for CPUs at the start of every pass.
    ds = ray.data.from_items([{"id": i} for i in range(len(records))],
                             override_num_blocks=min(len(records), 4 * data.decode_tasks))
    ds = ds.map_batches(_decode_batch, batch_size=data.decode_batch_size,
                        fn_kwargs={"job": job, "entries": entries},
                        compute=ray.data.TaskPoolStrategy(size=data.decode_tasks), num_cpus=1)
    ds.context.set_config(MONITOR_KEY, monitor_name)
    ds.context.target_max_block_size = _block_bytes(job)
    ds.context.execution_options = _execution_options(cfg, split)
    return ds


def dataset_config(cfg) -> "ray.train.DataConfig":
    """Train ingest: split ``train`` across workers; ``val`` unsplit and ordered; both within the memory cap."""
    from ray.train import DataConfig

    return DataConfig(datasets_to_split=["train"],
                      execution_options={"train": _execution_options(cfg, "train"),
                                         "val": _execution_options(cfg, "val"),
                                         "test": _execution_options(cfg, "test")})


def _context_of(shard):
    return shard.context if isinstance(shard, ray.data.Dataset) else shard.get_context()


def skip_report(shard, epoch: int) -> dict[str, Any]:
    """{epoch, num_rows, skipped, reasons {index: "path: reason"}} of a dataset or shard for one pass."""
    name = _context_of(shard).get_config(MONITOR_KEY)
    if name is None:
        raise ValueError("skip_report: not a dataset built by build_clip_dataset (no pipeline monitor)")
    return ray.get(_monitor(name).report.remote(epoch))


def _check_skips(report: dict[str, Any], max_fraction: float, split: str) -> None:
    skipped, total = report["skipped"], max(1, report["num_rows"])
    if not skipped:
        return
    shown = "; ".join(f"#{i} {r}" for i, r in list(report["reasons"].items())[:5])
    log.warning("%s epoch %d: skipped %d of %d samples: %s", split, report["epoch"], skipped, total, shown)
    if skipped / total > max_fraction:
        raise TooManySkippedError(f"{split} epoch {report['epoch']}: skipped {skipped} of {total} samples "
                                  f"({skipped / total:.1%} > data.max_skip_fraction {max_fraction:.1%}): {shown}")


def iter_model_batches(shard, cfg, split: Split, *, epoch: int, device: torch.device | str = "cpu",
                       batch_size: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """One pass over a worker's shard -> {"video": float32 (B, N, 3, H, W) normalised on ``device``,
    "label", "index", "epoch", "view": int64 (B,), "frame_indices": int64 (B, N)}; checks skips at the end."""
    name = _context_of(shard).get_config(MONITOR_KEY)
    monitor = _monitor(name) if name is not None else None
    if monitor is not None and split == "train":
        ray.get(monitor.set_epoch.remote(epoch))
    if batch_size is None:
        batch_size = cfg.eval.batch_size if split == "test" else cfg.data.batch_size
    expected_epoch = epoch if split == "train" else 0
    dtypes = {"video": torch.uint8, "label": torch.int64, "index": torch.int64, "epoch": torch.int64,
              "frame_indices": torch.int64, "view": torch.int64}
    stale = 0
    for batch in shard.iter_torch_batches(batch_size=batch_size, dtypes=dtypes, device=device,
                                          prefetch_batches=cfg.data.prefetch_batches, drop_last=split == "train"):
        stale += int((batch["epoch"] != expected_epoch).sum())
        batch["video"] = normalize(batch["video"])
        yield batch
    if stale:
        log.warning("%s epoch %d: %d samples were decoded with another epoch's offsets (a worker left an "
                    "epoch early?)", split, epoch, stale)
    if monitor is not None:
        _check_skips(ray.get(monitor.report.remote(expected_epoch)), cfg.data.max_skip_fraction, split)
