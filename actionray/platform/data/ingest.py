"""Worker side of the clip pipeline: a worker's shard of the train split as one stream of epochs, model batches.

``ClipDataConfig`` (Ray Train's ``DataConfig``) gives every Train worker its own train shard dataset
(``build_clip_dataset(..., shard=(rank, world))``) instead of ``streaming_split``: each shard holds exactly its
positions of every epoch, so the shards of an epoch are disjoint and complete and every worker runs the same
number of steps, while one Ray Data execution serves all epochs (pipeline module docstring).

``iter_model_batches(shard, cfg, split, epoch=e)`` is one pass of a worker:
- train: the next epoch of the worker's running stream (started on the first call, or again when a call asks
  for an epoch other than the next one, e.g. after resuming). Rows arrive roughly in pass order; a batch that
  reaches into the next epoch is cut there and the rest is kept for the next call. The pass ends when all
  ``rows`` positions of the epoch have arrived (skipped samples come as ``valid = 0`` rows, so the count is
  exact). It yields exactly ``rows // batch_size`` batches: when skipped samples leave fewer full batches, the
  last ones are filled with repeats of this epoch's clips, as ``DistributedSampler`` pads, and the log says so.
- val / test: one execution of the dataset in list order; skipped samples are dropped.
Either way a pass whose skipped fraction exceeds ``data.max_skip_fraction`` fails with ``TooManySkippedError``.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, Iterator

import ray
import ray.train
import torch

from actionray.errors import NoRetryError, UserError
from actionray.platform.data.monitor import MONITOR_KEY, context_of, monitor_of
from actionray.platform.data.pipeline import LAYOUT_KEY, RECIPE_KEY, PassLayout, build_clip_dataset, execution_options
from actionray.platform.data.prefetch import to_device_ahead
from actionray.platform.data.sampling import Split
from actionray.platform.data.transforms import normalize

__all__ = [
    "iter_model_batches", "TrainStreams", "dataset_config", "ClipDataConfig", "shard_datasets", "skip_report",
    "TooManySkippedError", "EpochCutter",
]

log = logging.getLogger(__name__)
DTYPES = {"video": torch.uint8, "label": torch.int64, "index": torch.int64, "epoch": torch.int64,
          "frame_indices": torch.int64, "view": torch.int64, "valid": torch.int64}
Batch = dict[str, torch.Tensor]


class TooManySkippedError(UserError, NoRetryError, RuntimeError):
    """More samples were skipped in one pass than ``data.max_skip_fraction`` allows."""


class ClipDataConfig(ray.train.DataConfig):
    """Train ingest: one train shard dataset per worker (one execution for all its epochs); val and test unsplit
    and ordered; all within ``data.object_store_limit_mb``."""

    def __init__(self, cfg):
        super().__init__(datasets_to_split=["train"],
                         execution_options={split: execution_options(cfg, split) for split in ("train", "val",
                                                                                                "test")})

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        output = super().configure({k: v for k, v in datasets.items() if k != "train"}, world_size,
                                   worker_handles, worker_node_ids, **kwargs)
        if "train" in datasets:
            for rank, shard in enumerate(shard_datasets(datasets["train"], world_size)):
                output[rank]["train"] = shard.iterator()
        return output


def dataset_config(cfg) -> ClipDataConfig:
    """The ``dataset_config`` of a TorchTrainer fed by ``build_clip_dataset`` datasets."""
    return ClipDataConfig(cfg)


def shard_datasets(dataset: "ray.data.Dataset", world: int) -> list["ray.data.Dataset"]:
    """The ``world`` shard datasets of a train dataset from ``build_clip_dataset`` (same monitor, same passes)."""
    layout = dataset.context.get_config(LAYOUT_KEY)
    return [_rebuild(dataset, (rank, world), layout.first_epoch, layout.passes) for rank in range(world)]


def _rebuild(dataset, shard: tuple[int, int], first_epoch: int, passes: int) -> "ray.data.Dataset":
    """``dataset`` (a train dataset or shard iterator from build_clip_dataset) built again for another shard or
    first epoch, sharing its pipeline monitor."""
    recipe = context_of(dataset).get_config(RECIPE_KEY)
    if recipe is None or recipe["split"] != "train":
        raise ValueError("ClipDataConfig: the 'train' dataset must come from build_clip_dataset(cfg, 'train')")
    return build_clip_dataset(recipe["cfg"], "train", list_file=recipe["list_file"], shard=shard, rows=recipe["rows"],
                              passes=passes, first_epoch=first_epoch,
                              monitor=context_of(dataset).get_config(MONITOR_KEY))


def skip_report(shard, epoch: int) -> dict[str, Any]:
    """{epoch, num_rows, skipped, reasons {index: "path: reason"}} of a dataset's split in one pass (all shards)."""
    monitor = monitor_of(shard)
    if monitor is None:
        raise ValueError("skip_report: not a dataset built by build_clip_dataset (no pipeline monitor)")
    return ray.get(monitor.report.remote(epoch))


