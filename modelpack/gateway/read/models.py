"""Hub repo + revision -> one verified model manifest, checked with the client's credentials.

A revision is a tag (``main`` falls back to ``latest``, the OCI default), a
manifest digest (``sha256:...``), or a 40-hex commit this gateway handed out
earlier (remembered in ``gateway.sqlite`` under the cache; on a miss the
repository's tags are searched).  The commit is what ``pull --hf-cache`` writes:
the recorded ``io.modelpack.hf.commit``, else a stand-in derived from the
manifest, so both produce the same snapshot folder names.

Every request is checked by the registry with the client's own credentials (a
manifest GET for a tag, a HEAD for a digest) before anything is served, cached or
not; the registry's yes is kept ``--auth-cache-ttl`` seconds per credential,
repository and revision (state/authcache.py), writes always ask afresh.
Manifests, configs and file lists are content-addressed and kept in memory.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from ...errors import IntegrityError, NotFoundError, UsageError
from ...oci.digests import is_digest
from ...oci.modelrunner import is_docker_model
from ...oci.reference import Reference, is_tag, parse_reference
from ...oci.spec import (
    INDEX_MEDIA_TYPES,
    MEDIA_TYPE_OCI_MANIFEST,
    MODEL_CONFIG_MEDIA_TYPES,
    Descriptor,
    Manifest,
    ModelConfig,
    parse_manifest,
    parse_model_config,
)
from ...oci.target import fetch_bytes, push_bytes
from ...registry.client import RegistryRepository
from ...signing.cosign import require_signature
from ...signing.keys import load_public_key
from ...storage._sqlite import connect
from ...storage.hfcache import hf_mapping
from ...storage.store import node_store
from ..core.config import GatewayConfig
from ..core.http import Replay
from ..core.hub import (
    COMMIT_RE,
    HubError,
    RepoFile,
    files_from_manifest,
    repo_not_found,
    revision_not_found,
)
from ..state.access import Clients
from ..state.authcache import PULL, AuthCache
from ..state.shared import Shared
from ..state.ttlmap import TTLMap

MAX_VIEWS = 512
MAX_TAGS_SEARCHED = 200  # for a commit this gateway has not seen
# After a search of a repository's tags found no commit, another unknown commit is
# answered without a search for this long (per repository and credential): a client
# cannot make every request cost a tag list and a manifest per tag.
SEARCH_TTL = 30.0
MAX_SEARCHES = 4096
# (repository, blob) pairs the registry has confirmed: a manifest may name blobs its
# repository lacks (distribution takes "foreign" layers with URLs unchecked), and the
# node cache keeps blobs by digest alone, so another repository's copy must never
# stand in for one the client's repository does not hold.
MAX_LINKED = 1 << 16
LINKED_TTL = 24 * 3600.0
FOREIGN_REFUSED = (
    "the model names blobs its repository does not hold (foreign layers are not served)"
)


def _all_linked(repository: str, digest: str) -> tuple[str, str]:
    """The ``_linked`` key saying every blob of manifest ``digest`` is in ``repository``."""
    return (repository, f"all blobs of {digest}")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS commits (
    repository TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    seen REAL NOT NULL,
    PRIMARY KEY (repository, commit_id)
)
"""


@functools.lru_cache(maxsize=1024)
def _parsed(text: str) -> Reference:
    """``parse_reference`` of what every request of a model parses again (a Reference is
    immutable; a UsageError is raised, never kept)."""
    return parse_reference(text)


class SignatureRefusedError(IntegrityError):
    """``--verify-key`` is set and no valid signature by it names this manifest."""


@dataclass(frozen=True)
class View:
    """What one manifest digest says, independent of who asks."""

    root: Descriptor
    manifest: Manifest
    config: ModelConfig | None
    commit: str
    files: dict[str, RepoFile] | None  # None: known after the layers are unpacked


