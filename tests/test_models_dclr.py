"""DCLR models: R(2+1)D backbone and classifier, the view encoder, the MoCo wrapper, checkpoint layouts.

Reference: DCLR repo (view_resnet.py, moco/builder.py MoCo_View, main_view.py). Tiny inputs (4 frames, 32 px).
"""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch
import torch.nn.functional as F

from actionray.models.dclr import (DCLR, HEADS, QUEUES, DCLREncoder, backbone_state_from_pretraining,
                                   check_queue_size, concat_all_gather, convert_dclr_reference_state,
                                   load_dclr_checkpoint, multi_positive_nce, neighbour_positives, read_checkpoint)
from actionray.models.r2plus1d import R2Plus1DClassifier, r2plus1d_18


def _n(module: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def _views(b: int = 2, seed: int = 0, t: int = 4, s: int = 32) -> torch.Tensor:
    return torch.randn(b, 3, 3, t, s, s, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread avoids OpenMP contention overhead on shared cores (measured 50x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> DCLR:
    torch.manual_seed(0)
    return DCLR(queue_size=8)


# --- backbone and classifier ------------------------------------------------------------------------------

def test_backbone_parameter_counts_per_depth():
    assert _n(r2plus1d_18((1, 1, 1, 1))) == 12_487_005  # DCLR repo view_resnet.py r2plus1d_18
    assert _n(r2plus1d_18((2, 2, 2, 2))) == 31_300_125  # torchvision R(2+1)D-18 without its fc


def test_two_block_backbone_is_torchvision_r2plus1d_18_without_fc():
    from actionray.compat import import_torchvision

    tv = import_torchvision().models.video.r2plus1d_18(weights=None)
    state = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    ours = r2plus1d_18((2, 2, 2, 2))
    ours.load_state_dict(state, strict=True)
    assert sum(p.numel() for n, p in tv.named_parameters() if not n.startswith("fc.")) == _n(ours)


def test_backbone_derives_layer4_size_from_the_input():
    net = r2plus1d_18().eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 4, 32, 32)).shape == (1, 512, 1, 2, 2)
        assert net(torch.randn(1, 3, 8, 48, 64)).shape == (1, 512, 1, 3, 4)


def test_linear_probe_keeps_the_backbone_frozen_and_in_eval_mode():
    clf = R2Plus1DClassifier(5, freeze_backbone=True).train()
    assert not clf.backbone.training and clf.fc.training
    bn = clf.backbone.stem[1]
    before = bn.running_mean.clone()
    loss = clf(torch.randn(2, 3, 4, 32, 32)).sum()
    loss.backward()
    assert torch.equal(bn.running_mean, before)
    assert all(p.grad is None for p in clf.backbone.parameters()) and clf.fc.weight.grad is not None


def test_fine_tuning_classifier_trains_everything():
    clf = R2Plus1DClassifier(5).train()
    logits, features = clf(torch.randn(2, 3, 4, 32, 32), return_features=True)
    assert logits.shape == (2, 5) and features.shape == (2, 512)
    logits.sum().backward()
    assert clf.backbone.stem[0].weight.grad is not None


# --- encoder ----------------------------------------------------------------------------------------------

def test_encoder_and_wrapper_parameter_counts(model):
    assert _n(model.encoder_q) == 14_128_605  # 12,487,005 backbone + 5 x 328,320 heads
    assert _n(model) == 28_257_210 and _n(model, trainable=True) == 14_128_605


def test_activation_maps_and_reference_embeddings_shapes():
    enc = DCLREncoder().eval()
    with torch.no_grad():
        maps = enc.activation_maps(_views(2))
    for a in maps[:3]:
        assert a.shape == (2, 1, 1, 2, 2)
    for r in maps[3:]:
        assert r.shape == (2, 128) and torch.allclose(r.norm(dim=1), torch.ones(2), atol=1e-5)


def test_embeddings_without_maps_equal_plain_pooling_and_a_uniform_map_changes_nothing():
    enc = DCLREncoder().eval()
    x = _views(2)
    with torch.no_grad():
        plain = enc.embeddings(x)
        uniform = enc.embeddings(x, torch.full((2, 1, 1, 2, 2), 3.0), torch.full((2, 1, 1, 2, 2), 0.5))
        fv = enc.feature_maps(x)[:, 0].mean(dim=(2, 3, 4))
        peaked = torch.zeros(2, 1, 1, 2, 2)
        peaked[..., 0, 0] = 1.0
        weighted = enc.embeddings(x, peaked, None)
    assert torch.allclose(plain.vs, F.normalize(enc.h_vs(fv), dim=1), atol=1e-5)
    for a, b in zip(plain, uniform):
        assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(weighted.vs, plain.vs, atol=1e-4) and torch.allclose(weighted.vd, plain.vd)


# --- wrapper pieces ---------------------------------------------------------------------------------------

def test_ema_updates_parameters_only():
    torch.manual_seed(1)
    m = DCLR(queue_size=8)
    with torch.no_grad():
        for p in m.encoder_q.parameters():
            p.add_(1.0)
        for b in m.encoder_k.buffers():
            if b.dtype.is_floating_point:
                b.fill_(7.0)
    k_before = [p.clone() for p in m.encoder_k.parameters()]
    q_now = [p.clone() for p in m.encoder_q.parameters()]
    m.momentum_update()
    for pk, k0, pq in zip(m.encoder_k.parameters(), k_before, q_now):
        assert torch.allclose(pk, 0.999 * k0 + 0.001 * pq, atol=1e-6)
    assert all(torch.all(b == 7.0) for b in m.encoder_k.buffers() if b.dtype.is_floating_point)


def test_enqueue_writes_all_seven_queues_at_one_pointer_and_wraps(model):
    m = copy.deepcopy(model)
    keys = {name: F.normalize(torch.randn(2, 128), dim=1) for name in QUEUES}
    m._dequeue_and_enqueue(keys)
    assert int(m.queue_ptr) == 2 and int(m.queue_filled) == 2
    for name in QUEUES:
        assert torch.equal(getattr(m, f"queue_{name}")[:, :2], keys[name].T)
    for _ in range(3):
        m._dequeue_and_enqueue(keys)
    assert int(m.queue_ptr) == 0 and int(m.queue_filled) == 8


def test_queue_size_must_divide_by_the_global_batch():
    check_queue_size(2048, 64)
    with pytest.raises(ValueError, match="K=2048 must be a positive multiple of the global batch 40"):
        check_queue_size(2048, 40)


def test_neighbour_positives_mark_the_key_and_the_top_k_queue_entries():
    sim = torch.tensor([[0.1, 0.5, 0.2, 0.9], [0.8, 0.0, 0.7, 0.1]])
    pos = neighbour_positives(sim, 2)
    assert pos.tolist() == [[True, False, True, False, True], [True, True, False, True, False]]


def _slow_multi_positive_nce(logits: torch.Tensor, positives: torch.Tensor) -> float:
    # main_view.py MultiNCELoss written out: -log of the softmax mass on the positives, mean over rows.
    total = 0.0
    for row, mask in zip(logits.tolist(), positives.tolist()):
        z = sum(math.exp(v) for v in row)
        total += -math.log(sum(math.exp(v) / z for v, p in zip(row, mask) if p))
    return total / len(logits)


def test_multi_positive_nce_matches_a_slow_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 9, generator=g) * 5
    positives = neighbour_positives(torch.rand(4, 8, generator=g), 3)
    assert math.isclose(float(multi_positive_nce(logits, positives)),
                        _slow_multi_positive_nce(logits, positives), rel_tol=1e-5)


