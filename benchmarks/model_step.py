"""Model-step benchmark: forward+backward time per clip for tsn/tdn/gcnet/tcp, method overheads, GMACs.

Settings: small = ResNet-18, 112 px, 8 segments; standard = ResNet-50, 224 px, 8 segments. Overheads are
ratios of step times measured in the same run: GTM = gcnet/tdn, TCP = tcp/tsn. With ``--device cuda`` each
model is also timed under bf16 autocast + channels_last and reported as a speed-up over fp32.
GMACs: forward of one 8x224 ResNet-50 clip under torch.utils.flop_counter.FlopCounterMode (convolutions and
matmuls; 1 MAC = 2 FLOPs), counted on the meta device when the model allows it (no arithmetic is done).

    python benchmarks/model_step.py --skip-standard            # CPU, small setting only
    python benchmarks/model_step.py --device cuda --batch-standard 8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from actionray.models import build_model

MODELS = ("tsn", "tdn", "gcnet", "tcp")
SETTINGS = {"small": ("resnet18", 112), "standard": ("resnet50", 224)}
OVERHEADS = {"GTM (gcnet/tdn)": ("gcnet", "tdn"), "TCP (tcp/tsn)": ("tcp", "tsn")}


@dataclass
class StepResult:
    """One model in one setting: median seconds per clip (forward+backward), or why it could not run."""

    model: str
    setting: str
    batch: int
    s_per_clip_fp32: float | None = None  # wall clock, median step
    best_s_per_clip_fp32: float | None = None  # wall clock, fastest step: robust to bursts of other load
    cpu_s_per_clip_fp32: float | None = None  # process CPU time: less sensitive to other jobs on a shared host
    s_per_clip_bf16_cl: float | None = None  # CUDA only
    error: str | None = None
    wall_steps: list[float] = field(default_factory=list)


def make_model(name: str, backbone: str, size: int, num_classes: int, segments: int) -> nn.Module:
    """The registered model with the benchmark's shared options."""
    return build_model(name, num_classes=num_classes, num_segments=segments, backbone=backbone,
                       input_size=size, dropout=0.5)


def clip_shape(model: nn.Module, batch: int, segments: int, size: int) -> tuple[int, ...]:
    """(B, T*L, 3, H, W) with L = the model's frames_per_segment (5 for TDN/GCNet)."""
    return (batch, segments * getattr(model, "frames_per_segment", 1), 3, size, size)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model: nn.Module, x: torch.Tensor, bf16: bool, optimizer: torch.optim.Optimizer | None = None,
               loss_fn: Callable[[Any], torch.Tensor] | None = None) -> tuple[float, float]:
    """One forward+backward (cross-entropy on class 0, or ``loss_fn(output)``), then ``optimizer.step()`` if given;
    returns (wall seconds, process CPU seconds)."""
    target = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    amp = torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    model.zero_grad(set_to_none=True)
    _sync(x.device)
    wall, cpu = time.perf_counter(), time.process_time()
    with amp:
        output = model(x)
        loss = loss_fn(output) if loss_fn else nn.functional.cross_entropy(output, target)
    loss.backward()
    if optimizer is not None:
        optimizer.step()
    _sync(x.device)
    return time.perf_counter() - wall, time.process_time() - cpu


def to_channels_last(model: nn.Module) -> nn.Module:
    """channels_last for 4-D weights only: ``Module.to(memory_format=...)`` raises on TCP's 5-D Conv3d weight."""
    for p in model.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    return model


def _error(error: Exception) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"


def bench_setting(names: list[str], setting: str, args: argparse.Namespace) -> list[StepResult]:
    """Time every model in one setting, interleaved round by round so load changes hit all models alike."""
    backbone, size = SETTINGS[setting]
    batch = args.batch_small if setting == "small" else args.batch_standard
    device = torch.device(args.device)
    results = {n: StepResult(n, setting, batch) for n in names}
    runnable: dict[str, tuple[nn.Module, torch.Tensor]] = {}
    for name in names:
        try:
            torch.manual_seed(0)
            model = make_model(name, backbone, size, args.num_classes, args.segments).to(device).train()
            x = torch.randn(clip_shape(model, batch, args.segments, size), device=device)
            for _ in range(args.warmup):
                train_step(model, x, bf16=False)
            runnable[name] = (model, x)
        except Exception as error:  # noqa: BLE001 - a model missing from the registry, or out of memory: report, keep going
            results[name].error = _error(error)
    cpu_steps: dict[str, list[float]] = {n: [] for n in runnable}
    for _ in range(args.steps):
        for name, (model, x) in runnable.items():
            wall, cpu = train_step(model, x, bf16=False)
            results[name].wall_steps.append(wall)
            cpu_steps[name].append(cpu)
    for name in runnable:
        results[name].s_per_clip_fp32 = statistics.median(results[name].wall_steps) / batch
        results[name].best_s_per_clip_fp32 = min(results[name].wall_steps) / batch
        results[name].cpu_s_per_clip_fp32 = statistics.median(cpu_steps[name]) / batch
    if device.type == "cuda":  # bf16 autocast + channels_last, after all fp32 timings
        bf16_steps: dict[str, list[float]] = {n: [] for n in runnable}
        for _name, (model, x) in runnable.items():
            to_channels_last(model)
            for _ in range(args.warmup):
                train_step(model, x, bf16=True)
        for _ in range(args.steps):
            for name, (model, x) in runnable.items():
                bf16_steps[name].append(train_step(model, x, bf16=True)[0])
        for name in runnable:
            results[name].s_per_clip_bf16_cl = statistics.median(bf16_steps[name]) / batch
    return [results[n] for n in names]


