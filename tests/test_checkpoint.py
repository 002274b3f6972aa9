"""Training state round-trips through one atomically written file."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from actionray.platform.checkpoint import STATE_FILE, load_state, restore_rng_state, rng_state, save_state


def test_state_round_trips_model_optimizer_and_epoch(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    save_state(tmp_path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3})
    state = load_state(tmp_path)
    assert state["epoch"] == 3
    assert torch.equal(state["model"]["weight"], model.weight.detach())
    assert state["optimizer"]["state"][0]["momentum_buffer"].shape == (2, 3)


def test_save_leaves_no_temporary_file(tmp_path):
    save_state(tmp_path, {"epoch": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]


def test_restored_rng_repeats_the_same_draws():
    state = rng_state()
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    restore_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first


def test_load_of_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_state(tmp_path)


# -- which checkpoint a path means -------------------------------------------------------------------------------
def _two_checkpoints(run_dir):
    older = save_state(run_dir / "checkpoint_2026-01-01_00-00-01.000000", {"epoch": 1}).parent
    newer = save_state(run_dir / "checkpoint_2026-01-01_00-00-02.000000", {"epoch": 2}).parent
    return older, newer


def test_an_unreadable_newest_checkpoint_is_named_in_one_warning_and_the_older_one_is_used(tmp_path, caplog):
    from actionray.platform.checkpoint import newest_complete_checkpoint

    older, newer = _two_checkpoints(tmp_path)
    state = newer / STATE_FILE
    state.write_bytes(state.read_bytes()[:50])  # cut short
    with caplog.at_level("WARNING", logger="actionray.platform.checkpoint"):
        folder, loaded = newest_complete_checkpoint(tmp_path)
    assert folder == older and loaded["epoch"] == 1
    (record,) = caplog.records
    assert str(newer) in record.getMessage() and "unreadable" in record.getMessage()
    assert "\n" not in record.getMessage()


def test_a_folder_that_is_neither_checkpoint_nor_run_is_refused_naming_it(tmp_path):
    from actionray.platform.checkpoint import CheckpointError, resolve_checkpoint

    with pytest.raises(CheckpointError, match=rf"--checkpoint {tmp_path}: neither a checkpoint folder"):
        resolve_checkpoint(tmp_path)
    older, _ = _two_checkpoints(tmp_path / "run")
    assert resolve_checkpoint(older) == older and resolve_checkpoint(older / STATE_FILE) == older / STATE_FILE
    # a run folder without a recorded metric (written by an older actionray): its newest complete checkpoint
    assert resolve_checkpoint(tmp_path / "run").name == "checkpoint_2026-01-01_00-00-02.000000"


@pytest.fixture(scope="module")
def tsn_run(ray_local, synth_videos, tmp_path_factory):
    """A real 2-epoch TSN run (lr high enough that the last epoch need not be the best)."""
    from test_train import tiny_config

    from actionray.platform.train import fit

    workdir = tmp_path_factory.mktemp("resolve")
    cfg = tiny_config(synth_videos, workdir, train={"epochs": 2, "run_name": "r"}, optim={"lr": 0.3})
    return cfg, workdir, fit(cfg)


def test_a_run_folder_means_its_best_checkpoint_for_eval_and_init_checkpoint(tsn_run, synth_videos, capsys):
    import yaml

    from actionray.cli import main
    from actionray.config import build_config
    from actionray.platform.checkpoint import resolve_checkpoint
    from actionray.platform.train import resolve_init_checkpoint

    cfg, workdir, summary = tsn_run
    run_dir, best = Path(summary["run_path"]), Path(summary["best_checkpoint"])
    assert resolve_checkpoint(run_dir) == best  # Ray's own choice by the run's checkpoint metric
    assert "is a run folder: using its best checkpoint: val_top1" in capsys.readouterr().err
    # method.init_checkpoint: the workers get the resolved folder
    ftcl = build_config({"name": "f", "method": {"name": "ftcl", "feature_root": str(workdir),
                                                 "init_checkpoint": str(run_dir)}})
    assert resolve_init_checkpoint(ftcl).method.init_checkpoint == str(best)
    # actionray eval --checkpoint RUN_FOLDER
    config = workdir / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    assert main(["eval", str(config), "--checkpoint", str(run_dir), "--views", "1x1",
                 "--output", str(workdir / "s.parquet")]) == 0
    out = capsys.readouterr()
    assert f"--checkpoint {run_dir} is a run folder: using its best checkpoint" in out.err
    assert f'"checkpoint": "{best}"' in out.out
