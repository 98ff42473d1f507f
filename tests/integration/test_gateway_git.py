"""Git over HTTP on the gateway (issue 32): Debian's `git` and `git-lfs` clone, pull and push
a hub repo in front of a real registry.  The commit ids git shows are the ids
`list_repo_commits` and the registry's commit tags show; the weights come through git-lfs,
byte-identical; a pushed commit is a hub commit (a ModelPack artifact) of the same id.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from support.gateway import CATCH, Gateway, blob_gets, hub_client
from support.git import git, git_env
from support.helpers import tree_files

from modelpack.testing import make_tiny_model

NAMESPACE = "git"
pytestmark = pytest.mark.skipif(shutil.which("git-lfs") is None,
                                reason="git-lfs: scripts/install-system-deps.sh installs it")  # fmt: skip

UPLOAD = """
import json, sys
from huggingface_hub import HfApi
repo, folder, kind = json.loads(sys.argv[1])
api = HfApi()
api.create_repo(repo, repo_type=kind, exist_ok=True)
api.upload_folder(repo_id=repo, folder_path=folder, repo_type=kind, commit_message="weights")
print(json.dumps([c.commit_id for c in api.list_repo_commits(repo, repo_type=kind)]))
"""

HISTORY = """
import json, sys
from huggingface_hub import HfApi
repo, kind = json.loads(sys.argv[1])
api = HfApi()
print(json.dumps({
    "commits": [[c.commit_id, c.title] for c in api.list_repo_commits(repo, repo_type=kind)],
    "files": sorted(api.list_repo_files(repo, repo_type=kind)),
}))
"""

COMMIT = """
import json, sys
from huggingface_hub import HfApi
repo, path, text = json.loads(sys.argv[1])
print(json.dumps(HfApi().upload_file(path_or_fileobj=text.encode(), path_in_repo=path,
                                     repo_id=repo, commit_message="from the hub API").oid))
