"""A repo or revision the registry lacks, imported from an upstream hub on first request.

``--upstream URL`` names a Hugging Face-compatible hub (the public hub, a mirror,
another ``modelpack serve``).  A request for a repo id matching ``--upstream-allow``
that the registry has no repository for (RepoNotFound) downloads that revision
from the upstream, checks every file against what the upstream listed for it
(files.py: sizes and caps, sha256 for LFS files, git blob ids), and builds
and pushes it to the registry as a ModelPack artifact: tag = the revision asked
for, annotated with the upstream's commit id.  Then the request is answered from
the registry like any other, and so is every later one, on any replica.

A repository the registry has is internal: the upstream is never asked about it,
and an import never adds a tag to it (else an upstream that publishes ``main``
of an internal repo id that only has ``v1`` would put its files there: dependency
confusion).  An import only ever creates a repository.

Integrity: no byte from the upstream reaches a client.  The whole revision is
downloaded and verified first (a client waits for that), because a client cut
off when a digest fails would resume with ``Range`` and keep bad bytes under
the good name (see read/pullthrough.py).  A file that fails its hash or size fails
the import: nothing is pushed, the download is deleted, the client gets 403.
The upstream's answers are fetched through core/egress.py: redirects only to allowed
hosts with global addresses, so a listing cannot point the gateway at its own
network.

Once.  Concurrent requests for the same revision wait on one import in this
process (a Flight); processes sharing the cache take a flock per repository and
look at the registry again before importing, so a replica that lost the race
finds the repository and imports nothing.  A tag in the registry is never re-imported
or overwritten: the registry wins (see docs/gateway.md for the policy).

The import pushes with the gateway's own registry credentials (docker config,
MODELPACK_USERNAME/PASSWORD), which need push rights on the namespace; the
request that triggered it is then served with the client's own credentials,
as every request is.  The upstream token is sent to the upstream only: the one of
the most specific ``--upstream-token-for``/``--upstream-token-file`` pattern that
matches the repo, else ``--upstream-token`` (core/upstreamtokens.py).

Misses.  What the upstream said it lacks or refused (a repo, a revision, a listed
file) is remembered for ``--upstream-miss-ttl`` and answered without asking it
again (misses.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from fnmatch import fnmatchcase
from pathlib import Path

from ... import api
from ...errors import (
    AuthenticationError,
    ModelpackError,
    NotFoundError,
    RegistryUnavailableError,
    SchemaValidationError,
    SourceError,
    UnsafePickleError,
)
from ...oci.digests import is_digest
from ...oci.reference import is_tag
from ...registry.client import RegistryClient, RegistryRepository, connect
from ...storage._locks import file_lock
from ...storage.diskspace import disk_full_errors, require_space
from ...storage.store import node_store
from ..core.config import Caps, GatewayConfig
from ..core.egress import Egress, EgressPolicy, RefusedError
from ..core.hub import HubError
from ..core.upstreamtokens import choose
from ..read.hub_errors import hub_error
from ..read.models import Model, Resolver
from ..read.pullthrough import Flights
from ..state.audit import IMPORT, Audit, Who
from ..state.metrics import Metrics
from ..state.spools import claimed_folder, sweep
from .files import UpstreamFile, UpstreamNotFoundError, download, fetch_listing
from .misses import Misses

log = logging.getLogger("modelpack.gateway")
FILE_WAIT = 5.0  # seconds a file request waits on an import (huggingface_hub's HEAD allows 10)
RETRY_AFTER = 5
DOWNLOADS = 4  # files of one import fetched at once


class UnsafeImportError(RefusedError):
    """An upstream file that would run code when loaded: nothing is imported."""

    def __init__(self, exc: UnsafePickleError, what: str) -> None:
        super().__init__(f"{what}: {exc.message}")
        self.public = f"{exc.message}; nothing was imported"


class UnbuildableError(RefusedError):
    """Files that match their listing but that a build refuses (a safetensors file too
    short to be one, a model config the schema refuses): the upstream's fault, a 403."""

    public = (
        "the upstream hub's files are not a model this gateway can build "
        "(the gateway's log says why); nothing was imported"
    )


class InternalRepositoryError(NotFoundError):
    """The registry has the repository: the upstream adds nothing to it."""


