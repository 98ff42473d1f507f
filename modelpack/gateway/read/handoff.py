"""Cached downloads handed to the proxy in front (``serve --accel-redirect PREFIX``).

The gateway still decides every download (credentials, revision, the file's seal in
the node cache); for a file already there it answers a trusted proxy with
``X-Accel-Redirect: PREFIX<path under the gateway's home>`` and no body, and the proxy
(nginx: ``location PREFIX { internal; alias HOME/; }``) sends the bytes with sendfile,
Range included. Python then spends a small header per download instead of the file:
docs/gateway.md, Downloads sent by nginx, has the proxy's configuration and the cost.

Only a peer named by ``--trusted-proxy`` gets the header (anyone else gets the bytes, so
a client that reaches the gateway directly still downloads), and only for a path of
characters nginx needs no escaping for (the blob store's digests always are; a model
file with other characters in its name is sent by the gateway)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..state.audit import address_of, networks

_PLAIN_PATH = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")


class Handoff:
    """Whether, and with which URI, a cached file is sent by the proxy in front."""

    def __init__(self, prefix: str | None, home: Path, trusted: tuple[str, ...]) -> None:
        self.prefix = prefix
        self.home = home.resolve()
        self.trusted = networks(trusted)

    def uri(self, environ: dict[str, Any], cached: Path) -> str | None:
        """``X-Accel-Redirect``'s value for ``cached``, or None: the gateway sends it."""
        if not self.prefix:
            return None
        peer = address_of(str(environ.get("REMOTE_ADDR") or ""))
        if peer is None or not any(peer in network for network in self.trusted):
            return None
        try:
            relative = cached.relative_to(self.home).as_posix()
        except ValueError:  # outside the home (a cache configured elsewhere)
            return None
        return self.prefix + relative if _PLAIN_PATH.fullmatch(relative) else None
