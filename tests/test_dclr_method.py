"""DCLR on the platform: pre-training and linear probing through 2-worker Ray Train runs on generated videos,
resume with the queues, the first-epoch warm-up, the config check on K, the released checkpoint layout.

Sizes are the smallest the backbone takes (4 frames at 16 px, 4 training videos, one step per worker per
epoch): a DCLR step runs the 14M-parameter encoder four times, which costs seconds on a shared 2-core machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from actionray.config import ConfigError, build_config

VIDEOS = 4  # training videos: one step of 2 per worker with 2 workers


def _subset(list_file: Path, out: Path, lines: int) -> str:
    """The first ``lines`` entries of a list, written next to it (its relative paths stay valid)."""
    out.write_text("".join(list_file.read_text().splitlines(keepends=True)[:lines]))
    return str(out)


def dclr_config(synth, workdir: Path, **sections):
    root = Path(synth.train_list).parent
    tree = {
        "name": "dclr-tiny",
        "method": {"name": "dclr", "queue_size": 16, "clip_len": 4, "stride": 2, "crop_size": 16,
                   "warmup_iters": 1},
        "data": {"root": str(root), "train_list": _subset(synth.train_list, workdir / "train4.txt", VIDEOS),
                 "val_list": _subset(synth.val_list, workdir / "val2.txt", 2), "num_classes": synth.num_classes,
                 "input_size": 16, "scale_size": 18, "batch_size": 2, "decode_tasks": 2, "decode_batch_size": 2},
        "optim": {"lr": 0.05, "weight_decay": 1e-4},
        "schedule": {"name": "constant"},
        "train": {"epochs": 1, "storage_path": str(workdir / "runs"), "log_every": 1, "run_name": "pretrain"},
        "scaling": {"num_workers": 2, "max_failures": 0, "torch_threads": 1},
        "tracking": {"uri": f"sqlite:///{workdir / 'mlflow.db'}", "artifact_location": str(workdir / "mlartifacts")},
    }
    for section, values in sections.items():
        tree.setdefault(section, {}).update(values)
    return build_config(tree)


def probe_config(synth, workdir: Path, init: str):
    cfg = dclr_config(synth, workdir, train={"run_name": "probe"})
    tree = cfg.to_dict()
    tree["method"] = {"name": "dclr_downstream", "mode": "probe", "dropout": 0.0, "init_checkpoint": init}
    tree["data"].update({"sampling": "dense", "num_segments": 4, "dense_window": 8, "train_crop": "random_resized"})
    tree["optim"] = {"lr": 0.5, "weight_decay": 0.0}
    return build_config(tree)


def _seeded_model(cfg):
    """The model a worker of rank 0 builds at the start of a run (same seeding as the training loop)."""
    from actionray.platform.loop import seed_everything

    seed_everything(cfg.train.seed, 0)
    return cfg.recipe.build_model(cfg)


@pytest.fixture(scope="module")
def pretrain_run(ray_local, synth_videos, tmp_path_factory):
    """One epoch of DCLR pre-training (its only step a warm-up step), then --resume to a second epoch."""
    from actionray.platform.train import fit

    workdir = tmp_path_factory.mktemp("dclr")
    first = fit(dclr_config(synth_videos, workdir))
    resumed = fit(dclr_config(synth_videos, workdir, train={"epochs": 2}), resume=True)
    return workdir, first, resumed


@pytest.fixture(scope="module")
def probe_run(pretrain_run, synth_videos):
    """A 2-worker linear probe on the pre-trained encoder of ``pretrain_run``."""
    from actionray.platform.train import fit

    workdir, _, resumed = pretrain_run
    cfg = probe_config(synth_videos, workdir, resumed["latest_checkpoint"])
    return cfg, fit(cfg)


def test_a_pretraining_epoch_runs_on_two_workers_and_reports_the_dclr_terms(pretrain_run):
    _, first, _ = pretrain_run
    final = first["history"][-1]
    assert first["world_size"] == 2
    for key in ("train_loss", "train_loss_vv", "train_loss_vs_sv", "train_loss_vd_dv", "train_acc_vv",
                "train_queue_fill", "val_loss", "val_acc_vv", "lr"):
        assert key in final and final[key] == final[key], key  # present and not NaN
    assert final["train_warmup"] == 1.0
    # one step per worker: 2 workers x 2 clips enqueued of K = 16
    assert final["train_queue_fill"] == pytest.approx(4 / 16)


def test_warmup_steps_leave_the_query_encoder_unchanged_but_fill_the_queues(pretrain_run, synth_videos):
    from actionray.platform.checkpoint import load_state

    workdir, first, _ = pretrain_run
    state = load_state(first["latest_checkpoint"])["model"]
    initial = _seeded_model(dclr_config(synth_videos, workdir)).state_dict()
    for key, value in initial.items():
        if key.startswith("encoder_q.") and "running" not in key and "num_batches" not in key:
            assert torch.equal(state[key], value), key  # no weight decay, no momentum moved it
    assert int(state["queue_ptr"]) == 4 and int(state["queue_filled"]) == 4
    assert not torch.equal(state["queue_vv"][:, :4], initial["queue_vv"][:, :4])


def test_resume_restores_queues_and_pointer(pretrain_run):
    from actionray.platform.checkpoint import load_state

    _, first, resumed = pretrain_run
    assert resumed["start_epoch"] == 1 and [h["epoch"] for h in resumed["history"]] == [1, 2]
    before = load_state(first["latest_checkpoint"])["model"]
    after = load_state(resumed["latest_checkpoint"])["model"]
    # epoch 2 wrote columns 4..7 after the restored pointer; the columns of epoch 1 survive untouched
    assert int(after["queue_ptr"]) == 8 and int(after["queue_filled"]) == 8
    for name in ("vv", "vs", "vd", "sv", "dv", "rs", "rd"):
        assert torch.equal(after[f"queue_{name}"][:, :4], before[f"queue_{name}"][:, :4]), name
        assert not torch.equal(after[f"queue_{name}"][:, 4:8], before[f"queue_{name}"][:, 4:8]), name
    assert resumed["history"][-1]["train_warmup"] == 0.0  # the warm-up is epoch 0's only


def test_a_probe_epoch_trains_the_classifier_and_leaves_the_pretrained_backbone_alone(pretrain_run, probe_run):
    from actionray.platform.checkpoint import load_state

    _, _, resumed = pretrain_run
    cfg, summary = probe_run
    assert summary["world_size"] == 2
    assert {"val_top1", "val_top5", "val_mean_class_acc", "train_loss"} <= set(summary["history"][-1])
    encoder = load_state(resumed["latest_checkpoint"])["model"]
    probe = load_state(summary["latest_checkpoint"])["model"]
    for key, value in probe.items():
        if key.startswith("backbone."):  # weights and BN statistics (backbone in eval mode)
            assert torch.equal(value, encoder["encoder_q." + key]), key
    initial = _seeded_model(cfg).state_dict()
    assert not torch.equal(probe["fc.weight"], initial["fc.weight"])


def test_the_real_pretraining_step_drives_the_loss_down_on_a_fixed_batch(synth_videos, tmp_path):
    from actionray.platform.optim import build_optimizer

    torch.manual_seed(0)
    cfg = dclr_config(synth_videos, tmp_path, method={"name": "dclr", "queue_size": 4, "topk": 1, "clip_len": 4,
                                                      "crop_size": 16, "warmup_iters": 0},
                      scaling={"num_workers": 1}, optim={"lr": 0.1, "weight_decay": 0.0})
    method = cfg.recipe
    model = method.build_model(cfg)
    optimizer = build_optimizer(method.param_groups(model, cfg), cfg)
    video = torch.randint(0, 256, (2, 4, 4, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    batch = {"video": video, "epoch": torch.ones(2, dtype=torch.long)}
    losses = []
    for _ in range(6):
        torch.manual_seed(0)  # the same augmentation each step: a fixed batch
        out = method.train_step(model, batch, cfg)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert sum(losses[-2:]) < 0.8 * sum(losses[:2]), losses


def test_a_queue_not_divisible_by_the_global_batch_is_a_config_error_naming_the_keys(synth_videos, tmp_path):
    with pytest.raises(ConfigError, match=r"method\.queue_size K=18 .*data\.batch_size x scaling\.num_workers "
                                          r"= 2 x 2 = 4"):
        dclr_config(synth_videos, tmp_path, method={"queue_size": 18})


def test_the_released_layout_loads_strictly_into_the_moco_wrapper_and_the_downstream_model(tmp_path):
    from actionray.models import load_reference_checkpoint
    from actionray.models.dclr import DCLR
    from actionray.models.r2plus1d import R2Plus1DClassifier

    source = DCLR(queue_size=8)
    heads = {f"h_{n}.": f"f{n}." for n in ("vv", "vs", "vd", "sv", "dv")}
    released = {}
    for key, value in source.state_dict().items():
        if key == "queue_filled":
            continue  # ours only
        for prefix in ("encoder_q.", "encoder_k."):
            if key.startswith(prefix):
                rest = key[len(prefix):].removeprefix("backbone.")
                rest = next((heads[h] + rest[len(h):] for h in heads if rest.startswith(h)), rest)
                key = prefix + rest
        released["module." + key] = value
    path = tmp_path / "checkpoint_0199.pth.tar"
    torch.save({"epoch": 200, "arch": "r2plus1d_18", "state_dict": released, "optimizer": {}}, path)

    target = DCLR(queue_size=8)
    load_reference_checkpoint(target, path)
    for key, value in source.state_dict().items():
        if key != "queue_filled":
            assert torch.equal(target.state_dict()[key], value), key
    assert int(target.queue_filled) == 8
    downstream = R2Plus1DClassifier(5)
    load_reference_checkpoint(downstream, path)
    assert torch.equal(downstream.backbone.stem[0].weight, source.encoder_q.backbone.stem[0].weight)
    with pytest.raises(ValueError, match="depth mismatch"):
        load_reference_checkpoint(R2Plus1DClassifier(5, layers=(2, 2, 2, 2)), path)
