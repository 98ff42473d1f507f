"""Uploads through `modelpack serve`: huggingface_hub (with hf_xet, as pip installs it)
creates repos, commits, branches and tags; each commit is a ModelPack artifact in the
real registry, pushed with the client's own credentials.
"""

import hashlib
import json
import random
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from support.gateway import CATCH, Gateway, clean_env
from support.helpers import build_and_push, run_cli, tree_files
from support.xetbuild import shard as xet_shard

from modelpack.settings import Settings
from modelpack.testing import RegistryServer, make_tiny_model

NAMESPACE = "up"
USER, PASSWORD = "pusher", "s3cret-push"


def hf_python(gateway: Gateway, code: str, hf_home: Path, token: str | None = None, **env):
    """Run ``code`` with huggingface_hub pointed at the gateway; its last stdout line is JSON."""
    return gateway.client(code, None, hf_home, token, env)


def blob_puts(registry_log: str, repository: str) -> list[str]:
    """Digests of the blob uploads the registry completed (PUT ...?digest=), in order."""
    return re.findall(
        rf'"PUT /v2/{re.escape(repository)}/blobs/uploads/[^ ?]+\?[^ ]*digest=sha256%3A([0-9a-f]{{64}}) HTTP/1\.1" 201',
        registry_log,
    )


