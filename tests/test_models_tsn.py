"""TSN and the shared backbone pieces: reference parameter count, both consensus modes, partial BN, weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from actionray.models import MODEL_NAMES, build_model
from actionray.models.backbones import build_resnet, stem_output_size


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tsn18(**options) -> nn.Module:
    torch.manual_seed(0)
    return build_model("tsn", num_classes=5, num_segments=3, backbone="resnet18", **options)


def test_registry_lists_tsn_tdn_gcnet_and_rejects_unknown_names():
    assert {"tsn", "tdn", "gcnet"} <= set(MODEL_NAMES)
    with pytest.raises(ValueError, match="unknown; known models"):
        build_model("c3d", num_classes=2, num_segments=2)


def test_registry_rejects_an_unknown_method_option():
    with pytest.raises(TypeError, match="gtm_group"):
        build_model("tsn", num_classes=2, num_segments=2, backbone="resnet18", gtm_group=8)


def test_tsn_r50_parameter_count_matches_reference():
    with torch.device("meta"):
        model = build_model("tsn", num_classes=101, num_segments=8, backbone="resnet50")
    assert _count(model.backbone) == 23_508_032
    assert _count(model) == 23_714_981


def test_stem_output_size_follows_input_size():
    assert [stem_output_size(s) for s in (224, 112, 256, 160)] == [56, 28, 64, 40]


def test_logit_consensus_averages_per_frame_logits():
    model = _tsn18(consensus="logit").eval()
    x = torch.randn(2, 3, 3, 112, 112)
    logits, feats = model(x, return_features=True)
    assert logits.shape == (2, 5) and feats.shape == (2, 3, 512)
    assert torch.allclose(logits, model.fc(feats).mean(dim=1), atol=1e-6)


def test_feature_consensus_averages_features_before_the_classifier():
    model = _tsn18(consensus="feature").eval()
    x = torch.randn(2, 3, 3, 112, 112)
    logits, feats = model(x, return_features=True)
    assert torch.allclose(logits, model.fc(feats.mean(dim=1)), atol=1e-6)


def test_consensus_modes_differ_in_training_because_dropout_acts_per_frame_or_per_video():
    torch.manual_seed(1)
    feats = torch.randn(4, 3, 512)
    logit_model, feature_model = _tsn18(consensus="logit", dropout=0.5), _tsn18(consensus="feature", dropout=0.5)
    feature_model.fc.load_state_dict(logit_model.fc.state_dict())
    torch.manual_seed(2)
    per_frame = logit_model.fc(logit_model.dropout(feats)).mean(1)
    torch.manual_seed(2)
    per_video = feature_model.fc(feature_model.dropout(feats.mean(1)))
    assert not torch.allclose(per_frame, per_video)


def _consensus_pair(dropout: float) -> tuple[nn.Module, nn.Module]:
    """Two TSNs with identical weights (same seed; consensus adds no parameter), logit and feature consensus."""
    logit_model, feature_model = _tsn18(consensus="logit", dropout=dropout), _tsn18(consensus="feature",
                                                                                    dropout=dropout)
    assert all(torch.equal(a, b) for a, b in zip(logit_model.state_dict().values(),
                                                 feature_model.state_dict().values()))
    return logit_model, feature_model


def _forward_both(logit_model: nn.Module, feature_model: nn.Module, x: torch.Tensor):
    torch.manual_seed(3)
    per_frame = logit_model(x)
    torch.manual_seed(3)
    return per_frame, feature_model(x)


def test_consensus_modes_agree_through_forward_without_dropout_because_the_head_is_linear():
    logit_model, feature_model = _consensus_pair(dropout=0.5)
    x = torch.randn(2, 3, 3, 64, 64)
    per_frame, per_video = _forward_both(logit_model.eval(), feature_model.eval(), x)
    assert torch.allclose(per_frame, per_video, atol=1e-5)  # mean(fc(f_t)) == fc(mean(f_t))
    logit_model, feature_model = _consensus_pair(dropout=0.0)
    per_frame, per_video = _forward_both(logit_model.train(), feature_model.train(), x)
    assert torch.allclose(per_frame, per_video, atol=1e-5)  # training mode alone changes nothing


def test_consensus_modes_differ_through_forward_in_training_with_dropout():
    logit_model, feature_model = _consensus_pair(dropout=0.5)
    x = torch.randn(2, 3, 3, 64, 64)
    per_frame, per_video = _forward_both(logit_model.train(), feature_model.train(), x)
    # Dropout masks each frame's features (logit) or the video's mean feature (feature): different scores.
    assert (per_frame - per_video).abs().max() > 1e-3


def test_tsn_forward_and_backward_reach_every_parameter():
    model = _tsn18(dropout=0.5).train()
    logits = model(torch.randn(2, 3, 3, 112, 112))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 4])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_classifier_init_is_normal_with_given_std_and_zero_bias():
    model = build_model("tsn", num_classes=400, num_segments=2, backbone="resnet18", fc_init_std=0.01)
    assert model.fc.bias.abs().max() == 0
    assert abs(model.fc.weight.std().item() - 0.01) < 0.0005


def test_rejects_an_input_that_is_not_b_t_3_h_w():
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        _tsn18()(torch.randn(2, 9, 112, 112))


def test_partial_bn_keeps_only_the_first_bn_trainable_and_updating():
    model = _tsn18(partial_bn=True)
    assert model.train() is model  # chaining works (the reference's train() returned None)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns[0] is model.backbone.bn1 and bns[0].training and bns[0].weight.requires_grad
    assert all(not bn.training and not bn.weight.requires_grad for bn in bns[1:])
    frozen_stats = bns[1].running_mean.clone()
    model(torch.randn(1, 2, 3, 64, 64))
    assert torch.equal(bns[1].running_mean, frozen_stats)


def test_partial_bn_is_reapplied_after_eval_and_train():
    model = _tsn18(partial_bn=True)
    model.eval().train()
    assert not model.backbone.layer1[0].bn1.training
    model.set_partial_bn(False)
    assert model.backbone.layer1[0].bn1.training and model.backbone.layer1[0].bn1.weight.requires_grad


def test_imagenet_weights_load_from_a_local_file(tmp_path):
    reference = build_resnet("resnet18")
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # ImageNet head is dropped
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = build_model("tsn", num_classes=3, num_segments=2, backbone="resnet18", pretrained=str(path))
    assert torch.equal(model.backbone.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        build_model("tsn", num_classes=3, num_segments=2, backbone="resnet18", pretrained=str(tmp_path / "no.pth"))


def test_weights_for_another_architecture_list_the_mismatched_keys(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(build_resnet("resnet34").state_dict(), path)
    with pytest.raises(ValueError, match=r"unexpected \(\d+\): layer1\.2\.bn1"):
        build_model("tsn", num_classes=3, num_segments=2, backbone="resnet18", pretrained=str(path))


def test_layer4_stride_one_keeps_the_layer3_resolution():
    trunk = build_resnet("resnet18", layer4_stride=1).eval()
    x = torch.randn(1, 3, 112, 112)
    stem = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))
    assert trunk.layer4(trunk.layer3(trunk.layer2(trunk.layer1(stem)))).shape[-1] == 7
