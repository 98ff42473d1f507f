"""Warm Dragonfly's P2P cache with a model before the nodes pull it (``modelpack preheat``).

Dragonfly's manager runs a *preheat* job: its scheduler asks seed peers (or
every peer, by ``scope``) to download each URL once, so the later pulls of a
thousand dfdaemons find the bytes inside the cluster.  The manager's open API
(``POST /oapi/v1/jobs``, a personal access token with the ``job`` scope) takes
either an image manifest URL (``args.type = "image"``: the manager fetches the
manifest itself) or a list of file URLs (``args.type = "file"``).

We send the file form, one URL per blob, resolved here with the caller's own
registry credentials: the manager's ``image`` form dials the registry through a
dialer that refuses every non-global address (loopback, link-local), and only
knows the manifest types of docker/distribution.  The URLs are exactly those a
dfdaemon fetches for a pull through it (``<registry>/v2/<repo>/blobs/<digest>``),
so the task ids match when dfdaemon derives them from the URL
(``proxy.registryMirror.enableTaskIDBasedBlobDigest: false``; see
docs/registries.md: with the default ``true`` the proxy's task ids differ from
the preheated ones).
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import requests

from .errors import (
    AuthenticationError,
    DragonflyError,
    NotFoundError,
    RegistryUnavailableError,
    UsageError,
)
from .oci.reference import Reference, parse_reference
from .oci.spec import MANIFEST_MEDIA_TYPES, Descriptor, manifest_successors, parse_document
from .oci.target import fetch_bytes
from .registry import open_repository
from .registry.repository import RegistryRepository
from .settings import Settings

__all__ = [
    "DragonflyError",
    "PreheatJob",
    "PreheatRequest",
    "PreheatScope",
    "build_preheat_request",
    "preheat",
]

MANAGER_ENV = "MODELPACK_DRAGONFLY_MANAGER"
TOKEN_ENV = "MODELPACK_DRAGONFLY_TOKEN"
JOBS_PATH = "/oapi/v1/jobs"
DONE_STATES = ("SUCCESS", "FAILURE")


class PreheatScope(enum.StrEnum):
    """Which peers download: the manager's ``args.scope`` values."""

    SINGLE_SEED_PEER = "single_seed_peer"
    ALL_SEED_PEERS = "all_seed_peers"
    ALL_PEERS = "all_peers"


@dataclass(frozen=True)
class PreheatRequest:
    """What ``preheat`` sends: the blob URLs and the registry headers the peers need."""

    urls: tuple[str, ...]
    headers: dict[str, str] = field(repr=False)  # the registry Authorization: kept out of logs
    scope: PreheatScope = PreheatScope.SINGLE_SEED_PEER

    def body(self) -> dict[str, Any]:
        """The manager's ``CreatePreheatJobRequest`` (manager/types/job.go)."""
        args: dict[str, Any] = {"type": "file", "urls": list(self.urls), "scope": str(self.scope)}
        if self.headers:
            args["headers"] = dict(self.headers)
        return {"type": "preheat", "bio": "modelpack preheat", "args": args}


@dataclass(frozen=True)
class PreheatJob:
    """A preheat job as the manager reports it."""

    id: int
    state: str  # PENDING, RECEIVED, STARTED, RETRY, SUCCESS or FAILURE (machinery's states)
    urls: tuple[str, ...]
    manager: str
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.state in DONE_STATES

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "manager": self.manager,
            "urls": list(self.urls),
        }


def _blobs(repository: RegistryRepository, desc: Descriptor, depth: int = 0) -> Iterator[str]:
    """Digests of every blob below ``desc`` (configs and layers), indexes walked."""
    if desc.media_type not in MANIFEST_MEDIA_TYPES:
        yield desc.digest
        return
    if depth > 4:
        raise UsageError(f"{repository.describe()}@{desc.digest}: indexes nested too deep")
    what = f"{repository.describe()}@{desc.digest}"
    document = parse_document(fetch_bytes(repository, desc), what)
    for child in manifest_successors(desc.media_type, document, what):
        yield from _blobs(repository, child, depth + 1)


def build_preheat_request(
    reference: str | Reference,
    *,
    scope: PreheatScope | str = PreheatScope.SINGLE_SEED_PEER,
    settings: Settings | None = None,
) -> PreheatRequest:
    """Resolve ``reference`` at its registry (never a mirror: the peers fetch from the
    registry) and list the URL of each of its blobs, once each."""
    settings = settings or Settings()
    ref = parse_reference(reference) if isinstance(reference, str) else reference
    repository = open_repository(ref, settings)
    desc = repository.resolve(ref.target)
    digests = list(dict.fromkeys(_blobs(repository, desc)))
    transport = repository.client.transport
    urls = tuple(transport.url(repository.path("blobs", d)) for d in digests)
    # The token (or Basic credentials) our own requests just used, for the peers to send.
    headers = repository.client.auth.headers(repository.pull_scope)
    return PreheatRequest(urls, headers, PreheatScope(scope))


