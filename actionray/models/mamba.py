"""A Mamba (v1) mixer in plain PyTorch, state_dict-compatible with ``mamba_ssm.modules.mamba_simple.Mamba``.

Token path (Gu & Dao 2023): in_proj -> (u, z); u <- SiLU(causal depthwise conv1d(u)); x_proj(u) -> (dt_low, B, C);
dt = softplus(dt_proj(dt_low)); selective scan h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, y_t = C_t . h_t + D u_t;
y <- y * SiLU(z); out_proj. The scan runs sequentially over the (short) sequence axis; on CUDA the fused
``mamba_ssm`` kernel is used when that package is importable (same math).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Mamba", "selective_scan", "selective_scan_reference", "mamba_ssm_available"]


def mamba_ssm_available() -> bool:
    """True when the ``mamba_ssm`` CUDA selective-scan kernel can be imported."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or a CUDA extension that fails to load
        return False
    return True


def selective_scan_reference(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                             C: torch.Tensor, D: torch.Tensor, z: torch.Tensor | None = None,
                             delta_bias: torch.Tensor | None = None, delta_softplus: bool = True) -> torch.Tensor:
    """Selective scan in plain PyTorch, sequential over L.

    u, delta, z: (B, Dm, L); A: (Dm, N); B, C: (B, N, L); D, delta_bias: (Dm,) -> y (B, Dm, L).
    Computed in at least float32 (the state recurrence loses accuracy in half precision), returned in u's dtype.
    """
    with torch.autocast(device_type=u.device.type, enabled=False):  # autocast would run the einsum in half
        return _scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def _scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, D: torch.Tensor,
          z: torch.Tensor | None, delta_bias: torch.Tensor | None, delta_softplus: bool) -> torch.Tensor:
    dtype = u.dtype
    work = torch.promote_types(dtype, torch.float32)
    u, delta, A, B, C, D = (t.to(work) for t in (u, delta, A, B, C, D))
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    decay = torch.exp(delta.unsqueeze(-1) * A[None, :, None, :])  # (B, Dm, L, N)
    drive = (delta * u).unsqueeze(-1) * B.transpose(1, 2)[:, None]  # (B, Dm, L, N)
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        state = decay[:, :, t] * state + drive[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", state, C[:, :, t]))
    y = torch.stack(ys, dim=2) + u * D[:, None]
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(dtype)


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor, z: torch.Tensor | None = None, delta_bias: torch.Tensor | None = None,
                   delta_softplus: bool = True) -> torch.Tensor:
    """Dispatch: mamba_ssm's fused kernel for CUDA inputs when installed, else the plain-PyTorch scan."""
    if u.is_cuda and mamba_ssm_available():
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        bias = delta_bias.float() if delta_bias is not None else None
        return selective_scan_fn(u, delta, A, B, C, D.float(), z=z, delta_bias=bias, delta_softplus=delta_softplus)
    return selective_scan_reference(u, delta, A, B, C, D, z=z, delta_bias=delta_bias,
                                    delta_softplus=delta_softplus)


class Mamba(nn.Module):
    """Bare Mamba v1 mixer (no norm, no residual): (B, L, d_model) -> (B, L, d_model), causal in L.

    Defaults and init follow mamba_ssm v1.2: d_state 16, d_conv 4, expand 2, dt_rank ceil(d_model/16),
    A = -[1..d_state] stored as A_log, D = 1, softplus(dt bias) log-uniform in [dt_min, dt_max],
    dt_proj weight U(+-dt_rank^-0.5), other linears PyTorch default.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | None = None, dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, conv_bias: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank if dt_rank is not None else math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1,
                                bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        self._init_dt(dt_min, dt_max, dt_init_floor)

    def _init_dt(self, dt_min: float, dt_max: float, floor: float) -> None:
        """dt_proj: weight U(+-dt_rank^-0.5); bias = inverse softplus of dt ~ log-uniform[dt_min, dt_max]."""
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)

    def _ssm_inputs(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """u (B, L, d_inner) -> delta (B, d_inner, L) before bias/softplus, B and C (B, d_state, L)."""
        dt, b, c = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight)  # the bias enters the scan as delta_bias, as in mamba_ssm
        return delta.transpose(1, 2), b.transpose(1, 2), c.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, d_model) -> (B, L, d_model)."""
        length = x.shape[1]
        u, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, d_inner) each
        u = F.silu(self.conv1d(u.transpose(1, 2))[..., :length])  # causal: keep the first L outputs
        delta, b, c = self._ssm_inputs(u.transpose(1, 2))
        A = -torch.exp(self.A_log.float())
        y = selective_scan(u, delta, A, b, c, self.D, z=z.transpose(1, 2), delta_bias=self.dt_proj.bias,
                           delta_softplus=True)
        return self.out_proj(y.transpose(1, 2))

    def step(self, x: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One token (B, d_model) with conv_state (B, d_inner, d_conv) and ssm_state (B, d_inner, d_state)
        -> (output (B, d_model), new conv_state, new ssm_state): the recurrent form of ``forward``."""
        u, z = self.in_proj(x).chunk(2, dim=-1)
        conv_state = torch.cat([conv_state[:, :, 1:], u.unsqueeze(-1)], dim=-1)
        u = (conv_state * self.conv1d.weight[:, 0]).sum(-1)
        if self.conv1d.bias is not None:
            u = u + self.conv1d.bias
        u = F.silu(u)
        dt, b, c = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))  # (B, d_inner)
        A = -torch.exp(self.A_log.float())
        ssm_state = torch.exp(dt.unsqueeze(-1) * A) * ssm_state + (dt * u).unsqueeze(-1) * b.unsqueeze(1)
        y = (ssm_state * c.unsqueeze(1)).sum(-1) + self.D * u
        return self.out_proj(y * F.silu(z)), conv_state, ssm_state

    def initial_states(self, batch: int, device: torch.device | None = None,
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero (conv_state, ssm_state) for ``step``."""
        return (torch.zeros(batch, self.d_inner, self.d_conv, device=device, dtype=dtype),
                torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=dtype))
