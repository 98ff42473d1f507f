"""Files from the node cache, pulled through from the registry on first request.

The first GET of any file of a manifest starts one background pull of the whole
model into the node cache (``transfer.pull_to_node_cache``: store blobs, a tagged
manifest, the materialized tree), exactly what ``modelpack pull`` makes, so
``cache ls`` / ``cache prune`` / a later ``modelpack pull`` see it.  A file asked
for before that finishes is pulled on its own at once (its blob into the same
store, through the same copy); the per-blob flocks of the store make the two,
and any number of concurrent requests or processes, download each blob once.

No byte of a file reaches a client before the whole file is verified: a request
for a file still being pulled waits (holding its thread, never a second download)
until the blob hashed to its digest and was published in the store, then it is
sent from there like any cached file.  Streaming while verifying cannot be made
safe: a client that is cut off when the digest fails resumes with ``Range`` and
never re-hashes, so bad bytes sent once stay in its cache under the good name.
The wait is bounded by progress (a pull that stalls fails the request), by the
client (one that hangs up frees its thread) and by ``max_waiting`` (more
requests waiting at once are told 429 and retry).  Pulls start as early as the
client shows interest (the HEAD before each download), so time to first byte
is the blob's pull time, not more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ... import transfer
from ...endpoints import Endpoint
from ...errors import IntegrityError, RegistryUnavailableError
from ...oci.copy import CopyOptions, copy_graph
from ...oci.spec import Descriptor
from ...settings import Settings
from ...storage._seals import Seal
from ...storage.cache import NodeCache
from ..core.http import Replay
from ..core.hub import HubError, RepoFile
from ..state.metrics import Metrics
from ..state.ttlmap import TTLMap
from .models import Model

log = logging.getLogger("modelpack.gateway")
STALL_SECONDS = 300.0  # a pull that delivers no byte for this long fails the request
POLL_SECONDS = 0.05
INTEGRITY_ATTEMPTS = 2  # a blob that fails its digest is pulled once more before giving up
MAX_SEALED = 256  # whole trees whose files' seals are kept (cached_path)
SEALED_TTL = 3600.0


class Flight:
    """One background job that any number of requests wait on."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.result: Any = None

    def wait(self) -> Any:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


class Flights:
    """Background jobs by key: a request for a key already running joins that job.
    Each runs on its own thread, so a client that hangs up does not abort what others
    wait on; ``failed`` is the log line of a failure (key, error)."""

    def __init__(self, metrics: Metrics, failed: str) -> None:
        self.metrics = metrics
        self.failed = failed
        self._running: dict[str, Flight] = {}
        self._lock = threading.Lock()

    def start(self, key: str, kind: str, job: Callable[[], Any]) -> Flight:
        with self._lock:
            flight = self._running.get(key)
            if flight is not None:
                return flight
            flight = self._running[key] = Flight()
        self.metrics.pull_started()

        def run() -> None:
            try:
                flight.result = job()
            except BaseException as exc:  # handed to every waiter
                flight.error = exc
                log.warning(self.failed, key, exc)
            finally:
                with self._lock:
                    self._running.pop(key, None)
                self.metrics.pull_finished(kind, flight.error is None)
                flight.done.set()

        threading.Thread(target=run, name=f"{kind} {key[:40]}", daemon=True).start()
        return flight


