"""A real Dragonfly cluster on 127.0.0.1 for tests: MariaDB, Redis, manager, scheduler,
a seed peer and dfdaemons, each its own process with its own log, on ports picked free at
start.  The launch and configuration live in benchmarks/dragonfly.py (shared with the
cluster benchmark's case (d), which runs the same parts in network namespaces)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.dragonfly import BIN, Dragonfly, Peer, local_site
from benchmarks.dragonfly import build as build_dragonfly

__all__ = ["BIN", "DragonflyCluster", "Peer", "build_dragonfly"]


def DragonflyCluster(  # noqa: N802 - the tests' name for it
    bin_dir: Path, workdir: Path, registry_url: str, peer_count: int = 2, **options: object
) -> Dragonfly:
    """Every part on 127.0.0.1: a seed peer and ``peer_count`` dfdaemons (df-peer-N), each
    its own host id (127.0.0.1-df-peer-N) to the scheduler."""
    site = local_site()
    peers = [(f"df-peer-{n}", site) for n in range(peer_count)]
    return Dragonfly(bin_dir, workdir, registry_url, site, site, peers, **options)  # type: ignore[arg-type]
