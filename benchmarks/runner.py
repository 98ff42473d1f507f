"""Run one command and measure it: wall time, peak RSS and CPU (GNU time), bytes moved, and
the CPU the servers it talks to spent meanwhile (/proc)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

GNU_TIME = "/usr/bin/time"


@dataclass
class Measurement:
    tool: str
    operation: str
    case: str
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float
    ok: bool
    error: str = ""
    extra: dict = field(default_factory=dict)


def stop(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if ``process`` has not exited within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def parse_stat(text: str) -> tuple[int, int, int]:
    """(pid, parent pid, clock ticks of CPU) from a /proc/PID/stat line: the process's own
    user and system time and that of its children it has waited for (utime, stime, cutime,
    cstime). The command name in parentheses may hold spaces and parentheses itself."""
    pid, rest = text.split(" (", 1)
    fields = rest.rsplit(") ", 1)[1].split()
    # fields[0] is the state (field 3 of proc(5)): ppid is field 4, utime..cstime 14-17
    return int(pid), int(fields[1]), sum(int(x) for x in fields[11:15])


def _proc_table(proc: Path) -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, CPU clock ticks) of every process in ``proc``."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                pid, ppid, ticks = parse_stat((entry / "stat").read_text())
            except (OSError, ValueError, IndexError):
                continue  # exited meanwhile
            stats[pid] = (ppid, ticks)
    return stats


def _descendants(roots: Sequence[int], stats: dict[int, tuple[int, int]]) -> list[int]:
    """The pids of ``stats`` that are ``roots`` or descend from one."""
    wanted = set(roots)
    found = []
    for pid in stats:
        seen: set[int] = set()
        ancestor = pid
        while ancestor not in wanted and ancestor in stats and ancestor not in seen:
            seen.add(ancestor)
            ancestor = stats[ancestor][0]
        if ancestor in wanted:
            found.append(pid)
    return found


def tree_cpu(roots: Sequence[int], proc: Path = Path("/proc")) -> float:
    """CPU seconds so far of the processes ``roots`` and every live descendant: each one's
    own time and its reaped children's (a PostgreSQL backend that has exited counts in its
    postmaster's), so the difference of two calls is what the tree spent in between."""
    stats = _proc_table(proc)
    return sum(stats[pid][1] for pid in _descendants(roots, stats)) / os.sysconf("SC_CLK_TCK")


def parse_rss_kb(status: str) -> int:
    """VmRSS (KiB) from a /proc/PID/status text; 0 for a kernel thread or a zombie."""
    return next((int(line.split()[1]) for line in status.splitlines()
                 if line.startswith("VmRSS:")), 0)  # fmt: skip


def tree_rss(roots: Sequence[int], proc: Path = Path("/proc")) -> int:
    """Bytes resident now in the processes ``roots`` and every live descendant."""
    total = 0
    for pid in _descendants(roots, _proc_table(proc)):
        try:
            total += parse_rss_kb((proc / str(pid) / "status").read_text())
        except OSError:
            continue  # exited meanwhile
    return total * 1024


def measure(tool: str, operation: str, case: str, command: list[str], env: dict[str, str] | None = None,
            cwd: str | None = None, timeout: float = 3600,
            servers: Mapping[str, Sequence[int]] | None = None) -> Measurement:  # fmt: skip
    """Run ``command`` under /usr/bin/time; wall time is taken here (monotonic clock).
    ``servers`` (a name for each group of server processes, e.g. Harbor's core) adds the
    CPU seconds each group spent while the command ran to ``extra["server_cpu"]``."""
    servers = servers or {}
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        full = [GNU_TIME, "-o", report.name, "-f", "%M %U %S", *command]
        before = {name: tree_cpu(pids) for name, pids in servers.items()}
        started = time.monotonic()
        result = subprocess.run(full, env={**os.environ, **(env or {})}, cwd=cwd, capture_output=True,
                                text=True, timeout=timeout)  # fmt: skip
        seconds = time.monotonic() - started
        spent = {name: tree_cpu(pids) - before[name] for name, pids in servers.items()}
        fields = (
            report.read().strip().splitlines()[-1].split()
            if result.returncode == 0
            else ["0", "0", "0"]
        )
    try:
        rss_kb, user, system = (float(x) for x in fields[-3:])
    except ValueError:
        rss_kb = user = system = 0.0
    extra: dict = {"stdout": result.stdout}
    if servers:
        extra["server_cpu"] = spent
    return Measurement(tool, operation, case, seconds, rss_kb / 1024, user + system, result.returncode == 0,
                       (result.stderr.strip().splitlines() or [""])[-1] if result.returncode else "",
                       extra)  # fmt: skip
