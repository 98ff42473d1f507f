"""A registry of the tests' own that lies on purpose.

It speaks just enough of the distribution API for a pull (``/v2/``, manifests
and blobs by GET/HEAD) and serves whatever bytes a test puts in it: a blob
whose bytes differ from its digest, a longer blob, a manifest that hashes to
something else than asked for, a lying ``Docker-Content-Digest``, an
oversized manifest, or nothing at all for a while (a stalled server).  Listings
(``tags/list``, ``referrers/<digest>``) come in pages linked by a ``Link`` header, to
itself or, as ``next_link``, wherever a test says; with ``basic_auth`` it answers 401
until a request carries an Authorization header, and it records every one it gets.

Content goes in through :meth:`push` (it is a write-only
:class:`~modelpack.oci.target.Target`), so ``helpers.make_artifact`` builds
artifacts here exactly as it does in a local store; a test then corrupts
``blobs`` or ``manifests`` by hand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from modelpack.oci.spec import MANIFEST_MEDIA_TYPES, Descriptor

from .serving import QuietHandler, serve, shutdown


@dataclass
class HostileRegistry:
    manifests: dict[str, bytes] = field(default_factory=dict)  # tag or digest -> body served
    manifest_types: dict[str, str] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)  # digest -> body served
    content_digest: dict[str, str] = field(default_factory=dict)  # reference -> header to claim
    stall: float = 0.0  # seconds to sit on every request before answering
    ping_body: bytes = b"{}"  # what GET /v2/ answers
    not_found_body: bytes = b'{"errors":[{"code":"NOT_FOUND","message":"not here"}]}'
    requests: list[str] = field(default_factory=list)
    # listing ("tags/list", "referrers/sha256:...") -> (Content-Type, one body per page)
    listings: dict[str, tuple[str, list[bytes]]] = field(default_factory=dict)
    next_link: str | None = None  # the Link every listing page sends, instead of its next page
    basic_auth: bool = False
    authorizations: list[str] = field(default_factory=list)  # every Authorization received

    # -- filling it (the Target calls make_artifact uses) ---------------------

    def describe(self) -> str:
        return "hostile registry"

    def push(self, desc: Descriptor, content, reference: str | None = None) -> None:  # noqa: ANN001
        data = content.read()
        if desc.media_type in MANIFEST_MEDIA_TYPES:
            for key in filter(None, (desc.digest, reference)):
                self.manifests[key] = data
                self.manifest_types[key] = desc.media_type
                self.content_digest.setdefault(key, desc.digest)
        else:
            self.blobs[desc.digest] = data

    # -- serving --------------------------------------------------------------

    def start(self) -> HostileRegistry:
        registry = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802
                registry.requests.append(f"{self.command} {self.path}")
                if authorization := self.headers.get("Authorization"):
                    registry.authorizations.append(authorization)
                elif registry.basic_auth:
                    headers = {"WWW-Authenticate": 'Basic realm="hostile"'}
                    return self.answer(401, b"", headers)
                if registry.stall:
                    time.sleep(registry.stall)
                path, _, query = self.path.partition("?")
                if listing := registry.listing_page(path, query):
                    return self.answer(200, *listing)
                if path in ("/v2", "/v2/"):
                    headers = {"Content-Type": "application/json"}
                    return self.answer(200, registry.ping_body, headers)
                _, _, rest = path.partition("/v2/")
                name, kind, reference = rest.rpartition("/manifests/")
                if kind and reference in registry.manifests:
                    headers = {
                        "Content-Type": registry.manifest_types.get(reference, ""),
                        "Docker-Content-Digest": registry.content_digest.get(reference, ""),
                    }
                    return self.answer(200, registry.manifests[reference], headers)
                name, kind, digest = rest.rpartition("/blobs/")
                if kind and digest in registry.blobs:
                    headers = {"Content-Type": "application/octet-stream"}
                    return self.answer(200, registry.blobs[digest], headers)
                headers = {"Content-Type": "application/json"}
                return self.answer(404, registry.not_found_body, headers)

            do_HEAD = do_GET  # noqa: N815

        self._server = serve(Handler)
        return self

    def listing_page(self, path: str, query: str) -> tuple[bytes, dict[str, str]] | None:
        """(body, headers) of the page of a listing ``?page=N`` asks for, else None."""
        for key, (content_type, pages) in self.listings.items():
            if path.endswith(f"/{key}"):
                number = int(query.removeprefix("page=") or 0) if query.startswith("page") else 0
                headers = {"Content-Type": content_type}
                if self.next_link or number + 1 < len(pages):
                    link = self.next_link or f"{path}?page={number + 1}"
                    headers["Link"] = f'<{link}>; rel="next"'
                return pages[min(number, len(pages) - 1)], headers
        return None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        shutdown(self._server)
