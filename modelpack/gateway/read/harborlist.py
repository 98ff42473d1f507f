"""Which repositories a Harbor shows: its project and repository API, for discovery.

Harbor gives ``/v2/_catalog`` to system administrators only, but its own API lists what
each account may see: ``GET /api/v2.0/projects`` (public projects, the projects it is a
member of; all for an admin) and ``GET /api/v2.0/projects/{p}/repositories``.  A robot
account may list projects but not their repositories (403): those it learns from the
gateway's own listing, and the per-repository tag check (catalog.py) decides as always.
Credentials go to the registry's own origin only (the transport), as Basic, as Harbor's
API takes them; an identity token is no password, so such a client lists anonymously.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from ...errors import RegistryError
from ...registry.client import RegistryClient

HARBOR_PAGE = 100  # Harbor's largest page_size
MAX_PROJECTS = 500  # projects read per listing at most
MAX_PAGES = 100  # pages of one list read at most (10,000 names)
WORKERS = 8


def is_harbor(client: RegistryClient) -> bool:
    """Harbor answers ``/api/v2.0/systeminfo`` to anyone, with its ``auth_mode``
    (what ``modelpack doctor`` reads).  ModelpackError when the registry cannot be
    asked (unreachable): the caller asks again later."""
    with client.transport.send("GET", "/api/v2.0/systeminfo", retry=False) as response:
        if response.status_code != 200 or len(response.content) > 64 * 1024:
            return False
        try:
            info = response.json()
        except (ValueError, RecursionError):
            return False
    return isinstance(info, dict) and "auth_mode" in info


def _headers(client: RegistryClient) -> dict[str, str]:
    credentials = client.auth.credentials
    if credentials is not None and credentials.username and credentials.password:
        return {"Authorization": credentials.basic_header()}
    return {}


def _pages(client: RegistryClient, path: str, what: str, limit: int) -> list[dict[str, Any]] | None:
    """The items of a paged Harbor list (at most ``limit``); None when refused (401/403)."""
    items: list[dict[str, Any]] = []
    headers = _headers(client)
    for page in range(1, MAX_PAGES + 1):
        url = f"{path}?page={page}&page_size={HARBOR_PAGE}"
        with client.transport.send("GET", url, headers=headers) as response:
            if response.status_code in (401, 403):
                return None
            if response.status_code != 200:
                raise RegistryError(f"{what}: Harbor answered {response.status_code}")
            try:
                found = response.json()
            except (ValueError, RecursionError):
                found = None
        if not isinstance(found, list) or not all(isinstance(i, dict) for i in found):
            raise RegistryError(f"{what}: Harbor's answer is not a list")
        items += found
        if len(found) < HARBOR_PAGE or len(items) >= limit:
            break
    return items[:limit]


def harbor_repositories(client: RegistryClient, namespace: str, limit: int) -> list[str]:
    """Full repository names (``project/...``) under ``namespace`` that Harbor lists to
    ``client``'s credentials, at most ``limit``.  RegistryError when Harbor fails."""
    what = "listing Harbor's projects (/api/v2.0/projects)"
    if namespace:
        projects = [namespace.split("/")[0]]
    else:
        listed = _pages(client, "/api/v2.0/projects", what, MAX_PROJECTS) or []
        projects = [p["name"] for p in listed if isinstance(p.get("name"), str)]
    prefix = f"{namespace}/" if namespace else ""

    def names(project: str) -> list[str]:
        path = f"/api/v2.0/projects/{quote(project, safe='')}/repositories"
        found = _pages(client, path, f"listing Harbor project {project}'s repositories", limit)
        return [r["name"] for r in found or [] if isinstance(r.get("name"), str)]

    out: list[str] = []
    with ThreadPoolExecutor(WORKERS) as pool:
        for found in pool.map(names, projects):
            out += [n for n in found if n.startswith(prefix)]
            if len(out) >= limit:
                break
    return out[:limit]
