"""`modelpack serve`: huggingface_hub downloads from an OCI registry with only HF_ENDPOINT set.

The gateway runs as its own process (gunicorn) in front of the real test registry;
the client is huggingface_hub in a subprocess, as every hub tool uses it.
"""

import hashlib
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml
from support.gateway import Gateway, blob_gets, clean_env
from support.helpers import build_and_push, tree_files
from support.junk_signatures import add_junk_signatures

import modelpack
from modelpack.settings import Settings
from modelpack.testing import RegistryServer, make_tiny_model

NAMESPACE = "gw"


def _push(model: Path, host: str, name: str, home: Path, **kwargs) -> str:
    settings = Settings(home=home, plain_http=True)
    ref = f"{host}/{NAMESPACE}/{name}"
    build_and_push(model, ref, settings, **kwargs)
    return ref


@pytest.fixture(scope="module")
def hub(registry, tmp_path_factory):
    """The tiny model as org/tiny:v1 and a gateway in front of the registry."""
    work = tmp_path_factory.mktemp("gateway")
    model = make_tiny_model(work / "tiny")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_CONFIG", str(work / "docker"))
        _push(model, registry.host, "org/tiny:v1", work / "home")
    gateway = Gateway(f"{registry.host}/{NAMESPACE}", work / "gateway").start()
    yield gateway, model
    gateway.stop()


def _ok(results):
    assert all("path" in r for r in results), results
    return [Path(r["path"]) for r in results]


def test_snapshot_and_file_download_then_served_from_cache(hub, registry, tmp_path):
    gateway, model = hub
    snapshot, config_file = _ok(
        gateway.hf(
            [["snapshot", "org/tiny", "v1"], ["file", "org/tiny", "config.json", "v1"]],
            tmp_path / "first",
        )
    )
    assert tree_files(snapshot) == tree_files(model)
    assert config_file.read_bytes() == (model / "config.json").read_bytes()
    # The commit names the snapshot and refs/v1; weights are cached under their sha256.
    repo_dir = tmp_path / "first" / "hub" / "models--org--tiny"
    commit = (repo_dir / "refs" / "v1").read_text()
    assert re.fullmatch(r"[0-9a-f]{40}", commit) and snapshot.name == commit
    weights = hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()
    assert (repo_dir / "blobs" / weights).is_file()

    gateway.wait_idle()
    repository = f"{NAMESPACE}/org/tiny"
    pulled = blob_gets(registry.access_log(), repository)
    assert pulled and all(n == 1 for n in pulled.values()), pulled
    cache_bytes = gateway.metrics()['modelpack_gateway_served_bytes_total{source="cache"}']

    (again,) = _ok(gateway.hf([["snapshot", "org/tiny", "v1"]], tmp_path / "second"))
    assert tree_files(again) == tree_files(model)
    assert blob_gets(registry.access_log(), repository) == pulled  # no new blob GETs
    metrics = gateway.metrics()
    served = metrics['modelpack_gateway_served_bytes_total{source="cache"}'] - cache_bytes
    assert served == sum(len(data) for data in tree_files(model).values())
    assert (
        metrics['modelpack_gateway_requests_total{method="GET",route="resolve",status="200"}'] >= 20
    )
    # One line per request on stderr, no credentials in it.
    gateway.wait_for_log(r"GET /org/tiny/resolve/[0-9a-f]{40}/model.safetensors 200 \d+B cache")


def test_a_model_in_cnai_media_types_is_served_too(hub, tmp_path):
    """The pre-CNCF names (modctl releases, builds for Harbor) on the gateway's path."""
    gateway, model = hub
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
        _push(model, gateway.registry.split("/")[0], "org/tiny-cnai:v1", tmp_path / "home",
              media_types="cnai")  # fmt: skip
    (snapshot,) = _ok(gateway.hf([["snapshot", "org/tiny-cnai", "v1"]], tmp_path / "hf"))
    assert tree_files(snapshot) == tree_files(model)


