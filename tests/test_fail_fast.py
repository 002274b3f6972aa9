"""Fail fast with one clear line: bad input is refused before Ray starts (or before any worker), the CLI prints
one `error:` line and exits 2, the traceback only with --debug, and errors a retry cannot fix are not retried."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_sweep_interrupt import cli_env
from test_train import tiny_config


def write_config(cfg, workdir: Path) -> str:
    path = workdir / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return str(path)


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    """``actionray ARGV`` in this process: (exit code, stderr)."""
    from actionray.cli import main

    code = main(argv)
    return code, capsys.readouterr().err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_a_missing_train_list_fails_before_ray_starts_with_one_line(synth_videos, tmp_path):
    cfg = tiny_config(synth_videos, tmp_path, data={"train_list": str(tmp_path / "nope.txt")})
    argv = [sys.executable, "-m", "actionray", "train", write_config(cfg, tmp_path)]
    start = time.monotonic()
    done = subprocess.run(argv, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert error_lines(done.stderr) == [f"error: data.train_list: {tmp_path / 'nope.txt'}: list file not found"]
    assert "Traceback" not in done.stderr and "Ray" not in done.stderr + done.stdout  # Ray never started
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()  # no run, no MLflow run
    assert time.monotonic() - start < 120


@pytest.mark.parametrize("content, expected", [
    ("", "no entries"),
    ("# only a comment\n", "no entries"),
    ("a.mp4 24 99\n", "label 99 out of range 0..7"),
])
def test_an_empty_or_out_of_range_train_list_is_one_error_line(synth_videos, workdir, capsys, content, expected):
    bad = workdir / "train.txt"
    bad.write_text(content)
    cfg = tiny_config(synth_videos, workdir, data={"train_list": str(bad)})
    code, err = run_main(["train", write_config(cfg, workdir)], capsys)
    assert code == 2
    (line,) = error_lines(err)
    assert line.startswith(f"error: data.train_list: {bad}") and expected in line
    assert not (workdir / "runs").exists()


def test_a_train_list_smaller_than_one_batch_per_worker_is_refused(synth_videos, workdir, capsys):
    cfg = tiny_config(synth_videos, workdir, scaling={"num_workers": 8}, data={"batch_size": 8})
    code, err = run_main(["train", write_config(cfg, workdir)], capsys)
    assert code == 2
    assert "fewer than the 64 needed" in error_lines(err)[0]


def test_use_gpu_without_gpus_fails_before_any_run_starts(ray_local, synth_videos, workdir):
    from actionray.config import ConfigError
    from actionray.platform.train import fit

    assert ray_local.cluster_resources().get("GPU", 0) == 0  # this check needs a machine without GPUs
    cfg = tiny_config(synth_videos, workdir, scaling={"use_gpu": True})
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"needs 1 GPU\(s\) .* the Ray cluster has 0: .*scaling.use_gpu=false"):
        fit(cfg)
    assert time.monotonic() - start < 60
    assert not (workdir / "runs").exists()
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(cfg.tracking.uri).get_experiment_by_name(cfg.tracking.experiment)
    assert experiment is None or not MlflowClient(cfg.tracking.uri).search_runs([experiment.experiment_id])


@pytest.fixture
def eval_config(synth_videos, workdir) -> str:
    return write_config(tiny_config(synth_videos, workdir, tracking={"enabled": False}), workdir)


def test_eval_of_a_random_bytes_checkpoint_names_the_file(eval_config, workdir, capsys):
    junk = workdir / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    code, err = run_main(["eval", eval_config, "--checkpoint", str(junk)], capsys)
    assert code == 2
    (line,) = error_lines(err)
    assert line.startswith(f"error: {junk}: not a readable PyTorch checkpoint")
    assert "Traceback" not in err


def test_debug_adds_the_traceback(eval_config, workdir, capsys):
    junk = workdir / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    code, err = run_main(["--debug", "eval", eval_config, "--checkpoint", str(junk)], capsys)
    assert code == 2 and "Traceback" in err and len(error_lines(err)) == 1


def test_eval_of_another_models_checkpoint_is_summarised(synth_videos, eval_config, workdir, capsys):
    from actionray.platform.checkpoint import save_state

    other = tiny_config(synth_videos, workdir, method={"name": "tsn", "backbone": "resnet34"},
                        data={"num_classes": 5})
    model = other.recipe.build_model(other)
    folder = workdir / "other_checkpoint"
    save_state(folder, {"model": model.state_dict(), "epoch": 1, "config": other.to_dict()})
    code, err = run_main(["eval", eval_config, "--checkpoint", str(folder)], capsys)
    assert code == 2
    (line,) = error_lines(err)
    assert len(err.splitlines()) <= 2 and len(line) < 600, err  # a summary, not hundreds of key names
    assert "missing" in line and "unexpected (e.g. " in line and "of another shape" in line
    assert "looks like a checkpoint of method tsn (method.backbone=resnet34, data.num_segments=4, " \
           "data.num_classes=5)" in line


def test_eval_without_a_checkpoint_says_what_to_pass(eval_config, capsys):
    code, err = run_main(["eval", eval_config], capsys)
    assert code == 2
    (line,) = error_lines(err)
    assert "give --checkpoint PATH" in line and "method.reference_checkpoint" in line


def test_too_many_skipped_samples_fail_once_with_the_whole_message(ray_local, synth_videos, workdir):
    """max_failures=2 would restart the workers twice; a data error comes back identical, so it is not retried."""
    import ray

    from actionray.cli import root_error
    from actionray.platform.data.monitor import monitor_of
    from actionray.platform.train import build_run

    lines = synth_videos.train_list.read_text().splitlines()
    broken = workdir / "broken.mp4"
    broken.write_bytes(os.urandom(2048))
    first = lines[0].split()
    lines[0] = " ".join([str(broken), *first[1:]])
    train_list = workdir / "train.txt"
    train_list.write_text("\n".join(lines) + "\n")
    # data.root: the copied list's relative paths still name the session's videos
    cfg = tiny_config(synth_videos, workdir, data={"train_list": str(train_list), "max_skip_fraction": 0.0,
                                                   "root": str(synth_videos.train_list.parent)},
                      scaling={"max_failures": 2}, tracking={"enabled": False})
    run = build_run(cfg, run_name="skips")
    with pytest.raises(Exception) as caught:
        run.trainer.fit()
    root = root_error(caught.value)
    assert type(root).__name__ == "PermanentTrainingError" and root.kind == "TooManySkippedError"
    assert str(root).startswith("TooManySkippedError: train epoch 0: skipped 1 of ") and "broken.mp4" in str(root)
    assert ray.get(monitor_of(run.trainer.datasets["train"]).starts.remote()) == 1  # one attempt, no retry


def test_a_synth_config_whose_lists_point_elsewhere_is_refused_before_any_video_is_written(synth_videos, workdir,
                                                                                            capsys):
    out_dir = workdir / "gen"
    cfg = tiny_config(synth_videos, workdir, data={"train_list": str(workdir / "elsewhere" / "train.txt"),
                                                   "synth": {"out_dir": str(out_dir), "videos_per_class": 2}})
    config = write_config(cfg, workdir)
    start = time.monotonic()
    code, err = run_main(["train", config], capsys)
    assert time.monotonic() - start < 2.0
    assert code == 2
    assert error_lines(err) == [f"error: data.train_list is {workdir / 'elsewhere' / 'train.txt'} but data.synth "
                                f"writes {out_dir / 'train.txt'}; point data.train_list/val_list at "
                                f"data.synth.out_dir ({out_dir}), or drop data.synth"]
    assert not out_dir.exists() and not (workdir / "runs").exists() and not (workdir / "mlflow.db").exists()
    # the class count is checked before generating too
    wrong = tiny_config(synth_videos, workdir, data={"train_list": str(out_dir / "train.txt"),
                                                     "val_list": str(out_dir / "val.txt"), "num_classes": 3,
                                                     "synth": {"out_dir": str(out_dir), "videos_per_class": 2}})
    code, err = run_main(["train", write_config(wrong, workdir)], capsys)
    assert code == 2 and error_lines(err) == ["error: data.num_classes is 3 but data.synth generates 8 classes "
                                              "(the default demo set)"]
    assert not out_dir.exists()


def test_a_feature_set_with_another_class_count_is_refused_before_mlflow_or_ray(workdir, capsys):
    import ray

    from actionray.synthetic.features import write_synthetic_feature_set

    feats = write_synthetic_feature_set(workdir / "feats", num_classes=2, train_videos=8, test_videos=2,
                                        feature_dim=8, min_snippets=12, max_snippets=20, instance_snippets=(2, 4))
    tree = {"name": "acm", "method": {"name": "acmnet", "feature_root": str(feats.root), "feature_dim": 8,
                                      "num_segments": 8},
            "data": {"num_classes": 5}, "train": {"storage_path": str(workdir / "runs")},
            "tracking": {"uri": f"sqlite:///{workdir / 'mlflow.db'}"}}
    (workdir / "acm.yaml").write_text(yaml.safe_dump(tree))
    was_running = ray.is_initialized()
    code, err = run_main(["train", str(workdir / "acm.yaml")], capsys)
    assert code == 2 and error_lines(err) == [f"error: data.num_classes is 5 but the feature set {feats.root} has "
                                              f"2 classes"]
    assert ray.is_initialized() == was_running
    assert not (workdir / "mlflow.db").exists() and not (workdir / "runs").exists()
