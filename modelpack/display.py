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


LABEL_WIDTH = 40  # one width for every frame: a long path shows its tail


def fit_label(label: str, width: int = LABEL_WIDTH) -> str:
    return label if len(label) <= width else "…" + label[-(width - 1) :]


class _Units:
    """The bytes a display expects, unit by unit: planned up front or as units start,
    minus what a unit had from an earlier attempt, minus units that moved nothing."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.already: dict[str, int] = {}
        self.expected = 0

    def plan(self, key: str, size: int) -> None:
        if key not in self.sizes:
            self.sizes[key] = size
            self.expected += size

    def resume(self, key: str, already: int) -> int:
        """Record ``already``; the bytes left to move for ``key``."""
        self.expected -= already - self.already.get(key, 0)
        self.already[key] = already
        return self.sizes.get(key, 0) - already

    def drop(self, key: str) -> None:
        """``key`` moved nothing (it was there, or mounted)."""
        self.expected -= self.sizes.get(key, 0) - self.already.get(key, 0)
        self.already[key] = self.sizes.get(key, 0)


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
        from rich.table import Column

        self._bar = RichProgressBar(
            TextColumn(
                "{task.description}",
                table_column=Column(width=LABEL_WIDTH, no_wrap=True, overflow="crop"),
            ),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr, highlight=False),
            transient=False,
        )
        self._total = self._bar.add_task(f"[bold]{verb} total", total=0)
        self._tasks: dict[str, int] = {}
        self._units = _Units()
        self._lock = threading.Lock()

    def _update_total(self) -> None:
        self._bar.update(self._total, total=self._units.expected)

    def expect(self, units: list[tuple[str, int]]) -> None:
        with self._lock:
            for key, size in units:
                self._units.plan(key, size)
            self._update_total()

    def start(self, key: str, label: str, total: int) -> None:
        with self._lock:
            self._units.plan(key, total)
            if key in self._tasks:
                self._bar.reset(self._tasks[key], total=total)
            else:
                self._tasks[key] = self._bar.add_task(fit_label(label), total=total)
            self._update_total()

    def resumed(self, key: str, already: int) -> None:
        with self._lock:
            left = self._units.resume(key, already)
            if key in self._tasks:
                self._bar.reset(self._tasks[key], total=left)
            self._update_total()

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
                self._units.drop(key)  # nothing was transferred: take it out of the total
                self._update_total()
            elif done < size:
                self._bar.advance(self._total, size - done)
            self._bar.update(task, completed=size, visible=False)

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._units.expected:  # all there or mounted: a 0/0 bar says nothing
            self._bar.update(self._total, visible=False)
        self._bar.stop()


class PlainProgress:
    """Readable log lines for CI: big layers as they finish, a heartbeat, no bars."""

    def __init__(self, verb: str) -> None:
        self._verb = verb
        self._labels: dict[str, str] = {}
        self._units = _Units()
        self._done = 0
        self._last_beat = time.monotonic()
        self._lock = threading.Lock()

    def _line(self, text: str) -> None:
        """One whole line in one write (the caller holds the lock): worker threads finish
        layers at once, and print()'s separate text and newline writes would interleave."""
        sys.stderr.write(f"{self._verb}: {text}\n")
        sys.stderr.flush()

    def expect(self, units: list[tuple[str, int]]) -> None:
        with self._lock:
            for key, size in units:
                self._units.plan(key, size)

    def start(self, key: str, label: str, total: int) -> None:
        with self._lock:
            self._units.plan(key, total)
            self._labels[key] = label

    def resumed(self, key: str, already: int) -> None:
        with self._lock:
            self._units.resume(key, already)

    def advance(self, key: str, amount: int) -> None:
        with self._lock:
            self._done += amount
            now = time.monotonic()
            if now - self._last_beat >= PLAIN_HEARTBEAT:
                self._last_beat = now
                self._line(f"{human_size(self._done)} of {human_size(self._units.expected)} so far")

    def finish(self, key: str, *, note: str = "") -> None:
        with self._lock:
            label, size = self._labels.get(key, key), self._units.sizes.get(key, 0)
            if note in ("exists", "mounted"):
                self._units.drop(key)
            already = self._units.already.get(key, 0)
            if not note and already:
                note = f"done (resumed after {human_size(already)})"
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
