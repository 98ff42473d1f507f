"""``Range: bytes=0-0`` answered ``206`` with ``Content-Range`` on every way a file is served.

The Rust ``hf-hub`` crate (what TGI and ModelExpress link) learns a file's size and commit
from a one-byte GET before it downloads, and fails without ``Content-Range``; ModelExpress
skips a ``416`` as an empty file.  Each kind of file the gateway serves is asked that way
first, cold (nothing of it on this node yet), then again from the node cache, and then
downloaded by ``hf-hub`` and by huggingface_hub: a raw layer (one file's bytes), a file of
a tar layer (unpacked on its own when asked cold), a file uploaded through Xet (put
together from xorbs into a registry blob), and a file of a repo imported from an upstream
hub on that first request.  An empty file answers ``416 bytes */0``, as the hub does."""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

import pytest
import requests
from support.gateway import Gateway, clean_env
from support.helpers import build_and_push
from support.rust_clients import build_rust_peers

from modelpack.settings import Settings
from modelpack.testing import RegistryServer

NS = "ranges"
WEIGHTS = random.Random(7).randbytes(3 << 20)
UPLOAD = """
import json, sys
from huggingface_hub import HfApi
repo, folder = json.loads(sys.argv[1])
HfApi().create_repo(repo)
print(json.dumps(HfApi().upload_folder(repo_id=repo, folder_path=folder).oid))
"""


def _model(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "seed": seed}))
    (folder / "weights.dat").write_bytes(random.Random(seed).randbytes(2 << 20))
    (folder / "empty.txt").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def world(registry, tmp_path_factory):
    """(gateway, {kind: (repo, file, bytes)}): raw and tar models pushed, a Xet upload made,
    an upstream hub holding one more that the gateway has not imported yet."""
    work = tmp_path_factory.mktemp("ranges")
    settings = Settings(home=work / "home", plain_http=True)
    files = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_CONFIG", str(work / "docker"))
        for kind, options in (("raw", {}), ("tar", {"layer_format": "tar"})):
            model = _model(work / kind, seed=len(files))
            build_and_push(model, f"{registry.host}/{NS}/org/{kind}:main", settings, **options)
            files[kind] = (f"org/{kind}", "weights.dat", (model / "weights.dat").read_bytes())
        up_registry = RegistryServer(workdir=work / "up-registry")
        up_registry.start()
        model = _model(work / "up", seed=9)
        build_and_push(model, f"{up_registry.host}/hub/up/model:main", settings)
        files["upstream"] = ("up/model", "weights.dat", (model / "weights.dat").read_bytes())
    upstream = Gateway(f"{up_registry.host}/hub", work / "upstream").start()
    # The Xet upload through another gateway: nothing of it is in the served one's cache.
    uploader = Gateway(f"{registry.host}/{NS}", work / "uploader",
                       env={"MODELPACK_GATEWAY_INLINE_MAX": "1024"}).start()  # fmt: skip
    folder = work / "xet-folder"
    folder.mkdir()
    (folder / "weights.dat").write_bytes(WEIGHTS)
    try:
        uploader.client(UPLOAD, ["org/xet", str(folder)], work / "hf-upload", "alice:pw")
        assert "POST /api/modelpack/xet/v1/shards 200" in uploader.log()  # through Xet
    finally:
        uploader.stop()
    files["xet"] = ("org/xet", "weights.dat", WEIGHTS)
    gateway = Gateway(f"{registry.host}/{NS}", work / "gateway",
                      ("--upstream", upstream.url, "--upstream-allow", "up/*")).start()  # fmt: skip
    yield gateway, files
    gateway.stop()
    upstream.stop()
    up_registry.cleanup()


def _first_byte(url: str) -> requests.Response:
    """GET with ``Range: bytes=0-0``, retrying a 503 as huggingface_hub and hf-hub's
    callers do while an upstream import runs (Retry-After)."""
    for _ in range(60):
        answer = requests.get(url, headers={"Range": "bytes=0-0"}, timeout=120)
        if answer.status_code != 503:
            return answer
        time.sleep(float(answer.headers.get("Retry-After", "1")))
    return answer


@pytest.mark.parametrize("kind", ["raw", "tar", "xet", "upstream"])
def test_one_byte_is_206_with_content_range_cold_and_cached(world, kind):
    gateway, files = world
    repo, name, data = files[kind]
    url = f"{gateway.url}/{repo}/resolve/main/{name}"
    for when in ("cold", "cached"):
        answer = _first_byte(url)
        assert answer.status_code == 206, (kind, when, answer.status_code, answer.text[:300])
        assert answer.headers["Content-Range"] == f"bytes 0-0/{len(data)}", (kind, when)
        assert answer.headers["Content-Length"] == "1" and answer.content == data[:1]
        assert answer.headers["X-Repo-Commit"] and answer.headers["ETag"]
        gateway.wait_idle()
    # The first time from the registry (pulled, verified, then sent), the second from the
    # node cache (a tar layer's file: its unpacked tree).  An upstream import builds into the
    # node store, so its first answer already comes from there, not fetched back.
    first = "cache" if kind == "upstream" else "registry"
    for source in (first, "cache"):
        gateway.wait_for_log(rf"GET /{repo}/resolve/main/{name} 206 1B {source}")
    if kind == "upstream":
        assert f"GET /{repo}/resolve/main/{name} 206 1B registry" not in gateway.log()


def test_an_empty_file_is_416_as_the_hub_answers(world):
    gateway, files = world
    for kind in ("raw", "tar"):
        url = f"{gateway.url}/{files[kind][0]}/resolve/main/empty.txt"
        answer = requests.get(url, headers={"Range": "bytes=0-0"}, timeout=60)
        assert answer.status_code == 416 and answer.headers["Content-Range"] == "bytes */0"
        assert requests.get(url, timeout=60).status_code == 200


def test_hf_hub_and_huggingface_hub_download_every_kind(world, tmp_path):
    gateway, files = world
    rust = build_rust_peers() / "hf-hub-fetch"
    env = clean_env(tmp_path, HF_ENDPOINT=gateway.url, HF_HOME=str(tmp_path / "rust"),
                    HF_HUB_DISABLE_TELEMETRY="1")  # fmt: skip
    for kind, (repo, name, data) in files.items():
        result = subprocess.run([str(rust), repo, "main", name], env=env, capture_output=True,
                                text=True, timeout=600)  # fmt: skip
        assert result.returncode == 0, (kind, result.stderr[-2000:])
        path = next(line.split("\t")[2] for line in result.stdout.splitlines()
                    if line.startswith("file\t"))  # fmt: skip
        assert Path(path).read_bytes() == data, kind
        assert Path(path).name == name
    ops = [["file", repo, name, "main"] for repo, name, _ in files.values()]
    ops += [["file", files["tar"][0], "empty.txt", "main"]]
    results = gateway.hf(ops, tmp_path / "py")
    for (kind, (_, _, data)), result in zip(files.items(), results, strict=False):
        assert Path(result["path"]).read_bytes() == data, (kind, result)
    assert Path(results[-1]["path"]).read_bytes() == b""
