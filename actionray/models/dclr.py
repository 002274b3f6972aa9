"""DCLR: dual contrastive learning of static and dynamic video features (Ding, Qian, Xiong, ACM MM 2022).

A MoCo variant (DCLR repo, moco/builder.py ``MoCo_View``; main_view.py) on three views of each clip, stacked
``[V, S, D]`` = RGB clip, static clip (one frame repeated), frame difference. The view encoder
(``DCLREncoder``, DCLR repo view_resnet.py) runs an R(2+1)D backbone on the three views together and owns five
projection heads ``h_vv, h_vs, h_vd, h_sv, h_dv`` (Linear 512-512-ReLU-128):

- activation maps ``A = sum over channels of the layer4 map`` for each view, and the reference embeddings
  ``r_s = h_sv(GAP(F_s))``, ``r_d = h_dv(GAP(F_d))``;
- embeddings ``z_vv = h_vv(GAP(F_v))``, ``z_vs = h_vs(GAP(F_v * w_s))``, ``z_vd = h_vd(GAP(F_v * w_d))``,
  ``z_sv = h_sv(GAP(F_s))``, ``z_dv = h_dv(GAP(F_d))`` with ``w = A / mean(A)`` (mean-one weights from the
  static and dynamic maps): the RGB feature is decoupled into its static- and dynamic-related parts.

One iteration (``DCLR.forward``): the key encoder computes maps and reference embeddings of both clips; the
query encoder embeds clip q with q's maps; the key encoder is updated by EMA and embeds clip k (shuffle-BN)
with k's maps. Five logit sets ``[q.k+, q.queue] / tau`` (vv: vv/vv/queue_vv; vs: vs/sv/queue_sv;
sv: sv/vs/queue_vs; vd: vd/dv/queue_dv; dv: dv/vd/queue_vd as query/positive key/negatives) and a
multi-positive NCE whose extra positives are the top-k queue entries by ``softmax(r_q . queue_r)`` (static
for vs/sv, dynamic for vd/dv, their sum for vv). Loss ``L_vv + (L_vs + L_sv) + (L_vd + L_dv)``.

Deviations from the released code, each deliberate:

1. It runs: the released map-mode unpacking (4 of 5 values), ``torch.samplerones`` and the hard-coded layer4
   size 512 x 2 x 7 x 7 crash or restrict it; here sizes come from the tensors (any clip the backbone takes).
2. Shuffle-BN map fix: the released key path permutes clip k but not its maps ``A^k_s, A^k_d``, so ``z^k_vs``
   and ``z^k_vd`` were weighted by other samples' maps. Here the maps are permuted with the clip.
3. The 0.1-weighted activation-map term ``mean((A^q_v - (z^k_vs + z^k_vd))^2)`` does not broadcast
   ((B, 1, t, h, w) vs (B, 128)) and, built only from no-grad key-encoder outputs, could carry no gradient. It
   is off (``map_loss_weight=0``). Its intent is not recoverable from the code, so no "fixed" version is
   claimed; ``map_loss_weight > 0`` adds our own shape-consistent reading, clearly not the released term:
   ``mean((w(A^q_v) - w(A^q_s + A^q_d))^2)`` with ``w`` the mean-one normalisation, ``A^q_v`` from the query
   encoder (gradient) and the target from the key encoder's maps (no gradient).
4. One extra buffer ``queue_filled`` (columns written so far, saturating at K) gives the queue-fill fraction
   and resumes with the queues; a released checkpoint converts with ``queue_filled = K`` (its queues are full:
   checkpoints are saved every 10 epochs and one epoch writes more than K keys on UCF101 and K400).
5. The multi-positive NCE ``-log sum_{j in P} softmax(l)_j`` is computed as ``logsumexp_P(l) - logsumexp(l)``
   (same value, no underflow); mean-one weights divide by ``max(mean, 1e-12)`` (only an all-zero map differs).

Kept as released: EMA of parameters only (BN buffers of the key encoder follow its own forward passes), queues
initialised random and L2-normalised, neighbour mining over the whole queue from the first step (random
entries included), softmax without temperature for the mining, one shared pointer for the seven queues.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from actionray.models.r2plus1d import RELEASED_LAYERS, R2Plus1D, init_video_resnet_weights

__all__ = [
    "ActivationMaps", "ViewEmbeddings", "ProjectionHead", "DCLREncoder", "DCLR", "HEADS", "QUEUES",
    "check_queue_size", "multi_positive_nce", "neighbour_positives", "concat_all_gather",
    "convert_dclr_reference_state", "backbone_state_from_pretraining", "infer_layers", "read_checkpoint",
    "load_dclr_checkpoint",
]

HEADS: tuple[str, ...] = ("vv", "vs", "vd", "sv", "dv")
QUEUES: tuple[str, ...] = ("vv", "vs", "vd", "sv", "dv", "rs", "rd")


class ActivationMaps(NamedTuple):
    """Map-mode output: channel-summed layer4 maps (B, 1, t, h, w) and L2-normalised reference embeddings (B, D)."""

    rgb: torch.Tensor
    static: torch.Tensor
    dynamic: torch.Tensor
    ref_static: torch.Tensor
    ref_dynamic: torch.Tensor


class ViewEmbeddings(NamedTuple):
    """The five L2-normalised embeddings (B, D) of a clip's views."""

    vv: torch.Tensor
    vs: torch.Tensor
    vd: torch.Tensor
    sv: torch.Tensor
    dv: torch.Tensor


