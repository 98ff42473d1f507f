"""The WSGI application: hub routes -> resolver -> node cache, one log line per request."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote

from ..errors import (
    AuthenticationError,
    ModelpackError,
)
from .core.config import GatewayConfig
from .core.crosssite import refuse_cross_site
from .core.http import (
    REPLAY_LOCATION,
    Body,
    ClosingFile,
    CountingInput,
    Replay,
    Request,
    Response,
    read_range,
)
from .core.hub import (
    DATASETS,
    HubError,
    api_repo_path,
    canonical_repo_id,
    is_dataset,
    repo_not_found,
    repo_spans,
    valid_repo_segments,
)
from .git.routes import GitRoutes
from .read.catalog import Catalog, list_models
from .read.handlers import Handlers
from .read.handoff import Handoff
from .read.hub_errors import hub_error
from .read.models import Resolver
from .read.pullthrough import PullThrough
from .read.xet import XetReads
from .state.access import Clients
from .state.audit import Audit
from .state.metrics import Metrics
from .state.shared import open_shared
from .upstream.importer import FILE_WAIT, Upstream
from .web.pages import Pages
from .writes.uploads import Uploads

log = logging.getLogger("modelpack.gateway")
MODEL_OPS = ("revision", "tree", "paths-info", "xet-read-token")
OTHER_REPO_TYPES = ("spaces", "kernels")


class Gateway:
    """``Gateway(config)`` is a WSGI callable; see :func:`modelpack.gateway.make_app`."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.shared = open_shared(config)  # in this process, or Redis for replicas
        self.audit = Audit(config, self.metrics, self.shared)
        self.clients = Clients(config)
        self.resolver = Resolver(config, self.clients, self.shared)
        self.pulls = PullThrough(config.settings, self.metrics, config.max_pulls or 1)
        self.upstream = (
            Upstream(config, self.resolver, self.metrics, self.audit) if config.upstream else None
        )
        self.catalog = Catalog(config, self.clients, self.resolver, self.pulls)
        self.pages = Pages(config, self.catalog, self.resolver, self.pulls)
        self.uploads = Uploads(config, self.clients, self.resolver, self.shared)
        self.git = GitRoutes(config, self.resolver, self.uploads)
        handoff = Handoff(config.accel_redirect, config.settings.home, config.trusted_proxies)
        self.xet_reads = XetReads(config, self.clients, self.shared)
        self.reads = Handlers(self.pulls, self.catalog, handoff, self.xet_reads)

    # -- WSGI -------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        started = time.monotonic()
        environ["wsgi.input"] = CountingInput(environ.get("wsgi.input"))  # bytes received
        request = Request.from_environ(environ)
        route = "other"
        try:
            route, response = self.route(request)
            if request.on_lane and not _lane_answer(request, response):
                raise Replay
        except Replay:
            return _replay(start_response)
        except HubError as exc:
            if request.on_lane:  # the threads answer it, with its log line and audit
                return _replay(start_response)
            route = request.audit.get("route", route)  # as far as routing got
            response = Response.error(exc)
        except Exception:
            log.exception("%s %s failed", request.method, request.shown_path)
            if request.on_lane:
                return _replay(start_response)
            response = Response.error(HubError(500, "internal error in the gateway"))
        if request.method == "HEAD":  # GET's headers, its length included; no body
            if response.file is not None or response.handoff:
                response.headers.setdefault("Content-Length", str(response.length))
            if response.file is not None:
                response.file.close()
            response.body, response.file, response.handoff = b"", None, ""
        # No answer is ever to be sniffed into HTML (a model's files are anyone's bytes).
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        status = response.status

        def finished(sent: int, failed: bool = False) -> None:
            if response.source and sent:
                self.metrics.served_bytes(response.source, sent)
            self.metrics.request(request.method, route, status)
            log.info(
                "%s %s %s %d %dB%s%s %.1fms%s",
                environ.get("REMOTE_ADDR", "-"),
                request.method,
                request.shown_path,  # never an LFS upload's ticket
                status,
                sent,
                f" {response.source}" if response.source and sent else "",
                " lane" if request.on_lane else "",  # answered by the download lane
                (time.monotonic() - started) * 1000,
                " (cut)" if failed else "",
            )
            self.audit.request_done(
                request, route, status, sent, response.headers.get("X-Error-Message")
            )

        if response.handoff:  # the proxy sends the bytes (read/handoff.py)
            response.headers.update({"X-Accel-Redirect": response.handoff, "Content-Length": "0"})
            start_response(response.status_line(), list(response.headers.items()))
            finished(response.length)
            return [b""]
        if response.file is not None:
            response.headers["Content-Length"] = str(response.length)
            start_response(response.status_line(), list(response.headers.items()))
            return self._send_file(environ, response, finished)
        if isinstance(response.body, bytes):
            response.headers.setdefault("Content-Length", str(len(response.body)))
            start_response(response.status_line(), list(response.headers.items()))
            finished(len(response.body))
            return [response.body]
        start_response(response.status_line(), list(response.headers.items()))
        return Body(response.body, finished)

    def _send_file(self, environ: dict[str, Any], response: Response, finished: Any) -> Any:
        file = response.file
        assert isinstance(file, ClosingFile)
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None and str(environ.get("SERVER_SOFTWARE", "")).startswith("gunicorn"):
            # gunicorn sends Content-Length bytes from the file's position with sendfile(2).
            file.seek(response.offset)

            def sent() -> None:  # sendfile leaves the file after the last byte it sent
                count = max(0, min(file.position - response.offset, response.length))
                finished(count, count < response.length)

            file.on_close = sent
            return wrapper(file, 1 << 20)
        return Body(read_range(file, response.offset, response.length), finished)

    # -- routing ----------------------------------------------------------------

    def route(self, request: Request) -> tuple[str, Response]:
        refuse_cross_site(request, self.config)  # before any route: every write is covered
        if request.on_lane:  # the download lane answers downloads only
            if (answered := self._resolve(request)) is None:
                raise Replay
            return answered
        s = request.segments
        if s == ["healthz"]:
            return "healthz", Response.json({"status": "ok"})
        if s == ["metrics"]:
            return "metrics", Response.text(
                self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8"
            )
        if (answered := self.xet_reads.route(request)) is not None:  # Xet downloads
            return answered
        if (answered := self.uploads.route(request)) is not None:
            return answered
        if (answered := self.git.route(request)) is not None:
            return answered
        if s in (["api", "models"], ["api", DATASETS]):
            request.audit["route"] = "list"
            return "list", list_models(self.catalog, request, datasets=s[1] == DATASETS)
        if (page := self._page(request)) is not None:
            return "page", page
        if len(s) >= 3 and s[0] == "api" and s[1] in OTHER_REPO_TYPES:
            raise repo_not_found(
                "/".join(s[2:4]), f"this gateway serves models and datasets, not {s[1]}"
            )
        if len(s) >= 3 and s[0] == "api" and s[1] in ("models", DATASETS):
            return self._api_models(request, api_repo_path(s))
        if (answered := self._resolve(request)) is not None:
            return answered
        raise HubError(404, "Not Found")

    def _resolve(self, request: Request) -> tuple[str, Response] | None:
        """``[datasets/]ORG/NAME/resolve/REV/PATH``: a file; None for any other path."""
        if (target := _resolve_target(request.segments)) is None:
            return None
        repo, revision, path = target
        if repo[0] in OTHER_REPO_TYPES:
            raise repo_not_found("/".join(repo[1:]), "this gateway serves models and datasets only")
        request.audit["path"] = path
        return "resolve", self._guarded(request, repo, revision, self.reads.resolve, path)

    def repository_of(self, raw_path: str) -> str | None:
        """The registry repository a ``resolve`` URL reads (None: not one): what the
        download lane asks Redis about before the request is answered."""
        target = _servable_target(Request.from_environ({"RAW_URI": raw_path}).segments)
        return None if target is None else self.config.repository(target[0])

    def warm(self, environ: dict[str, Any], fresh: bool = False) -> str:
        """Keep in this process what the download lane needs to answer this download next
        time (gateway/lane.py: with ``--workers`` above 1, the threads that answered it may
        be another process's): the registry's answer to its credentials, the manifest, the
        file's seal.  Never a pull, an import, a log or audit line: the client's request is
        answered, and recorded, by the threads (or was, by the lane).  ``fresh``: ask the
        registry even if its answer is kept (it is near its end: state/authcache.py).
        ``kept``, ``pending`` (the file is not in the node cache yet), ``refused`` (the
        credentials) or ``missing`` (anything else)."""
        request = Request.from_environ(environ)
        if (target := _servable_target(request.segments)) is None:
            return "missing"
        repo_id, revision, path = target
        try:
            model = self.resolver.open(
                repo_id, revision, request.header("Authorization"), fresh=fresh
            )
            f = self.pulls.listing(model, kept_only=True).get(path)
            if f is None:
                return "missing"
            # not yet in the node cache (its first download is still being pulled): later
            return "kept" if self.pulls.cached_path(model, f) is not None else "pending"
        except (ModelpackError, HubError, Replay) as exc:
            log.debug("download lane: not kept for %s: %s", request.shown_path, exc)
            refused = isinstance(exc, AuthenticationError) or (
                isinstance(exc, HubError) and exc.status in (401, 403)
            )
            return "refused" if refused else "missing"

    def _page(self, request: Request) -> Response | None:
        """The web page (web/pages.py): ``/``, ``/datasets``, ``/-/hub.css``,
        ``[/datasets]/ORG/NAME[/tree/REV]``."""
        s, repo, revision = request.segments, request.segments, None
        for n in repo_spans(s):
            if len(s) == n + 2 and s[n] == "tree":
                repo, revision = s[:n], s[n + 1]
                break
        if s == ["-", "hub.css"]:
            return self.pages.stylesheet()
        listing = s in ([], [DATASETS])
        if not listing and (not valid_repo_segments(repo) or s[0] == "api"):
            return None
        if request.method not in ("GET", "HEAD"):
            raise HubError(
                405, f"{request.method} is not allowed here", None, {"Allow": "GET, HEAD"}
            )
        repo_id = "/".join(repo)
        request.audit.update(route="page", repo=None if listing else repo_id, revision=revision)
        if not listing and canonical_repo_id(repo_id) != repo_id:
            return self._redirect(request, repo, canonical_repo_id(repo_id))
        try:
            if listing:  # refused credentials: a 401 asks again
                return self.pages.index(request, datasets=bool(s))
            return self.pages.model(request, repo_id, revision)
        except ModelpackError as exc:
            log.warning("%s %s: %s", request.method, request.path, exc)
            return self.pages.error(request, hub_error(exc, repo_id))
        except HubError as exc:
            return self.pages.error(request, exc)

    def _api_models(self, request: Request, rest: list[str]) -> tuple[str, Response]:
        for n in repo_spans(rest):
            if len(rest) > n and rest[n] in MODEL_OPS:
                op, args = rest[n], rest[n + 1 :]
                if op == "revision" and len(args) == 1:
                    return "info", self._guarded(request, rest[:n], args[0], self.reads.info)
                if op == "tree" and args:
                    under = "/".join(args[1:])
                    return "tree", self._guarded(request, rest[:n], args[0], self.reads.tree, under)
                if op == "xet-read-token" and len(args) == 1:
                    return "xet-read-token", self._guarded(
                        request, rest[:n], args[0], self.reads.xet_read_token
                    )
                if op == "paths-info" and len(args) == 1:
                    return "paths-info", self._guarded(
                        request, rest[:n], args[0], self.reads.paths_info
                    )
                raise HubError(404, "Not Found")
        if len(rest) in repo_spans(rest):
            # Dragonfly's hf:// backend asks /api/models/{repo}?revision=... for a listing.
            revision = (request.query.get("revision") or ["main"])[-1] or "main"
            return "info", self._guarded(request, rest, revision, self.reads.info)
        raise HubError(404, "Not Found")

    def _guarded(
        self, request: Request, repo: list[str], revision: str, handler, *args
    ) -> Response:  # noqa: ANN001
        """Check method and repo id, redirect to the canonical id, open the model, map errors."""
        names = {self.reads.resolve: "resolve", self.reads.info: "info",
                 self.reads.tree: "tree", self.reads.paths_info: "paths-info",
                 self.reads.xet_read_token: "xet-read-token"}  # fmt: skip
        request.audit.update(route=names[handler], repo="/".join(repo), revision=revision)
        allowed = ("POST",) if handler == self.reads.paths_info else ("GET", "HEAD")
        if request.method not in allowed:
            raise HubError(405, f"{request.method} is not allowed here", None,
                           {"Allow": ", ".join(allowed)})  # fmt: skip
        repo_id = "/".join(repo)
        if not valid_repo_segments(repo):
            raise repo_not_found(repo_id, "not a valid repo id")
        canonical = canonical_repo_id(repo_id)
        if canonical != repo_id:
            return self._redirect(request, repo, canonical)
        try:
            authorization = request.header("Authorization")
            if request.on_lane:  # kept answers only: an import is the threads' to start
                model = self.resolver.open(repo_id, revision, authorization, kept_only=True)
            elif self.upstream is not None and not is_dataset(repo_id):
                # the registry, else an import from the upstream hub (of models only)
                wait = FILE_WAIT if handler == self.reads.resolve else None
                who = self.audit.who(request)
                model = self.upstream.open(repo_id, revision, authorization, wait, who)
            else:
                model = self.resolver.open(repo_id, revision, authorization)
            return handler(request, model, *args)
        except ModelpackError as exc:
            log.warning("%s %s: %s", request.method, request.path, exc)  # the detail stays here
            raise hub_error(exc, repo_id) from None

    def _redirect(self, request: Request, repo: list[str], canonical: str) -> Response:
        """307 to the same URL under the canonical repo id, with a relative Location,
        as the hub answers for a renamed repository (huggingface_hub follows it)."""
        old = "/" + "/".join(quote(part, safe="") for part in repo)
        new = "/" + "/".join(quote(part, safe="") for part in canonical.split("/"))
        location = request.path.replace(old, new, 1)
        if query := request.environ.get("QUERY_STRING"):
            location += f"?{query}"
        return Response(307, {"Location": location}, b"")


