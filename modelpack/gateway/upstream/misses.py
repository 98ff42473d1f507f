"""Upstream misses, remembered: a repo or revision the upstream said it lacks (or refused)
is not asked about again for ``--upstream-miss-ttl`` seconds.

Without this every request for a repo id the allow list lets through but the upstream does
not have is one more request to the upstream: a client retrying, a typo in a deployment,
or anyone naming made-up repos under an allowed org keeps the upstream busy (and, on the
public hub, spends the gateway's rate limit).  What counts as a miss (docs/gateway.md):

* the listing answered 404 with ``X-Error-Code: RepoNotFound``, or 401/403 with
  ``RepoNotFound`` or ``GatedRepo``: the *repo* is a miss, every revision of it (access is
  decided per repo; the hub answers 401 ``RepoNotFound`` for a repo that does not exist when
  it is asked without a token);
* the listing answered another 404 (``RevisionNotFound``), or a 401/403 without the hub's
  code (a proxy's or a firewall's, which may be about this request only): that *revision* is
  a miss, so no request a client makes up can have a whole repo remembered as missing;
* a file the listing names answered 404, 401 or 403: the revision cannot be imported, that
  revision is a miss.

Anything else (5xx, a broken connection, a listing that breaks the rules) is not a miss:
the next request asks again.  A miss is answered as the upstream's answer was (the same
error, so the same status for the client) and logged.  The memory is a TTLMap
(state/ttlmap.py): at most ``--upstream-miss-max`` entries, the least recently used
dropped first, so made-up names cost the upstream one request each and the gateway a
bounded amount of memory.  It lives in this process; the registry is asked first on
every request, so a repo pushed (or imported by another replica) meanwhile is served at
once.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ...errors import ModelpackError
from ..state.ttlmap import TTLMap
from .files import UpstreamFileMissingError, UpstreamNotFoundError, UpstreamRefusedAccessError

log = logging.getLogger("modelpack.gateway")


@dataclass(frozen=True)
class Miss:
    """What the upstream answered (``error``): a copy is raised while it is remembered."""

    error: ModelpackError
    since: float


class Misses:
    """``ttl`` 0 remembers nothing; ``clock`` is for tests."""

    def __init__(
        self, max_items: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._map: TTLMap[tuple[str, ...], Miss] | None = (
            TTLMap(max_items, ttl, clock) if ttl > 0 else None
        )

    def __len__(self) -> int:
        return len(self._map) if self._map is not None else 0

    def check(self, repo_id: str, revision: str) -> None:
        """Raise the upstream's answer again if ``repo_id`` or ``repo_id@revision`` is a
        remembered miss."""
        if self._map is None:
            return
        miss = self._map.get(("repo", repo_id)) or self._map.get(("revision", repo_id, revision))
        if miss is None:
            return
        log.info(
            "upstream: %s@%s not asked: a miss %.0fs ago (remembered for %gs): %s",
            repo_id, revision, self._clock() - miss.since, self.ttl, miss.error,
        )  # fmt: skip
        raise copy.copy(miss.error)  # its class and fields, a traceback of its own

    def listing_failed(self, repo_id: str, revision: str, exc: Exception) -> bool:
        """Remember what the listing's failure says is missing; False: it is no miss."""
        if not isinstance(exc, UpstreamNotFoundError | UpstreamRefusedAccessError):
            return False
        key = ("repo", repo_id) if exc.whole_repo else ("revision", repo_id, revision)
        return self._remember(key, exc)

    def download_failed(self, repo_id: str, revision: str, exc: Exception) -> bool:
        """A listed file the upstream lacks or refuses: the revision cannot be imported."""
        if isinstance(exc, UpstreamFileMissingError | UpstreamRefusedAccessError):
            return self._remember(("revision", repo_id, revision), exc)
        return False

    def _remember(self, key: tuple[str, ...], exc: ModelpackError) -> bool:
        if self._map is not None:
            error = copy.copy(exc)
            error.__traceback__ = error.__cause__ = error.__context__ = None  # no frames kept
            self._map.set(key, Miss(error, self._clock()))
        return True
