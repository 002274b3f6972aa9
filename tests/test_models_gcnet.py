"""GCNet: reference parameter counts, GTM shapes/grouping/causality, gtm=False == TDN, the Mamba lr group."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from actionray.models import build_model, mamba_parameters
from actionray.models.gcnet import GlobalLocalTemporalModule


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _gcnet18(**options) -> nn.Module:
    torch.manual_seed(0)
    return build_model("gcnet", num_classes=5, num_segments=4, backbone="resnet18", input_size=112, **options)


@pytest.fixture(scope="module")
def gcnet_r50_meta() -> nn.Module:
    with torch.device("meta"):  # shapes only: 271M parameters would take 1 GB to materialise
        return build_model("gcnet", num_classes=101, num_segments=8, backbone="resnet50")


def test_gcnet_r50_parameter_count_matches_reference(gcnet_r50_meta):
    # The reference registers Mamba and conblock twice; parameters() de-duplicates, so the published count is
    # the unique parameters, which is what a single registration gives here.
    assert _count(gcnet_r50_meta) == 270_954_503


def test_gtm_parameter_breakdown_matches_reference(gcnet_r50_meta):
    gtm = gcnet_r50_meta.gtm
    mamba = gtm.mamba
    assert [_count(getattr(mamba, n)) for n in ("in_proj", "out_proj", "x_proj", "dt_proj", "conv1d")] == [
        157_351_936, 78_675_968, 5_318_656, 4_929_792, 62_720]
    assert (mamba.A_log.numel(), mamba.D.numel(), _count(mamba)) == (200_704, 12_544, 246_552_320)
    assert (_count(gtm.local), _count(gtm.local.se), _count(gtm.local.fuse)) == (124_800, 2_048, 49_280)
    assert (_count(gtm.reduce), _count(gtm.expand), _count(gtm.norm)) == (258, 384, 6_272)
    assert _count(gcnet_r50_meta) - _count(gtm) == 24_270_469


def test_gcnet_51_classes_count_matches_reference():
    with torch.device("meta"):
        model = build_model("gcnet", num_classes=51, num_segments=8, backbone="resnet50")
    assert _count(model) == 270_852_053


def test_mamba_parameters_are_exactly_the_gtm_mixer(gcnet_r50_meta):
    names = {n for n, p in gcnet_r50_meta.named_parameters() if ".mamba." in n}
    assert names == {f"gtm.mamba.{k}" for k in ("in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight",
                                                 "dt_proj.weight", "dt_proj.bias", "A_log", "D", "out_proj.weight")}
    assert sum(p.numel() for p in mamba_parameters(gcnet_r50_meta)) == 246_552_320


def test_layer_norm_and_mamba_width_follow_input_size():
    model = _gcnet18()
    assert model.gtm.norm.normalized_shape == (28 * 28,)
    assert model.gtm.mamba.d_model == 2 * 28 * 28 and model.gtm.mamba.dt_rank == 98


def test_another_input_size_at_run_time_is_a_clear_error():
    with pytest.raises(ValueError, match="built for a 28x28 layer1 map"):
        _gcnet18().eval()(torch.randn(1, 20, 3, 96, 96))


def test_gtm_off_is_exactly_tdn():
    torch.manual_seed(0)
    tdn = build_model("tdn", num_classes=5, num_segments=2, backbone="resnet18").eval()
    gcnet = build_model("gcnet", num_classes=5, num_segments=2, backbone="resnet18", gtm=False).eval()
    assert gcnet.gtm is None and _count(gcnet) == _count(tdn)
    gcnet.load_state_dict(tdn.state_dict())
    x = torch.randn(1, 10, 3, 64, 64)
    assert torch.equal(gcnet(x), tdn(x))


def test_gtm_shapes_and_blend_with_the_input():
    torch.manual_seed(0)
    gtm = GlobalLocalTemporalModule(channels=16, spatial_size=5)
    x = torch.randn(6, 16, 5, 5)  # B = 2, T = 3
    assert gtm.global_branch(x[:, :8], num_segments=3).shape == (6, 8, 5, 5)
    assert gtm(x, num_segments=3).shape == x.shape
    with torch.no_grad():  # silence both branches: only the 0.5 residual half is left
        for conv in (gtm.expand, gtm.local.fuse):
            conv.weight.zero_()
            conv.bias.zero_()
    assert torch.allclose(gtm(x, num_segments=3), 0.5 * x)


def test_default_grouping_is_one_causal_scan_per_video():
    torch.manual_seed(0)
    gtm = GlobalLocalTemporalModule(channels=8, spatial_size=3).eval()
    x = torch.randn(8, 4, 3, 3)  # global half of B = 2 videos, T = 4
    changed = x.clone()
    changed[1] += 1.0  # video 0, segment 1
    delta = (gtm.global_branch(changed, 4) - gtm.global_branch(x, 4)).abs().flatten(1).amax(1)
    assert delta[0] == 0 and (delta[1:4] > 0).all()  # earlier segment untouched, later ones see the change
    assert (delta[4:] == 0).all()  # the other video is independent


def test_group_of_eight_reproduces_two_independent_scans_at_sixteen_segments():
    torch.manual_seed(0)
    gtm = GlobalLocalTemporalModule(channels=8, spatial_size=3, group=8).eval()
    x = torch.randn(16, 8, 3, 3)
    halves = torch.cat([gtm(x[:8], num_segments=8), gtm(x[8:], num_segments=8)])
    assert torch.allclose(gtm(x, num_segments=16), halves, atol=1e-6)
    with pytest.raises(ValueError, match="must divide"):
        gtm(torch.randn(12, 8, 3, 3), num_segments=12)


@pytest.mark.slow
def test_gtm_shapes_at_224_match_the_reference_measurement():
    torch.manual_seed(0)
    gtm = GlobalLocalTemporalModule(channels=256, spatial_size=56, group=8).eval()
    seen = {}
    gtm.reduce.register_forward_hook(lambda m, i, o: seen.__setitem__("conv1d", tuple(o.shape)))
    gtm.mamba.register_forward_hook(lambda m, i, o: seen.setdefault("mamba", []).append(tuple(o.shape)))
    gtm.expand.register_forward_hook(lambda m, i, o: seen.__setitem__("expand", tuple(o.shape)))
    with torch.no_grad():
        out = gtm(torch.randn(8, 256, 56, 56), num_segments=8)
        gtm(torch.randn(16, 256, 56, 56), num_segments=16)
    assert seen["mamba"] == [(1, 8, 6272), (2, 8, 6272)]
    assert out.shape == (8, 256, 56, 56) and seen["expand"] == (16, 128, 3136)


def test_gcnet_resnet18_forward_backward_reaches_the_mamba():
    model = _gcnet18(dropout=0.5).train()
    logits, feats = model(torch.randn(2, 20, 3, 112, 112), return_features=True)
    assert logits.shape == (2, 5) and feats.shape == (2, 4, 512) and model.frames_per_segment == 5
    nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in mamba_parameters(model))
    assert all(p.grad is not None for n, p in model.named_parameters() if "source_conv1" not in n)
