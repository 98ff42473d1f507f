"""Load on ``modelpack serve``, by hand: wrk against a cached file, then /healthz
latency while slow clients hang with half-sent requests.

    python -m benchmarks.gateway_load [--seconds 10] [--connections 64] [--slow 32]
                                      [--threads 16] [--file-mib 1]

127.0.0.1 only, bounded in time (wrk runs ``--seconds``; each /healthz probe
waits at most 5 s).  Needs wrk (/usr/bin/wrk).  Prints the numbers.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import gateway_speed, models
from benchmarks.gateway import Served, get, registry_with_model, serving

PROBES = 50


def wrk(served: Served, seconds: int, connections: int) -> dict[str, str]:
    """Requests/s and latency percentiles of GETs of the (cached) file."""
    load = gateway_speed.wrk(served.url + served.path, seconds, connections)
    return {"requests/s": f"{load.rps:.2f}", "p50": f"{load.p50:.2f}ms",
            "p99": f"{load.p99:.2f}ms", "errors": load.errors or "-"}  # fmt: skip


def healthz_while_slow_clients_hang(served: Served, slow: int) -> dict[str, str]:
    port = int(served.url.rsplit(":", 1)[1])
    hanging = []
    for _ in range(slow):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        hanging.append(sock)
    time.sleep(0.5)  # let the gateway take them all in
    latencies, failures = [], 0
    try:
        for _ in range(PROBES):
            started = time.monotonic()
            status = _probe(port)
            if status == 200:
                latencies.append((time.monotonic() - started) * 1000)
            else:
                failures += 1
    finally:
        for sock in hanging:
            sock.close()
    if not latencies:
        return {"answered": f"0/{PROBES}"}
    latencies.sort()
    return {
        "answered": f"{len(latencies)}/{PROBES}",
        "p50 ms": f"{statistics.median(latencies):.1f}",
        "p99 ms": f"{latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]:.1f}",
        "max ms": f"{latencies[-1]:.1f}",
    }


def _probe(port: int) -> int:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head = sock.recv(64)
        return int(head.split()[1]) if head.startswith(b"HTTP/") else 0
    except (OSError, ValueError, IndexError):
        return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--slow", type=int, default=32)
    parser.add_argument("--threads", type=int, default=16, help="the gateway's --threads")
    parser.add_argument("--file-mib", type=float, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gateway-load-") as tmp:
        work = Path(tmp)
        size = int(args.file_mib * models.MIB)
        with (
            registry_with_model(work, size) as (host, size),
            serving(host, work, size, "--threads", str(args.threads)) as served,
        ):
            status, _, _, count = get(served, served.path)  # into the node cache
            assert status == 200 and count == size, (status, count)
            print(f"cached {size / models.MIB:g} MiB file, --threads {args.threads}, "
                  f"wrk {args.connections} connections {args.seconds}s:", flush=True)  # fmt: skip
            print("  ", wrk(served, args.seconds, args.connections), flush=True)
            print(f"/healthz x{PROBES} while {args.slow} clients hang with half a request:")
            print("  ", healthz_while_slow_clients_hang(served, args.slow), flush=True)


if __name__ == "__main__":
    main()
