"""modelpack through a real Dragonfly cluster: manager + scheduler (Go, v2.5.0), a seed peer
and two dfdaemons (Rust client 1.5.10), MariaDB and Redis, all on 127.0.0.1.

What is checked, against the registry's own access log:
- a pull through dfdaemon as a registry mirror, and through dfdaemon as an HTTP proxy,
  gives the model's exact files, and the blobs reach the registry once for two pulls
  from two different dfdaemons (the second is served peer to peer);
- ``modelpack preheat --wait`` runs a real job that makes the seed peer fetch every blob
  once; a node's pull afterwards gets the blobs of more than one piece (4 MiB) from the seed
  peer, and fetches the smaller ones from the registry again (why: docs/registries.md);
- what preheat says when the token is wrong, the manager is down or the tag is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from support.dragonfly import DragonflyCluster, build_dragonfly
from support.helpers import tree_files

import modelpack
from benchmarks.dragonfly import blob_gets, bytes_sent
from modelpack.testing import RegistryServer

ROOT = Path(__file__).resolve().parents[2]
PIECE = 4 << 20  # dfdaemon 1.5's smallest piece: a blob up to this size is one piece


@pytest.fixture(scope="module")
def origin() -> RegistryServer:
    """The module's own registry, so its access log counts only these tests' requests."""
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="module")
def dragonfly(origin, tmp_path_factory) -> DragonflyCluster:
    cluster = DragonflyCluster(
        build_dragonfly(), tmp_path_factory.mktemp("dragonfly"), origin.url, peer_count=2
    )
    cluster.start()
    yield cluster
    cluster.cleanup()


def push_model(origin, tiny_model, settings, repository: str) -> tuple[str, Counter]:
    ref = f"{origin.host}/{repository}:v1"
    modelpack.build(tiny_model, ref, settings=settings)
    modelpack.push(ref, settings=settings)
    manifest = modelpack.inspect(ref, settings=settings).manifest
    blobs = [manifest.config, *manifest.layers]
    return ref, Counter({blob.digest: blob.size for blob in blobs})


def test_mirror_mode_two_dfdaemons_fetch_each_blob_once(
    dragonfly, origin, tiny_model, settings, tmp_path, monkeypatch
):
    ref, sizes = push_model(origin, tiny_model, settings, "df/mirror")
    before = blob_gets(origin.access_log(), "df/mirror")
    outs = []
    for n, peer in enumerate(dragonfly.nodes):
        monkeypatch.setenv("MODELPACK_MIRRORS", f"{origin.host}={peer.proxy}")
        node = settings.with_overrides(home=tmp_path / f"node-{n}")
        outs.append(modelpack.pull(ref, tmp_path / f"out-{n}", settings=node))
    for out in outs:
        assert tree_files(out) == tree_files(tiny_model)
    fetched = blob_gets(origin.access_log(), "df/mirror")[len(before) :]
    # Every blob's bytes left the registry once, though two nodes pulled it (a fallback
    # to the registry, or a second back-to-source download, would send them twice).
    assert bytes_sent(fetched) == sizes, fetched


def test_http_proxy_mode_two_dfdaemons_fetch_each_blob_once(
    dragonfly, origin, tiny_model, settings, tmp_path, monkeypatch
):
    ref, sizes = push_model(origin, tiny_model, settings, "df/proxy")
    before = blob_gets(origin.access_log(), "df/proxy")
    monkeypatch.setenv("NO_PROXY", "")
    outs = []
    for n, peer in enumerate(dragonfly.nodes):
        monkeypatch.setenv("HTTP_PROXY", peer.proxy)
        node = settings.with_overrides(home=tmp_path / f"node-{n}")
        outs.append(modelpack.pull(ref, tmp_path / f"out-{n}", settings=node))
    for out in outs:
        assert tree_files(out) == tree_files(tiny_model)
    fetched = blob_gets(origin.access_log(), "df/proxy")[len(before) :]
    assert bytes_sent(fetched) == sizes, fetched
    assert "modelpack" not in {agent for _digest, agent in fetched}, fetched


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "modelpack", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


def test_preheat_makes_the_seed_peer_fetch_every_blob_once(
    dragonfly, origin, tiny_model, settings, tmp_path, monkeypatch
):
    # A blob of more than one piece (dfdaemon's pieces are 4 MiB at least) besides the tiny
    # model's small ones: the seed peer registers only those at the scheduler.
    (tiny_model / "weights.dat").write_bytes(os.urandom(12 << 20))  # .bin: pickle-scanned
    ref, sizes = push_model(origin, tiny_model, settings, "df/preheat")
    large = {digest for digest, size in sizes.items() if size > PIECE}
    assert len(large) == 1 and len(sizes) > 1, sizes
    dragonfly.wait_for_seed_peer()
    before = blob_gets(origin.access_log(), "df/preheat")
    result = run_cli(
        "preheat", ref, "--plain-http", "--manager", dragonfly.manager_url, "--wait", "--json",
        env={"MODELPACK_DRAGONFLY_TOKEN": dragonfly.token},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + dragonfly.logs()
    job = json.loads(result.stdout)
    assert job["state"] == "SUCCESS"
    assert sorted(u.rsplit("/", 1)[1] for u in job["urls"]) == sorted(sizes)
    assert job["urls"][0].startswith(f"{origin.url}/v2/df/preheat/blobs/sha256:")
    warmed = blob_gets(origin.access_log(), "df/preheat")[len(before) :]
    assert bytes_sent(warmed) == sizes, warmed  # the seed peer fetched each blob once
    assert all(f"/v2/df/preheat/blobs/{d}" in dragonfly.seed.log_text() for d in sizes)
    # A node then pulls the model through its dfdaemon, intact: the large blob comes from
    # the seed peer (the registry sends only its 1-byte probe), each small one from the
    # registry again.  The seed peer fetched those (one piece each) without the scheduler
    # (schedulingPolicy auto in the scheduler's preheat request), so the scheduler knows no
    # parent for them; docs/registries.md "Dragonfly, run for real".
    monkeypatch.setenv("MODELPACK_MIRRORS", f"{origin.host}={dragonfly.nodes[0].proxy}")
    out = modelpack.pull(
        ref, tmp_path / "out", settings=settings.with_overrides(home=tmp_path / "n")
    )
    assert tree_files(out) == tree_files(tiny_model)
    pulled = bytes_sent(blob_gets(origin.access_log(), "df/preheat")[len(before) + len(warmed) :])
    assert not large & set(pulled), pulled
    assert pulled == Counter({d: n for d, n in sizes.items() if d not in large}), pulled


def test_preheat_refusals_and_their_exit_codes(dragonfly, origin, tiny_model, settings):
    ref, _ = push_model(origin, tiny_model, settings, "df/refusals")
    wrong = run_cli(
        "preheat", ref, "--plain-http", "--manager", dragonfly.manager_url,
        env={"MODELPACK_DRAGONFLY_TOKEN": "not-a-token"},
    )  # fmt: skip
    assert wrong.returncode == 4, wrong.stderr
    assert "refused the token (401" in wrong.stderr
    down = run_cli(
        "preheat", ref, "--plain-http", "--manager", "http://127.0.0.1:9",
        env={"MODELPACK_DRAGONFLY_TOKEN": dragonfly.token},
    )  # fmt: skip
    assert down.returncode == 6, down.stderr
    assert "unreachable" in down.stderr
    missing = run_cli(
        "preheat", ref.replace(":v1", ":absent"), "--plain-http", "--manager",
        dragonfly.manager_url, env={"MODELPACK_DRAGONFLY_TOKEN": dragonfly.token},
    )  # fmt: skip
    assert missing.returncode == 3, missing.stderr
    no_token = run_cli(
        "preheat", ref, "--plain-http", "--manager", dragonfly.manager_url,
        env={"MODELPACK_DRAGONFLY_TOKEN": ""},
    )  # fmt: skip
    assert no_token.returncode == 2, no_token.stderr
    assert "MODELPACK_DRAGONFLY_TOKEN" in no_token.stderr
