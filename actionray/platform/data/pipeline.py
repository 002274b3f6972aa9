"""The Ray Data clip pipeline: list rows -> decoded, augmented uint8 clips in the object store.

list file -> sampled frame indices -> decoded uint8 clip -> transforms -> **batch** -> model.

Driver side, ``build_clip_dataset(cfg, split)``: the dataset's input is a range of positions laid out by a
``PassLayout``; the list itself (path, num_frames, label, list line) travels once per decode task as an Arrow table
in the UDF's arguments. ``map_batches`` maps each position to a list entry and decodes + samples + transforms it in
a pool of CPU tasks, never inside a training worker. Output rows: ``video`` uint8 (N, S, S, 3),
``label``/``index``/``epoch``/``valid`` int64, ``frame_indices`` int64 (N,) (the sampled frames, for
traceability) and ``view`` int64 (test: one row per clip x crop view, ``view = clip * crops + crop``; train: the clip
id, one row per training clip, ``data.clips_per_video`` rows per video and epoch, each sharded and shuffled like
any row: a pass of ``V`` videos orders ``V * clips_per_video`` positions, ``v -> clip v % cpv of entry v // cpv``).
Clips stay uint8 through the object store; ``ingest.iter_model_batches`` normalises them on the worker's device.

Train: one execution for all epochs. A train dataset streams ``passes`` (up to ``train.epochs``) passes of one
shard of the list in a single Ray Data execution, so the decode pool starts once per run instead of once per
epoch (each start costs about a second of idle decode tasks in Ray 2.60, docs/performance.md) and keeps decoding
the next epoch while a worker validates or checkpoints. Pass ``k`` of shard ``rank`` of ``world`` holds the
positions ``rank, rank + world, ...`` of a fresh permutation of (seed, epoch), so the shards of an epoch are
disjoint and cover ``world * (N // world)`` entries, like Ray's ``streaming_split(equal=True)``, but exactly per
epoch. Each Train worker gets its own shard dataset (``ingest.ClipDataConfig``). Pass ``k`` is epoch
``first_epoch + k``: 0 + k, or, when a worker resumes at epoch ``e``, it builds its shard again from ``e``.
Val and test: one pass, unsplit, in list order.

Bad samples. A ``DecodeError`` (missing, empty, truncated, corrupt file; index past the end) is raised with
the list line under ``on_error=raise``; under ``skip`` it is recorded with its reason in the monitor, and in train
streams it still yields a row with ``valid = 0`` (a zero clip) so a worker can count its rows and know exactly
when an epoch ends; ``ingest`` drops those rows, fails the pass when too many were skipped, and reports why.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import numpy as np
import ray

from actionray.platform.data.annotations import read_list
from actionray.platform.data.decode import DecodeError, open_video
from actionray.platform.data.monitor import MONITOR_KEY, get_monitor, new_monitor
from actionray.platform.data.sampling import SamplingSpec, Split, sample_clip
from actionray.platform.data.transforms import build_clip_transform, flip_label

__all__ = [
    "build_clip_dataset", "PassLayout", "list_for_split", "LAYOUT_KEY", "RECIPE_KEY", "transform_rng", "DecodeJob",
    "RowDecoder",
    "decode_sample", "execution_options",
]

log = logging.getLogger(__name__)
LAYOUT_KEY = "actionray.pass_layout"  # DataContext config keys (next to monitor.MONITOR_KEY): the PassLayout,
RECIPE_KEY = "actionray.recipe"  # and how to build the dataset again for another shard (ingest.ClipDataConfig)


@dataclass(frozen=True)
class PassLayout:
    """The positions a dataset streams: ``passes`` passes of ``rows`` positions each, pass ``k`` being epoch
    ``first_epoch + k``; in every pass the positions ``rank, rank + world, ...`` of the pass order
    (``pass_order``). Input id ``k * rows + i`` is position ``rank + world * i`` of pass ``k``."""

    rows: int
    rank: int = 0
    world: int = 1
    passes: int = 1
    first_epoch: int = 0

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Input ids -> (pass number, position in the pass order)."""
        passes, i = np.divmod(np.asarray(ids, dtype=np.int64), self.rows)
        return passes, self.rank + self.world * i


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
    rows: Any = None  # a method's RowDecoder (several clips per row ...); None = one sampled clip per view

    @classmethod
    def from_config(cls, cfg, split: Split, monitor: str = "", rows: Any = None) -> "DecodeJob":
        """The decode settings of ``split`` from an ExperimentConfig (test views from ``cfg.eval``)."""
        test = split == "test"
        spec = SamplingSpec.from_config(cfg.data, clips=cfg.eval.clips if test else 1)
        on_error = cfg.data.on_error_train if split == "train" else cfg.data.on_error_eval
        return cls(data=cfg.data, split=split, spec=spec, seed=cfg.train.seed, on_error=on_error,
                   monitor=monitor, crops=cfg.eval.crops if test else 1,
                   test_scale_size=cfg.eval.scale_size if test else None, rows=rows)


