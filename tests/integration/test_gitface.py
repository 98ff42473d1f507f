"""benchmarks/gitface.py, as MatrixHub's proxy uses it (`make bench-hubs`): Debian's git lists
and clones a `modelpack serve` repository through it, the commit holds the hub's small files and
an LFS pointer per LFS file, and the LFS batch API sends git-lfs to the hub's own resolve URLs."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import requests
from support.gateway import Gateway
from support.helpers import build_and_push, tree_files

from benchmarks.gitface import GitFace
from modelpack.settings import Settings
from modelpack.testing import make_tiny_model


def test_git_lists_and_clones_a_gateway_repository_and_lfs_points_at_it(registry, tmp_path):
    model = make_tiny_model(tmp_path / "tiny")
    settings = Settings(home=tmp_path / "home", plain_http=True)
    build_and_push(model, f"{registry.host}/gitface/org/tiny:main", settings)
    hub = Gateway(f"{registry.host}/gitface", tmp_path / "gateway").start()
    face = GitFace(hub.url, tmp_path / "git")
    try:
        face.add("org/tiny")
        face.serve()
        refs = subprocess.run(["git", "ls-remote", f"{face.url}/org/tiny"], capture_output=True,
                              text=True, check=True).stdout  # fmt: skip
        assert refs.split()[1] == "HEAD" and "refs/heads/main" in refs
        clone = tmp_path / "clone"
        subprocess.run(["git", "clone", "-q", f"{face.url}/org/tiny.git", str(clone)],
                       check=True, env={"GIT_LFS_SKIP_SMUDGE": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
        cloned, source = tree_files(clone), tree_files(model)
        assert cloned.keys() == source.keys()
        pointers = {p for p, data in cloned.items() if data.startswith(b"version https://git-lfs")}
        assert pointers and pointers == {e["path"] for e in face.objects["org/tiny"].values()}
        assert all(cloned[p] == source[p] for p in source.keys() - pointers)
        for path in pointers:  # what MatrixHub's mirror asks, then fetches
            oid = hashlib.sha256(source[path]).hexdigest()
            answer = requests.post(f"{face.url}/org/tiny.git/info/lfs/objects/batch", timeout=30,
                                   json={"operation": "download", "transfer": ["basic"],
                                         "objects": [{"oid": oid, "size": len(source[path])}]})  # fmt: skip
            href = answer.json()["objects"][0]["actions"]["download"]["href"]
            assert (
                href.startswith(hub.url) and requests.get(href, timeout=30).content == source[path]
            )
    finally:
        face.close()
        hub.stop()


def test_a_repository_it_does_not_serve_is_not_found(tmp_path: Path) -> None:
    face = GitFace("http://127.0.0.1:9", tmp_path).serve()
    try:
        missing = subprocess.run(["git", "ls-remote", f"{face.url}/org/none"], capture_output=True,
                                 text=True)  # fmt: skip
        assert missing.returncode != 0 and "not found" in missing.stderr.lower()
    finally:
        face.close()
