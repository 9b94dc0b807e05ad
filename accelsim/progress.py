"""Progress bars on a terminal for anything that takes over a second (fault trials, sweep points).

`progress_bar` yields an `update(done, total, what=None)` callable that long loops call as they go.
The bar appears on stderr only when stderr is a terminal and only once the work has run for
`delay_s`, so quick runs and pipes print nothing extra; it needs no care from the caller.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator

Update = Callable[..., None]  # update(done: int, total: int | None, what: str | None = None)


class _Bar:
    """A rich progress bar started by a timer after delay_s, fed by update() from the work."""

    def __init__(self, description: str, total: int | None, delay_s: float) -> None:
        self.description, self.total, self.done = description, total, 0
        self._lock = threading.Lock()
        self._progress = None
        self._task = None
        self._timer = threading.Timer(delay_s, self._show)
        self._timer.daemon = True
        self._started = time.monotonic()

    def _show(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with self._lock:
            if self._progress is not None:
                return
            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
                TimeRemainingColumn(), console=Console(file=sys.stderr), transient=False,
                redirect_stdout=False, redirect_stderr=False)
            self._task = self._progress.add_task(self.description, total=self.total,
                                                 completed=self.done)
            self._progress.start()

    def update(self, done: int, total: int | None = None, what: str | None = None) -> None:
        with self._lock:
            self.done = done
            if total is not None:
                self.total = total
            if what is not None:
                self.description = what
            if self._progress is not None:
                self._progress.update(self._task, completed=done, total=self.total,
                                      description=self.description)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            if self._progress is not None:
                self._progress.stop()


def _ignore(done: int, total: int | None = None, what: str | None = None) -> None:
    """The update of a progress bar that is not shown."""


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None, enabled: bool = True,
                 delay_s: float = 1.0) -> Iterator[Update]:
    """A progress bar on stderr for work of `total` steps (None: unknown), shown once the work
    has run for delay_s and only on a terminal; yields update(done, total, what)."""
    if not enabled or not sys.stderr.isatty():
        yield _ignore
        return
    bar = _Bar(description, total, delay_s)
    bar._timer.start()
    try:
        yield bar.update
    finally:
        bar.close()
