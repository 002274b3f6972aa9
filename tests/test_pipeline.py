"""The Ray Data clip pipeline on a real local Ray: rows, epochs, views, bad samples, and 2-worker sharding."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import torch

from actionray.config import build_config, config_from_dict
from actionray.platform.data.annotations import read_list
from actionray.platform.data.ingest import (
    TooManySkippedError, TrainStreams, dataset_config, iter_model_batches, shard_datasets, skip_report,
)
from actionray.platform.data.monitor import MONITOR_KEY, monitor_of, release_monitors
from actionray.platform.data.pipeline import build_clip_dataset
from actionray.platform.data.sampling import SamplingSpec, sample_clip

FRAMES = 24  # synth_videos: 24-frame 64x48 mp4s, 8 classes x (3 train + 1 val)


def make_cfg(synth, **data):
    tree = {"method": {"name": "tsn"},
            "data": {"train_list": str(synth.train_list), "val_list": str(synth.val_list),
                     "num_classes": synth.num_classes, "input_size": 32, "scale_size": 36, "num_segments": 4,
                     "batch_size": 4, "decode_tasks": 2, "decode_batch_size": 2, "object_store_limit_mb": 256,
                     **data},
            "train": {"seed": 3}}
    return build_config(tree)


# The train streams of this module's passes (a training worker holds one TrainStreams per run).
STREAMS = TrainStreams()


@pytest.fixture(scope="module", autouse=True)
def close_train_streams(ray_local):
    yield
    STREAMS.close()  # before the module's Ray instance goes away


def collect(ds, cfg, split, epoch=0):
    rows = []
    for batch in iter_model_batches(ds, cfg, split, epoch=epoch, streams=STREAMS):
        for k in range(len(batch["index"])):
            rows.append({key: batch[key][k] for key in batch})
    return rows


@pytest.fixture(scope="module")
def cfg(synth_videos):
    return make_cfg(synth_videos)


def test_val_pass_is_ordered_and_repeats_exactly(ray_local, cfg):
    ds = build_clip_dataset(cfg, "val")
    a, b = collect(ds, cfg, "val"), collect(ds, cfg, "val", epoch=1)
    assert [int(r["index"]) for r in a] == list(range(len(a)))
    assert all(torch.equal(x["video"], y["video"]) for x, y in zip(a, b))


def test_train_passes_visit_every_entry_once_in_a_new_seeded_order(ray_local, synth_videos):
    # train.deterministic keeps Ray Data's output in input order, so the pass order is observable.
    tree = make_cfg(synth_videos).to_dict()
    tree["train"]["deterministic"] = True
    cfg = build_config(tree)
    ds = build_clip_dataset(cfg, "train", passes=2)
    orders = [[int(r["index"]) for r in collect(ds, cfg, "train", epoch=e)] for e in (0, 1, 0, 1)]
    n = len(read_list(synth_videos.train_list))
    assert all(sorted(order) == list(range(n)) for order in orders)  # batch_size divides n: drop_last drops none
    assert orders[0] != orders[1] and orders[0] == orders[2] and orders[1] == orders[3]
    assert orders[0] != sorted(orders[0])
    # epochs 0 and 1 came from one stream (one Ray Data execution); asking for epoch 0 again started another
    assert ray.get(monitor_of(ds).starts.remote()) == 2


def test_shards_of_an_epoch_are_disjoint_and_complete_in_one_stream_each(ray_local, cfg, synth_videos):
    n = len(read_list(synth_videos.train_list))  # 24
    shards = shard_datasets(build_clip_dataset(cfg, "train", passes=3), 3)
    seen = [[sorted(int(r["index"]) for r in collect(ds, cfg, "train", epoch=e)) for e in (0, 1, 2)]
            for ds in shards]
    for epoch in range(3):
        parts = [set(rank[epoch]) for rank in seen]
        assert [len(rank[epoch]) for rank in seen] == [n // 3] * 3  # no repeats within a shard
        assert set.union(*parts) == set(range(n)) and sum(map(len, parts)) == n
    assert seen[0][0] != seen[0][1]


def test_test_split_emits_one_row_per_clip_and_crop(ray_local, synth_videos):
    cfg = make_cfg(synth_videos)
    cfg.eval.clips, cfg.eval.crops, cfg.eval.scale_size = 2, 3, 40
    rows = collect(build_clip_dataset(cfg, "test"), cfg, "test")
    first = [r for r in rows if int(r["index"]) == 0]
    assert sorted(int(r["view"]) for r in first) == list(range(6))
    assert len(rows) == 6 * len(read_list(synth_videos.val_list))
    assert first[0]["video"].shape == (4, 3, 40, 40)  # ThreeCrop squares of side eval.scale_size
    clip0 = {tuple(r["frame_indices"].tolist()) for r in first if int(r["view"]) < 3}
    clip1 = {tuple(r["frame_indices"].tolist()) for r in first if int(r["view"]) >= 3}
    assert len(clip0) == len(clip1) == 1 and clip0 != clip1


def test_frame_folders_flow_through_the_same_pipeline(ray_local, synth_frames):
    cfg = make_cfg(synth_frames, format="frames")
    rows = collect(build_clip_dataset(cfg, "val"), cfg, "val")
    want = sample_clip(SamplingSpec.from_config(cfg.data), 16, "val", 0, 0, 0).tolist()
    assert len(rows) == len(read_list(synth_frames.val_list)) and rows[0]["frame_indices"].tolist() == want
    assert rows[0]["video"].shape == (4, 3, 32, 32)


@pytest.fixture(scope="module")
def broken_list(synth_videos, tmp_path_factory) -> Path:
    """Six good videos, one zero-byte file and one truncated file (8 entries, label 0)."""
    folder = tmp_path_factory.mktemp("broken")
    good = [r.path for r in read_list(synth_videos.train_list)[:6]]
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "truncated.mp4").write_bytes(Path(good[0]).read_bytes()[:1500])
    lines = [f"{p} {FRAMES} 0" for p in good] + [f"empty.mp4 {FRAMES} 0", f"truncated.mp4 {FRAMES} 0"]
    path = folder / "list.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_skip_policy_drops_broken_videos_and_reports_why(ray_local, synth_videos, broken_list):
    cfg = make_cfg(synth_videos, train_list=str(broken_list), max_skip_fraction=0.5, batch_size=2)
    ds = build_clip_dataset(cfg, "train", passes=1)
    rows = collect(ds, cfg, "train")
    # 8 positions, batch 2: every epoch runs 4 steps; the 6 readable clips fill 3, the 4th repeats two of them
    assert len(rows) == 8 and {int(r["index"]) for r in rows} == set(range(6))
    assert all(int(r["valid"]) == 1 and int(r["label"]) == 0 for r in rows)
    report = skip_report(ds, epoch=0)
    assert report["skipped"] == 2 and report["num_rows"] == 8
    assert "0 bytes" in report["reasons"][6] and "truncated.mp4" in report["reasons"][7]
    assert report["reasons"][6].endswith(f"({broken_list}:7)")  # the list line to fix


def test_too_many_skips_fail_the_pass(ray_local, synth_videos, broken_list):
    cfg = make_cfg(synth_videos, train_list=str(broken_list), max_skip_fraction=0.1, batch_size=2)
    with pytest.raises(TooManySkippedError, match=r"skipped 2 of 8 samples"):
        collect(build_clip_dataset(cfg, "train", passes=1), cfg, "train")


def test_raise_policy_stops_at_the_first_broken_video(ray_local, synth_videos, broken_list):
    cfg = make_cfg(synth_videos, val_list=str(broken_list), on_error_eval="raise")
    with pytest.raises(Exception, match=rf"empty.mp4: file is empty \(0 bytes\) \(list entry 6, {broken_list}:7,"):
        collect(build_clip_dataset(cfg, "val"), cfg, "val")


def test_release_ends_the_monitor_of_a_dataset_and_of_those_derived_from_it(ray_local, cfg):
    """A dataset's monitor lives until released (fit and batch inference release theirs), found through any
    dataset derived from it; releasing twice or a dataset without a monitor is harmless."""
    from test_train import pipeline_monitors

    before = frozenset(pipeline_monitors())
    train, test = build_clip_dataset(cfg, "train"), build_clip_dataset(cfg, "test")
    train_monitor, test_monitor = train.context.get_config(MONITOR_KEY), test.context.get_config(MONITOR_KEY)
    assert pipeline_monitors(before=before) == {train_monitor, test_monitor}
    release_monitors([test.select_columns(["video", "label"])])
    assert pipeline_monitors(expect={train_monitor}, before=before) == {train_monitor}
    release_monitors([train, test, ray.data.range(3)])
    assert pipeline_monitors(expect=set(), before=before) == set()


def test_dataset_config_splits_only_train_and_keeps_val_ordered(cfg):
    config = dataset_config(cfg)
    assert config._datasets_to_split == ["train"]
    val = config._resolve_execution_options("val")
    assert val.preserve_order and val.resource_limits.object_store_memory == 256 * 2**20


def test_train_shards_share_the_memory_cap_and_decode_pool(ray_local, cfg):
    shards = shard_datasets(build_clip_dataset(cfg, "train"), 2)
    assert all(s.context.execution_options.resource_limits.object_store_memory == 128 * 2**20 for s in shards)
    assert len({s.context.get_config("actionray.pipeline_monitor") for s in shards}) == 1


def _shard_loop(config):
    """Train loop: two epochs over this worker's shard; writes what it saw to a JSON file."""
    import ray.train

    cfg = config_from_dict(config["cfg"])
    shard = ray.train.get_dataset_shard("train")
    seen = {}
    streams = TrainStreams()
    for epoch in range(2):
        seen[epoch] = [{"index": int(i), "frames": f.tolist(), "label": int(lab), "epoch": int(e),
                        "shape": list(v.shape), "dtype": str(v.dtype), "range": [float(v.min()), float(v.max())]}
                       for b in iter_model_batches(shard, cfg, "train", epoch=epoch, streams=streams)
                       for i, f, lab, e, v in zip(b["index"], b["frame_indices"], b["label"], b["epoch"], b["video"])]
    streams.close()
    rank = ray.train.get_context().get_world_rank()
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps(seen))


