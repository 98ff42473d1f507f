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

import functools
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass

from ...errors import IntegrityError, UnsafePathError
from ...oci.spec import (
    ANNOTATION_FILE_METADATA,
    DOCKER_ARCHIVE_MEDIA_TYPES,
    LEGACY_ANNOTATION_FILE_METADATA,
    Descriptor,
    FileMetadata,
    LayerFormat,
    Manifest,
    layer_format_of,
)
from ...storage.unpack import safe_relpath

# Every pattern ends in \Z: "$" would also match before a trailing newline.
COMMIT_RE = re.compile(r"^[0-9a-f]{40}\Z")
# Hub repo ids: NAME or ORG/NAME, letters, digits, '-', '_', '.'.
_REPO_SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}\Z")
# A whole repo path, in bytes: a client's --local-dir or cache folder, and the gateway's
# staging folder, go in front of it and everything must stay under PATH_MAX (4096).
PATH_BYTES_MAX = 1024
# What huggingface_hub refuses to upload (constants.FORBIDDEN_FOLDERS): git's folder, and
# the one where `hf download --local-dir` keeps what it downloaded and when.
FORBIDDEN_FOLDERS = (".git", ".cache")
# A dataset's repo id, URL path and registry repository are a model's with this in front
# (``/datasets/ORG/NAME``, ``/api/datasets/ORG/NAME``, ``NAMESPACE/datasets/ORG/NAME``).
DATASETS = "datasets"
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
        headers = {"X-Error-Message": self.message, **self.headers}
        if self.code:
            headers["X-Error-Code"] = self.code
        return {name: header_text(value) for name, value in headers.items()}

    def body(self) -> bytes:
        return json.dumps({"error": self.message}).encode()


def header_text(text: str) -> str:
    """One line of printable latin-1 for a header value: a newline would split the
    header, and a NUL or other control character makes gunicorn answer 500 instead."""
    printable = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(printable.split()).encode("latin-1", "replace").decode("latin-1")[:500]


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
    """A model's ``NAME`` or ``ORG/NAME``, or a dataset's ``datasets/`` and one of those.
    No model's org (or one-segment name) is ``datasets`` in any case (the hub's URLs
    reserve it too; ids are lower-cased after this check, and ``Datasets/x`` would become
    dataset ``x``), nor a dataset's: the first segment after the prefix is never it."""
    segments = repo_id.split("/")
    if segments[0] == DATASETS:
        segments = segments[1:]
    return (
        1 <= len(segments) <= 2
        and segments[0].lower() != DATASETS
        and all(_REPO_SEGMENT_RE.match(s) and ".." not in s and "--" not in s for s in segments)
    )


def valid_repo_segments(repo: list[str]) -> bool:
    """A URL's repo segments, each decoded on its own: a segment with a slash in it
    (``datasets%2Forg``) is no part of a repo id, else ``/api/models/datasets%2Forg/NAME``
    would be the dataset ``org/NAME``."""
    return all("/" not in part for part in repo) and valid_repo_id("/".join(repo))


def is_dataset(repo_id: str) -> bool:
    return repo_id.startswith(f"{DATASETS}/")


def shown_repo_id(repo_id: str) -> str:
    """The id a client names a repo by: a dataset's without the ``datasets/`` its URLs,
    this gateway and the registry's repository name put in front."""
    return repo_id.removeprefix(f"{DATASETS}/")


def repo_type(repo_id: str) -> str:
    """huggingface_hub's ``repo_type`` of a repo id."""
    return "dataset" if is_dataset(repo_id) else "model"


def api_repo_path(segments: list[str]) -> list[str]:
    """What follows ``/api/models/`` or ``/api/datasets/``, a dataset's with ``datasets`` in
    front, as its repo id has.  ``/api/models/datasets/...`` names no model (the org is
    reserved) and is refused, so that no model URL reaches a dataset."""
    rest = segments[2:]
    if segments[1] == DATASETS:
        return [DATASETS, *rest]
    if rest[:1] == [DATASETS]:
        raise repo_not_found("/".join(rest[:3]), "no model's org is named datasets")
    return rest


def repo_spans(segments: list[str]) -> tuple[int, ...]:
    """How many leading ``segments`` of a repo URL may be the repo id, longest first:
    ``ORG/NAME`` or ``NAME``, or for a dataset ``datasets/ORG/NAME`` or ``datasets/NAME``."""
    return (3, 2) if segments[:1] == [DATASETS] else (2, 1)


def canonical_repo_id(repo_id: str) -> str:
    """OCI repository names are lower case: ``Qwen/Qwen2`` is served as ``qwen/qwen2``
    (the client is redirected there, as the hub redirects a renamed repo)."""
    return repo_id.lower()


def path_problem(path: object) -> str | None:
    """Why ``path`` cannot name a file in a repo, or None.  One rule for every path
    the gateway takes or carries (preupload, each commit operation, the parent's
    layers) and serves: relative, no empty, ``.`` or ``..`` part; no control character
    (a newline or NUL no client's file system or header takes); at most
    :data:`PATH_BYTES_MAX` bytes; no ``.cache`` part; and what a pull refuses
    (``storage.unpack.safe_relpath``: ``.git`` in any spelling a file system folds to it,
    backslashes, not UTF-8, a name over 255 bytes, modelpack's reserved names)."""
    if not isinstance(path, str) or not path:
        return "an empty path"
    if path.startswith("/"):
        return "an absolute path"
    if any(unicodedata.category(c) == "Cc" for c in path):
        return "a control character (newline, tab, NUL...) in a name"
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if size > PATH_BYTES_MAX:
        return f"longer than {PATH_BYTES_MAX} bytes"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "an empty, '.' or '..' part"
    if any(part in FORBIDDEN_FOLDERS for part in parts):
        return "a .git or .cache folder, which huggingface_hub refuses too"
    try:
        safe_relpath(path, "path")
    except UnsafePathError as exc:
        return exc.message.removeprefix("path: ")
    return None


def shown_path(path: object) -> str:
    """A path as an error message shows it: quoted, escaped, not too long."""
    text = ascii(path)
    return text if len(text) <= 120 else f"{text[:90]}...{text[-20:]}"


def valid_file_path(path: str) -> bool:
    return path_problem(path) is None


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

    @functools.cached_property  # a download reads each several times
    def raw(self) -> bool:
        """The layer is the file's bytes (``...raw``): its digest is the file's sha256."""
        return (
            self.layer is not None
            and self.layer.media_type.endswith(".raw")
            and self.layer.digest.startswith("sha256:")
        )

    @functools.cached_property
    def sha256(self) -> str | None:
        return self.layer.digest.split(":", 1)[1] if self.raw and self.layer else None

    @functools.cached_property
    def oid(self) -> str:
        return stand_in_oid(self.layer.digest if self.layer else self.owner, self.path)

    @functools.cached_property
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
            # an importer checks a git blob id (upstream/files.py), and no client needs it.
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
    (a directory archive, one without file metadata, or a Docker Model Runner layer that
    names no path or is an archive) must be unpacked first."""
    files: dict[str, RepoFile] = {}
    for layer in manifest.layers:
        path = layer.named_path
        if not path or path.endswith("/") or layer.media_type in DOCKER_ARCHIVE_MEDIA_TYPES:
            return None
        if not valid_file_path(path):
            continue  # never served; a pull refuses the artifact anyway
        if layer_format_of(layer.media_type) is LayerFormat.RAW:
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