def _resolve_target(s: list[str]) -> tuple[list[str], str, str] | None:
    """(repo segments, revision, file path) of a ``resolve`` URL's segments."""
    for n in repo_spans(s):
        if len(s) > n + 2 and s[n] == "resolve":
            return s[:n], s[n + 1], "/".join(s[n + 2 :])
    return None


def _servable_target(s: list[str]) -> tuple[str, str, str] | None:
    """(repo id, revision, file path) of a ``resolve`` URL ``_guarded`` would open as it is
    (a model or dataset, a valid id, no redirect to the canonical one); None otherwise."""
    if (target := _resolve_target(s)) is None or target[0][0] in OTHER_REPO_TYPES:
        return None
    repo, revision, path = target
    repo_id = "/".join(repo)
    if not valid_repo_segments(repo) or canonical_repo_id(repo_id) != repo_id:
        return None
    return repo_id, revision, path


def _lane_answer(request: Request, response: Response) -> bool:
    """What the download lane may send itself: headers only (a handed-off download, a HEAD,
    a 304, an empty file), never bytes from a file or a stream."""
    if response.handoff:
        return True
    return (
        response.file is None
        and response.body == b""
        and (request.method == "HEAD" or response.status in (200, 304))
    )


def _replay(start_response: Any) -> list[bytes]:
    """nginx answers ``X-Accel-Redirect: @location`` by sending the same request, method
    and headers unchanged, to that named location: the gateway's threads."""
    start_response("200 OK", [("X-Accel-Redirect", REPLAY_LOCATION), ("Content-Length", "0")])
    return [b""]
