"""The public tracking API (tables, statuses, child runs, param text, default URI) and the figures' artists."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from actionray.platform.tracking import (Tracker, confusion_figure, curves_figure, default_tracking_uri,
                                         param_text)


@pytest.fixture
def store(tmp_path):
    """A real MLflow SQLite store in tmp_path with a parent run and two child runs."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("api", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment, run_name="sweep").info.run_id
    children = [client.create_run(experiment, run_name=f"trial-{i}", tags={"mlflow.parentRunId": parent}).info.run_id
                for i in range(2)]
    client.create_run(experiment, run_name="unrelated")
    return client, uri, parent, children


def test_child_runs_lists_exactly_the_runs_nested_under_the_tracker_run(store):
    client, uri, parent, children = store
    assert sorted(run.info.run_id for run in Tracker(uri, parent).child_runs()) == sorted(children)


def test_end_child_and_update_status_set_run_statuses(store):
    client, uri, parent, children = store
    tracker = Tracker(uri, parent)
    tracker.end_child(children[0], "KILLED")
    tracker.update_status("FAILED")
    assert client.get_run(children[0]).info.status == "KILLED"
    assert client.get_run(parent).info.status == "FAILED"
    tracker.update_status("RUNNING")  # reopened for a resume
    assert client.get_run(parent).info.status == "RUNNING"


def test_log_table_writes_a_json_table_artifact(store, tmp_path):
    import pandas as pd

    client, uri, parent, _ = store
    Tracker(uri, parent).log_table(pd.DataFrame({"variant": ["a", "b"], "val_top1": [0.5, 0.75]}),
                                   "sweep/results.json")
    local = client.download_artifacts(parent, "sweep/results.json", str(tmp_path))
    table = json.loads(open(local).read())
    assert table["columns"] == ["variant", "val_top1"] and table["data"] == [["a", 0.5], ["b", 0.75]]


def test_inactive_tracker_lists_no_children_and_logs_nothing():
    tracker = Tracker(None, None)
    assert tracker.child_runs() == []
    tracker.log_table({"a": [1]}, "t.json")  # no client is even created
    assert tracker._client is None


def test_param_text_is_json_for_containers_and_cut_at_mlflows_limit():
    assert param_text([1, 2]) == "[1, 2]" and param_text({"a": 1}) == '{"a": 1}' and param_text(0.1) == "0.1"
    assert len(param_text("x" * 7000)) == 6000


def test_default_tracking_uri_is_the_environment_else_sqlite_in_the_working_dir(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri() == "http://127.0.0.1:5000"


def test_config_and_tracking_share_one_default_tracking_uri():
    from actionray.platform import config

    assert config.default_tracking_uri is default_tracking_uri


def _labels(ticks) -> list[str]:
    return [t.get_text() for t in ticks]


def test_confusion_matrix_names_classes_states_normalisation_and_shows_counts():
    counts = np.array([[3, 1, 0], [0, 2, 2], [1, 0, 0]])
    names = ["jump", "run", "walk"]
    fig = confusion_figure(counts, names)
    ax = fig.axes[0]
    assert _labels(ax.get_xticklabels()) == names and _labels(ax.get_yticklabels()) == names
    assert "rows" in ax.get_title() and "true class" in ax.get_title()
    cells = [t.get_text() for t in ax.texts]
    assert cells == [str(v) for v in counts.ravel()]
    shown = ax.images[0].get_array()
    np.testing.assert_allclose(shown[0], [0.75, 0.25, 0.0])  # colours are row fractions (recall)
    plt.close(fig)


def test_confusion_matrix_without_normalisation_says_counts_and_many_classes_get_no_cell_text():
    counts = np.eye(13, dtype=int) * 2
    fig = confusion_figure(counts, [f"c{i}" for i in range(13)], normalize=None)
    ax = fig.axes[0]
    assert "counts" in ax.get_title() and not ax.texts
    assert _labels(ax.get_xticklabels())[-1] == "c12"
    plt.close(fig)


def test_confusion_matrix_rejects_a_name_count_that_does_not_fit():
    with pytest.raises(ValueError, match="2 class names for a 3x3"):
        confusion_figure(np.zeros((3, 3), dtype=int), ["a", "b"])


def test_training_curves_have_one_integer_tick_per_epoch():
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "train_top1": 0.2 * e, "val_top1": 0.1 * e}
               for e in (1, 2, 3)]
    fig = curves_figure(history)
    for ax in fig.axes:
        assert list(ax.get_xticks()) == [1, 2, 3]
        assert _labels(ax.get_xticklabels()) == ["1", "2", "3"]
    plt.close(fig)


def test_sweep_clean_up_marks_running_child_runs_through_the_public_api(store):
    from actionray.platform.tune import close_running_children

    client, uri, parent, children = store
    client.set_terminated(children[1], "FINISHED")
    close_running_children(Tracker(uri, parent), "KILLED")
    assert [client.get_run(c).info.status for c in children] == ["KILLED", "FINISHED"]
    assert client.get_run(parent).info.status == "RUNNING"  # the parent is not a child of itself


def test_log_missing_epochs_logs_each_gap_once_and_never_twice(store):
    """A resumed run's history holds epochs 1-4; MLflow has 1 and 3 (the run stopped before logging 2 and 4):
    the gaps are logged once, at their epoch's step, and a second call adds nothing."""
    client, uri, parent, children = store
    run_id = children[0]
    tracker = Tracker(uri, parent)
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_top1": 0.1 * e} for e in (1, 2, 3, 4)]
    for metrics in (history[0], history[2]):
        tracker.log_metrics(metrics, step=metrics["epoch"], run_id=run_id)
    tracker.log_missing_epochs(history, run_id=run_id)
    tracker.log_missing_epochs(history, run_id=run_id)  # again: nothing more
    for key in ("epoch", "train_loss", "val_top1"):
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert logged == [(e, h[key]) for e, h in zip((1, 2, 3, 4), history)], key
    assert client.get_metric_history(parent, "epoch") == []  # into run_id only
    Tracker(uri, parent).log_missing_epochs(history)  # the tracker's own run: all four, once
    Tracker(uri, parent).log_missing_epochs(history[:2])
    assert sorted(m.step for m in client.get_metric_history(parent, "epoch")) == [1, 2, 3, 4]
