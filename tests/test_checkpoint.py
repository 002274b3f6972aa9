"""Training state round-trips through one atomically written file."""

import random

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
