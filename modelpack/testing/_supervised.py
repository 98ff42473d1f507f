"""What the launchers of servers built by ``scripts/peers/`` share (Harbor, MatrixHub): the
peers cache, a work folder, the parts started as child processes that die with the launcher and
are stopped last-started first, and ``python -m ...`` running one until SIGTERM or Ctrl-C."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

_PR_SET_PDEATHSIG = 1


def peers_dir() -> Path:
    return Path(os.environ.get("MODELPACK_PEERS_DIR") or Path.home() / ".cache/modelpack-peers")


def die_with_parent() -> None:
    """In the child: the signals a launcher's main blocks are unblocked (a mask survives
    exec), and SIGTERM comes when the launcher dies, so no part outlives it."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_port(
    port: int,
    process: subprocess.Popen,
    name: str,
    log: Path,
    timeout: float,
    ip: str = "127.0.0.1",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: {tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection((ip, port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen on {ip}:{port} within {timeout:.0f}s")


def tail(log: Path, size: int = 2000) -> str:
    return log.read_text(errors="replace")[-size:] if log.exists() else "(no log)"


@dataclass(kw_only=True)
class Supervised:
    """A server made of parts, each a child process logging to ``logs/NAME.log`` in a work
    folder (a temporary one unless ``workdir`` is given)."""

    workdir: Path | None = None  # default: a temporary folder, made when first needed
    _processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list, repr=False)
    _folder_prefix: ClassVar[str] = "modelpack-"
    # The signal that stops a part cleanly, by name, when not SIGTERM.
    _stop_signals: ClassVar[dict[str, signal.Signals]] = {}

    @property
    def root(self) -> Path:
        """The folder every part keeps its data, configuration and log in."""
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=self._folder_prefix))
        return self.workdir

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def start(self) -> Self:
        raise NotImplementedError

    def _spawn(
        self, name: str, argv: list[str], *, env: dict[str, str] | None = None, **kwargs: Any
    ) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
            start_new_session=True,  # stopped in order by stop(), not by the terminal's Ctrl-C
            preexec_fn=die_with_parent,
            **kwargs,
        )
        log.close()
        self._processes.append((name, process))
        return process

    def _process(self, name: str) -> subprocess.Popen:
        return dict(self._processes)[name]

    def _wait_answer(
        self, part: str, answers: Callable[[], bool], what: str, timeout: float
    ) -> None:
        """Until ``answers()`` (its requests' errors are a no), or RuntimeError when the
        ``part`` process ends or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        process = self._process(part)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited: {tail(self.logs / f'{part}.log')}")
            with contextlib.suppress(OSError):  # requests' errors are OSErrors
                if answers():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{what} did not answer within {timeout:.0f}s")

    def stop(self) -> None:
        """Stop every part, the last started first."""
        while self._processes:
            name, process = self._processes.pop()
            if process.poll() is None:
                process.send_signal(self._stop_signals.get(name, signal.SIGTERM))
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def cleanup(self) -> None:
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def run_until_signalled(make: Callable[[], Supervised], lines: Callable[[Any], list[str]]) -> None:
    """A launcher's main: start what ``make`` returns, print ``lines(server)`` once it
    answers, and stop it on SIGTERM or Ctrl-C.  A start that fails says so on one line
    (keeping the logs, and saying where) and exits 1."""
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # delivered to sigwait, not as a kill
    server = make()
    try:
        try:
            server.start()
        except RuntimeError as exc:  # not built, a part missing or failing: one line
            first = (str(exc).strip() or repr(exc)).splitlines()[0]
            kept = server.workdir is not None and any(server.logs.glob("*.log"))
            where = f" (logs kept in {server.logs})" if kept else ""
            print(f"error: {first}{where}", file=sys.stderr, flush=True)
            if kept:
                server.workdir = None  # cleanup() leaves the logs for the user to read
            raise SystemExit(1) from None
        for line in lines(server):
            print(line, flush=True)
        signal.sigwait(signals)
    finally:
        server.cleanup()
