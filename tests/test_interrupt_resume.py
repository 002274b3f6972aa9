"""Interrupts and resume: Ctrl+C ends `actionray train` with 130, KILLED and the resume command; `--resume`
continues after the newest complete checkpoint folder on disk, also after the driver was SIGKILLed.

The interrupted runs are real `actionray train` processes with their own local Ray, as a user would run them;
the resumed runs use the session's Ray (``ray_local``) to save a Ray start-up each.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from local_cluster import session_processes
from test_sweep_interrupt import cli_env
from test_train import metric_steps, tiny_config

EPOCHS = 3


def deterministic_config(synth, workdir: Path, **train):
    """1 worker, ``train.deterministic``: a resumed run must end exactly where an uninterrupted one does."""
    return tiny_config(synth, workdir, train={"epochs": EPOCHS, "deterministic": True, "val_every": 1, **train},
                       data={"decode_tasks": 2, "decode_batch_size": 2})


def start_train(workdir: Path, cfg) -> tuple[subprocess.Popen, Path]:
    """`actionray train CONFIG` in a session of its own (its Ray shares it; Ray gives each worker a process group
    of its own, so SIGINT to the driver's group reaches the driver only, like Ctrl+C); returns (process, config)."""
    path = workdir / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    argv = [sys.executable, "-m", "actionray", "train", str(path)]
    process = subprocess.Popen(argv, cwd=workdir, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    return process, path


def saved_epochs(runs: Path) -> list[int]:
    """Epochs of the checkpoint folders whose state.pt loads, read independently of the code under test."""
    import torch

    epochs = []
    for state in runs.glob("*/checkpoint_*/state.pt"):
        try:
            epochs.append(int(torch.load(state, map_location="cpu", weights_only=False)["epoch"]))
        except Exception:  # noqa: BLE001 -- a file still being copied
            pass
    return sorted(epochs)


def kill_session(process: subprocess.Popen) -> str:
    """SIGKILL the driver and every process of its session (its Ray, workers included) at once, without any
    clean-up, as when the machine running the driver dies; returns the driver's output once none is left."""
    deadline = time.monotonic() + 30
    while (pids := session_processes(process.pid)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    out = process.communicate(timeout=60)[0]
    assert not session_processes(process.pid), "processes of the killed driver's session survived SIGKILL"
    return out


def wait_for_epoch(process: subprocess.Popen, runs: Path, epoch: int, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if saved_epochs(runs) and saved_epochs(runs)[-1] >= epoch:
            return
        time.sleep(1)
    pytest.fail(f"no checkpoint of epoch {epoch} appeared:\n" + kill_session(process)[-4000:])


def mlflow_runs(cfg) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    return client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.fixture(scope="module")
def uninterrupted(ray_local, synth_videos, tmp_path_factory) -> dict:
    """The reference: the same deterministic run, never interrupted."""
    from actionray.platform.train import fit

    workdir = tmp_path_factory.mktemp("uninterrupted")
    return fit(deterministic_config(synth_videos, workdir, run_name="reference"))


@pytest.fixture(scope="module")
def interrupted(synth_videos, tmp_path_factory) -> tuple:
    """`actionray train` stopped with Ctrl+C (SIGINT to its process group) once epoch 1 is saved."""
    workdir = tmp_path_factory.mktemp("interrupted")
    cfg = deterministic_config(synth_videos, workdir)
    process, config_path = start_train(workdir, cfg)
    try:
        wait_for_epoch(process, workdir / "runs", 1)
        os.killpg(process.pid, signal.SIGINT)
        out, _ = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            kill_session(process)
    return cfg, workdir, config_path, process.returncode, out


def test_sigint_exits_130_with_one_line_naming_the_epoch_and_the_resume_command(interrupted):
    cfg, workdir, config_path, returncode, out = interrupted
    assert returncode == 130, out[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("interrupted (SIGINT)")]
    assert len(lines) == 1, out[-3000:]
    match = re.fullmatch(r"interrupted \(SIGINT\) after epoch (\d+) of 3 \(saved in (\S+)\); resume with: (.+)",
                         lines[0])
    assert match, lines[0]
    epoch, run_dir, command = int(match.group(1)), Path(match.group(2)), shlex.split(match.group(3))
    assert epoch == saved_epochs(workdir / "runs")[-1] >= 1
    assert command == ["actionray", "train", str(config_path), "--resume", str(run_dir)]
    driver = [line for line in out.splitlines() if not line.startswith("(")]  # "(Actor pid=...)": Ray's workers
    assert not [line for line in driver if "Traceback" in line], out[-3000:]


def test_sigint_marks_the_mlflow_run_killed(interrupted):
    cfg = interrupted[0]
    assert [run.info.status for run in mlflow_runs(cfg)] == ["KILLED"]


def test_the_printed_resume_command_continues_after_the_saved_epoch_and_ends_like_an_uninterrupted_run(
        interrupted, uninterrupted, monkeypatch, capsys):
    from actionray.cli import main

    cfg, workdir, _, _, out = interrupted
    line = next(line for line in out.splitlines() if line.startswith("interrupted (SIGINT)"))
    saved = int(re.search(r"after epoch (\d+)", line).group(1))
    monkeypatch.chdir(workdir)
    assert main(shlex.split(line.split("resume with: ", 1)[1])[1:]) == 0
    printed = capsys.readouterr().out
    assert f"(epoch {saved} of 3): training continues at epoch {saved + 1}" in printed
    assert "[actionray] done: best val_top1" in printed and "{" not in printed  # a summary, the JSON in the file
    final = json.loads((Path(shlex.split(line)[-1]) / "result.json").read_text())["final"]
    reference = uninterrupted["final"]
    for key in ("train_loss", "val_loss", "val_top1", "epoch"):
        assert final[key] == reference[key], key
    # train.deterministic repeats bit for bit across processes and a resume: the weights are equal too
    import torch

    from actionray.platform.checkpoint import load_state, newest_complete_checkpoint

    (run_dir,) = [p for p in (workdir / "runs").iterdir() if p.is_dir()]
    resumed_weights = newest_complete_checkpoint(run_dir)[1]["model"]
    reference_weights = load_state(uninterrupted["latest_checkpoint"])["model"]
    assert resumed_weights.keys() == reference_weights.keys()
    assert all(torch.equal(resumed_weights[k], reference_weights[k]) for k in reference_weights)
    runs = mlflow_runs(cfg)
    assert [run.info.status for run in runs] == ["FINISHED"]  # the same MLflow run, reopened and finished
    assert metric_steps(cfg.tracking.uri, runs[0].info.run_id, "train_loss") == [1, 2, 3]  # no epoch trained twice


def test_resume_after_the_driver_was_sigkilled_starts_after_the_newest_complete_checkpoint(
        ray_local, synth_videos, tmp_path_factory, capsys):
    from actionray.platform.train import fit

    workdir = tmp_path_factory.mktemp("sigkilled")
    cfg = deterministic_config(synth_videos, workdir)
    process, _ = start_train(workdir, cfg)
    try:
        wait_for_epoch(process, workdir / "runs", 2)
    finally:
        kill_session(process)  # the driver and the Ray it started, workers included, without any clean-up
    # A killed worker can finish no copy into storage now (an earlier version killed only the driver's process
    # group: a surviving worker completed the next checkpoint after this line had read the folders).
    saved = saved_epochs(workdir / "runs")[-1]
    summary = fit(cfg, resume=True)
    assert summary["start_epoch"] == saved
    assert f"(epoch {saved} of 3)" in capsys.readouterr().out
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    runs = mlflow_runs(cfg)
    assert [run.info.status for run in runs] == ["FINISHED"]
    # Each epoch once in MLflow, none missing: the kill may land after a checkpoint reached storage and before
    # rank 0 logged that epoch; the resumed run logs it from the checkpoint's history.
    assert metric_steps(cfg.tracking.uri, runs[0].info.run_id, "train_loss") == [1, 2, 3]


def test_resume_refuses_a_run_folder_that_failed_at_start(synth_videos, workdir):
    from actionray.platform.train import RUN_INFO, fit

    cfg = tiny_config(synth_videos, workdir)
    run_dir = workdir / "runs" / "tiny-20260101-000000"
    run_dir.mkdir(parents=True)
    (run_dir / RUN_INFO).write_text(json.dumps({"mlflow_run_id": None, "run_name": run_dir.name}))
    from actionray.config import ConfigError

    with pytest.raises(ConfigError, match="nothing to resume in .*tiny-20260101-000000.*failed at start"):
        fit(cfg, resume=True)
    with pytest.raises(ConfigError, match="nothing to resume in"):
        fit(cfg, resume=str(run_dir))


def test_resume_skips_a_checkpoint_folder_whose_state_was_cut_short(tmp_path):
    from actionray.platform.checkpoint import newest_complete_checkpoint, save_state

    save_state(tmp_path / "checkpoint_2026-01-01_00-00-01.000000", {"epoch": 1})
    save_state(tmp_path / "checkpoint_2026-01-01_00-00-02.000000", {"epoch": 2})
    cut = tmp_path / "checkpoint_2026-01-01_00-00-02.000000" / "state.pt"
    cut.write_bytes(cut.read_bytes()[:20])  # a copy interrupted mid-file
    (tmp_path / "checkpoint_2026-01-01_00-00-03.000000").mkdir()  # a folder without state.pt
    folder, state = newest_complete_checkpoint(tmp_path)
    assert folder.name == "checkpoint_2026-01-01_00-00-01.000000" and state["epoch"] == 1