def registry_manifest(registry, repo: str, reference: str) -> dict:
    response = requests.get(
        f"http://{registry.host}/v2/{NAMESPACE}/{repo}/manifests/{reference}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def chunk_schemes(xorbs: Path) -> set[int]:
    """The compression schemes of the chunks in the xorbs hf_xet sent (chunk headers:
    version, 3-byte compressed size, scheme, 3-byte size)."""
    schemes = set()
    for path in xorbs.iterdir():
        data, offset = path.read_bytes(), 0
        while offset + 8 <= len(data) and data[offset] == 0:
            schemes.add(data[offset + 4])
            offset += 8 + int.from_bytes(data[offset + 1 : offset + 4], "little")
    return schemes


@pytest.fixture(scope="module")
def gateway(registry, tmp_path_factory):
    work = tmp_path_factory.mktemp("uploads")
    gateway = Gateway(f"{registry.host}/{NAMESPACE}", work / "gateway").start()
    yield gateway
    gateway.stop()


def test_upload_folder_then_download_and_pull(gateway, registry, tiny_model, tmp_path):
    code = f"""
import json
from huggingface_hub import HfApi, snapshot_download
api = HfApi()
url = api.create_repo("org/tiny")
info = api.upload_folder(repo_id="org/tiny", folder_path={str(tiny_model)!r})
print(json.dumps({{"url": str(url), "oid": info.oid, "path": snapshot_download("org/tiny")}}))
"""
    out = hf_python(gateway, code, tmp_path / "hf")
    assert out["url"] == f"{gateway.url}/org/tiny"
    snapshot = Path(out["path"])
    assert snapshot.name == out["oid"] and re.fullmatch(r"[0-9a-f]{40}", out["oid"])
    assert tree_files(snapshot) == tree_files(tiny_model)  # byte-identical
    assert (snapshot / ".gitattributes").read_bytes().startswith(b"*.bin filter=lfs")

    # The commit is a ModelPack artifact tagged by branch and by commit id.
    reference = f"{registry.host}/{NAMESPACE}/org/tiny"
    env = {"MODELPACK_HOME": str(tmp_path / "home")}
    for tag in ("main", out["oid"]):
        target = tmp_path / f"pulled-{tag}"
        pulled = run_cli("pull", "--plain-http", f"{reference}:{tag}", "-o", str(target), env=env)
        assert pulled.returncode == 0, pulled.stderr
        assert tree_files(target) == tree_files(tiny_model)
    # `pull --hf-cache` names the snapshot by the hub commit id the gateway recorded.
    hf_cache = tmp_path / "hf-cache"
    pulled = run_cli("pull", "--plain-http", f"{reference}:main", "--hf-cache", str(hf_cache),
                     "--hf-trust-annotations", env=env)  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    assert (hf_cache / "models--org--tiny" / "snapshots" / out["oid"]).is_dir()
    manifest = registry_manifest(registry, "org/tiny", "main")
    assert manifest["annotations"]["io.modelpack.hf.commit"] == out["oid"]
    assert manifest["annotations"]["io.modelpack.hf.branch"] == "main"
    parent = manifest["annotations"]["io.modelpack.hf.parent"]  # the repo's initial commit
    assert (
        registry_manifest(registry, "org/tiny", parent)["annotations"]["io.modelpack.hf.commit"]
        == parent
    )
    kinds = {
        layer["annotations"]["org.cncf.model.filepath"]: layer["mediaType"]
        for layer in manifest["layers"]
    }
    assert kinds["model.safetensors"] == "application/vnd.cncf.model.weight.v1.raw"
    assert kinds["config.json"] == "application/vnd.cncf.model.weight.config.v1.raw"
    assert kinds["README.md"] == "application/vnd.cncf.model.doc.v1.raw"


def test_a_second_commit_uploads_only_the_changed_file(gateway, registry, tiny_model, tmp_path):
    repository = f"{NAMESPACE}/org/second"
    first = f"""
import json
from huggingface_hub import HfApi
api = HfApi()
api.create_repo("org/second")
print(json.dumps(api.upload_folder(repo_id="org/second", folder_path={str(tiny_model)!r}).oid))
"""
    first_oid = hf_python(gateway, first, tmp_path / "hf")
    before = blob_puts(registry.access_log(), repository)
    weights = tiny_model / "model.safetensors"
    weights.write_bytes(
        (make_tiny_model(tmp_path / "other", seed=7) / "model.safetensors").read_bytes()
    )
    changed = hashlib.sha256(weights.read_bytes()).hexdigest()
    second = (
        CATCH
        + f"""
import json
from huggingface_hub import HfApi, snapshot_download
api = HfApi()
exists = attempt(lambda: api.create_repo("org/second"))
api.create_repo("org/second", exist_ok=True)
info = api.upload_folder(repo_id="org/second", folder_path={str(tiny_model)!r})
commits = [c.commit_id for c in api.list_repo_commits("org/second")]
print(json.dumps({{"oid": info.oid, "commits": commits, "path": snapshot_download("org/second"),
                  "exists": exists}}))
"""
    )
    out = hf_python(gateway, second, tmp_path / "hf")
    assert out["exists"]["status"] == 409  # and exist_ok=True accepted it
    assert out["oid"] != first_oid and out["commits"][:2] == [out["oid"], first_oid]
    assert tree_files(Path(out["path"])) == tree_files(tiny_model)
    uploaded = blob_puts(registry.access_log(), repository)[len(before) :]
    # The changed weights and the new model config; no other file went to the registry again.
    assert changed in uploaded and len(uploaded) == 2, uploaded
    files = {hashlib.sha256(d).hexdigest() for d in tree_files(tiny_model).values()}
    assert (files & set(uploaded)) == {changed}


def test_branches_tags_refs_history_and_delete(gateway, registry, tiny_model, tmp_path):
    code = (
        CATCH
        + f"""
import json
from huggingface_hub import HfApi, hf_hub_download
api = HfApi()
api.create_repo("org/refs")
c1 = api.upload_file(path_or_fileobj={str(tiny_model / "config.json")!r},
                     path_in_repo="config.json", repo_id="org/refs").oid
api.create_branch("org/refs", branch="dev")
api.create_tag("org/refs", tag="v1", revision=c1)
c2 = api.upload_file(path_or_fileobj=b"on dev only", path_in_repo="dev.txt",
                     repo_id="org/refs", revision="dev").oid
c3 = api.delete_file("config.json", repo_id="org/refs").oid
api.upload_file(path_or_fileobj=b"1", path_in_repo="sub/a.txt", repo_id="org/refs", revision="dev")
folder = sorted(api.list_repo_files("org/refs", revision="dev"))
c5 = api.delete_folder("sub", repo_id="org/refs", revision="dev").oid
refs = api.list_repo_refs("org/refs")
print(json.dumps({{
    "c1": c1, "c2": c2, "c3": c3, "c5": c5, "folder": folder,
    "branches": sorted((r.name, r.target_commit) for r in refs.branches),
    "tags": sorted((r.name, r.target_commit) for r in refs.tags),
    "main": [[c.commit_id, c.title] for c in api.list_repo_commits("org/refs")],
    "dev": [c.commit_id for c in api.list_repo_commits("org/refs", revision="dev")],
    "files_main": sorted(api.list_repo_files("org/refs")),
    "files_v1": sorted(api.list_repo_files("org/refs", revision="v1")),
    "files_dev": sorted(api.list_repo_files("org/refs", revision="dev")),
    "dev_txt": open(hf_hub_download("org/refs", "dev.txt", revision="dev")).read(),
    "again": attempt(lambda: api.create_branch("org/refs", branch="dev")),
    "missing": attempt(lambda: api.delete_file("nope.txt", repo_id="org/refs")),
    "emptied": attempt(lambda: api.delete_file(".gitattributes", repo_id="org/refs")),
    "files_after": sorted(api.list_repo_files("org/refs")),
}}))
"""
    )
    out = hf_python(gateway, code, tmp_path / "hf")
    c1, c2, c3 = out["c1"], out["c2"], out["c3"]
    main = out["main"]
    assert [c for c, _ in main][:2] == [c3, c1] and len(main) == 3  # + the initial commit
    assert main[1][1] == "Upload config.json with huggingface_hub"
    assert main[0][1] == "Delete config.json with huggingface_hub"
    c5 = out["c5"]
    assert out["dev"][0] == c5 and out["dev"][2:4] == [c2, c1] and len(out["dev"]) == 5
    assert "sub/a.txt" in out["folder"]
    assert out["branches"] == [["dev", c5], ["main", c3]]
    assert out["tags"] == [["v1", c1]]
    assert out["files_main"] == [".gitattributes"]
    assert out["files_v1"] == [".gitattributes", "config.json"]
    assert out["files_dev"] == [".gitattributes", "config.json", "dev.txt"]
    assert out["dev_txt"] == "on dev only"
    assert out["again"]["status"] == 409
    assert out["missing"]["error"] == "RemoteEntryNotFoundError", out["missing"]
    # A ModelPack model holds a file at least: deleting the last one is refused, saying so.
    assert out["emptied"]["status"] == 400, out["emptied"]
    assert "without files" in out["emptied"]["message"], out["emptied"]
    assert out["files_after"] == [".gitattributes"]

    # Another gateway (its own process and cache) answers the same: all is in the registry.
    replica = Gateway(gateway.registry, tmp_path / "replica").start()
    try:
        refs = requests.get(f"{replica.url}/api/models/org/refs/refs", timeout=30).json()
        history = requests.get(f"{replica.url}/api/models/org/refs/commits/main", timeout=30).json()
    finally:
        replica.stop()
    assert sorted((r["name"], r["targetCommit"]) for r in refs["branches"]) == [
        ("dev", c5),
        ("main", c3),
    ]
    assert [c["id"] for c in history] == [c for c, _ in main]


def test_create_commit_through_lfs_basic_transfer(registry, tiny_model, tmp_path):
    """Files over --inline-max go through the LFS batch API and the basic transfer; a
    file object (not a path) takes that path even with hf_xet installed."""
    gateway = Gateway(
        f"{registry.host}/{NAMESPACE}",
        tmp_path / "gateway",
        env={"MODELPACK_GATEWAY_INLINE_MAX": "1024"},
    ).start()
    weights = tiny_model / "model.safetensors"
    code = (
        CATCH
        + f"""
import json
from huggingface_hub import HfApi, CommitOperationAdd, hf_hub_download
api = HfApi()
api.create_repo("org/lfs")
def commit(target):
    ops = [CommitOperationAdd(target, open({str(weights)!r}, "rb")),
           CommitOperationAdd("notes.txt", b"small and inline")]
    return api.create_commit("org/lfs", operations=ops, commit_message="weights " + target).oid
first = commit("model.safetensors")
second = commit("copy.safetensors")
xet = attempt(lambda: api.upload_file(path_or_fileobj={str(weights)!r},
                                      path_in_repo="by-path.safetensors", repo_id="org/lfs"))
print(json.dumps({{
    "first": first, "second": second, "xet": xet,
    "a": hf_hub_download("org/lfs", "model.safetensors"),
    "b": hf_hub_download("org/lfs", "copy.safetensors"),
    "notes": open(hf_hub_download("org/lfs", "notes.txt")).read(),
}}))
"""
    )
    try:
        out = hf_python(gateway, code, tmp_path / "hf")
        log = gateway.log()
    finally:
        gateway.stop()
    data = weights.read_bytes()
    assert Path(out["a"]).read_bytes() == data and Path(out["b"]).read_bytes() == data
    assert out["notes"] == "small and inline"
    # One body PUT to the gateway: the second batch answer had no action (the blob was there).
    assert len(re.findall(r"PUT /api/modelpack/lfs-upload/\S+ 200", log)) == 1, log
    assert len(re.findall(r"POST /org/lfs.git/info/lfs/objects/batch 200", log)) == 2
    oid = hashlib.sha256(data).hexdigest()
    assert blob_puts(registry.access_log(), f"{NAMESPACE}/org/lfs").count(oid) == 1
    assert "ok" in out["xet"], out["xet"]  # by path: through Xet (see below)
    assert "xet-write-token/main 200" in log


def test_lfs_upload_with_wrong_bytes_is_rejected(gateway, registry, tmp_path):
    hf_python(gateway, 'from huggingface_hub import HfApi; HfApi().create_repo("org/bad"); print(1)',
              tmp_path / "hf")  # fmt: skip
    good = b"the bytes the client announced"
    oid = hashlib.sha256(good).hexdigest()
    batch = requests.post(
        f"{gateway.url}/org/bad.git/info/lfs/objects/batch",
        json={
            "operation": "upload",
            "transfers": ["basic"],
            "objects": [{"oid": oid, "size": len(good)}],
        },
        timeout=30,
    ).json()
    href = batch["objects"][0]["actions"]["upload"]["href"]
    assert batch["transfer"] == "basic" and href.startswith(gateway.url)
    put = requests.put(href, data=b"other bytes, the same length!!", timeout=30)
    assert put.status_code == 400 and "sha256" in put.headers["X-Error-Message"]
    assert oid not in blob_puts(registry.access_log(), f"{NAMESPACE}/org/bad")
    # The ticket survives the refusal (huggingface_hub retries the same href), takes the
    # right body, and nothing after that.
    assert requests.put(href, data=good, timeout=30).status_code == 200
    assert oid in blob_puts(registry.access_log(), f"{NAMESPACE}/org/bad")
    assert requests.put(href, data=good, timeout=30).status_code == 404


def test_uploads_need_push_rights_at_the_registry(tiny_model, tmp_path):
    with RegistryServer(users={USER: PASSWORD}, workdir=tmp_path / "registry") as server:
        gateway = Gateway(
            f"{server.host}/{NAMESPACE}", tmp_path / "gateway", ("--token-user", USER)
        ).start()
        code = (
            CATCH
            + f"""
import json, sys
from huggingface_hub import HfApi
api = HfApi()
print(json.dumps({{
    "create": attempt(lambda: str(api.create_repo("team/private"))),
    "upload": attempt(lambda: api.upload_folder(repo_id="team/private",
                                                folder_path={str(tiny_model)!r}).oid),
}}))
"""
        )
        try:
            refused = {
                token: hf_python(gateway, code, tmp_path / f"hf-{token}", token=token)
                for token in ("wrong-password", None)
            }
            allowed = hf_python(gateway, code, tmp_path / "hf-ok", token=PASSWORD)
            second = hf_python(gateway, code, tmp_path / "hf-ok", token="wrong-password")
            xet = {
                token: requests.get(
                    f"{gateway.url}/api/models/team/private/xet-write-token/main",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                ).status_code
                for token in ("wrong-password", PASSWORD)
            }
        finally:
            gateway.stop()
        log = gateway.log()
        # --lend-credentials: the gateway's own credentials serve anonymous reads, never writes.
        lending = Gateway(
            f"{server.host}/{NAMESPACE}",
            tmp_path / "lending",
            ("--token-user", USER, "--lend-credentials"),
            env={"MODELPACK_USERNAME": USER, "MODELPACK_PASSWORD": PASSWORD},
        ).start()
        try:
            read = requests.get(f"{lending.url}/api/models/team/private", timeout=30)
            lent = {
                path: requests.request(
                    method, f"{lending.url}{path}", json={}, timeout=30
                ).status_code
                for method, path in [
                    ("POST", "/api/models/team/private/preupload/main"),
                    ("POST", "/team/private.git/info/lfs/objects/batch"),
                    ("GET", "/api/models/team/private/xet-write-token/main"),
                    ("POST", "/api/models/team/private/commit/main"),
                    ("POST", "/api/repos/create"),
                ]
            }
        finally:
            lending.stop()
    assert read.status_code == 200
    assert set(lent.values()) == {401}, lent
    wrong = refused["wrong-password"]
    assert wrong["create"]["status"] == 403 and "rights" in wrong["create"]["message"]
    assert refused[None]["create"]["status"] == 401
    assert wrong["upload"]["status"] in (401, 403) and refused[None]["upload"]["status"] == 401
    assert allowed["create"]["ok"].endswith("/team/private") and "ok" in allowed["upload"]
    assert second["upload"]["status"] in (401, 403)  # the repo exists now; still refused
    assert xet == {"wrong-password": 403, PASSWORD: 200}
    assert PASSWORD not in log and "wrong-password" not in log and server.host not in str(refused)


def test_hf_upload_cli(gateway, tiny_model, tmp_path):
    hf = Path(sys.executable).with_name("hf")
    env = clean_env(
        tmp_path,
        HF_ENDPOINT=gateway.url,
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    result = subprocess.run(
        [str(hf), "upload", "org/cli", str(tiny_model), "."],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{gateway.url}/org/cli" in result.stdout + result.stderr
    code = 'import json; from huggingface_hub import snapshot_download; print(json.dumps(snapshot_download("org/cli")))'
    snapshot = hf_python(gateway, code, tmp_path / "hf2")
    assert tree_files(Path(snapshot)) == tree_files(tiny_model)


def test_xet_uploads_of_files_over_the_inline_limit(registry, tiny_model, tmp_path):
    """hf_xet's path (the default for files given by path): xorbs and shards to the
    gateway's CAS endpoint, each file put together and pushed as a registry blob."""
    gateway = Gateway(
        f"{registry.host}/{NAMESPACE}",
        tmp_path / "gateway",
        env={"MODELPACK_GATEWAY_INLINE_MAX": "200"},
    ).start()
    # Bytes hf_xet compresses (LZ4 and byte-grouped LZ4 chunks) and bytes it cannot.
    extra = tiny_model / "extra"
    extra.mkdir()
    (extra / "zeros.bin").write_bytes(bytes(3 * 1024 * 1024 + 17))
    (extra / "text.txt").write_bytes(
        b"".join(b"line %d of a repetitive file\n" % i for i in range(200_000))
    )
    floats = b"".join(struct.pack("<f", 1.0 + (i % 977) * 1e-3) for i in range(700_000))
    (extra / "floats.bin").write_bytes(floats)
    (extra / "random.bin").write_bytes(random.Random(5).randbytes(2 * 1024 * 1024 + 3))
    code = f"""
import json
from huggingface_hub import HfApi, snapshot_download
api = HfApi()
api.create_repo("org/xet")
info = api.upload_folder(repo_id="org/xet", folder_path={str(tiny_model)!r})
print(json.dumps({{"oid": info.oid, "path": snapshot_download("org/xet")}}))
"""
    again = f"""
import json
from huggingface_hub import HfApi, snapshot_download
info = HfApi().upload_folder(repo_id="org/xet", folder_path={str(tiny_model)!r}, path_in_repo="copy")
print(json.dumps(snapshot_download("org/xet")))
"""
    try:
        out = hf_python(gateway, code, tmp_path / "hf")
        log = gateway.log()
    finally:
        gateway.stop()
    schemes = chunk_schemes(gateway.cache / "xet" / "verified")
    # Another gateway, without those xorbs, and the client with its Xet cache.
    shutil.rmtree(gateway.cache / "xet" / "verified")
    second = Gateway(gateway.registry, tmp_path / "second", env=gateway.env).start()
    try:
        snapshot = Path(hf_python(second, again, tmp_path / "hf"))
        second_log = second.log()
    finally:
        second.stop()
    files = tree_files(tiny_model)
    assert tree_files(snapshot) == files | {f"copy/{p}": d for p, d in files.items()}
    # hf_xet asks for global dedup (none here: 404) and sends the chunks again.
    assert re.search(r"GET /api/modelpack/xet/v1/chunks/default/[0-9a-f]{64} 404", second_log)
    assert re.search(r"POST /api/modelpack/xet/v1/shards 200", second_log)
    assert tree_files(Path(out["path"])) == tree_files(tiny_model)
    assert re.search(r"GET /api/models/org/xet/xet-write-token/main 200", log)
    assert re.search(r"POST /api/modelpack/xet/v1/xorbs/default/[0-9a-f]{64} 200", log)
    assert re.search(r"POST /api/modelpack/xet/v1/shards 200", log)
    assert {0, 1, 2} <= schemes  # stored, LZ4, byte-grouped LZ4
    big = {
        p: hashlib.sha256(d).hexdigest() for p, d in tree_files(tiny_model).items() if len(d) > 200
    }
    uploaded = set(blob_puts(registry.access_log(), f"{NAMESPACE}/org/xet"))
    assert set(big.values()) <= uploaded


def test_xet_endpoint_refuses_unknown_tokens_and_bad_shards(gateway, registry, tmp_path):
    hf_python(gateway, 'from huggingface_hub import HfApi; HfApi().create_repo("org/cas"); print(1)',
              tmp_path / "hf")  # fmt: skip
    token = requests.get(f"{gateway.url}/api/models/org/cas/xet-write-token/main", timeout=30)
    assert token.status_code == 200
    info = token.json()
    assert info["casUrl"] == f"{gateway.url}/api/modelpack/xet"
    assert token.headers["X-Xet-Access-Token"] == info["accessToken"]
    cas = info["casUrl"]
    before = blob_puts(registry.access_log(), f"{NAMESPACE}/org/cas")  # .gitattributes, config
    auth = {"Authorization": f"Bearer {info['accessToken']}"}
    wrong = requests.post(f"{cas}/v1/shards", data=b"x", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert (
        requests.post(f"{cas}/v1/shards", data=b"not a shard" * 10, headers=auth).status_code == 400
    )
    # A shard naming a xorb never uploaded: nothing is published.
    shard = xet_shard([([("1" * 64, 0, 1, 10)], "2" * 64)])
    missing = requests.post(f"{cas}/v1/shards", data=shard, headers=auth)
    assert missing.status_code == 400 and "never uploaded" in missing.headers["X-Error-Message"]
    dedup = requests.get(f"{cas}/v1/chunks/default-merkledb/{'0' * 64}", headers=auth)
    assert dedup.status_code == 404
    assert blob_puts(registry.access_log(), f"{NAMESPACE}/org/cas") == before


def test_commit_on_top_of_a_pushed_artifact(gateway, registry, tiny_model, tmp_path):
    """A model `modelpack push`ed (tar layers, no hub annotations, tag latest) is the
    parent of the first upload: its layers are kept, its config.json read from its tar
    layer, and it is tagged by its commit id so the history reaches it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
        settings = Settings(home=tmp_path / "home", plain_http=True)
        build_and_push(tiny_model, f"{registry.host}/{NAMESPACE}/org/pushed:latest", settings,
                       layer_format="tar", compress="gzip")  # fmt: skip
    code = """
import json
from huggingface_hub import HfApi, snapshot_download
api = HfApi()
before = api.model_info("org/pushed").sha
commit = api.upload_file(path_or_fileobj=b"new", path_in_repo="added.txt", repo_id="org/pushed").oid
print(json.dumps({"before": before, "commit": commit, "path": snapshot_download("org/pushed"),
                  "history": [c.commit_id for c in api.list_repo_commits("org/pushed")],
                  "refs": [(r.name, r.target_commit) for r in api.list_repo_refs("org/pushed").branches]}))
"""
    out = hf_python(gateway, code, tmp_path / "hf")
    assert tree_files(Path(out["path"])) == {**tree_files(tiny_model), "added.txt": b"new"}
    assert out["history"] == [out["commit"], out["before"]]
    assert out["refs"] == [["main", out["commit"]]]
    manifest = registry_manifest(registry, "org/pushed", "main")
    media = {
        layer["annotations"]["org.cncf.model.filepath"]: layer["mediaType"]
        for layer in manifest["layers"]
    }
    assert media["model.safetensors"].endswith(".tar+gzip") and media["added.txt"].endswith(".raw")
    config = requests.get(
        f"http://{registry.host}/v2/{NAMESPACE}/org/pushed/blobs/{manifest['config']['digest']}",
        timeout=30,
    ).json()
    assert config["config"]["paramSize"] and config["config"]["format"] == "safetensors"
    assert len(config["modelfs"]["diffIds"]) == len(manifest["layers"])


def test_what_the_commit_api_refuses(gateway, tmp_path):
    code = (
        CATCH
        + """
import json
from huggingface_hub import HfApi, CommitOperationAdd
api = HfApi()
api.create_repo("org/strict")
add = lambda: [CommitOperationAdd("a.txt", b"a")]
head = api.model_info("org/strict").sha
print(json.dumps({
    "stale_parent": attempt(lambda: api.create_commit("org/strict", operations=add(),
                            commit_message="m", parent_commit="0" * 40)),
    "right_parent": attempt(lambda: api.create_commit("org/strict", operations=add(),
                            commit_message="m", parent_commit=head).oid),
    "pr": attempt(lambda: api.create_commit("org/strict", operations=[CommitOperationAdd("p", b"p")],
                  commit_message="m", create_pr=True)),
    "slash_branch": attempt(lambda: api.create_branch("org/strict", branch="feature/x")),
    "mixed_case": attempt(lambda: api.upload_file(path_or_fileobj=b"x", path_in_repo="x",
                          repo_id="Org/Strict")),
}))
"""
    )
    out = hf_python(gateway, code, tmp_path / "hf")
    assert out["stale_parent"].get("status") == 412, out
    assert "ok" in out["right_parent"]
    assert out["pr"].get("status") == 400, out
    assert "pull requests" in out["pr"]["message"]
    assert out["slash_branch"].get("status") == 400, out
    assert out["mixed_case"].get("status") == 404 and "lower case" in out["mixed_case"]["message"]
    # An lfsFile naming bytes nobody uploaded.
    body = json.dumps({"key": "header", "value": {"summary": "s"}}) + "\n"
    body += json.dumps({"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256",
                                                    "oid": "1" * 64, "size": 5}}) + "\n"  # fmt: skip
    answer = requests.post(
        f"{gateway.url}/api/models/org/strict/commit/main",
        data=body,
        headers={"Content-Type": "application/x-ndjson"},
        timeout=30,
    )
    assert answer.status_code == 422 and "not uploaded" in answer.headers["X-Error-Message"]
    # upload_folder's README check: front matter the build would ignore is a 400.
    for content, status in [("---\nlicense: mit\n---\n# x", 200), ("---\na: [1\n---\n", 400),
                            ("---\n" + "[" * 5000 + "\n---\n", 400)]:  # fmt: skip
        check = requests.post(
            f"{gateway.url}/api/validate-yaml", json={"content": content}, timeout=30
        )
        assert check.status_code == status and ("errors" in check.json())
