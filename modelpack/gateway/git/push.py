"""``git push``: each pushed commit becomes the hub commit of the same id.

A pushed branch update is checked as a hub commit is (the branch's lock, protected names,
the registry's push permission, pickle scans) and then made commit by commit on the branch,
oldest first, with writes/commits.py: a file that is a git-lfs pointer is the LFS object
git-lfs uploaded before the push (through the LFS batch API), any other file a regular file
of at most ``--inline-max`` bytes.  The commit's text is kept as sent, so the manifest's id
(core/gitobjects.py) is the pushed commit's; if it were not, the push is refused before the
registry changes.  Refused: merges, anything but plain files (executables, symlinks,
submodules), paths the hub refuses, deleting a branch, and tags (the hub API makes them).
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...oci.digests import sha256_file
from ...oci.spec import Descriptor
from ...registry.client import RegistryRepository
from ..core.gitobjects import (
    FILE_MODE,
    GIT_COMMIT_TEXT_MAX,
    dulwich,
    git_files,
    parse_lfs_pointer,
)
from ..core.http import Request
from ..core.hub import HubError, path_problem
from ..read.models import Model
from ..writes.commits import (
    Built,
    Change,
    CommitInfo,
    Head,
    NewFile,
    branch_manifest,
    build_commit,
    push_commit,
)
from ..writes.protected import refuse_protected
from ..writes.scanning import scan_commit
from ..writes.uploads import Uploads, blob_size
from .objects import is_git_commit

if TYPE_CHECKING:
    from dulwich.object_store import BaseObjectStore
    from dulwich.objects import Commit, ShaFile

ZERO = "0" * 40
PUSH_COMMITS_MAX = 1000  # commits one push may add to a branch
TREE_FILES_MAX = 100_000  # files in one pushed commit


class PushRefused(Exception):
    """Why a ref was not updated: git prints it as ``! [remote rejected] REF (WHY)``."""


@dataclass(frozen=True)
class Pushed:
    """One pushed commit, read from the pack."""

    sha: str
    commit: Commit
    text: str  # after the tree line, as sent


class GitPush:
    def __init__(self, uploads: Uploads) -> None:
        self.uploads = uploads
        self.config = uploads.config

    def update(
        self,
        request: Request,
        repo_id: str,
        store: BaseObjectStore,
        ref: str,
        old: str,
        new: str,
        known: Collection[str] = (),
    ) -> str:
        """Moves ``ref`` from ``old`` to ``new`` in the registry; the new head's id.
        ``known``: the commits the repository already has (those git was shown): a new
        branch starts at the first of them, and none is made again.  Every pushed commit is
        built and checked before the registry's refs change, so a refused push leaves the
        branch where it was."""
        if not ref.startswith("refs/heads/"):
            raise PushRefused("only branches are pushed here (tags: create_tag in the hub API)")
        branch = ref.removeprefix("refs/heads/")
        try:
            self.uploads.branch_name(branch)
        except HubError as exc:
            raise PushRefused(exc.message) from None
        if new == ZERO:
            raise PushRefused("deleting a branch is not supported by this gateway")
        with self.uploads.branch_lock(repo_id, branch) as lease:
            head = self._branch_head(request, repo_id, branch)
            if (head.commit if head else ZERO) != old:
                raise PushRefused("the branch moved meanwhile: fetch first")
            repository = self.uploads.repository(repo_id, request)
            refuse_protected(self.config, repository, repo_id, branch, "commit to")
            self.uploads.check_push(repository, request)
            chain = self._chain(store, new, old, known)
            base: Model | Head | None = head
            if head is None:
                start = chain[0].commit.parents if chain else [new.encode()]
                if start:  # a new branch from a commit the repository has
                    base = self._known_commit(request, repo_id, start[0].decode())
            steps: list[tuple[Built | None, Head | None]] = []
            if head is None and isinstance(base, Model):
                steps.append((None, self.uploads.head_of(base)))  # the branch starts there
            with tempfile.TemporaryDirectory(dir=self.uploads.workdir, prefix="push-") as work:
                for pushed in chain:  # all of them checked before anything moves
                    parent = self.uploads.head_of(base) if isinstance(base, Model) else base
                    if pushed.sha in known:  # made already (another branch's): not again
                        base = self._known_commit(request, repo_id, pushed.sha)
                        steps.append((None, self.uploads.head_of(base)))
                        continue
                    built = self._build(repository, repo_id, branch, store, parent, pushed,
                                        Path(work))  # fmt: skip
                    steps.append((built, parent))
                    base = Head(built.descriptor, built.manifest, None, built.commit)
                for i, (built, parent) in enumerate(steps):
                    if built is not None:
                        self.uploads.move(repo_id, lease, functools.partial(
                            push_commit, repository, built, parent))  # fmt: skip
                    elif i == len(steps) - 1 and parent is not None:
                        desc, data = branch_manifest(parent, repo_id, branch)
                        self.uploads.move(repo_id, lease, functools.partial(
                            repository.put_manifest, desc, data, branch))  # fmt: skip
        return new

    def _branch_head(self, request: Request, repo_id: str, branch: str) -> Model | None:
        try:
            model = self.uploads.open_fresh(repo_id, branch, request)
        except HubError as exc:
            if exc.status == 404:
                return None
            raise
        if not is_git_commit(model):
            raise PushRefused(f"{branch} was not made through this hub (it holds files git "
                              "cannot); commit to it through the hub API first")  # fmt: skip
        return model

    def _known_commit(self, request: Request, repo_id: str, sha: str) -> Model:
        try:
            model = self.uploads.open_fresh(repo_id, sha, request)
        except HubError:
            raise PushRefused(f"{sha[:12]} is not a commit of this repository") from None
        if not is_git_commit(model) or model.commit != sha:
            raise PushRefused(f"{sha[:12]} is not a commit of this repository")
        return model

    @staticmethod
    def _chain(
        store: BaseObjectStore, new: str, old: str, known: Collection[str] = ()
    ) -> list[Pushed]:
        """The pushed commits from the one after ``old`` to ``new``, oldest first; a new
        branch (``old`` zero) from the first commit the repository has (``known``)."""
        found: list[Pushed] = []
        sha = new
        while sha != old:
            if old == ZERO and sha in known:
                break  # the new branch starts from a commit the repository has
            if len(found) >= PUSH_COMMITS_MAX:
                raise PushRefused(f"more than {PUSH_COMMITS_MAX} new commits in one push")
            try:
                commit = store[sha.encode()]
            except KeyError:
                if old == ZERO and found:
                    break  # the new branch starts from a commit the repository has
                raise PushRefused(f"{sha[:12]} is missing from the push") from None
            if not isinstance(commit, dulwich("objects").Commit):
                raise PushRefused(f"{sha[:12]} is not a commit")
            try:
                commit.check()  # git's order of headers, an author and committer with times
            except dulwich("errors").ObjectFormatException as exc:
                raise PushRefused(f"{sha[:12]} is not a well-formed commit: {exc}") from None
            if len(commit.parents) > 1:
                raise PushRefused(f"{sha[:12]} is a merge: this hub keeps a linear history")
            raw = commit.as_raw_string()
            if len(raw) > GIT_COMMIT_TEXT_MAX:
                raise PushRefused(f"{sha[:12]}: its message is over {GIT_COMMIT_TEXT_MAX} bytes")
            try:
                text = raw.split(b"\n", 1)[1].decode("utf-8")
            except UnicodeDecodeError:
                raise PushRefused(f"{sha[:12]}: its message is not UTF-8") from None
            found.append(Pushed(sha, commit, text))
            if not commit.parents:
                if old != ZERO:
                    raise PushRefused("the push does not continue the branch: fetch first")
                break
            sha = commit.parents[0].decode()
        return found[::-1]

    def _build(
        self,
        repository: RegistryRepository,
        repo_id: str,
        branch: str,
        store: BaseObjectStore,
        head: Head | None,
        pushed: Pushed,
        work: Path,
    ) -> Built:
        """The hub commit of ``pushed`` on ``head`` (its files in the registry, no ref moved)."""
        # The parent is a git commit (its branch's or a known one), so every layer is a file.
        before = {f.path: f.blob for f in git_files(head.manifest.layers if head else ()) or ()}
        files = _tree_files(store, pushed.commit.tree.decode())
        change = Change()
        for path, blob_id in files.items():
            if before.get(path) == blob_id:
                continue
            change.added[path] = self._new_file(repository, store, path, blob_id, work)
        change.deleted_files.update(p for p in before if p not in files)
        change = scan_commit(repository, repo_id, change, self.config.allow_unsafe_pickle)
        message = pushed.commit.message.decode("utf-8", "replace")
        title, _, rest = message.strip().partition("\n")
        author = pushed.commit.author.decode("utf-8", "replace").split(" <", 1)[0]
        info = CommitInfo(title.strip(), rest.strip(), author, branch,
                          float(pushed.commit.author_time), pushed.text)  # fmt: skip
        built = build_commit(repository, repo_id, head, change, info, work)
        if built.commit != pushed.sha:
            raise PushRefused(f"{pushed.sha[:12]} cannot be kept with its id here (it would be "
                              f"{built.commit[:12]}): are its LFS pointers git-lfs's own?")  # fmt: skip
        return built

    def _new_file(
        self,
        repository: RegistryRepository,
        store: BaseObjectStore,
        path: str,
        blob_id: str,
        work: Path,
    ) -> NewFile:
        blob = _pushed(store, blob_id, path)
        if not isinstance(blob, dulwich("objects").Blob):
            raise PushRefused(f"{path}: not a file")
        data = blob.as_raw_string()
        pointer = parse_lfs_pointer(data)
        if pointer is not None:
            oid, size = pointer
            desc = Descriptor("application/octet-stream", f"sha256:{oid}", size)
            if blob_size(repository, desc) != size:
                raise PushRefused(f"{path}: its LFS object {oid[:12]} was not uploaded "
                                  "(is git-lfs installed? git lfs push --all origin)")  # fmt: skip
            return NewFile(path, desc.digest, size)
        if len(data) > self.config.inline_max:
            raise PushRefused(f"{path} is {len(data)} bytes: files over "
                              f"{self.config.inline_max} bytes go through git-lfs here "
                              "(git lfs track)")  # fmt: skip
        local = work / f"file-{blob_id}"
        local.write_bytes(data)
        digest, size = sha256_file(str(local))
        self.uploads.push_blob(repository, local, digest, size)
        return NewFile(path, digest, size, blob_id, local)


def _tree_files(store: BaseObjectStore, tree_id: str) -> dict[str, str]:
    """Every file of a pushed tree: path -> blob id; anything but a plain file is refused."""
    files: dict[str, str] = {}
    pending = [("", tree_id)]
    while pending:
        prefix, sha = pending.pop()
        tree = _pushed(store, sha, prefix or "/")
        if not isinstance(tree, dulwich("objects").Tree):
            raise PushRefused(f"{prefix or '/'}: not a tree")
        for entry in tree.iteritems():
            try:
                path = prefix + entry.path.decode("utf-8")
            except UnicodeDecodeError:
                raise PushRefused(f"{prefix}: a file name that is not UTF-8") from None
            if entry.mode == 0o040000:
                pending.append((path + "/", entry.sha.decode()))
                continue
            if entry.mode != FILE_MODE:
                raise PushRefused(f"{path}: mode {entry.mode:o}: only plain files (100644) here")
            if problem := path_problem(path):
                raise PushRefused(f"{path}: {problem}")
            files[path] = entry.sha.decode()
            if len(files) > TREE_FILES_MAX:
                raise PushRefused(f"more than {TREE_FILES_MAX} files in one commit")
    return files


def _pushed(store: BaseObjectStore, sha: str, path: str) -> ShaFile:
    """An object the push names; refused when neither the pack nor the repository has it."""
    try:
        return store[sha.encode()]
    except KeyError:
        raise PushRefused(f"{path}: {sha[:12]} is missing from the push") from None