def test_forward_pairs_logits_and_positives_as_the_reference_table(model):
    m = copy.deepcopy(model).train()
    q, k = _views(2, 1), _views(2, 2)
    ref = copy.deepcopy(m)  # the state the forward sees: queues before its enqueue
    loss, terms = m(q, k, update_key_encoder=False)
    assert "loss_map" not in terms  # the activation-map term is off by default
    with torch.no_grad():
        mq, mk = ref.encoder_k.activation_maps(q), ref.encoder_k.activation_maps(k)
        zq = ref.encoder_q.embeddings(q, mq.static, mq.dynamic)
        zk = ref.encoder_k.embeddings(k, mk.static, mk.dynamic)
        sim_s = torch.softmax(mq.ref_static @ ref.queue_rs, 1)
        sim_d = torch.softmax(mq.ref_dynamic @ ref.queue_rd, 1)

        def logits(a, b, queue):
            return torch.cat([(a * b).sum(1, keepdim=True), a @ queue], 1) / 0.07

        ps, pd = neighbour_positives(sim_s, 5), neighbour_positives(sim_d, 5)
        pv = neighbour_positives(sim_s + sim_d, 5)
        vv = _slow_multi_positive_nce(logits(zq.vv, zk.vv, ref.queue_vv), pv)
        vs_sv = (_slow_multi_positive_nce(logits(zq.vs, zk.sv, ref.queue_sv), ps)
                 + _slow_multi_positive_nce(logits(zq.sv, zk.vs, ref.queue_vs), ps))
        vd_dv = (_slow_multi_positive_nce(logits(zq.vd, zk.dv, ref.queue_dv), pd)
                 + _slow_multi_positive_nce(logits(zq.dv, zk.vd, ref.queue_vd), pd))
    assert math.isclose(float(terms["loss_vv"]), vv, rel_tol=1e-3, abs_tol=1e-4)
    assert math.isclose(float(terms["loss_vs_sv"]), vs_sv, rel_tol=1e-3)
    assert math.isclose(float(terms["loss_vd_dv"]), vd_dv, rel_tol=1e-3)
    assert math.isclose(float(loss.detach()), vv + vs_sv + vd_dv, rel_tol=1e-3)
    assert torch.allclose(m.queue_vs[:, :2], zk.vs.T, atol=1e-4)  # keys enqueued in the original order
    assert torch.allclose(m.queue_rs[:, :2], mk.ref_static.T, atol=1e-4)
    assert float(terms["queue_fill"]) == 0.25 and 0.0 <= float(terms["acc_vv"]) <= 1.0


