"""`modelpack serve --upstream`: what the upstream lacks is not asked again for
`--upstream-miss-ttl` seconds, and the memory of it is bounded (`--upstream-miss-max`).

The upstream is a second `modelpack serve` in front of a second registry (as in
test_hub_upstream.py), or the hub double of tests/support/model_hubs.py where a test needs
what a gateway never answers (a listed file that is missing) or many misses quickly; either
way the requests the upstream received are counted.
"""

import time
from pathlib import Path

import pytest
import requests
from support.gateway import Gateway
from support.helpers import build_and_push, tree_files
from support.model_hubs import FakeHub, HubRepo

from modelpack.settings import Settings
from modelpack.testing import RegistryServer, make_tiny_model

NS = "misses"
TTL = 3  # seconds: short, so the test can wait it out


def _asked(upstream: Gateway, pattern: str) -> int:
    return len(upstream.answered(pattern))


def _info(gateway: Gateway, repo: str, revision: str = "main") -> requests.Response:
    return requests.get(f"{gateway.url}/api/models/{repo}/revision/{revision}", timeout=300)


def _misses(gateway: Gateway) -> dict[str, float]:
    metrics = gateway.metrics()
    return {
        by: metrics.get(f'modelpack_gateway_upstream_misses_total{{answered_by="{by}"}}', 0)
        for by in ("upstream", "remembered")
    }


@pytest.fixture(scope="module")
def world(registry, tmp_path_factory):
    """(model, upstream gateway, gateway under test with a 3 s miss TTL)."""
    work = tmp_path_factory.mktemp("misses")
    model = make_tiny_model(work / "tiny")
    with RegistryServer(workdir=work / "upstream-registry") as up_registry:
        settings = Settings(home=work / "home", plain_http=True)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DOCKER_CONFIG", str(work / "docker"))
            build_and_push(model, f"{up_registry.host}/up/org/tiny:main", settings)
        upstream = Gateway(f"{up_registry.host}/up", work / "upstream").start()
        gateway = Gateway(
            f"{registry.host}/{NS}",
            work / "gateway",
            ("--upstream", upstream.url, "--upstream-allow", "org/*",
             "--upstream-miss-ttl", str(TTL)),
        ).start()  # fmt: skip
        try:
            yield model, upstream, gateway
        finally:
            gateway.stop()
            upstream.stop()


def test_a_missing_repo_is_asked_once_within_the_ttl_and_again_after_it(world, tmp_path):
    _, upstream, gateway = world
    results = gateway.hf([["snapshot", "org/ghost", "main"]] * 3, tmp_path / "hf")
    remembered = time.monotonic()  # the miss was remembered before this
    assert [r.get("error") for r in results] == ["RepositoryNotFoundError"] * 3, results
    # Another revision of a repo the upstream said it lacks: not asked either.
    response = _info(gateway, "org/ghost", "v2")
    assert response.status_code == 404 and response.headers["X-Error-Code"] == "RepoNotFound"
    asked = r"GET /api/models/org/ghost/revision/\S+"
    assert _asked(upstream, asked) == 1
    assert _misses(gateway) == {"upstream": 1, "remembered": 3}
    gateway.wait_for_log(r"upstream: org/ghost@v2 not asked: a miss \d+s ago")

    time.sleep(max(0.0, remembered + TTL + 0.5 - time.monotonic()))  # the TTL has passed
    assert _info(gateway, "org/ghost").status_code == 404
    assert _asked(upstream, asked) == 2
    assert _info(gateway, "org/ghost").status_code == 404
    assert _asked(upstream, asked) == 2  # remembered again


def test_a_missing_revision_is_remembered_without_hiding_the_repo(world, registry):
    """org/tiny@nope is a miss of that revision only: main is still imported; once it is,
    the repo is internal and nope is the registry's to answer."""
    _, upstream, gateway = world
    for _ in range(3):
        response = _info(gateway, "org/tiny", "nope")
        assert response.status_code == 404, response.text
        assert response.headers["X-Error-Code"] == "RevisionNotFound"  # as the upstream said
    assert _asked(upstream, r"GET /api/models/org/tiny/revision/nope") == 1
    assert _info(gateway, "org/tiny").status_code == 200  # imported
    tags = requests.get(f"{registry.url}/v2/{NS}/org/tiny/tags/list", timeout=30).json()
    assert tags["tags"] == ["main"]
    response = _info(gateway, "org/tiny", "nope")
    assert response.headers["X-Error-Code"] == "RevisionNotFound"
    assert _asked(upstream, r"GET /api/models/org/tiny/revision/nope") == 1


