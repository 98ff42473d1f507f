"""`modelpack serve` and MatrixHub side by side (issue 32): the same model uploaded to each, then
each row of docs/comparison.md's hub table as one test run against both, with the same clients
(huggingface_hub with hf_xet as pip installs it, the `hf` CLI, plain HTTP).  Ours is the gateway
in front of Debian's distribution registry; MatrixHub is built from ../shared/peer-src and runs
with Debian's MariaDB (modelpack.testing.matrixhub).  Where a hub fails a row, the test asserts
the failure as observed: OBSERVED holds it, and the table's cell says the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from support.browser import Browser
from support.datasets import ROWS, parquet_dataset
from support.gateway import CATCH, Gateway, hub_client, hub_env
from support.git import git, git_env
from support.helpers import tree_files

import modelpack
from benchmarks.gitface import GitFace
from benchmarks.hubs import add_proxy
from modelpack.settings import Settings
from modelpack.testing import RegistryServer, make_tiny_model
from modelpack.testing.matrixhub import ADMIN

HUBS = ["modelpack", "matrixhub"]
ORG = "org"  # a MatrixHub project; a registry namespace part for ours
REPO = f"{ORG}/minilm"
HF = Path(sys.executable).with_name("hf")

# What a hub did where it failed a row, as observed: (hub, row) -> words its answer holds.
OBSERVED: dict[tuple[str, str], tuple[str, ...]] = {
    # No Xet write path: huggingface_hub with hf_xet asks for a token and gets 404.
    ("matrixhub", "upload xet"): ("404 Not Found", "/xet-write-token/main"),
    # No Xet at all: an upload through Xet fails as above, and its LFS files' HEAD names no
    # Xet hash (no X-Xet-Hash, no xet-auth link), so every download is plain HTTP.
    ("matrixhub", "xet download"): ("/xet-write-token/main", "'Content-Length'"),
    # Its 404s carry no X-Error-Code, so huggingface_hub cannot tell a missing file, revision
    # or repo apart, and says what it says offline: LocalEntryNotFoundError for all three.
    ("matrixhub", "missing"): tuple(
        f"'{what}': 'LocalEntryNotFoundError'" for what in ("file", "revision", "repo")
    ),
    # A dataset made with its own API takes no commit: its git pre-receive hook accepts
    # pushes to models only (internal/apiserver/apiserver.go, preReceiveHookFunc:
    # `if repoType == "models"`, else false), and the hub API's commit goes through it.
    ("matrixhub", "dataset"): ("'status': 403", "pre-receive hook denied the commit"),
    # Its UI shows nothing to nobody, a public project included: its model page's address
    # opens its sign-in form.
    ("matrixhub", "page sign-in"): ("'shown': 'sign-in form'", "/login", "Log in"),
    # Its model page shows the README with its YAML header (the model card's metadata) as
    # text, a list and horizontal rules: "language: en license: apache-2.0 library_name: ...".
    ("matrixhub", "page front matter"): (
        "language: en license: apache-2.0 library_name: sentence-transformers",
    ),
    # Its model page shows the README; the files are on its "Model Files" tab (.../tree/main).
    ("matrixhub", "page files"): ("'not on the model page': ['config.json', 'model.safetensors']",),
}


def as_observed(name: str, row: str, answer: object) -> bool:
    """True (the row, or this part of it, is done) when ``name`` failed ``row`` before and
    ``answer`` says the same again; False when the row is expected to work."""
    words = OBSERVED.get((name, row))
    if words is None:
        return False
    assert all(word in str(answer) for word in words), (name, row, answer)
    return True


@dataclass
class Hub:
    """One hub as its clients see it: an HF_ENDPOINT and a token."""

    name: str
    url: str
    token: str

    def run(self, code: str, argument: object, home: Path, **env: str):  # noqa: ANN201
        """``code`` in a huggingface_hub client process against this hub; its JSON answer."""
        return hub_client(self.url, CATCH + code, argument, home, self.token, env)

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        return hub_env(self.url, home, self.token, **extra)


# Create a repo (the hub's API, as huggingface_hub calls it) and upload a folder to it.
UPLOAD = """
import json, sys
from huggingface_hub import HfApi
repo, folder = json.loads(sys.argv[1])
api = HfApi()
created = attempt(lambda: str(api.create_repo(repo, exist_ok=True)))
uploaded = attempt(lambda: api.upload_folder(repo_id=repo, folder_path=folder).oid)
print(json.dumps({"create": created, "upload": uploaded}))
"""

SNAPSHOT = """
import json, sys
from huggingface_hub import snapshot_download
repo, revision = json.loads(sys.argv[1])
print(json.dumps(attempt(lambda: snapshot_download(repo, revision=revision))))
"""


@pytest.fixture(scope="module")
def source(minilm_model: Path) -> dict[str, bytes]:
    return tree_files(minilm_model)


def with_minilm(hub: Hub, minilm_model: Path, work: Path) -> Hub:
    """``hub`` once the real MiniLM is uploaded to it as org/minilm through LFS (the one
    upload path both hubs have; Xet is a row of its own)."""
    done = hub.run(UPLOAD, [REPO, str(minilm_model)], work / hub.name, HF_HUB_DISABLE_XET="1")
    assert "ok" in done["create"] and "ok" in done["upload"], (hub.name, done)
    return hub


@pytest.fixture(scope="module")
def modelpack_hub(registry, minilm_model, tmp_path_factory) -> Hub:
    """`modelpack serve` in front of the registry; any credential reads it."""
    work = tmp_path_factory.mktemp("modelpack-hub")
    gateway = Gateway(f"{registry.host}/side", work / "gateway").start()
    yield with_minilm(Hub("modelpack", gateway.url, "tester:any"), minilm_model, work)
    gateway.stop()


@pytest.fixture(scope="module")
def matrixhub_hub(matrixhub, minilm_model, tmp_path_factory) -> Hub:
    """MatrixHub with a public project ``org`` and the admin's access token; org/minilm made
    with MatrixHub's own API (the other repos with the hub API's create_repo)."""
    work = tmp_path_factory.mktemp("matrixhub-hub")
    matrixhub.create_project(ORG, public=True)
    matrixhub.create_model(ORG, REPO.split("/")[1])
    hub = Hub("matrixhub", matrixhub.url, matrixhub.access_token("side-by-side"))
    return with_minilm(hub, minilm_model, work)


@pytest.fixture(params=HUBS)
def hub(request, registry) -> Hub:
    """Each hub in turn (MatrixHub's tests alone skip without ../shared/peer-src)."""
    return request.getfixturevalue(f"{request.param}_hub")


def sha256s(files: dict[str, bytes]) -> dict[str, str]:
    return {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}


# -- downloads --------------------------------------------------------------------------


def test_snapshot_and_hf_hub_download_give_identical_bytes(hub, source, tmp_path):
    code = """
import json, sys
from huggingface_hub import hf_hub_download, snapshot_download
repo = json.loads(sys.argv[1])
print(json.dumps({
    "snapshot": attempt(lambda: snapshot_download(repo)),
    "file": attempt(lambda: hf_hub_download(repo, "1_Pooling/config.json")),
    "weights": attempt(lambda: hf_hub_download(repo, "model.safetensors", revision="main")),
}))
"""
    got = hub.run(code, REPO, tmp_path / "hf")
    assert sha256s(tree_files(Path(got["snapshot"]["ok"]))) == sha256s(source)
    assert Path(got["file"]["ok"]).read_bytes() == source["1_Pooling/config.json"]
    assert Path(got["weights"]["ok"]).read_bytes() == source["model.safetensors"]


def test_hf_cli_download(hub, source, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [str(HF), "download", REPO, "--quiet", "--local-dir", str(out)],
        env=hub.env(tmp_path / "hf"), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert sha256s(tree_files(out)) == sha256s(source)


TRANSFORMERS = """
import hashlib, json, sys
from transformers import AutoConfig, AutoTokenizer
from transformers.utils.hub import cached_file
repo, folder = json.loads(sys.argv[1])
def load(source):
    config = AutoConfig.from_pretrained(source).to_dict()
    tokenizer = AutoTokenizer.from_pretrained(source)
    # The weights file as from_pretrained resolves it for AutoModel (no torch here to build one).
    weights = cached_file(source, "model.safetensors")
    return {"config": {k: v for k, v in config.items() if not k.startswith("_")},
            "tokenizer": type(tokenizer).__name__,
            "ids": tokenizer("hello world, a small model")["input_ids"],
            "weights": hashlib.sha256(open(weights, "rb").read()).hexdigest()}
print(json.dumps({"hub": attempt(lambda: load(repo)), "folder": load(folder)}))
"""


def test_transformers_from_pretrained(hub, minilm_model, tmp_path):
    """transformers' AutoConfig and AutoTokenizer through HF_ENDPOINT load what they load
    from the model's folder, and the weights file from_pretrained resolves has its bytes."""
    got = hub.run(TRANSFORMERS, [REPO, str(minilm_model)], tmp_path / "hf")
    assert "ok" in got["hub"], got
    assert got["hub"]["ok"] == got["folder"]
    assert got["folder"]["config"]["model_type"] == "bert"
    assert (
        got["folder"]["weights"]
        == hashlib.sha256((minilm_model / "model.safetensors").read_bytes()).hexdigest()
    )


# -- uploads ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["xet", "lfs"])
def test_upload_folder(hub, path, tmp_path):
    """upload_folder of a small real model (hf_xet installed; ``lfs`` with
    HF_HUB_DISABLE_XET=1), then snapshot_download of what the hub kept."""
    model = make_tiny_model(tmp_path / "tiny")
    repo = f"{ORG}/upload-{path}"
    env = {"HF_HUB_DISABLE_XET": "1"} if path == "lfs" else {}
    done = hub.run(UPLOAD, [repo, str(model)], tmp_path / "up", **env)
    assert "ok" in done["create"], done
    if as_observed(hub.name, f"upload {path}", done["upload"]):
        return
    assert "ok" in done["upload"], done
    snapshot = hub.run(SNAPSHOT, [repo, "main"], tmp_path / "down")
    assert tree_files(Path(snapshot["ok"])) == tree_files(model)


def test_xet_downloads(hub, tmp_path):
    """A 12 MiB file uploaded through Xet (upload_folder, hf_xet installed): its resolve HEAD
    names its Xet hash and the read token's link (what sends huggingface_hub's download
    through Xet), the token answers with a CAS URL, and snapshot_download is identical."""
    folder = tmp_path / "xet"
    folder.mkdir()
    (folder / "weights.dat").write_bytes(os.urandom(12 << 20))
    repo = f"{ORG}/xet-down"
    done = hub.run(UPLOAD, [repo, str(folder)], tmp_path / "up")
    head = requests.head(f"{hub.url}/{REPO}/resolve/main/model.safetensors", timeout=30,
                         headers={"Authorization": f"Bearer {hub.token}"})  # fmt: skip
    if as_observed(hub.name, "xet download", [done["upload"], dict(head.headers)]):
        assert "X-Xet-Hash" not in head.headers and "xet-auth" not in head.headers.get("Link", "")
        return
    assert "ok" in done["upload"], done
    head = requests.head(f"{hub.url}/{repo}/resolve/main/weights.dat", timeout=30,
                         headers={"Authorization": f"Bearer {hub.token}"})  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{64}", head.headers.get("X-Xet-Hash", "")), head.headers
    link = re.search(r"<([^>]+)>; rel=\"xet-auth\"", head.headers.get("Link", ""))
    assert link and "/xet-read-token/" in link.group(1), head.headers
    token = requests.get(link.group(1), timeout=30,
                         headers={"Authorization": f"Bearer {hub.token}"})  # fmt: skip
    assert token.status_code == 200 and token.json()["casUrl"].startswith(hub.url), token.text
    snapshot = hub.run(SNAPSHOT, [repo, "main"], tmp_path / "down")
    assert tree_files(Path(snapshot["ok"])) == tree_files(folder)


# -- branches, tags, refs, commits -------------------------------------------------------

REFS = """
import json, sys
from huggingface_hub import HfApi, hf_hub_download
repo, folder = json.loads(sys.argv[1])
api = HfApi()
out = {}
out["create"] = attempt(lambda: str(api.create_repo(repo, exist_ok=True)))
out["upload"] = attempt(lambda: api.upload_folder(repo_id=repo, folder_path=folder).oid)
out["branch"] = attempt(lambda: api.create_branch(repo, branch="dev") and None)
out["commit"] = attempt(lambda: api.upload_file(
    path_or_fileobj=b"on dev\\n", path_in_repo="notes.txt", repo_id=repo, revision="dev").oid)
out["tag"] = attempt(lambda: api.create_tag(repo, tag="v1", revision="dev") and None)
def refs():
    r = api.list_repo_refs(repo)
    return {"branches": {b.name: b.target_commit for b in r.branches},
            "tags": {t.name: t.target_commit for t in r.tags}}
out["refs"] = attempt(refs)
out["commits"] = attempt(lambda: [c.commit_id for c in api.list_repo_commits(repo, revision="dev")])
out["main_commits"] = attempt(lambda: [c.commit_id for c in api.list_repo_commits(repo)])
def read(revision):
    return open(hf_hub_download(repo, "notes.txt", revision=revision)).read()
out["at_tag"] = attempt(lambda: read("v1"))
out["at_commit"] = attempt(lambda: read(out["commit"]["ok"]))
print(json.dumps(out))
"""


def test_branches_tags_refs_and_commits(hub, tmp_path):
    model = make_tiny_model(tmp_path / "tiny")
    got = hub.run(REFS, [f"{ORG}/refs", str(model)], tmp_path / "hf", HF_HUB_DISABLE_XET="1")
    for step in ("create", "upload", "branch", "commit", "tag", "refs", "commits", "main_commits"):
        assert "ok" in got[step], (step, got)
    first, second = got["upload"]["ok"], got["commit"]["ok"]
    assert got["refs"]["ok"] == {
        "branches": {"main": first, "dev": second},
        "tags": {"v1": second},
    }
    assert got["commits"]["ok"][:2] == [second, first]
    assert got["main_commits"]["ok"][0] == first and second not in got["main_commits"]["ok"]
    assert got["at_tag"] == got["at_commit"] == {"ok": "on dev\n"}


# -- access per user and per robot account --------------------------------------------

ACCESS = """
import json, sys
from huggingface_hub import HfApi, snapshot_download
repo, readme = json.loads(sys.argv[1])
api = HfApi()
print(json.dumps({
    "read": attempt(lambda: snapshot_download(repo)),
    "write": attempt(lambda: api.upload_file(path_or_fileobj=readme.encode(),
                                             path_in_repo="README.md", repo_id=repo).oid),
}))
"""


def test_access_per_user_and_robot_account_matrixhub(matrixhub_hub, matrixhub, tmp_path):
    """MatrixHub's side of the access row: a private project, a user who is no member of
    it, a robot account with ``model.pull`` on it, the admin, and nobody.  (Ours is the
    registry's: Harbor's users, members and robot accounts through the gateway,
    tests/integration/test_harbor_gateway.py: test_user_and_robot_credentials_pass_through
    and test_an_upload_lands_in_a_harbor_project.)"""
    model = make_tiny_model(tmp_path / "tiny")
    matrixhub.create_project("closed", public=False)
    matrixhub.create_model("closed", "tiny")
    repo = "closed/tiny"
    admin = Hub("matrixhub", matrixhub.url, matrixhub_hub.token)
    done = admin.run(UPLOAD, [repo, str(model)], tmp_path / "admin", HF_HUB_DISABLE_XET="1")
    assert "ok" in done["upload"], done
    matrixhub.api("POST", "/users", json={"username": "outsider", "password": "Outsider-1x"})
    outsider = matrixhub.api(
        "POST", "/current-user/access-tokens", session=matrixhub.login("outsider", "Outsider-1x"),
        json={"name": "outsider", "expire_at": ""},
    ).json()["token"]  # fmt: skip
    robot = matrixhub.api("POST", "/robot-accounts", json={
        "name": "puller", "expire_days": 0, "project_permissions": ["model.pull"],
        "projects": ["closed"], "project_scope": "ROBOT_ACCOUNT_PROJECT_SCOPE_SELECTED",
    }).json()["token"]  # fmt: skip
    seen = {
        who: Hub("matrixhub", matrixhub.url, token).run(
            ACCESS, [repo, f"# by {who}\n"], tmp_path / who, HF_HUB_DISABLE_XET="1"
        )
        for who, token in (("admin", matrixhub_hub.token), ("robot", robot),
                           ("outsider", outsider), ("anonymous", ""))
    }  # fmt: skip
    assert "ok" in seen["admin"]["read"] and "ok" in seen["admin"]["write"], seen["admin"]
    assert tree_files(Path(seen["robot"]["read"]["ok"])) == {
        **tree_files(model),
        "README.md": b"# by admin\n",
    }, seen["robot"]
    assert seen["robot"]["write"].get("status") in (401, 403), seen["robot"]
    for who in ("outsider", "anonymous"):
        # Refused, but as its other 404s, without X-Error-Code: huggingface_hub cannot tell
        # a private repo from being offline (ours: RepositoryNotFoundError, 401).
        assert seen[who]["read"].get("error") == "LocalEntryNotFoundError", (who, seen[who])
        assert "error" in seen[who]["write"], (who, seen[who])


# -- what is not there ---------------------------------------------------------------------


def test_a_missing_file_revision_or_repo(hub, tmp_path):
    """hf_hub_download of what the hub does not have: huggingface_hub tells the three apart
    by the hub's ``X-Error-Code`` header."""
    code = """
import json, sys
from huggingface_hub import hf_hub_download
print(json.dumps({
    what: attempt(lambda: hf_hub_download(repo, path, revision=revision))
    for what, (repo, path, revision) in json.loads(sys.argv[1]).items()
}))
"""
    asked = {
        "file": [REPO, "no-such-file.txt", "main"],
        "revision": [REPO, "config.json", "no-such-branch"],
        "repo": [f"{ORG}/no-such-repo", "config.json", "main"],
    }
    got = hub.run(code, asked, tmp_path / "hf")
    errors = {what: answer.get("error") for what, answer in got.items()}
    if as_observed(hub.name, "missing", errors):
        return
    assert errors == {
        "file": "RemoteEntryNotFoundError",
        "revision": "RevisionNotFoundError",
        "repo": "RepositoryNotFoundError",
    }, got


# -- HTTP Range ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["model.safetensors", "config.json"])
def test_range_reads(hub, path, source):
    """GET resolve with Range: the first byte, a middle range, a suffix: 206 and the bytes;
    a range past the end: 416 with the size."""
    data = source[path]
    middle = len(data) // 2
    url = f"{hub.url}/{REPO}/resolve/main/{path}"
    auth = {"Authorization": f"Bearer {hub.token}"}
    cases = {
        "bytes=0-0": (0, 0),
        f"bytes={middle}-{middle + 99}": (middle, middle + 99),
        "bytes=-100": (len(data) - 100, len(data) - 1),
    }
    for header, (start, end) in cases.items():
        answer = requests.get(url, headers={**auth, "Range": header}, timeout=60)
        assert answer.status_code == 206, (header, answer.status_code, answer.headers)
        assert answer.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}", header
        assert answer.content == data[start : end + 1], header
    beyond = requests.get(url, headers={**auth, "Range": f"bytes={len(data)}-"}, timeout=60)
    assert beyond.status_code == 416, beyond.headers
    assert beyond.headers["Content-Range"] == f"bytes */{len(data)}"


# -- search -------------------------------------------------------------------------------


def test_list_models_search(hub, tmp_path):
    code = """
import json, sys
from huggingface_hub import HfApi
api = HfApi()
print(json.dumps({
    term: attempt(lambda: sorted(m.id for m in api.list_models(search=term)))
    for term in json.loads(sys.argv[1])
}))
"""
    got = hub.run(code, ["minilm", "MiniLM", "no-such-model"], tmp_path / "hf")
    assert got["minilm"] == {"ok": [REPO]}, got
    assert got["MiniLM"] == {"ok": [REPO]}, got
    assert got["no-such-model"] == {"ok": []}, got


# -- the model page (web UI) -------------------------------------------------------------

# What a person looks for on org/minilm's page: its name, its files, its README rendered.
PAGE_FILES = ("config.json", "model.safetensors")
README_HEADING = "all-MiniLM-L6-v2"  # the README's first heading
README_TEXT = "It maps sentences & paragraphs to a 384 dimensional dense vector space"
# The file names an element of the page shows as its whole text (a line of a file list, not a
# name inside a sentence: the README speaks of data_config.json).
FILES_LISTED = f"""[...document.querySelectorAll("body *")].filter(e => !e.childElementCount)
  .map(e => e.textContent.trim()).filter(t => {json.dumps(PAGE_FILES)}.includes(t))"""
# The page as the browser shows it: its address, its text with "org / minilm" as "org/minilm",
# its headings and the file names it lists.
SEEN = f"""(() => ({{url: location.href,
  text: document.body.innerText.replace(/\\s*\\/\\s*/g, "/"),
  headings: [...document.querySelectorAll("h1, h2, h3")].map(h => h.innerText.trim()),
  files: {FILES_LISTED}}}))()"""
FRONT_MATTER = "library_name: sentence-transformers"  # the README's YAML header, as text
SHOWS_NAME = f"document.body.innerText.replace(/\\s*\\/\\s*/g, '/').includes('{REPO}')"
ASKS_TO_SIGN_IN = "!!document.querySelector('input[type=password]')"


def model_page_url(hub: Hub) -> str:
    """The address of org/minilm's page: ours the hub's own (/org/minilm), MatrixHub's UI
    /projects/org/models/minilm."""
    if hub.name == "modelpack":
        return f"{hub.url}/{REPO}"
    return f"{hub.url}/projects/{ORG}/models/{REPO.split('/')[1]}"


def test_model_page_in_a_browser(hub, request, tmp_path):
    """org/minilm's page in headless Chromium, after its JavaScript ran: the repo's name,
    its files (config.json and model.safetensors) and its README rendered (the heading and
    a sentence of it).  Where the page first asks to sign in (MatrixHub's UI, even for a public
    project), the test signs in on its form with the admin's name and password as a person
    would; where the files are not on the model's page, it clicks the link to them."""
    if hub.name == "matrixhub":
        server = request.getfixturevalue("matrixhub")
        failed = server.build / "share" / "UI-FAILED"
        assert server.has_ui, (
            failed.read_text().strip() if failed.is_file()
            else f"{server.build} was built without MatrixHub's UI (MODELPACK_MATRIXHUB_UI=0)"
        )  # fmt: skip
    browser = Browser(tmp_path, "--window-size=1280,1400")
    request.addfinalizer(browser.close)
    url = model_page_url(hub)
    browser.visit(url)
    shown = browser.wait_for(f"({SHOWS_NAME}) ? 'page' : ({ASKS_TO_SIGN_IN}) && 'sign-in form'")
    if as_observed(hub.name, "page sign-in", {"shown": shown, **browser.evaluate(SEEN)}):
        browser.type_into("input[name=username]", "admin")
        browser.type_into("input[type=password]", server.admin_password)
        browser.evaluate("document.querySelector('button[type=submit]').click()")
        browser.wait_for("!document.querySelector('input[type=password]')")
        browser.visit(url)
    else:
        assert shown == "page", browser.evaluate(SEEN)
    browser.wait_for(f"({SHOWS_NAME}) && document.body.innerText.includes({README_TEXT!r})")
    seen = browser.evaluate(SEEN)
    browser.screenshot(tmp_path / "shots" / f"model-page-{hub.name}.png")
    assert seen["url"] == url, seen["url"]
    assert REPO in seen["text"] and README_TEXT in seen["text"], seen
    assert README_HEADING in seen["headings"], seen["headings"]  # rendered, not shown as text
    if not as_observed(hub.name, "page front matter", seen["text"]):
        assert FRONT_MATTER not in seen["text"], seen["text"][:2000]
    missing = [name for name in PAGE_FILES if name not in seen["files"]]
    if not as_observed(hub.name, "page files", {"not on the model page": missing}):
        assert not missing, seen
        return
    # A person looks for them one click away: the link to the model's files.
    href = browser.evaluate(
        "(a => a ? (a.click(), a.getAttribute('href')) : null)([...document.querySelectorAll("
        "'a')].find(a => (a.getAttribute('href') || '').endsWith('/tree/main')))"
    )
    assert href, seen
    browser.wait_for(f"{FILES_LISTED}.length >= {len(PAGE_FILES)}")
    browser.screenshot(tmp_path / "shots" / f"model-files-{hub.name}.png")
    assert browser.evaluate("location.href") == f"{url}/tree/main"


# -- proxy import -----------------------------------------------------------------------


@dataclass
class Upstream:
    """The public hub a proxy imports from and a replica copies from: its URL, its git
    face's, the registry repository namespace behind it, and how to stop it."""

    url: str
    git: str
    registry: str  # HOST/NAMESPACE: org/minilm is there as REGISTRY/org/minilm:main
    stop: Callable[[], None]


@pytest.fixture
def upstream(minilm_model, tmp_path):
    """A gateway in front of a registry of its own holding org/minilm, and its git face
    (benchmarks/gitface.py), which is how MatrixHub's proxy projects and sync policies reach
    a hub."""
    with RegistryServer(workdir=tmp_path / "upstream-registry") as registry:
        gateway = Gateway(f"{registry.host}/public", tmp_path / "upstream").start()
        face = None
        try:
            with_minilm(Hub("upstream", gateway.url, "tester:any"), minilm_model, tmp_path)
            face = GitFace(gateway.url, tmp_path / "upstream-git")
            face.add(REPO)
            face.serve()

            def stop() -> None:
                face.close()
                gateway.stop()

            yield Upstream(gateway.url, face.url, f"{registry.host}/public", stop)
        finally:
            if face is not None:
                face.close()
            gateway.stop()


@pytest.mark.parametrize("name", HUBS)
def test_proxy_import_serves_on_with_the_upstream_gone(name, request, registry, upstream,
                                                      source, tmp_path):  # fmt: skip
    if name == "modelpack":
        proxy = Gateway(f"{registry.host}/proxied", tmp_path / "proxy",
                        ("--upstream", upstream.url, "--upstream-allow", "org/*")).start()  # fmt: skip
        request.addfinalizer(proxy.stop)
        hub, repo = Hub(name, proxy.url, "tester:any"), REPO
    else:
        server = request.getfixturevalue("matrixhub")
        add_proxy(server, upstream.git)  # a proxy project "proxy" mirroring the upstream's "org"
        hub, repo = Hub(name, server.url, server.access_token("proxy-row")), "proxy/minilm"
    first = hub.run(SNAPSHOT, [repo, "main"], tmp_path / "first")
    assert sha256s(tree_files(Path(first["ok"]))) == sha256s(source), first
    upstream.stop()  # pulled once: from now on the hub serves what it keeps
    again = hub.run(SNAPSHOT, [repo, "main"], tmp_path / "again")
    if as_observed(name, "proxy gone", again):
        return
    assert sha256s(tree_files(Path(again["ok"]))) == sha256s(source), again


# -- replication ------------------------------------------------------------------------


def replicate_to_matrixhub(server, git_url: str, project: str, timeout: float = 300.0) -> dict:
    """MatrixHub's replication: a pull sync policy copying org/minilm from the upstream hub
    (through its git face) into ``project``, run once by hand; the finished sync task."""
    server.create_project(project, public=True)
    source = {"name": f"{project}-source", "type": "REGISTRY_TYPE_HUGGINGFACE", "url": git_url}
    registry_id = server.api("POST", "/registries", json=source).json()["registry"]["id"]
    policy = {
        "name": f"{project}-policy", "policy_type": "SYNC_POLICY_TYPE_PULL_BASE",
        "trigger_type": "TRIGGER_TYPE_MANUAL",
        "pull_base_policy": {"source_registry_id": registry_id, "resource_name": REPO,
                             "resource_types": ["RESOURCE_TYPE_MODEL"],
                             "target_project_name": project},
    }  # fmt: skip
    created = server.api("POST", "/sync-policies", json=policy).json()
    policy_id = created.get("syncPolicy", created.get("sync_policy"))["id"]
    task_id = server.api("POST", f"/sync-policies/{policy_id}/sync-tasks", json={}).json()["id"]
    deadline = time.monotonic() + timeout
    while True:
        answer = server.api("GET", f"/sync-policies/{policy_id}/sync-tasks/{task_id}").json()
        task = answer.get("syncTask", answer.get("sync_task"))
        if task["status"] not in ("SYNC_TASK_STATUS_RUNNING", "SYNC_TASK_STATUS_PENDING"):
            return task
        assert time.monotonic() < deadline, task
        time.sleep(0.5)


def until_every_file_reads(hub: Hub, repo: str, files: dict[str, bytes],
                           timeout: float = 180.0) -> float:  # fmt: skip
    """Seconds until every file of ``repo`` reads back whole from ``hub`` (MatrixHub's sync
    task succeeds once git is copied; its LFS objects follow in the background)."""
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {hub.token}"}
    missing = dict(files)
    while missing:
        for path in list(missing):
            got = requests.get(f"{hub.url}/{repo}/resolve/main/{path}", headers=headers,
                               timeout=60)  # fmt: skip
            if got.status_code == 200 and got.content == missing[path]:
                del missing[path]
        assert time.monotonic() - started < timeout, sorted(missing)
        if missing:
            time.sleep(0.5)
    return time.monotonic() - started


@pytest.mark.parametrize("name", HUBS)
def test_replication_to_a_second_hub(name, request, upstream, source, tmp_path):
    """The upstream hub's org/minilm replicated by each hub's own way, then read from the
    replica with the upstream stopped: ours is the registry's (``modelpack copy`` registry to
    registry, as Harbor's replication rules also do: test_harbor.py), MatrixHub's a pull sync
    policy run by hand."""
    if name == "modelpack":
        with RegistryServer(workdir=tmp_path / "replica-registry") as replica_registry:
            modelpack.copy(f"{upstream.registry}/{REPO}:main",
                           f"{replica_registry.host}/replica/{REPO}:main",
                           settings=Settings(home=tmp_path / "copy-home", plain_http=True))  # fmt: skip
            upstream.stop()
            replica = Gateway(f"{replica_registry.host}/replica", tmp_path / "replica").start()
            try:
                got = Hub(name, replica.url, "tester:any").run(SNAPSHOT, [REPO, "main"],
                                                               tmp_path / "hf")  # fmt: skip
            finally:
                replica.stop()
    else:
        server = request.getfixturevalue("matrixhub")
        task = replicate_to_matrixhub(server, upstream.git, "replica")
        assert task["status"] == "SYNC_TASK_STATUS_SUCCEEDED", task
        hub = Hub(name, server.url, server.access_token("replication-row"))
        until_every_file_reads(hub, "replica/minilm", source)  # LFS objects arrive after
        upstream.stop()
        got = hub.run(SNAPSHOT, ["replica/minilm", "main"], tmp_path / "hf")
    assert sha256s(tree_files(Path(got["ok"]))) == sha256s(source), got


# -- datasets ----------------------------------------------------------------------------

DATASET = """
import json, sys
from huggingface_hub import HfApi, snapshot_download
repo, folder = json.loads(sys.argv[1])
api = HfApi()
out = {"create": attempt(lambda: str(api.create_repo(repo, repo_type="dataset", exist_ok=True)))}
out["upload"] = attempt(lambda: api.upload_folder(
    repo_id=repo, folder_path=folder, repo_type="dataset").oid)
out["snapshot"] = attempt(lambda: snapshot_download(repo, repo_type="dataset"))
def load():
    from datasets import load_dataset
    return load_dataset(repo, split="train").to_list()
out["load"] = attempt(load)
print(json.dumps(out))
"""


def test_a_parquet_dataset_uploads_downloads_and_loads(hub, request, tmp_path):
    """repo_type="dataset": a dataset made on the hub (MatrixHub: with its own API, as its
    models are), upload_folder of a card and two parquet files through LFS, snapshot_download
    identical, and datasets.load_dataset through HF_ENDPOINT reads every row."""
    source = parquet_dataset(tmp_path / "source")
    repo = f"{ORG}/sentences"
    if hub.name == "matrixhub":
        request.getfixturevalue("matrixhub").create_dataset(ORG, "sentences")
    done = hub.run(DATASET, [repo, str(source)], tmp_path / "home", HF_HUB_DISABLE_XET="1")
    assert "ok" in done["create"], done
    if as_observed(hub.name, "dataset", done):
        return
    assert "ok" in done["upload"], done
    snapshot = Path(done["snapshot"]["ok"])
    assert sha256s(tree_files(snapshot)) == sha256s(tree_files(source))
    assert done["load"]["ok"] == ROWS, done["load"]


# -- git over HTTP ---------------------------------------------------------------------------
# Last in this file: it commits to org/minilm, which the rows above read as uploaded.

HISTORY = """
import json, sys
from huggingface_hub import HfApi
repo = json.loads(sys.argv[1])
print(json.dumps(attempt(lambda: [c.commit_id for c in HfApi().list_repo_commits(repo)])))
"""

COMMIT = """
import json, sys
from huggingface_hub import HfApi
repo, path, text = json.loads(sys.argv[1])
print(json.dumps(attempt(lambda: HfApi().upload_file(
    path_or_fileobj=text.encode(), path_in_repo=path, repo_id=repo,
    commit_message="From the hub API").oid)))
"""

PUSHED = """
import json, sys
from huggingface_hub import HfApi, hf_hub_download
repo, paths = json.loads(sys.argv[1])
print(json.dumps({
    "commits": attempt(lambda: [c.commit_id for c in HfApi().list_repo_commits(repo)]),
    **{path: attempt(lambda path=path: hf_hub_download(repo, path)) for path in paths},
}))
"""


def git_url(hub: Hub) -> str:
    """org/minilm's git address with the hub's credential in it: ours takes the token's
    ``user:password`` as the registry's (this registry lets anyone in), MatrixHub its access
    token as the Basic password of its admin (internal/apiserver/middleware/git_authn.go,
    GitBasicAuthAuthn; its routes take ``/ORG/NAME`` and ``/ORG/NAME.git``)."""
    credential = hub.token if hub.name == "modelpack" else f"{ADMIN}:{hub.token}"
    return hub.url.replace("://", f"://{credential}@", 1) + f"/{REPO}"


def test_git_clone_pull_and_push_with_lfs(hub, source, tmp_path):
    """Debian's git and git-lfs against the hub: a clone of org/minilm has every file
    byte-identical (the weights through git-lfs) and the commits list_repo_commits lists; a
    commit through the hub API arrives with `git pull --ff-only`; a pushed commit adding an
    LFS-tracked binary and changing a small file becomes the hub's newest commit, the binary
    downloadable byte-identical."""
    env = git_env(tmp_path / "git-home")
    clone = tmp_path / "clone"
    git(env, None, "clone", "-q", git_url(hub), str(clone))
    assert sha256s(tree_files(clone)) == sha256s(source)
    lfs = "version https://git-lfs.github.com/spec/v1\n"  # how an LFS pointer starts
    weights_in_git = git(env, clone, "cat-file", "blob", "HEAD:model.safetensors")
    assert weights_in_git.startswith(lfs), weights_in_git[:200]  # the bytes came through LFS
    ids = hub.run(HISTORY, REPO, tmp_path / "hf")
    assert git(env, clone, "log", "--format=%H").split() == ids["ok"], ids

    new = hub.run(COMMIT, [REPO, "notes.txt", "from the hub API\n"], tmp_path / "hf",
                  HF_HUB_DISABLE_XET="1")  # fmt: skip
    git(env, clone, "pull", "-q", "--ff-only")
    assert git(env, clone, "rev-parse", "HEAD").strip() == new["ok"], new
    assert (clone / "notes.txt").read_text() == "from the hub API\n"

    git(env, clone, "lfs", "track", "*.dat")
    weights = os.urandom(3 << 20)
    (clone / "extra.dat").write_bytes(weights)
    (clone / "notes.txt").write_text("and from git\n")
    git(env, clone, "add", "-A")
    git(env, clone, "commit", "-q", "-m", "Add extra weights with git-lfs")
    pointer = git(env, clone, "cat-file", "blob", "HEAD:extra.dat")  # what git committed
    assert pointer.startswith(lfs), pointer[:200]
    git(env, clone, "push", "-q", "origin", "main")
    head = git(env, clone, "rev-parse", "HEAD").strip()
    pushed = hub.run(PUSHED, [REPO, ["extra.dat", "notes.txt"]], tmp_path / "hf-after")
    assert pushed["commits"]["ok"][0] == head, pushed
    assert Path(pushed["extra.dat"]["ok"]).read_bytes() == weights, pushed
    assert Path(pushed["notes.txt"]["ok"]).read_text() == "and from git\n", pushed