def test_model_info_tree_and_hub_metadata(hub):
    gateway, model = hub
    info = requests.get(f"{gateway.url}/api/models/org/tiny/revision/v1?blobs=true").json()
    names = {s["rfilename"] for s in info["siblings"]}
    assert names == set(tree_files(model))
    weights = next(s for s in info["siblings"] if s["rfilename"] == "model.safetensors")
    data = (model / "model.safetensors").read_bytes()
    assert weights["lfs"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert weights["size"] == len(data)
    tree = requests.get(f"{gateway.url}/api/models/org/tiny/tree/{info['sha']}").json()
    assert {e["path"] for e in tree} == {n for n in names if "/" not in n} | {"1_Pooling"}
    assert next(e for e in tree if e["path"] == "1_Pooling")["type"] == "directory"
    head = requests.head(f"{gateway.url}/org/tiny/resolve/v1/model.safetensors")
    assert head.status_code == 200
    assert head.headers["X-Repo-Commit"] == info["sha"]
    assert head.headers["ETag"] == f'"{weights["lfs"]["sha256"]}"'
    assert head.headers["X-Linked-Size"] == head.headers["Content-Length"] == str(len(data))


def test_range_requests_while_pulling_and_from_cache(hub, registry, tmp_path):
    gateway, _ = hub
    model = make_tiny_model(tmp_path / "ranged", hidden=128)
    _push(model, registry.host, "org/ranged:v1", tmp_path / "home")
    data = (model / "model.safetensors").read_bytes()
    size = len(data)
    url = f"{gateway.url}/org/ranged/resolve/v1/model.safetensors"
    # First request: nothing cached, the bytes stream in from the registry.
    first = requests.get(url, headers={"Range": "bytes=100-4195"})
    assert first.status_code == 206
    assert first.content == data[100:4196]
    assert first.headers["Content-Range"] == f"bytes 100-4195/{size}"
    gateway.wait_for_log(r"GET /org/ranged/resolve/v1/model.safetensors 206 4096B registry")
    gateway.wait_idle()
    for header, expected in [
        ("bytes=0-0", data[:1]),
        (f"bytes={size - 7}-", data[-7:]),
        ("bytes=-5", data[-5:]),
        (f"bytes=10-{size * 2}", data[10:]),
    ]:
        answer = requests.get(url, headers={"Range": header})
        assert answer.status_code == 206, header
        assert answer.content == expected, header
        assert answer.headers["Content-Length"] == str(len(expected))
    whole = requests.get(url)
    assert whole.status_code == 200 and whole.content == data
    beyond = requests.get(url, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{size}"
    etag = whole.headers["ETag"]
    assert requests.get(url, headers={"If-None-Match": etag}).status_code == 304


def test_errors_in_the_hubs_format(hub, tmp_path):
    gateway, _ = hub
    answer = requests.get(f"{gateway.url}/api/models/org/missing")
    assert answer.status_code == 404
    assert answer.headers["X-Error-Code"] == "RepoNotFound"
    assert "org/missing" in answer.json()["error"]
    missing_file = requests.head(f"{gateway.url}/org/tiny/resolve/v1/nope.bin")
    assert missing_file.headers["X-Error-Code"] == "EntryNotFound"
    assert re.fullmatch(r"[0-9a-f]{40}", missing_file.headers["X-Repo-Commit"])
    results = gateway.hf(
        [
            ["file", "org/missing", "config.json", "main"],
            ["file", "org/tiny", "config.json", "no-such-tag"],
            ["file", "org/tiny", "nope.bin", "v1"],
            ["snapshot", "org/missing", "main"],
        ],
        tmp_path / "client",
    )
    assert [r.get("error") for r in results] == [
        "RepositoryNotFoundError",
        "RevisionNotFoundError",
        "RemoteEntryNotFoundError",
        "RepositoryNotFoundError",
    ], results
    assert results[0]["status"] == 404


def test_mixed_case_repo_id_follows_a_relative_redirect(hub, tmp_path):
    gateway, model = hub
    answer = requests.get(f"{gateway.url}/Org/Tiny/resolve/v1/config.json", allow_redirects=False)
    assert answer.status_code == 307
    assert answer.headers["Location"] == "/org/tiny/resolve/v1/config.json"
    (path,) = _ok(gateway.hf([["file", "Org/Tiny", "config.json", "v1"]], tmp_path / "c"))
    assert path.read_bytes() == (model / "config.json").read_bytes()


def test_eight_concurrent_snapshot_downloads_pull_each_blob_once(hub, registry, tmp_path):
    gateway, _ = hub
    model = make_tiny_model(tmp_path / "eight", hidden=256)
    _push(model, registry.host, "org/eight:v1", tmp_path / "home")
    with ThreadPoolExecutor(8) as pool:
        runs = list(
            pool.map(
                lambda i: gateway.hf([["snapshot", "org/eight", "v1"]], tmp_path / f"c{i}"),
                range(8),
            )
        )
    expected = tree_files(model)
    for results in runs:
        (path,) = _ok(results)
        assert tree_files(path) == expected
    gateway.wait_idle()
    pulled = blob_gets(registry.access_log(), f"{NAMESPACE}/org/eight")
    weights = hashlib.sha256(expected["model.safetensors"]).hexdigest()
    assert f"sha256:{weights}" in pulled  # (files org/tiny has too came from the cache)
    assert set(pulled.values()) == {1}, pulled


USER, PASSWORD = "alice", "gateway-Pa55"


def test_client_credentials_pass_through_and_never_leak(tiny_model, tmp_path):
    with RegistryServer(users={USER: PASSWORD}, workdir=tmp_path / "registry") as server:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MODELPACK_USERNAME", USER)
            mp.setenv("MODELPACK_PASSWORD", PASSWORD)
            _push(tiny_model, server.host, "team/private:v1", tmp_path / "home")
        gateway = Gateway(
            f"{server.host}/{NAMESPACE}", tmp_path / "gateway", ("--token-user", USER)
        ).start()
        try:
            (path,) = _ok(
                gateway.hf([["snapshot", "team/private", "v1"]], tmp_path / "a", token=PASSWORD)
            )
            assert tree_files(path) == tree_files(tiny_model)
            gateway.wait_idle()
            # The model is cached now; clients the registry refuses still get nothing.
            for token in (None, "wrong-password"):
                results = gateway.hf(
                    [
                        ["snapshot", "team/private", "v1"],
                        ["file", "team/private", "config.json", "v1"],
                    ],
                    tmp_path / f"b-{token}",
                    token=token,
                )
                assert [r.get("error") for r in results] == ["RepositoryNotFoundError"] * 2
                assert {r["status"] for r in results} == {401}
            direct = requests.get(
                f"{gateway.url}/team/private/resolve/v1/model.safetensors",
                headers={"Authorization": "Bearer wrong-password"},
            )
            assert direct.status_code == 401 and not direct.content.startswith(b"{}")
            assert "safetensors" not in direct.text or direct.headers["X-Error-Code"]
        finally:
            gateway.stop()
        log = gateway.log()
        assert PASSWORD not in log and "wrong-password" not in log
        assert re.search(r"GET /team/private/resolve/v1/model.safetensors 401", log)


def test_verify_key_refuses_unsigned_models(registry, tiny_model, tmp_path):
    keys = modelpack.keygen(tmp_path / "key")
    settings = Settings(home=tmp_path / "home", plain_http=True)
    signed = _push(tiny_model, registry.host, "org/signed:v1", tmp_path / "home")
    modelpack.sign(signed, keys.private_path, settings=settings)
    _push(
        tiny_model,
        registry.host,
        "org/unsigned:v1",
        tmp_path / "home",
        set_fields=["config.precision=int8"],
    )
    gateway = Gateway(
        f"{registry.host}/{NAMESPACE}",
        tmp_path / "gateway",
        ("--verify-key", str(keys.public_path)),
    ).start()
    try:
        results = gateway.hf(
            [
                ["file", "org/signed", "config.json", "v1"],
                ["file", "org/unsigned", "config.json", "v1"],
            ],
            tmp_path / "client",
        )
        assert "path" in results[0], results
        assert results[1]["error"] == "GatedRepoError" and results[1]["status"] == 403, results
        assert "no valid signature" in results[1]["message"]
        refused = requests.get(f"{gateway.url}/org/unsigned/resolve/v1/config.json")
        assert refused.status_code == 403 and "signature" in refused.json()["error"]
    finally:
        gateway.stop()


def test_verify_key_reads_past_junk_signatures(registry, tiny_model, tmp_path):
    keys = modelpack.keygen(tmp_path / "key")
    settings = Settings(home=tmp_path / "home", plain_http=True)
    signed = _push(tiny_model, registry.host, "org/junk-beside:v1", tmp_path / "home")
    modelpack.sign(signed, keys.private_path, settings=settings)
    add_junk_signatures(signed, settings)
    only_junk = _push(
        tiny_model,
        registry.host,
        "org/only-junk:v1",
        tmp_path / "home",
        set_fields=["config.precision=int8"],
    )
    add_junk_signatures(only_junk, settings)
    gateway = Gateway(
        f"{registry.host}/{NAMESPACE}",
        tmp_path / "gateway",
        ("--verify-key", str(keys.public_path)),
    ).start()
    try:
        beside = requests.get(f"{gateway.url}/org/junk-beside/resolve/v1/config.json")
        assert beside.status_code == 200, beside.text
        refused = requests.get(f"{gateway.url}/org/only-junk/resolve/v1/config.json")
        assert refused.status_code == 403, refused.text
        assert "no valid signature" in refused.json()["error"]  # the client sees no internals
        assert "malformed" in gateway.wait_for_log("malformed")  # the operator's log does
    finally:
        gateway.stop()


def test_serve_without_a_registry_is_a_usage_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "modelpack", "serve", "--registry", "not a host"],
        capture_output=True, text=True, env=clean_env(tmp_path), timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "HOST[:PORT][/NAMESPACE]" in result.stderr


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_example_image_and_manifest_run_real_serve_options():
    from modelpack_cli.commands_serve import serve

    known = {opt for param in serve.params for opt in param.opts}
    documents = list(yaml.safe_load_all((EXAMPLES / "kubernetes" / "gateway.yaml").read_text()))
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    used = {a for a in container["args"] if a.startswith("--")}
    dockerfile = (EXAMPLES / "gateway" / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith(("ENTRYPOINT [", "CMD [")):
            used |= {a for a in json.loads(line.split(" ", 1)[1]) if a.startswith("--")}
    assert used and used <= known, used - known
    assert '--port", "8080"' in dockerfile
    assert container["ports"][0]["containerPort"] == 8080
    service = next(d for d in documents if d["kind"] == "Service")
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_start_says_what_to_set_and_a_missing_revision_lists_the_tags(hub, tmp_path):
    """Issue 22 item 7: the README's names work, the start line says HF_ENDPOINT and the
    mapping, and `Invalid rev id: main` says which revisions exist."""
    gateway, _ = hub
    banner = gateway.wait_for_log("HF_ENDPOINT=")
    assert f"HF_ENDPOINT=http://127.0.0.1:{gateway.port}" in banner
    assert f"-> {gateway.registry}/ORG/NAME:TAG" in gateway.log()
    answer = requests.get(f"{gateway.url}/api/models/org/tiny/revision/main")
    assert answer.status_code == 404
    assert answer.headers["X-Error-Code"] == "RevisionNotFound"
    assert "Invalid rev id: main for org/tiny (revisions: v1" in answer.json()["error"]


def test_serve_binds_to_this_machine_unless_told():
    from modelpack.gateway import GatewayConfig

    assert GatewayConfig("127.0.0.1:5000").bind == "127.0.0.1"
    from modelpack_cli.main import cli

    serve = cli.commands["serve"]
    assert next(p for p in serve.params if p.name == "bind").default == "127.0.0.1"
