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
    assert not keep_line({"actor_name": "RayTrainWorker"}, "Checkpoint successfully created at: Checkpoint(...)")
    assert not keep_line({"actor_name": "RayTrainWorker"}, "2026/12/07 INFO mlflow.system_metrics.system_metrics_"
                                                           "monitor: Started monitoring system metrics.")


BATCH = {"ip": "127.0.0.1", "job": "01000000", "is_err": False}  # a forwarded batch's keys besides pid/lines


def test_the_filter_wraps_rays_own_printing_handler_and_restores_it():
    """Through Ray's real dispatcher of forwarded worker lines (the handler ``ray.init(log_to_driver=True)`` adds
    is stood in for by a recorder under its name, since the test session runs Ray with log_to_driver off)."""
    from actionray.platform.progress import filter_worker_lines
    from actionray.platform.ray_compat import worker_stdstream_dispatcher

    dispatcher = worker_stdstream_dispatcher()

    printed, terminal = [], Terminal()

    def recorder(data):
        printed.append((data.get("actor_name"), data["lines"]))

    dispatcher.add_handler("ray_print_logs", recorder)
    bar = TerminalBar(epochs=2, steps_per_epoch=lambda world: 4, stream=terminal)
    try:
        restore = filter_worker_lines(bar)
        bar.update(1, 2, 1)
        dispatcher.emit({**BATCH, "pid": 7, "actor_name": "PreemptionWatcher", "lines": ["polling 2 nodes"]})
        dispatcher.emit({**BATCH, "pid": 8, "actor_name": "RayTrainWorker",
                         "lines": ["[actionray] epoch 1/2 | loss 1.0", "Failed to query Ray Train Controller x"]})
        restore()
        dispatcher.emit({**BATCH, "pid": 7, "actor_name": "PreemptionWatcher", "lines": ["polling again"]})
    finally:  # remove only the recorder: a Ray started in this process keeps its own handler
        with dispatcher._lock:
            dispatcher.handlers = [(name, h) for name, h in dispatcher.handlers if h is not recorder]
    assert printed == [("RayTrainWorker", ["[actionray] epoch 1/2 | loss 1.0"]),
                       ("PreemptionWatcher", ["polling again"])]  # after restore Ray prints everything again
    assert terminal.getvalue().endswith("\r")  # the bar was cleared before the worker line was printed


def test_train_piped_to_a_file_prints_plain_lines_and_a_summary(synth_videos, tmp_path):
    """The real command with stdout and stderr on pipes (a log file, CI, `ray job logs`): no progress redraws, no
    colour escapes, none of Ray's core-worker noise; a short summary on stdout, the JSON result in the run folder."""
    import json
    import subprocess
    import sys

    import yaml
    from test_sweep_interrupt import cli_env
    from test_train import tiny_config

    from actionray.platform.raysession import QUIET_ENV

    cfg = tiny_config(synth_videos, tmp_path, train={"run_name": "piped"})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    env = {k: v for k, v in cli_env().items() if k not in QUIET_ENV and k != "RAY_COLOR_PREFIX"}  # product defaults
    done = subprocess.run([sys.executable, "-m", "actionray", "train", str(config)], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=500)
    both = done.stdout + done.stderr
    assert done.returncode == 0, both[-3000:]
    assert "\r" not in both and "\x1b[" not in both
    assert "core_worker" not in both and "Running Dataset" not in both and "Progress bars disabled" not in both
    assert "Checkpoint successfully created" not in both and "Moving model to device" not in both
    assert "mlflow.system_metrics" not in both and "Creating initial MLflow database tables" not in both
    run_dir = tmp_path / "runs" / "piped"
    result = json.loads((run_dir / "result.json").read_text())
    lines = done.stdout.splitlines()
    assert "{" not in done.stdout  # the JSON only with --json
    assert any(line.startswith("[actionray] done: best val_top1 ") and "at epoch 1" in line for line in lines)
    assert f"[actionray] run folder: {run_dir} (result.json" in done.stdout
    assert f"[actionray] MLflow run {result['mlflow_run_id']}: see it with  actionray ui" in done.stdout
