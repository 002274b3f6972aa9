"""Snippet features as a :class:`~actionray.platform.data.source.DataSource`: Ray Data over a feature set's videos.

Rows (``features.py`` reads the ACM-Net release layout):
- train, per video: ``features`` float32 (T, D) sampled "random" to T = ``method.num_segments`` (750), ``label``
  multi-hot float32 (C,), ``index`` (the video's line in split_train.txt), ``epoch``;
- train, per FTCL pair (``pairs=True``): the same for both videos (``features``/``label``/``index`` and
  ``features_2``/``label_2``/``index_2``) and ``pair_label``;
- val / test, per video in list order: ``features`` (T_in, D) sampled "uniform" (T_in = min(L, T), so rows differ
  in length and are read one video per batch, as the reference tests with batch 1), ``label``, ``index``,
  ``length`` L.

Sampling per epoch (``method.resample``): "epoch" re-draws every video's random indices each epoch from (seed,
epoch, index), like the FTCL repo's per-video dataset; "frozen" draws them once (epoch 0) and reuses them, like its
pair dataset ``FTCLDataset`` (FTCL repo, dataset/dataset_class.py).

Shards: epoch e visits the items (videos or pairs) in a permutation seeded by (seed, e); worker r of w takes
positions r, r + w, ... up to ``steps_per_epoch(w) * batch_size`` rows, so every epoch's shards are disjoint, equal
and full batches only (the reference keeps its last partial batch; a multi-worker run cannot). Each worker's shard
is its own dataset (``FeatureDataConfig``) of those (epoch, item) positions for every epoch, mapped by a UDF that
loads and samples the .npy files; one execution streams all epochs in order (``preserve_order``), and the worker
cuts it into epochs of exactly ``steps`` batches. A resumed run rebuilds the worker's shard from its epoch on.

Validation (``method.selection``): "holdout" (default, clean) carves ``val_fraction`` of the training videos
(seeded by ``split_seed``) out of training; "test" validates on the test split, the FTCL repo's best-test-mAP
protocol (optimistic: checkpoints chosen on the data they are scored on; docs/models.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import logging
from functools import lru_cache
from typing import Any, Iterator

import numpy as np
import ray
import ray.train
import torch

from actionray.platform.data.features import (FeatureFileError, FeatureSet, feature_file_problem, ftcl_pairs,
                                              load_feature_set)
from actionray.platform.data.pipeline import decode_task_args
from actionray.platform.data.sampling import Split

__all__ = ["FeatureSource", "FeatureDataConfig", "FeatureLayout", "FeatureSplits", "feature_splits",
           "shard_positions", "train_dataset", "eval_dataset"]

LAYOUT_KEY = "actionray_feature_layout"
_TRAIN_DTYPES = {"features": torch.float32, "label": torch.float32, "index": torch.int64, "epoch": torch.int64,
                 "features_2": torch.float32, "label_2": torch.float32, "index_2": torch.int64,
                 "pair_label": torch.int64, "valid": torch.int64}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSplits:
    """The videos of one run: the train feature set, which of its videos train and which validate (indices into
    split_train.txt, or into split_test.txt when ``val_set`` is the test split), and the training items."""

    train_set: FeatureSet
    val_set: FeatureSet
    train_videos: np.ndarray
    val_videos: np.ndarray
    pairs: np.ndarray | None  # (P, 3) rows (i, j, pair_label) over train_set indices, FTCL only


@dataclass(frozen=True)
class FeatureLayout:
    """Where a worker's train shard sits: ``rank`` of ``world``, epochs ``first_epoch .. epochs-1``,
    ``rows`` per epoch (= steps x batch)."""

    rank: int
    world: int
    first_epoch: int
    epochs: int
    rows: int


def _light(fs: FeatureSet) -> FeatureSet:
    """The set without its gt.json dict (what Ray tasks need: paths, ids, labels)."""
    return replace(fs, gt={})


@lru_cache(maxsize=8)
def _cached_splits(root: str, num_segments: int, selection: str, val_fraction: float, split_seed: int,
                   pairs: bool) -> FeatureSplits:
    train = load_feature_set(root, "train")
    n = len(train.videos)
    if selection == "test":
        train_videos, val_set = np.arange(n), load_feature_set(root, "test")
        val_videos = np.arange(len(val_set.videos))
    else:
        order = np.random.default_rng(np.random.SeedSequence([split_seed, n])).permutation(n)
        held = max(1, int(round(val_fraction * n)))
        if held >= n:
            raise ValueError(f"{root}: val_fraction {val_fraction} leaves no training video of {n}")
        val_videos, train_videos = np.sort(order[:held]), np.sort(order[held:])
        val_set = train
    pair_rows = None
    if pairs:
        found = ftcl_pairs(train.labels[train_videos], seed=0)
        if not found:
            raise ValueError(f"{root}: no FTCL pairs (no two training videos with identical labels)")
        pair_rows = np.array([(train_videos[i], train_videos[j], y) for i, j, y in found], dtype=np.int64)
    return FeatureSplits(train, val_set, train_videos, val_videos, pair_rows)


def feature_splits(cfg) -> FeatureSplits:
    """The run's videos and items from ``cfg.method`` (feature_root, selection, val_fraction, split_seed) and
    whether the method trains on pairs; checks the class count against ``data.num_classes``."""
    m = cfg.method
    splits = _cached_splits(str(m.feature_root), m.num_segments, m.selection, m.val_fraction, m.split_seed,
                            bool(getattr(m, "pairs", False)))
    classes = len(splits.train_set.classes)
    if classes != cfg.data.num_classes:
        from actionray.platform.config import ConfigError

        raise ConfigError(f"data.num_classes is {cfg.data.num_classes} but the feature set {m.feature_root} has "
                          f"{classes} classes")
    return splits


def _num_items(splits: FeatureSplits) -> int:
    return len(splits.pairs) if splits.pairs is not None else len(splits.train_videos)


def steps_for(splits: FeatureSplits, world: int, batch_size: int) -> int:
    items = _num_items(splits)
    if items < world * batch_size:
        raise ValueError(f"{items} training items cannot fill one batch of {batch_size} on each of {world} workers; "
                         f"lower data.batch_size")
    return (items // world) // batch_size


def shard_positions(num_items: int, *, seed: int, rank: int, world: int, rows: int, first_epoch: int,
                    epochs: int) -> np.ndarray:
    """(N, 2) int64 rows (epoch, item) of worker ``rank``'s shard: per epoch a (seed, epoch) permutation of the
    items, positions rank, rank + world, ... cut to ``rows``; shards of one epoch are disjoint."""
    out = []
    for epoch in range(first_epoch, epochs):
        order = np.random.default_rng(np.random.SeedSequence([seed, epoch, 7])).permutation(num_items)
        mine = order[rank::world][:rows]
        out.append(np.stack([np.full(len(mine), epoch), mine], axis=1))
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 2), dtype=np.int64)


def _readable_sample(fs: FeatureSet, index: int, num_segments: int, mode: str, seed: int, epoch: int,
                     feature_dim: int | None) -> np.ndarray | None:
    """The sampled (T, D) features of video ``index``, or None when its file cannot be used (missing, unreadable,
    not (L, feature_dim), NaN/inf in the sample): the caller skips it."""
    try:
        feats = fs.sample(index, num_segments, mode, seed, epoch)["features"]
    except Exception:  # noqa: BLE001 - any failure to read the file is a bad file; the worker names the cause
        return None
    if feats.ndim != 2 or (feature_dim is not None and feats.shape[1] != feature_dim) or not np.isfinite(feats).all():
        return None
    return feats


def _load_train_rows(batch: dict[str, np.ndarray], *, fs: FeatureSet, videos: np.ndarray, pairs: np.ndarray | None,
                     num_segments: int, seed: int, frozen: bool, feature_dim: int | None = None
                     ) -> dict[str, np.ndarray]:
    """Ray Data UDF: (epoch, item) positions -> sampled training rows (module docstring). A row whose feature file
    cannot be used keeps its place with zero features and ``valid = 0`` (the worker counts and drops it)."""
    epochs, items = batch["epoch"], batch["item"]
    first, second, pair_label = [], [], []
    for item in items.tolist():
        if pairs is None:
            first.append(int(videos[item]))
        else:
            i, j, y = pairs[item]
            first.append(int(i))
            second.append(int(j))
            pair_label.append(int(y))
    out: dict[str, np.ndarray] = {"epoch": epochs.astype(np.int64)}
    valid = np.ones(len(items), dtype=np.int64)
    for suffix, indices in (("", first), ("_2", second)):
        if not indices:
            continue
        feats = [_readable_sample(fs, v, num_segments, "random", seed, 0 if frozen else int(e), feature_dim)
                 for v, e in zip(indices, epochs)]
        shape = next((f.shape for f in feats if f is not None), (num_segments, feature_dim or 1))
        for k, f in enumerate(feats):
            if f is None:
                valid[k] = 0
                feats[k] = np.zeros(shape, np.float32)
        out[f"features{suffix}"] = np.stack(feats).astype(np.float32)
        out[f"label{suffix}"] = fs.labels[indices].astype(np.float32)
        out[f"index{suffix}"] = np.asarray(indices, dtype=np.int64)
    if pairs is not None:
        out["pair_label"] = np.asarray(pair_label, dtype=np.int64)
    out["valid"] = valid
    return out


def _positions(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """(N, 2) ``data`` blocks -> ``epoch`` and ``item`` columns."""
    data = np.asarray(batch["data"])
    return {"epoch": data[:, 0], "item": data[:, 1]}


def _load_eval_rows(batch: dict[str, np.ndarray], *, fs: FeatureSet, num_segments: int) -> dict[str, np.ndarray]:
    """Ray Data UDF: video indices -> uniform-sampled rows of varying length (a ragged ``features`` column).
    A video whose file cannot be used comes as ``length = -1`` (the reader counts and drops it)."""
    feats = np.empty(len(batch["index"]), dtype=object)
    lengths = np.zeros(len(batch["index"]), dtype=np.int64)
    for k, index in enumerate(batch["index"].tolist()):
        try:
            full = fs.features(index)
            ok = full.ndim == 2 and len(full) > 0 and bool(np.isfinite(full).all())
        except Exception:  # noqa: BLE001 - a bad file; the reader names the cause
            ok = False
        if not ok:
            feats[k], lengths[k] = np.zeros((0, 1), np.float32), -1
            continue
        feats[k] = full[np.asarray(_uniform(len(full), num_segments))]
        lengths[k] = len(full)
    return {"features": feats, "label": fs.labels[batch["index"]].astype(np.float32),
            "index": batch["index"].astype(np.int64), "length": lengths}


def _uniform(length: int, num_segments: int) -> np.ndarray:
    from actionray.platform.data.features import sample_indices

    return sample_indices(length, num_segments, "uniform")


def _tasks(cfg, world: int) -> int:
    return cfg.data.decode_pool(world)


def train_dataset(cfg, rank: int = 0, world: int = 1, first_epoch: int = 0) -> "ray.data.Dataset":
    """Worker ``rank``'s train shard for epochs ``first_epoch .. train.epochs - 1`` (module docstring)."""
    from ray.data import ExecutionOptions

    splits = feature_splits(cfg)
    m = cfg.method
    rows = steps_for(splits, world, cfg.data.batch_size) * cfg.data.batch_size
    positions = shard_positions(_num_items(splits), seed=cfg.train.seed, rank=rank, world=world, rows=rows,
                                first_epoch=first_epoch, epochs=cfg.train.epochs)
    # Input blocks of up to 64 positions, from ready numpy blocks (no read tasks competing with the loaders).
    chunks = max(1, -(-len(positions) // 64))
    ds = ray.data.from_numpy(np.array_split(positions, chunks)).map_batches(_positions, batch_size=None)
    ds = ds.map_batches(_load_train_rows, batch_size=4, compute=ray.data.TaskPoolStrategy(size=_tasks(cfg, world)),
                        **decode_task_args(cfg.data),
                        fn_kwargs={"fs": _light(splits.train_set), "videos": splits.train_videos,
                                   "pairs": splits.pairs, "num_segments": m.num_segments, "seed": cfg.train.seed,
                                   "frozen": m.resample == "frozen", "feature_dim": m.feature_dim})
    ds.context.execution_options = ExecutionOptions(preserve_order=True)
    ds.context.set_config(LAYOUT_KEY, FeatureLayout(rank, world, first_epoch, cfg.train.epochs, rows))
    return ds


def eval_dataset(cfg, split: Split) -> "ray.data.Dataset":
    """Every video of ``split`` ("val": the run's validation videos; "test": split_test.txt) in list order."""
    from ray.data import ExecutionOptions

    splits = feature_splits(cfg)
    if split == "val":
        fs, videos = splits.val_set, splits.val_videos
    elif split == "test":
        fs = load_feature_set(cfg.method.feature_root, "test")
        videos = np.arange(len(fs.videos))
    else:
        raise ValueError(f"eval_dataset: split {split!r}: expected 'val' or 'test'")
    ds = ray.data.from_numpy(np.asarray(videos, dtype=np.int64)).rename_columns({"data": "index"})
    ds = ds.map_batches(_load_eval_rows, batch_size=1, fn_kwargs={"fs": _light(fs),
                                                                  "num_segments": cfg.method.num_segments},
                        compute=ray.data.TaskPoolStrategy(size=cfg.data.decode_pool()),
                        **decode_task_args(cfg.data))
    ds.context.execution_options = ExecutionOptions(preserve_order=True)
    return ds


class FeatureDataConfig(ray.train.DataConfig):
    """One train shard dataset per worker (``train_dataset(cfg, rank, world)``); val unsplit and ordered."""

    def __init__(self, cfg):
        from ray.data import ExecutionOptions

        super().__init__(datasets_to_split=[], execution_options={"val": ExecutionOptions(preserve_order=True)})
        self.cfg = cfg

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        output = super().configure({k: v for k, v in datasets.items() if k != "train"}, world_size,
                                   worker_handles, worker_node_ids, **kwargs)
        if "train" in datasets:
            for rank in range(world_size):
                output[rank]["train"] = train_dataset(self.cfg, rank, world_size).iterator()
        return output


class _Skips:
    """Bad feature files met in one pass of one reader: named, counted against ``data.max_skip_fraction`` of the
    pass's ``total`` rows (``TooManySkippedError``) or, under ``data.on_error_train|eval: raise``, an error at the
    first one (``FeatureFileError``). Both are permanent: a retry reads the same files."""

    def __init__(self, cfg, fs: FeatureSet, split: str, epoch: int, total: int, on_error: str) -> None:
        self.cfg, self.fs, self.split, self.epoch, self.total, self.on_error = cfg, fs, split, epoch, total, on_error
        self.reasons: dict[int, str] = {}

    def add(self, index: int) -> None:
        path = self.fs.path(index)
        reason = f"{path}: {feature_file_problem(path, self.cfg.method.feature_dim) or 'unusable (NaN/inf sampled)'}"
        if self.on_error == "raise":
            raise FeatureFileError(f"{self.split} epoch {self.epoch}: {reason} "
                                   f"(data.on_error_{'train' if self.split == 'train' else 'eval'}: raise)")
        self.reasons.setdefault(int(index), reason)
        self.check(final=False)

    def check(self, final: bool = True) -> None:
        from actionray.platform.data.ingest import TooManySkippedError

        count, limit = len(self.reasons), self.cfg.data.max_skip_fraction
        if not count:
            return
        shown = "; ".join(self.reasons[i] for i in sorted(self.reasons)[:5])
        if count / max(1, self.total) > limit:
            raise TooManySkippedError(f"{self.split} epoch {self.epoch}: skipped {count} of {self.total} feature "
                                      f"rows ({count / max(1, self.total):.1%} > data.max_skip_fraction "
                                      f"{limit:.1%}): {shown}")
        if final:
            log.warning("%s epoch %d: skipped %d of %d feature rows: %s", self.split, self.epoch, count, self.total,
                        shown)


class _TrainStream:
    """A worker's train shard read in order, epoch by epoch (exactly ``rows // batch`` batches each). Rows of bad
    feature files (``valid = 0``) are dropped and counted (``_Skips``); a batch left empty is replaced by the
    previous full one, so every worker still runs the same number of steps."""

    def __init__(self, shard, layout: FeatureLayout, first_epoch: int, batch_size: int, prefetch: int,
                 cfg=None, fs: FeatureSet | None = None) -> None:
        self.layout, self.next_epoch, self.batch_size = layout, first_epoch, batch_size
        self.cfg, self.fs = cfg, fs
        self.rows = iter(shard.iter_torch_batches(batch_size=batch_size, prefetch_batches=prefetch, drop_last=False,
                                                  dtypes=_TRAIN_DTYPES))

    def epoch(self, epoch: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
        if epoch != self.next_epoch:
            raise RuntimeError(f"feature train stream is at epoch {self.next_epoch}, not {epoch}")
        self.next_epoch = epoch + 1
        skips = _Skips(self.cfg, self.fs, "train", epoch, self.layout.rows,
                       self.cfg.data.on_error_train) if self.cfg is not None else None
        last, owed = None, 0
        for _ in range(self.layout.rows // self.batch_size):
            try:
                batch = next(self.rows)
            except StopIteration:
                raise RuntimeError(f"train shard {self.layout.rank} ended before the end of epoch {epoch}") from None
            if len(batch["epoch"]) != self.batch_size or bool((batch["epoch"] != epoch).any()):
                raise RuntimeError(f"train shard {self.layout.rank}: a batch of epoch {epoch} holds rows of epochs "
                                   f"{sorted(set(batch['epoch'].tolist()))}")
            valid = batch.pop("valid", None)
            if valid is not None and not bool((valid == 1).all()):
                bad = valid != 1
                if skips is not None and self.fs is not None:
                    for row in torch.nonzero(bad).flatten().tolist():
                        videos = [int(batch[k][row]) for k in ("index", "index_2") if k in batch]
                        unusable = [v for v in videos if not _usable(self.fs, v, self.cfg)]
                        for index in unusable or videos[:1]:
                            skips.add(index)
                batch = {k: v[~bad] for k, v in batch.items()}
                if not len(batch["epoch"]):
                    owed += 1  # this step repeats a readable batch (below)
                    continue
            last = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            yield last
            while owed:
                owed -= 1
                yield last
        if owed:
            from actionray.platform.data.ingest import TooManySkippedError

            raise TooManySkippedError(f"train epoch {epoch}: shard {self.layout.rank} has no readable feature row")
        if skips is not None:
            skips.check()

    def close(self) -> None:
        rows, self.rows = self.rows, iter(())
        close = getattr(rows, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - best effort, the executor may be gone already
                pass


def _usable(fs: FeatureSet, index: int, cfg) -> bool:
    """False when video ``index``'s file is bad (of a pair row, only the bad one of the two is counted)."""
    return feature_file_problem(fs.path(index), cfg.method.feature_dim) is None


class FeatureSource:
    """Snippet-feature rows for a WTAL method (module docstring); built from the experiment config."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self._stream: _TrainStream | None = None

    def datasets(self) -> dict[str, "ray.data.Dataset"]:
        """"train" (worker 0 of 1 here; ``dataset_config`` builds the real per-worker shards) and "val"."""
        return {"train": train_dataset(self.cfg), "val": eval_dataset(self.cfg, "val")}

    def dataset_config(self) -> "ray.train.DataConfig":
        return FeatureDataConfig(self.cfg)

    def steps_per_epoch(self, world_size: int) -> int:
        """Equal shards of the items (videos or pairs), full batches only."""
        return steps_for(feature_splits(self.cfg), world_size, self.cfg.data.batch_size)

    def inputs(self) -> list:
        """gt.json with the run's train and validation videos (``source.DataInput``: the digest covers gt.json's
        bytes, the split and the chosen video ids, so a holdout of another seed or fraction is other data)."""
        from pathlib import Path

        from actionray.platform.data.source import DataInput, content_digest

        m, s = self.cfg.method, feature_splits(self.cfg)
        gt = Path(m.feature_root) / "gt.json"
        out = []
        for context, fs, videos in (("train", s.train_set, s.train_videos), ("validation", s.val_set, s.val_videos)):
            selection = {"split": fs.split, "selection": m.selection, "videos": [fs.videos[i] for i in videos]}
            out.append(DataInput(name=f"{Path(m.feature_root).name}/gt.json:{fs.split}", context=context,
                                 source=str(gt), digest=content_digest(gt, selection),
                                 counts={"videos": len(videos), "items": _num_items(s) if context == "train"
                                         else len(videos)}))
        return out

    def batches(self, shard: Any, split: Split, *, epoch: int, device: torch.device) -> Iterator[dict[str, Any]]:
        """Train: this epoch's ``steps`` batches of (B, T, D) features. Val/test: one video per batch,
        ``features`` (1, T_in, D) with ``label`` (1, C), ``index`` and ``length`` (1,)."""
        if split != "train":
            return self._videos(shard, device, split)
        if self._stream is None or self._stream.next_epoch != epoch:
            self._restart(shard, epoch)
        return self._stream.epoch(epoch, device)

    def _restart(self, shard: Any, epoch: int) -> None:
        from actionray.platform.data.monitor import context_of

        if self._stream is not None:
            self._stream.close()
        layout: FeatureLayout | None = context_of(shard).get_config(LAYOUT_KEY)
        if layout is None:
            raise ValueError("FeatureSource.batches: the train shard was not built by feature_source.train_dataset")
        if epoch != layout.first_epoch:  # resuming: this worker's shard again, from ``epoch`` on
            shard = train_dataset(self.cfg, layout.rank, layout.world, first_epoch=epoch).iterator()
            layout = context_of(shard).get_config(LAYOUT_KEY)
        self._stream = _TrainStream(shard, layout, epoch, self.cfg.data.batch_size, self.cfg.data.prefetch_batches,
                                    cfg=self.cfg, fs=feature_splits(self.cfg).train_set)

    def _videos(self, shard: Any, device: torch.device, split: Split = "val") -> Iterator[dict[str, Any]]:
        """One video per batch in list order; videos of bad files are dropped and counted (``_Skips``)."""
        splits = feature_splits(self.cfg)
        if split == "val":
            fs, total = splits.val_set, len(splits.val_videos)
        else:
            fs = load_feature_set(self.cfg.method.feature_root, "test")
            total = len(fs.videos)
        skips = _Skips(self.cfg, fs, split, 0, total, self.cfg.data.on_error_eval)
        for batch in shard.iter_batches(batch_size=1, batch_format="numpy"):
            if int(batch["length"][0]) < 0:
                skips.add(int(batch["index"][0]))
                continue
            feats = np.stack([np.asarray(f, dtype=np.float32) for f in batch["features"]])
            yield {"features": torch.from_numpy(feats).to(device), "label": torch.from_numpy(batch["label"]),
                   "index": torch.from_numpy(batch["index"]), "length": torch.from_numpy(batch["length"])}
        skips.check()

    def test_dataset(self) -> "ray.data.Dataset":
        """Every test video (split_test.txt), uniform sampling, in list order."""
        return eval_dataset(self.cfg, "test")

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

