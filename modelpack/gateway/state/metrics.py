"""Counters for ``/metrics`` (Prometheus text format 0.0.4), kept by hand: a few numbers
do not need a client library."""

from __future__ import annotations

import threading
import time
from collections import Counter

_HELP = {
    "modelpack_gateway_requests_total": ("counter", "HTTP requests by method, route and status."),
    "modelpack_gateway_served_bytes_total": (
        "counter",
        "Body bytes sent to clients, by where they came from: the node cache, "
        "or the registry while being pulled through.",
    ),
    "modelpack_gateway_registry_bytes_total": (
        "counter",
        "Blob bytes pulled from the registry into the node cache.",
    ),
    "modelpack_gateway_pulls_total": ("counter", "Pulls into the node cache by kind and result."),
    "modelpack_gateway_pulls_in_flight": ("gauge", "Pulls into the node cache running now."),
    "modelpack_gateway_upstream_misses_total": (
        "counter",
        "Upstream misses (a repo, revision or listed file it lacks or refuses), by who "
        "answered: the upstream, or the gateway remembering its answer.",
    ),
    "modelpack_gateway_uptime_seconds": ("gauge", "Seconds since the gateway started."),
    "modelpack_gateway_audit_events_total": (
        "counter",
        "Audit trail events (file reads, writes, imports, refusals) by action and status, "
        "counted whether or not --audit-log writes them.",
    ),
    "modelpack_gateway_audit_write_errors_total": (
        "counter",
        "Audit lines that could not be written (a full disk, a closed stdout).",
    ),
}


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    inner = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.served: Counter[str] = Counter({"cache": 0, "registry": 0})
        self.registry_bytes = 0
        self.pulls: Counter[tuple[str, str]] = Counter()
        self.in_flight = 0
        self.upstream_misses: Counter[str] = Counter()
        self.audit_events: Counter[tuple[str, int]] = Counter()
        self.audit_write_errors = 0

    def request(self, method: str, route: str, status: int) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1

    def served_bytes(self, source: str, count: int) -> None:
        with self._lock:
            self.served[source] += count

    def pulled(self, count: int) -> None:
        with self._lock:
            self.registry_bytes += count

    def pull_started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def pull_finished(self, kind: str, ok: bool) -> None:
        with self._lock:
            self.in_flight -= 1
            self.pulls[(kind, "ok" if ok else "error")] += 1

    def upstream_miss(self, answered_by: str) -> None:
        with self._lock:
            self.upstream_misses[answered_by] += 1

    def audited(self, action: str, status: int) -> None:
        with self._lock:
            self.audit_events[(action, status)] += 1

    def audit_write_failed(self) -> None:
        with self._lock:
            self.audit_write_errors += 1

    def render(self) -> str:
        with self._lock:
            samples: dict[str, list[str]] = {name: [] for name in _HELP}
            for (method, route, status), n in sorted(self.requests.items()):
                samples["modelpack_gateway_requests_total"].append(
                    f"{_labels(method=method, route=route, status=str(status))} {n}"
                )
            for source, n in sorted(self.served.items()):
                samples["modelpack_gateway_served_bytes_total"].append(
                    f"{_labels(source=source)} {n}"
                )
            samples["modelpack_gateway_registry_bytes_total"].append(f" {self.registry_bytes}")
            for (kind, result), n in sorted(self.pulls.items()):
                samples["modelpack_gateway_pulls_total"].append(
                    f"{_labels(kind=kind, result=result)} {n}"
                )
            samples["modelpack_gateway_pulls_in_flight"].append(f" {self.in_flight}")
            for answered_by, n in sorted(self.upstream_misses.items()):
                samples["modelpack_gateway_upstream_misses_total"].append(
                    f"{_labels(answered_by=answered_by)} {n}"
                )
            for (action, status), n in sorted(self.audit_events.items()):
                samples["modelpack_gateway_audit_events_total"].append(
                    f"{_labels(action=action, status=str(status))} {n}"
                )
            samples["modelpack_gateway_audit_write_errors_total"].append(
                f" {self.audit_write_errors}"
            )
            samples["modelpack_gateway_uptime_seconds"].append(
                f" {time.monotonic() - self.started:.3f}"
            )
        lines = []
        for name, (kind, text) in _HELP.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            lines += [f"{name}{sample}" for sample in samples[name]]
        return "\n".join(lines) + "\n"
