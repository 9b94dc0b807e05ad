"""Progress bars on a terminal for anything that takes over a second (a run's phases, fault
trials, sweep points).

`progress_bar` yields an `update(done, total, what=None)` callable that long work calls as it
goes: `what` names the current phase (the bar's description), `total` None means not counted
(an elapsed-time bar without counts). The bar appears on stderr only when stderr is a terminal
and only once the work has run for `delay_s`, so quick runs and pipes print nothing extra; it
needs no care from the caller.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator

Update = Callable[..., None]  # update(done: int, total: int | None, what: str | None = None)

SHOW_AFTER_S = 1.0
"""How long work runs before its bar appears (the tests set it to 0 so as not to race the clock)."""


def no_progress(done: int, total: int | None = None, what: str | None = None) -> None:
    """The update of a progress bar that is not shown."""


class _Bar:
    """A rich progress bar started by a timer after delay_s, fed by update() from the work."""

    def __init__(self, description: str, total: int | None, delay_s: float,
                 transient: bool) -> None:
        self.description, self.total, self.done = description, total, 0
        self.transient = transient
        self._lock = threading.Lock()
        self._progress = None
        self._task = None
        self._timer = threading.Timer(delay_s, self._show)
        self._timer.daemon = True
        self._phase_started = time.monotonic()

    def _show(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        with self._lock:
            if self._progress is not None:
                return
            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
                TextColumn("{task.fields[eta]}"),
                console=Console(file=sys.stderr), transient=self.transient,
                redirect_stdout=False, redirect_stderr=False)
            self._task = self._progress.add_task(self.description, total=self.total,
                                                 completed=self.done, **self._fields())
            self._progress.start()

    def _fields(self) -> dict[str, str]:
        """done/total and the time left at the phase's mean pace (blank when not counted)."""
        if self.total is None:
            return {"counts": "", "eta": ""}
        eta = ""
        if 0 < self.done < self.total:
            left = (time.monotonic() - self._phase_started) * (self.total / self.done - 1)
            eta = "eta {}:{:02d}".format(*divmod(round(left), 60))
        return {"counts": f"{self.done}/{self.total}", "eta": eta}

    def update(self, done: int, total: int | None = None, what: str | None = None) -> None:
        with self._lock:
            new_phase = what is not None and what != self.description
            if new_phase:
                self.description, self.total = what, total  # a new phase: its own total
                self._phase_started = time.monotonic()
            elif total is not None:
                self.total = total
            self.done = done
            if self._progress is None:
                return
            if new_phase:
                self._progress.reset(self._task, total=self.total, completed=done,
                                     description=self.description, **self._fields())
            else:
                self._progress.update(self._task, total=self.total, completed=done,
                                      **self._fields())

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            if self._progress is not None:
                self._progress.stop()


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None, enabled: bool = True,
                 delay_s: float | None = None, transient: bool = False) -> Iterator[Update]:
    """A progress bar on stderr for work of `total` steps (None: not counted), shown once the
    work has run for delay_s (default SHOW_AFTER_S) and only on a terminal; yields
    update(done, total, what).
    transient: the bar is erased when the work ends (a run's phases; its table follows)."""
    if not enabled or not sys.stderr.isatty():
        yield no_progress
        return
    bar = _Bar(description, total, SHOW_AFTER_S if delay_s is None else delay_s, transient)
    bar._timer.start()
    try:
        yield bar.update
    finally:
        bar.close()
