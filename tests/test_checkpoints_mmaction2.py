"""MMAction2 TSN checkpoints (mmengine ``{'meta', 'state_dict'}``, ConvModule key names) load strictly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from actionray.models import build_model, load_reference_checkpoint

# MMAction2 ResNet (mmaction/models/backbones/resnet.py): blocks per stage and ConvModules per block.
_STAGES = {"resnet18": ((2, 2, 2, 2), 2), "resnet50": ((3, 4, 6, 3), 3)}
_CONV = ("conv.weight",)
_BN = ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked")


def mmaction2_tsn_keys(backbone: str) -> list[str]:
    """MMAction2 TSN state_dict keys in registration order, written from the MMAction2 module tree."""
    blocks, convs = _STAGES[backbone]
    keys = [f"backbone.conv1.{p}" for p in _CONV + _BN]
    for stage, count in enumerate(blocks, start=1):
        for block in range(count):
            prefix = f"backbone.layer{stage}.{block}"
            for m in range(1, convs + 1):
                keys += [f"{prefix}.conv{m}.{p}" for p in _CONV + _BN]
            if block == 0 and (stage > 1 or convs == 3):  # stride 2 or a channel change: a shortcut conv
                keys += [f"{prefix}.downsample.{p}" for p in _CONV + _BN]
    return keys + ["cls_head.fc_cls.weight", "cls_head.fc_cls.bias"]


def as_mmaction2(model: nn.Module, backbone: str) -> dict[str, torch.Tensor]:
    """``model``'s tensors under MMAction2 names, paired by registration order (same order in both trees)."""
    keys = mmaction2_tsn_keys(backbone)
    values = list(model.state_dict().values())
    assert len(keys) == len(values), (len(keys), len(values))
    return {k: v.clone() for k, v in zip(keys, values)}


def _tsn(backbone: str, seed: int, consensus: str = "logit") -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("tsn", num_classes=5, num_segments=2, backbone=backbone, consensus=consensus)
    with torch.no_grad():  # non-trivial BN statistics, so a swapped running_mean/var would show in the logits
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    return model.eval()


def _save_mmengine(state: dict[str, torch.Tensor], path) -> None:
    torch.save({"meta": {"mmengine_version": "0.10.4", "epoch": 100, "iter": 3500, "seed": 0,
                         "dataset_meta": {"num_classes": 5}},
                "state_dict": state}, path)


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_mmaction2_checkpoint_is_auto_detected_and_gives_the_same_logits(backbone, tmp_path):
    source = _tsn(backbone, 0)
    path = tmp_path / f"tsn_{backbone}_mmaction2.pth"
    _save_mmengine(as_mmaction2(source, backbone), path)
    target = _tsn(backbone, 1)
    load_reference_checkpoint(target, path)  # layout="auto"
    x = torch.randn(2, 2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))


def test_explicit_mmaction2_layout_and_feature_consensus_agree_in_eval(tmp_path):
    source = _tsn("resnet18", 0)
    path = tmp_path / "tsn.pth"
    _save_mmengine(as_mmaction2(source, "resnet18"), path)
    target = _tsn("resnet18", 1, consensus="feature")  # MMAction2's TSNHead: mean of features, then fc
    load_reference_checkpoint(target, path, layout="mmaction2")
    x = torch.randn(2, 2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=1e-5, atol=1e-6)


def test_mmaction2_checkpoint_with_missing_and_unexpected_keys_is_rejected_with_both_listed(tmp_path):
    state = as_mmaction2(_tsn("resnet18", 0), "resnet18")
    del state["backbone.layer2.0.downsample.bn.running_var"]
    state["cls_head.fc_extra.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    _save_mmengine(state, path)
    with pytest.raises(ValueError) as error:
        load_reference_checkpoint(_tsn("resnet18", 1), path)
    message = str(error.value)
    assert str(path) in message and "mmaction2 layout" in message
    assert "missing (1): backbone.layer2.0.downsample.bn.running_var" in message
    assert "unexpected (1): cls_head.fc_extra.weight" in message


def test_mmaction2_layout_is_refused_for_a_model_that_is_not_tsn(tmp_path):
    path = tmp_path / "tsn.pth"
    _save_mmengine(as_mmaction2(_tsn("resnet18", 0), "resnet18"), path)
    tdn = build_model("tdn", num_classes=5, num_segments=2, backbone="resnet18", input_size=64)
    with pytest.raises(ValueError, match="'mmaction2'.*does not fit a TDN"):
        load_reference_checkpoint(tdn, path, layout="mmaction2")
