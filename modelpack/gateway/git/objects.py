"""A hub repo as a git repository, for one client: its refs and every object they reach.

Made on each request from the registry, with the client's credentials (the resolver opens
every revision, as a download does): the branches and tags whose commits this gateway made
(``io.modelpack.git.commit``), their history through the commit-id tags, and each commit's
trees and blobs (core/gitobjects.py).  An LFS file is its pointer here; git-lfs fetches its
bytes from the registry through the LFS batch API.  Nothing is kept between requests.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cachetools import LRUCache

from ...errors import ModelpackError
from ...oci.target import fetch_bytes
from ..core.gitobjects import (
    ANNOTATION_GIT_COMMIT,
    GitFile,
    commit_oid,
    commit_raw,
    dulwich,
    git_files,
    git_trees,
    parents_of,
)
from ..core.hub import COMMIT_RE, HubError
from ..read.models import Model, Resolver
from ..writes.commits import ANNOTATION_BRANCH

if TYPE_CHECKING:
    from dulwich.objects import Blob, ShaFile
    from dulwich.repo import MemoryRepo

log = logging.getLogger("modelpack.gateway")
REFS_MAX = 1000  # branches and tags advertised
HISTORY_MAX = 5000  # commits one clone may reach
BLOB_CACHE_BYTES = 256 << 20  # regular files' bytes kept between requests
REGULAR_BLOB_MAX = 64 << 20  # a file git holds as itself (not LFS): the hub's are far smaller
OBJECT_BYTES_MAX = 512 << 20  # regular blobs' bytes in one answer


@dataclass
class GitRepo:
    """A repo's refs and objects as git sees them, and the refs git cannot show."""

    repo: MemoryRepo
    commits: dict[str, Model] = field(default_factory=dict)  # git commit id -> its manifest
    skipped: list[str] = field(default_factory=list)  # refs whose commit git cannot hold


def is_git_commit(model: Model) -> bool:
    return ANNOTATION_GIT_COMMIT in model.view.manifest.annotations


class GitObjects:
    """Builds :class:`GitRepo` for a request (routes.py serves it with dulwich)."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        # Regular files' bytes by layer digest (content-addressed): a clone after a clone
        # reads none of them from the registry again.  Only ever added to a repo whose
        # manifest this request opened, with the registry's yes that it holds the layer.
        self._blobs: LRUCache[str, bytes] = LRUCache(BLOB_CACHE_BYTES, getsizeof=len)
        self._lock = threading.Lock()

    def repo(
        self, repo_id: str, authorization: str | None, tags: list[str], history: bool = True
    ) -> GitRepo:
        """``tags``: the repository's user tags (the caller listed them, with these
        credentials).  Branches are ``refs/heads``, the hub's tags ``refs/tags``.  Without
        ``history`` (``info/refs``: git is only told the refs) each ref's commit object
        alone, no parent walked and no file read."""
        objects: dict[bytes, ShaFile] = {}
        memory_repo = dulwich("repo").MemoryRepo
        found = GitRepo(memory_repo())
        refs: dict[bytes, bytes] = {}
        budget = [OBJECT_BYTES_MAX]
        for tag in [t for t in tags if not COMMIT_RE.match(t)][:REFS_MAX]:
            try:
                model = self.resolver.open(repo_id, tag, authorization)
            except (HubError, ModelpackError) as exc:
                log.info("git: %s %s not served: %s", repo_id, tag, exc)
                continue
            if not is_git_commit(model) or git_files(model.view.manifest.layers) is None:
                found.skipped.append(tag)
                continue
            branch = model.view.manifest.annotations.get(ANNOTATION_BRANCH)
            kind = "heads" if tag in (branch, "main") else "tags"
            refs[f"refs/{kind}/{tag}".encode()] = model.commit.encode()
            if history:
                self._history(repo_id, authorization, model, objects, found, budget)
            elif model.commit not in found.commits:
                self._objects(model, objects, None)
                found.commits[model.commit] = model
        found.repo = memory_repo.init_bare(objects.values(), refs)
        if b"refs/heads/main" in refs:
            found.repo.refs.set_symbolic_ref(b"HEAD", b"refs/heads/main")
        return found

    def _history(
        self,
        repo_id: str,
        authorization: str | None,
        head: Model,
        objects: dict[bytes, ShaFile],
        found: GitRepo,
        budget: list[int],
    ) -> None:
        pending = [head]
        while pending:
            model = pending.pop()
            if model.commit in found.commits:
                continue
            if len(found.commits) >= HISTORY_MAX:
                raise HubError(413, f"{repo_id}: the history is longer than {HISTORY_MAX} "
                               "commits, more than git access here serves")  # fmt: skip
            text = self._objects(model, objects, budget)
            found.commits[model.commit] = model
            for parent in parents_of(text):
                if parent not in found.commits:
                    pending.append(self.resolver.open(repo_id, parent, authorization))

    def _objects(
        self, model: Model, objects: dict[bytes, ShaFile], budget: list[int] | None
    ) -> str:
        """Adds the commit's commit, trees and blobs (no ``budget``: the commit alone);
        returns the commit's text."""
        files = git_files(model.view.manifest.layers)
        text = model.view.manifest.annotations[ANNOTATION_GIT_COMMIT]
        if files is None:
            raise HubError(
                409, f"{model.repo_id}: commit {model.commit} has a file git cannot hold"
            )
        tree, trees = git_trees(files)
        if commit_oid(tree, text) != model.commit:
            # The manifest says another id than its files and text make: never served as it.
            raise HubError(409, f"{model.repo_id}: commit {model.commit} does not match its files")
        git = dulwich("objects")
        commit = git.ShaFile.from_raw_string(git.Commit.type_num, commit_raw(tree, text))
        objects[commit.id] = commit
        if budget is None:
            return text
        for t in trees:
            objects[t.id] = t
        for f in files:
            if f.blob.encode() in objects:
                continue
            objects[f.blob.encode()] = self._blob(model, f, budget)
        return text

    def _blob(self, model: Model, f: GitFile, budget: list[int]) -> Blob:
        blob_type = dulwich("objects").Blob
        if f.pointer is not None:
            return blob_type.from_string(f.pointer)
        if f.layer.size > min(REGULAR_BLOB_MAX, budget[0]):
            raise HubError(413, f"{model.repo_id}: {f.path} is too large to send as a git blob")
        budget[0] -= f.layer.size
        with self._lock:
            data = self._blobs.get(f.layer.digest)
        if data is None:
            data = fetch_bytes(model.repository, f.layer, REGULAR_BLOB_MAX)
            if len(data) <= BLOB_CACHE_BYTES // 16:
                with self._lock:
                    self._blobs[f.layer.digest] = data
        blob = blob_type.from_string(data)
        if blob.id.decode() != f.blob:
            raise HubError(409, f"{model.repo_id}: {f.path} does not match its git id")
        return blob
