"""The Hugging Face hub's side of the protocol: repo ids, revisions, files, errors.

What huggingface_hub (2.x) reads from a hub, and so what the gateway answers:

* ``HEAD/GET /{repo}/resolve/{revision}/{path}``: ``X-Repo-Commit`` (40 hex; the
  snapshot folder name), ``ETag`` / ``X-Linked-Etag`` (the blob file name in the
  client's cache: the sha256 of LFS-like files), ``Content-Length`` /
  ``X-Linked-Size``; GET honours ``Range`` when a download resumes.
* ``GET /api/models/{repo}/revision/{revision}``: ``sha`` and ``siblings``;
  ``GET /api/models/{repo}/tree/{commit}?recursive=...``: ``path``, ``size``,
  ``oid`` and, for LFS files, ``lfs.oid`` (sha256).
* errors as a status, ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
  ``EntryNotFound``), ``X-Error-Message`` and ``{"error": ...}``: that is what
  turns into ``RepositoryNotFoundError`` and friends on the client.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from ..errors import IntegrityError
from ..oci.spec import (
    ANNOTATION_FILE_METADATA,
    LEGACY_ANNOTATION_FILE_METADATA,
    Descriptor,
    FileMetadata,
    Manifest,
)

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
# Hub repo ids: NAME or ORG/NAME, letters, digits, '-', '_', '.'.
_REPO_SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
LFS_POINTER_SIZE = 134  # what a git-lfs pointer file of a sha256 takes; the hub reports it


class HubError(Exception):
    """An answer in the hub's error format (status, X-Error-Code, JSON ``error``)."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})

    def response_headers(self) -> dict[str, str]:
        headers = {"X-Error-Message": _header_text(self.message), **self.headers}
        if self.code:
            headers["X-Error-Code"] = self.code
        return headers

    def body(self) -> bytes:
        return json.dumps({"error": self.message}).encode()


def _header_text(text: str) -> str:
    """One line of latin-1: header values must not carry newlines or other scripts."""
    return " ".join(text.split()).encode("latin-1", "replace").decode("latin-1")[:500]


def repo_not_found(repo_id: str, detail: str = "") -> HubError:
    message = f"Repository not found: {repo_id}" + (f" ({detail})" if detail else "")
    return HubError(404, message, "RepoNotFound")


def revision_not_found(repo_id: str, revision: str, tags: list[str] | None = None) -> HubError:
    """The hub's message, and (what the hub cannot say) the revisions that do exist."""
    message = f"Invalid rev id: {revision} for {repo_id}"
    if tags:
        shown = ", ".join(tags[:10]) + (f" and {len(tags) - 10} more" if len(tags) > 10 else "")
        message += f" (revisions: {shown})"
    return HubError(404, message, "RevisionNotFound")


def entry_not_found(repo_id: str, path: str, commit: str) -> HubError:
    # With X-Repo-Commit the client remembers the miss (`.no_exist/<commit>/<path>`).
    return HubError(
        404, f"Entry not found: {path} in {repo_id}", "EntryNotFound", {"X-Repo-Commit": commit}
    )


def valid_repo_id(repo_id: str) -> bool:
    segments = repo_id.split("/")
    return 1 <= len(segments) <= 2 and all(
        _REPO_SEGMENT_RE.match(s) and ".." not in s and "--" not in s for s in segments
    )


def canonical_repo_id(repo_id: str) -> str:
    """OCI repository names are lower case: ``Qwen/Qwen2`` is served as ``qwen/qwen2``
    (the client is redirected there, as the hub redirects a renamed repo)."""
    return repo_id.lower()


