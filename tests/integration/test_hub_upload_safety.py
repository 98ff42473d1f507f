"""What a hostile or careless uploader cannot do through `modelpack serve` (issue 28, defects
1, 8 and 11): write outside the commit's staging folder, commit a `.git` folder or names
no file system or HTTP header can carry, create a repo twice, lie about an LFS file's
size, leave spools behind, or break a header.  Each request is raw HTTP, as a hostile
client would send it (huggingface_hub refuses most of these paths itself); the registry
is the real one.
"""

import base64
import hashlib
import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from support.gateway import Gateway
from support.helpers import make_artifact

from modelpack.oci.reference import parse_reference
from modelpack.registry.client import open_repository
from modelpack.settings import Settings
from modelpack.testing.replicas import children

NAMESPACE = "safe"
RAW = "application/vnd.cncf.model.weight.v1.raw"
NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture(scope="module")
def gateway(registry, tmp_path_factory):
    gateway = Gateway(f"{registry.host}/{NAMESPACE}", tmp_path_factory.mktemp("safe") / "gw")
    yield gateway.start()
    gateway.stop()


def create_repo(gateway: Gateway, name: str) -> requests.Response:
    return requests.post(
        f"{gateway.url}/api/repos/create",
        json={"name": name, "organization": "org", "type": "model"},
        timeout=60,
    )


def header(summary: str = "s") -> dict:
    return {"key": "header", "value": {"summary": summary}}


def inline(path: str, data: bytes) -> dict:
    content = base64.b64encode(data).decode()
    return {"key": "file", "value": {"content": content, "path": path, "encoding": "base64"}}


