"""What an upstream hub lists for a revision, held to caps, and each file fetched against it.

The listing (``/api/models/{repo}/revision/{rev}?blobs=true``, what huggingface_hub's
``model_info(files_metadata=True)`` asks) is the only thing the import believes, and only
within bounds: a listing without a file's size, or beyond the caps, is refused before a
file is fetched.  Each file is then read no further than its listed size, and hashed as it
is written: the listing's sha256 for LFS files, the git blob id (sha1 of ``blob <size>\\0``
and the bytes) for other files when the listing gives one.  A file with neither is held
to its size alone (a mirror such as another ``modelpack serve`` lists no git ids).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
import urllib3

from ...errors import (
    AuthenticationError,
    ReferenceNotFoundError,
    RegistryUnavailableError,
    UnsafePathError,
)
from ...storage.unpack import safe_relpath
from ..core.config import Caps
from ..core.egress import Egress, RefusedError
from ..core.hub import path_problem

CHUNK = 1 << 20
_SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
_SHA1_RE = re.compile(r"^[0-9a-f]{40}\Z")


class UpstreamIntegrityError(RefusedError):
    """The upstream's bytes do not match the size, sha256 or git blob id it listed."""

    public = "the upstream hub sent files unlike its listing (sizes, sha256); nothing was imported"


class UpstreamFileMissingError(UpstreamIntegrityError):
    """A file the listing names that the upstream then answers 404 for."""


class UpstreamNotFoundError(ReferenceNotFoundError):
    """The upstream answered 404 for a listing; ``code`` is its ``X-Error-Code``
    (``RepoNotFound``: no revision of the repo is there; ``RevisionNotFound``: not this one)."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code

    @property
    def whole_repo(self) -> bool:
        return self.code == "RepoNotFound"


class UpstreamRefusedAccessError(AuthenticationError):
    """The upstream answered 401 or 403 (a private or gated repo, a token it refuses);
    ``code`` is its ``X-Error-Code``: the hub's ``RepoNotFound`` and ``GatedRepo`` are about
    the whole repo, a refusal without one (a proxy's, a firewall's) may be about the request."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code

    @property
    def whole_repo(self) -> bool:
        return self.code in ("RepoNotFound", "GatedRepo")


@dataclass(frozen=True)
class UpstreamFile:
    """A listed file: ``sha256`` for LFS files, ``blob_id`` (git sha1) for the others."""

    path: str
    size: int
    sha256: str | None
    blob_id: str | None


def fetch_listing(
    egress: Egress, repo_id: str, revision: str, caps: Caps
) -> tuple[str, list[UpstreamFile]]:
    """(commit, files) of ``repo_id@revision`` as the upstream lists them, within ``caps``."""
    what = f"{repo_id}@{revision}"
    url = (
        f"{egress.policy.upstream}/api/models/{quote(repo_id)}/revision/"
        f"{quote(revision, safe='')}?blobs=true"
    )
    response = egress.get(url)
    body = bytearray()
    try:
        _check_status(response, what)
        while len(body) <= caps.listing_bytes and (
            chunk := _read(response, caps.listing_bytes + 1 - len(body), what)
        ):
            body += chunk
    finally:
        response.close()
    if len(body) > caps.listing_bytes:
        raise RefusedError(f"{what}: the listing is larger than {caps.listing_bytes} bytes")
    try:
        document = json.loads(bytes(body))
    except (ValueError, RecursionError):  # RecursionError: nested a few thousand deep
        raise RefusedError(f"{what}: the listing is not JSON") from None
    return parse_listing(document, what, caps)


def parse_listing(document: Any, what: str, caps: Caps) -> tuple[str, list[UpstreamFile]]:
    if not isinstance(document, dict):
        raise RefusedError(f"{what}: the listing is not a JSON object")
    commit = document.get("sha")
    if not isinstance(commit, str) or not _SHA1_RE.match(commit):
        raise RefusedError(f"{what}: the listing names no commit id")
    siblings = document.get("siblings")
    if not isinstance(siblings, list) or not siblings:
        raise RefusedError(f"{what}: the listing has no files")
    if len(siblings) > caps.files:
        raise RefusedError(f"{what}: {len(siblings)} files listed, more than {caps.files}")
    files = [_listed_file(s, what, caps) for s in siblings]
    total = sum(f.size for f in files)
    if total > caps.repo_bytes:
        raise RefusedError(f"{what}: {total} bytes listed, more than {caps.repo_bytes}")
    _check_tree([f.path for f in files], what)
    return commit, files


