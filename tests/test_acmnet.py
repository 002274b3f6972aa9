"""ACM-Net (FTCL repo, model/ACMNet.py): layers and names, outputs by name, dropout, candidates, checkpoint layout."""

from __future__ import annotations

import pytest
import torch

from actionray.models.acmnet import (ACMNet, ACMNetOutput, build_acmnet, load_ftcl_checkpoint,
                                     load_ftcl_checkpoint_state)
from actionray.trainables.ftcl_losses import acm_loss, ftcl_loss


def test_parameter_count_and_state_dict_names_of_the_reference():
    model = build_acmnet()
    assert sum(p.numel() for p in model.parameters()) == 14_732_312
    assert list(model.state_dict()) == ["feature_embedding.0.weight", "feature_embedding.0.bias", "att_branch.weight",
                                        "att_branch.bias", "snippet_cls.weight", "snippet_cls.bias",
                                        "feature_trans.weight", "feature_trans.bias"]


def test_output_shapes_by_name_and_topk_sizes():
    model = build_acmnet(feature_dim=16, num_classes=4, fc_dim=8).eval()
    out = model(torch.rand(2, 40, 16))
    assert isinstance(out, ACMNetOutput)
    assert out.inst_scores.shape == (2, 5) and out.inst_feature.shape == (2, 16)
    assert out.attention.shape == (2, 40, 3) and out.cas.shape == (2, 40, 5)
    assert out.lcs_candidates.shape == (2, 30, 16)
    assert out.fsd_act.shape == (2, 5, 8) and out.fsd_bak.shape == (2, 5, 8)
    assert len(out.as_tuple()) == 14
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, 40))
    torch.testing.assert_close(out.inst_scores.sum(-1), torch.ones(2))


def test_short_input_gives_at_least_one_snippet_per_branch_and_shorter_candidates():
    model = build_acmnet(feature_dim=8, num_classes=2, fc_dim=4).eval()
    out = model(torch.rand(1, 2, 8))  # k = max(T // 8, 1) = 1
    assert torch.isfinite(out.inst_scores).all() and out.lcs_candidates.shape == (1, 2, 8)


def test_candidates_follow_instance_attention_in_time_order():
    torch.manual_seed(0)
    model = build_acmnet(feature_dim=8, num_classes=2, fc_dim=4, lcs_len=6, fsd_len=2).eval()
    x = torch.rand(1, 20, 8)
    out = model(x)
    emb = model.feature_embedding(x.transpose(1, 2)).transpose(1, 2)
    order = out.attention[0, :, 0].argsort(descending=True)
    torch.testing.assert_close(out.lcs_candidates[0], emb[0, order[:6].sort().values])
    torch.testing.assert_close(out.fsd_bak[0], model.feature_trans(emb[0, order[2:4].sort().values]))


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    model = build_acmnet(feature_dim=16, num_classes=3, fc_dim=8)
    x = torch.rand(2, 24, 16)
    model.eval()
    a, b = model(x), model(x)
    torch.testing.assert_close(a.cas, b.cas)
    model.train()
    c = model(x)
    assert not torch.allclose(a.cas, c.cas)
    torch.testing.assert_close(a.inst_feature, c.inst_feature)  # branch features use the un-dropped embedding


def test_activitynet_input_dropout_acts_in_training_only_and_keeps_the_state_dict():
    torch.manual_seed(0)
    plain = build_acmnet(feature_dim=16, num_classes=3, fc_dim=8)
    anet = build_acmnet(feature_dim=16, num_classes=3, fc_dim=8, input_dropout=True)
    anet.load_state_dict(plain.state_dict())  # no new parameters: same names as the THUMOS14 network
    x = torch.rand(2, 24, 16)
    plain.eval(), anet.eval()
    torch.testing.assert_close(plain(x).attention, anet(x).attention)
    anet.train()
    assert not torch.allclose(plain(x).attention, anet(x).attention)  # dropout before embedding and attention