class Upstream:
    """``open`` as :class:`Resolver` has it, importing from the upstream on a miss."""

    def __init__(
        self,
        config: GatewayConfig,
        resolver: Resolver,
        metrics: Metrics,
        audit: Audit | None = None,
    ) -> None:
        assert config.upstream
        self.config = config
        self.metrics = metrics  # an import counts as a pull of kind "upstream"
        self.audit = audit  # each import is an audit line, named after the request that began it
        self.resolver = resolver
        self.root = config.settings.home / "upstream"
        sweep(self.root / "work")  # imports a killed worker left (state/spools.py)
        self._flights = Flights(metrics, "upstream: import of %s failed: %s")
        self._client: RegistryClient | None = None  # the gateway's own credentials
        self.caps = config.upstream_caps or Caps()
        policy = EgressPolicy(config.upstream, config.upstream_redirect_allow or ())
        # Without a token for the repo none is sent, not even the gateway's own HF_TOKEN.
        self.egress = Egress(policy)
        self.misses = Misses(config.upstream_miss_max, config.upstream_miss_ttl)

    def allowed(self, repo_id: str) -> bool:
        return any(fnmatchcase(repo_id, p.lower()) for p in self.config.upstream_allow)

    def token(self, repo_id: str) -> tuple[str | None, str]:
        """The token an import of ``repo_id`` sends, and where it was given (for the log)."""
        rule = choose(self.config.upstream_tokens, repo_id)
        if rule is not None:
            return rule.token, rule.source
        if self.config.upstream_token:
            return self.config.upstream_token, "--upstream-token"
        return None, "no token"

    def open(
        self,
        repo_id: str,
        revision: str,
        authorization: str | None,
        wait: float | None = None,
        who: Who | None = None,
    ) -> Model:
        """The model, imported first if the registry lacks it and it may be imported.

        ``wait``: seconds to wait for a running import before answering 503 with
        Retry-After (file requests: huggingface_hub gives a HEAD 10 s, then retries
        on 503); None waits until it is done (info requests, which have no timeout).
        ``who``: the client an import this request starts is recorded for (audit)."""
        try:
            return self.resolver.open(repo_id, revision, authorization)
        except HubError as exc:
            if exc.status != 404 or exc.code != "RepoNotFound":
                if exc.code == "RevisionNotFound" and self.allowed(repo_id):
                    # The registry has the repo: internal, the upstream is not asked.
                    log.info("upstream: %s is in the registry: %s not asked", repo_id, revision)
                raise
            if not self._importable(repo_id, revision):
                raise
        try:
            self.misses.check(repo_id, revision)  # the upstream's answer, remembered
        except ModelpackError as exc:
            self.metrics.upstream_miss("remembered")
            raise _hub_error(exc, repo_id, revision) from None
        self._imported(repo_id, revision, wait, who)
        return self.resolver.open(repo_id, revision, authorization)

    def _importable(self, repo_id: str, revision: str) -> bool:
        if self.config.offline:
            log.info("upstream: %s@%s is not in the registry (offline)", repo_id, revision)
            return False
        if not self.allowed(repo_id):
            log.info("upstream: %s is not in --upstream-allow", repo_id)
            return False
        # A tag names it in the registry; a digest or refs/pr/1 cannot be imported.
        return is_tag(revision) and not is_digest(revision)

    # -- one import per revision -------------------------------------------------

    def _imported(
        self, repo_id: str, revision: str, wait: float | None, who: Who | None = None
    ) -> None:
        """Wait for the import of ``repo_id@revision`` (started here or joined)."""
        key = f"{repo_id}@{revision}"
        flight = self._flights.start(key, "upstream", lambda: self._audited(repo_id, revision, who))
        if not flight.done.wait(wait):
            raise HubError(503, f"{repo_id}: being imported from the upstream hub; retry shortly",
                           None, {"Retry-After": str(RETRY_AFTER)})  # fmt: skip
        try:
            flight.wait()
        except ModelpackError as exc:
            raise _hub_error(exc, repo_id, revision) from None
        except Exception as exc:  # a bug met by upstream content: the log gets the trace
            log.error("upstream: import of %s@%s failed", repo_id, revision, exc_info=exc)
            raise HubError(502, f"{repo_id}: the import from the upstream hub failed") from None

    def _audited(self, repo_id: str, revision: str, who: Who | None) -> str | None:
        """The import, and its audit line: the status the client that started it got
        (200 imported, 403 refused, ...), the bytes fetched from the upstream."""
        fetched: list[int] = []
        try:
            commit = self._import(repo_id, revision, fetched)
        except BaseException as exc:
            if self.audit is not None and who is not None:
                status, text = _failure(exc, repo_id, revision)
                self.audit.event(who, IMPORT, status, sum(fetched), repo=repo_id,
                                 revision=revision, error=text)  # fmt: skip
            raise
        if commit is not None and self.audit is not None and who is not None:
            self.audit.event(who, IMPORT, 200, sum(fetched), repo=repo_id, revision=revision,
                             commit=commit)  # fmt: skip
        return commit

    def _import(self, repo_id: str, revision: str, fetched: list[int] | None = None) -> str | None:
        name = self.config.repository(repo_id)
        lock = self.root / "locks" / hashlib.sha256(name.encode()).hexdigest()
        with file_lock(lock):
            tags = self._tags(name)
            if revision in tags:  # another process or replica was first
                log.info("upstream: %s@%s is in the registry already", repo_id, revision)
                return None
            if tags:  # only a concurrent import makes it, or a repo this client cannot see
                raise InternalRepositoryError(
                    f"{repo_id}@{revision} not imported: the registry has {name} "
                    "(the upstream adds nothing to a repository the registry has)"
                )
            started = time.monotonic()
            token, given = self.token(repo_id)
            log.info("upstream: importing %s@%s (%s)", repo_id, revision, given)
            egress = self.egress.with_token(token)
            try:
                commit, files = fetch_listing(egress, repo_id, revision, self.caps)
            except ModelpackError as exc:
                if self.misses.listing_failed(repo_id, revision, exc):
                    self.metrics.upstream_miss("upstream")
                raise
            with claimed_folder(self.root / "work", "import-") as work:
                what = f"an import of {repo_id}"
                require_space(work, sum(f.size for f in files), what)
                # The HF cache's layout: the build takes the model's name and revision from it.
                tree = work / f"models--{repo_id.replace('/', '--')}" / "snapshots" / commit
                with disk_full_errors(work, what):
                    try:
                        self._download(egress, repo_id, commit, files, tree)
                    except ModelpackError as exc:
                        if self.misses.download_failed(repo_id, revision, exc):
                            self.metrics.upstream_miss("upstream")
                        raise
                if fetched is not None:
                    fetched.append(sum(f.size for f in files))  # all of it, each checked
                target = f"{self.config.host}/{name}:{revision}"
                try:  # into the node store: its layers are linked there, not copied
                    result = api.build(
                        tree,
                        target,
                        hf_repo_id=repo_id,
                        hf_revision=commit,
                        allow_unsafe_pickle=self.config.allow_unsafe_pickle,
                        settings=self.config.settings,
                    )
                except (SourceError, SchemaValidationError) as exc:  # the upstream's files
                    raise UnbuildableError(f"{repo_id}@{revision}: {exc.message}") from None
                except UnsafePickleError as exc:  # a file that runs code when loaded
                    raise UnsafeImportError(exc, f"{repo_id}@{revision}") from None
            self._push(target)
            log.info(
                "upstream: imported %s@%s (commit %s, %d files) as %s:%s@%s in %.1fs",
                repo_id, revision, commit, len(files), name, revision, result.digest,
                time.monotonic() - started,
            )  # fmt: skip
            return commit

    def _push(self, target: str) -> None:
        """The built model from the node store to the registry, then untagged there: its
        verified blobs stay in the node store, where the pull that serves the first request
        finds them instead of fetching every byte back from the registry (one download and
        hash of the whole model fewer).  The node cache alone decides how long they stay."""
        try:
            api.push(target, settings=self.config.settings)
        finally:
            with contextlib.suppress(NotFoundError):
                node_store(self.config.settings).untag(target)

    def _download(
        self, egress: Egress, repo_id: str, commit: str, files: list[UpstreamFile], into: Path
    ) -> None:
        """Every listed file (and nothing else) into ``into``, each checked as it is written."""
        with ThreadPoolExecutor(DOWNLOADS, thread_name_prefix="upstream") as pool:
            jobs = [pool.submit(download, egress, repo_id, commit, f, into / f.path) for f in files]
            try:
                for job in jobs:
                    job.result()
            finally:
                for job in jobs:  # the first failure ends the import: start no more
                    job.cancel()

    def _tags(self, name: str) -> list[str]:
        """The repository's tags, read with the gateway's own credentials."""
        if self._client is None:
            self._client = connect(self.config.host, self.config.settings)
        return RegistryRepository(self._client, name).list_tags()


