"""How much per-step time does Ray Train add over plain PyTorch? Same model, same in-memory batches.

(a) a plain PyTorch loop in this process; (b) the same loop inside a 1-worker Ray Train TorchTrainer;
(c) 2 Ray Train workers (DDP, gloo) vs 2 processes started with torch.multiprocessing (DDP, gloo).
Data loading is excluded on purpose: batches are generated once in memory, so the numbers isolate the
framework (worker process, DDP wrapper from prepare_model, report plumbing) from Ray Data.

    python benchmarks/train_overhead.py --steps 20 --warmup 3
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time

import torch


def make_model_and_batches(args) -> tuple[torch.nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A TSN ResNet-18 and ``steps + warmup`` fixed batches (B, T, 3, S, S), identical in every process."""
    from actionray.models import build_model

    torch.manual_seed(0)
    model = build_model("tsn", num_classes=8, num_segments=args.segments, backbone="resnet18", dropout=0.0)
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(args.batch, args.segments, 3, args.size, args.size, generator=generator),
                torch.randint(0, 8, (args.batch,), generator=generator)) for _ in range(args.steps + args.warmup)]
    return model, batches


def timed_steps(model: torch.nn.Module, batches, warmup: int) -> list[float]:
    """SGD steps over ``batches``; returns the wall time of each step after ``warmup``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    times = []
    for i, (video, label) in enumerate(batches):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(video), label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def plain(args) -> list[float]:
    """(a) plain PyTorch in this process."""
    torch.set_num_threads(args.threads)
    model, batches = make_model_and_batches(args)
    return timed_steps(model, batches, args.warmup)


def ray_loop(config: dict) -> dict:
    """Ray Train worker: the same steps after prepare_model (DDP on 2 workers); reports once at the end."""
    import ray.train
    from ray.train.torch import prepare_model

    args = argparse.Namespace(**config)
    torch.set_num_threads(args.threads)
    model, batches = make_model_and_batches(args)
    model = prepare_model(model)
    times = timed_steps(model, batches, args.warmup)
    ray.train.report({"median_step_s": statistics.median(times)})
    return {"times": times}


def ray_train(args, workers: int) -> list[float]:
    """(b)/(c) a TorchTrainer with ``workers`` CPU workers; returns rank 0's step times."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(ray_loop, train_loop_config=vars(args),
                           scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
                           torch_config=TorchConfig(backend="gloo"),
                           run_config=RunConfig(name=f"overhead-{workers}-{time.time_ns()}",
                                                storage_path=os.path.abspath(args.storage)))
    return trainer.fit().return_value["times"]


def _ddp_worker(rank: int, world: int, port: int, args, queue) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(args.threads)
    model, batches = make_model_and_batches(args)
    model = torch.nn.parallel.DistributedDataParallel(model)
    times = timed_steps(model, batches, args.warmup)
    if rank == 0:
        queue.put(times)
    dist.destroy_process_group()


def torch_ddp(args, workers: int) -> list[float]:
    """(c) the same DDP steps in processes started by torch.multiprocessing."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, workers, port, args, queue)) for r in range(workers)]
    for p in procs:
        p.start()
    times = queue.get()
    for p in procs:
        p.join()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--segments", type=int, default=4)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (1 per Ray CPU)")
    parser.add_argument("--storage", default="/tmp/actionray_overhead")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING", "0")
    import logging

    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    results = {"plain_1": plain(args), "ray_1": ray_train(args, 1),
               "ddp_2": torch_ddp(args, 2), "ray_2": ray_train(args, 2)}
    ray.shutdown()
    median = {k: statistics.median(v) for k, v in results.items()}
    print(f"per-step seconds (median of {args.steps} steps, batch {args.batch} x {args.segments} x "
          f"{args.size}px, ResNet-18 TSN, {args.threads} thread(s) per process)")
    for key in ("plain_1", "ray_1", "ddp_2", "ray_2"):
        print(f"  {key:8s} {median[key]:.4f}  (min {min(results[key]):.4f})")
    ratios = {"ray_1/plain_1": median["ray_1"] / median["plain_1"], "ray_2/ddp_2": median["ray_2"] / median["ddp_2"]}
    for key, value in ratios.items():
        print(f"  {key:14s} {value:.3f}  ({100 * (value - 1):+.1f} %)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "median_s": median, "ratios": ratios, "steps_s": results}, f, indent=2)


if __name__ == "__main__":
    main()
