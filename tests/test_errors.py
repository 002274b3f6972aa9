"""Errors by type: every exception class actionray defines derives from ``actionray.errors.ActionRayError``, and
the CLI (exit 2) and Ray Train's retry policy classify the root cause with ``isinstance``, not by class name."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from actionray.errors import ActionRayError, NoRetryError, UserError

PACKAGE = Path(__file__).resolve().parents[1] / "actionray"
# Not errors: raised by a signal handler to unwind the main thread, like KeyboardInterrupt (platform/train.py).
NOT_ERRORS = {"actionray.platform.train._Signalled"}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def _modules_defining_classes_with_bases() -> list[str]:
    """Modules with a module-level class that has a base (the candidates for exception classes)."""
    return sorted(_module_name(path) for path in PACKAGE.rglob("*.py")
                  if any(isinstance(node, ast.ClassDef) and node.bases for node in ast.parse(path.read_text()).body))


def project_exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined at module level in actionray, by qualified name."""
    found = {}
    for name in _modules_defining_classes_with_bases():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == name:
                found[f"{name}.{value.__qualname__}"] = value
    return found


def test_every_exception_class_in_actionray_derives_from_the_base():
    classes = project_exception_classes()
    assert "actionray.platform.config.ConfigError" in classes and "actionray.platform.train.TrainInterrupted" in classes
    outside = sorted(name for name, cls in classes.items()
                     if not issubclass(cls, ActionRayError) and name not in NOT_ERRORS)
    assert outside == []


def test_no_exception_class_is_defined_inside_a_function():
    """Nested classes escape the walk above; the only nested classes with bases are not exceptions."""
    nested = []
    for path in PACKAGE.rglob("*.py"):
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                nested += [f"{path.name}:{node.name}" for node in ast.walk(function) if isinstance(node, ast.ClassDef)
                           and any(ast.unparse(base).endswith(("Error", "Exception")) for base in node.bases)]
    assert nested == []


@pytest.mark.parametrize("module, name, user, no_retry", [
    ("actionray.platform.config", "ConfigError", True, True),
    ("actionray.platform.data.annotations", "ListFormatError", True, True),
    ("actionray.platform.data.ingest", "TooManySkippedError", True, True),
    ("actionray.platform.data.features", "FeatureFileError", True, True),
    ("actionray.platform.data.lists", "ListBuildError", True, False),
    ("actionray.platform.checkpoint", "CheckpointError", True, False),
    ("actionray.platform.data.decode", "DecodeError", False, False),
])
def test_each_error_has_its_kind_and_keeps_its_builtin_base(module, name, user, no_retry):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, UserError) == user and issubclass(cls, NoRetryError) == no_retry
    assert issubclass(cls, (ValueError, RuntimeError))  # callers that catch the builtin kind still do


def _wrapped(error: BaseException) -> BaseException:
    """``error`` as a Ray task failure (its ``cause``) inside a Train run failure (``worker_failures``)."""
    task = RuntimeError("task failed")
    task.cause = error
    run = RuntimeError("training failed")
    run.worker_failures = {1: RuntimeError("later"), 0: task}
    return run


def test_the_cli_classifies_the_root_cause_by_type():
    from actionray.cli import error_line, is_bad_input
    from actionray.platform.config import ConfigError
    from actionray.platform.data.decode import DecodeError

    class SubConfigError(ConfigError):
        """A subclass the old class-name list would have missed."""

    assert is_bad_input(_wrapped(SubConfigError("model.lr: must be > 0")))
    assert is_bad_input(_wrapped(FileNotFoundError("nope.txt")))
    assert not is_bad_input(_wrapped(DecodeError("a.mp4", "0 bytes")))
    assert not is_bad_input(_wrapped(ValueError("SubConfigError")))  # a name in a message is no kind
    assert error_line(_wrapped(SubConfigError("model.lr: must be > 0"))) == "error: model.lr: must be > 0"
    assert error_line(_wrapped(DecodeError("a.mp4", "0 bytes"))) == "error: DecodeError: a.mp4: 0 bytes"


def test_the_retry_policy_stops_on_no_retry_errors_and_non_finite_losses_only():
    from actionray.platform.checkpoint import CheckpointError
    from actionray.platform.data.ingest import TooManySkippedError
    from actionray.platform.train import PermanentTrainingError, is_permanent

    assert is_permanent(TooManySkippedError("skipped 3 of 4")) and is_permanent(FloatingPointError("loss is nan"))
    assert not is_permanent(RuntimeError("NCCL timeout")) and not is_permanent(CheckpointError("x: truncated"))
    wrapped = PermanentTrainingError("TooManySkippedError", "skipped 3 of 4")
    assert isinstance(wrapped, UserError) and str(wrapped) == "TooManySkippedError: skipped 3 of 4"
