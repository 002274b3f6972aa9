"""GPU check: every model's SGD training step (fp32 vs bf16 autocast + channels_last), GPU/CPU agreement, GCNet's
selective scan, TCPNet's float32 covariance under autocast, a world-size-1 DistributedDataParallel step, and the
data path's host-to-device prefetcher (pinned memory, one batch ahead on a side stream).

One JSON line per measurement on stdout (and in ``--out``). Imports only torch, ``actionray.models`` (through
benchmarks/model_step.py) and ``actionray.platform.data.prefetch`` (torch only), so it runs on a bare CUDA
PyTorch image: no Ray, MLflow, decord or pydantic.
The default is the full GPU setting (ResNet-50, 8 segments, 224 px, batch 16; DCLR 16 x 112 clips; ACM-Net
750 x 2048 features); ``--tiny`` is the CPU-sized form the test runs. On CPU the bf16/channels_last steps and NCCL
are reported as skipped, the agreement and scan checks compare CPU with CPU, and the DDP step uses gloo.

    python benchmarks/gpu_check.py --tiny --device cpu --out /tmp/gpu_check.jsonl   # CPU, < 1 min
    python3 benchmarks/gpu_check.py --device cuda --out $OUT/gpu_check.jsonl        # one GPU, < 8 min
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

if importlib.util.find_spec("actionray") is None:  # the device image runs the bare working tree, not an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_step import _error, _sync, clip_shape, make_model, to_channels_last, train_step  # noqa: E402

from actionray.models.mamba import mamba_ssm_available, selective_scan_reference  # noqa: E402

__all__ = ["Setting", "FULL", "TINY", "ModelSpec", "SPECS", "optional_builder", "build_spec", "spec_batch",
           "DCLRStep", "primary_output", "acm_instance_loss", "FORBIDDEN_MODULES", "relative_difference", "ieee_fp32",
           "MatmulDtypeRecorder", "measure_step", "check_agreement", "check_tcp_autocast", "scan_inputs",
           "check_scan", "check_ddp", "check_prefetch", "run_checks", "main"]

FORBIDDEN_MODULES = ("ray", "mlflow", "decord", "pydantic")  # absent from the device image
AGREEMENT_RTOL = 1e-4  # issue 16: CPU fp32 vs GPU fp32 (TF32 off) logits
DDP_RTOL = 1e-5  # world size 1: DDP's averaged gradient is the local one; cuDNN's backward order may differ


@dataclasses.dataclass(frozen=True)
class Setting:
    """Sizes of one run: the recognition models' backbone and clips, batch, warm-up and timed steps."""

    backbone: str
    size: int
    segments: int
    batch: int
    warmup: int
    steps: int
    num_classes: int
    dclr_batch: int
    dclr_frames: int
    dclr_size: int
    dclr_queue: int  # MoCo queue length K: a multiple of the batch (2048 for UCF101 in the DCLR repo)
    acm_length: int  # snippets per video
    acm_feature_dim: int
    tiny: bool


FULL = Setting("resnet50", 224, 8, 16, 3, 10, 101, dclr_batch=16, dclr_frames=16, dclr_size=112, dclr_queue=2048,
               acm_length=750,
               acm_feature_dim=2048, tiny=False)
TINY = Setting("resnet18", 64, 4, 2, 1, 2, 8, dclr_batch=2, dclr_frames=4, dclr_size=16, dclr_queue=16,
               acm_length=64,
               acm_feature_dim=256, tiny=True)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to build one model and its input; ``optional`` specs whose module is not written yet are skipped."""

    name: str
    build: Callable[[Setting], nn.Module]
    input_shape: Callable[[nn.Module, Setting, int], tuple[int, ...]]  # (model, setting, batch) -> input shape
    loss: Callable[[Any], Tensor] | None = None  # None: cross-entropy of the logits against class 0
    compare: Callable[[nn.Module, Tensor], Tensor] | None = None  # agreement output; None: the first output
    optional: bool = False
    module: str = ""  # for optional specs: the module whose absence means "not written yet"


def _recognition(name: str) -> ModelSpec:
    """TSN/TDN/GCNet/TCPNet from the registry: input (B, T*L, 3, H, W)."""
    return ModelSpec(name, lambda s: make_model(name, s.backbone, s.size, s.num_classes, s.segments),
                     lambda m, s, b: clip_shape(m, b, s.segments, s.size))


def _output_tensors(output: Any) -> list[Tensor]:
    """The floating-point tensors of a model output (a tensor, a tuple/list, a dict or a dataclass), in order."""
    if dataclasses.is_dataclass(output):  # e.g. ACMNetOutput: its fields in the reference's tuple order
        output = [getattr(output, f.name) for f in dataclasses.fields(output)]
    items = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) \
        else [output]
    return [t for t in items if isinstance(t, Tensor) and t.is_floating_point()]


def primary_output(output: Any) -> Tensor:
    """The first floating-point tensor of a model output: the logits, or ACM-Net's instance video scores."""
    tensors = _output_tensors(output)
    if not tensors:
        raise TypeError(f"model output {type(output).__name__} holds no floating-point tensor")
    return tensors[0]