@pytest.fixture(scope="module")
def two_worker_run(ray_local, cfg, tmp_path_factory) -> list[dict[str, list[dict]]]:
    """A 2-worker TorchTrainer making two passes over its train shards: what each rank saw, per epoch."""
    import sys

    from ray import cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/ modules
    out = tmp_path_factory.mktemp("shards")
    trainer = TorchTrainer(_shard_loop, train_loop_config={"cfg": cfg.to_dict(), "out": str(out)},
                           scaling_config=ScalingConfig(num_workers=2),
                           datasets={"train": build_clip_dataset(cfg, "train")}, dataset_config=dataset_config(cfg),
                           run_config=RunConfig(name="shards", storage_path=str(out / "runs")))
    trainer.fit()
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_workers_get_disjoint_shards_that_cover_the_list_every_epoch(two_worker_run, synth_videos):
    n = len(read_list(synth_videos.train_list))  # 24 rows, 12 per worker: equal=True drops nothing
    for epoch in ("0", "1"):
        shards = [{row["index"] for row in rank[epoch]} for rank in two_worker_run]
        assert len(shards[0]) == len(shards[1]) == n // 2
        assert not shards[0] & shards[1] and shards[0] | shards[1] == set(range(n))


@pytest.mark.slow
def test_rows_carry_their_list_label(two_worker_run, synth_videos):
    labels = [r.label for r in read_list(synth_videos.train_list)]
    assert all(row["label"] == labels[row["index"]] for rank in two_worker_run for row in rank["0"])


