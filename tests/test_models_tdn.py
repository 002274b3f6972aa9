"""TDN: reference parameter count and breakdown, stage shapes (section 2.5), S-TDM/L-TDM/shift properties."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from actionray.models import build_model
from actionray.models.backbones import build_resnet
from actionray.models.tdn import LongTermTDM, TemporalShift, fusion_weights


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tdn18(num_segments: int = 4, **options) -> nn.Module:
    torch.manual_seed(0)
    return build_model("tdn", num_classes=5, num_segments=num_segments, backbone="resnet18", **options)


def _stage_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Shapes at the named points of section 2.5, captured with forward hooks."""
    shapes: dict[str, tuple[int, ...]] = {}

    def out_hook(name):
        def hook(module, inputs, output):
            shapes[name] = tuple(output.shape)
        return hook

    def in_hook(name):
        def hook(module, inputs):
            shapes[name] = tuple(inputs[0].shape)
        return hook

    handles = [
        model.short_term.conv.register_forward_pre_hook(in_hook("diff_input")),
        model.short_term.relu.register_forward_hook(out_hook("diff_stem")),
        model.short_term.layer1[0].register_forward_pre_hook(in_hook("diff_pool")),
        model.short_term.layer1[-1].register_forward_hook(out_hook("motion_layer1")),
        model.layer1[0].register_forward_pre_hook(in_hook("rgb_stem_pool")),
        model.layer1[-1].register_forward_hook(out_hook("layer1")),
        model.layer2[-1].register_forward_hook(out_hook("layer2")),
        model.layer3[-1].register_forward_hook(out_hook("layer3")),
        model.layer4[-1].register_forward_hook(out_hook("layer4")),
        model.fc.register_forward_hook(out_hook("fc")),
    ]
    with torch.no_grad():
        shapes["output"] = tuple(model(x).shape)
    for handle in handles:
        handle.remove()
    return shapes


def test_tdn_r50_parameter_count_matches_reference():
    with torch.device("meta"):
        model = build_model("tdn", num_classes=101, num_segments=8, backbone="resnet50")
    assert _count(model) == 24_270_469


def test_tdn_r50_parameter_breakdown_matches_reference():
    with torch.device("meta"):
        model = build_model("tdn", num_classes=101, num_segments=8, backbone="resnet50")
    named = dict(model.named_parameters())
    assert _count(model.conv1) + _count(model.bn1) == 9_600
    assert [_count(getattr(model, f"layer{i}")) for i in range(1, 5)] == [217_216, 1_239_008, 7_194_528, 15_138_720]
    assert _count(model.short_term.conv) + _count(model.short_term.bn) == 37_760
    assert _count(model.short_term.layer1) == 217_216
    assert _count(model.short_term.source_conv1) == 9_472  # the reference's dead conv1 copy
    assert sum(p.numel() for n, p in named.items() if ".ltdm." in n) == 253_728
    assert sum(p.numel() for n, p in named.items() if ".shift." in n) == 10_752
    conv_biases = sum(m.bias.numel() for m in model.modules() if isinstance(m, nn.Conv2d) and m.bias is not None)
    assert conv_biases == 28_032
    assert _count(model.fc) == 206_949


def test_fusion_weights_are_half_half_only_for_eight_segments():
    assert fusion_weights(8) == (0.5, 0.5)
    assert fusion_weights(16) == fusion_weights(4) == (0.75, 0.25)
    assert (_tdn18(num_segments=8).alpha, _tdn18(num_segments=3).alpha) == (0.5, 0.75)


def test_stage_shapes_at_reduced_size_follow_the_input():
    torch.manual_seed(0)
    model = build_model("tdn", num_classes=7, num_segments=2, backbone="resnet50").eval()
    shapes = _stage_shapes(model, torch.randn(1, 10, 3, 64, 64))
    assert shapes == {
        "diff_input": (2, 12, 32, 32), "diff_stem": (2, 64, 16, 16), "diff_pool": (2, 64, 8, 8),
        "motion_layer1": (2, 256, 8, 8), "rgb_stem_pool": (2, 64, 16, 16), "layer1": (2, 256, 16, 16),
        "layer2": (2, 512, 8, 8), "layer3": (2, 1024, 4, 4), "layer4": (2, 2048, 2, 2), "fc": (1, 2, 7),
        "output": (1, 7),
    }


@pytest.mark.slow
def test_stage_shapes_at_224_match_the_reference_measurement():
    torch.manual_seed(0)
    model = build_model("tdn", num_classes=101, num_segments=8, backbone="resnet50").eval()
    shapes = _stage_shapes(model, torch.randn(1, 40, 3, 224, 224))
    assert shapes == {
        "diff_input": (8, 12, 112, 112), "diff_stem": (8, 64, 56, 56), "diff_pool": (8, 64, 28, 28),
        "motion_layer1": (8, 256, 28, 28), "rgb_stem_pool": (8, 64, 56, 56), "layer1": (8, 256, 56, 56),
        "layer2": (8, 512, 28, 28), "layer3": (8, 1024, 14, 14), "layer4": (8, 2048, 7, 7), "fc": (1, 8, 101),
        "output": (1, 101),
    }