def valid_file_path(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and all(p not in ("", ".", "..") and "\\" not in p for p in parts)


def stand_in_oid(*parts: str) -> str:
    """A stable 40-hex id where the hub would put a git object id we do not have."""
    return hashlib.sha1("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class RepoFile:
    """One file of a model as the hub describes it."""

    path: str
    size: int | None
    layer: Descriptor | None  # None: known only from the materialized tree
    owner: str  # the manifest digest, for stand-in ids

    @property
    def raw(self) -> bool:
        """The layer is the file's bytes (``...raw``): its digest is the file's sha256."""
        return (
            self.layer is not None
            and self.layer.media_type.endswith(".raw")
            and self.layer.digest.startswith("sha256:")
        )

    @property
    def sha256(self) -> str | None:
        return self.layer.digest.split(":", 1)[1] if self.raw and self.layer else None

    @property
    def oid(self) -> str:
        return stand_in_oid(self.layer.digest if self.layer else self.owner, self.path)

    @property
    def etag(self) -> str:
        """sha256 for LFS-like (raw) files, so the client's cache dedups by content;
        a git-oid-like stand-in for the rest, as the hub uses git oids for small files."""
        return self.sha256 or self.oid

    def tree_entry(self) -> dict:
        entry: dict = {"type": "file", "oid": self.oid, "size": self.size or 0, "path": self.path}
        if self.sha256:
            entry["lfs"] = {
                "oid": self.sha256,
                "size": self.size or 0,
                "pointerSize": LFS_POINTER_SIZE,
            }
        return entry

    def sibling(self, blobs: bool) -> dict:
        entry: dict = {"rfilename": self.path}
        if blobs:
            entry["size"] = self.size or 0
            # blobId only beside a sha256: for other files it would be a stand-in where
            # an importer checks a git blob id (upstreamfiles.py), and no client needs it.
            if self.sha256:
                entry["blobId"] = self.oid
                entry["lfs"] = {
                    "sha256": self.sha256,
                    "size": self.size or 0,
                    "pointerSize": LFS_POINTER_SIZE,
                }
        return entry


def single_file_size(layer: Descriptor) -> int | None:
    """The file size an archive layer unpacks to, when it holds exactly one regular file."""
    text = layer.annotations.get(ANNOTATION_FILE_METADATA) or layer.annotations.get(
        LEGACY_ANNOTATION_FILE_METADATA
    )
    if not text:
        return None
    try:
        metadata = FileMetadata.from_json(text)
    except IntegrityError:
        return None
    return metadata.size if metadata.typeflag in (0, 48) and metadata.size >= 0 else None


def files_from_manifest(manifest: Manifest, digest: str) -> dict[str, RepoFile] | None:
    """The files a manifest names, without reading a layer; None when some layer
    (a directory archive, or one without file metadata) must be unpacked first."""
    files: dict[str, RepoFile] = {}
    for layer in manifest.layers:
        path = layer.named_path
        if not path or path.endswith("/"):
            return None
        if not valid_file_path(path):
            continue  # never served; a pull refuses the artifact anyway
        if layer.media_type.endswith(".raw"):
            size: int | None = layer.size
        else:
            size = single_file_size(layer)
            if size is None:
                return None
        files[path] = RepoFile(path, size, layer, digest)
    return files


def directories(paths: list[str]) -> set[str]:
    found: set[str] = set()
    for path in paths:
        parts = path.split("/")[:-1]
        found.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return found


def tree_entries(
    files: dict[str, RepoFile], owner: str, under: str, recursive: bool
) -> list[dict] | None:
    """``/tree`` entries below ``under`` (``""``: the root); None if it is no directory."""
    dirs = directories(list(files))
    if under and under not in dirs:
        return None
    prefix = f"{under}/" if under else ""

    def wanted(path: str) -> bool:
        if not path.startswith(prefix):
            return False
        return recursive or "/" not in path[len(prefix) :]

    entries = [
        {"type": "directory", "oid": stand_in_oid(owner, d), "size": 0, "path": d}
        for d in sorted(dirs)
        if wanted(d)
    ]
    entries += [f.tree_entry() for p, f in sorted(files.items()) if wanted(p)]
    return entries


def path_entries(files: dict[str, RepoFile], owner: str, paths: list[str]) -> list[dict]:
    """``/paths-info``: the entries of those paths that exist (files or directories)."""
    dirs = directories(list(files))
    out = []
    for path in dict.fromkeys(p.strip("/") for p in paths):
        if path in files:
            out.append(files[path].tree_entry())
        elif path in dirs:
            out.append({"type": "directory", "oid": stand_in_oid(owner, path), "path": path})
    return out