def _listed_file(entry: Any, what: str, caps: Caps) -> UpstreamFile:
    if not isinstance(entry, dict) or not isinstance(entry.get("rfilename"), str):
        raise RefusedError(f"{what}: a listed file has no name")
    name = entry["rfilename"]
    try:
        path = safe_relpath(name, what).as_posix()
    except UnsafePathError as exc:
        raise RefusedError(exc.message) from None
    # The rule every path of a hub repo here is held to (uploads, /resolve, listings): a
    # name with a newline or a .cache folder would be imported, then never served.
    if problem := path_problem(path):
        raise RefusedError(f"{what}: {name!r} is not a path a repo may hold: {problem}")
    size = entry.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RefusedError(f"{what}: {name!r} is listed without a size")
    if size > caps.file_bytes:
        raise RefusedError(
            f"{what}: {name!r} is listed as {size} bytes, more than {caps.file_bytes}"
        )
    lfs = entry.get("lfs")
    if lfs is not None:
        sha256 = lfs.get("sha256") if isinstance(lfs, dict) else None
        if not isinstance(sha256, str) or not _SHA256_RE.match(sha256.lower()):
            raise RefusedError(f"{what}: {name!r} is an LFS file without a sha256")
        if lfs.get("size", size) != size:
            raise RefusedError(f"{what}: {name!r} is listed with two sizes")
        return UpstreamFile(path, size, sha256.lower(), None)
    blob_id = entry.get("blobId")
    if blob_id is not None and (not isinstance(blob_id, str) or not _SHA1_RE.match(blob_id)):
        raise RefusedError(f"{what}: {name!r} has a blob id that is not a git sha1")
    return UpstreamFile(path, size, None, blob_id)


def _check_tree(paths: list[str], what: str) -> None:
    """No path twice, and no file where another path needs a folder."""
    seen: set[str] = set()
    for path in paths:
        if path in seen:
            raise RefusedError(f"{what}: {path!r} is listed twice")
        seen.add(path)
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in seen:
                raise RefusedError(f"{what}: {path!r} is listed inside a file")


def download(egress: Egress, repo_id: str, commit: str, f: UpstreamFile, dest: Path) -> None:
    """``f`` into ``dest``: at most its listed size is read, and its hash must match."""
    what = f"{repo_id}@{commit}: {f.path}"
    url = f"{egress.policy.upstream}/{quote(repo_id)}/resolve/{commit}/{quote(f.path)}"
    response = egress.get(url, {"Accept-Encoding": "identity"})
    try:
        if response.status_code == 404:
            raise UpstreamFileMissingError(f"{what}: listed, but the upstream hub has no such file")
        _check_status(response, what)
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) != f.size:
            raise UpstreamIntegrityError(f"{what}: {declared} bytes sent, listed as {f.size}")
        sha256 = hashlib.sha256() if f.sha256 else None
        git = hashlib.sha1(b"blob %d\0" % f.size) if f.blob_id else None
        left = f.size
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "xb") as out:
            while chunk := _read(response, min(CHUNK, left + 1), what, decode=False):
                if len(chunk) > left:
                    raise UpstreamIntegrityError(f"{what}: more than the listed {f.size} bytes")
                left -= len(chunk)
                out.write(chunk)
                for hasher in (sha256, git):
                    if hasher is not None:
                        hasher.update(chunk)
    finally:
        response.close()
    if left:
        raise UpstreamIntegrityError(f"{what}: {f.size - left} bytes, listed as {f.size}")
    if sha256 is not None and sha256.hexdigest() != f.sha256:
        raise UpstreamIntegrityError(
            f"{what} has sha256 {sha256.hexdigest()}, listed as {f.sha256}"
        )
    if git is not None and git.hexdigest() != f.blob_id:
        raise UpstreamIntegrityError(
            f"{what} has git blob id {git.hexdigest()}, listed as {f.blob_id}"
        )


def _check_status(response: requests.Response, what: str) -> None:
    status = response.status_code
    if status == 200:
        return
    code = response.headers.get("X-Error-Code", "")[:64]
    if status == 404:
        raise UpstreamNotFoundError(f"{what}: not found on the upstream hub", code=code)
    if status in (401, 403):
        raise UpstreamRefusedAccessError(
            f"{what}: the upstream hub refused access ({status})", code=code
        )
    raise RegistryUnavailableError(f"{what}: the upstream hub answered {status}")


def _read(response: requests.Response, n: int, what: str, decode: bool = True) -> bytes:
    try:
        return response.raw.read(n, decode_content=decode) or b""
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise RegistryUnavailableError(
            f"{what}: the upstream hub's answer broke off: {exc}"
        ) from exc