class RowDecoder(Protocol):
    """What a method plugs into the clip pipeline when one row is not one sampled clip (e.g. DCLR: two windows
    and a static frame of one video, four crops, in one row). Runs inside the Ray Data decode tasks; must pickle.
    Both calls return column lists (one entry per output row) with at least ``index``, ``epoch`` and ``valid``."""

    def __call__(self, job: "DecodeJob", path: str, num_frames: int, label: int, index: int,
                 epoch: int) -> dict[str, list]: ...

    def skipped(self, job: "DecodeJob", index: int, epoch: int) -> dict[str, list]:
        """The placeholder row of a skipped train sample (same columns and shapes, ``valid = 0``)."""
        ...


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


def decode_sample(job: DecodeJob, path: str, num_frames: int, label: int, index: int, epoch: int,
                  clips: list[int] | None = None) -> dict[str, list]:
    """One list row -> column lists for each of its views (1 for val, clips x crops for test, one per id in
    ``clips`` for train: the training clips of this video in this decode task, decoded with one reader and one
    ``get``): video uint8 (N, S, S, 3), label, index, epoch, frame_indices (N,), view (the clip id for train),
    valid (1). Raises ``DecodeError``."""
    data = job.data
    clip_ids = list(range(job.spec.clips)) if job.split == "test" else (clips or [0]) if job.split == "train" else [0]
    with open_video(path, "frames" if data.format == "frames" else "video", frame_template=data.frame_template,
                    short_side=data.decode_short_side, num_frames=num_frames if num_frames > 0 else None) as reader:
        n = len(reader)  # videos: decoded length (as MMAction2 VideoDataset and TDN); frames: the list's count
        per_clip = [sample_clip(job.spec, n, job.split, job.seed, epoch, index, c) for c in clip_ids]
        frames = reader.get(np.concatenate(per_clip))
    out: dict[str, list] = {"video": [], "label": [], "index": [], "epoch": [], "frame_indices": [], "view": [],
                            "valid": []}
    length = job.spec.clip_length
    for i, (c, indices) in enumerate(zip(clip_ids, per_clip)):
        clip = frames[i * length:(i + 1) * length]
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
            out["valid"].append(1)
    return out


