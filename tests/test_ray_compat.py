"""Each wrapper of a Ray private API works on the installed Ray, and a missing one fails with one line naming
the installed and the pinned Ray versions."""

from __future__ import annotations

import logging

import pytest

from actionray.platform import ray_compat


def test_the_pinned_version_is_the_one_pyproject_installs():
    from pathlib import Path

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert f"ray[data,train,tune,default]=={ray_compat.PINNED_RAY}" in pyproject
    assert ray_compat.ray_version() == ray_compat.PINNED_RAY


def test_controller_callback_bases_are_train_v2_callback_classes():
    controller, worker_group = ray_compat.controller_callback_bases()
    assert hasattr(controller, "before_controller_execute_failure_decision")
    assert hasattr(worker_group, "after_worker_group_poll_status")


def test_the_no_retry_callback_subclasses_them():
    from actionray.platform.train import _no_retry_callback

    assert isinstance(_no_retry_callback(), ray_compat.controller_callback_bases())


def test_the_single_machine_switch_holds_inside_and_is_restored_after_an_error():
    before = ray_compat.cluster_mode_enabled()
    with pytest.raises(KeyError):
        with ray_compat.single_machine_node_ip():
            assert ray_compat.cluster_mode_enabled() is False
            raise KeyError("ray.init failed")
    assert ray_compat.cluster_mode_enabled() == before


def test_torch_backend_api_names_rays_torch_backend_and_its_helpers():
    from ray.train.backend import Backend

    api = ray_compat.torch_backend_api()
    assert issubclass(api.TorchBackend, Backend) and hasattr(api.TorchBackend, "on_start")
    assert isinstance(api.V1WorkerGroup, type)
    assert callable(api.set_torch_distributed_env_vars) and callable(api.setup_torch_process_group)


def test_the_worker_line_printer_is_wrapped_and_restored():
    dispatcher = ray_compat.worker_stdstream_dispatcher()
    printed = []

    def printer(data):
        printed.append(data["lines"])

    dispatcher.add_handler("ray_print_logs", printer)
    try:
        restore = ray_compat.wrap_worker_line_printer(lambda original: lambda data: original({"lines": ["x"]}))
        dispatcher.emit({"lines": ["a"]})
        restore()
        dispatcher.emit({"lines": ["b"]})
    finally:
        with dispatcher._lock:
            dispatcher.handlers = [(n, h) for n, h in dispatcher.handlers if h is not printer]
    assert printed == [["x"], ["b"]]


def test_a_missing_private_api_fails_with_one_line_naming_both_versions(monkeypatch):
    monkeypatch.setattr(ray_compat, "ray_version", lambda: "9.9.9")

    def missing():
        raise ImportError("No module named 'ray._private.gone'")

    with pytest.raises(ray_compat.RayCompatError) as caught:
        ray_compat._private("ray._private.gone", missing)
    message = str(caught.value)
    assert "\n" not in message and "ray 9.9.9" in message and f"ray {ray_compat.PINNED_RAY}" in message
    assert isinstance(caught.value, ImportError)


def test_without_the_dispatcher_worker_lines_stay_unfiltered_with_a_warning(monkeypatch, caplog):
    def missing():
        raise ray_compat.RayCompatError("Ray private API x is missing in ray 9.9.9")

    monkeypatch.setattr(ray_compat, "worker_stdstream_dispatcher", missing)
    restore = ray_compat.wrap_worker_line_printer(lambda original: original)
    restore()
    assert "worker output is not filtered" in caplog.text


def test_rays_token_auth_enabled_notice_is_dropped_and_the_disabled_warning_is_kept(caplog):
    from actionray.platform.ray_compat import _TOKEN_AUTH_LOGGER, quiet_token_auth_enabled_notice

    quiet_token_auth_enabled_notice()
    quiet_token_auth_enabled_notice()  # idempotent
    from ray._private.authentication import authentication_token_setup as setup  # the real logger and messages

    with caplog.at_level(logging.WARNING, logger=_TOKEN_AUTH_LOGGER):
        setup._warn_token_auth_enabled()
        setup._warn_token_auth_disabled()
    messages = [r.getMessage() for r in caplog.records]
    assert not any(m.startswith("Token authentication is enabled") for m in messages)
    assert any(m.startswith("Token authentication is disabled") for m in messages)