@pytest.mark.slow
def test_model_batches_are_normalised_float_n_3_h_w(two_worker_run):
    row = two_worker_run[0]["0"][0]
    assert row["shape"] == [4, 3, 32, 32] and row["dtype"] == "torch.float32"
    assert -2.2 < row["range"][0] < row["range"][1] < 2.7  # ImageNet-normalised 0..255


@pytest.mark.slow
def test_offsets_are_recomputable_from_seed_epoch_index(two_worker_run, cfg):
    spec = SamplingSpec.from_config(cfg.data)
    for rank in two_worker_run:
        for epoch in ("0", "1"):
            for row in rank[epoch]:
                want = sample_clip(spec, FRAMES, "train", cfg.train.seed, int(epoch), row["index"])
                assert row["frames"] == want.tolist() and row["epoch"] == int(epoch)


@pytest.mark.slow
def test_second_epoch_draws_new_offsets(two_worker_run):
    first = {row["index"]: row["frames"] for rank in two_worker_run for row in rank["0"]}
    second = {row["index"]: row["frames"] for rank in two_worker_run for row in rank["1"]}
    assert sum(first[i] != second[i] for i in first) >= len(first) // 2


def test_monitor_module_stays_light():
    """The monitor actor's process imports only its module: torch or decord there costs every run ~2 CPU-s."""
    probe = ("import sys, actionray.platform.data.monitor\n"
             "print(sorted(m for m in ('torch', 'decord') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_epoch_cutter_holds_early_rows_of_later_epochs_without_losing_any():
    from actionray.platform.data.ingest import EpochCutter

    def chunk(*tags):  # rows tagged (epoch, id)
        return {"epoch": torch.tensor([e for e, _ in tags]), "id": torch.tensor([i for _, i in tags])}

    # 4 rows per epoch; blocks finish out of order, so epochs 1 and 2 start arriving before epoch 0 ends
    # (epoch 1 then completes from held rows alone, while held rows of epoch 2 wait behind it)
    source = iter([chunk((0, 0), (0, 1)), chunk((1, 4), (2, 8)), chunk((1, 5), (1, 6), (1, 7)), chunk((2, 9)),
                   chunk((0, 2), (0, 3)), chunk((2, 10), (2, 11))])
    cutter = EpochCutter(source, rows_per_epoch=4)
    for epoch in range(3):
        ids = [int(i) for part in cutter.rows(epoch) for i in part["id"]]
        assert sorted(ids) == list(range(4 * epoch, 4 * epoch + 4))
    with pytest.raises(RuntimeError, match="ended 4 rows short of the end of epoch 3"):
        list(cutter.rows(3))


def test_clips_per_video_gives_each_video_that_many_different_rows_per_epoch(ray_local, synth_videos):
    """data.clips_per_video=3 (VideoMoCo eval.py / DCLR -cpv): an epoch has 3x the rows, every video appears 3
    times with clip ids 0..2 (view), its clips differ (distinct dense windows), steps_per_epoch counts them, and
    the two shards of an epoch split the clip rows disjointly."""
    from actionray.platform.data.source import ClipSource

    n = len(read_list(synth_videos.train_list))  # 24 videos of 24 frames
    cfg = make_cfg(synth_videos, clips_per_video=3, sampling="dense", num_segments=4, dense_window=8)
    assert ClipSource(cfg).steps_per_epoch(1) == 3 * n // 4 and ClipSource(cfg).steps_per_epoch(2) == 3 * n // 8
    rows = collect(build_clip_dataset(cfg, "train", passes=1), cfg, "train")
    assert len(rows) == 3 * n
    by_video: dict[int, list] = {}
    for r in rows:
        by_video.setdefault(int(r["index"]), []).append(r)
    assert sorted(by_video) == list(range(n)) and all(len(v) == 3 for v in by_video.values())
    for clips in by_video.values():
        assert sorted(int(r["view"]) for r in clips) == [0, 1, 2]
        starts = {int(r["frame_indices"][0]) for r in clips}
        assert len(starts) == 3  # three different windows of one video
        assert not torch.equal(clips[0]["video"], clips[1]["video"])
    # each clip row is sharded like any row: the shards of an epoch are disjoint and cover every (video, clip)
    ds = build_clip_dataset(cfg, "train", passes=1)
    seen = [{(int(r["index"]), int(r["view"])) for r in collect(s, cfg, "train")} for s in shard_datasets(ds, 2)]
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 3 * n
    # a method with its own rows per video (DCLR pre-training) takes one row per video
    from actionray.trainables.dclr import DCLRRows
    with pytest.raises(ValueError, match="clips_per_video"):
        build_clip_dataset(cfg, "train", rows=DCLRRows())
