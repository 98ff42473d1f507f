"""Progress rendering: rich bars on a terminal, a few plain lines elsewhere (CI).

Used by the CLI, and by library callers who ask for ``progress=True``.  rich
is imported only when a bar is actually drawn, so ``import modelpack`` stays
free of it.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType

from .progress import NullProgress, ProgressDisplay

PLAIN_LAYER_MIN = 64 * 1024 * 1024  # log a line per layer only for big ones
PLAIN_HEARTBEAT = 15.0  # seconds between "so far" lines in long transfers


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


class RichProgress:
    """A total bar plus one bar per active layer: bytes, rate, ETA."""

    def __init__(self, verb: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgressBar

        self._bar = RichProgressBar(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr, highlight=False),
            transient=False,
        )
        self._total = self._bar.add_task(f"[bold]{verb} total", total=0)
        self._tasks: dict[str, int] = {}
        self._lock = threading.Lock()

    def start(self, key: str, label: str, total: int) -> None:
        with self._lock:
            if key in self._tasks:
                self._bar.reset(self._tasks[key], total=total)
                return
            self._tasks[key] = self._bar.add_task(label[-48:], total=total)
            self._bar.update(self._total, total=(self._bar.tasks[self._total].total or 0) + total)

    def advance(self, key: str, amount: int) -> None:
        with self._lock:
            if key in self._tasks:
                self._bar.advance(self._tasks[key], amount)
            self._bar.advance(self._total, amount)

    def finish(self, key: str, *, note: str = "") -> None:
        with self._lock:
            task = self._tasks.get(key)
            if task is None:
                return
            size = self._bar.tasks[task].total or 0
            done = self._bar.tasks[task].completed
            if note in ("exists", "mounted"):
                # Nothing was transferred: take it out of the total.
                self._bar.update(
                    self._total, total=(self._bar.tasks[self._total].total or 0) - size
                )
            elif done < size:
                self._bar.advance(self._total, size - done)
            self._bar.update(task, completed=size, visible=False)

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._bar.stop()


class PlainProgress:
    """Readable log lines for CI: big layers as they finish, a heartbeat, no bars."""

    def __init__(self, verb: str) -> None:
        self._verb = verb
        self._sizes: dict[str, tuple[str, int]] = {}
        self._done = 0
        self._expected = 0
        self._last_beat = time.monotonic()
        self._lock = threading.Lock()

    def _line(self, text: str) -> None:
        """One whole line in one write (the caller holds the lock): worker threads finish
        layers at once, and print()'s separate text and newline writes would interleave."""
        sys.stderr.write(f"{self._verb}: {text}\n")
        sys.stderr.flush()

    def start(self, key: str, label: str, total: int) -> None:
        with self._lock:
            if key not in self._sizes:
                self._expected += total
            self._sizes[key] = (label, total)

    def advance(self, key: str, amount: int) -> None:
        with self._lock:
            self._done += amount
            now = time.monotonic()
            if now - self._last_beat >= PLAIN_HEARTBEAT:
                self._last_beat = now
                self._line(f"{human_size(self._done)} of {human_size(self._expected)} so far")

    def finish(self, key: str, *, note: str = "") -> None:
        with self._lock:
            label, size = self._sizes.get(key, (key, 0))
            if size >= PLAIN_LAYER_MIN or note == "mounted":
                self._line(f"{label} ({human_size(size)}) {note or 'done'}")

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class QuietProgress(NullProgress):
    def __enter__(self) -> QuietProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_display(verb: str, *, quiet: bool = False) -> ProgressDisplay:
    """The right display for where stderr goes; use as a context manager."""
    if quiet:
        return QuietProgress()
    if sys.stderr.isatty():
        return RichProgress(verb)
    return PlainProgress(verb)