def test_short_term_stem_is_inflated_from_the_source_conv1():
    model = _tdn18()
    source = model.short_term.source_conv1.weight
    assert torch.equal(model.short_term.conv.weight, source.mean(dim=1, keepdim=True).expand(-1, 12, -1, -1))


def test_long_term_tdm_is_the_identity_for_a_single_segment_at_init():
    torch.manual_seed(0)
    ltdm = LongTermTDM(64).eval()  # fresh BN statistics: zero differences give a zero attention
    x = torch.randn(3, 64, 6, 6)
    assert torch.allclose(ltdm(x, num_segments=1), x)


def test_long_term_tdm_gate_lies_between_half_and_one_and_a_half():
    torch.manual_seed(0)
    ltdm = LongTermTDM(64).train()
    x = torch.rand(8, 64, 6, 6) + 0.1
    ratio = ltdm(x, num_segments=4) / x
    assert ratio.min() > 0.5 and ratio.max() < 1.5 and (ratio - 1).abs().max() > 1e-3


def test_shift_is_initialised_as_tsm_and_trainable():
    shift = TemporalShift(16)  # fold = 2 channels each way
    x = torch.randn(2 * 5, 16, 3, 3)  # B = 2, T = 5
    seq = x.view(2, 5, 16, 3, 3)
    expected = seq.clone()
    expected[:, :, :2] = torch.cat([seq[:, 1:, :2], torch.zeros_like(seq[:, :1, :2])], dim=1)  # from t+1
    expected[:, :, 2:4] = torch.cat([torch.zeros_like(seq[:, :1, 2:4]), seq[:, :-1, 2:4]], dim=1)  # from t-1
    assert torch.equal(shift(x, num_segments=5), expected.view_as(x))
    assert shift.conv.weight.requires_grad


def test_every_bottleneck_of_layers_2_to_4_has_ltdm_and_shift_but_layer1_none():
    with torch.device("meta"):
        model = build_model("tdn", num_classes=10, num_segments=8, backbone="resnet50")
    assert all(b.ltdm is None and b.shift is None for b in model.layer1)
    temporal = [b for layer in (model.layer2, model.layer3, model.layer4) for b in layer]
    assert len(temporal) == 13 and all(b.ltdm is not None and b.shift is not None for b in temporal)


def test_tdn_resnet18_forward_backward_and_features():
    model = _tdn18(num_segments=4, dropout=0.5).train()
    x = torch.randn(2, 20, 3, 112, 112)
    logits, feats = model(x, return_features=True)
    assert logits.shape == (2, 5) and feats.shape == (2, 4, 512)
    assert torch.allclose(logits, model.fc(feats).mean(dim=1), atol=1e-5)  # features are post-dropout
    nn.functional.cross_entropy(logits, torch.tensor([1, 3])).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["short_term.source_conv1.weight"] is None  # dead copy: frozen and unused, as in the reference
    assert all(g is not None and torch.isfinite(g).all() for n, g in grads.items() if "source_conv1" not in n)


def test_basic_block_resnet34_carries_ltdm_and_runs_other_segment_counts():
    torch.manual_seed(0)
    model = build_model("tdn", num_classes=3, num_segments=3, backbone="resnet34").eval()
    assert model.layer3[5].ltdm is not None and model.frames_per_segment == 5
    assert model(torch.randn(1, 15, 3, 64, 64)).shape == (1, 3)


def test_rejects_frames_that_are_not_a_multiple_of_five():
    with pytest.raises(ValueError, match=r"T\*5"):
        _tdn18()(torch.randn(1, 12, 3, 64, 64))


def test_imagenet_weights_fill_rgb_trunk_motion_layer1_and_inflation_source(tmp_path):
    reference = build_resnet("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save({**reference.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, path)
    model = _tdn18(pretrained=str(path))
    assert torch.equal(model.layer2[1].conv1.weight, reference.layer2[1].conv1.weight)
    assert torch.equal(model.short_term.layer1[0].conv2.weight, reference.layer1[0].conv2.weight)
    assert torch.equal(model.short_term.source_conv1.weight, reference.conv1.weight)
    assert torch.equal(model.short_term.conv.weight[:, 7], reference.conv1.weight.mean(dim=1))


def test_imagenet_weights_of_another_depth_are_rejected_with_the_keys(tmp_path):
    path = tmp_path / "resnet50.pth"
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build_resnet("resnet50").state_dict().items()}
    torch.save({k: torch.zeros(s) for k, s in shapes.items()}, path)
    with pytest.raises(ValueError, match="shape mismatch"):
        _tdn18(pretrained=str(path))