"""

DOWNLOAD = """
import json, sys
from huggingface_hub import snapshot_download
repo, revision = json.loads(sys.argv[1])
print(json.dumps(snapshot_download(repo, revision=revision)))
"""


@pytest.fixture
def gateway(registry, tmp_path):
    # Files over 4 KiB go through LFS (the tiny model's weights too; the hub's cut is 10 MB).
    server = Gateway(f"{registry.host}/{NAMESPACE}", tmp_path / "gateway",
                     ("--inline-max", "4096", "--audit-log", str(tmp_path / "audit.log"))
                     ).start()  # fmt: skip
    yield server
    server.stop()


@pytest.fixture
def git_home(tmp_path) -> dict[str, str]:
    """An environment for `git` with git-lfs installed in a home of its own."""
    return git_env(tmp_path / "git-home")


def sha256s(files: dict[str, bytes]) -> dict[str, str]:
    return {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}


def test_clone_pull_and_push_keep_the_hub_commit_ids(gateway, registry, git_home, tmp_path):
    model = make_tiny_model(tmp_path / "tiny")
    (model / "README.md").write_text("# tiny\n")
    ids = hub_client(gateway.url, UPLOAD, ["org/tiny", str(model), "model"], tmp_path / "hf")

    # clone: every file byte-identical (the weights through git-lfs), the hub's commit ids
    clone = tmp_path / "clone"
    git(git_home, None, "clone", "-q", f"{gateway.url}/org/tiny", str(clone))
    assert sha256s(tree_files(clone)) == sha256s(tree_files(model))
    assert git(git_home, clone, "log", "--format=%H").split() == ids
    pointer = git(git_home, clone, "cat-file", "blob", "HEAD:model.safetensors")
    assert pointer.startswith("version https://git-lfs.github.com/spec/v1\noid sha256:")

    # pull after a commit through the hub API
    new = hub_client(gateway.url, COMMIT, ["org/tiny", "notes.txt", "hello\n"], tmp_path / "hf")
    git(git_home, clone, "pull", "-q", "--ff-only")
    assert git(git_home, clone, "rev-parse", "HEAD").strip() == new
    assert (clone / "notes.txt").read_text() == "hello\n"

    # push: a new LFS file, a changed small file and a deleted one, in two commits
    git(git_home, clone, "lfs", "track", "*.dat")
    weights = os.urandom(3 << 20)
    (clone / "extra.dat").write_bytes(weights)
    (clone / "README.md").write_text("# tiny, pushed with git\n")
    git(git_home, clone, "add", "-A")
    git(git_home, clone, "commit", "-q", "-m", "Add extra weights\n\nwith git-lfs")
    (clone / "notes.txt").unlink()
    git(git_home, clone, "commit", "-q", "-am", "Drop the notes")
    git(git_home, clone, "push", "-q", "origin", "main")
    local = git(git_home, clone, "log", "--format=%H").split()
    history = hub_client(gateway.url, CATCH + HISTORY, ["org/tiny", "model"], tmp_path / "hf")
    assert [c[0] for c in history["commits"]] == local
    assert [c[1] for c in history["commits"][:2]] == ["Drop the notes", "Add extra weights"]
    assert "extra.dat" in history["files"] and "notes.txt" not in history["files"]
    snapshot = Path(hub_client(gateway.url, DOWNLOAD, ["org/tiny", local[0]], tmp_path / "hf2"))
    assert (snapshot / "extra.dat").read_bytes() == weights
    assert (snapshot / "README.md").read_text() == "# tiny, pushed with git\n"

    # a second clone sees the pushed commits as they were pushed, and reads no regular
    # file from the registry again (the gateway keeps their bytes by digest)
    config = "sha256:" + hashlib.sha256((model / "config.json").read_bytes()).hexdigest()
    before = blob_gets(registry.access_log(), f"{NAMESPACE}/org/tiny").get(config, 0)
    assert before >= 1  # the first clone read it (it is a regular file, not LFS)
    again = tmp_path / "again"
    git(git_home, None, "clone", "-q", f"{gateway.url}/org/tiny.git", str(again))
    assert blob_gets(registry.access_log(), f"{NAMESPACE}/org/tiny").get(config, 0) == before
    assert git(git_home, again, "log", "--format=%H %an %s").splitlines()[0] == (
        f"{local[0]} Ada Drop the notes"
    )
    assert (again / "extra.dat").read_bytes() == weights

    # The audit trail has the fetches, each LFS file's download and the push.
    lines = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    by_action = {}
    for line in lines:
        by_action.setdefault(line["action"], []).append(line)
    assert {line["repo"] for line in by_action["git-fetch"]} == {"org/tiny"}
    downloads = [line for line in by_action["download"] if line.get("digest")]
    weights_oid = "sha256:" + hashlib.sha256(weights).hexdigest()
    assert any(d["digest"] == weights_oid and d["bytes"] == len(weights) for d in downloads)
    (push,) = by_action["git-push"]
    assert push["status"] == 200 and push["commit"] == local[0]


def test_pushes_the_hub_cannot_keep_are_refused_and_change_nothing(gateway, git_home, tmp_path):
    model = make_tiny_model(tmp_path / "tiny")
    hub_client(gateway.url, UPLOAD, ["org/refuse", str(model), "model"], tmp_path / "hf")
    clone = tmp_path / "clone"
    git(git_home, None, "clone", "-q", f"{gateway.url}/org/refuse", str(clone))
    head = git(git_home, clone, "rev-parse", "HEAD").strip()

    def refused(*setup: list[str]) -> str:
        git(git_home, clone, "reset", "-q", "--hard", head)
        for args in setup:
            git(git_home, clone, *args)
        out = git(git_home, clone, "push", "origin", "HEAD:main", check=False)
        assert "[remote rejected]" in out or "rejected" in out, out
        return out

    (clone / "run.sh").write_text("#!/bin/sh\n")
    (clone / "run.sh").chmod(0o755)
    assert "only plain files" in refused(["add", "run.sh"], ["commit", "-qm", "exec"])
    (clone / "run.sh").unlink()
    git(git_home, clone, "reset", "-q", "--hard", head)
    git(git_home, clone, "checkout", "-q", "-b", "side")
    (clone / "a.txt").write_text("a")
    git(git_home, clone, "add", "a.txt")
    git(git_home, clone, "commit", "-qm", "side")
    git(git_home, clone, "checkout", "-q", "main")
    (clone / "b.txt").write_text("b")
    git(git_home, clone, "add", "b.txt")
    git(git_home, clone, "commit", "-qm", "main")
    git(git_home, clone, "merge", "-q", "--no-edit", "side")
    out = git(git_home, clone, "push", "origin", "HEAD:main", check=False)
    assert "merge" in out, out
    assert "deleting a branch" in git(git_home, clone, "push", "origin", ":main", check=False)
    assert "only branches" in git(git_home, clone, "push", "origin", f"{head}:refs/tags/v9",
                                  check=False)  # fmt: skip
    history = hub_client(gateway.url, CATCH + HISTORY, ["org/refuse", "model"], tmp_path / "hf")
    assert history["commits"][0][0] == head  # the branch never moved


def test_a_refused_push_moves_nothing_and_a_new_branch_makes_no_commit_again(
    gateway, registry, git_home, tmp_path
):
    """A push of two commits whose second is refused leaves the branch where it was (the
    first is not kept alone); a new branch pushed at, or on top of, an existing commit starts
    there and writes no commit of the history again (their manifests stay as they were); a
    commit git itself would call malformed is a rejected ref, not a 500."""
    ids = hub_client(gateway.url, UPLOAD, ["org/chain", str(make_tiny_model(tmp_path / "tiny")),
                                           "model"], tmp_path / "hf")  # fmt: skip
    clone = tmp_path / "clone"
    git(git_home, None, "clone", "-q", f"{gateway.url}/org/chain", str(clone))
    head = git(git_home, clone, "rev-parse", "HEAD").strip()

    def manifests() -> dict[str, str]:
        return {c: requests.head(f"{registry.url}/v2/{NAMESPACE}/org/chain/manifests/{c}",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
                                 timeout=30).headers["Docker-Content-Digest"]
                for c in ids}  # fmt: skip

    before = manifests()
    # git ls-remote (info/refs) is told the refs: no file of the history is read for it
    gateway.wait_idle()
    reads = registry.log_path.read_text().count("/blobs/sha256:")
    for service in ("git-upload-pack", "git-receive-pack"):
        answer = requests.get(f"{gateway.url}/org/chain/info/refs?service={service}", timeout=30)
        assert answer.status_code == 200 and head.encode() in answer.content
    assert registry.log_path.read_text().count("/blobs/sha256:") == reads

    (clone / "ok.txt").write_text("fine\n")
    git(git_home, clone, "add", "ok.txt")
    git(git_home, clone, "commit", "-qm", "fine")
    # not tracked by git-lfs: git keeps the pointer as it is, and no LFS object is uploaded
    (clone / "w.dat").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:"
                                 + "ab" * 32 + "\nsize 12345\n")  # fmt: skip
    git(git_home, clone, "add", "w.dat")
    git(git_home, clone, "commit", "-qm", "a pointer to nothing")
    out = git(git_home, clone, "push", "--no-verify", "origin", "main", check=False)
    assert "was not uploaded" in out, out
    history = hub_client(gateway.url, CATCH + HISTORY, ["org/chain", "model"], tmp_path / "hf")
    assert history["commits"][0][0] == head  # not the first of the two

    git(git_home, clone, "reset", "-q", "--hard", head)
    git(git_home, clone, "push", "-q", "origin", f"{ids[1]}:refs/heads/at-start")
    git(git_home, clone, "checkout", "-q", "-b", "side")
    (clone / "side.txt").write_text("side\n")
    git(git_home, clone, "add", "side.txt")
    git(git_home, clone, "commit", "-qm", "side")
    git(git_home, clone, "push", "-q", "origin", "side")
    side = git(git_home, clone, "rev-parse", "HEAD").strip()
    assert manifests() == before  # the history's commits were not made again
    refs = git(git_home, clone, "ls-remote", "origin").split()
    assert dict(zip(refs[1::2], refs[::2], strict=True)) == {
        "HEAD": head, "refs/heads/main": head, "refs/heads/at-start": ids[1],
        "refs/heads/side": side,
    }  # fmt: skip
    git(git_home, clone, "fetch", "-q", "origin")
    assert git(git_home, clone, "log", "--format=%H", "origin/at-start").split() == ids[1:]

    tree = git(git_home, clone, "rev-parse", f"{head}^{{tree}}").strip()
    bad = f"tree {tree}\nparent {head}\nauthor Eve <e@x>\ncommitter Eve <e@x> 1 +0000\n\nm\n"
    done = subprocess.run(["git", "hash-object", "-t", "commit", "--literally", "-w", "--stdin"],
                          cwd=clone, env=git_home, input=bad, capture_output=True, text=True,
                          check=True)  # fmt: skip
    out = git(git_home, clone, "push", "origin", f"{done.stdout.strip()}:refs/heads/main",
              check=False)  # fmt: skip
    assert "[remote rejected]" in out and "well-formed" in out, out
    # a tree naming a file the pack does not hold (git itself would not send one)
    from dulwich.object_format import SHA1
    from dulwich.objects import Commit, Tree
    from dulwich.pack import write_pack_objects
    from dulwich.protocol import pkt_line

    tree, commit = Tree(), Commit()
    tree.add(b"gone.txt", 0o100644, b"3" * 40)
    commit.tree, commit.parents, commit.message = tree.id, [head.encode()], b"gone\n"
    commit.author = commit.committer = b"Eve <e@x>"
    commit.author_time = commit.commit_time = 1
    commit.author_timezone = commit.commit_timezone = 0
    pack = io.BytesIO()
    write_pack_objects(pack.write, [(tree, None), (commit, None)], SHA1)
    update = f"{head} {commit.id.decode()} refs/heads/main\0report-status\n".encode()
    answer = requests.post(f"{gateway.url}/org/chain/git-receive-pack",
                           data=pkt_line(update) + b"0000" + pack.getvalue(), timeout=60,
                           headers={"Content-Type": "application/x-git-receive-pack-request"})  # fmt: skip
    assert answer.status_code == 200 and b"ng refs/heads/main gone.txt:" in answer.content
    for service in ("git-upload-pack", "git-receive-pack"):  # not git's words: a 400
        answer = requests.post(f"{gateway.url}/org/chain/{service}", data=b"\0" * 64, timeout=60,
                               headers={"Content-Type": f"application/x-{service}-request"})  # fmt: skip
        assert answer.status_code == 400, answer.text

    # 100 MB of zeros is a 100 KB pack: refused before dulwich inflates it into memory
    git(git_home, clone, "reset", "-q", "--hard", head)
    with open(clone / "zeros.dat", "wb") as f:
        f.truncate(100 << 20)
    git(git_home, clone, "add", "zeros.dat")
    git(git_home, clone, "commit", "-qm", "zeros")
    out = git(git_home, clone, "push", "origin", "HEAD:main", check=False)
    assert "remote unpack failed: the pushed objects inflate to more than" in out, out
    assert "Traceback" not in gateway.log()


def test_a_dataset_clones_and_a_foreign_model_is_refused_in_git_words(
    gateway, registry, git_home, tmp_path
):
    from support.datasets import parquet_dataset
    from support.helpers import build_and_push

    from modelpack.settings import Settings

    source = parquet_dataset(tmp_path / "data")
    hub_client(gateway.url, UPLOAD, ["org/rows", str(source), "dataset"], tmp_path / "hf")
    clone = tmp_path / "rows"
    git(git_home, None, "clone", "-q", f"{gateway.url}/datasets/org/rows", str(clone))
    assert sha256s(tree_files(clone)) == sha256s(tree_files(source))

    # Pushed with `modelpack push`: not a commit of this hub, so no git history to show.
    settings = Settings(home=tmp_path / "home", plain_http=True)
    build_and_push(make_tiny_model(tmp_path / "m"), f"{registry.host}/{NAMESPACE}/org/pushed:main",
                   settings)  # fmt: skip
    out = git(git_home, None, "clone", f"{gateway.url}/org/pushed", str(tmp_path / "p"),
              check=False)  # fmt: skip
    assert "remote error" in out and "not made through this hub" in out, out
    # An encoded slash makes no dataset of a model URL (as for every other route).
    slashed = requests.get(f"{gateway.url}/datasets%2Forg/rows/info/refs?service=git-upload-pack",
                           timeout=30)  # fmt: skip
    assert slashed.status_code == 404, slashed.text
    missing = requests.get(f"{gateway.url}/org/none/info/refs?service=git-upload-pack", timeout=30)
    assert missing.status_code == 404
    dumb = requests.get(f"{gateway.url}/org/rows/info/refs", timeout=30)
    assert dumb.status_code in (403, 404)


def test_git_asks_for_credentials_and_the_registry_decides(git_home, tmp_path):
    """Against a registry that needs a login: an anonymous clone is asked for credentials
    (401 with WWW-Authenticate) and fails without them; with the registry's user in the URL
    it clones and pushes; a wrong password is refused the same way."""
    from modelpack.testing import RegistryServer

    user, password = "gitter", "s3cret-git"
    with RegistryServer(users={user: password}, workdir=tmp_path / "registry") as server:
        gateway = Gateway(f"{server.host}/{NAMESPACE}", tmp_path / "gateway").start()
        try:
            model = make_tiny_model(tmp_path / "tiny")
            hub_client(gateway.url, UPLOAD, ["org/private", str(model), "model"], tmp_path / "hf",
                       f"{user}:{password}")  # fmt: skip
            answer = requests.get(
                f"{gateway.url}/org/private/info/refs?service=git-upload-pack", timeout=30
            )
            assert answer.status_code == 401 and "Basic" in answer.headers["WWW-Authenticate"]
            out = git(git_home, None, "clone", f"{gateway.url}/org/private",
                      str(tmp_path / "anon"), check=False)  # fmt: skip
            assert "Authentication failed" in out or "could not read Username" in out, out
            base = gateway.url.replace("http://", f"http://{user}:wrong@")
            out = git(git_home, None, "clone", f"{base}/org/private", str(tmp_path / "bad"),
                      check=False)  # fmt: skip
            assert "Authentication failed" in out, out
            base = gateway.url.replace("http://", f"http://{user}:{password}@")
            clone = tmp_path / "clone"
            git(git_home, None, "clone", "-q", f"{base}/org/private", str(clone))
            assert sha256s(tree_files(clone)) == sha256s(tree_files(model))
            (clone / "notes.txt").write_text("private\n")
            git(git_home, clone, "add", "notes.txt")
            git(git_home, clone, "commit", "-qm", "notes")
            git(git_home, clone, "push", "-q", "origin", "main")
            head = git(git_home, clone, "rev-parse", "HEAD").strip()
            history = hub_client(gateway.url, CATCH + HISTORY, ["org/private", "model"],
                                 tmp_path / "hf", f"{user}:{password}")  # fmt: skip
            assert history["commits"][0][0] == head
        finally:
            gateway.stop()


POINTER_AS_FILE = """
import json, sys
from huggingface_hub import HfApi
repo, = json.loads(sys.argv[1])
pointer = ("version https://git-lfs.github.com/spec/v1\\noid sha256:" + "ab" * 32
           + "\\nsize 12\\n").encode()
print(json.dumps(attempt(lambda: HfApi().upload_file(
    path_or_fileobj=pointer, path_in_repo="weights.safetensors", repo_id=repo).oid)))
"""


def test_a_regular_file_that_is_an_lfs_pointer_is_refused(gateway, tmp_path):
    """In git such a file would be the LFS file it names (the same tree entry): two commits
    of different files could share an id.  So the hub API refuses it, and says why."""
    model = make_tiny_model(tmp_path / "tiny")
    hub_client(gateway.url, UPLOAD, ["org/pointers", str(model), "model"], tmp_path / "hf")
    out = hub_client(gateway.url, CATCH + POINTER_AS_FILE, ["org/pointers"], tmp_path / "hf")
    assert out["status"] == 400 and "is a git-lfs pointer" in out["message"], out
