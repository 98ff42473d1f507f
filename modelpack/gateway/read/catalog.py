"""Discovery: ``GET /api/models`` (search, author, filter, sort, pages) from the registry.

Which repositories exist comes from the registry's ``/v2/_catalog`` under the gateway's
namespace, read with the gateway's own credentials (the catalog is names only) and kept
for CATALOG_TTL seconds.  Which of them a client sees is the registry's answer for that
client: a repository is listed only when the client's own credentials can list its tags
(kept per credential for ACCESS_TTL seconds), and its entry (sha, tags, dates) comes from
the manifest the client's credentials resolve, as for every other route.

A registry that refuses the catalog to the gateway lists nothing: ``Catalog.repositories``
says why, the page shows it, the log warns once per TTL.  A Harbor (asked once, at its
``/api/v2.0/systeminfo``) is listed through its project API instead (harborlist.py): the
names it lists to the gateway's credentials and, kept per credential, to the client's.  What huggingface_hub sends (``HfApi.list_models``): ``search``,
``author``, ``filter`` (repeated), ``sort``, ``limit``, ``expand`` (repeated), ``full``,
``cardData``; it follows ``Link: <URL>; rel="next"`` with absolute URLs and stops after
``limit`` items.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from ...errors import AuthenticationError, ModelpackError, RegistryError
from ...registry.client import RegistryClient, RegistryRepository, connect
from ...registry.transport import raise_for_status
from ..core.config import GatewayConfig
from ..core.http import Request, Response
from ..core.hub import (
    HubError,
    RepoFile,
    canonical_repo_id,
    is_dataset,
    shown_repo_id,
    valid_repo_id,
)
from ..state.access import MAX_CLIENTS, Clients
from ..state.ttlmap import TTLMap
from .card import Card, Cards
from .harborlist import harbor_repositories, is_harbor
from .models import Model, Resolver
from .pullthrough import PullThrough

log = logging.getLogger("modelpack.gateway")
CATALOG_TTL = 30.0
ACCESS_TTL = 30.0
CATALOG_PAGE = 1000  # repositories asked for per _catalog page
PAGE_SIZE = 1000  # the hub's largest page, and its default
MAX_REPOSITORIES = 10_000  # read from the catalog at most
CHECK_WORKERS = 8  # registry requests in parallel for one listing
WALK_STEP = 64  # repositories checked before looking whether the page is full
MAX_KEPT = 50_000  # (credential, repository) answers kept, each for ACCESS_TTL
SORT_KEYS = ("id", "lastModified", "createdAt", "downloads", "likes", "trendingScore")
# What a hub listing item carries without expand (huggingface_hub's ModelInfo reads them).
LIST_FIELDS = (
    "_id", "id", "modelId", "author", "sha", "lastModified", "createdAt", "private",
    "gated", "disabled", "downloads", "likes", "trendingScore", "tags", "library_name",
    "pipeline_tag",
)  # fmt: skip


@dataclass(frozen=True)
class Repositories:
    """The catalog under the namespace: repo ids, or why there are none."""

    ids: tuple[str, ...]
    available: bool = True
    reason: str = ""


@dataclass(frozen=True)
class Entry:
    """One repository as one client may see it."""

    repo_id: str
    tags: tuple[str, ...]  # the user tags the client's credentials listed
    model: Model | None = None  # the default revision's manifest, None if not opened
    card: Card | None = None  # its README's card, when its files are known without a pull

    @property
    def revision(self) -> str:
        return default_revision(self.tags)


@dataclass(frozen=True)
class ListQuery:
    search: str = ""
    author: str = ""
    filters: tuple[str, ...] = ()
    sort: str = ""
    descending: bool = False
    limit: int = PAGE_SIZE
    offset: int = 0
    expand: tuple[str, ...] = ()
    full: bool = False
    card_data: bool = False
    datasets: bool = False  # /api/datasets: the datasets, else the models

    @classmethod
    def from_request(cls, request: Request, datasets: bool = False) -> ListQuery:
        q = request.query

        def last(name: str) -> str:
            return (q.get(name) or [""])[-1].strip()

        sort = last("sort")
        if sort and sort not in SORT_KEYS:
            raise HubError(400, f"Invalid sort {sort!r}: one of {', '.join(SORT_KEYS)}")
        try:
            limit = int(last("limit") or PAGE_SIZE)
        except ValueError:
            raise HubError(400, "limit must be a number") from None
        direction = last("direction")
        return cls(
            search=last("search").lower(),
            author=last("author").lower(),
            filters=tuple(f for f in (*q.get("filter", []), *q.get("filter[]", [])) if f),
            sort=sort,
            # The hub sorts descending ("most downloads first"), names ascending;
            # direction=1 / -1 says otherwise.
            descending=direction == "-1" if sort in ("", "id") else direction != "1",
            limit=max(1, min(limit, PAGE_SIZE)),
            offset=_cursor_offset(last("cursor")),
            expand=tuple(e for e in (*q.get("expand", []), *q.get("expand[]", [])) if e),
            full=request.flag("full"),
            card_data=request.flag("cardData"),
            datasets=datasets,
        )


def _cursor_offset(cursor: str) -> int:
    if not cursor:
        return 0
    try:
        document = json.loads(base64.urlsafe_b64decode(cursor.encode() + b"=="))
        offset = int(document["offset"])
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError, binascii.Error):
        raise HubError(400, "invalid cursor") from None
    return max(0, offset)


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode().rstrip("=")


def default_revision(tags: tuple[str, ...] | list[str]) -> str:
    """What a listing shows for a repository: main, else latest (what ``main`` falls
    back to), else the highest tag in natural order (v10 after v9)."""
    for tag in ("main", "latest"):
        if tag in tags:
            return tag
    return max(tags, key=_natural) if tags else "main"


def _natural(tag: str) -> list[Any]:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", tag)]


def hub_time(text: str | None) -> str | None:
    """An RFC 3339 time as the hub writes it (``...T...:..:...000Z``, what
    huggingface_hub's parse_datetime reads); None when it is no time."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def model_tags(model: Model, card: Card | None = None) -> list[str]:
    """The hub-style tags a model has: format, family, licenses, languages (from its
    config), and the card's ``tags`` / ``library_name`` / ``base_model`` when read."""
    tags: list[str] = []
    config = model.view.config
    if config is not None:
        tags += [t for t in (config.config.format, config.descriptor.family) if t]
        tags += [f"license:{lic.lower()}" for lic in config.descriptor.licenses]
        if config.config.capabilities is not None:
            tags += list(config.config.capabilities.languages)
    if card is not None:
        data = card.data
        tags += [str(t) for t in _as_list(data.get("tags"))]
        tags += [str(t) for t in _as_list(data.get("library_name"))]
        tags += [f"base_model:{b}" for b in _as_list(data.get("base_model"))]
    return list(dict.fromkeys(tags))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return [v for v in value if v is not None] if isinstance(value, list) else [value]


def model_document(
    model: Model, files: dict[str, RepoFile] | None, blobs: bool, card: Card | None = None
) -> dict[str, Any]:
    """What the hub says of a model (``/api/models/{repo}`` and each listing item)."""
    config = model.view.config
    descriptor = config.descriptor if config else None
    created = hub_time(descriptor.created_at if descriptor else None)
    shown = shown_repo_id(model.repo_id)
    document: dict[str, Any] = {
        **repo_ids_document(model.repo_id),
        "_id": model.commit,
        "author": shown.split("/")[0] if "/" in shown else None,
        "sha": model.commit,
        "lastModified": created,
        "createdAt": created,
        "private": False,
        "disabled": False,
        "gated": False,
        "downloads": 0,
        "likes": 0,
        "trendingScore": 0,
        "tags": model_tags(model, card),
        "library_name": card.data.get("library_name") if card else None,
        "pipeline_tag": card.data.get("pipeline_tag") if card else None,
        "modelpack": {
            "reference": model.key,
            "digest": model.root.digest,
            "name": descriptor.name if descriptor else None,
        },
    }
    if card is not None:
        document["cardData"] = card.data
    if files is not None:
        document["siblings"] = [f.sibling(blobs) for _, f in sorted(files.items())]
        document["usedStorage"] = sum(f.size or 0 for f in files.values())
    return document


def repo_ids_document(repo_id: str) -> dict[str, Any]:
    """The ids the hub gives a repo: ``modelId`` too for a model."""
    shown = shown_repo_id(repo_id)
    if is_dataset(repo_id):
        return {"_id": shown, "id": shown}
    return {"_id": shown, "id": shown, "modelId": shown}


def select_fields(document: dict[str, Any], expand: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``?expand=a&expand=b``: only those (and the ids), as the hub answers."""
    return {k: v for k, v in document.items() if k in ("_id", "id", *expand)}


@dataclass
class _Timed:
    at: float
    value: Any = field(default=None)


class Catalog:
    def __init__(
        self, config: GatewayConfig, clients: Clients, resolver: Resolver, pulls: PullThrough
    ) -> None:
        self.config = config
        self.clients = clients
        self.resolver = resolver
        self.pulls = pulls
        self.cards = Cards(pulls)
        self._own: RegistryClient | None = None
        self._repositories: _Timed | None = None
        self._harbor: bool | None = None  # is the registry a Harbor? (asked once)
        self._listed: TTLMap[str, tuple[str, ...]] = TTLMap(MAX_CLIENTS, CATALOG_TTL)
        # (credential, repo) -> its user tags; -> its Entry
        self._tags: TTLMap[tuple[str, str], tuple[str, ...]] = TTLMap(MAX_KEPT, ACCESS_TTL)
        self._opened: TTLMap[tuple[str, str], Entry] = TTLMap(MAX_KEPT, ACCESS_TTL)
        self._lock = threading.Lock()
        self._reading = threading.Lock()

    # -- which repositories exist ---------------------------------------------------

    def repositories(self, authorization: str | None = None) -> Repositories:
        """The names the gateway's credentials list; on Harbor, with those its project
        API lists to the client's credentials (``authorization``)."""
        own = self._own_repositories()
        if not self._harbor or not authorization or not own.available:
            return own
        key, client = self.clients.for_header(authorization)
        ids = self._listed.get(key)
        if ids is None:
            try:
                ids = self._valid(harbor_repositories(client, self.config.namespace,
                                                      MAX_REPOSITORIES))  # fmt: skip
            except ModelpackError as exc:
                log.warning("listing Harbor's repositories for a client failed: %s", exc)
                ids = ()
            self._listed.set(key, ids)
        return Repositories(tuple(sorted(set(own.ids) | set(ids)))[:MAX_REPOSITORIES])

    def _own_repositories(self) -> Repositories:
        with self._lock:
            known = self._repositories
        if known is not None and time.monotonic() - known.at < CATALOG_TTL:
            return known.value
        with self._reading:  # one catalog read at a time, however many listings ask
            with self._lock:
                known = self._repositories
            if known is not None and time.monotonic() - known.at < CATALOG_TTL:
                return known.value
            found = self._read_catalog()
            with self._lock:
                self._repositories = _Timed(time.monotonic(), found)
            return found

    def _read_catalog(self) -> Repositories:
        if self._own is None:
            # The gateway's own credentials (docker config, MODELPACK_USERNAME/PASSWORD).
            self._own = connect(self.config.host, self.config.settings)
        if self._harbor is None:
            try:
                self._harbor = is_harbor(self._own)
            except ModelpackError as exc:  # unreachable now: asked again next time
                log.info("asking whether the registry is a Harbor: %s", exc)
        if self._harbor:
            try:
                names = harbor_repositories(self._own, self.config.namespace, MAX_REPOSITORIES)
            except ModelpackError as exc:
                log.warning("listing Harbor's projects failed, /api/models lists nothing: %s", exc)
                return Repositories((), False, "the Harbor behind this gateway did not list "
                                    "its projects (/api/v2.0/projects failed)")  # fmt: skip
            return Repositories(self._valid(names))
        prefix = f"{self.config.namespace}/" if self.config.namespace else ""
        what = "listing the registry's repositories (/v2/_catalog)"
        ids: list[str] = []
        try:
            pages = self._own.pages(f"/v2/_catalog?n={CATALOG_PAGE}", ("registry:catalog:*",), what)
            for response in pages:
                raise_for_status(response, what)
                names = _catalog_page(response)
                ids += [n for n in names if n.startswith(prefix)]
                if len(ids) >= MAX_REPOSITORIES:
                    break
        except ModelpackError as exc:
            log.warning("%s failed, /api/models lists nothing: %s", what, exc)
            return Repositories((), False, "the registry does not let this gateway list its "
                                "repositories (its /v2/_catalog refused)")  # fmt: skip
        return Repositories(self._valid(ids))

    def _valid(self, names: Iterable[str]) -> tuple[str, ...]:
        """Full registry names under the namespace -> the hub repo ids they are, sorted."""
        prefix = f"{self.config.namespace}/" if self.config.namespace else ""
        ids = [n[len(prefix) :] for n in names if n.startswith(prefix)]
        valid = [i for i in ids if valid_repo_id(i) and canonical_repo_id(i) == i]
        return tuple(sorted(dict.fromkeys(valid))[:MAX_REPOSITORIES])

    # -- which of them this client may read -------------------------------------------

    def entries(
        self, repo_ids: list[str], authorization: str | None, wanted: int | None = None
    ) -> list[Entry]:
        """Those of ``repo_ids`` the client's credentials can read, with their tags, in
        order; the walk stops once ``wanted`` are found (a page needs no more)."""
        key, client = self.clients.for_header(authorization)
        found: list[Entry] = []
        with ThreadPoolExecutor(CHECK_WORKERS) as pool:
            for start in range(0, len(repo_ids), WALK_STEP):
                step = repo_ids[start : start + WALK_STEP]
                # One token for the step's repositories, not one each (on Harbor a token
                # request with a password costs its core 0.1 s of CPU).
                client.auth.prefetch([
                    f"repository:{self.config.repository(r)}:pull"
                    for r in step if self._tags.get((key, r)) is None
                ])  # fmt: skip
                tags = pool.map(lambda r: self._client_tags(key, client, r), step)
                found += [Entry(r, t) for r, t in zip(step, tags, strict=True) if t]
                if wanted is not None and len(found) >= wanted:
                    break
        return found

    def _client_tags(self, key: str, client: RegistryClient, repo_id: str) -> tuple[str, ...]:
        known = self._tags.get((key, repo_id))
        if known is not None:
            return known
        try:
            found = tuple(RegistryRepository(client, self.config.repository(repo_id)).user_tags())
        except ModelpackError:  # refused, gone, or the registry failed: not listed
            found = ()
        self._tags.set((key, repo_id), found)
        return found

    def opened(self, entries: list[Entry], authorization: str | None) -> list[Entry]:
        """The entries with their default revision's manifest (checked with the
        client's credentials by the resolver, as every route is) and card (for its tags)."""

        if not entries:  # (and so no credential to parse)
            return []
        key, _ = self.clients.for_header(authorization)

        def open_one(entry: Entry) -> Entry:
            known = self._opened.get((key, entry.repo_id))
            if known is not None and known.tags == entry.tags:
                return known
            try:
                model = self.resolver.open(entry.repo_id, entry.revision, authorization)
            except (ModelpackError, HubError) as exc:
                log.info("listing %s: %s not opened: %s", entry.repo_id, entry.revision, exc)
                return entry
            files = self.known_files(model)
            card = self.cards.card(model, files) if files is not None else None
            opened = Entry(entry.repo_id, entry.tags, model, card)
            self._opened.set((key, entry.repo_id), opened)
            return opened

        with ThreadPoolExecutor(CHECK_WORKERS) as pool:
            return list(pool.map(open_one, entries))

    # -- the listing -------------------------------------------------------------------

    def search(self, query: ListQuery, authorization: str | None) -> tuple[list[Entry], bool]:
        """(this page's entries, whether there is a next page).  The client's credentials
        are checked first (one round trip; 401 if refused), then the catalog is walked
        with them: in id order only as far as the page needs."""
        self._check(authorization)
        ids = [
            i
            for i in self.repositories(authorization).ids
            if is_dataset(i) == query.datasets
            and query.search in (shown := shown_repo_id(i))
            and (not query.author or shown.split("/")[0] == query.author)
        ]
        needs_models = bool(query.filters) or query.sort in ("lastModified", "createdAt")
        if query.descending and query.sort in ("", "id"):
            ids.reverse()  # (the catalog's ids are sorted; downloads etc. keep that order)
        # In the ids' order, the page and one more (is there a next page?) suffice.
        wanted = None if needs_models else query.offset + query.limit + 1
        entries = self.entries(ids, authorization, wanted)
        if needs_models:
            entries = [e for e in self.opened(entries, authorization) if e.model is not None]
            tags = set(query.filters)
            entries = [e for e in entries if tags <= set(model_tags(e.model, e.card))]  # type: ignore[arg-type]
        if query.sort in ("lastModified", "createdAt"):
            entries.sort(key=lambda e: (_created(e), e.repo_id), reverse=query.descending)
        page = entries[query.offset : query.offset + query.limit]
        if not needs_models:
            page = self.opened(page, authorization)
        return page, query.offset + query.limit < len(entries)

    def _check(self, authorization: str | None) -> None:
        try:
            self.clients.check(authorization)
        except AuthenticationError:
            raise HubError(401, "Invalid credentials in Authorization header") from None
        except ModelpackError as exc:
            log.warning("checking a listing's credentials: %s", exc)
            raise HubError(502, "the registry behind this gateway is unavailable; "
                           "try again later") from None  # fmt: skip

    def documents(self, query: ListQuery, page: list[Entry]) -> list[dict[str, Any]]:
        out = []
        want_card = query.card_data or "cardData" in query.expand
        want_files = query.full or "siblings" in query.expand
        for entry in page:
            if entry.model is None:
                document = repo_ids_document(entry.repo_id)
            else:
                files = self.known_files(entry.model) if want_files else None
                document = model_document(entry.model, files, False, entry.card)
                if not want_card:
                    document.pop("cardData", None)
            if query.expand:
                document = select_fields(document, query.expand)
            elif not query.full:
                document = {k: v for k, v in document.items() if k in (*LIST_FIELDS, "cardData")}
            out.append(document)
        return out

    def known_files(self, model: Model) -> dict[str, RepoFile] | None:
        """The files, when known without pulling the model (a listing never pulls one)."""
        if model.view.files is not None or self.pulls.tree(model) is not None:
            return self.pulls.listing(model)
        return None


def _created(entry: Entry) -> str:
    config = entry.model.view.config if entry.model else None
    return hub_time(config.descriptor.created_at if config else None) or ""


def _catalog_page(response: Any) -> list[str]:
    try:
        document = response.json()
    except (ValueError, RecursionError):
        document = None
    names = document.get("repositories") if isinstance(document, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RegistryError("the registry's /v2/_catalog answer is not a repository list")
    return names


def next_link(request: Request, query: ListQuery, config: GatewayConfig) -> str:
    """The absolute URL of the next page (huggingface_hub requests it as is)."""
    params = [(k, v) for k, values in request.query.items() if k != "cursor" for v in values]
    params.append(("cursor", _cursor(query.offset + query.limit)))
    return f"{request.base_url(config)}{request.path}?{urlencode(params)}"


def list_models(catalog: Catalog, request: Request, datasets: bool = False) -> Response:
    """``GET /api/models`` (``/api/datasets``): one page, and a ``Link`` to the next when
    there is one."""
    if request.method not in ("GET", "HEAD"):
        raise HubError(405, f"{request.method} is not allowed here", None, {"Allow": "GET, HEAD"})
    query = ListQuery.from_request(request, datasets)
    page, more = catalog.search(query, request.header("Authorization"))
    headers = {"Vary": "Authorization", "Cache-Control": "private, max-age=0"}
    if more:
        headers["Link"] = f'<{next_link(request, query, catalog.config)}>; rel="next"'
    return Response.json(catalog.documents(query, page), headers=headers)
