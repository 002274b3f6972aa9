"""TCPNet: temporal-attentive covariance pooling (TCP) on a TSN ResNet (Gao et al., NeurIPS 2021).

Pipeline per video: frames -> ResNet (layer4 stride 1) -> 1x1 reductions C4 -> 256 -> d (d = 128) -> temporal
attention (TSA, TCA, temporal conv with residual; the identity at init) -> one covariance over all T*h*w
positions -> truncated iSQRT (coupled Newton-Schulz, 3 iterations) -> upper triangle (d(d+1)/2 = 8256) ->
dropout -> linear classifier. The head pools over time itself, so there is no segment consensus.

Module and attribute names follow the TCPNet repository (``TCP.layer_reduce1``, ``TCP_att.TSA.conv_phi_1``,
``new_fc`` ...) so its checkpoints map onto this model by prefixes only (``reference_key_candidates``, used
by ``actionray.models.checkpoints`` for the ``tcp`` layout).

Fixed reference bugs (see docs/models.md): the temporal-conv padding chosen by comparing PyTorch version
strings (wrong on PyTorch >= 1.10: the sequence grows and the reshape fails) is replaced by circular padding
that keeps length T, for every T (odd T gives an even kernel; padding is then one frame longer on the left).
Test-time view fusion in the reference is the maximum of per-view softmax scores over the 30 views, not the
mean: set ``eval.combine: max`` to reproduce it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actionray.models.backbones import PartialBNMixin, build_resnet, feature_dim
from actionray.models.tsn import init_classifier

__all__ = [
    "TCPNet",
    "build_tcp",
    "TemporalAttentiveCovariancePooling",
    "TemporalAttention",
    "TemporalSpatialAttention",
    "TemporalChannelAttention",
    "temporal_covariance_pooling",
    "newton_schulz_sqrtm",
    "triu_vector",
    "reference_key_candidates",
]

REDUCE_INNER_DIM = 256  # fixed first reduction width in the reference (dim_in -> 256 -> d)
TRACE_EPS = 1e-5  # added to the trace before dividing (pre-normalisation only, as in the reference)

# Older TCPNet checkpoints kept the head inside layer4 with other attention names (repo ops/keys_mapping.py):
# our name -> old name, first match wins.
_OLD_HEAD_NAMES: list[tuple[str, str]] = [
    ("TCP_att.TCA.g1.", "att_module.conv_1."),
    ("TCP_att.TCA.g2.", "att_module.conv_2."),
    ("TCP_att.TSA.conv_phi_1.", "att_module.sp_att.conv_theta."),
    ("TCP_att.TSA.conv_phi_2.", "att_module.sp_att.conv_phi."),
    ("TCP_att.TSA.conv_phi0.", "att_module.sp_att.conv_g."),
    ("TCP_att.TSA.", "att_module.sp_att."),
    ("TCP_att.", "att_module."),
]


def reference_key_candidates(key: str) -> list[str]:
    """TCPNet-repo names for one of our keys (after the loader strips DataParallel's ``module.``).

    Layout: TSN wrapper ``base_model.`` (torchvision ResNet names, head at ``base_model.TCP.``), classifier
    ``new_fc.`` (``base_model.fc.`` when trained with dropout 0); older checkpoints: ``base_model.layer4.iSQRT.``.
    """
    if key.startswith("new_fc."):
        return [key, "base_model.fc." + key[len("new_fc."):]]
    if key.startswith("backbone."):
        return ["base_model." + key[len("backbone."):]]
    if key.startswith("TCP."):
        head = key[len("TCP."):]
        old = next((o + head[len(n):] for n, o in _OLD_HEAD_NAMES if head.startswith(n)), head)
        return ["base_model." + key, "base_model.layer4.iSQRT." + old]
    return [key]


def temporal_covariance_pooling(x: Tensor, num_segments: int) -> Tensor:
    """Biased covariance over all T*h*w positions of each video: (B*T, d, h, w) -> (B, d, d)."""
    bt, d, h, w = x.shape
    if bt % num_segments:
        raise ValueError(f"temporal_covariance_pooling: {bt} frames is not a multiple of num_segments={num_segments}")
    # (B, T, d, h, w) -> (B, d, T*h*w); centring directly instead of the reference's dense (M, M) centring matrix
    feats = x.reshape(bt // num_segments, num_segments, d, h * w).transpose(1, 2).reshape(-1, d, num_segments * h * w)
    centred = feats - feats.mean(dim=2, keepdim=True)
    return centred @ centred.transpose(1, 2) / centred.shape[2]


def newton_schulz_sqrtm(sigma: Tensor, iterations: int = 3) -> Tensor:
    """Truncated iSQRT of SPD matrices (B, d, d) -> (B, d, d), exactly as the reference truncates it.

    Trace pre-normalisation, ``iterations`` coupled Newton-Schulz steps (the last forms only Y), then
    multiplication by sqrt(trace). At 3 iterations this is a spectral compression, far from the exact root
    (relative error ~0.5-0.7 for trace-normalised eigenvalues ~1/d); kept as is because TCPNet is trained with it.
    """
    if iterations < 1:
        raise ValueError(f"newton_schulz_sqrtm: iterations must be >= 1, got {iterations}")
    d = sigma.shape[-1]
    eye3 = 3.0 * torch.eye(d, dtype=sigma.dtype, device=sigma.device).expand_as(sigma)
    trace = sigma.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]
    a = sigma / (trace + TRACE_EPS)
    if iterations == 1:
        y = a @ (0.5 * (eye3 - a))
    else:
        z = 0.5 * (eye3 - a)
        y = a @ z
        for _ in range(iterations - 2):
            t = 0.5 * (eye3 - z @ y)
            y, z = y @ t, t @ z
        y = 0.5 * y @ (eye3 - z @ y)
    return y * trace.sqrt()


def triu_vector(m: Tensor) -> Tensor:
    """Upper triangle incl. the diagonal, row-major: (B, d, d) -> (B, d(d+1)/2)."""
    d = m.shape[-1]
    rows, cols = torch.triu_indices(d, d, device=m.device)
    return m[:, rows, cols]


class TemporalSpatialAttention(nn.Module):
    """TSA: spatial attention of frame t from frames t-1 and t-2 re-aggregates frame t; identity at init."""

    def __init__(self, dim: int, num_segments: int) -> None:
        super().__init__()
        self.num_segments = num_segments
        self.conv_phi_1 = nn.Conv2d(dim, dim, 1)  # frame t-1: one row of the affinity per output position
        self.conv_phi_2 = nn.Conv2d(dim, dim, 1)  # frame t-2: the positions the softmax runs over
        self.conv_phi0 = nn.Conv2d(dim, dim, 1)  # frame t: the values re-aggregated
        self.norm = nn.BatchNorm2d(dim)
        for conv in (self.conv_phi_1, self.conv_phi_2, self.conv_phi0):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        # zero BN scale makes the residual branch vanish at init
        nn.init.zeros_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B*T, d, h, w) -> (B*T, d, h, w)."""
        bt, d, h, w = x.shape
        frames = x.reshape(-1, self.num_segments, d, h, w)
        # replicate padding at the start: frame 0 stands in for missing earlier frames
        prev1 = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        prev2 = torch.cat([prev1[:, :1], prev1[:, :-1]], dim=1)
        p = self.conv_phi_1(prev1.reshape(bt, d, h, w)).flatten(2)  # (B*T, d, hw)
        q = self.conv_phi_2(prev2.reshape(bt, d, h, w)).flatten(2)
        v = self.conv_phi0(x).flatten(2)
        att = torch.softmax(p.transpose(1, 2) @ q * d**-0.5, dim=2)  # (B*T, hw, hw), normalised over b
        out = (v @ att.transpose(1, 2)).reshape(bt, d, h, w)  # O[:, a] = sum_b att[a, b] V[:, b]
        return x + self.norm(out)


class TemporalChannelAttention(nn.Module):
    """TCA: channel gates from circular frame differences of the pooled input (an expanding 1x1 MLP d->4d->d)."""

    def __init__(self, dim: int, num_segments: int) -> None:
        super().__init__()
        self.num_segments = num_segments
        self.g1 = nn.Conv2d(dim, 4 * dim, 1)
        self.g2 = nn.Conv2d(4 * dim, dim, 1)
        for conv in (self.g1, self.g2):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def gate(self, u: Tensor) -> Tensor:
        """Shared gate sigmoid(g2 ReLU(g1 u)): (N, d, 1, 1) -> (N, d, 1, 1)."""
        return torch.sigmoid(self.g2(F.relu(self.g1(u))))

    def forward(self, x: Tensor) -> Tensor:
        """Channel weights (B*T, d, 1, 1) computed from x (B*T, d, h, w)."""
        bt, d = x.shape[:2]
        pooled = x.mean(dim=(2, 3)).reshape(-1, self.num_segments, d)
        diff1 = pooled - pooled.roll(1, dims=1)  # wraps: frame 0 is compared with frame T-1
        diff2 = 0.5 * (pooled - pooled.roll(2, dims=1))
        gate1, gate2 = (self.gate(diff.reshape(bt, d, 1, 1)) for diff in (diff1, diff2))
        return 0.5 * (gate1 + gate2)


class TemporalAttention(nn.Module):
    """out = ReLU(X + TConv(TSA(X) * TCA(X))): the whole module is the identity at init (post-ReLU X)."""

    def __init__(self, dim: int, num_segments: int) -> None:
        super().__init__()
        self.num_segments = num_segments
        self.kernel = num_segments // 2 + 1  # 5 for T = 8, 9 for T = 16 (reference)
        self.TSA = TemporalSpatialAttention(dim, num_segments)
        self.TCA = TemporalChannelAttention(dim, num_segments)
        self.conv_1d = nn.Conv3d(dim, dim, kernel_size=(self.kernel, 1, 1))
        nn.init.zeros_(self.conv_1d.weight)  # weight and bias zero: the residual branch starts at 0
        nn.init.zeros_(self.conv_1d.bias)

    def temporal_conv(self, y: Tensor) -> Tensor:
        """Circular temporal conv keeping length T: (B*T, d, h, w) -> (B*T, d, h, w)."""
        bt, d, h, w = y.shape
        seq = y.reshape(-1, self.num_segments, d, h, w).transpose(1, 2)  # (B, d, T, h, w)
        left = (self.kernel - 1) // 2
        seq = F.pad(seq, (0, 0, 0, 0, left, self.kernel - 1 - left), mode="circular")
        return self.conv_1d(seq).transpose(1, 2).reshape(bt, d, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """(B*T, d, h, w) -> (B*T, d, h, w)."""
        y = self.TSA(x) * self.TCA(x)  # TCA gates come from the module input X, not from the TSA output
        return F.relu(x + self.temporal_conv(y))


class TemporalAttentiveCovariancePooling(nn.Module):
    """The TCP head: (B*T, C4, h, w) layer4 maps -> (B, d(d+1)/2) normalised covariance vectors."""

    def __init__(self, in_dim: int, num_segments: int, reduced_dim: int = 128, iterations: int = 3) -> None:
        super().__init__()
        self.num_segments = num_segments
        self.iterations = iterations
        self.layer_reduce1 = nn.Conv2d(in_dim, REDUCE_INNER_DIM, 1, bias=False)
        self.layer_reduce_bn1 = nn.BatchNorm2d(REDUCE_INNER_DIM)
        self.layer_reduce2 = nn.Conv2d(REDUCE_INNER_DIM, reduced_dim, 1, bias=False)
        self.layer_reduce_bn2 = nn.BatchNorm2d(reduced_dim)
        for conv in (self.layer_reduce1, self.layer_reduce2):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        self.TCP_att = TemporalAttention(reduced_dim, num_segments)
        self.out_dim = reduced_dim * (reduced_dim + 1) // 2

    def reduce(self, x: Tensor) -> Tensor:
        """Per-frame 1x1 reductions: (B*T, C4, h, w) -> (B*T, d, h, w), post-ReLU."""
        x = F.relu(self.layer_reduce_bn1(self.layer_reduce1(x)))
        return F.relu(self.layer_reduce_bn2(self.layer_reduce2(x)))

    def forward(self, x: Tensor) -> Tensor:
        """(B*T, C4, h, w) -> (B, d(d+1)/2)."""
        x = self.TCP_att(self.reduce(x))
        # float32 even under autocast: trace-normalised eigenvalues are ~1/d, below bf16's resolution near 1
        amp_off = torch.autocast(x.device.type, enabled=False) if torch.amp.is_autocast_available(x.device.type) \
            else contextlib.nullcontext()  # e.g. the meta device used to count MACs
        with amp_off:
            sigma = temporal_covariance_pooling(x.float(), self.num_segments)
            return triu_vector(newton_schulz_sqrtm(sigma, self.iterations))


class TCPNet(PartialBNMixin, nn.Module):
    """TSN ResNet (layer4 stride 1) + TCP head + dropout + classifier: (B, T, 3, H, W) -> logits (B, classes).

    ``return_features=True`` also gives per-segment features (B, T, C4): layer4 maps average-pooled per frame,
    the same per-frame descriptor as TSN's (the TCP vector itself is per video, so it cannot serve as one).
    """

    frames_per_segment = 1

    def __init__(self, num_classes: int, num_segments: int, *, backbone: str = "resnet50",
                 pretrained: str | Path | None = None, dropout: float = 0.5, partial_bn: bool = False,
                 fc_init_std: float = 0.001, reduced_dim: int = 128, iterations: int = 3) -> None:
        super().__init__()
        self.num_segments = num_segments
        self.backbone = build_resnet(backbone, pretrained=pretrained, layer4_stride=1)
        # ResNet-18/34 (512-d layer4): the same 512 -> 256 -> d reductions; the 256 inner width stays fixed.
        self.TCP = TemporalAttentiveCovariancePooling(feature_dim(backbone), num_segments, reduced_dim, iterations)
        self.dropout = nn.Dropout(dropout)
        self.new_fc = nn.Linear(self.TCP.out_dim, num_classes)
        init_classifier(self.new_fc, fc_init_std)
        self.partial_bn = partial_bn
        self.train()

    def partial_bn_keep(self) -> nn.Module:
        """Partial BN keeps only the stem BN trainable; as in the reference the TCP BNs are frozen too."""
        return self.backbone.bn1

    def feature_maps(self, frames: Tensor) -> Tensor:
        """Backbone up to layer4: (N, 3, H, W) -> (N, C4, H/16, W/16)."""
        net = self.backbone
        x = net.maxpool(net.relu(net.bn1(net.conv1(frames))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """(B, T, 3, H, W) -> logits (B, classes) [, per-segment features (B, T, C4)]."""
        if x.dim() != 5 or x.shape[1] != self.num_segments:
            raise ValueError(f"TCPNet expects (B, {self.num_segments}, 3, H, W), got {tuple(x.shape)}")
        b, t = x.shape[:2]
        maps = self.feature_maps(x.flatten(0, 1))
        logits = self.new_fc(self.dropout(self.TCP(maps)))
        if return_features:
            return logits, maps.mean(dim=(2, 3)).reshape(b, t, -1)
        return logits


def build_tcp(*, num_classes: int, num_segments: int, backbone: str = "resnet50",
              pretrained: str | Path | None = None, dropout: float = 0.5, partial_bn: bool = False,
              consensus: str = "logit", fc_init_std: float = 0.001, input_size: int = 224,
              tcp_reduced_dim: int = 128, tcp_iterations: int = 3) -> TCPNet:
    """TCPNet builder for the registry; ``consensus`` and ``input_size`` are accepted for the shared signature
    and unused (the head pools over time itself; any size whose layer4 map is non-empty works)."""
    return TCPNet(num_classes, num_segments, backbone=backbone, pretrained=pretrained, dropout=dropout,
                  partial_bn=partial_bn, fc_init_std=fc_init_std, reduced_dim=tcp_reduced_dim,
                  iterations=tcp_iterations)