class ProjectionHead(nn.Sequential):
    """Linear(512, 512) -> ReLU -> Linear(512, dim), initialised N(0, 0.01) with zero bias (view_resnet.py)."""

    def __init__(self, in_dim: int = 512, dim: int = 128) -> None:
        super().__init__(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Linear(in_dim, dim))
        init_video_resnet_weights(self)


def _mean_one(a: torch.Tensor) -> torch.Tensor:
    # view_resnet.py: a map divided by its mean over the t*h*w positions, so the weights average to one.
    return a / a.mean(dim=(2, 3, 4), keepdim=True).clamp_min(1e-12)


def _gap(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3, 4))


def _check_views(x: torch.Tensor, what: str) -> None:
    if x.dim() != 6 or x.shape[1] != 3 or x.shape[2] != 3:
        raise ValueError(f"DCLR {what}: expected stacked views (B, 3 views [V, S, D], 3, T, H, W), "
                         f"got {tuple(x.shape)}")


class DCLREncoder(nn.Module):
    """R(2+1)D backbone with the five DCLR projection heads; input stacked views (B, 3, C, T, H, W)."""

    def __init__(self, layers: Sequence[int] = RELEASED_LAYERS, dim: int = 128, backbone_width: int = 64) -> None:
        super().__init__()
        self.backbone = R2Plus1D(layers, backbone_width)
        width = self.backbone.out_channels
        self.h_vv, self.h_vs, self.h_vd = (ProjectionHead(width, dim) for _ in range(3))
        self.h_sv, self.h_dv = (ProjectionHead(width, dim) for _ in range(2))

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, C, T, H, W) -> layer4 maps (B, 3, 512, t, h, w); the views share one BN batch."""
        _check_views(x, "encoder input")
        b = x.shape[0]
        f = self.backbone(x.flatten(0, 1))
        return f.view(b, 3, *f.shape[1:])

    def activation_maps(self, x: torch.Tensor) -> ActivationMaps:
        """(B, 3, C, T, H, W) -> maps A_v, A_s, A_d (B, 1, t, h, w) and r_s = h_sv(GAP F_s), r_d = h_dv(GAP F_d)."""
        fv, fs, fd = self.feature_maps(x).unbind(1)
        return ActivationMaps(fv.sum(1, keepdim=True), fs.sum(1, keepdim=True), fd.sum(1, keepdim=True),
                              F.normalize(self.h_sv(_gap(fs)), dim=1), F.normalize(self.h_dv(_gap(fd)), dim=1))

    def embeddings(self, x: torch.Tensor, static_map: torch.Tensor | None = None,
                   dynamic_map: torch.Tensor | None = None) -> ViewEmbeddings:
        """(B, 3, C, T, H, W) and maps (B, 1, t, h, w) -> ViewEmbeddings (vv, vs, vd, sv, dv), each (B, D).

        A map of ``None`` pools the RGB feature plainly for that embedding (as released).
        """
        return self.embeddings_and_rgb_map(x, static_map, dynamic_map)[0]

    def embeddings_and_rgb_map(self, x: torch.Tensor, static_map: torch.Tensor | None = None,
                               dynamic_map: torch.Tensor | None = None) -> tuple[ViewEmbeddings, torch.Tensor]:
        """``embeddings`` plus the RGB activation map A_v (B, 1, t, h, w) of the same pass."""
        fv, fs, fd = self.feature_maps(x).unbind(1)
        for name, m in (("static_map", static_map), ("dynamic_map", dynamic_map)):
            if m is not None and (m.shape[0] != fv.shape[0] or m.shape[1] != 1 or m.shape[2:] != fv.shape[2:]):
                raise ValueError(f"DCLR {name}: expected {(fv.shape[0], 1, *fv.shape[2:])}, got {tuple(m.shape)}")
        pooled_v = _gap(fv)
        vs_in = pooled_v if static_map is None else _gap(fv * _mean_one(static_map))
        vd_in = pooled_v if dynamic_map is None else _gap(fv * _mean_one(dynamic_map))
        z = (self.h_vv(pooled_v), self.h_vs(vs_in), self.h_vd(vd_in), self.h_sv(_gap(fs)), self.h_dv(_gap(fd)))
        return ViewEmbeddings(*(F.normalize(e, dim=1) for e in z)), fv.sum(1, keepdim=True)


# --- distributed helpers ----------------------------------------------------------------------------------

def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """All workers' (B, ...) tensors concatenated in rank order (B * world, ...); local when world size is 1."""
    _, world = _rank_world()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def check_queue_size(queue_size: int, global_batch: int) -> None:
    """Raise unless the MoCo queue length K is a positive multiple of the global batch (one pointer step)."""
    if global_batch < 1 or queue_size < 1 or queue_size % global_batch:
        batch = max(global_batch, 1)
        raise ValueError(f"dclr queue_size K={queue_size} must be a positive multiple of the global batch "
                         f"{global_batch} (batch_size x workers); e.g. K={max(1, queue_size // batch) * batch}")


