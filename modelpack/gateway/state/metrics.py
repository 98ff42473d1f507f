"""Counters for ``/metrics`` (Prometheus text format 0.0.4), kept with prometheus_client
for its multiprocess mode: under ``serve --workers N`` each worker counts into files of its
own (``PROMETHEUS_MULTIPROC_DIR``, set by ``server.run`` before the workers start) and
whichever worker answers a scrape sums them all, so one scrape covers the whole server."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from ...extras import require

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# The methods counted by name; any other (a client may send any token) is counted as
# "other", so made-up methods cannot grow the counters without bound.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _Uptime:
    """A collector of one gauge read at scrape time: this worker's age."""

    def __init__(self, started: float) -> None:
        self.started = started

    def collect(self) -> Iterator[object]:
        yield _prometheus("prometheus_client.core").GaugeMetricFamily(
            "modelpack_gateway_uptime_seconds",
            "Seconds since the gateway (the worker process that answers) started.",
            value=round(time.monotonic() - self.started, 3),
        )


class Metrics:
    """The gateway's counters; one instance per gateway (a registry of its own, so gateways
    made in one process, as the tests make them, count apart)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        prometheus = _prometheus("prometheus_client")
        self.registry = prometheus.CollectorRegistry(auto_describe=True)
        self.shared_dir = os.environ.get(MULTIPROCESS_DIR)  # workers > 1: sum every worker's

        def counter(name: str, text: str, labels: tuple[str, ...] = ()):  # noqa: ANN202
            return prometheus.Counter(name, text, labels, registry=self.registry)

        self._requests = counter(
            "modelpack_gateway_requests", "HTTP requests by method, route and status.",
            ("method", "route", "status"),
        )  # fmt: skip
        self._served = counter(
            "modelpack_gateway_served_bytes",
            "Body bytes sent to clients, by where they came from: the node cache, "
            "the registry while being pulled through, or the node cache by the proxy "
            "in front (--accel-redirect; the bytes its range asked for).",
            ("source",),
        )
        for source in ("cache", "registry", "proxy", "xet"):
            self._served.labels(source=source)
        self._registry_bytes = counter(
            "modelpack_gateway_registry_bytes",
            "Blob bytes pulled from the registry into the node cache.",
        )
        self._pulls = counter(
            "modelpack_gateway_pulls", "Pulls into the node cache by kind and result.",
            ("kind", "result"),
        )  # fmt: skip
        self._in_flight = prometheus.Gauge(
            "modelpack_gateway_pulls_in_flight", "Pulls into the node cache running now.",
            registry=self.registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self._upstream_misses = counter(
            "modelpack_gateway_upstream_misses",
            "Upstream misses (a repo, revision or listed file it lacks or refuses), by who "
            "answered: the upstream, or the gateway remembering its answer.",
            ("answered_by",),
        )
        self._audit_events = counter(
            "modelpack_gateway_audit_events",
            "Audit trail events (file reads, writes, imports, refusals) by action and status, "
            "counted whether or not --audit-log writes them.",
            ("action", "status"),
        )
        self._audit_write_errors = counter(
            "modelpack_gateway_audit_write_errors",
            "Audit lines that could not be written (a full disk, a closed stdout).",
        )
        self.registry.register(_Uptime(self.started))
        # Each (counter, labels) child, found once: ``labels`` checks and locks every call,
        # which the download lane paid per request.  As many as the counters keep anyway.
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, counter: Any, *labels: str) -> Any:
        key = (id(counter), *labels)
        if (child := self._children.get(key)) is None:
            child = self._children[key] = counter.labels(*labels)
        return child

    def request(self, method: str, route: str, status: int) -> None:
        method = method if method in METHODS else "other"
        self._child(self._requests, method, route, str(status)).inc()

    def served_bytes(self, source: str, count: int) -> None:
        self._child(self._served, source).inc(count)

    def pulled(self, count: int) -> None:
        self._registry_bytes.inc(count)

    def pull_started(self) -> None:
        self._in_flight.inc()

    def pull_finished(self, kind: str, ok: bool) -> None:
        self._in_flight.dec()
        self._pulls.labels(kind=kind, result="ok" if ok else "error").inc()

    def upstream_miss(self, answered_by: str) -> None:
        self._upstream_misses.labels(answered_by=answered_by).inc()

    def audited(self, action: str, status: int) -> None:
        self._child(self._audit_events, action, str(status)).inc()

    def audit_write_failed(self) -> None:
        self._audit_write_errors.inc()

    def render(self) -> str:
        """The text a scrape gets: this gateway's counters, or every worker's summed."""
        prometheus = _prometheus("prometheus_client")
        if not self.shared_dir:
            return prometheus.generate_latest(self.registry).decode()
        summed = prometheus.CollectorRegistry()
        _prometheus("prometheus_client.multiprocess").MultiProcessCollector(
            summed, path=self.shared_dir
        )
        summed.register(_Uptime(self.started))
        return prometheus.generate_latest(summed).decode()


def _prometheus(module: str) -> ModuleType:
    return require(module, purpose="modelpack serve's /metrics", extra="serve",
                   package="prometheus-client")  # fmt: skip