class DCLRStep(nn.Module):
    """A DCLR pre-training step as one module: (B, 2 clips [q, k], 3 views, 3, T, H, W) -> the dual contrastive
    loss, with the key encoder's EMA update, shuffle-BN and the queue update inside (DCLR repo, moco/builder.py)."""

    def __init__(self, dclr: nn.Module) -> None:
        super().__init__()
        self.dclr = dclr

    def forward(self, x: Tensor) -> Tensor:
        """(B, 2, 3, 3, T, H, W) -> scalar loss."""
        return self.dclr(x[:, 0], x[:, 1])[0]

    def query_embeddings(self, x: Tensor) -> Tensor:
        """The query encoder's five embeddings of the query clips, concatenated: (B, 5 * D)."""
        return torch.cat(tuple(self.dclr.encoder_q.embeddings(x[:, 0])), dim=1)


def acm_instance_loss(output: Any) -> Tensor:
    """ACM-Net's instance-branch classification term with the target "action class 0, no background":
    -mean_B log p_inst[:, 0] (FTCL repo, utils/net_utils.py ``ACMLoss``; the other terms cost little)."""
    return -(primary_output(output)[:, 0].float() + 1e-45).log().mean()  # ACMLoss's eps


def optional_builder(module: str, builder: str, wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
                      **kwargs: Any) -> Callable[[Setting], nn.Module]:
    """A build function that imports ``module`` only when called (it may not exist yet)."""
    def build(s: Setting) -> nn.Module:
        options = {k: (v(s) if callable(v) else v) for k, v in kwargs.items()}
        return wrap(getattr(importlib.import_module(module), builder)(**options))
    return build


SPECS: tuple[ModelSpec, ...] = (
    _recognition("tsn"), _recognition("tdn"), _recognition("gcnet"), _recognition("tcp"),
    # DCLR (DCLR repo, moco/builder.py MoCo_View): query and key clips of RGB, static and dynamic views
    ModelSpec("dclr", optional_builder("actionray.models.dclr", "DCLR", DCLRStep, queue_size=lambda s: s.dclr_queue),
              lambda m, s, b: (b, 2, 3, 3, s.dclr_frames, s.dclr_size, s.dclr_size), lambda loss: loss,
              lambda m, x: m.query_embeddings(x), optional=True, module="actionray.models.dclr"),
    # ACM-Net (FTCL repo, model/ACMNet.py): snippet features (B, T, 2048), THUMOS14's 20 classes
    ModelSpec("acmnet", optional_builder("actionray.models.acmnet", "build_acmnet",
                                          feature_dim=lambda s: s.acm_feature_dim, num_classes=20),
              lambda m, s, b: (b, s.acm_length, s.acm_feature_dim), acm_instance_loss, optional=True,
              module="actionray.models.acmnet"),
)


def spec_batch(spec: ModelSpec, setting: Setting) -> int:
    """The spec's training batch in this setting."""
    return setting.dclr_batch if spec.name == "dclr" else setting.batch


