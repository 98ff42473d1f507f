"""Pickle files that run code when loaded are refused at `build`, at gateway uploads and at
upstream imports, against the real registry; real torch.save files pass, and the scan is
what `inspect`, the model page and huggingface_hub's model_info / list_repo_tree show."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests
from support.gateway import CATCH, Gateway
from support.helpers import run_cli
from support.pickles import system_call

import modelpack
from modelpack.settings import Settings

SAFE = "zip-state-dict.ckpt"  # torch.save's zip, as pesto-pitch ships it
LEGACY = "legacy-state-dict.pth"  # torch.save's legacy stream, as lpips ships it


@pytest.fixture
def benign(tiny_model, torch_files, tmp_path) -> Path:
    """The tiny model (safetensors) with two real torch.save files beside it."""
    model = tmp_path / "benign"
    shutil.copytree(tiny_model, model)
    shutil.copy(torch_files / SAFE, model / "pytorch_model.bin")
    (model / "extra").mkdir()
    shutil.copy(torch_files / LEGACY, model / "extra" / "legacy.pth")
    return model


def _tags(registry, repository: str) -> requests.Response:
    return requests.get(f"{registry.url}/v2/{repository}/tags/list", timeout=30)


# -- build ----------------------------------------------------------------------------


def test_build_refuses_a_malicious_pickle_and_pushes_torch_save_files(benign, registry):
    reference = f"{registry.host}/scan/build"
    evil = benign / "training" / "optimizer.pt"
    evil.parent.mkdir()
    evil.write_bytes(system_call())

    refused = run_cli("build", str(benign), "-t", f"{reference}:v1", "--push", "--plain-http")
    assert refused.returncode == 5, refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("Error: training/optimizer.pt: a pickle refused: loading it runs code")
    assert "posix.system" in line and "--allow-unsafe-pickle" in line
    assert _tags(registry, "scan/build").status_code == 404  # nothing reached the registry

    kept = run_cli("build", str(benign), "-t", f"{reference}:v2", "--push", "--plain-http",
                   "--allow-unsafe-pickle")  # fmt: skip
    assert kept.returncode == 0, kept.stderr
    assert "training/optimizer.pt" in kept.stderr and "posix.system" in kept.stderr  # a warning
    evil.unlink()
    built = run_cli("build", str(benign), "-t", f"{reference}:v3", "--push", "--plain-http",
                    "--json")  # fmt: skip
    assert built.returncode == 0, built.stderr
    layers = {layer["path"]: layer for layer in json.loads(built.stdout)["layers"]}
    assert layers["pytorch_model.bin"]["pickleScan"]["status"] == "safe"

    inspected = run_cli("inspect", f"{reference}:v2", "--remote", "--plain-http", "--json")
    assert inspected.returncode == 0, inspected.stderr
    scans = {l["path"]: l.get("pickleScan") for l in json.loads(inspected.stdout)["layers"]}  # noqa: E741
    assert scans["model.safetensors"] is None and scans["config.json"] is None
    assert scans["pytorch_model.bin"]["status"] == "safe"
    assert scans["extra/legacy.pth"]["status"] == "safe"
    assert scans["training/optimizer.pt"]["status"] == "unsafe"
    assert scans["training/optimizer.pt"]["allowed"] is True
    assert {"module": "posix", "name": "system", "safety": "dangerous"} in scans[
        "training/optimizer.pt"
    ]["imports"]
    text = run_cli("inspect", f"{reference}:v2", "--remote", "--plain-http")
    assert text.returncode == 0, text.stderr
    assert "PICKLE SCAN" in text.stdout and "unsafe (posix.system), allowed" in text.stdout


# -- gateway uploads --------------------------------------------------------------------

UPLOAD = (
    CATCH
    + """
import json, sys
from huggingface_hub import HfApi
api = HfApi()
args = json.loads(sys.argv[1])
out = {}
if args.get("create"):
    api.create_repo(args["repo"], exist_ok=True)