# --- loss -------------------------------------------------------------------------------------------------

def neighbour_positives(similarity: torch.Tensor, topk: int) -> torch.Tensor:
    """(B, K) queue similarities -> multi-hot positives (B, 1 + K): column 0 (the key) and the top-k columns."""
    top = similarity.topk(topk, dim=1).indices
    mask = torch.zeros_like(similarity, dtype=torch.bool).scatter_(1, top, True)
    return torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)


def multi_positive_nce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -log sum_{j in P_i} softmax(logits_i)_j; logits (B, N), positives (B, N) bool."""
    pos = logits.masked_fill(~positives.bool(), float("-inf"))
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(pos, dim=1)).mean()


# --- the MoCo wrapper -------------------------------------------------------------------------------------

class DCLR(nn.Module):
    """Query/key DCLR encoders, seven (D, K) queues with one pointer, and the dual contrastive loss."""

    def __init__(self, layers: Sequence[int] = RELEASED_LAYERS, dim: int = 128, queue_size: int = 2048,
                 momentum: float = 0.999, temperature: float = 0.07, topk: int = 5,
                 map_loss_weight: float = 0.0, backbone_width: int = 64,
                 term_weights: tuple[float, float, float] = (1.0, 1.0, 1.0), mine_positives: bool = True) -> None:
        super().__init__()
        if not 0 < topk <= queue_size:
            raise ValueError(f"dclr topk={topk} must be in 1..queue_size ({queue_size})")
        if temperature <= 0:
            raise ValueError(f"dclr temperature must be > 0, got {temperature}")
        self.K, self.m, self.T, self.topk = queue_size, momentum, temperature, topk
        self.map_loss_weight = map_loss_weight
        # (vv, vs+sv, vd+dv) weights, all 1 as released (main_view.py); (1, 0, 0) without mined positives is the
        # plain-MoCo ablation: two clips of one video, instance discrimination only (docs/models.md).
        self.term_weights = tuple(float(w) for w in term_weights)
        self.mine_positives = mine_positives
        self.encoder_q = DCLREncoder(layers, dim, backbone_width)
        self.encoder_k = DCLREncoder(layers, dim, backbone_width)
        self.encoder_k.load_state_dict(self.encoder_q.state_dict())  # f_k starts as a copy of f_q
        self.encoder_k.requires_grad_(False)  # updated by EMA only
        for name in QUEUES:
            self.register_buffer(f"queue_{name}", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("queue_filled", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta_k <- m theta_k + (1 - m) theta_q over parameters only (BN running statistics untouched)."""
        for pq, pk in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            pk.mul_(self.m).add_(pq.detach(), alpha=1.0 - self.m)

    @torch.no_grad()
    def _batch_shuffle(self, *tensors: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        # MoCo shuffle-BN: one permutation of the global batch (rank 0's, broadcast) applied to every tensor,
        # so a clip keeps its own maps (the released code permuted the clip only).
        rank, world = _rank_world()
        gathered = [concat_all_gather(t) for t in tensors]
        perm = torch.randperm(gathered[0].shape[0], device=gathered[0].device)
        if world > 1:
            dist.broadcast(perm, src=0)
        mine = perm.view(world, -1)[rank]
        return [g[mine] for g in gathered], torch.argsort(perm)

    @torch.no_grad()
    def _batch_unshuffle(self, x: torch.Tensor, unshuffle: torch.Tensor) -> torch.Tensor:
        rank, world = _rank_world()
        return concat_all_gather(x)[unshuffle.view(world, -1)[rank]]

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: Mapping[str, torch.Tensor]) -> None:
        # Keys of all workers (rank order) replace the oldest columns; one pointer for the seven queues.
        gathered = {name: concat_all_gather(keys[name]) for name in QUEUES}
        n = gathered["vv"].shape[0]
        check_queue_size(self.K, n)
        ptr = int(self.queue_ptr)
        for name, value in gathered.items():
            getattr(self, f"queue_{name}")[:, ptr:ptr + n] = value.T
        self.queue_ptr[0] = (ptr + n) % self.K
        self.queue_filled[0] = min(self.K, int(self.queue_filled) + n)

    def _logits(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        # (B, 1 + K): positive first; the queue is cloned because it is overwritten in place after the loss.
        return torch.cat([(q * k).sum(1, keepdim=True), q @ queue.clone().detach()], dim=1) / self.T

    def forward(self, q: torch.Tensor, k: torch.Tensor, update_key_encoder: bool = True, evaluate: bool = False
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Stacked views q, k (B, 3, C, T, H, W) of two clips -> (loss, named detached terms).

        ``evaluate``: the same loss read-only on one worker (validation): no EMA step, no shuffle-BN and no
        enqueue, so no collective call and no state change."""
        _check_views(q, "query clip")
        _check_views(k, "key clip")
        with torch.no_grad():
            maps_q = self.encoder_k.activation_maps(q)
            maps_k = self.encoder_k.activation_maps(k)
        zq, rgb_map_q = self.encoder_q.embeddings_and_rgb_map(q, maps_q.static, maps_q.dynamic)
        with torch.no_grad():
            if update_key_encoder and not evaluate:
                self.momentum_update()
            if evaluate:
                zk = self.encoder_k.embeddings(k, maps_k.static, maps_k.dynamic)
            else:
                (k_sh, s_sh, d_sh), unshuffle = self._batch_shuffle(k, maps_k.static, maps_k.dynamic)
                zk = ViewEmbeddings(*(self._batch_unshuffle(z, unshuffle)
                                      for z in self.encoder_k.embeddings(k_sh, s_sh, d_sh)))
            sim_s = F.softmax(maps_q.ref_static @ self.queue_rs, dim=1)
            sim_d = F.softmax(maps_q.ref_dynamic @ self.queue_rd, dim=1)
            if self.mine_positives:
                pos_s, pos_d = neighbour_positives(sim_s, self.topk), neighbour_positives(sim_d, self.topk)
                pos_v = neighbour_positives(sim_s + sim_d, self.topk)
            else:  # the own key only (plain MoCo's target)
                pos_s = pos_d = pos_v = neighbour_positives(sim_s, 0)
        logits_vv = self._logits(zq.vv, zk.vv, self.queue_vv)
        loss_vv = multi_positive_nce(logits_vv, pos_v)
        loss_vs_sv = (multi_positive_nce(self._logits(zq.vs, zk.sv, self.queue_sv), pos_s)
                      + multi_positive_nce(self._logits(zq.sv, zk.vs, self.queue_vs), pos_s))
        loss_vd_dv = (multi_positive_nce(self._logits(zq.vd, zk.dv, self.queue_dv), pos_d)
                      + multi_positive_nce(self._logits(zq.dv, zk.vd, self.queue_vd), pos_d))
        w_vv, w_s, w_d = self.term_weights
        loss = w_vv * loss_vv + w_s * loss_vs_sv + w_d * loss_vd_dv
        terms = {"loss_vv": loss_vv.detach(), "loss_vs_sv": loss_vs_sv.detach(), "loss_vd_dv": loss_vd_dv.detach()}
        if self.map_loss_weight > 0:  # our variant (module docstring, deviation 3), not the released term
            map_loss = (_mean_one(rgb_map_q) - _mean_one(maps_q.static + maps_q.dynamic)).pow(2).mean()
            loss = loss + self.map_loss_weight * map_loss
            terms["loss_map"] = map_loss.detach()
        terms["acc_vv"] = (logits_vv.detach().argmax(1) == 0).float().mean()
        if not evaluate:
            self._dequeue_and_enqueue({"vv": zk.vv, "vs": zk.vs, "vd": zk.vd, "sv": zk.sv, "dv": zk.dv,
                                       "rs": maps_k.ref_static, "rd": maps_k.ref_dynamic})
        terms["queue_fill"] = self.queue_filled.float()[0] / self.K
        return loss, terms


# --- checkpoints ------------------------------------------------------------------------------------------

_LAYER_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")
_REFERENCE_HEADS = {f"f{name}": f"h_{name}" for name in HEADS}  # view_resnet.py fvv.. -> h_vv..


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load(weights_only=True) of a local checkpoint file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DCLR checkpoint: file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickle errors, truncated files, non-tensor payloads
        raise ValueError(f"DCLR checkpoint: cannot read {path} as a weights-only torch file: {error}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"DCLR checkpoint: {path} holds a {type(obj).__name__}, not a dict")
    return obj


def _state_dict_of(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("DCLR checkpoint: 'state_dict' is not a mapping of names to tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _reference_encoder_key(rest: str) -> str | None:
    if rest.startswith(("stem.", "layer")):
        return "backbone." + rest
    head, _, tail = rest.partition(".")
    return f"{_REFERENCE_HEADS[head]}.{tail}" if head in _REFERENCE_HEADS and tail else None


def convert_dclr_reference_state(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Released DCLR checkpoint ({'epoch','arch','state_dict','optimizer'}, ``module.`` keys) -> ``DCLR`` keys.

    Every key must be used: unknown keys raise, listing them. ``queue_filled`` is set to K (module docstring,
    deviation 4). Load the result with ``DCLR.load_state_dict(..., strict=True)``.
    """
    state = _state_dict_of(checkpoint)
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        encoder, _, rest = key.partition(".")
        if encoder in ("encoder_q", "encoder_k") and (mapped := _reference_encoder_key(rest)) is not None:
            out[f"{encoder}.{mapped}"] = value
        elif key in {f"queue_{n}" for n in QUEUES} or key == "queue_ptr":
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"DCLR reference checkpoint: {len(unknown)} key(s) not in the released MoCo_View layout: "
                         f"{', '.join(sorted(unknown)[:10])}")
    if "queue_vv" not in out:
        raise ValueError("DCLR reference checkpoint: no queue_vv key; this is not a MoCo_View pre-training state")
    out["queue_filled"] = torch.tensor([out["queue_vv"].shape[1]], dtype=torch.long)
    return out


def infer_layers(backbone_state: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    """Blocks per stage (4,) read from backbone keys ``layerN.i.*``."""
    blocks = {n: set() for n in range(1, 5)}
    for key in backbone_state:
        if m := _LAYER_KEY.match(key):
            blocks[int(m.group(1))].add(int(m.group(2)))
    return tuple(len(blocks[n]) for n in range(1, 5))


def backbone_state_from_pretraining(checkpoint: Mapping[str, Any], layers: Sequence[int] = RELEASED_LAYERS
                                    ) -> dict[str, torch.Tensor]:
    """Query-encoder backbone of a DCLR checkpoint (released or ours) -> ``R2Plus1D`` keys, heads dropped.

    Every backbone key must be used and every ``R2Plus1D(layers)`` key provided; a depth mismatch names both.
    """
    state = _state_dict_of(checkpoint)
    prefixes = ("encoder_q.backbone.", "encoder_q.")
    out = {}
    for key, value in state.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            continue  # key encoder, queues: not part of the downstream model
        rest = key[len(prefix):]
        if rest.split(".")[0] in _REFERENCE_HEADS or rest.split(".")[0] in {f"h_{n}" for n in HEADS}:
            continue  # projection heads are dropped downstream
        out[rest] = value
    if not out:
        raise ValueError("DCLR checkpoint: no encoder_q backbone keys found (expected 'module.encoder_q.*' or "
                         "'encoder_q.backbone.*')")
    found, wanted = infer_layers(out), tuple(int(n) for n in layers)
    if found != wanted:
        raise ValueError(f"DCLR checkpoint depth mismatch: the checkpoint's R(2+1)D has layers {list(found)} "
                         f"but the downstream model was built with layers {list(wanted)}; build it with "
                         f"layers {list(found)}")
    with torch.device("meta"):
        expected = set(R2Plus1D(wanted).state_dict())
    missing, unexpected = sorted(expected - set(out)), sorted(set(out) - expected)
    if missing or unexpected:
        raise ValueError(f"DCLR checkpoint backbone keys do not match R(2+1)D layers {list(wanted)}: "
                         f"missing {missing[:10]}, unexpected {unexpected[:10]}")
    return out


def load_dclr_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Strictly load a DCLR pre-training checkpoint (released layout or ours) into ``DCLR`` (whole state) or
    into an ``R2Plus1DClassifier`` (query-encoder backbone only, depth checked)."""
    from actionray.models.r2plus1d import R2Plus1DClassifier

    checkpoint = read_checkpoint(path)
    if isinstance(model, R2Plus1DClassifier):
        model.backbone.load_state_dict(backbone_state_from_pretraining(checkpoint, model.backbone.layers))
        return
    if not isinstance(model, DCLR):
        raise TypeError(f"DCLR checkpoint {path}: cannot load into {type(model).__name__} "
                        "(expected DCLR or R2Plus1DClassifier)")
    state = _state_dict_of(checkpoint)
    released = any(re.match(r"^encoder_[qk]\.(stem|layer[1-4]|f(vv|vs|vd|sv|dv))\.", k) for k in state)
    result = model.load_state_dict(convert_dclr_reference_state(checkpoint) if released else state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"DCLR checkpoint {path}: missing keys {sorted(result.missing_keys)[:10]}, "
                         f"unexpected keys {sorted(result.unexpected_keys)[:10]}")
