"""benchmarks/cluster.py: namespaces made and removed cleanly, a killed run cleaned afterwards,
no root no cluster, and a real pull across a shaped link (issue 19 part 1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cluster import (
    NOT_ROOT,
    Cluster,
    Link,
    cleanup,
    namespaces,
    stale_prefixes,
    workdir_for,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def netns_list() -> set[str]:
    """What `ip netns list` shows (names only)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def script_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_eight_nodes_made_and_removed() -> None:
    before = netns_list()
    cluster = Cluster(nodes=8).up()
    try:
        made = netns_list() - before
        assert made == {
            f"{cluster.prefix}{r}" for r in ["sw", "registry", *(f"n{i}" for i in range(8))]
        }
        ips = {h.ip for h in cluster.hosts.values()}
        assert len(ips) == 9 and all(ip.startswith("10.213.0.") for ip in ips)
        out = subprocess.run(["ip", "-n", cluster.hosts["n7"].ns, "-br", "addr", "show", "eth0"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert cluster.hosts["n7"].ip in out
        assert cluster.workdir.is_dir()
    finally:
        cluster.down()
    assert netns_list() == before
    assert not cluster.workdir.exists()


def test_killed_run_is_cleaned_afterwards() -> None:
    before = netns_list()
    maker = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.cluster", "up", "--nodes", "8"],
        cwd=ROOT, env=script_env(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        info = json.loads(maker.stdout.readline())  # type: ignore[union-attr]
        prefix = info["prefix"]
        assert prefix.startswith(f"mpk-{maker.pid}-")
        registry_ns = info["hosts"]["registry"]["namespace"]
        assert subprocess.run(["ip", "netns", "pids", registry_ns], capture_output=True,
                              text=True).stdout.split()  # fmt: skip
        maker.send_signal(signal.SIGKILL)
        maker.wait()
        left = set(namespaces(prefix))
        assert len(left) == 10  # SIGKILL: no handler ran, everything is still there
        assert f"mpk-{maker.pid}-" in stale_prefixes()
        # `down` of that run (what `down` with no prefix does for every stale run)
        done = subprocess.run([sys.executable, "-m", "benchmarks.cluster", "down", "--prefix", prefix],
                              cwd=ROOT, env=script_env(), capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "removed 10 namespaces" in done.stdout
    finally:
        if maker.poll() is None:
            maker.kill()
            maker.wait()
        for prefix in stale_prefixes():
            if prefix == f"mpk-{maker.pid}-":
                cleanup(prefix)
    assert netns_list() == before
    assert not workdir_for(prefix).exists()


def test_sigterm_cleans_up() -> None:
    before = netns_list()
    maker = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.cluster", "up", "--nodes", "2"],
        cwd=ROOT, env=script_env(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    info = json.loads(maker.stdout.readline())  # type: ignore[union-attr]
    assert set(namespaces(info["prefix"]))
    maker.terminate()
    assert maker.wait(timeout=30) == 128 + signal.SIGTERM
    assert netns_list() == before


NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]


@pytest.mark.parametrize("module", ["benchmarks.cluster", "benchmarks.cluster_bench"])
def test_refuses_without_root(module: str) -> None:
    before = netns_list()
    argv = [
        *NOBODY,
        sys.executable,
        "-m",
        module,
        *(["up"] if module == "benchmarks.cluster" else []),
    ]
    done = subprocess.run(argv, cwd=ROOT, env=script_env(), capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [NOT_ROOT]
    assert netns_list() == before


def test_make_bench_cluster_refuses_without_root() -> None:
    done = subprocess.run([*NOBODY, "make", "-s", "-C", str(ROOT), "bench-cluster"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode != 0
    assert "needs root" in done.stdout + done.stderr


def test_pull_across_a_shaped_link(tiny_model: Path, tmp_path: Path) -> None:
    cluster = Cluster(nodes=2, registry_link=Link("100mbit", 20.0)).up()
    try:
        registry = cluster.start_registry()
        reg = cluster.hosts["registry"]
        tc = subprocess.run(["tc", "-n", reg.ns, "class", "show", "dev", "eth0"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert "htb" in tc and "rate 100Mbit" in tc
        ref = f"{registry.address}/team/tiny:v1"
        n0, n1 = cluster.node_hosts
        py = [sys.executable, "-m", "modelpack"]
        subprocess.run(
            [*py, "build", str(tiny_model), "-t", ref, "-q"], env=cluster.env(n0), check=True
        )
        cluster.run(n0, [*py, "push", ref, "-q"], check=True, capture_output=True)
        sent = cluster.tx_bytes("registry")
        out = tmp_path / "pulled"
        done = cluster.run(
            n1, [*py, "pull", ref, "-o", str(out), "-q"], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        for f in tiny_model.rglob("*"):
            if f.is_file():
                assert (out / f.relative_to(tiny_model)).read_bytes() == f.read_bytes()
        size = sum(f.stat().st_size for f in tiny_model.rglob("*") if f.is_file())
        assert cluster.tx_bytes("registry") - sent >= size
        log = registry.access_log()
        assert f"{n1.ip} - - " in log and "/v2/team/tiny/blobs/sha256:" in log
        # n1 reaches nothing but the bridge's subnet: no default route, no host interface
        routes = subprocess.run(["ip", "-n", n1.ns, "route"], capture_output=True, text=True).stdout
        assert routes.split()[:3] == ["10.213.0.0/24", "dev", "eth0"] and "default" not in routes
    finally:
        cluster.down()