def _hub_error(exc: ModelpackError, repo_id: str, revision: str) -> Exception:
    """What a client is told when an import failed (or its miss is remembered): the
    upstream's own cases, then the gateway's one mapping for a missing or refused repo.
    Errors of other kinds go on to the app, which logs them and answers in the hub's format."""
    if isinstance(exc, UpstreamNotFoundError) and exc.code == "RevisionNotFound":
        return HubError(404, f"Invalid rev id: {revision} (not on the upstream hub)",
                        "RevisionNotFound")  # fmt: skip
    if isinstance(exc, RefusedError):
        return HubError(403, f"{repo_id}: refused: {exc.public}", "GatedRepo")
    if isinstance(exc, RegistryUnavailableError):
        return HubError(502, f"{repo_id}: the upstream hub is unavailable; try again later")
    if isinstance(exc, (NotFoundError, AuthenticationError)):
        return hub_error(exc, repo_id)
    return exc


def _failure(exc: BaseException, repo_id: str, revision: str) -> tuple[int, str]:
    """The status and message a failed import answers its client (``_hub_error``'s, and
    the app's 502 for anything else), for its audit line."""
    error = _hub_error(exc, repo_id, revision) if isinstance(exc, ModelpackError) else exc
    if isinstance(error, HubError):
        return error.status, error.message
    return 502, f"{repo_id}: the import from the upstream hub failed"
