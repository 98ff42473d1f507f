"""Harbor's P2P preheat pointed at a real Dragonfly: the seed pipeline (issue 29, item 8).

A Harbor (v2.15.2 and main, built from ../shared/peer-src) with a provider instance of
vendor ``dragonfly`` (the manager's URL and a personal access token) and a preheat policy on
a project; ``modelpack push`` to Harbor, the policy runs, Harbor's jobservice asks the
manager for the preheat, the scheduler makes the seed peer fetch every blob from Harbor's
registry, and two nodes pull through their own dfdaemon.  Counted in the access log of
Harbor's registry (distribution behind core), as tests/integration/test_dragonfly.py counts.

Every part is on a host of its own (network namespaces, benchmarks/cluster.py), not on
127.0.0.1: Harbor's driver asks the manager to preheat the manifest's URL at Harbor's
external endpoint, and the v2.5.0 manager refuses to fetch from an address that is not
global unicast (``ip 127.0.0.1 is invalid``).  So this test cannot use the ``harbor``
fixture (127.0.0.1) and starts its own Harbor of each version in a namespace.  Root only.

The policy runs by its manual trigger (``POST .../preheat/policies/NAME``, the console's
EXECUTE), as a CI step does right after the push: Harbor's event-based trigger fires on a
push only for artifacts of type IMAGE (``handlePushArtifact`` in
src/controller/event/handler/p2p/preheat.go, both versions), and a model is type CNAI; the
test keeps an event-based policy beside the manual one and checks it never ran.

The reason for the namespaces, shown: ``test_a_harbor_on_loopback_cannot_be_preheated`` in
test_harbor.py (the ``harbor`` fixture's Harbor on 127.0.0.1 and a Dragonfly on 127.0.0.1:
the preheat execution fails at the manager).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import pytest
from support.harbor import PEER_SRC, build_harbor
from support.helpers import tree_files

from benchmarks import dragonfly
from benchmarks.cluster import Cluster, NotRoot, require_root
from benchmarks.dragonfly import blob_gets, bytes_sent, probes
from benchmarks.harbor_preheat import PIECE, RENDERS, Netns, NsHarbor
from modelpack.testing.harbor import VERSIONS

PY = sys.executable
NODES = 2

if not PEER_SRC.is_dir():
    pytest.skip(
        f"Harbor tests need the source snapshots in {PEER_SRC} (absent)", allow_module_level=True
    )

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster():  # noqa: ANN201
    """Two nodes and the hosts harbor, dragonfly (manager, scheduler, MariaDB, Redis) and
    seed; 10gbit links (the benchmark shapes them, the test does not need to)."""
    try:
        require_root()
    except NotRoot:
        pytest.skip("the preheat pipeline runs in network namespaces: root only")
    made = Cluster(nodes=NODES, extra=("harbor", "dragonfly", "seed")).up()
    yield made
    made.down()


@pytest.fixture(scope="module")
def df(cluster, tmp_path_factory):  # noqa: ANN001, ANN201
    """One Dragonfly for both Harbor versions: the dfdaemons mirror Harbor's address
    (http://HARBOR_IP:8080), which each version's Harbor takes in turn."""
    harbor_ip = cluster.hosts["harbor"].ip
    site = dragonfly.namespace_site
    cluster_df = dragonfly.Dragonfly(
        dragonfly.build(),
        tmp_path_factory.mktemp("dragonfly"),
        f"http://{harbor_ip}:8080",
        control=site(cluster, cluster.hosts["dragonfly"]),
        seed_site=site(cluster, cluster.hosts["seed"]),
        peer_sites=[(f"df-{h.role}", site(cluster, h)) for h in cluster.node_hosts],
    )
    cluster_df.start()
    yield cluster_df
    cluster_df.cleanup()


def _run(cluster: Cluster, role: str, argv: list[str], **env: str) -> subprocess.CompletedProcess:
    host = cluster.hosts[role]
    done = cluster.run(host, argv, env=cluster.env(host, **env), capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert done.returncode == 0, f"{role}: {' '.join(argv)}\n{done.stderr}"
    return done


@pytest.mark.interop(
    "Harbor",
    "P2P preheat policy to a real Dragonfly, then nodes pull through their dfdaemons",
    "the execution succeeds, the seed peer fetches every blob from Harbor once, two nodes get identical files, the large blob leaves Harbor's registry once",
)
@pytest.mark.parametrize("version", VERSIONS)
def test_harbor_preheat_policy_seeds_dragonfly_then_nodes_pull_p2p(
    version, cluster, df, tiny_model, tmp_path
):
    build_harbor(version)
    harbor = NsHarbor(version, cluster.hosts["harbor"].ip, Netns(cluster.hosts["harbor"].ns))
    harbor.start()
    try:
        _seed_pipeline(version, harbor, cluster, df, tiny_model, tmp_path)
    except BaseException:
        print(df.logs(), file=sys.stderr)
        print("--- harbor jobservice:\n" + harbor.log("jobservice")[-4000:], file=sys.stderr)
        raise
    finally:
        harbor.stop()


def _seed_pipeline(version, harbor, cluster, df, tiny_model, tmp_path) -> None:  # noqa: ANN001
    project = f"ml-{RENDERS[version]}"  # a URL of its own per version: its own tasks
    harbor.create_project(project)  # private: the nodes read it as a pull-only robot
    robot, secret = harbor.create_robot(project, "nodes", ("pull",))
    docker_config = tmp_path / "docker"  # the nodes' `docker login`, for Harbor's host
    docker_config.mkdir()
    auth = base64.b64encode(f"{robot}:{secret}".encode()).decode()
    (docker_config / "config.json").write_text(json.dumps({"auths": {harbor.host: {"auth": auth}}}))
    provider = harbor.create_dragonfly_instance("dragonfly", df.manager_url, df.token)
    harbor.create_policy(project, "on-push", provider, trigger="event_based")
    harbor.create_policy(project, "seed", provider, trigger="manual")

    # The model: the tiny model's small files and one blob of more than one piece.
    (tiny_model / "weights.dat").write_bytes(os.urandom(12 << 20))  # .bin: pickle-scanned
    ref = f"{harbor.host}/{project}/bert:v1"
    publisher = tmp_path / "publisher"
    user, password = harbor.admin
    _run(cluster, "n0", [PY, "-m", "modelpack", "build", str(tiny_model), "-t", ref, "-q",
                         "--media-types", RENDERS[version]], MODELPACK_HOME=str(publisher))  # fmt: skip
    pushed = _run(cluster, "n0", [PY, "-m", "modelpack", "push", ref, "--json"],
                  MODELPACK_HOME=str(publisher), MODELPACK_USERNAME=user,
                  MODELPACK_PASSWORD=password)  # fmt: skip
    digest = json.loads(pushed.stdout)["digest"]
    artifact = harbor.api("GET", f"/projects/{project}/repositories/bert/artifacts/v1").json()
    assert artifact["digest"] == digest and artifact["type"] == "CNAI", artifact
    manifest = json.loads(
        _run(
            cluster,
            "n0",
            [PY, "-m", "modelpack", "inspect", ref, "--remote", "--json"],
            MODELPACK_HOME=str(publisher),
            MODELPACK_USERNAME=user,
            MODELPACK_PASSWORD=password,
        ).stdout  # fmt: skip
    )["manifest"]
    sizes = {b["digest"]: b["size"] for b in [manifest["config"], *manifest["layers"]]}
    large = {d for d, size in sizes.items() if size > PIECE}
    assert len(large) == 1 and len(sizes) > 1, sizes

    df.wait_for_seed_peer()  # the scheduler's first seed-peer refresh (once a minute)
    before = len(harbor.registry_log())
    began = time.monotonic()
    execution = harbor.execute(project, "seed")
    ended = harbor.wait_execution(project, "seed", execution)
    took = time.monotonic() - began
    assert ended["status"] == "Success", (ended, harbor.task_logs(project, "seed", execution))
    print(f"Harbor {version}: preheat execution {execution} succeeded in {took:.1f} s")
    logs = harbor.task_logs(project, "seed", execution)
    assert "Preheat job finished" in logs, logs
    warmed = blob_gets(harbor.registry_log()[before:], f"{project}/bert")
    # The seed peer fetched every blob (config and layers) from Harbor's registry, once.
    assert bytes_sent(warmed) == sizes, warmed
    seed_log = df.seed.log_text()
    assert all(f"/v2/{project}/bert/blobs/{d}" in seed_log for d in sizes)
    # The event-based policy saw the push and did nothing: a model is not an IMAGE.
    assert harbor.executions(project, "on-push") == []

    # Two nodes pull through their own dfdaemon (registry-mirror mode), as the project's
    # pull-only robot from their docker config (which modelpack gives the mirror too).
    mark = len(harbor.registry_log())
    for host, peer in zip(cluster.node_hosts, df.nodes, strict=True):
        out = tmp_path / f"out-{host.role}"
        pulled_by = _run(cluster, host.role, [PY, "-m", "modelpack", "pull", ref, "-o", str(out)],
             MODELPACK_MIRRORS=f"{harbor.host}={peer.proxy}", DOCKER_CONFIG=str(docker_config),
             MODELPACK_VERBOSE="1")  # fmt: skip
        assert tree_files(out) == tree_files(tiny_model)
        # The robot's `docker login` got a token at Harbor's realm (Harbor's challenge names
        # its own host: dfdaemon asks it with that host), and every blob came through the
        # node's dfdaemon: the mirror was not skipped for Harbor itself.
        log = pulled_by.stderr
        assert f"from http://{harbor.host}/service/token" in log, log
        assert f"GET {peer.ip}:{peer.proxy_port}/v2/{project}/bert/blobs/" in log, log
        assert f"GET {harbor.host}/v2/{project}/bert/blobs/" not in log, log
    pulled_requests = blob_gets(harbor.registry_log()[mark:], f"{project}/bert")
    pulled = bytes_sent(pulled_requests)
    # The large blob came from the seed peer: Harbor's registry sent it only for the preheat.
    assert not large & set(pulled), pulled
    # What the nodes still fetched from Harbor are blobs of one piece (<= 4 MiB), which the
    # v2.5.0 scheduler does not learn from the seed peer's preheat (docs/registries.md).
    assert set(pulled) <= set(sizes) - large, pulled
    one_copy = sum(sizes.values())
    small = sum(size for d, size in sizes.items() if d not in large)
    total = sum(bytes_sent(warmed).values()) + sum(pulled.values())
    assert total <= one_copy + NODES * small, (total, one_copy)
    print(f"Harbor {version}: registry egress {total} B = {total / one_copy:.3f} copies of "
          f"{one_copy} B (the large blob {sum(sizes[d] for d in large)} B once; small blobs "
          f"{sum(pulled.values())} B again for {NODES} nodes); "
          f"{probes(warmed) + probes(pulled_requests)} one-byte probes")  # fmt: skip