def _check_skips(skipped: list[int], total: int, reasons: dict[int, str], epoch: int, max_fraction: float,
                 split: str) -> None:
    if not skipped:
        return
    shown = "; ".join(f"#{i} {reasons.get(i, '(reason not recorded)')}" for i in sorted(skipped)[:5])
    log.warning("%s epoch %d: skipped %d of %d samples: %s", split, epoch, len(skipped), total, shown)
    if len(skipped) / max(1, total) > max_fraction:
        raise TooManySkippedError(f"{split} epoch {epoch}: skipped {len(skipped)} of {total} samples "
                                  f"({len(skipped) / total:.1%} > data.max_skip_fraction {max_fraction:.1%}): "
                                  f"{shown}")


def _take(batch: Batch, keep: torch.Tensor) -> Batch:
    return {key: value[keep] for key, value in batch.items()}


def _cat(parts: list[Batch]) -> Batch:
    return parts[0] if len(parts) == 1 else {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


class EpochCutter:
    """Cuts a stream of row batches (each row tagged with its ``epoch``) into epochs of exactly ``rows_per_epoch``
    rows. Rows arrive roughly in epoch order; rows of later epochs that come early are held back for their epoch."""

    def __init__(self, source: Iterator[Batch], rows_per_epoch: int, name: str = "stream"):
        self.source, self.rows_per_epoch, self.name = source, rows_per_epoch, name
        self.held: list[Batch] = []  # rows of later epochs that arrived early, in arrival order

    def rows(self, epoch: int) -> Iterator[Batch]:
        """Chunks holding exactly the ``rows_per_epoch`` rows of ``epoch``; raises if the stream ends short."""
        held, self.held = self.held, []
        remaining = self.rows_per_epoch
        while remaining:
            if held:
                chunk = held.pop(0)
            else:
                try:
                    chunk = next(self.source)
                except StopIteration:
                    raise RuntimeError(f"{self.name} ended {remaining} rows short of the end of epoch "
                                       f"{epoch}") from None
            epochs = chunk["epoch"]
            if bool((epochs == epoch).all()):
                mine = chunk
            else:
                if bool((epochs < epoch).any()):
                    raise RuntimeError(f"{self.name}: rows of an earlier epoch arrived during epoch {epoch}")
                later = epochs != epoch
                self.held.append(_take(chunk, later))
                mine = _take(chunk, ~later)
            remaining -= len(mine["epoch"])
            if remaining < 0:
                raise RuntimeError(f"{self.name}: more rows than positions in epoch {epoch}")
            if len(mine["epoch"]):
                yield mine
        self.held = held + self.held  # chunks not reached yet keep their place ahead of the new ones


class _EpochStream:
    """One worker's train shard as a single Ray Data execution, consumed epoch by epoch (module docstring)."""

    def __init__(self, shard, cfg, first_epoch: int, device, batch_size: int):
        layout: PassLayout = context_of(shard).get_config(LAYOUT_KEY)
        end = layout.first_epoch + layout.passes
        if not layout.first_epoch <= first_epoch < end:
            raise ValueError(f"train shard streams epochs {layout.first_epoch}..{end - 1}, not epoch {first_epoch}")
        if first_epoch != layout.first_epoch:  # resuming: the same shard, from first_epoch on
            shard = _rebuild(shard, (layout.rank, layout.world), first_epoch, end - first_epoch)
            layout = context_of(shard).get_config(LAYOUT_KEY)
        self.layout, self.cfg, self.batch_size = layout, cfg, batch_size
        self.next_epoch = first_epoch
        self.monitor = monitor_of(shard)
        ray.get(self.monitor.stream_started.remote())
        # Host batches, pinned in Ray's collate thread when the worker trains on a GPU (prefetch.to_device_ahead moves
        # them; device="cpu": Ray's default "auto" would copy them to the GPU itself): rows of the next epoch that
        # arrive early wait in host memory, not on an accelerator.
        self.rows = iter(shard.iter_torch_batches(batch_size=batch_size, dtypes=DTYPES, device="cpu",
                                                  pin_memory=torch.device(device).type == "cuda",
                                                  prefetch_batches=cfg.data.prefetch_batches, drop_last=False))
        self.cutter = EpochCutter(self.rows, layout.rows, f"train shard {layout.rank}")

    def close(self) -> None:
        """Stop the execution (its decode tasks), e.g. when a stream is abandoned before its last pass. Streams
        must not be left to the garbage collector at interpreter exit: Ray 2.60's executor shutdown can then
        deadlock on its own lock (seen as a hung process after the last line of a script)."""
        rows, self.rows = self.rows, iter(())
        self.cutter.source = self.rows
        data_log = logging.getLogger("ray.data")
        level = data_log.level
        if not ray.is_initialized():  # after ray.shutdown the executor's final metrics calls can only log errors
            data_log.setLevel(logging.CRITICAL)
        try:
            rows.close()
        except Exception:  # noqa: BLE001 - closing is best effort; the executor may already be gone
            log.debug("closing a train stream failed", exc_info=True)
        finally:
            data_log.setLevel(level)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Exactly ``layout.rows // batch_size`` model batches of ``epoch`` (uint8 video; padded if needed).
        The stream closes after its last pass, and after a pass that failed."""
        if epoch != self.next_epoch:
            raise RuntimeError(f"train stream is at epoch {self.next_epoch}, not {epoch}")
        self.next_epoch = epoch + 1
        last_pass = self.next_epoch >= self.layout.first_epoch + self.layout.passes
        try:
            yield from self._batches(epoch, last_pass)
        except BaseException:
            self.next_epoch = -1  # unusable: the next call starts a new stream
            self.close()
            raise

    def _batches(self, epoch: int, last_pass: bool) -> Iterator[Batch]:
        steps, size = self.layout.rows // self.batch_size, self.batch_size
        parts: list[Batch] = []
        filled = done = 0
        skipped: list[int] = []
        last: Batch | None = None
        for chunk in self.cutter.rows(epoch):
            valid = chunk["valid"] == 1
            if not bool(valid.all()):
                skipped.extend(chunk["index"][~valid].tolist())
                chunk = _take(chunk, valid)
            if not len(chunk["valid"]):
                continue
            parts.append(chunk)
            filled += len(chunk["valid"])
            while filled >= size and done < steps:
                rows = _cat(parts)
                batch, rest = {k: v[:size] for k, v in rows.items()}, {k: v[size:] for k, v in rows.items()}
                parts, filled = ([rest] if filled > size else []), filled - size
                last, done = batch, done + 1
                yield batch
        if last_pass:
            self.close()
        reasons = ray.get(self.monitor.report.remote(epoch))["reasons"] if skipped else {}
        _check_skips(skipped, self.layout.rows, reasons, epoch, self.cfg.data.max_skip_fraction, "train")
        if done < steps:
            yield from self._padding(parts, last, steps - done, epoch, len(skipped))

    def _padding(self, parts: list[Batch], last: Batch | None, missing: int, epoch: int,
                 skipped: int) -> Iterator[Batch]:
        """``missing`` batches from this epoch's leftover rows and repeats of them and of the last batch."""
        pieces = parts + ([last] if last is not None else [])  # parts hold only readable rows
        if not pieces:
            raise TooManySkippedError(f"train epoch {epoch}: shard {self.layout.rank} has no readable sample")
        pool = _cat(pieces)
        log.warning("train epoch %d: %d skipped samples left shard %d %d batch(es) short; filled them with "
                    "repeated clips of this epoch so every worker runs the same number of steps",
                    epoch, skipped, self.layout.rank, missing)
        n = len(pool["valid"])
        for step in range(missing):
            take = torch.arange(step * self.batch_size, (step + 1) * self.batch_size, device=pool["valid"].device) % n
            yield _take(pool, take)


class TrainStreams:
    """The running train streams of one process, one per shard (module docstring). The training loop creates one,
    hands it to every ``iter_model_batches`` call and closes it when the run ends (also on error or Ctrl+C):
    streams must not be left to the garbage collector at interpreter exit (``_EpochStream.close``)."""

    def __init__(self) -> None:
        self._streams: dict[int, tuple[weakref.ref, _EpochStream]] = {}  # id(shard) -> (shard, its stream)

    def get(self, shard, cfg, epoch: int, device, batch_size: int) -> _EpochStream:
        """The shard's running stream if it is at ``epoch``, else a new one starting there."""
        ref, stream = self._streams.get(id(shard), (None, None))
        if ref is None or ref() is not shard or stream.next_epoch != epoch or stream.batch_size != batch_size:
            if stream is not None:
                stream.close()
            if context_of(shard).get_config(LAYOUT_KEY) is None or monitor_of(shard) is None:
                raise ValueError("iter_model_batches: not a train dataset built by build_clip_dataset")
            stream = _EpochStream(shard, cfg, epoch, device, batch_size)
            self._streams[id(shard)] = (weakref.ref(shard), stream)
        return stream

    def close(self) -> None:
        """Stop every stream still open (a stream closes itself after its last pass)."""
        while self._streams:
            _, (_, stream) = self._streams.popitem()
            stream.close()

    def __enter__(self) -> "TrainStreams":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_model_batches(shard, cfg, split: Split, *, epoch: int, device: torch.device | str = "cpu",
                       batch_size: int | None = None, streams: TrainStreams | None = None,
                       normalise: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """One pass over a worker's shard -> {"video": float32 (B, N, 3, H, W) normalised on ``device``,
    "label", "index", "epoch", "view", "valid": int64 (B,), "frame_indices": int64 (B, N)}; checks skips.

    Train passes continue the shard's stream held in ``streams`` (required for train). ``normalise=False`` hands
    the uint8 video on as it is (a method that augments on the device normalises itself). Batches reach
    ``device`` through ``prefetch.to_device_ahead``: pinned host memory and the next batch's copy in flight on a
    side stream on a GPU, the same path as a no-op move on the CPU; its time counts as the loop's data wait."""
    if batch_size is None:
        batch_size = cfg.eval.batch_size if split == "test" else cfg.data.batch_size
    if split == "train":
        if streams is None:
            raise ValueError("iter_model_batches: a train pass needs streams=TrainStreams() (kept across epochs)")
        batches = streams.get(shard, cfg, epoch, device, batch_size).epoch(epoch)
    else:
        batches = shard.iter_torch_batches(batch_size=batch_size, dtypes=DTYPES, device="cpu",
                                           pin_memory=torch.device(device).type == "cuda",
                                           prefetch_batches=cfg.data.prefetch_batches, drop_last=False)
    for batch in to_device_ahead(batches, device):
        # a new dict: the stream may reuse ``batch``
        yield {**batch, "video": normalize(batch["video"])} if normalise else dict(batch)
    if split != "train":
        monitor = monitor_of(shard)
        if monitor is not None:
            report = ray.get(monitor.report.remote(0))
            _check_skips(list(report["reasons"]), report["num_rows"], report["reasons"], epoch,
                         cfg.data.max_skip_fraction, split)