def _decode_batch(batch: dict[str, np.ndarray], job: DecodeJob, entries,
                  layout: PassLayout) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data UDF: a batch of input ids -> decoded clip rows; yields per row for test (bounded heap)."""
    passes, positions = layout.locate(batch["data"])
    epochs = (layout.first_epoch + passes).tolist()
    cpv = job.spec.train_clips if job.split == "train" else 1
    # a train pass orders videos x clips_per_video positions; position value v is clip v % cpv of entry v // cpv
    values = np.array([pass_order(job.split, job.seed, e, entries.num_rows * cpv)[p]
                       for e, p in zip(epochs, positions)], dtype=np.int64)
    indices, clip_ids = np.divmod(values, cpv)
    # Clips of one video in one epoch that land in this call are decoded together: one reader, one get
    # (docs/performance.md, clips_per_video); first-seen order is kept.
    groups: dict[tuple[int, int], list[int]] = {}
    for index, epoch, c in zip(indices.tolist(), epochs, clip_ids.tolist()):
        groups.setdefault((index, epoch), []).append(c)
    keys = list(groups)
    rows = entries.take(np.array([k[0] for k in keys], dtype=np.int64)).to_pydict()
    # Fire and forget (~0.1 ms): which rows this task decodes for which epoch, on which node (monitor.py); a row
    # is an entry (clips_per_video 1) or entry x clip_per_video + clip
    get_monitor(job.monitor).record_visits.remote(ray.get_runtime_context().get_node_id(), epochs, values.tolist())
    columns: dict[str, list] = {}
    for (index, epoch), path, num_frames, label, source in zip(keys, rows["path"], rows["num_frames"],
                                                               rows["label"], rows["source"]):
        clips = groups[(index, epoch)]
        try:
            if job.rows is not None:
                row = job.rows(job, path, num_frames, label, index, epoch)
            else:
                row = decode_sample(job, path, num_frames, label, index, epoch,
                                    clips if job.split == "train" else None)
        except DecodeError as error:
            reason = f"{error.path}: {error.reason} ({source})"
            if job.on_error == "raise":
                raise DecodeError(error.path, f"{error.reason} (list entry {index}, {source}, "
                                              f"split {job.split})") from None
            ray.get(get_monitor(job.monitor).record_skip.remote(epoch, index, reason))
            if job.split != "train":
                continue
            # train streams count every position (module docstring): one placeholder row per clip
            row = job.rows.skipped(job, index, epoch) if job.rows else _skipped_row(job, index, epoch, clips)
        for key, values in row.items():
            columns.setdefault(key, []).extend(values)
        if job.split == "test":
            yield _stack(columns)
            columns = {}
    if columns:
        yield _stack(columns)


def _skipped_row(job: DecodeJob, index: int, epoch: int, clips: list[int] | None = None) -> dict[str, list]:
    """The placeholder rows of a skipped train sample (one per clip id): a zero clip with ``valid = 0``."""
    length, side = job.spec.clip_length, job.data.input_size
    clips = clips or [0]
    n = len(clips)
    return {"video": [np.zeros((length, side, side, 3), np.uint8)] * n, "label": [-1] * n, "index": [index] * n,
            "epoch": [epoch] * n, "frame_indices": [np.zeros(length, np.int64)] * n, "view": list(clips),
            "valid": [0] * n}


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


def execution_options(cfg, split: Split, world: int = 1):
    """Ray Data options of a split's dataset: the object-store cap (shared by ``world`` shard streams) and the
    output order (list order for val/test; for train only under ``train.deterministic``)."""
    from ray.data import ExecutionOptions, ExecutionResources

    limit = cfg.data.object_store_limit_mb
    options = ExecutionOptions(preserve_order=split != "train" or cfg.train.deterministic)
    if limit is not None:
        options.resource_limits = ExecutionResources(object_store_memory=max(64, limit // world) * 2**20)
    return options


# The custom resource a node declares to take decode tasks under ``data.decode_nodes: cpu_only`` (cluster.yaml sets it
# to 1 on its CPU decode nodes); each task asks a thousandth of it, so CPUs, not this resource, bound the pool.
DECODE_NODE_RESOURCE = "actionray_decode"


def decode_task_args(data) -> dict[str, Any]:
    """``map_batches`` scheduling arguments of a decode task: one CPU, on a decode node under ``cpu_only``."""
    args: dict[str, Any] = {"num_cpus": 1}
    if data.decode_nodes == "cpu_only":
        args["resources"] = {DECODE_NODE_RESOURCE: 1e-3}
    return args


def expected_decoders(cfg, world: int = 1) -> int:
    """Decode tasks one of ``world`` shards can expect to run at once (sizes its input blocks): the pinned pool,
    or for ``decode_tasks: auto`` the cluster's CPUs beyond the training workers' now, split over the shards and
    capped by ``decode_tasks_max`` (Ray Data launches more as the autoscaler adds nodes)."""
    data, s = cfg.data, cfg.scaling
    cap = data.decode_pool(world)
    if data.decode_tasks != "auto" or not ray.is_initialized():
        return cap
    free = ray.cluster_resources().get("CPU", 0.0) - s.num_workers * s.cpus_per_worker
    return max(1, min(cap, int(free) // world))


def build_clip_dataset(cfg, split: Split, *, list_file: str | None = None, shard: tuple[int, int] = (0, 1),
                       passes: int | None = None, first_epoch: int = 0, monitor: str | None = None,
                       rows: RowDecoder | None = None) -> "ray.data.Dataset":
    """A streaming dataset of decoded, transformed uint8 clips for ``split`` (see the module docstring).

    ``shard=(rank, world)``, ``first_epoch`` and ``passes`` (default: up to ``train.epochs``) apply to train;
    val and test are one unsplit pass. ``monitor`` reuses another dataset's pipeline monitor (the shards of one
    train split). ``rows`` replaces the one-clip-per-row decoding by a method's own (``RowDecoder``)."""
    data = cfg.data
    list_file = list_file or list_for_split(cfg, split)
    records = read_list(list_file, root=data.root, num_classes=data.num_classes)
    rank, world = shard if split == "train" else (0, 1)
    if not 0 <= rank < world:
        raise ValueError(f"shard=(rank, world) needs 0 <= rank < world, got {shard}")
    if len(records) < world:
        raise ValueError(f"{list_file}: {len(records)} entries cannot be split across {world} training workers")
    first_epoch = first_epoch if split == "train" else 0
    passes = (passes or cfg.train.epochs - first_epoch) if split == "train" else 1
    if passes < 1:
        raise ValueError(f"build_clip_dataset: no epochs to stream (first_epoch={first_epoch}, "
                         f"train.epochs={cfg.train.epochs})")
    cpv = data.clips_per_video if split == "train" else 1
    if cpv > 1 and rows is not None:
        raise ValueError(f"data.clips_per_video={cpv}: a method with its own rows per video "
                         f"({type(rows).__name__}) takes one row per video; set data.clips_per_video=1")
    # train: clips_per_video rows per video, positions v -> clip v % cpv of entry v // cpv (_decode_batch)
    layout = PassLayout(rows=len(records) * cpv // world, rank=rank, world=world, passes=passes,
                        first_epoch=first_epoch)
    # ``source`` (list file:line) lets a decode error name the line to fix
    entries = list_table(records, list_file)
    if monitor is None:
        monitor = new_monitor(split, len(records) * cpv)
    job = DecodeJob.from_config(cfg, split, monitor, rows)
    tasks = data.decode_pool(world)  # data.decode_tasks is the pool of the whole split
    # Input blocks: one decode task streams a block out decode_batch_size rows at a time, so a big block does not
    # mean big memory, and each block boundary costs ~0.2 s of an idle task (Ray's task start). One execution
    # serves every epoch, so blocks need not align with passes: up to 64 rows, at most a pass per task so that
    # rows of the next epoch arriving early (held back by the worker, on the host) stay bounded. Measured on
    # 96-clip passes with 2 tasks: 12-row blocks 25.7, 48-row blocks 30.5-31.4 clips/s (docs/performance.md).
    # The train shuffle is the UDF's per-epoch permutation: Ray Data's random_shuffle would add an all-to-all
    # stage (measured: 5-12 % more CPU per clip on 96-clip passes). The input ids go to the object store as ready
    # blocks (from_numpy): ray.data.range would run read tasks that compete with the decode tasks for CPUs
    # (measured: a 3x slower first pass).
    total = layout.rows * layout.passes
    block_rows = min(64, max(data.decode_batch_size, layout.rows // expected_decoders(cfg, world)))
    ds = ray.data.from_numpy(np.array_split(np.arange(total, dtype=np.int64), -(-total // block_rows)))
    ds = ds.map_batches(_decode_batch, batch_size=data.decode_batch_size,
                        fn_kwargs={"job": job, "entries": entries, "layout": layout},
                        compute=ray.data.TaskPoolStrategy(size=tasks), **decode_task_args(data))
    ds.context.set_config(MONITOR_KEY, monitor)
    ds.context.set_config(LAYOUT_KEY, layout)
    ds.context.set_config(RECIPE_KEY, {"cfg": cfg, "split": split, "list_file": str(list_file), "rows": rows})
    ds.context.target_max_block_size = _block_bytes(job)
    ds.context.execution_options = execution_options(cfg, split, world)
    return ds
