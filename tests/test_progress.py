"""The driver's console: a progress bar only on a terminal, and Ray's internal actors' lines kept out."""

from __future__ import annotations

import io

from actionray.platform.progress import TerminalBar, keep_line


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_is_drawn_in_place_on_a_terminal_and_erased_by_clear():
    terminal = Terminal()
    bar = TerminalBar(epochs=5, steps_per_epoch=lambda world: 12 // world, stream=terminal, width=10)
    bar.update(2, 3, 2)  # epoch 2, step 3 of 12 / 2 = 6
    assert terminal.getvalue() == "\r[actionray] epoch 2/5 |#####-----| step 3/6"
    bar.update(2, 6, 2)
    redrawn = terminal.getvalue().split("\r")[-1]
    assert redrawn.startswith("[actionray] epoch 2/5 |##########| step 6/6  ") and redrawn.endswith(" it/s")
    bar.clear()
    assert terminal.getvalue().endswith("\r" + " " * len(redrawn) + "\r")


def test_the_bar_follows_an_elastic_world_size():
    bar = TerminalBar(epochs=3, steps_per_epoch=lambda world: 12 // world, stream=Terminal(), width=4)
    assert bar.text(2, 3, world=1).endswith("step 3/12") and bar.text(2, 3, world=4).endswith("step 3/3")


def test_no_bar_in_a_log_file():
    log = io.StringIO()
    bar = TerminalBar(epochs=5, steps_per_epoch=lambda world: 6, stream=log)
    bar.update(1, 2, 1)
    bar.clear()
    assert not bar.enabled and log.getvalue() == ""


def test_ray_trains_internal_actors_are_noise_and_worker_lines_are_not():
    assert not keep_line({"actor_name": "PreemptionWatcher"}, "PreemptionWatcher polling 2 node(s) every 5.0s.")
    assert not keep_line({"actor_name": "PlacementGroupCleaner"}, "Traceback (most recent call last):")
    assert not keep_line({"actor_name": "Other"}, "Failed to query Ray Train Controller actor state. Retrying")
    assert keep_line({"actor_name": "RayTrainWorker"}, "[actionray] epoch 1/5 | loss 2.3 | val_top1 12.5%")
    assert keep_line({"actor_name": "TrainController"}, "Detected ready resources for 1 workers in the cluster.")
