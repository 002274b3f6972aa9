"""Reference checkpoint loading: TDN-repo, GCNet-repo and TSN-wrapper key layouts, DDP prefix, strictness."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from actionray.models import build_model, load_reference_checkpoint

# Reference names, written from the reference code structure (TSN wrapper -> base_model = TDN_Net; mSEModule;
# GCNet's Mamba "bash_model" and local branch "cb" = conblock, both also registered on the wrapper).
_LTDM = {"reduce": "conv1", "reduce_bn": "bn1", "neighbor": "conv2", "expand": "conv3", "expand_bn": "bn3",
         "coarse": "conv3_smallscale2", "coarse_bn": "bn3_smallscale2", "fine": "conv3_smallscale4",
         "fine_bn": "bn3_smallscale4"}
_STEM = {"short_term.source_conv1": "conv1_temp", "short_term.conv": "conv1_5.0", "short_term.bn": "conv1_5.1",
         "short_term.layer1": "resnext_layer1"}
_GTM = {"gtm.reduce": "conv1dfirst", "gtm.norm": "norm", "gtm.mamba": "bash_model", "gtm.expand": "convidsecond",
        "gtm.local.se": "cb.seblock", "gtm.local.pw7_in": "cb.conv1b7", "gtm.local.dw7": "cb.conv77",
        "gtm.local.pw7_out": "cb.conv1a7", "gtm.local.pw3_in": "cb.conv1b3", "gtm.local.dw3": "cb.conv33",
        "gtm.local.pw3_out": "cb.conv1a3", "gtm.local.fuse": "cb.finalconv11"}


def to_reference_layout(state: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """Our state_dict -> the reference repo's (for kind tsn / tdn / gcnet)."""
    out = {}
    for key, value in state.items():
        if key.startswith("fc."):
            out["new_fc." + key[3:]] = value
            continue
        if kind == "tsn":
            out["base_model." + key.removeprefix("backbone.")] = value
            continue
        parts = key.split(".")
        for ours, theirs in {**_STEM, **_GTM}.items():
            if key.startswith(ours + "."):
                parts = theirs.split(".") + key[len(ours) + 1:].split(".")
                break
        if parts[0] in ("layer1", "layer2", "layer3", "layer4"):
            parts[0] += "_bak"
        if "ltdm" in parts:
            i = parts.index("ltdm")
            parts[i:i + 2] = ["mse", _LTDM[parts[i + 1]]]
        name = ".".join(parts)
        out["base_model." + name] = value
        if name.startswith(("bash_model.", "cb.")):
            out[name] = value.clone()  # the wrapper's second registration
    return out


def _randomised(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for name, buffer in model.named_buffers():
            if "running_mean" in name:
                buffer.normal_()
    return model


def _model(kind: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    name = "tdn" if kind == "tdn" else kind
    return build_model(name, num_classes=4, num_segments=2, backbone="resnet18", input_size=64)


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


@pytest.mark.parametrize("kind", ["tsn", "tdn", "gcnet"])
def test_reference_layout_checkpoint_loads_back_exactly(kind, tmp_path):
    source = _randomised(_model(kind, 0))
    path = tmp_path / f"{kind}.pth.tar"
    torch.save({"epoch": 3, "arch": "resnet18", "best_prec1": 51.2,
                "state_dict": to_reference_layout(source.state_dict(), kind)}, path)
    target = _model(kind, 1)
    load_reference_checkpoint(target, path)
    assert _same_state(source, target)


def test_ddp_module_prefix_is_removed(tmp_path):
    source = _randomised(_model("tdn", 0))
    path = tmp_path / "ddp.pth"
    torch.save({"module." + k: v for k, v in to_reference_layout(source.state_dict(), "tdn").items()}, path)
    target = _model("tdn", 1)
    load_reference_checkpoint(target, path, layout="tdn")
    assert _same_state(source, target)


def test_our_own_layout_loads_with_auto_detection(tmp_path):
    source = _randomised(_model("gcnet", 0))
    path = tmp_path / "ours.pth"
    torch.save(source.state_dict(), path)
    target = _model("gcnet", 1)
    load_reference_checkpoint(target, path)
    assert _same_state(source, target)


def test_classifier_saved_as_base_model_fc_when_dropout_was_zero(tmp_path):
    source = _randomised(_model("tdn", 0))
    state = to_reference_layout(source.state_dict(), "tdn")
    state["base_model.fc.weight"], state["base_model.fc.bias"] = state.pop("new_fc.weight"), state.pop("new_fc.bias")
    path = tmp_path / "p0.pth"
    torch.save(state, path)
    target = _model("tdn", 1)
    load_reference_checkpoint(target, path)
    assert torch.equal(target.fc.weight, source.fc.weight)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = to_reference_layout(_model("tdn", 0).state_dict(), "tdn")
    del state["base_model.layer2_bak.0.mse.conv3_smallscale4.weight"]
    state["base_model.layer5_bak.0.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as error:
        load_reference_checkpoint(_model("tdn", 1), path)
    message = str(error.value)
    assert "missing (1): base_model.layer2_bak.0.mse.conv3_smallscale4.weight" in message
    assert "unexpected (1): base_model.layer5_bak.0.conv1.weight" in message


def test_a_tdn_checkpoint_does_not_fill_a_gcnet_with_gtm(tmp_path):
    path = tmp_path / "tdn.pth"
    torch.save(to_reference_layout(_model("tdn", 0).state_dict(), "tdn"), path)
    with pytest.raises(ValueError, match=r"missing \(\d+\): base_model\.conv1dfirst"):
        load_reference_checkpoint(_model("gcnet", 1), path)


def test_differing_duplicate_mamba_copies_are_rejected(tmp_path):
    state = to_reference_layout(_model("gcnet", 0).state_dict(), "gcnet")
    state["bash_model.D"] = state["bash_model.D"] + 1
    path = tmp_path / "dup.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="duplicate copies differ"):
        load_reference_checkpoint(_model("gcnet", 1), path)


def test_a_layout_for_another_model_is_rejected(tmp_path):
    path = tmp_path / "tsn.pth"
    torch.save(to_reference_layout(_model("tsn", 0).state_dict(), "tsn"), path)
    with pytest.raises(ValueError, match="does not fit"):
        load_reference_checkpoint(_model("tdn", 1), path, layout="tsn")


def test_a_missing_checkpoint_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="reference checkpoint: file not found"):
        load_reference_checkpoint(_model("tsn", 0), tmp_path / "none.pth")