@dataclass(frozen=True)
class Model:
    """A manifest as one request may see it (authorized with that request's credentials)."""

    repo_id: str
    repository: RegistryRepository
    reference: Reference  # host/repository@digest
    view: View

    @property
    def root(self) -> Descriptor:
        return self.view.root

    @property
    def commit(self) -> str:
        return self.view.commit

    @property
    def key(self) -> str:
        return str(self.reference)


def require_modelpack(model: Model) -> None:
    """A write (commit, branch) builds a ModelPack manifest on the head's files: refused on
    a model in Docker Model Runner's own format, which it would silently turn into another."""
    if is_docker_model(model.view.manifest):
        raise HubError(
            400,
            f"{model.repo_id}: this revision is a Docker Model Runner model "
            f"({model.view.manifest.config.media_type}); the gateway serves it read-only. "
            "Commit to a ModelPack repository (modelpack build/push, or "
            "`docker model package --format cncf`)",
        )


class Resolver:
    """Repo id + revision → a verified model, as the client's credentials may read it.
    ``shared``: what replicas share (state/shared.py); with it a write through any
    replica drops every replica's kept answers about the repository."""

    def __init__(
        self, config: GatewayConfig, clients: Clients, shared: Shared | None = None
    ) -> None:
        self.config = config
        self.clients = clients
        self.db_path = config.settings.home / "gateway.sqlite"
        self.store = node_store(config.settings)
        self.public_key = load_public_key(config.verify_key) if config.verify_key else None
        self._views: OrderedDict[str, View] = OrderedDict()
        self._signed: set[str] = set()
        self._remembered: set[tuple[str, str, str]] = set()
        self._reading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._searched: TTLMap[tuple[str, str], bool] = TTLMap(MAX_SEARCHES, SEARCH_TTL)
        self._searching = [threading.Lock() for _ in range(16)]  # one search at a time each
        self._linked: TTLMap[tuple[str, str], bool] = TTLMap(MAX_LINKED, LINKED_TTL)
        self.answers = AuthCache(config.auth_cache_ttl, shared=shared)

    # -- entry point ------------------------------------------------------------

    def open(
        self,
        repo_id: str,
        revision: str,
        authorization: str | None,
        fresh: bool = False,
        kept_only: bool = False,
    ) -> Model:
        """The model ``revision`` names, as these credentials may read it.  ``fresh``: ask
        the registry even if its answer to them is kept (a write builds on the head the
        registry has now, never on one a few seconds old).  ``kept_only``: only from what is
        kept (the answer, the manifest, its blobs confirmed), else ``Replay``."""
        name = self.config.repository(repo_id)
        try:
            _parsed(f"{self.config.host}/{name}")
        except UsageError:
            raise repo_not_found(repo_id, "not a valid OCI repository name") from None
        key, client = self.clients.for_header(authorization)
        repository = RegistryRepository(client, name)
        kept = self.answers.key(authorization, name, PULL, revision)
        if kept_only:
            if (root := self.answers.served(kept)) is None:
                raise Replay
        else:
            ask = functools.partial(self._resolve, repository, repo_id, revision, key)
            root = self.answers.answer(kept, ask, fresh=fresh)
        if root.media_type in INDEX_MEDIA_TYPES:
            raise HubError(400, f"{repo_id}@{revision} is an image index, not a model manifest")
        reference = _parsed(f"{self.config.host}/{name}@{root.digest}")
        if kept_only:  # all from memory, read once: nothing checked here can ask the registry
            if (view := self._kept_view(name, root.digest)) is None:
                raise Replay
            return Model(repo_id, repository, reference, view)
        view = self._view(repository, reference, repo_id, root)
        self._require_linked(repository, repo_id, view)
        if self.public_key is not None and root.digest not in self._signed:
            try:
                require_signature(repository, root, self.public_key, f"{self.config.host}/{name}")
            except IntegrityError as exc:
                raise SignatureRefusedError(exc.message, hint=exc.hint) from exc
            with self._lock:
                self._signed.add(root.digest)
        self._remember(name, view.commit, root.digest)
        return Model(repo_id, repository, reference, view)

    def _kept_view(self, repository: str, digest: str) -> View | None:
        """``digest``'s view if opening it needs nothing but memory: the view read, its
        blobs confirmed in ``repository``, its signature checked, its commit remembered."""
        with self._lock:
            view = self._views.get(digest)
        if view is None or not self._linked.get(_all_linked(repository, digest)):
            return None
        if self.public_key is not None and digest not in self._signed:
            return None
        return view if (repository, view.commit, digest) in self._remembered else None

    def _require_linked(self, repository: RegistryRepository, repo_id: str, view: View) -> None:
        """403 unless the repository holds the config and every layer the manifest
        names (a HEAD each, once per repository and blob): bytes in the node cache are
        served only to a repository the registry says has them.  Once all are, the
        manifest is remembered too: a request costs one look-up, not one per layer."""
        whole = _all_linked(repository.name, view.root.digest)
        if self._linked.get(whole):
            return
        for desc in (view.manifest.config, *view.manifest.layers):
            key = (repository.name, desc.digest)
            if self._linked.get(key):
                continue
            if not repository.exists(desc):
                raise HubError(403, f"{repo_id}: refused: {FOREIGN_REFUSED}", "GatedRepo")
            self._linked.set(key, True)
        self._linked.set(whole, True)

    def forget(self, repo_id: str) -> None:
        """A write through this gateway moved ``repo_id``'s tags: no kept answer about
        it is served again, by this replica or another (state/authcache.py)."""
        self.answers.forget(self.config.repository(repo_id))

    # -- revisions ------------------------------------------------------------

    def _resolve(
        self, repository: RegistryRepository, repo_id: str, revision: str, key: str
    ) -> Descriptor:
        if not (is_tag(revision) or is_digest(revision)):
            # refs/pr/1, "..", anything else: no OCI tag or digest is named so, and it
            # must never reach a registry URL (where a client would collapse "..").
            raise self._missing(repository, repo_id, revision)
        if is_digest(revision):
            return self._by_digest(repository, repo_id, revision, revision)
        if COMMIT_RE.match(revision):
            digest = self._recalled(repository.name, revision)
            if digest is not None:
                return self._by_digest(repository, repo_id, revision, digest)
            try:  # hub commits made through a gateway are tagged by their id
                return repository.resolve(revision)
            except NotFoundError:
                return self._search_once(repository, repo_id, revision, key)
        tags = [revision, "latest"] if revision == "main" else [revision]
        for tag in tags:
            try:
                return repository.resolve(tag)
            except NotFoundError:
                continue
        raise self._missing(repository, repo_id, revision)

    def _by_digest(
        self, repository: RegistryRepository, repo_id: str, revision: str, digest: str
    ) -> Descriptor:
        with self._lock:
            view = self._views.get(digest)
        if view is None:
            try:
                return repository.resolve(digest)
            except NotFoundError:
                raise self._missing(repository, repo_id, revision) from None
        # Known content: a HEAD proves these credentials may still read it.
        if not repository.exists(Descriptor(view.root.media_type, digest, view.root.size)):
            raise self._missing(repository, repo_id, revision)
        return view.root

    def _search_once(
        self, repository: RegistryRepository, repo_id: str, commit: str, key: str
    ) -> Descriptor:
        """``_search_tags``, unless one with these credentials found nothing in the last
        SEARCH_TTL seconds: every commit of those tags was remembered then."""
        searched = (key, repository.name)
        with self._searching[hash(searched) % len(self._searching)]:
            if self._searched.get(searched):
                raise revision_not_found(repo_id, commit)
            try:
                return self._search_tags(repository, repo_id, commit)
            except HubError as exc:
                if exc.code == "RevisionNotFound":  # all tags read: remember that
                    self._searched.set(searched, True)
                raise

    def _search_tags(self, repository: RegistryRepository, repo_id: str, commit: str) -> Descriptor:
        tags = repository.list_tags()
        if not tags:
            raise repo_not_found(repo_id)
        for tag in tags[:MAX_TAGS_SEARCHED]:
            try:
                root = repository.resolve(tag)
            except NotFoundError:
                continue
            if root.media_type in INDEX_MEDIA_TYPES:
                continue
            reference = parse_reference(f"{self.config.host}/{repository.name}@{root.digest}")
            view = self._view(repository, reference, repo_id, root)
            self._remember(repository.name, view.commit, root.digest)
            if view.commit == commit:
                return root
        raise revision_not_found(repo_id, commit)

    def _missing(self, repository: RegistryRepository, repo_id: str, revision: str) -> HubError:
        """RepoNotFound when the repository has no tags at all, else RevisionNotFound."""
        tags = repository.user_tags()
        return revision_not_found(repo_id, revision, tags) if tags else repo_not_found(repo_id)

    # -- content ----------------------------------------------------------------

    def _view(
        self, repository: RegistryRepository, reference: Reference, repo_id: str, root: Descriptor
    ) -> View:
        with self._lock:
            view = self._views.get(root.digest)
            if view is not None:
                self._views.move_to_end(root.digest)
                return view
            reading = self._reading.setdefault(root.digest, threading.Lock())
        with reading:  # concurrent first requests read the manifest and config once
            with self._lock:
                view = self._views.get(root.digest)
            if view is None:
                view = self._read_view(repository, reference, repo_id, root)
        with self._lock:
            self._reading.pop(root.digest, None)
        return view

    def _read_view(
        self, repository: RegistryRepository, reference: Reference, repo_id: str, root: Descriptor
    ) -> View:
        what = f"{reference} manifest"
        manifest = parse_manifest(fetch_bytes(repository, root), what)
        config = None
        if manifest.config.media_type in MODEL_CONFIG_MEDIA_TYPES:
            config = parse_model_config(
                self._config_bytes(repository, manifest.config), f"{reference} model config"
            )
        # The repo id is the one asked for; the recorded hub commit names its snapshot.
        commit = hf_mapping(
            reference, manifest, config, repo_id=repo_id, trust_annotations=True
        ).commit
        root = Descriptor(
            root.media_type or MEDIA_TYPE_OCI_MANIFEST,
            root.digest,
            root.size,
            artifact_type=root.artifact_type,
        )
        view = View(root, manifest, config, commit, files_from_manifest(manifest, root.digest))
        with self._lock:
            self._views[root.digest] = view
            while len(self._views) > MAX_VIEWS:
                self._views.popitem(last=False)
        return view

    def _config_bytes(self, repository: RegistryRepository, desc: Descriptor) -> bytes:
        """The model config, read once: kept in the node cache's store, where the
        pull that follows finds it instead of fetching it again."""
        if self.store.exists(desc):
            return fetch_bytes(self.store, desc)
        data = fetch_bytes(repository, desc)
        with self.store.using():
            push_bytes(self.store, desc, data)
        return data

    # -- commit index -------------------------------------------------------------

    def _remember(self, repository: str, commit: str, digest: str) -> None:
        entry = (repository, commit, digest)
        if entry in self._remembered:
            return
        with connect(self.db_path, _SCHEMA) as db:
            db.execute(
                "INSERT OR REPLACE INTO commits VALUES (?, ?, ?, ?)",
                (repository, commit, digest, time.time()),
            )
        with self._lock:
            self._remembered.add(entry)

    def _recalled(self, repository: str, commit: str) -> str | None:
        with connect(self.db_path, _SCHEMA) as db:
            row = db.execute(
                "SELECT digest FROM commits WHERE repository = ? AND commit_id = ?",
                (repository, commit),
            ).fetchone()
        return row[0] if row else None