class PullThrough:
    def __init__(self, settings: Settings, metrics: Metrics, max_waiting: int = 32) -> None:
        self.settings = settings
        self.cache = NodeCache(settings)
        self.store = self.cache.store
        self.metrics = metrics
        self._flights = Flights(metrics, "pull failed: %s: %s")
        self._listings: dict[str, dict[str, RepoFile]] = {}
        self._sealed: TTLMap[str, tuple[Path, dict[str, Seal]]] = TTLMap(MAX_SEALED, SEALED_TTL)
        # Blobs served as files themselves (raw layers), found intact: checked by one lstat.
        self._blob_seals: TTLMap[str, tuple[Path, Seal]] = TTLMap(MAX_SEALED, SEALED_TTL)
        self._lock = threading.Lock()
        self._waiting = threading.BoundedSemaphore(max_waiting)

    # -- the whole model --------------------------------------------------------

    def tree(self, model: Model) -> Path | None:
        return self.cache.ready(model.root.digest)  # complete and unchanged

    def prefetch(self, model: Model) -> Flight | None:
        """Start pulling the whole model into the node cache unless it is there."""
        if self.tree(model) is not None:
            return None
        return self._flights.start(
            f"model {model.root.digest}", "model", lambda: self._pull_model(model)
        )

    def _pull_model(self, model: Model) -> Path:
        src = Endpoint(
            model.repository,
            model.root.digest,
            model.key,
            registry_ref=model.reference,
            resolved=model.root,
        )
        result, path, _ = transfer.pull_to_node_cache(src, model.root, model.key, self.settings)
        self.metrics.pulled(result.stats.bytes_transferred)
        return path

    def listing(self, model: Model, kept_only: bool = False) -> dict[str, RepoFile]:
        """The model's files: from the manifest, else from its unpacked tree (``kept_only``:
        only a listing already made, else ``Replay``)."""
        if model.view.files is not None:
            return model.view.files
        digest = model.root.digest
        with self._lock:
            known = self._listings.get(digest)
        if known is not None:
            return known
        if kept_only:
            raise Replay
        flight = self.prefetch(model)
        tree = flight.wait() if flight is not None else self.tree(model)
        assert tree is not None
        files = {
            p.relative_to(tree).as_posix(): RepoFile(
                p.relative_to(tree).as_posix(), p.stat().st_size, None, digest
            )
            for p in sorted(tree.rglob("*"))
            if p.is_file()
        }
        with self._lock:
            self._listings[digest] = files
        return files

    # -- one file ---------------------------------------------------------------

    def cached_path(self, model: Model, f: RepoFile, kept_only: bool = False) -> Path | None:
        """Where the verified bytes of ``f`` already are on this node, if anywhere.

        A whole tree found complete and unchanged is remembered with its files' seals:
        after that a request checks the seal of the one file it serves (one lstat), not
        the whole tree (a walk and an lstat per file); a file whose seal no longer
        matches sends it back to the whole check.  ``kept_only``: only that one lstat, else
        ``Replay``."""
        digest = model.root.digest
        kept = self._sealed.get(digest)
        if kept is not None:
            tree, seals = kept
            seal, path = seals.get(f.path), tree / f.path
            if seal is not None and seal.matches(path):
                return path
            if kept_only:
                raise Replay
            self._sealed.pop(digest)
        if f.raw and f.layer is not None and (blob := self._blob_seals.get(f.layer.digest)):
            if blob[1].matches(blob[0]):
                return blob[0]
            self._blob_seals.pop(f.layer.digest)
        if kept_only:
            raise Replay
        if (found := self.cache.ready_seals(digest)) is not None and f.path in found[1]:
            self._sealed.set(digest, found)
            return found[0] / f.path
        if f.raw and f.layer is not None:
            try:  # before the check: a change after it then fails this seal
                seal = Seal.of(self.store.blob_path(f.layer.digest))
            except OSError:
                return None
            blob = self.store.intact_path(f.layer)
            if blob is None or not blob.is_file():
                return None
            self._blob_seals.set(f.layer.digest, (blob, seal))
            return blob
        if f.layer is not None and (one := self.cache.ready(digest, [f.path])):
            return one / f.path if (one / f.path).is_file() else None
        return None

    def pull_blob(self, model: Model, layer: Descriptor) -> Flight:
        return self._flights.start(
            f"blob {layer.digest}", "blob", lambda: self._pull_blob(model, layer)
        )

    def _pull_blob(self, model: Model, layer: Descriptor) -> Path:
        options = CopyOptions(
            concurrency=1,
            layer_filter=lambda d: d.digest == layer.digest,
            transfer_attempts=self.settings.retries,
        )
        for attempt in range(INTEGRITY_ATTEMPTS):
            try:
                with self.store.using():
                    result = copy_graph(
                        model.repository, model.root.digest, self.store, None, options
                    )
                break
            except IntegrityError as exc:  # bad bytes from a flaky hop: discarded, once more
                if attempt + 1 == INTEGRITY_ATTEMPTS:
                    raise
                log.warning("pull of %s failed verification, retrying: %s", layer.digest, exc)
        self.metrics.pulled(result.stats.bytes_transferred)
        return self.store.blob_path(layer.digest)

    def unpack_one(self, model: Model, f: RepoFile, gone: Callable[[], bool]) -> Path:
        """A file of an archive layer, unpacked on its own (a partial tree of one file)."""
        assert f.layer is not None
        layer = f.layer

        def job() -> Path:
            self.pull_blob(model, layer).wait()
            tree, _ = self.cache.materialize(
                model.root,
                model.key,
                source=model.repository,
                patterns=[f.path],
                layer_filter=lambda d: d == layer,
            )
            return tree / f.path

        flight = self._flights.start(f"file {model.root.digest} {f.path}", "file", job)
        return self.verified(flight, self.store.partial_path(layer), gone)

    def verified(self, flight: Flight, partial: Path, gone: Callable[[], bool]) -> Any:
        """The flight's result once it is done; while it runs, fail on a stall and
        give up (499) when the client has gone.  Takes one of ``max_waiting`` slots."""
        if not self._waiting.acquire(blocking=False):
            raise HubError(429, "the gateway is busy pulling other files from the registry; "
                           "retry shortly", None, {"Retry-After": "2"})  # fmt: skip
        try:
            size, progress = -1, time.monotonic()
            while not flight.done.wait(POLL_SECONDS):
                if gone():
                    raise HubError(499, "the client went away while the file was being pulled")
                now, grown = time.monotonic(), _size(partial)
                if grown != size:
                    size, progress = grown, now
                elif now - progress > STALL_SECONDS:
                    raise RegistryUnavailableError(
                        f"{partial.name}: no progress from the registry for {STALL_SECONDS:.0f}s"
                    )
            return flight.wait()
        finally:
            self._waiting.release()

    def verified_blob(self, model: Model, layer: Descriptor, gone: Callable[[], bool]) -> Path:
        """The path of a raw blob in the store, after it is pulled and verified."""
        flight = self.pull_blob(model, layer)
        return self.verified(flight, self.store.partial_path(layer), gone)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1