def count_gmacs(name: str, num_classes: int, segments: int = 8, size: int = 224) -> dict[str, Any]:
    """Forward GMACs and parameters of one ResNet-50 clip (B=1) at ``segments`` x ``size``."""
    def run(device: str) -> dict[str, Any]:
        with torch.device(device):
            torch.manual_seed(0)
            model = make_model(name, "resnet50", size, num_classes, segments).eval()
            x = torch.zeros(clip_shape(model, 1, segments, size))
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(x)
        params = sum(p.numel() for p in model.parameters())
        return {"model": name, "gmacs": counter.get_total_flops() / 2e9, "params": params, "counted_on": device}

    try:
        return run("meta")
    except Exception:  # noqa: BLE001 - data-dependent code (e.g. .item()) cannot run on meta tensors: count on the CPU
        try:
            return run("cpu")
        except Exception as error:  # noqa: BLE001 - reported in the model's row
            return {"model": name, "error": _error(error)}


def overhead_ratios(results: list[StepResult]) -> list[dict[str, Any]]:
    """GTM and TCP overheads per setting as step-time ratios from the same run."""
    by_key = {(r.setting, r.model): r for r in results}
    rows = []
    for setting in dict.fromkeys(r.setting for r in results):
        for label, (num, den) in OVERHEADS.items():
            a, b = by_key.get((setting, num)), by_key.get((setting, den))
            if a and b and a.s_per_clip_fp32 and b.s_per_clip_fp32:
                rows.append({"setting": setting, "overhead": label, "ratio": a.s_per_clip_fp32 / b.s_per_clip_fp32,
                             "best_ratio": a.best_s_per_clip_fp32 / b.best_s_per_clip_fp32,
                             "cpu_ratio": a.cpu_s_per_clip_fp32 / b.cpu_s_per_clip_fp32})
    return rows


def markdown(results: list[StepResult], ratios: list[dict[str, Any]], macs: list[dict[str, Any]]) -> str:
    """The tables pasted into docs/performance.md."""
    lines = ["| setting | model | batch | fp32 wall s/clip (median) | (fastest) | fp32 CPU s/clip | "
             "bf16+channels_last speed-up |", "|---|---|---|---|---|---|---|"]
    for r in results:
        if r.error:
            lines.append(f"| {r.setting} | {r.model} | {r.batch} | not run: {r.error} | | | |")
            continue
        speedup = f"{r.s_per_clip_fp32 / r.s_per_clip_bf16_cl:.2f}x" if r.s_per_clip_bf16_cl else "n/a (CPU)"
        lines.append(f"| {r.setting} | {r.model} | {r.batch} | {r.s_per_clip_fp32:.3f} | "
                     f"{r.best_s_per_clip_fp32:.3f} | {r.cpu_s_per_clip_fp32:.3f} | {speedup} |")
    if ratios:
        lines += ["", "| setting | overhead | wall ratio (median) | (fastest) | CPU-time ratio |", "|---|---|---|---|---|"]
        lines += [f"| {o['setting']} | {o['overhead']} | {o['ratio']:.2f} | {o['best_ratio']:.2f} | "
                  f"{o['cpu_ratio']:.2f} |" for o in ratios]
    if macs:
        lines += ["", "| model (ResNet-50, 8x224, B=1) | params | forward GMACs |", "|---|---|---|"]
        for m in macs:
            if "error" in m:
                lines.append(f"| {m['model']} | | not counted: {m['error']} |")
            else:
                lines.append(f"| {m['model']} | {m['params']:,} | {m['gmacs']:.2f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of tsn,tdn,gcnet,tcp")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--segments", type=int, default=8)
    p.add_argument("--num-classes", type=int, default=101)
    p.add_argument("--batch-small", type=int, default=2)
    p.add_argument("--batch-standard", type=int, default=1, help="keep tiny on CPU")
    p.add_argument("--steps", type=int, default=3, help="timed steps (the median is reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--skip-standard", action="store_true", help="time only the small setting")
    p.add_argument("--skip-macs", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    p.add_argument("--json", default=None, help="also write all results to this file")
    args = p.parse_args(argv)
    unknown = sorted(set(args.models.split(",")) - set(MODELS))
    if unknown:
        p.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the timings and the GMAC count; print markdown tables (and optionally JSON)."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = args.models.split(",")
    settings = ["small"] if args.skip_standard else ["small", "standard"]
    results = []
    for setting in settings:
        results += bench_setting(models, setting, args)
        for r in results[-len(models):]:
            print(f"# {setting} {r.model}: {r.error or f'{r.s_per_clip_fp32:.3f} s/clip'}", flush=True)
    ratios = overhead_ratios(results)
    macs = [] if args.skip_macs else [count_gmacs(n, args.num_classes, args.segments) for n in models]
    env = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "load_avg_1m": round(os.getloadavg()[0], 1),
           "gpu": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else None}
    print(f"\nenvironment: {env}\n")
    print(markdown(results, ratios, macs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "steps": [asdict(r) for r in results], "overheads": ratios, "macs": macs},
                      f, indent=2)


if __name__ == "__main__":
    main()