def test_activitynet_instance_loss_weight_scales_the_instance_term():
    torch.manual_seed(0)
    model = build_acmnet(feature_dim=16, num_classes=3, fc_dim=8).eval()
    out, labels = model(torch.rand(2, 24, 16)), torch.tensor([[1.0, 0, 0], [0, 1.0, 1.0]])
    one, terms = acm_loss(out, labels)
    five, _ = acm_loss(out, labels, weights={"inst": 5.0})
    torch.testing.assert_close(five - one, 4 * terms["inst"])


def test_ftcl_checkpoint_layout_round_trip_is_strict(tmp_path):
    source = build_acmnet(feature_dim=16, num_classes=3, fc_dim=8)
    path = tmp_path / "THUMOS_best.pth"
    torch.save({"epoch": 7, "model_state_dict": source.state_dict()}, path)
    target = build_acmnet(feature_dim=16, num_classes=3, fc_dim=8)
    assert load_ftcl_checkpoint(target, path) == 7
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)
    assert set(load_ftcl_checkpoint_state(path)) == set(source.state_dict())


def test_wrong_checkpoint_layout_and_keys_raise_naming_the_file(tmp_path):
    model = build_acmnet(feature_dim=16, num_classes=3, fc_dim=8)
    bare = tmp_path / "bare.pth"
    torch.save(model.state_dict(), bare)
    with pytest.raises(ValueError, match="bare.pth: not the FTCL checkpoint layout"):
        load_ftcl_checkpoint_state(bare)
    prefixed = tmp_path / "prefixed.pth"
    torch.save({"epoch": 1, "model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, prefixed)
    with pytest.raises(ValueError, match="prefixed.pth: keys do not match"):
        load_ftcl_checkpoint(model, prefixed)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_ftcl_checkpoint_state(tmp_path / "missing.pth")


def test_full_forward_and_loss_reference_regression():
    """Recorded run of the reference model and criteria: 0.01-scaled seeded weights, eval mode, pair mode."""
    model = ACMNet().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.state_dict().values():
            p.copy_(0.01 * torch.randn(p.shape, generator=g))
    g0 = torch.Generator().manual_seed(0)
    x1 = torch.rand(2, 750, 2048, generator=g0)
    x2 = torch.stack([x1[0], torch.rand(750, 2048, generator=g0)])
    y1 = torch.tensor([[1.0 if c == 0 else 0.0 for c in range(20)], [1.0 if c in (4, 7) else 0.0 for c in range(20)]])
    y2 = torch.tensor([[1.0 if c == 0 else 0.0 for c in range(20)], [1.0 if c == 1 else 0.0 for c in range(20)]])
    with torch.no_grad():
        o1, o2 = model.forward_pair(x1, x2)
        acm, terms = acm_loss(o1, y1)
        total, ftcl_terms = ftcl_loss(o1, o2, y1, y2)
    assert o1.inst_scores[0, :4].tolist() == pytest.approx([0.048302, 0.048184, 0.048830, 0.050693], rel=1e-4)
    assert o1.inst_scores[:, :20].argmax(1).tolist() == [3, 3]
    assert o1.attention[0, 0].tolist() == pytest.approx([0.274966, 0.343085, 0.381950], rel=1e-4)
    assert o1.attention.mean((0, 1)).tolist() == pytest.approx([0.258348, 0.306595, 0.435057], rel=1e-4)
    norms = [f[0].norm().item() for f in (o1.inst_feature, o1.cont_feature, o1.back_feature)]
    assert norms == pytest.approx([13.223532, 13.272109, 13.302077], rel=1e-4)
    assert acm.item() == pytest.approx(10.789169, rel=1e-4)
    expected_terms = dict(inst=3.050878, cont=3.032494, back=2.982442, guide=519.1984, feat=12851.75, sparse=211.8536)
    for name, value in expected_terms.items():
        assert terms[name].item() == pytest.approx(value, rel=1e-4), name
    assert ftcl_terms["lcs_scores"].tolist() == pytest.approx([30.0, 0.0], abs=1e-3)
    assert ftcl_terms["fsd_scores"].tolist() == pytest.approx([16.895403, 14.948647], rel=1e-4)
    assert total.item() == pytest.approx(6.215426, rel=1e-4)