def build_spec(spec: ModelSpec, setting: Setting) -> tuple[nn.Module | None, str | None]:
    """(model on the CPU, None), or (None, why it is skipped) for an optional model not written yet."""
    try:
        torch.manual_seed(0)
        return spec.build(setting), None
    except ModuleNotFoundError as error:
        if spec.optional and error.name == spec.module:
            return None, f"{spec.module} is not importable yet ({error})"
        raise
    except AttributeError as error:
        if spec.optional and spec.module in str(error):
            return None, f"{spec.module} has no expected builder yet ({error})"
        raise


def relative_difference(reference: Tensor, other: Tensor) -> float:
    """max |reference - other| / max |reference|: the difference relative to the output's scale."""
    reference, other = reference.detach().double().cpu(), other.detach().double().cpu()
    return float((reference - other).abs().max() / reference.abs().max().clamp_min(1e-30))


@contextlib.contextmanager
def ieee_fp32() -> Iterator[None]:
    """TF32 off for CUDA matmuls and convolutions (the agreement check compares true fp32), restored after."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # the torch >= 2.9 API; mixing with the old raises
        places = [torch.backends.cuda.matmul, torch.backends.cudnn.conv]
        saved = [p.fp32_precision for p in places]
        for p in places:
            p.fp32_precision = "ieee"
        try:
            yield
        finally:
            for p, value in zip(places, saved):
                p.fp32_precision = value
    else:
        saved_flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_flags


def _median_step(model: nn.Module, x: Tensor, setting: Setting, bf16: bool,
                 loss: Callable[[Any], Tensor] | None) -> float:
    """Warm-up, then the median wall time of the timed SGD steps."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    for _ in range(setting.warmup):
        train_step(model, x, bf16, optimizer, loss)
    return statistics.median(train_step(model, x, bf16, optimizer, loss)[0] for _ in range(setting.steps))


def measure_step(spec: ModelSpec, model: nn.Module, setting: Setting, device: torch.device,
                 bf16: bool) -> dict[str, Any]:
    """Forward + backward + SGD step per clip at the spec's batch, halved on out-of-memory until it fits."""
    batch = spec_batch(spec, setting)
    model = copy.deepcopy(model).to(device).train()
    if bf16:
        to_channels_last(model)
    while True:
        try:
            x = torch.randn(spec.input_shape(model, setting, batch), device=device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            step = _median_step(model, x, setting, bf16, spec.loss)
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
            return {"batch": batch, "input_shape": list(x.shape), "median_step_s": step,
                    "clips_per_s": batch / step, "peak_mem_mib": peak, "warmup": setting.warmup,
                    "steps": setting.steps}
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
        batch //= 2  # outside the except block, so the traceback's tensors are already released
        torch.cuda.empty_cache()


def check_agreement(spec: ModelSpec, model: nn.Module, setting: Setting, device: torch.device) -> dict[str, Any]:
    """Same weights, same clip: CPU fp32 vs device fp32 (TF32 off), and vs device bf16 autocast + channels_last."""
    compare = spec.compare or (lambda m, inputs: primary_output(m(inputs)))
    model = model.eval()
    other = copy.deepcopy(model).to(device)
    torch.manual_seed(1)
    x = torch.randn(spec.input_shape(model, setting, 1))
    with torch.no_grad():
        reference = compare(model, x)
        with ieee_fp32():
            fp32 = compare(other, x.to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16):
            bf16 = compare(to_channels_last(other), x.to(device))
    diff = relative_difference(reference, fp32)
    return {"compared": f"cpu fp32 vs {device.type} fp32 (TF32 off)", "max_rel_diff_fp32": diff,
            "tolerance": AGREEMENT_RTOL, "ok": diff <= AGREEMENT_RTOL,
            "max_rel_diff_bf16_cl": relative_difference(reference, bf16)}


class MatmulDtypeRecorder(TorchFunctionMode):
    """Records the dtype of every matmul result while ``active`` (observes, computes nothing itself)."""

    _MATMULS = {torch.matmul, torch.bmm, Tensor.__matmul__, Tensor.matmul, Tensor.bmm}

    def __init__(self) -> None:
        super().__init__()
        self.active, self.dtypes = False, []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's signature
        out = func(*args, **(kwargs or {}))
        if self.active and func in self._MATMULS and isinstance(out, Tensor):
            self.dtypes.append(str(out.dtype).removeprefix("torch."))
        return out


def check_tcp_autocast(setting: Setting, device: torch.device) -> dict[str, Any]:
    """TCPNet under bf16 autocast: its attention runs in bf16, covariance and iSQRT matmuls stay float32."""
    torch.manual_seed(0)
    model = make_model("tcp", setting.backbone, setting.size, setting.num_classes, setting.segments)
    model = model.to(device).eval()
    recorder, seen = MatmulDtypeRecorder(), {}

    def attention_done(module: nn.Module, inputs: Any, output: Tensor) -> None:
        seen["attention_output"] = str(output.dtype).removeprefix("torch.")
        recorder.active = True  # from here to the head's end: covariance pooling, iSQRT, triu

    def head_done(module: nn.Module, inputs: Any, output: Tensor) -> None:
        recorder.active = False
        seen["head_output"] = str(output.dtype).removeprefix("torch.")

    hooks = [model.TCP.TCP_att.register_forward_hook(attention_done), model.TCP.register_forward_hook(head_done)]
    x = torch.randn(clip_shape(model, 1, setting.segments, setting.size), device=device)
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16), recorder:
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    ok = (seen.get("attention_output") == "bfloat16" and bool(recorder.dtypes)
          and set(recorder.dtypes) == {"float32"} and seen.get("head_output") == "float32")
    return {"autocast": f"{device.type} bfloat16", **seen, "covariance_isqrt_matmul_dtypes": recorder.dtypes,
            "float32_under_autocast": ok}


