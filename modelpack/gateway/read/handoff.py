"""Cached downloads handed to the nginx in front (``serve --accel-redirect PREFIX``).

The gateway still decides every download (credentials, revision, the file's seal in
the node cache); for a file already there it answers nginx with ``X-Accel-Redirect:
PREFIX<path under the gateway's home>`` and no body, and nginx (docs/gateway.md,
Downloads sent by nginx: an ``internal`` location for the home's ``models/`` and
``store/blobs/`` only) sends the bytes with sendfile, the Range included. Python then
spends a small header per download instead of the file.

A download is handed off only when nginx would answer it exactly as the gateway does,
so that the client, the audit line and the metrics agree:

- the peer is a ``--trusted-proxy`` *and* sent ``X-Modelpack-Accel-Redirect: PREFIX``
  (which the handoff nginx sets; a balancer that merely forwards, also a trusted proxy
  for ``X-Forwarded-For``, does not, and gets the bytes);
- no conditional header (``If-Range``, ``If-Match``, ``If-None-Match``,
  ``If-Modified-Since``, ``If-Unmodified-Since``): nginx would judge them by its own
  view of the file;
- no ``Range``, or one plain range the gateway answered as a range (nginx parses
  ``Bytes=``, spaces, reversed and several ranges otherwise);
- a path of characters nginx needs no escaping for, in ``models/`` or ``store/blobs/``.

Anything else is sent by the gateway as before."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from ..core.http import Request
from ..state.audit import address_of, networks, within

REQUEST_HEADER = "X-Modelpack-Accel-Redirect"  # set by the handoff nginx to the prefix
CONDITIONAL = ("If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")
_PLAIN_RANGE = re.compile(r"bytes=(?:\d{1,18}-\d{0,18}|-\d{1,18})")
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")
MAPPED = ("models/", "store/blobs/")  # what the docs' nginx location maps, nothing else


class Handoff:
    """Whether, and with which URI, a cached file is sent by the nginx in front."""

    def __init__(self, prefix: str | None, home: Path, trusted: tuple[str, ...]) -> None:
        self.prefix = prefix
        self.home = Path(os.path.abspath(home))  # as the node cache names its files
        self.trusted = networks(trusted)

    def uri(self, request: Request, cached: Path, ranged: bool) -> str | None:
        """``X-Accel-Redirect``'s value for ``cached``, or None: the gateway sends it.
        ``ranged``: the gateway answers this request's Range as a range."""
        if not self.prefix or request.header(REQUEST_HEADER) != self.prefix:
            return None
        if not within(address_of(str(request.environ.get("REMOTE_ADDR") or "")), self.trusted):
            return None
        if any(request.header(name) is not None for name in CONDITIONAL):
            return None
        asked = request.header("Range")
        if asked is not None and not (ranged and _PLAIN_RANGE.fullmatch(asked)):
            return None
        relative = _mapped(self.home, cached)
        return None if relative is None else self.prefix + relative


@functools.lru_cache(maxsize=4096)  # a pure function of two paths, asked per download
def _mapped(home: Path, cached: Path) -> str | None:
    """``cached`` relative to ``home`` if the nginx location maps it as it is (in ``MAPPED``,
    plain characters only), else None."""
    try:
        relative = Path(os.path.abspath(cached)).relative_to(home).as_posix()
    except ValueError:  # outside the home (a cache configured elsewhere)
        return None
    if not relative.startswith(MAPPED) or not _PLAIN_PATH.fullmatch(relative):
        return None
    return relative
