"""DCLR pre-training (Ding, Qian, Xiong, ACM MM 2022) as a platform method: ``method.name: dclr``.

Recipe (DCLR repo, main_view.py and start_view.sh): the ``DCLR`` MoCo wrapper (``actionray.models.dclr``) on an
R(2+1)D view encoder, queue K = 2048 on UCF101, momentum 0.999, temperature 0.07, top-k 5, SGD lr 0.01
momentum 0.9 wd 1e-4, 201 epochs, x0.1 at epochs 120 and 160, 16-frame clips (stride 2) at 112 px.

What runs where:
- Ray Data decode tasks (``DCLRRows``): per video two different random windows, one shared static frame offset,
  four RandomResizedCrop boxes (``sample_dclr_views`` / ``apply_dclr_views``); one row per video holding its
  four uint8 clips ``video`` (4, T, S, S, 3) = query RGB, key RGB, query static, key static.
- Training device (``train_step``): the frame-shared colour/grey/flip/blur augmentation, ImageNet
  normalisation, ``[V, S, D]`` stacking (``query_key_views``), the DCLR forward (EMA, shuffle-BN, queues, the
  five multi-positive NCE terms), logged as ``train_loss_vv``, ``train_loss_vs_sv``, ``train_loss_vd_dv``,
  ``train_acc_vv`` (vv logits, target 0) and ``train_queue_fill``.
- Validation (rank 0): the same loss and accuracy on the val list's views, read-only (no EMA step, no
  shuffle-BN, no enqueue); fixed views (epoch 0 crops, a seeded device augmentation), so epochs compare.
  ``val_loss`` (min) is the primary metric because it is the only one this method has; **the pre-training loss
  is not a proxy of downstream accuracy** (it depends on the queue's content and the temperature): select
  encoders and tune the temperature on the probe (``dclr_downstream``), see search_spaces/dclr_temperature.yaml.

Deviations from the released code (besides those of ``actionray.models.dclr`` and ``dclr_views``):

- First-epoch warm-up (main_view.py: ``if epoch == 0 and i < 256`` skips ``optimizer.step()``): the platform's
  loop always steps the optimizer, so a warm-up step runs the forward (EMA, enqueue, BN statistics) outside DDP
  with no autograd graph and returns the loss as a detached leaf. Its backward reaches no parameter, every
  gradient stays ``None``, and SGD skips parameters without a gradient: no weight decay, no momentum buffer
  (a ``0 * loss`` would give zero gradients that SGD still decays and accumulates into its momentum). The
  lr schedule still advances per step. fp16 (GradScaler) refuses a step without gradients, so ``train.amp:
  fp16`` needs ``warmup_iters: 0`` (bf16 is fine); the config check says so.
- ``K % global batch`` is checked when the config is built (``check_config``), not asserted mid-run; the
  README's ``-b 40`` with K = 2048 fails it (our recipe uses 64, as the scripts' checkpoint names suggest).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any, Iterable, Literal

import numpy as np
import torch
from pydantic import AfterValidator, Field, model_validator

from actionray.models.dclr import DCLR, check_queue_size
from actionray.platform.config import ConfigError, ExperimentConfig, MethodConfig
from actionray.platform.data.source import ClipSource
from actionray.platform.method import Batch, Evaluation, MetricSpec, StepOutput
from actionray.trainables.dclr_views import DCLRAugment, apply_dclr_views, query_key_views, sample_dclr_views

__all__ = ["Depth", "DCLRConfig", "DCLRRows", "DCLRPretraining", "METHOD", "unwrap"]

TERMS = ("loss_vv", "loss_vs_sv", "loss_vd_dv", "acc_vv", "queue_fill")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}  # keeps the view streams of the splits apart


def _check_depth(value: list[int]) -> list[int]:
    if value not in ([1, 1, 1, 1], [2, 2, 2, 2]):
        raise ValueError("must be [1, 1, 1, 1] (released DCLR) or [2, 2, 2, 2] (torchvision R(2+1)D-18)")
    return value


# R(2+1)D blocks per stage: [1,1,1,1] as released (DCLR repo, view_resnet.py), [2,2,2,2] as torchvision's
Depth = Annotated[list[int], AfterValidator(_check_depth)]


class DCLRConfig(MethodConfig):
    """The ``method`` section of DCLR pre-training (defaults: the released UCF101 recipe)."""

    name: Literal["dclr"] = "dclr"
    layers: Depth = Field(default_factory=lambda: [1, 1, 1, 1])
    backbone_width: int = Field(64, ge=4)  # R(2+1)D stem/layer1 channels; 64 as released, narrower for CPU demos
    embedding_dim: int = Field(128, ge=1)
    queue_size: int = Field(2048, ge=1)  # K; must be a multiple of data.batch_size x scaling.num_workers
    momentum: float = Field(0.999, ge=0.0, le=1.0)
    temperature: float = Field(0.07, gt=0.0)
    topk: int = Field(5, ge=1)
    clip_len: int = Field(16, ge=1)  # frames per clip after subsampling (-fpc 16)
    stride: int = Field(2, ge=1)  # window of clip_len * stride consecutive frames
    crop_size: int = Field(112, ge=16)
    crop_scale: tuple[float, float] = (0.2, 1.0)  # RandomResizedCropVideo area range
    blur_sigma: float | None = Field(None, gt=0.0)  # None: drawn once per run from train.seed, as released
    map_loss_weight: float = Field(0.0, ge=0.0)  # 0 = off; > 0 is our variant (actionray.models.dclr, dev. 3)
    warmup_iters: int = Field(256, ge=0)  # first-epoch iterations without a parameter update (main_view.py)
    # Ablation switches (ours; the released code has all three terms at weight 1 and mined positives):
    # loss_weights (vv, vs+sv, vd+dv) = (1, 0, 0) with mine_positives false is plain MoCo on two clips of one
    # video (ablation preset dclr_terms; actionray demo dclr's "MoCo (vv only)" arm).
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    mine_positives: bool = True  # top-k queue neighbours as extra positives (main_view.py --topk)

    @model_validator(mode="after")
    def _topk_within_queue(self) -> "DCLRConfig":
        if self.topk > self.queue_size:
            raise ValueError(f"method.topk ({self.topk}) must not exceed method.queue_size ({self.queue_size})")
        if any(w < 0 for w in self.loss_weights) or self.loss_weights[0] == 0:
            raise ValueError(f"method.loss_weights (vv, vs_sv, vd_dv) must be >= 0 with vv > 0, "
                             f"got {self.loss_weights}")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"method.crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        return self


@dataclasses.dataclass(frozen=True)
class DCLRRows:
    """Ray Data ``RowDecoder``: one video -> one row with its four DCLR clips, uint8 (4, T, S, S, 3)."""

    clip_len: int = 16
    stride: int = 2
    crop_size: int = 112
    scale: tuple[float, float] = (0.2, 1.0)

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> "DCLRRows":
        m = cfg.method
        return cls(m.clip_len, m.stride, m.crop_size, tuple(m.crop_scale))

    def __call__(self, job, path: str, num_frames: int, label: int, index: int, epoch: int) -> dict[str, list]:
        """Decode only the frames the views use, then crop (``pipeline.RowDecoder``)."""
        from actionray.platform.data.decode import open_video

        data = job.data
        seed = [job.seed, epoch, index, _SPLIT_CODE[job.split], 7]
        options = dict(clip_len=self.clip_len, stride=self.stride, scale=self.scale)
        with open_video(path, "frames" if data.format == "frames" else "video", frame_template=data.frame_template,
                        short_side=data.decode_short_side, num_frames=num_frames if num_frames > 0 else None) as reader:
            n = len(reader)
            # sample_dclr_views draws the windows and the static offset before the crop boxes, so a plan drawn
            # for a 1 x 1 frame names the same frames as the one drawn below with the decoded size.
            frames_only = sample_dclr_views(n, 1, 1, seed, **options)
            needed = np.unique(_frame_indices(frames_only))
            frames = reader.get(needed)
        plan = sample_dclr_views(n, frames.shape[1], frames.shape[2], seed, **options)
        local = dataclasses.replace(
            plan, query_frames=np.searchsorted(needed, plan.query_frames),
            key_frames=np.searchsorted(needed, plan.key_frames),
            query_static=int(np.searchsorted(needed, plan.query_static)),
            key_static=int(np.searchsorted(needed, plan.key_static)))
        return {"video": [apply_dclr_views(frames, local, self.crop_size)], "label": [label], "index": [index],
                "epoch": [epoch], "frame_indices": [_frame_indices(plan)], "view": [0], "valid": [1]}

    def skipped(self, job, index: int, epoch: int) -> dict[str, list]:
        """The zero row of a skipped train video (``valid = 0``), same shapes."""
        side = self.crop_size
        return {"video": [np.zeros((4, self.clip_len, side, side, 3), np.uint8)], "label": [-1], "index": [index],
                "epoch": [epoch], "frame_indices": [np.zeros(2 * self.clip_len + 2, np.int64)], "view": [0],
                "valid": [0]}


def _frame_indices(plan) -> np.ndarray:
    """(2 T + 2,): query frames, key frames, query static, key static (traceability column)."""
    return np.concatenate([plan.query_frames, plan.key_frames, [plan.query_static, plan.key_static]]).astype(np.int64)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


class DCLRPretraining:
    """The DCLR pre-training method (module docstring)."""

    name = "dclr"
    config_class = DCLRConfig
    find_unused_parameters = False  # every query-encoder parameter (backbone, five heads) gets a gradient

    def __init__(self) -> None:
        self._augment: tuple[tuple, DCLRAugment] | None = None

    # -- config, metrics ----------------------------------------------------------------------------------------
    def check_config(self, cfg: ExperimentConfig) -> None:
        """K divisible by the global batch; fp16 only without the warm-up (module docstring)."""
        m, batch, s = cfg.method, cfg.data.batch_size, cfg.scaling
        # An elastic group (scaling.num_workers: [min, max]) may train at any size in between: K must suit each.
        for workers in range(s.fewest_workers, s.num_workers + 1):
            try:
                check_queue_size(m.queue_size, batch * workers)
            except ValueError:
                step = math.lcm(*(batch * w for w in range(s.fewest_workers, s.num_workers + 1)))
                suggestion = max(1, m.queue_size // step) * step
                sizes = f" (an elastic group may have {workers})" if s.elastic else ""
                raise ValueError(f"method.queue_size K={m.queue_size} must be a multiple of the global batch "
                                 f"data.batch_size x scaling.num_workers = {batch} x {workers} = {batch * workers}"
                                 f"{sizes} (e.g. method.queue_size={suggestion})") from None
        if m.warmup_iters and cfg.train.amp == "fp16":
            raise ValueError("method.warmup_iters > 0 makes steps without gradients, which train.amp=fp16 "
                             "(GradScaler) refuses: use train.amp=bf16 or none, or method.warmup_iters=0")

    def metrics(self, cfg: ExperimentConfig) -> MetricSpec:
        """val_loss (min): the only validation signal; not a proxy of downstream accuracy (module docstring)."""
        reported = ("train_loss", *(f"train_{t}" for t in TERMS), "train_warmup", "val_loss", "val_acc_vv",
                    "val_loss_vv", "val_loss_vs_sv", "val_loss_vd_dv")
        return MetricSpec(primary="val_loss", mode="min", reported=reported,
                          progress=("train_acc_vv", "train_queue_fill", "val_loss", "val_acc_vv"),
                          percent=frozenset({"train_acc_vv", "val_acc_vv", "train_queue_fill"}))

    # -- model, data, optimizer ---------------------------------------------------------------------------------
    def build_model(self, cfg: ExperimentConfig) -> DCLR:
        """Query and key encoders, seven queues (D, K) and the pointer."""
        m = cfg.method
        return DCLR(m.layers, m.embedding_dim, m.queue_size, m.momentum, m.temperature, m.topk, m.map_loss_weight,
                    backbone_width=m.backbone_width, term_weights=m.loss_weights, mine_positives=m.mine_positives)

    def data(self, cfg: ExperimentConfig) -> ClipSource:
        """Rows of four uint8 clips per video; batches stay uint8 (augmented in ``train_step``)."""
        return ClipSource(cfg, rows=DCLRRows.from_config(cfg), normalise=False)

    def param_groups(self, model: torch.nn.Module, cfg: ExperimentConfig) -> list[dict[str, Any]]:
        """The query encoder only: the key encoder follows it by EMA."""
        return [{"params": list(unwrap(model).encoder_q.parameters()), "name": "encoder_q"}]

    # -- training and validation --------------------------------------------------------------------------------
    def augment(self, cfg: ExperimentConfig) -> DCLRAugment:
        """The device augmentation of this run (blur sigma fixed per run, as released)."""
        key = (cfg.method.crop_size, cfg.method.blur_sigma, cfg.train.seed)
        if self._augment is None or self._augment[0] != key:
            self._augment = (key, DCLRAugment(cfg.method.crop_size, blur_sigma=cfg.method.blur_sigma,
                                              seed=cfg.train.seed))
        return self._augment[1]

    def warming_up(self, model: torch.nn.Module, batch: Batch, cfg: ExperimentConfig) -> bool:
        """True for the first ``warmup_iters`` steps of epoch 0 (counted on the model; equal on every worker)."""
        core = unwrap(model)
        if cfg.method.warmup_iters == 0 or int(batch["epoch"][0]) != 0:
            return False
        seen = getattr(core, "warmup_steps_seen", 0)
        core.warmup_steps_seen = seen + 1
        return seen < cfg.method.warmup_iters

    def train_step(self, model: torch.nn.Module, batch: Batch, cfg: ExperimentConfig) -> StepOutput:
        """uint8 rows (B, 4, T, S, S, 3) -> augmented [V, S, D] views of q and k -> the DCLR loss and terms."""
        q, k = query_key_views(batch["video"], self.augment(cfg))
        if self.warming_up(model, batch, cfg):
            # No graph, outside DDP: the loop's backward leaves every gradient None (module docstring).
            with torch.no_grad():
                loss, terms = unwrap(model)(q, k)
            loss, warmup = loss.detach().requires_grad_(True), 1.0
        else:
            loss, terms = model(q, k)
            warmup = 0.0
        return StepOutput(loss=loss, metrics={**terms, "warmup": warmup}, batch_size=int(q.shape[0]))

    @torch.no_grad()
    def validate(self, model: torch.nn.Module, batches: Iterable[Batch], cfg: ExperimentConfig) -> Evaluation:
        """Loss terms and vv accuracy on the val views, read-only on this worker (no EMA, no enqueue)."""
        model.eval()
        generator = torch.Generator().manual_seed(cfg.train.seed)  # the same device augmentation every epoch
        sums: dict[str, float] = {}
        seen = 0
        for batch in batches:
            q, k = query_key_views(batch["video"], self.augment(cfg), generator)
            loss, terms = model(q, k, evaluate=True)
            n = int(q.shape[0])
            for key, value in {"loss": loss, **terms}.items():
                sums[key] = sums.get(key, 0.0) + float(value) * n
            seen += n
        if not seen:
            raise RuntimeError(f"validation produced no batches; check data.val_list ({cfg.data.val_list})")
        keys = ("loss", "acc_vv", "loss_vv", "loss_vs_sv", "loss_vd_dv")
        return Evaluation({f"val_{key}": sums[key] / seen for key in keys})

    def test(self, cfg: ExperimentConfig, *, checkpoint: str | None, reference_layout: str | None,
             output: str | None = None) -> Evaluation:
        """Pre-training has no test protocol of its own: an encoder is judged downstream."""
        raise ConfigError("dclr pre-training has no test protocol: fine-tune or probe its checkpoint with "
                         "method.name=dclr_downstream (method.init_checkpoint=CHECKPOINT), then `actionray eval` "
                         "that run")


METHOD = DCLRPretraining()