def lfs(path: str, oid: str, size: int) -> dict:
    return {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": oid, "size": size}}


def commit(gateway: Gateway, repo: str, *ops: dict, branch: str = "main") -> requests.Response:
    body = "".join(json.dumps(op) + "\n" for op in (header(), *ops))
    return requests.post(
        f"{gateway.url}/api/models/{repo}/commit/{branch}",
        data=body.encode(),
        headers=NDJSON,
        timeout=60,
    )


def preupload(gateway: Gateway, repo: str, path: str, size: int = 5) -> requests.Response:
    return requests.post(
        f"{gateway.url}/api/models/{repo}/preupload/main",
        json={"files": [{"path": path, "size": size, "sample": ""}]},
        timeout=60,
    )


def head_commit(gateway: Gateway, repo: str) -> str:
    answer = requests.get(f"{gateway.url}/api/models/{repo}/revision/main", timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["sha"]


def files_of(gateway: Gateway, repo: str) -> dict[str, int]:
    answer = requests.get(
        f"{gateway.url}/api/models/{repo}/tree/main", params={"recursive": "1"}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    return {e["path"]: e["size"] for e in answer.json() if e["type"] == "file"}


def upload_lfs(gateway: Gateway, repo: str, data: bytes) -> str:
    """The LFS basic transfer as huggingface_hub does it: batch, then PUT the body."""
    oid = hashlib.sha256(data).hexdigest()
    batch = requests.post(
        f"{gateway.url}/{repo}.git/info/lfs/objects/batch",
        json={
            "operation": "upload",
            "transfers": ["basic"],
            "objects": [{"oid": oid, "size": len(data)}],
        },  # fmt: skip
        timeout=60,
    ).json()
    action = batch["objects"][0].get("actions")
    if action:
        assert requests.put(action["upload"]["href"], data=data, timeout=60).status_code == 200
    return oid


def named_escape(*roots: Path) -> list[str]:
    """Files or folders named ``escape*`` below ``roots``.  os.walk, not Path.rglob: the
    gateway renames its staging folders while the walk goes on, and rglob raises when a
    folder it listed is gone."""
    return [
        os.path.join(top, name)
        for root in roots
        for top, folders, files in os.walk(root)
        for name in folders + files
        if name.startswith("escape")
    ]


def clean_header(text: str) -> bool:
    return all(c == "\t" or 0x20 <= ord(c) <= 0x7E or ord(c) >= 0xA0 for c in text)


# -- defect 1: nothing is written outside the staging folder -------------------------------


def test_commit_paths_outside_the_repo_are_refused_and_write_nothing(gateway, tmp_path):
    assert create_repo(gateway, "paths").status_code == 200
    before = head_commit(gateway, "org/paths")
    outside = tmp_path / "outside"
    outside.mkdir()
    victim_json, victim_bin = outside / "victim.json", outside / "victim.bin"
    victim_json.write_bytes(b'{"original": true}')
    victim_bin.write_bytes(b"original bytes")
    attic = gateway.workdir  # where ../../../../ from the staging folder lands
    escapes = [
        str(victim_json),  # absolute: staged with the uploader's bytes
        str(victim_bin),  # absolute: zero-filled to the declared size
        "../../../../escape.json",
        "a/../../../../../escape.json",
        "./a.json",
        "a//b.json",
        "a/./b.json",
        "a.json/",
    ]
    for path in escapes:
        answer = commit(gateway, "org/paths", inline(path, b'{"planted": true}'))
        assert answer.status_code == 400, (path, answer.status_code, answer.text)
        assert "path" in answer.headers["X-Error-Message"]
        assert preupload(gateway, "org/paths", path).status_code == 400, path
    # The same paths as LFS files (the .gitattributes blob is in the repository) and deletions.
    gitattributes = requests.get(f"{gateway.url}/org/paths/resolve/main/.gitattributes").content
    oid = hashlib.sha256(gitattributes).hexdigest()
    for op in [
        lfs(str(victim_bin), oid, len(gitattributes)),
        lfs("../../../../escape.bin", oid, len(gitattributes)),
        {"key": "deletedFile", "value": {"path": "../.gitattributes"}},
        {"key": "deletedFolder", "value": {"path": "../"}},
        {"key": "deletedFolder", "value": {"path": str(outside)}},
    ]:
        answer = commit(gateway, "org/paths", op)
        assert answer.status_code == 400, (op, answer.status_code, answer.text)
    assert victim_json.read_bytes() == b'{"original": true}'
    assert victim_bin.read_bytes() == b"original bytes"
    assert not named_escape(attic, tmp_path)
    assert head_commit(gateway, "org/paths") == before  # nothing was committed


def test_a_file_where_a_folder_is_needed_is_one_clear_error(gateway):
    assert create_repo(gateway, "shapes").status_code == 200
    assert commit(gateway, "org/shapes", inline("a", b"file a")).status_code == 200
    for ops in [
        [inline("a/b.txt", b"under a file")],  # against the parent's file
        [inline("c", b"c"), inline("c/d.txt", b"under c")],  # both in this commit
    ]:
        answer = commit(gateway, "org/shapes", *ops)
        assert answer.status_code == 400, answer.text
        assert "folder" in answer.headers["X-Error-Message"]
    # Deleting the file in the same commit makes room for the folder, as in git.
    replaced = commit(
        gateway, "org/shapes", {"key": "deletedFile", "value": {"path": "a"}}, inline("a/b", b"b")
    )
    assert replaced.status_code == 200, replaced.text
    assert "a/b" in files_of(gateway, "org/shapes")


@pytest.mark.parametrize("planted", ["../../../../escape.json", ".git/config", "absolute"])
def test_a_parent_with_a_bad_layer_path_refuses_the_commit(gateway, registry, tmp_path, planted):
    """A layer titled with a path that leaves the repo, pushed by any OCI tool, is never
    written out by the next hub commit: the commit is refused, saying why."""
    name = "evil-" + hashlib.sha1(planted.encode()).hexdigest()[:8]
    if planted == "absolute":
        planted = str(tmp_path / "escape.json")
    settings = Settings(home=tmp_path / "home", plain_http=True)
    repository = open_repository(parse_reference(f"{registry.host}/{NAMESPACE}/org/{name}"), settings)  # fmt: skip
    make_artifact(repository, "main", [
        (RAW, b'{"architectures": ["Bert"]}', {"org.cncf.model.filepath": "config.json"}),
        (RAW, b'{"planted": true}', {"org.cncf.model.filepath": planted}),
    ])  # fmt: skip
    head = head_commit(gateway, f"org/{name}")
    answer = commit(gateway, f"org/{name}", inline("new.txt", b"new"))
    assert answer.status_code == 422, (answer.status_code, answer.text)
    message = answer.headers["X-Error-Message"]
    assert f"parent commit {head} has a file this gateway refuses" in message, message
    assert head_commit(gateway, f"org/{name}") == head
    assert not named_escape(gateway.workdir, tmp_path)


# -- defect 8: .git folders, control characters, over-long names ---------------------------

REFUSED_NAMES = [
    ".git/config",
    "sub/.GIT/hooks/pre-commit",
    ".git./config",
    ".git /config",
    "GIT~1/config",
    ".g\u200cit/config",
    ".cache/huggingface/download/x.metadata",
    "line\nfeed.txt",
    "carriage\rreturn.txt",
    "tab\there.txt",
    "nul\x00.txt",
    "bell\x07.txt",
    "del\x7f.txt",
    "next\u0085line.txt",
    "x" * 256 + ".txt",
    "d/" * 600 + "f.txt",
    "\udcff.txt",
    "back\\slash.txt",
]


def test_git_folders_and_names_no_client_can_hold_are_refused(gateway):
    assert create_repo(gateway, "names").status_code == 200
    before = head_commit(gateway, "org/names")
    for path in REFUSED_NAMES:
        shown = ascii(path)[:60]
        asked = preupload(gateway, "org/names", path)
        assert asked.status_code == 400, (shown, asked.status_code, asked.text[:300])
        answer = commit(gateway, "org/names", inline(path, b"[core]\n\tfsmonitor = touch pwned\n"))
        assert answer.status_code == 400, (shown, answer.status_code, answer.text[:300])
        assert clean_header(answer.headers["X-Error-Message"])
    assert head_commit(gateway, "org/names") == before
    # Names the hub takes stay possible: unicode, spaces, dots inside, a long but fine path.
    fine = ["naïve café.txt", "a.git/x", ".github/workflows/ci.yml", "gitx/.gitkeep",
            "d/" * 100 + "f.txt", "x" * 255]  # fmt: skip
    answer = commit(gateway, "org/names", *[inline(p, b"ok") for p in fine])
    assert answer.status_code == 200, answer.text
    assert set(fine) <= set(files_of(gateway, "org/names"))


# -- defect 11: create_repo, LFS sizes, spools, headers, anchors, tickets ------------------


def test_concurrent_create_repo_creates_once_and_never_resets_main(gateway):
    barrier = threading.Barrier(4)

    def create(_: int) -> requests.Response:
        barrier.wait()
        return create_repo(gateway, "race")

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(create, range(4)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 409, 409, 409], statuses
    assert all(a.json()["url"].endswith("/org/race") for a in answers)
    history = requests.get(f"{gateway.url}/api/models/org/race/commits/main", timeout=60).json()
    assert len(history) == 1, history
    # A later create_repo (exist_ok=True in huggingface_hub) leaves the uploaded commit alone.
    assert commit(gateway, "org/race", inline("weights.txt", b"w")).status_code == 200
    head = head_commit(gateway, "org/race")
    assert create_repo(gateway, "race").status_code == 409
    assert head_commit(gateway, "org/race") == head


def test_an_lfs_file_with_a_false_size_is_refused(gateway):
    assert create_repo(gateway, "sizes").status_code == 200
    data = b"the real bytes " * 100
    oid = upload_lfs(gateway, "org/sizes", data)
    for size in (len(data) + 1000, len(data) - 1, 0):
        answer = commit(gateway, "org/sizes", lfs("w.bin", oid, size))
        assert answer.status_code == 400, (size, answer.status_code, answer.text)
        assert str(len(data)) in answer.headers["X-Error-Message"]
    assert commit(gateway, "org/sizes", lfs("w.bin", oid, len(data))).status_code == 200
    assert files_of(gateway, "org/sizes")["w.bin"] == len(data)


def test_a_killed_commit_leaves_no_spool_once_a_worker_starts_again(registry, tmp_path):
    gateway = Gateway(f"{registry.host}/{NAMESPACE}", tmp_path / "gw").start()
    uploads = gateway.cache / "uploads"
    try:
        assert create_repo(gateway, "killed").status_code == 200
        # A commit whose body stops half-way: the gateway is spooling it when it dies.
        start = json.dumps(header()) + "\n" + '{"key": "file", "value": {"content": "'
        start += base64.b64encode(b"x" * 900_000).decode()
        with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
            sock.sendall(
                b"POST /api/models/org/killed/commit/main HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/x-ndjson\r\nContent-Length: 10000000\r\n\r\n"
                + start.encode()
            )
            deadline = time.monotonic() + 30
            while not list(uploads.glob("commit-*/spool/file-*")):
                assert time.monotonic() < deadline, "no spool appeared"
                time.sleep(0.05)
            workers = children(gateway.process.pid)
            assert workers
            for pid in workers:  # as the OOM killer would: no clean-up runs
                os.kill(pid, signal.SIGKILL)
        left = [p for p in uploads.iterdir() if p.name.startswith("commit-")]
        assert left, "the killed commit left nothing to sweep"
        # gunicorn starts a new worker; its start-up sweeps what no live process holds.
        deadline = time.monotonic() + 30
        while set(children(gateway.process.pid)) & set(workers) or not _healthy(gateway):
            assert time.monotonic() < deadline, "no new worker"
            time.sleep(0.1)
        assert not [p for p in uploads.iterdir() if p.name.startswith("commit-")]
        assert commit(gateway, "org/killed", inline("a.txt", b"a")).status_code == 200
    finally:
        gateway.stop()


def _healthy(gateway: Gateway) -> bool:
    try:
        return requests.get(f"{gateway.url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_error_headers_carry_no_control_characters(gateway):
    assert create_repo(gateway, "headers").status_code == 200
    for url in [
        "/api/models/org/a%00b/revision/main",
        "/api/models/org/headers/revision/a%01b",
        "/api/models/org/headers/revision/a%7Fb",
        "/org/headers/resolve/main/a%00b.txt",
        "/api/models/org/headers/tree/main/a%1Bb",
    ]:
        answer = requests.get(gateway.url + url, timeout=60)
        assert answer.status_code in (400, 404), (url, answer.status_code)
        assert clean_header(answer.headers.get("X-Error-Message", "")), url


def test_ids_with_a_trailing_newline_are_refused(gateway):
    for name in ("newline\n", "newline\r\n"):
        answer = create_repo(gateway, name)
        assert answer.status_code == 400, (answer.status_code, answer.text)
    answer = requests.get(f"{gateway.url}/api/models/org/newline%0A/revision/main", timeout=60)
    assert answer.status_code == 404 and "not a valid repo id" in answer.headers["X-Error-Message"]


def test_an_lfs_ticket_survives_a_failed_upload_until_one_succeeds(gateway):
    """huggingface_hub retries the same upload href after a cut connection or a 5xx
    (http_backoff): the ticket must take that retry, and nothing after a success."""
    assert create_repo(gateway, "retry").status_code == 200
    good = b"bytes that arrive on the second try " * 1000
    oid = hashlib.sha256(good).hexdigest()
    batch = requests.post(
        f"{gateway.url}/org/retry.git/info/lfs/objects/batch",
        json={"operation": "upload", "objects": [{"oid": oid, "size": len(good)}]},
        timeout=60,
    ).json()
    href = batch["objects"][0]["actions"]["upload"]["href"]
    path = href.split("127.0.0.1", 1)[1].split("/", 1)[1]
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:  # cut mid-body
        sock.sendall(
            f"PUT /{path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(good)}\r\n\r\n".encode()
            + good[: len(good) // 2]
        )
    # The cut is noticed at once: no thread waits for bytes that will never come.
    # (The log names the route, never the ticket: it stands for the batch's credentials.)
    log = gateway.wait_for_log(r"PUT /api/modelpack/lfs-upload/TICKET 400", timeout=15)
    assert path.rsplit("/", 1)[1] not in log
    assert requests.put(href, data=good, timeout=60).status_code == 200
    assert requests.put(href, data=good, timeout=60).status_code == 404  # used up
    assert commit(gateway, "org/retry", lfs("w.bin", oid, len(good))).status_code == 200


def test_a_commit_cut_short_commits_nothing(gateway):
    """A commit whose connection drops between two lines is not the commit the client
    meant: nothing of it is committed (the payload must be all Content-Length bytes)."""
    assert create_repo(gateway, "cut").status_code == 200
    head = head_commit(gateway, "org/cut")
    body = "".join(json.dumps(op) + "\n" for op in (header(), inline("first.txt", b"1")))
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(
            b"POST /api/models/org/cut/commit/main HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-ndjson\r\n"
            + f"Content-Length: {len(body) + 500}\r\n\r\n{body}".encode()
        )
        sock.shutdown(socket.SHUT_WR)  # the rest never comes
        answer = sock.recv(4096).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 400"), answer
    assert head_commit(gateway, "org/cut") == head
    gateway.wait_for_log(r"POST /api/models/org/cut/commit/main 400")