def scan_inputs(setting: Setting) -> dict[str, Tensor]:
    """Random selective-scan inputs at GCNet's GTM shapes: u, delta, z (B, D, L); A (D, N); B, C (B, N, L)."""
    torch.manual_seed(0)
    mamba = make_model("gcnet", setting.backbone, setting.size, setting.num_classes, setting.segments).gtm.mamba
    batch, d, n, length = setting.batch, mamba.d_inner, mamba.d_state, setting.segments  # one group = all segments
    return {"u": nn.functional.silu(torch.randn(batch, d, length)), "delta": 0.1 * torch.randn(batch, d, length),
            "A": -torch.exp(mamba.A_log.detach().float()), "B": torch.randn(batch, n, length),
            "C": torch.randn(batch, n, length), "D": mamba.D.detach().clone(), "z": torch.randn(batch, d, length),
            "delta_bias": mamba.dt_proj.bias.detach().clone()}


def _time_scan(scan: Callable[..., Tensor], inputs: dict[str, Tensor], repeats: int) -> float:
    """Median seconds of forward + backward of the scan (gradients into u and delta, as in training)."""
    times = []
    for _ in range(repeats):
        args = {k: (v.detach().requires_grad_(k in ("u", "delta"))) for k, v in inputs.items()}
        _sync(args["u"].device)
        start = time.perf_counter()
        scan(**args, delta_softplus=True).sum().backward()
        _sync(args["u"].device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_scan(setting: Setting, device: torch.device, compile_scan: bool) -> dict[str, Any]:
    """GCNet's plain-PyTorch selective scan: CPU vs device output, eager time, and ``torch.compile``'s time."""
    cpu_inputs = scan_inputs(setting)
    inputs = {k: v.to(device) for k, v in cpu_inputs.items()}
    with torch.no_grad():
        reference = selective_scan_reference(**cpu_inputs)
        diff = relative_difference(reference, selective_scan_reference(**inputs))
    repeats = max(setting.steps, 3)
    _time_scan(selective_scan_reference, inputs, 1)  # warm-up
    row = {"shape_u": list(inputs["u"].shape), "d_state": inputs["A"].shape[1],
           "mamba_ssm_available": mamba_ssm_available(), "compared": f"cpu vs {device.type}",
           "max_rel_diff": diff, "tolerance": AGREEMENT_RTOL, "ok": diff <= AGREEMENT_RTOL,
           "eager_fwd_bwd_ms": 1e3 * _time_scan(selective_scan_reference, inputs, repeats)}
    if not compile_scan:
        return {**row, "compiled": "skipped: not on CPU by default (--compile to force)"}
    compiled = torch.compile(selective_scan_reference, dynamic=False)
    start = time.perf_counter()
    _time_scan(compiled, inputs, 1)
    row["compile_s"] = time.perf_counter() - start
    with torch.no_grad():
        row["compiled_max_rel_diff"] = relative_difference(reference, compiled(**inputs))
    # not a formality: inductor on CPU (torch 2.13) gave 0.21 here while eager matched float64 to 6e-8
    row["compiled_ok"] = row["compiled_max_rel_diff"] <= AGREEMENT_RTOL
    row["compiled_fwd_bwd_ms"] = 1e3 * _time_scan(compiled, inputs, repeats)
    row["compiled_speedup"] = row["eager_fwd_bwd_ms"] / row["compiled_fwd_bwd_ms"]
    return row


def check_ddp(setting: Setting, device: torch.device) -> dict[str, Any]:
    """One SGD step of TSN wrapped in DistributedDataParallel (world size 1) against the same step unwrapped."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    store = tempfile.mkdtemp(prefix="gpu_check_ddp_")
    if device.type == "cuda":
        torch.cuda.set_device(device.index or 0)  # NCCL binds the process group to the current device
    dist.init_process_group(backend, init_method=f"file://{store}/store", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = make_model("tsn", setting.backbone, setting.size, setting.num_classes, setting.segments).to(device)
        wrapped = nn.parallel.DistributedDataParallel(
            copy.deepcopy(plain), device_ids=[device.index or 0] if device.type == "cuda" else None)
        x = torch.randn(clip_shape(plain, setting.batch, setting.segments, setting.size), device=device)
        times = {}
        for name, model in (("plain", plain), ("ddp", wrapped)):
            torch.manual_seed(2)  # the same dropout mask in both
            times[name] = train_step(model, x, False, torch.optim.SGD(model.parameters(), lr=0.1))[0]
        diff = max(relative_difference(a, b) for a, b in zip(plain.parameters(), wrapped.module.parameters()))
    finally:
        dist.destroy_process_group()
        shutil.rmtree(store, ignore_errors=True)
    return {"backend": backend, "world_size": 1, "max_rel_param_diff": diff, "tolerance": DDP_RTOL,
            "ok": diff <= DDP_RTOL, "plain_step_s": times["plain"], "ddp_step_s": times["ddp"]}


def check_prefetch(setting: Setting, device: torch.device, batches: int = 12) -> dict[str, Any]:
    """``data/prefetch.to_device_ahead`` on ``device`` (issue 26): uint8 clip batches (B, N, S, S, 3) arrive equal
    and in order; one pass with a fixed matmul chain standing in for the step, plain ``.to(device)`` from pageable
    memory vs the prefetcher (pinned memory, next copy on a side stream). The times are what this device gives,
    not a pass mark; ``equal`` must be true."""
    from actionray.platform.data.prefetch import to_device_ahead

    shape = (setting.batch, setting.segments, setting.size, setting.size, 3)
    generator = torch.Generator().manual_seed(0)
    host = [{"video": torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator),
             "label": torch.arange(setting.batch) + k} for k in range(batches)]
    arrived = [{key: value.cpu() for key, value in batch.items()} for batch in to_device_ahead(iter(host), device)]
    equal = len(arrived) == len(host) and all(
        torch.equal(a["video"], h["video"]) and torch.equal(a["label"], h["label"]) for a, h in zip(arrived, host))
    dim = 128 if setting.tiny else 4096  # full: about 20 ms of fp32 matmuls per batch on an H100, beside a 19 MB copy
    weight = torch.randn(dim, dim, generator=generator).to(device) / dim ** 0.5

    def one_pass(stream: Iterator[dict[str, Tensor]]) -> float:
        _sync(device)
        start = time.perf_counter()
        for batch in stream:
            x = batch["video"].float().mean() + weight
            for _ in range(8):
                x = torch.tanh(x @ weight)
        _sync(device)
        return time.perf_counter() - start

    plain = lambda: ({k: v.to(device) for k, v in b.items()} for b in host)  # noqa: E731
    one_pass(plain())  # warm-up: kernels, allocator
    plain_s = statistics.median(one_pass(plain()) for _ in range(3))
    ahead_s = statistics.median(one_pass(to_device_ahead(iter(host), device)) for _ in range(3))
    return {"equal": equal, "batches": batches, "batch_mb": host[0]["video"].numel() / 1e6,
            "plain_pass_s": plain_s, "ahead_pass_s": ahead_s, "ahead_over_plain": ahead_s / plain_s}


def environment(device: torch.device, setting: Setting) -> dict[str, Any]:
    """Versions, device and the setting of this run."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"check": "env", "device": str(device), "gpu": gpu, "torch": torch.__version__,
            "cuda": torch.version.cuda, "threads": torch.get_num_threads(), "python": sys.version.split()[0],
            "setting": setting.__dict__}