def test_a_missing_file_of_an_imported_repo_never_asks_the_upstream(world):
    """Files are the registry's once a revision is imported: a path it lacks is the
    registry's EntryNotFound, whatever the upstream might have."""
    _, upstream, gateway = world
    assert _info(gateway, "org/tiny").status_code == 200  # imported (here or before)
    before = _asked(upstream, r"\S+ /(api/models/)?org/tiny/.*")
    for method in ("HEAD", "GET", "GET"):
        response = requests.request(
            method, f"{gateway.url}/org/tiny/resolve/main/not-there.bin", timeout=60
        )
        assert response.status_code == 404 and response.headers["X-Error-Code"] == "EntryNotFound"
    assert _asked(upstream, r"\S+ /(api/models/)?org/tiny/.*") == before


def test_a_remembered_miss_never_hides_what_is_pushed_meanwhile(world, registry, tmp_path):
    model, upstream, gateway = world
    assert _info(gateway, "org/later").status_code == 404
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
        build_and_push(model, f"{registry.host}/{NS}/org/later:main",
                       Settings(home=tmp_path / "home", plain_http=True))  # fmt: skip
    (result,) = gateway.hf([["snapshot", "org/later", "main"]], tmp_path / "hf")
    assert tree_files(Path(result["path"])) == tree_files(model)  # the registry is asked first
    assert _asked(upstream, r"\S+ /(api/models/)?org/later/.*") == 1


# -- the hub double: a listed file that is missing, and many misses ----------------------


@pytest.fixture
def hub(tmp_path):
    files = tmp_path / "broken"
    files.mkdir()
    (files / "config.json").write_text('{"model_type": "bert"}\n')
    (files / "README.md").write_text("# broken\n")
    server = FakeHub()
    server.add(HubRepo("org/broken", files, "b" * 40, missing={"config.json"}))
    server.start()
    yield server
    server.stop()


def _gateway(hub: FakeHub, registry, tmp_path: Path, *args: str) -> Gateway:
    return Gateway(
        f"{registry.host}/{NS}-double",
        tmp_path / "gateway",
        ("--upstream", hub.url, "--upstream-allow", "org/*", *args),
    ).start()


def test_a_listed_file_the_upstream_lacks_is_not_asked_again(hub, registry, tmp_path):
    """The listing names config.json, the download is a 404: the revision cannot be
    imported; the next requests get the same 403 without asking."""
    gateway = _gateway(hub, registry, tmp_path)
    try:
        answers = [_info(gateway, "org/broken") for _ in range(3)]
        assert [a.status_code for a in answers] == [403] * 3
        assert {a.headers["X-Error-Code"] for a in answers} == {"GatedRepo"}
        assert len({a.json()["error"] for a in answers}) == 1  # the same answer each time
        gateway.wait_for_log(r"listed, but the upstream hub has no such file")
        assert _misses(gateway) == {"upstream": 1, "remembered": 2}
    finally:
        gateway.stop()
    listings = [s for s in hub.seen if s[1].startswith("/api/models/org/broken/revision/")]
    downloads = [s for s in hub.seen if s[1].endswith("/config.json")]
    assert len(listings) == 1 and len(downloads) == 1


def test_many_made_up_repos_are_remembered_within_the_bound_only(hub, registry, tmp_path):
    """An attacker names 40 repos the upstream lacks against a memory of 8: each costs the
    upstream one request, the last 8 are remembered, the first was dropped (asked again)."""
    gateway = _gateway(hub, registry, tmp_path, "--upstream-miss-max", "8")
    try:
        names = [f"org/made-up-{i}" for i in range(40)]
        assert {_info(gateway, name).status_code for name in names} == {404}
        assert len(hub.seen) == 40
        for name in names[-8:]:
            assert _info(gateway, name).status_code == 404
        assert len(hub.seen) == 40  # remembered
        assert _info(gateway, names[0]).status_code == 404
        assert len(hub.seen) == 41  # dropped from the memory: asked again
        # Names outside --upstream-allow are never asked, so never remembered either.
        assert {_info(gateway, f"other/made-up-{i}").status_code for i in range(20)} == {404}
        assert len(hub.seen) == 41
        assert _misses(gateway) == {"upstream": 41, "remembered": 8}
    finally:
        gateway.stop()


def test_a_ttl_of_zero_asks_every_time(hub, registry, tmp_path):
    gateway = _gateway(hub, registry, tmp_path, "--upstream-miss-ttl", "0")
    try:
        for _ in range(3):
            assert _info(gateway, "org/ghost").status_code == 404
        assert len(hub.seen) == 3
        assert _misses(gateway) == {"upstream": 3, "remembered": 0}
    finally:
        gateway.stop()
