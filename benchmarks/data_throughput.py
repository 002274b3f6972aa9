"""Data-path throughput: bare decord loop vs the Ray Data pipeline vs a torch DataLoader.

All three run the same per-sample code (``pipeline.decode_sample``: sample indices from (seed, epoch, index),
decord decode, train transforms) on the same generated videos and end in the same normalised float batch:

  (a) one process, a plain loop;
  (b) ``build_clip_dataset`` + ``iter_model_batches`` with ``--workers`` Ray Data decode tasks;
  (c) ``torch.utils.data.DataLoader`` with ``--workers`` worker processes.

The methods run one after another, each for ``--passes`` passes; the first pass (worker start-up, imports) is
reported apart from the rate over the steady passes (all but the first and the last) together. The last lines
give the CPU milliseconds per clip of each method (all its processes) and b/a, b/c against the target 1.05.
Example, and the standard setting of docs/performance.md (8 x 224 clips from 340x256 videos; TSN sampling by
default, TDN sampling with --frames-per-segment 5, decoder-side resize with --short-side 256; the four
combinations share one --data-dir, which must hold videos of --size x --frames):

  python benchmarks/data_throughput.py --videos 64 --workers 2 --size 320x240 --frames 96 --segments 8
  python benchmarks/data_throughput.py --videos 96 --frames 64 --size 340x256 --workers 2 --passes 8 \
      --decode-batch-size 4 --data-dir /tmp/bench_340x256x64_96 [--frames-per-segment 5] [--short-side 256]

On 340x256 videos --short-side 256 keeps the decoded size (it measures the resize path, not a smaller
decode); only larger sources decode smaller with it.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

from actionray.config import build_config  # noqa: E402
from actionray.platform.data.annotations import read_list  # noqa: E402
from actionray.platform.data.pipeline import DecodeJob, decode_sample  # noqa: E402
from actionray.platform.data.transforms import normalize  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=64, help="number of generated videos (rounded up to 8 classes)")
    parser.add_argument("--frames", type=int, default=96, help="frames per video")
    parser.add_argument("--size", default="320x240", help="stored video size WxH")
    parser.add_argument("--workers", type=int, default=2, help="Ray Data decode tasks = DataLoader workers")
    parser.add_argument("--segments", type=int, default=8, help="segments per clip (K)")
    parser.add_argument("--frames-per-segment", type=int, default=1, help="L (5 for TDN/GCNet)")
    parser.add_argument("--input-size", type=int, default=224, help="crop size S of the clip (S x S)")
    parser.add_argument("--short-side", type=int, default=None, help="decoder-side resize (data.decode_short_side)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--decode-batch-size", type=int, default=2, help="clips per Ray Data decode task call")
    parser.add_argument("--prefetch-batches", type=int, default=None,
                        help="data.prefetch_batches (Ray Data) = prefetch_factor (DataLoader, at least 1)")
    parser.add_argument("--passes", type=int, default=4,
                        help="passes over the data per method (first = warm-up; steady rates from the 2nd to the "
                             "next-to-last)")
    parser.add_argument("--data-dir", default=None, help="reuse/generate videos here (default: a temp folder)")
    parser.add_argument("--only", default="abc", help="subset of methods to run, e.g. 'ab'")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the b, a, c sequence; rates pool the steady passes of all rounds")
    return parser.parse_args(argv)


def make_config(args: argparse.Namespace, list_file: Path, num_classes: int):
    return build_config({"method": {"name": "tsn"}, "data": {
        "train_list": str(list_file), "val_list": str(list_file), "num_classes": num_classes,
        "num_segments": args.segments, "frames_per_segment": args.frames_per_segment,
        "input_size": args.input_size, "decode_short_side": args.short_side, "batch_size": args.batch_size,
        "decode_tasks": args.workers, "decode_batch_size": args.decode_batch_size, "on_error_train": "raise",
        **({"prefetch_batches": args.prefetch_batches} if args.prefetch_batches is not None else {})},
        "train": {"epochs": args.passes}})


class ClipDataset(torch.utils.data.Dataset):
    """Map-style dataset for the DataLoader baseline: the same ``decode_sample`` as the Ray Data UDF."""

    def __init__(self, job: DecodeJob, records, epoch: int = 0):
        self.job, self.records, self.epoch = job, records, epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        r = self.records[i]
        row = decode_sample(self.job, r.path, r.num_frames, r.label, i, self.epoch)
        return torch.from_numpy(row["video"][0]), row["label"][0]


def bare_runner(cfg, records) -> Callable[[int], int]:
    """(a) single-process loop: one pass -> clips."""
    job = DecodeJob.from_config(cfg, "train")

    def one_pass(epoch: int) -> int:
        batch = []
        for i, r in enumerate(records):
            batch.append(torch.from_numpy(decode_sample(job, r.path, r.num_frames, r.label, i, epoch)["video"][0]))
            if len(batch) == cfg.data.batch_size:
                normalize(torch.stack(batch))
                batch = []
        return len(records)
    return one_pass


def ray_runner(cfg) -> Callable[[int], int]:
    """(b) Ray Data pipeline iterated as a training worker does: one pass -> clips."""
    from actionray.platform.data.ingest import TrainStreams, iter_model_batches
    from actionray.platform.data.pipeline import build_clip_dataset

    ds = build_clip_dataset(cfg, "train")
    streams = TrainStreams()  # the run's one stream; it closes itself after its last pass

    def one_pass(epoch: int) -> int:
        return sum(len(batch["label"]) for batch in iter_model_batches(ds, cfg, "train", epoch=epoch,
                                                                       streams=streams))
    return one_pass


def dataloader_runner(cfg, records) -> Callable[[int], int]:
    """(c) torch DataLoader with the same number of (persistent) worker processes: one pass -> clips."""
    dataset = ClipDataset(DecodeJob.from_config(cfg, "train"), records)
    # Persistent workers keep epoch 0's offsets: same cost per clip, and no re-fork charged to the baseline.
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                                         num_workers=cfg.data.decode_tasks, persistent_workers=True,
                                         prefetch_factor=max(1, cfg.data.prefetch_batches),
                                         multiprocessing_context="spawn")  # no fork of a Ray-connected process

    def one_pass(epoch: int) -> int:
        n = 0
        for video, label in loader:
            normalize(video)
            n += len(label)
        return n
    return one_pass


ROLES = ("workers", "consumer", "Ray's own processes")


def process_cpu() -> dict[int, tuple[str, float]]:
    """pid -> (role, user + system CPU seconds) for this process and all its descendants, read from /proc
    (Linux). Roles: this process is the consumer; DataLoader workers and Ray worker processes (decode tasks,
    shown as ray::MapBatches or ray::IDLE) are workers; the rest (raylet, GCS, agents, Ray Data's and the
    pipeline's actors) are Ray's own processes."""
    parent, ticks, commands = {}, {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "(comm)": state ppid ... utime stime
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                commands[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended while we listed
            continue
        parent[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    family, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        pid = frontier.pop()
        children = [child for child, ppid in parent.items() if ppid == pid and child not in family]
        family.update(children)
        frontier.extend(children)

    def role(pid: int) -> str:
        command = commands.get(pid, "")
        if pid == os.getpid():
            return ROLES[1]
        if command.startswith(("ray::IDLE", "ray::MapBatches")) or "multiprocessing" in command:
            return ROLES[0]
        return ROLES[2]
    return {pid: (role(pid), ticks[pid] / os.sysconf("SC_CLK_TCK")) for pid in family if pid in ticks}


def cpu_seconds() -> float:
    """CPU seconds of this process and all its descendants."""
    return sum(seconds for _, seconds in process_cpu().values())


Pass = tuple[int, float, dict[str, float]]  # clips, wall seconds, CPU seconds per role


def timed_pass(one_pass: Callable[[int], int], epoch: int) -> Pass:
    """(clips, wall seconds, CPU seconds per role) of one pass."""
    wall, before = time.perf_counter(), process_cpu()
    clips = one_pass(epoch)
    wall, after = time.perf_counter() - wall, process_cpu()
    cpu = dict.fromkeys(ROLES, 0.0)
    for pid, (role, seconds) in after.items():
        cpu[role] += seconds - before.get(pid, (role, 0.0))[1]
    return clips, wall, cpu


def rates(passes: list[Pass]) -> tuple[float, float]:
    """(clips per wall second, clips per CPU second) over ``passes`` together: the Ray Data stream decodes the
    next epoch ahead, so single passes of it overlap and only their sum is a fair rate."""
    clips, wall = sum(p[0] for p in passes), sum(p[1] for p in passes)
    cpu = sum(sum(p[2].values()) for p in passes)
    return clips / wall, clips / max(cpu, 1e-9)


def cpu_per_clip(passes: list[Pass]) -> str:
    """Milliseconds of CPU per clip by role over ``passes``."""
    clips = sum(p[0] for p in passes)
    return ", ".join(f"{role} {1000 * sum(p[2][role] for p in passes) / clips:.1f}" for role in ROLES
                     if any(p[2][role] for p in passes))


def steady(passes: list[Pass]) -> list[Pass]:
    """The passes between the first and the last. The first carries start-up and, for (b), the decoding its stream
    does ahead for later passes; the last uses clips decoded ahead without decoding any further ahead itself. In
    the passes between, the stream starts and ends about equally far ahead, so their sum is an unbiased rate."""
    return passes[1:-1] if len(passes) >= 3 else passes[1:] or passes


def start_ray(workers: int) -> None:
    """A fresh local Ray with ``workers`` CPUs for the decode tasks, left to finish starting before it returns.

    ``ray.init`` returns while Ray's own processes (dashboard agent, log monitor, prestarted workers) are still
    importing and registering; on 2 cores that work would otherwise run inside (b)'s first timed passes. Like the
    ``ray.init`` call itself it is Ray's start-up, paid once per job, not the data path's cost, so it is timed
    and printed here, and (b) starts when the machine is quiet again."""
    import ray

    start = time.perf_counter()
    for _ in range(3):  # Ray gives its raylet 30 s to register; a loaded machine can miss that
        try:
            ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
            break
        except Exception as error:  # noqa: BLE001 - Ray raises a bare Exception on start-up timeout
            print(f"ray.init failed ({error}); retrying", flush=True)
            ray.shutdown()
    else:
        raise RuntimeError("local Ray did not start in 3 attempts (see the errors above)")
    ready = time.perf_counter()
    settled = wait_until_quiet(timeout=30.0)
    print(f"Ray start-up (not timed): ray.init {ready - start:.1f} s, its processes quiet "
          f"{settled:.1f} s later", flush=True)


def wait_until_quiet(timeout: float, window: float = 1.0, threshold: float = 0.15) -> float:
    """Seconds until this process and its descendants use less than ``threshold`` cores over ``window`` seconds
    (at most ``timeout``)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        cpu = cpu_seconds()
        time.sleep(window)
        if (cpu_seconds() - cpu) / window < threshold:
            break
    return time.perf_counter() - start


def check_stored_videos(records, size: tuple[int, int], frames: int, data_dir: Path) -> None:
    """Stop when the videos are not the ``--size`` x ``--frames`` the run reports: an existing ``--data-dir`` is
    reused as it is, and one generated with other settings would be measured under the wrong label."""
    import av

    with av.open(str(records[0].path)) as container:
        stored = (container.streams.video[0].codec_context.width, container.streams.video[0].codec_context.height)
    lengths = sorted({r.num_frames for r in records})
    if stored != size or lengths != [frames]:
        raise SystemExit(f"{data_dir} holds {stored[0]}x{stored[1]} videos of {lengths} frames, not "
                         f"{size[0]}x{size[1]}x{frames}: use another --data-dir or matching --size/--frames")


def decord_build() -> str:
    """Which decord module runs (version and folder): comparing builds side by side (docs/performance.md)."""
    import decord

    return f"decord {decord.__version__} from {Path(decord.__file__).parent}"


def main(argv: list[str] | None = None) -> None:
    """Generate the videos, time (a), (b), (c) and print clips/s with the ratios b/a and b/c."""
    from actionray.synthetic.videos import generate_dataset

    args = parse_args(argv)
    torch.set_num_threads(1)
    width, height = (int(v) for v in args.size.lower().split("x"))
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="actionray_bench_"))
    if not (data_dir / "train.txt").is_file():  # an existing --data-dir is reused as it is
        generate_dataset(data_dir, videos_per_class=max(2, math.ceil(args.videos / 8)), frames=args.frames,
                         size=(width, height), seed=0, format="mp4")
    records = (read_list(data_dir / "train.txt") + read_list(data_dir / "val.txt"))[: args.videos]  # all videos
    check_stored_videos(records, (width, height), args.frames, data_dir)
    num_classes = 1 + max(r.label for r in records)
    list_file = data_dir / f"bench_{len(records)}.txt"
    list_file.write_text("".join(f"{r.path} {r.num_frames} {r.label}\n" for r in records))
    cfg = make_config(args, list_file, max(2, num_classes))
    print(f"{len(records)} videos {width}x{height}x{args.frames}, clip {args.segments}x{args.frames_per_segment} "
          f"frames at {args.input_size}px, short_side={args.short_side}, workers={args.workers}, "
          f"batch={args.batch_size}, cpus={os.cpu_count()}, load={os.getloadavg()[0]:.1f}, {decord_build()}",
          flush=True)
    if len(records) * (args.passes - 2) < 2 * 64 * args.workers:
        print("note: the steady passes hold fewer clips than the Ray Data stream may decode ahead (a block of up "
              "to 64 clips per decode task), so its steady rate can show clips decoded earlier: compare the whole "
              "runs, or use more --videos or --passes", flush=True)
    # One method at a time, all its passes back to back: the Ray Data stream (b) runs every pass in one execution
    # and keeps decoding ahead, so interleaving it with (a) and (c) would let it work during their timed passes.
    # Ray is shut down before (a) and (c) run, so its daemons do not load them either. Wall-clock rates depend
    # on the machine's load at the time; clips per CPU-second (all processes involved) much less.
    results: dict[str, list[list[Pass]]] = {}  # method -> rounds -> passes
    for _ in range(args.rounds):
        for key in [k for k in "bac" if k in args.only]:
            if key == "b":
                start_ray(args.workers)
                one_pass = ray_runner(cfg)
            else:
                one_pass = bare_runner(cfg, records) if key == "a" else dataloader_runner(cfg, records)
            passes = [timed_pass(one_pass, epoch) for epoch in range(args.passes)]
            results.setdefault(key, []).append(passes)
            if key == "b":
                import ray

                ray.shutdown()
            del one_pass  # the DataLoader's workers end with it
            print(f"{key} (load {os.getloadavg()[0]:.1f}) per pass: " + "  ".join(
                f"{clips / wall:.1f} clips/s {clips / sum(cpu.values()):.1f} clips/cpu-s"
                for clips, wall, cpu in passes), flush=True)
    names = {"a": "(a) bare decord loop, 1 process", "b": f"(b) Ray Data, {args.workers} decode tasks",
             "c": f"(c) DataLoader, {args.workers} workers"}
    wall, per_cpu = {}, {}
    for key, rounds in results.items():
        firsts, steadies = [passes[0] for passes in rounds], [p for passes in rounds for p in steady(passes)]
        wall[key], per_cpu[key] = rates(steadies)
        print(f"{names[key]:34s}: first pass {rates(firsts)[0]:6.1f} clips/s; steady passes {wall[key]:6.1f} "
              f"clips/s, {per_cpu[key]:6.1f} clips per CPU-second")
        print(f"{'':36s}CPU ms per clip: steady {cpu_per_clip(steadies)}; first pass {cpu_per_clip(firsts)}")
    if "a" in wall and "b" in wall:
        print(f"b/a = {wall['b'] / wall['a']:.2f} wall ({wall['b'] / wall['a'] / args.workers:.2f} per decode task); "
              f"per CPU-second b/a = {per_cpu['b'] / per_cpu['a']:.2f}")
    if "c" in wall and "b" in wall:
        print(f"b/c = {wall['b'] / wall['c']:.2f} wall; per CPU-second b/c = {per_cpu['b'] / per_cpu['c']:.2f}")
        # The whole run (first and last passes included: the data path's start-up, e.g. Ray Data's own actors
        # and the decode workers' imports, and the DataLoader's worker spawn) is the conservative comparison.
        whole = {key: rates([p for passes in results[key] for p in passes])[0] for key in "bc"}
        print(f"whole runs, first passes included: b {whole['b']:.1f}, c {whole['c']:.1f} clips/s, "
              f"b/c = {whole['b'] / whole['c']:.2f} wall")
    print_cpu_ms_summary(results, per_cpu)


