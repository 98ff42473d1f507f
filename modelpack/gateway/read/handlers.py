"""The read API's answers for a model a route has opened: model info (``revision``),
``tree``, ``paths-info`` and ``resolve`` (Range, sendfile from the node cache).

app.py routes the request, checks its method and repo id and opens the model with the
client's credentials (from the registry, else imported from the upstream); these answer.
"""

from __future__ import annotations

import functools
import select
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from ..core.http import ClosingFile, Replay, Request, Response, parse_range
from ..core.hub import (
    HubError,
    RepoFile,
    entry_not_found,
    path_entries,
    tree_entries,
    valid_file_path,
)
from .catalog import Catalog, model_document, select_fields
from .handoff import Handoff
from .models import Model
from .pullthrough import PullThrough
from .scans import repo_security, with_file_security
from .xet import XetReads


class Handlers:
    """``info``, ``tree``, ``paths_info`` and ``resolve``: each ``(request, model, *args)``."""

    def __init__(
        self, pulls: PullThrough, catalog: Catalog, handoff: Handoff, xet: XetReads
    ) -> None:
        self.pulls = pulls
        self.catalog = catalog
        self.handoff = handoff
        self.xet = xet

    def info(self, request: Request, model: Model) -> Response:
        files = self.pulls.listing(model)
        expand = request.query.get("expand") or request.query.get("expand[]")
        card = self.catalog.cards.card(model, files)  # cardData, tags: as the hub answers
        document = model_document(model, files, request.flag("blobs"), card)
        document["securityRepoStatus"] = repo_security(files)
        if expand:
            document = select_fields(document, expand)
        return Response.json(document)

    def tree(self, request: Request, model: Model, under: str) -> Response:
        files = self.pulls.listing(model)
        entries = tree_entries(
            files, model.root.digest, under.strip("/"), request.flag("recursive")
        )
        if entries is None:
            raise entry_not_found(model.repo_id, under, model.commit)
        entries = self.xet.with_hashes(with_file_security(entries, files), model.repo_id)
        return Response.json(entries, headers={"X-Repo-Commit": model.commit})

    def paths_info(self, request: Request, model: Model) -> Response:
        paths = request.form().get("paths") or []
        files = self.pulls.listing(model)
        entries = with_file_security(path_entries(files, model.root.digest, paths), files)
        entries = self.xet.with_hashes(entries, model.repo_id)
        return Response.json(entries, headers={"X-Repo-Commit": model.commit})

    def xet_read_token(self, request: Request, model: Model) -> Response:
        """hf_xet's read token: the model opened with these credentials (read/xet.py)."""
        return self.xet.read_token(request, model)

    def resolve(self, request: Request, model: Model, path: str) -> Response:
        f = self.pulls.listing(model, request.on_lane).get(path)
        # A listing from the manifest holds only valid paths (files_from_manifest); one
        # read from an unpacked tree is checked here.
        if f is None or (model.view.files is None and not valid_file_path(path)):
            raise entry_not_found(model.repo_id, path, model.commit)
        size, cached = f.size, None
        headers = _file_headers(model, f)
        headers.update(self.xet.headers(request, model, f.sha256, f.size))
        if size is None:  # only from an unpacked tree, where sizes are known
            raise HubError(502, f"size of {path} unknown")
        headers["Content-Length"] = str(size)
        if request.header("If-None-Match") in (f'"{f.etag}"', f.etag, f'W/"{f.etag}"'):
            return Response(304, headers, b"")
        if size and (cached := self.pulls.cached_path(model, f, request.on_lane)) is None:
            # A HEAD comes before every hub download: start pulling now, the GET waits less.
            self.pulls.prefetch(model)
            if f.raw and f.layer is not None:
                self.pulls.pull_blob(model, f.layer)
        if request.method == "HEAD":
            return Response(200, headers, b"")
        span = parse_range(request.header("Range"), size)
        status, (first, last) = (206, span) if span else (200, (0, size - 1))
        if span:
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        headers["Content-Length"] = str(last - first + 1)
        if size == 0:
            return Response(200, headers, b"")
        if cached is not None:
            if uri := self.handoff.uri(request, cached, span is not None):
                # The proxy answers the Range itself, from the same bytes (its status
                # and length are the ones here: the audit line's).
                headers.pop("Content-Range", None)
                return Response(status, headers, length=last - first + 1, source="proxy",
                                handoff=uri)  # fmt: skip
            if request.on_lane:  # bytes are sent by the threads (sendfile), never the lane
                raise Replay
            return _file_response(status, headers, cached, first, last, "cache")
        # Not a byte before the whole file is verified (pullthrough.py says why).
        gone = _client_gone(request.environ)
        if f.raw and f.layer is not None:
            local = self.pulls.verified_blob(model, f.layer, gone)
        elif f.layer is not None:
            local = self.pulls.unpack_one(model, f, gone)
        else:
            raise HubError(502, f"{path} is not in the node cache")
        return _file_response(status, headers, local, first, last, "registry")


def _client_gone(environ: dict[str, Any]) -> Callable[[], bool]:
    """Whether the client has closed its connection (gunicorn's socket; else never)."""
    sock = environ.get("gunicorn.socket")

    def gone() -> bool:
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    return gone


def _file_headers(model: Model, f: RepoFile) -> dict[str, str]:
    return dict(_fixed_headers(model.commit, f.path, f.etag, f.sha256, f.size))


@functools.lru_cache(maxsize=4096)  # the same for every download of a file: made once
def _fixed_headers(
    commit: str, path: str, etag: str, sha256: str | None, size: int | None
) -> tuple[tuple[str, str], ...]:
    name = path.rsplit("/", 1)[-1]
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_")
    headers = {
        "X-Repo-Commit": commit,
        "ETag": f'"{etag}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{ascii_name}\";",
        "Cache-Control": "private, max-age=0",
        "Vary": "Authorization",
    }
    if sha256 and size is not None:
        # What the hub sends for LFS files: the client names its cache blob by this.
        headers["X-Linked-Etag"] = f'"{sha256}"'
        headers["X-Linked-Size"] = str(size)
    return tuple(headers.items())


def _file_response(
    status: int, headers: dict[str, str], path: Any, first: int, last: int, source: str
) -> Response:
    file = ClosingFile(path, "r")
    return Response(
        status, headers, file=file, offset=first, length=last - first + 1, source=source
    )