@dataclass
class _Manager:
    url: str
    token: str
    timeout: float = 30.0

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = requests.request(
                method,
                self.url.rstrip("/") + path,
                json=body,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise RegistryUnavailableError(
                f"Dragonfly manager {self.url} is unreachable: {type(exc).__name__}",
                hint=f"check --manager / {MANAGER_ENV}",
            ) from exc
        message = _message(response)
        if response.status_code in (401, 403):
            raise AuthenticationError(
                f"Dragonfly manager {self.url} refused the token ({response.status_code}: "
                f"{message})",
                hint=f"a personal access token with the 'job' scope, in {TOKEN_ENV}",
            )
        if response.status_code == 404:
            raise NotFoundError(f"Dragonfly manager {self.url}: {path} not found ({message})")
        if response.status_code in (400, 422):
            raise DragonflyError(f"Dragonfly manager {self.url} refused the job: {message}")
        if response.status_code >= 500:
            raise RegistryUnavailableError(
                f"Dragonfly manager {self.url} failed ({response.status_code}: {message})"
            )
        if response.status_code >= 300:
            raise DragonflyError(
                f"Dragonfly manager {self.url} answered {response.status_code}: {message}"
            )
        try:
            document = response.json()
        except ValueError:
            document = None
        if not isinstance(document, dict) or not isinstance(document.get("id"), int):
            raise DragonflyError(f"Dragonfly manager {self.url} answered without a job id")
        return document


def _message(response: requests.Response) -> str:
    try:
        document = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason
    if isinstance(document, dict):
        return str(document.get("message") or document.get("errors") or document)[:300]
    return str(document)[:300]


def _job(document: dict[str, Any], urls: tuple[str, ...], manager: str) -> PreheatJob:
    result = document.get("result")
    return PreheatJob(
        id=document["id"],
        state=str(document.get("state") or "PENDING"),
        urls=urls,
        manager=manager,
        result=result if isinstance(result, dict) else {},
    )


def preheat(
    reference: str | Reference,
    *,
    manager: str | None = None,
    token: str | None = None,
    scope: PreheatScope | str = PreheatScope.SINGLE_SEED_PEER,
    wait: bool = False,
    timeout: float = 600.0,
    poll_interval: float = 1.0,
    settings: Settings | None = None,
    on_state: Callable[[PreheatJob], None] | None = None,
) -> PreheatJob:
    """Ask Dragonfly's manager to warm every blob of ``reference``; with ``wait``, poll
    the job until it succeeds (a failed job raises ``DragonflyError``).

    ``manager`` (default ``$MODELPACK_DRAGONFLY_MANAGER``) is the manager's REST
    address, e.g. ``http://dragonfly-manager:8080``; ``token`` (default
    ``$MODELPACK_DRAGONFLY_TOKEN``) a personal access token with the ``job`` scope.
    """
    manager = manager or os.environ.get(MANAGER_ENV, "")
    token = token or os.environ.get(TOKEN_ENV, "")
    if not manager:
        raise UsageError(f"no Dragonfly manager: pass --manager URL or set {MANAGER_ENV}")
    if "://" not in manager:
        manager = f"http://{manager}"
    if not token:
        raise UsageError(
            f"no Dragonfly personal access token: set {TOKEN_ENV}",
            hint="create one in the Dragonfly console (Developer > Personal access tokens, "
            "scope 'job')",
        )
    request = build_preheat_request(reference, scope=scope, settings=settings)
    client = _Manager(manager, token)
    job = _job(client.call("POST", JOBS_PATH, request.body()), request.urls, manager)
    if on_state:
        on_state(job)
    deadline = time.monotonic() + timeout
    while wait and not job.done:
        if time.monotonic() > deadline:
            raise DragonflyError(
                f"preheat job {job.id} of {reference} still {job.state} after {timeout:.0f} s",
                hint=f"its state: GET {manager}{JOBS_PATH}/{job.id}",
            )
        time.sleep(poll_interval)
        previous = job.state
        job = _job(client.call("GET", f"{JOBS_PATH}/{job.id}"), request.urls, manager)
        if on_state and job.state != previous:
            on_state(job)
    if job.state == "FAILURE":
        raise DragonflyError(
            f"preheat job {job.id} of {reference} failed: {_failure(job.result)}",
            hint="the seed peers' and scheduler's logs say why",
        )
    return job


def _failure(result: dict[str, Any]) -> str:
    """The first reason in a failed job's result (machinery's job states / failure tasks)."""
    for state in result.get("job_states") or []:
        if isinstance(state, dict) and state.get("error"):
            return str(state["error"])[:300]
    return str(result)[:300] if result else "no reason given"
