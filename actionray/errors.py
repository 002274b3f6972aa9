"""The project's error classes by kind: every error actionray raises derives from :class:`ActionRayError`.

Two independent kinds, read with ``isinstance`` on the root cause (never by class name):
- :class:`UserError`: bad input (a config key, a list line, a checkpoint, a feature file); the CLI prints its
  message alone (it names the file or key) and exits 2 (``actionray.cli``).
- :class:`NoRetryError`: deterministic; restarting the worker group from the last checkpoint repeats it, so Ray
  Train's failure policy must not retry it (``actionray.platform.train``).
The concrete classes stay in the modules that raise them and keep their builtin base (``ValueError``,
``RuntimeError``) for callers that catch those.
"""

from __future__ import annotations

__all__ = ["ActionRayError", "UserError", "NoRetryError"]


class ActionRayError(Exception):
    """Base of every exception class defined in actionray."""


class UserError(ActionRayError):
    """Bad input the user can fix; the message names the file, line or key. The CLI exits 2 on it."""


class NoRetryError(ActionRayError):
    """A failure a restart from the last checkpoint repeats exactly; Ray Train does not retry it."""