def print_cpu_ms_summary(results: dict[str, list[list[Pass]]], per_cpu: dict[str, float],
                         target: float = 1.05) -> None:
    """CPU milliseconds per clip (all processes: workers, consumer, Ray's own) of each method, steady passes
    and whole runs, and the ratios b/a and b/c against ``target`` (lower is better: b may spend at most
    ``target`` times the CPU per clip of a and of c)."""
    steady_ms = {key: 1000 / per_cpu[key] for key in per_cpu}
    whole_ms = {key: 1000 / rates([p for passes in rounds for p in passes])[1] for key, rounds in results.items()}
    keys = [k for k in "abc" if k in steady_ms]
    print("CPU ms per clip, all processes: steady " + ", ".join(f"{k} {steady_ms[k]:.1f}" for k in keys)
          + "; whole run " + ", ".join(f"{k} {whole_ms[k]:.1f}" for k in keys))
    for other in "ac":
        if "b" in steady_ms and other in steady_ms:
            ratio, whole_ratio = steady_ms["b"] / steady_ms[other], whole_ms["b"] / whole_ms[other]
            print(f"CPU ms per clip b/{other} = {ratio:.3f} steady ({'met' if ratio <= target else 'NOT met'}: "
                  f"target <= {target:.2f}), {whole_ratio:.3f} whole run")


if __name__ == "__main__":
    sys.exit(main())