def run_checks(setting: Setting, device: torch.device, emit: Callable[[dict[str, Any]], None],
               max_seconds: float, compile_scan: bool, models: list[str]) -> None:
    """Every check in order, one ``emit`` per measurement; none starts once ``max_seconds`` have passed."""
    start = time.perf_counter()

    def run(check: str, fn: Callable[[], dict[str, Any]], **labels: Any) -> None:
        if time.perf_counter() - start > max_seconds:
            emit({"check": check, **labels, "skipped": f"time budget --max-seconds {max_seconds:g} spent"})
            return
        try:
            emit({"check": check, **labels, **fn()})
        except Exception as error:  # noqa: BLE001 - one failing check must not hide the others' numbers
            emit({"check": check, **labels, "error": _error(error)})
        if device.type == "cuda":
            torch.cuda.empty_cache()

    emit(environment(device, setting))
    run("tcp_autocast", lambda: check_tcp_autocast(setting, device))
    run("ddp", lambda: check_ddp(setting, device))
    run("prefetch", lambda: check_prefetch(setting, device))
    if device.type != "cuda":
        emit({"check": "ddp", "backend": "nccl", "skipped": "NCCL needs a CUDA device; the gloo line ran the path"})
    for spec in (s for s in SPECS if s.name in models):
        try:
            model, reason = build_spec(spec, setting)
        except Exception as error:  # noqa: BLE001 - a model that fails to build is reported, the others still run
            emit({"check": "step", "model": spec.name, "error": _error(error)})
            continue
        if model is None:
            emit({"check": "step", "model": spec.name, "skipped": reason})
            continue
        run("agreement", lambda spec=spec, model=model: check_agreement(spec, model, setting, device), model=spec.name)
        run("step", lambda spec=spec, model=model: measure_step(spec, model, setting, device, bf16=False), model=spec.name,
            precision="fp32")
        if device.type == "cuda":
            run("step", lambda spec=spec, model=model: measure_step(spec, model, setting, device, bf16=True), model=spec.name,
                precision="bf16_channels_last")
        else:
            emit({"check": "step", "model": spec.name, "precision": "bf16_channels_last",
                  "skipped": "bf16 autocast + channels_last is timed on CUDA only"})
    run("scan", lambda: check_scan(setting, device, compile_scan))
    emit({"check": "imports", "forbidden_loaded": sorted(m for m in FORBIDDEN_MODULES if m in sys.modules),
          "total_s": time.perf_counter() - start})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="CPU-sized: ResNet-18, 4 segments, 64 px, 1+2 steps")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--max-seconds", type=float, default=420.0,
                   help="start no new measurement after this many seconds (the GPU run must end within 8 min)")
    p.add_argument("--compile", dest="compile_scan", action="store_true", default=None,
                   help="torch.compile the scan (default: on CUDA only)")
    p.add_argument("--models", default=",".join(s.name for s in SPECS), help="comma-separated subset")
    p.add_argument("--out", default=None, help="also write the JSON lines to this file")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (1 on a shared CPU box)")
    args = p.parse_args(argv)
    unknown = sorted(set(args.models.split(",")) - {s.name for s in SPECS})
    if unknown:
        p.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(s.name for s in SPECS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch.cuda.is_available() is False")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run every check and print one JSON line per measurement."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    compile_scan = device.type == "cuda" if args.compile_scan is None else args.compile_scan
    out = open(args.out, "w") if args.out else None

    def emit(record: dict[str, Any]) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    try:
        run_checks(TINY if args.tiny else FULL, device, emit, args.max_seconds, compile_scan, args.models.split(","))
    finally:
        if out:
            out.close()


if __name__ == "__main__":
    main()
