"""The one place that touches Ray's private APIs (like ``actionray/compat.py`` for torchvision).

Each function below reaches into a Ray module or name that Ray does not promise to keep (``ray._private``,
``ray.train.v2._internal``, underscore names of ``ray.train.torch.config``). They were written against the ray
version pinned in pyproject.toml (:data:`PINNED_RAY`); under another version a missing one fails with one line
naming both versions (:class:`RayCompatError`), and tests/test_ray_compat.py checks each on the installed Ray.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, Callable, Iterator

from actionray.errors import ActionRayError

PINNED_RAY = "2.60.0"  # pyproject.toml: ray[data,train,tune,default]==2.60.0
log = logging.getLogger(__name__)


class RayCompatError(ActionRayError, ImportError):
    """A Ray private API this module wraps is missing: the installed Ray is not the pinned one."""


def ray_version() -> str:
    import ray

    return ray.__version__


def _private(what: str, load: Callable[[], Any]) -> Any:
    """``load()``, or :class:`RayCompatError` naming ``what`` and the two Ray versions when it is missing."""
    try:
        return load()
    except (ImportError, AttributeError) as error:
        raise RayCompatError(f"Ray private API {what} is missing in ray {ray_version()} (actionray is written "
                             f"against ray {PINNED_RAY}; install ray=={PINNED_RAY}): {error}") from error


def controller_callback_bases() -> tuple[type, type]:
    """``(ControllerCallback, WorkerGroupCallback)`` of Train V2: the hooks Train gives no public way to add
    (Ray repo, python/ray/train/v2/_internal/execution/callback.py); used by platform/train.py's no-retry policy."""

    def load():
        from ray.train.v2._internal.execution.callback import ControllerCallback, WorkerGroupCallback

        return ControllerCallback, WorkerGroupCallback

    return _private("ray.train.v2._internal.execution.callback", load)


@contextmanager
def single_machine_node_ip() -> Iterator[None]:
    """While inside, Ray takes the loopback IP as the node IP (its Windows/macOS single-machine mode):
    ``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` is false, and restored on exit, also on an error."""
    constants = _private("ray._private.ray_constants.ENABLE_RAY_CLUSTER", _ray_constants)
    saved = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = saved


def _ray_constants():
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER  # noqa: B018 -- the attribute this module flips must exist
    return ray_constants


def cluster_mode_enabled() -> bool:
    """Ray's ``ENABLE_RAY_CLUSTER`` switch as it stands (see :func:`single_machine_node_ip`)."""
    return bool(_private("ray._private.ray_constants.ENABLE_RAY_CLUSTER", _ray_constants).ENABLE_RAY_CLUSTER)


def torch_backend_api() -> SimpleNamespace:
    """Ray Train's torch backend internals for a custom process-group set-up (platform/raysession.py):
    ``TorchBackend`` (``_TorchBackend``), ``V1WorkerGroup``, ``set_torch_distributed_env_vars`` and
    ``setup_torch_process_group`` (Ray repo, python/ray/train/torch/config.py)."""

    def load():
        from ray.train.torch import config

        return SimpleNamespace(TorchBackend=config._TorchBackend, V1WorkerGroup=config.V1WorkerGroup,
                               set_torch_distributed_env_vars=config._set_torch_distributed_env_vars,
                               setup_torch_process_group=config._setup_torch_process_group)

    return _private("ray.train.torch.config._TorchBackend and its helpers", load)


def worker_stdstream_dispatcher() -> Any:
    """Ray's dispatcher of the worker output lines forwarded to the driver (``add_handler``, ``emit``)."""

    def load():
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

        dispatcher._lock, dispatcher.handlers  # noqa: B018 -- what wrap_worker_line_printer swaps under
        return dispatcher

    return _private("ray._private.ray_logging.global_worker_stdstream_dispatcher", load)


def wrap_worker_line_printer(wrap: Callable[[Callable], Callable]) -> Callable[[], None]:
    """Replace Ray's handler that prints forwarded worker lines (``ray_print_logs``) by ``wrap(handler)``; returns
    the function that puts Ray's handler back. A no-op when Ray prints no worker lines (``log_to_driver=False``),
    and with a one-line warning when the dispatcher is missing (another Ray version): output stays unfiltered."""
    try:
        dispatcher = worker_stdstream_dispatcher()
    except RayCompatError as error:
        log.warning("%s; worker output is not filtered", error)
        return lambda: None
    with dispatcher._lock:
        original = dict(dispatcher.handlers).get("ray_print_logs")
    if original is None:
        return lambda: None
    wrapped = wrap(original)

    def swap(old: Callable, new: Callable) -> None:
        with dispatcher._lock:
            dispatcher.handlers = [(name, new if handler is old else handler) for name, handler in dispatcher.handlers]

    swap(original, wrapped)
    return lambda: swap(wrapped, original)


# Ray repo, python/ray/_private/authentication/authentication_token_setup.py: ``ray.init`` of a local instance logs
# "Token authentication is enabled ..." at WARNING on every start although that is the secure default; its opposite
# ("... is disabled ...", a real risk) stays visible.
_TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


class _DropTokenAuthEnabledNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Token authentication is enabled")


def quiet_token_auth_enabled_notice() -> None:
    """Drop Ray's "token authentication is enabled" notice (idempotent); the "disabled" warning still shows."""
    logger = logging.getLogger(_TOKEN_AUTH_LOGGER)
    if not any(isinstance(f, _DropTokenAuthEnabledNotice) for f in logger.filters):
        logger.addFilter(_DropTokenAuthEnabledNotice())