out["uploads"] = [
    attempt(lambda f=f: api.upload_file(path_or_fileobj=f[0], path_in_repo=f[1],
                                        repo_id=args["repo"]).oid)
    for f in args["files"]
]
info = api.model_info(args["repo"], securityStatus=True)
out["sha"] = info.sha
out["security"] = info.security_repo_status
out["tree"] = {
    f.path: (dict(f.security) if f.security else None)
    for f in api.list_repo_tree(args["repo"], recursive=True, expand=True)
    if hasattr(f, "security")
}
print(json.dumps(out))
"""
)


def _upload(gateway: Gateway, repo: str, files: list[tuple[Path, str]], hf_home: Path) -> dict:
    argument = {"repo": repo, "create": True, "files": [[str(p), n] for p, n in files]}
    return gateway.client(UPLOAD, argument, hf_home)


@pytest.fixture(scope="module")
def gateway(registry, tmp_path_factory):
    """A gateway that sends files over 4 KiB through LFS or Xet (registry blobs), smaller
    ones inline in the commit (spooled on its disk): both ways are scanned."""
    work = tmp_path_factory.mktemp("pickle-uploads")
    gateway = Gateway(f"{registry.host}/scan-up", work / "gateway", ("--inline-max", "4096"))
    yield gateway.start()
    gateway.stop()


def test_uploads_of_pickles_that_run_code_are_refused(gateway, benign, tmp_path):
    small, large = tmp_path / "small.pt", tmp_path / "large.bin"
    small.write_bytes(system_call())
    large.write_bytes(system_call(padding=64 * 1024))  # over --inline-max: LFS or Xet
    files = [
        (benign / "config.json", "config.json"),
        (benign / "pytorch_model.bin", "pytorch_model.bin"),  # 123 kB: a registry blob
        (benign / "extra" / "legacy.pth", "extra/legacy.pth"),  # 6 kB: a registry blob
        (small, "optimizer.pt"),  # inline
        (large, "evil/pytorch_model.bin"),
    ]
    out = _upload(gateway, "org/scanned", files, tmp_path / "hf")
    good, legacy, refused_small, refused_large = out["uploads"][1:]
    assert "ok" in good and "ok" in legacy, out
    for refused, name in (
        (refused_small, "optimizer.pt"),
        (refused_large, "evil/pytorch_model.bin"),
    ):
        assert refused["status"] == 400, refused
        assert f"{name}: a pickle refused" in refused["message"], refused
        assert "posix.system" in refused["message"]
    assert out["sha"] == legacy["ok"]  # the refusals left no commit
    assert out["security"] == {"scansDone": True, "filesWithIssues": []}
    assert "optimizer.pt" not in out["tree"] and "evil/pytorch_model.bin" not in out["tree"]
    weights = out["tree"]["pytorch_model.bin"]
    assert weights["safe"] is True and weights["status"] == "safe" and weights["av_scan"] is None
    assert weights["pickle_import_scan"]["highestSafetyLevel"] == "innocuous"
    assert {"module": "torch._utils", "name": "_rebuild_tensor_v2", "safety": "innocuous"} in (
        weights["pickle_import_scan"]["imports"]
    )
    assert out["tree"]["config.json"] is None  # not a pickle: no scan
    # The three large files came as registry blobs (Xet: huggingface_hub with hf_xet, as pip
    # installs it), read back by Range for the scan; the small payload inline.
    assert gateway.log().count("/xet/v1/shards 200") == 3
    page = requests.get(f"{gateway.url}/org/scanned", timeout=30)
    assert page.status_code == 200 and page.text.count("pickle: safe") == 2


def test_a_gateway_with_the_option_keeps_them_and_says_so(registry, benign, tmp_path):
    gateway = Gateway(
        f"{registry.host}/scan-allow", tmp_path / "gateway", ("--inline-max", "4096"),
        env={"MODELPACK_GATEWAY_ALLOW_UNSAFE_PICKLE": "1"},
    ).start()  # fmt: skip
    try:
        evil = tmp_path / "evil.bin"
        evil.write_bytes(system_call(padding=64 * 1024))
        out = _upload(gateway, "org/kept", [(evil, "pytorch_model.bin")], tmp_path / "hf")
        assert "ok" in out["uploads"][0], out
        assert out["security"] == {
            "scansDone": True,
            "filesWithIssues": [{"path": "pytorch_model.bin", "level": "unsafe"}],
        }
        weights = out["tree"]["pytorch_model.bin"]
        assert weights["safe"] is False and weights["status"] == "unsafe"
        assert weights["pickle_import_scan"]["highestSafetyLevel"] == "dangerous"
        page = requests.get(f"{gateway.url}/org/kept", timeout=30).text
        assert "pickle: unsafe: calls posix.system (allowed)" in page
    finally:
        gateway.stop()


# -- upstream imports -------------------------------------------------------------------


def test_imports_of_pickles_that_run_code_are_refused(registry, benign, tmp_path, monkeypatch):
    """The upstream is a second gateway; the models were put in its registry with the
    option (a hub that does not scan); the gateway under test imports with the build."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    settings = Settings(home=tmp_path / "home", plain_http=True)
    modelpack.build(benign, f"{registry.host}/scan-src/org/saved:main", settings=settings,
                    push=True)  # fmt: skip
    evil = tmp_path / "evil"
    shutil.copytree(benign, evil)
    (evil / "pytorch_model.bin").write_bytes(system_call(padding=1024))
    modelpack.build(evil, f"{registry.host}/scan-src/org/evil:main", settings=settings,
                    push=True, allow_unsafe_pickle=True)  # fmt: skip
    upstream = Gateway(f"{registry.host}/scan-src", tmp_path / "upstream").start()
    gateway = Gateway(
        f"{registry.host}/scan-imported",
        tmp_path / "gateway",
        ("--upstream", upstream.url, "--upstream-allow", "org/*"),
    ).start()
    try:
        (refused,) = gateway.hf([["file", "org/evil", "config.json", "main"]], tmp_path / "hf")
        assert refused["status"] == 403 and refused["error"] == "GatedRepoError", refused
        assert "pytorch_model.bin" in refused["message"], refused
        assert "posix.system" in refused["message"] and "nothing was imported" in refused["message"]
        assert _tags(registry, "scan-imported/org/evil").status_code == 404

        (fetched,) = gateway.hf(
            [["file", "org/saved", "pytorch_model.bin", "main"]], tmp_path / "hf"
        )
        assert Path(fetched["path"]).read_bytes() == (benign / "pytorch_model.bin").read_bytes()
        info = requests.get(f"{gateway.url}/api/models/org/saved?securityStatus=true", timeout=30)
        assert info.json()["securityRepoStatus"] == {"scansDone": True, "filesWithIssues": []}
        tree = requests.get(f"{gateway.url}/api/models/org/saved/tree/main?recursive=true",
                            timeout=30).json()  # fmt: skip
        status = {e["path"]: e.get("securityFileStatus", {}).get("status") for e in tree}
        assert status["pytorch_model.bin"] == "safe" and status["extra/legacy.pth"] == "safe"
        assert status["model.safetensors"] is None
    finally:
        gateway.stop()
        upstream.stop()
