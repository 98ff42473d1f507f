"""Run one command and measure it: wall time, peak RSS and CPU (GNU time), bytes moved."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

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


def measure(tool: str, operation: str, case: str, command: list[str], env: dict[str, str] | None = None,
            cwd: str | None = None, timeout: float = 3600) -> Measurement:  # fmt: skip
    """Run ``command`` under /usr/bin/time; wall time is taken here (monotonic clock)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        full = [GNU_TIME, "-o", report.name, "-f", "%M %U %S", *command]
        started = time.monotonic()
        result = subprocess.run(full, env={**os.environ, **(env or {})}, cwd=cwd, capture_output=True,
                                text=True, timeout=timeout)  # fmt: skip
        seconds = time.monotonic() - started
        fields = (
            report.read().strip().splitlines()[-1].split()
            if result.returncode == 0
            else ["0", "0", "0"]
        )
    try:
        rss_kb, user, system = (float(x) for x in fields[-3:])
    except ValueError:
        rss_kb = user = system = 0.0
    return Measurement(tool, operation, case, seconds, rss_kb / 1024, user + system, result.returncode == 0,
                       (result.stderr.strip().splitlines() or [""])[-1] if result.returncode else "",
                       {"stdout": result.stdout})  # fmt: skip
