"""Plain-PyTorch Mamba mixer: scan == recurrence, causality, mamba_ssm init and key names, CUDA kernel parity."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from actionray.models.mamba import Mamba, mamba_ssm_available, selective_scan, selective_scan_reference


def _scan_inputs(batch=2, channels=3, states=4, length=5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, channels, length, generator=g, dtype=dtype)
    delta = torch.randn(batch, channels, length, generator=g, dtype=dtype)
    A = -torch.rand(channels, states, generator=g, dtype=dtype) - 0.1
    B = torch.randn(batch, states, length, generator=g, dtype=dtype)
    C = torch.randn(batch, states, length, generator=g, dtype=dtype)
    D = torch.randn(channels, generator=g, dtype=dtype)
    z = torch.randn(batch, channels, length, generator=g, dtype=dtype)
    bias = torch.randn(channels, generator=g, dtype=dtype)
    return u, delta, A, B, C, D, z, bias


def _scalar_recurrence(u, delta, A, B, C, D, z, bias):
    """Element by element: h = exp(dt*a) h + dt*b*u; y = c.h + d*u; y *= silu(z)."""
    out = torch.zeros_like(u)
    for b in range(u.shape[0]):
        for d in range(u.shape[1]):
            h = [0.0] * A.shape[1]
            for t in range(u.shape[2]):
                dt = math.log1p(math.exp(float(delta[b, d, t] + bias[d])))
                y = 0.0
                for n in range(A.shape[1]):
                    h[n] = math.exp(dt * float(A[d, n])) * h[n] + dt * float(B[b, n, t]) * float(u[b, d, t])
                    y += float(C[b, n, t]) * h[n]
                y += float(D[d]) * float(u[b, d, t])
                zz = float(z[b, d, t])
                out[b, d, t] = y * zz / (1 + math.exp(-zz))
    return out


def test_selective_scan_equals_the_elementwise_recurrence():
    u, delta, A, B, C, D, z, bias = _scan_inputs()
    y = selective_scan_reference(u, delta, A, B, C, D, z, delta_bias=bias)
    assert torch.allclose(y, _scalar_recurrence(u, delta, A, B, C, D, z, bias), atol=1e-10)


def test_selective_scan_gradients_pass_float64_gradcheck():
    u, delta, A, B, C, D, z, bias = _scan_inputs(batch=1, channels=2, states=2, length=3)
    inputs = tuple(t.clone().requires_grad_(True) for t in (u, delta, A, B, C, D, z, bias))

    def scan(u, delta, A, B, C, D, z, bias):
        return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias=bias)

    assert torch.autograd.gradcheck(scan, inputs)


def test_mamba_forward_equals_step_by_step_recurrence():
    torch.manual_seed(0)
    mixer = Mamba(d_model=24).double()
    x = torch.randn(2, 7, 24, dtype=torch.float64)
    conv_state, ssm_state = mixer.initial_states(2, dtype=torch.float64)
    steps = []
    for t in range(x.shape[1]):
        y, conv_state, ssm_state = mixer.step(x[:, t], conv_state, ssm_state)
        steps.append(y)
    assert torch.allclose(mixer(x), torch.stack(steps, dim=1), atol=1e-10)


def test_mamba_is_causal_in_time():
    torch.manual_seed(0)
    mixer = Mamba(d_model=16)
    x = torch.randn(1, 6, 16)
    changed = x.clone()
    changed[:, 4] += 1.0
    delta = (mixer(changed) - mixer(x)).abs().amax(dim=-1)[0]
    assert (delta[:4] == 0).all() and (delta[4:] > 0).all()


def test_mamba_init_follows_mamba_ssm():
    torch.manual_seed(0)
    mixer = Mamba(d_model=100)
    assert (mixer.d_inner, mixer.dt_rank, mixer.d_state, mixer.d_conv) == (200, 7, 16, 4)
    assert torch.allclose(-torch.exp(mixer.A_log), -torch.arange(1, 17.0).expand(200, 16))
    assert torch.equal(mixer.D, torch.ones(200))
    dt = F.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001 and dt.max() / dt.min() > 10  # log-uniform spread
    assert mixer.dt_proj.weight.abs().max() <= 7 ** -0.5
    assert mixer.in_proj.bias is None and mixer.out_proj.bias is None and mixer.conv1d.bias is not None


def test_state_dict_keys_match_mamba_ssm():
    assert set(Mamba(d_model=16).state_dict()) == {
        "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias",
        "A_log", "D", "out_proj.weight"}


def test_cpu_inputs_use_the_plain_pytorch_scan():
    u, delta, A, B, C, D, z, bias = (t.float() for t in _scan_inputs())
    assert torch.equal(selective_scan(u, delta, A, B, C, D, z, delta_bias=bias),
                       selective_scan_reference(u, delta, A, B, C, D, z, delta_bias=bias))


@pytest.mark.skipif(not (torch.cuda.is_available() and mamba_ssm_available()),
                    reason="needs CUDA and the mamba_ssm kernel")
def test_cuda_kernel_agrees_with_the_plain_pytorch_scan():
    u, delta, A, B, C, D, z, bias = (t.float().cuda() for t in _scan_inputs(batch=2, channels=64, states=16,
                                                                              length=8))
    kernel = selective_scan(u, delta, A, B, C, D, z, delta_bias=bias)
    plain = selective_scan_reference(u, delta, A, B, C, D, z, delta_bias=bias)
    assert torch.allclose(kernel, plain, atol=1e-4, rtol=1e-3)


def test_scan_stays_in_float32_under_bf16_autocast():
    u, delta, A, B, C, D, z, bias = (t.float() for t in _scan_inputs())
    plain = selective_scan_reference(u, delta, A, B, C, D, z, delta_bias=bias)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = selective_scan_reference(u, delta, A, B, C, D, z, delta_bias=bias)
    assert autocast.dtype == torch.float32 and torch.equal(autocast, plain)
