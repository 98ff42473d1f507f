"""Writes a browser was made to send from another site are refused (cross-site request forgery).

The web page's sign-in makes a browser hold Basic credentials for the gateway, and a
browser attaches them to a form another site makes it post, or to a ``fetch()`` it
makes with ``credentials: "include"``: without a check, a page a pusher visits could
commit, create repos, branches and tags in their name.  Browsers mark such requests,
so a state-changing request is refused when

* ``Sec-Fetch-Site`` is ``cross-site`` or ``same-site`` (another origin on the same
  site, e.g. another port: still not this gateway), or
* ``Origin`` is there and is not this gateway's own (``--public-url``, or the base URL
  it answers this request with; ``null`` included).

Clients that are not browsers (huggingface_hub, hf_xet, git-lfs, curl) send neither
header and are not affected.  As a second wall, JSON and NDJSON bodies must say so in
``Content-Type`` (``http.JSON_TYPES``, ``http.NDJSON_TYPES``): the types a form can
send (``text/plain``, ``application/x-www-form-urlencoded``, ``multipart/form-data``)
and a body without one are what a browser sends cross-site without asking first.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .config import GatewayConfig, browser_origin
from .http import Request
from .hub import HubError

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
REFUSED = (
    "a browser sent this request for a page on another site; writes are only "
    "accepted from clients (huggingface_hub, git, curl) or from this gateway's own pages"
)


def refuse_cross_site(request: Request, config: GatewayConfig) -> None:
    """Raise 403 for a state-changing request a browser marks as coming from elsewhere."""
    if request.method in SAFE_METHODS:
        return
    site = (request.header("Sec-Fetch-Site") or "").strip().lower()
    if site in ("cross-site", "same-site"):
        raise HubError(403, REFUSED)
    sent = request.header("Origin")
    if sent is not None and _origin(sent) not in own_origins(request, config):
        raise HubError(403, REFUSED)


def own_origins(request: Request, config: GatewayConfig) -> set[str | None]:
    return {_origin(url) for url in (*config.public_url, request.base_url(config))}


def _origin(text: str) -> str | None:
    parts = urlsplit(text.strip())
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    return browser_origin(parts.scheme, parts.netloc)