def test_gradient_reaches_all_five_query_heads_and_not_the_key_encoder(model):
    m = copy.deepcopy(model).train()
    loss, _ = m(_views(2, 3), _views(2, 4))
    loss.backward()
    for name in HEADS:
        head = getattr(m.encoder_q, f"h_{name}")
        assert head[0].weight.grad is not None and head[0].weight.grad.abs().sum() > 0, name
    assert m.encoder_q.backbone.stem[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.encoder_k.parameters())


def test_map_loss_is_off_by_default_and_our_variant_has_a_gradient(model):
    assert model.map_loss_weight == 0.0
    m = copy.deepcopy(model).train()
    m.map_loss_weight = 0.1
    loss, terms = m(_views(2, 5), _views(2, 6))
    assert terms["loss_map"] > 0
    loss.backward()
    assert m.encoder_q.backbone.layer4[0].conv2[0][3].weight.grad is not None


def test_full_state_round_trips_through_state_dict(model, tmp_path):
    m = copy.deepcopy(model).train()
    m(_views(2, 7, t=2, s=16), _views(2, 8, t=2, s=16))
    torch.save(m.state_dict(), tmp_path / "dclr.pth")
    torch.manual_seed(123)
    fresh = DCLR(queue_size=8)
    fresh.load_state_dict(torch.load(tmp_path / "dclr.pth", weights_only=True), strict=True)
    for (name, a), b in zip(m.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert int(fresh.queue_ptr) == 2 and int(fresh.queue_filled) == 2


# --- checkpoint layouts -----------------------------------------------------------------------------------

def _released_layout(m: DCLR) -> dict:
    # The released MoCo_View checkpoint, written from our weights: module. prefix, view_resnet.py names.
    state = {}
    for key, value in m.state_dict().items():
        if key == "queue_filled":
            continue
        key = key.replace(".backbone.", ".")
        for name in HEADS:
            key = key.replace(f".h_{name}.", f".f{name}.")
        state["module." + key] = value
    return {"epoch": 200, "arch": "r2plus1d_18", "state_dict": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.001, "momentum": 0.9, "params": [0, 1]}]}}


def test_released_checkpoint_loads_strictly_into_the_wrapper(model, tmp_path):
    torch.save(_released_layout(model), tmp_path / "checkpoint_0199.pth.tar")
    state = convert_dclr_reference_state(read_checkpoint(tmp_path / "checkpoint_0199.pth.tar"))
    fresh = DCLR(queue_size=8)
    fresh.load_state_dict(state, strict=True)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        if name != "queue_filled":
            assert torch.equal(a, b), name
    assert int(fresh.queue_filled) == 8


