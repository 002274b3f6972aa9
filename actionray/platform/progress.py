"""What the driver shows while a run trains: a live progress bar on a terminal, and worker lines without Ray's noise.

- :class:`ProgressBoard` (a small Ray actor) holds the newest (epoch, step) of rank 0; :class:`StepProgress` is the
  worker hook that posts it after every training step (``after_step``, ``platform/loop.py``), fire-and-forget.
- :class:`TerminalBar` draws one line on the driver's terminal, ``\\r``-rewritten; it draws nothing when its
  stream is not a terminal (a log file, ``ray job logs``), where the per-epoch lines are the whole output.
- :func:`filter_worker_lines` wraps the handler through which Ray prints forwarded worker lines on the driver:
  it drops lines of Ray Train's internal helper actors (``PreemptionWatcher``, ``PlacementGroupCleaner``: e.g.
  "Failed to query Ray Train Controller actor state") and clears the bar before a line is printed, so bar and
  lines never mix. It uses Ray's internal dispatcher (Ray repo, python/ray/_private/ray_logging/__init__.py,
  ``global_worker_stdstream_dispatcher``, handler ``ray_print_logs`` added by ``ray.init``); where that is
  missing it changes nothing.
"""

from __future__ import annotations

import functools
import shutil
import sys
import threading
import time
from typing import Any, Callable, TextIO

from actionray.platform.ray_compat import wrap_worker_line_printer

__all__ = ["ProgressBoard", "StepProgress", "TerminalBar", "filter_worker_lines", "NOISY_ACTORS", "NOISY_TEXT"]

# Ray Train's helper actors on the driver's console: their lines are about Ray's own bookkeeping.
NOISY_ACTORS = frozenset({"PreemptionWatcher", "PlacementGroupCleaner"})
NOISY_TEXT = ("Failed to query Ray Train Controller",
              # the controller's core-worker E-line on every fit, about the helper actor's constructor (harmless)
              "Actor with class name: 'PreemptionWatcher'",
              # Ray Data's once-per-process notes when its progress output is off or logged (non-TTY stdout)
              "Progress bars disabled. To enable", "Progress will be logged because stdout is a non-interactive",
              # per-worker bookkeeping of Ray Train and MLflow: every fit, every epoch; the epoch line says it all
              "Moving model to device", "Checkpoint successfully created at", "Setting up process group for",
              "mlflow.system_metrics")


class ProgressBoard:
    """Newest (epoch, step) posted by rank 0; created by the driver as a Ray actor with ``num_cpus=0``."""

    def __init__(self) -> None:
        self.epoch, self.step, self.world = 0, 0, 1

    def post(self, epoch: int, step: int, world: int) -> None:
        self.epoch, self.step, self.world = epoch, step, world

    def read(self) -> tuple[int, int, int]:
        return self.epoch, self.step, self.world


class StepProgress:
    """Worker hook: rank 0 posts (epoch, step, world size) to the board called ``board`` after every step."""

    def __init__(self, board: str, namespace: str) -> None:
        self.board, self.namespace = board, namespace
        self._handle: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"board": self.board, "namespace": self.namespace, "_handle": None}

    def after_step(self, epoch: int, step: int, rank: int) -> None:
        if rank != 0:
            return
        import ray
        import ray.train

        if self._handle is None:
            self._handle = ray.get_actor(self.board, namespace=self.namespace)
        self._handle.post.remote(epoch, step, ray.train.get_context().get_world_size())


class TerminalBar:
    """``[actionray] epoch 2/5 |#########-----------| step 34/60  3.1 it/s`` on ``stream`` if it is a terminal.

    ``steps_per_epoch(world)`` gives the bar's length for the world size rank 0 reports (elastic runs change it).
    Thread-safe: the driver's main thread draws, Ray's log thread clears it before printing a worker line."""

    def __init__(self, epochs: int, steps_per_epoch: Callable[[int], int], stream: TextIO | None = None,
                 width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        # cached per world size: a clip source answers by parsing its train list, and the bar redraws twice a second
        self.epochs, self.steps_per_epoch, self.width = epochs, functools.cache(steps_per_epoch), width
        self._lock = threading.Lock()
        self._shown = ""
        self._rate: tuple[float, int, int] | None = None  # (time, epoch, step) at the last change

    def text(self, epoch: int, step: int, world: int, rate: float | None = None) -> str:
        steps = max(1, self.steps_per_epoch(world))
        done = min(step, steps)
        filled = round(self.width * done / steps)
        line = (f"[actionray] epoch {epoch}/{self.epochs} |{'#' * filled}{'-' * (self.width - filled)}| "
                f"step {done}/{steps}")
        return line + (f"  {rate:.1f} it/s" if rate else "")

    def update(self, epoch: int, step: int, world: int) -> None:
        if not self.enabled or epoch < 1:
            return
        now, rate = time.monotonic(), None
        if self._rate is not None and self._rate[1] == epoch and step > self._rate[2]:
            rate = (step - self._rate[2]) / max(now - self._rate[0], 1e-6)
        if self._rate is None or (self._rate[1], self._rate[2]) != (epoch, step):
            self._rate = (now, epoch, step)
        columns = shutil.get_terminal_size((100, 20)).columns
        self._draw(self.text(epoch, step, world, rate)[: columns - 1])

    def _draw(self, line: str) -> None:
        with self._lock:
            self.stream.write("\r" + line + " " * max(0, len(self._shown) - len(line)))
            self.stream.flush()
            self._shown = line

    def clear(self) -> None:
        """Erase the bar (before other output); the next :meth:`update` draws it again."""
        if not self.enabled:
            return
        with self._lock:
            if self._shown:
                self.stream.write("\r" + " " * len(self._shown) + "\r")
                self.stream.flush()
                self._shown = ""


def keep_line(data: dict[str, Any], line: str) -> bool:
    """False for the forwarded worker lines that are Ray's noise (module docstring)."""
    return data.get("actor_name") not in NOISY_ACTORS and not any(text in line for text in NOISY_TEXT)


def filter_worker_lines(bar: TerminalBar | None = None) -> Callable[[], None]:
    """Drop Ray's noise lines from the worker output printed on this driver, and clear ``bar`` before each line.
    Returns a function that restores Ray's own handler."""

    def wrap(original: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
        def filtered(data: dict[str, Any]) -> None:
            lines = [line for line in data.get("lines", []) if keep_line(data, line)]
            if not lines:
                return
            if bar is not None:
                bar.clear()
            original({**data, "lines": lines})

        return filtered

    return wrap_worker_line_printer(wrap)
