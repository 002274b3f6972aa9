"""TCPNet: reference parameter counts, identity-at-init attention, the truncated iSQRT, and checkpoint loading."""

from __future__ import annotations

import pytest
import torch

from actionray.models import build_model
from actionray.models.tcp import (
    TemporalAttention,
    TemporalAttentiveCovariancePooling,
    TemporalChannelAttention,
    TemporalSpatialAttention,
    newton_schulz_sqrtm,
    temporal_covariance_pooling,
    triu_vector,
)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return ((approx - exact).norm(dim=(1, 2)) / exact.norm(dim=(1, 2))).mean().item()


def _wishart(n_mats: int, d: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.randn(n_mats, d, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return g @ g.transpose(1, 2) / n


def _eig_sqrt(spd: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(spd)
    return v @ torch.diag_embed(w.clamp_min(0).sqrt()) @ v.transpose(1, 2)


def test_tsn_r50_tcp_matches_reference_parameter_counts():
    with torch.device("meta"):  # shapes only: no memory, no weight initialisation work
        model = build_model("tcp", num_classes=400, num_segments=8, backbone="resnet50")
    assert _count(model) == 27_632_208
    assert _count(model.TCP) == 821_376
    assert model.new_fc.in_features == 8256


def test_temporal_conv_kernel_follows_segments_and_keeps_length_for_odd_t():
    for t, kernel in ((8, 5), (16, 9), (7, 4), (3, 2)):
        att = TemporalAttention(16, t)
        assert att.kernel == kernel
        torch.nn.init.normal_(att.conv_1d.weight, std=0.1)
        y = torch.randn(2 * t, 16, 3, 3)
        assert att.temporal_conv(y).shape == y.shape


def test_attention_module_is_identity_at_init():
    torch.manual_seed(0)
    att = TemporalAttention(32, 8)
    x = torch.relu(torch.randn(16, 32, 5, 5))  # the module sees post-ReLU reductions
    assert torch.equal(att(x), x)


def test_attention_module_mixes_frames_once_trained():
    torch.manual_seed(0)
    att = TemporalAttention(32, 8).eval()  # eval: BN batch statistics would couple the videos
    torch.nn.init.normal_(att.conv_1d.weight, std=0.1)
    torch.nn.init.ones_(att.TSA.norm.weight)
    x = torch.relu(torch.randn(16, 32, 5, 5))
    out = att(x)
    assert not torch.allclose(out, x)
    x2 = x.clone()
    x2[3] += 1.0  # frame 3 of video 0 changes: video 1's output must not
    out2 = att(x2)
    assert torch.allclose(out2[8:], out[8:])
    assert not torch.allclose(out2[:8], out[:8])


def test_spatial_attention_uses_only_current_and_previous_frames():
    torch.manual_seed(0)
    tsa = TemporalSpatialAttention(16, 6).eval()
    torch.nn.init.ones_(tsa.norm.weight)
    x = torch.randn(6, 16, 4, 4)
    later = x.clone()
    later[4:] = torch.randn(2, 16, 4, 4)
    assert torch.allclose(tsa(later)[:4], tsa(x)[:4])
    assert not torch.allclose(tsa(later)[4:], tsa(x)[4:])


def test_channel_attention_gates_come_from_circular_frame_differences():
    torch.manual_seed(0)
    tca = TemporalChannelAttention(8, 4)
    static = torch.randn(1, 8, 3, 3).repeat(4, 1, 1, 1)  # no change over time: both differences are zero
    assert torch.allclose(tca(static), torch.full((4, 8, 1, 1), 0.5))  # sigmoid(0) with zero-initialised biases
    moved = static.clone()
    moved[3] += 5.0  # only the last frame changes; frames 0 (t-1) and 1 (t-2) see it through the wrap-around
    gates = tca(moved).flatten(1)
    assert not torch.allclose(gates[0], gates[2]) and not torch.allclose(gates[1], gates[2])
    assert torch.allclose(gates[2], torch.full((8,), 0.5))  # frame 2 compares only with frames 1 and 0


def test_covariance_pools_all_frames_and_positions_of_a_video():
    torch.manual_seed(0)
    x = torch.randn(2 * 4, 6, 3, 5, dtype=torch.float64)  # B=2, T=4, d=6, h=3, w=5
    sigma = temporal_covariance_pooling(x, num_segments=4)
    video1 = x[4:].permute(1, 0, 2, 3).reshape(6, -1)  # (d, T*h*w)
    assert sigma.shape == (2, 6, 6)
    assert torch.allclose(sigma[1], torch.cov(video1, correction=0))


def test_newton_schulz_converges_to_eigendecomposition_sqrt():
    spd = _wishart(3, 32, 128)
    assert _relative_error(newton_schulz_sqrtm(spd, iterations=20), _eig_sqrt(spd)) < 1e-6


def test_three_newton_schulz_iterations_keep_the_reference_truncation_error():
    # Reference A.5: Wishart n=512, d=128 -> 0.686 relative error at 3 iterations (a spectral compression).
    spd = _wishart(2, 128, 512)
    errors = [_relative_error(newton_schulz_sqrtm(spd, k), _eig_sqrt(spd)) for k in (1, 2, 3, 5)]
    assert errors[2] == pytest.approx(0.686, abs=0.01)
    assert errors == sorted(errors, reverse=True)


def test_one_newton_schulz_iteration_is_the_reference_polynomial():
    spd = _wishart(2, 8, 64)
    trace = spd.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None]
    a = spd / (trace + 1e-5)
    expected = a @ (0.5 * (3 * torch.eye(8, dtype=spd.dtype) - a)) * trace.sqrt()
    assert torch.allclose(newton_schulz_sqrtm(spd, iterations=1), expected)


def test_covariance_and_isqrt_stay_float32_under_bf16_autocast():
    head = TemporalAttentiveCovariancePooling(in_dim=32, num_segments=2, reduced_dim=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(torch.randn(4, 32, 3, 3))
    assert out.dtype == torch.float32 and out.shape == (2, 36)


def test_triu_vector_is_row_major_upper_triangle_with_8256_entries_for_128():
    m = torch.arange(9.0).reshape(1, 3, 3)
    assert triu_vector(m).tolist() == [[0.0, 1.0, 2.0, 4.0, 5.0, 8.0]]
    assert triu_vector(torch.zeros(2, 128, 128)).shape == (2, 8256)


def test_resnet18_at_112_forward_backward_reaches_backbone_and_attention():
    torch.manual_seed(0)
    model = build_model("tcp", num_classes=5, num_segments=4, backbone="resnet18")
    assert model.frames_per_segment == 1
    assert model.TCP.layer_reduce1.in_channels == 512 and model.TCP.layer_reduce1.out_channels == 256
    x = torch.randn(1, 4, 3, 112, 112)
    logits, feats = model(x, return_features=True)
    assert logits.shape == (1, 5) and feats.shape == (1, 4, 512)
    logits.logsumexp(dim=1).sum().backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    assert model.TCP.TCP_att.conv_1d.weight.grad.abs().sum() > 0  # zero-initialised, but it receives gradient


def test_build_model_passes_reduced_dim_and_iterations():
    model = build_model("tcp", num_classes=3, num_segments=2, backbone="resnet18",
                        tcp_reduced_dim=16, tcp_iterations=5)
    assert model.TCP.iterations == 5
    assert model.new_fc.in_features == 16 * 17 // 2
    assert model(torch.randn(1, 2, 3, 64, 64)).shape == (1, 3)


def test_partial_bn_freezes_tcp_batchnorms_but_not_the_stem():
    model = build_model("tcp", num_classes=3, num_segments=2, backbone="resnet18", partial_bn=True).train()
    assert model.backbone.bn1.training and model.backbone.bn1.weight.requires_grad
    assert not model.TCP.layer_reduce_bn1.training and not model.TCP.layer_reduce_bn1.weight.requires_grad


def _reference_checkpoint(model: torch.nn.Module, path, old_style: bool = False) -> dict[str, torch.Tensor]:
    """Save ``model`` the way the TCPNet repo does: {'state_dict': {'module.<reference name>': ...}, ...}."""
    from actionray.models.tcp import reference_key_candidates

    pick = 1 if old_style else 0
    state = {"module." + reference_key_candidates(k)[pick if k.startswith("TCP.") else 0]: v
             for k, v in model.state_dict().items()}
    torch.save({"epoch": 50, "arch": "resnet50", "state_dict": state, "best_prec1": 72.4}, path)
    return state


def _trained_looking_tcp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("tcp", num_classes=3, num_segments=4, backbone="resnet18", tcp_reduced_dim=16)
    with torch.no_grad():  # leave the identity init so a wrong key mapping changes the output
        for p in model.TCP.TCP_att.parameters():
            p.normal_(std=0.05)
    return model.eval()


def test_reference_layout_checkpoint_loads_strictly_and_reproduces_outputs(tmp_path):
    from actionray.models import load_reference_checkpoint

    source, target = _trained_looking_tcp(0), _trained_looking_tcp(1)
    state = _reference_checkpoint(source, tmp_path / "tcp.pth.tar")
    for name in ("module.base_model.conv1.weight", "module.base_model.layer4.1.bn2.running_var",
                 "module.base_model.TCP.layer_reduce_bn2.weight", "module.base_model.TCP.TCP_att.TSA.conv_phi_1.bias",
                 "module.base_model.TCP.TCP_att.TCA.g2.weight", "module.base_model.TCP.TCP_att.conv_1d.weight",
                 "module.new_fc.weight"):  # names as in the TCPNet repo (ops/TCP, ops/models.py)
        assert name in state
    load_reference_checkpoint(target, tmp_path / "tcp.pth.tar", layout="tcp")
    x = torch.randn(1, 4, 3, 64, 64)
    assert torch.equal(target(x), source(x))


def test_older_checkpoint_names_inside_layer4_are_mapped(tmp_path):
    from actionray.models import load_reference_checkpoint

    source, target = _trained_looking_tcp(0), _trained_looking_tcp(1)
    state = _reference_checkpoint(source, tmp_path / "old.pth.tar", old_style=True)
    assert "module.base_model.layer4.iSQRT.att_module.sp_att.conv_theta.weight" in state
    assert "module.base_model.layer4.iSQRT.att_module.conv_1d.weight" in state
    load_reference_checkpoint(target, tmp_path / "old.pth.tar")  # layout auto-detected
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))


def test_reference_checkpoint_missing_a_head_key_is_rejected_by_name(tmp_path):
    from actionray.models import load_reference_checkpoint

    model = _trained_looking_tcp(0)
    path = tmp_path / "partial.pth.tar"
    state = _reference_checkpoint(model, path)
    del state["module.base_model.TCP.TCP_att.TCA.g1.weight"]
    torch.save({"state_dict": state}, path)
    with pytest.raises(ValueError, match="TCP_att.TCA.g1.weight"):
        load_reference_checkpoint(model, path, layout="tcp")