def test_released_checkpoint_with_an_unknown_key_is_refused(model):
    ckpt = _released_layout(model)
    ckpt["state_dict"]["module.sampler.fc.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="module|sampler.fc.weight"):
        convert_dclr_reference_state(ckpt)


@pytest.mark.parametrize("layout", ["released", "ours"])
def test_backbone_loads_strictly_into_the_downstream_model(model, tmp_path, layout):
    ckpt = _released_layout(model) if layout == "released" else model.state_dict()
    torch.save(ckpt, tmp_path / "pretrain.pth")
    clf = R2Plus1DClassifier(101)
    clf.backbone.load_state_dict(backbone_state_from_pretraining(read_checkpoint(tmp_path / "pretrain.pth")),
                                 strict=True)
    for a, b in zip(clf.backbone.state_dict().values(), model.encoder_q.backbone.state_dict().values()):
        assert torch.equal(a, b)


def test_load_dclr_checkpoint_detects_the_layout_and_the_target(model, tmp_path):
    torch.save(_released_layout(model), tmp_path / "released.pth.tar")
    torch.save(model.state_dict(), tmp_path / "ours.pth")
    for name in ("released.pth.tar", "ours.pth"):
        fresh = DCLR(queue_size=8)
        load_dclr_checkpoint(fresh, tmp_path / name)
        assert torch.equal(fresh.queue_vv, model.queue_vv) and torch.equal(
            fresh.encoder_k.h_dv[2].weight, model.encoder_k.h_dv[2].weight)
    clf = R2Plus1DClassifier(3)
    load_dclr_checkpoint(clf, tmp_path / "released.pth.tar")
    assert torch.equal(clf.backbone.layer4[0].conv2[1].weight, model.encoder_q.backbone.layer4[0].conv2[1].weight)
    with pytest.raises(ValueError, match="missing keys"):
        load_dclr_checkpoint(DCLR(queue_size=8, layers=(2, 2, 2, 2)), tmp_path / "ours.pth")


def test_backbone_depth_mismatch_names_both_depths(model):
    with pytest.raises(ValueError, match=r"layers \[1, 1, 1, 1\].*layers \[2, 2, 2, 2\]"):
        backbone_state_from_pretraining(_released_layout(model), layers=(2, 2, 2, 2))


# --- optimisation -----------------------------------------------------------------------------------------

def test_a_few_sgd_steps_on_a_fixed_batch_drive_the_loss_down():
    torch.manual_seed(0)
    m = DCLR(queue_size=8).train()
    queues = {name: buf.clone() for name, buf in m.named_buffers() if name.startswith("queue")}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.001, momentum=0.9)
    q, k = _views(2, 10, t=2, s=16), _views(2, 11, t=2, s=16)
    losses = []
    for _ in range(5):
        for name, value in queues.items():  # same negatives every step: isolate the optimisation
            getattr(m, name).copy_(value)
        loss, _ = m(q, k)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses  # measured 2.26 -> 0.03 (torch 2.13, CPU)


# --- two workers (gloo) -----------------------------------------------------------------------------------

def _two_worker_body(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # same initial model and queues on both workers
        m = DCLR(queue_size=8).train()
        # all-gather enqueue: both workers hold the keys of both, in rank order
        keys = {name: torch.full((2, 128), float(rank + 1)) for name in QUEUES}
        m._dequeue_and_enqueue(keys)
        assert int(m.queue_ptr) == 4
        assert torch.all(m.queue_vv[:, :2] == 1.0) and torch.all(m.queue_vv[:, 2:4] == 2.0)
        # shuffle-BN: a clip keeps its own map through the shuffle, and the unshuffle restores the order
        x = torch.arange(4.0).view(2, 2) + 10 * rank
        (xs, ms), unshuffle = m._batch_shuffle(x, 2 * x)
        assert torch.equal(ms, 2 * xs)
        assert torch.equal(m._batch_unshuffle(xs, unshuffle), x)
        assert sorted(concat_all_gather(xs)[:, 0].tolist()) == [0.0, 2.0, 10.0, 12.0]
        # one full step: queues stay identical across workers
        torch.manual_seed(100 + rank)
        loss, terms = m(_views(2, 20 + rank, t=2, s=16), _views(2, 30 + rank, t=2, s=16))
        assert int(m.queue_ptr) == 0 and float(terms["queue_fill"]) == 1.0
        torch.save({name: b for name, b in m.named_buffers() if name.startswith("queue")},
                   os.path.join(out_dir, f"rank{rank}.pth"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_workers_gather_keys_and_shuffle_bn_restores_the_order(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_two_worker_body, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pth", weights_only=True)
    b = torch.load(tmp_path / "rank1.pth", weights_only=True)
    for name in a:
        assert torch.equal(a[name], b[name]), name
