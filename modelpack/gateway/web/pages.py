"""The web page for people: ``/`` lists and searches models, ``/{org}/{name}`` shows one.

Server-rendered HTML with one stylesheet (``static/hub.css``) and no scripts.  The same
access rules as the hub routes: every page asks the registry with the viewer's own
``Authorization``.  A browser sends Basic credentials (registry user and password) once
it was asked for them: ``/?signin=1`` and a page the registry refuses answer 401 with
``WWW-Authenticate: Basic``, so the browser prompts and then sends them for the whole site.

Everything that comes from outside (repo ids, tags, front matter, file names, the README)
is escaped; the README is rendered by markdown-it with raw HTML off (it shows as text),
links are markdown-it's validated ones (no ``javascript:``), and the Content-Security-
Policy allows no script at all, as a second wall.
"""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from html import escape
from importlib.resources import files as package_files
from typing import Any
from urllib.parse import quote

import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token

from ...display import human_size as display_size
from ...errors import ModelpackError
from ...registry.client import RegistryRepository
from ...signing.cosign import check_signatures, scan_signatures
from ...signing.sigstore import find_bundle_signatures
from ..core.config import GatewayConfig
from ..core.http import Request, Response
from ..core.hub import HubError, RepoFile, is_dataset, repo_not_found, shown_repo_id
from ..read.card import Card
from ..read.catalog import (
    Catalog,
    Entry,
    ListQuery,
    default_revision,
    hub_time,
    model_tags,
)
from ..read.models import Model, Resolver
from ..read.pullthrough import PullThrough
from ..read.scans import scan_badge

INDEX_PAGE = 60  # models per page of the listing
# Images from this gateway (a README's relative images are its files) and data: only:
# an image from elsewhere in a README would tell that host who reads which model.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
CARD_KEYS = ("license", "library_name", "pipeline_tag", "language", "base_model", "datasets",
             "tags")  # fmt: skip
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def e(value: Any) -> str:
    return escape(str(value), quote=True)


def url_path(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts)


def human_size(size: int | None) -> str:
    return "?" if size is None else display_size(size)


def render_markdown(text: str, files_url: str = "") -> str:
    """The README's markdown as HTML; raw HTML in it is shown as text.  A relative
    link or image (``![](images/arch.png)``) points at that file of the model
    (``files_url`` + path), as it does on the hub."""
    tokens = _MARKDOWN.parse(text)
    if files_url:
        for token in _walk(tokens):
            name = {"link_open": "href", "image": "src"}.get(token.type)
            value = token.attrGet(name) if name else None
            if isinstance(value, str) and _relative(value):
                path = posixpath.normpath(value.split("#", 1)[0].split("?", 1)[0])
                if path and not path.startswith(".."):
                    token.attrSet(name, files_url + path)  # type: ignore[arg-type]
    return _MARKDOWN.renderer.render(tokens, _MARKDOWN.options, {})


def _walk(tokens: list[Token]) -> Iterator[Token]:
    for token in tokens:
        yield token
        if token.children:
            yield from _walk(token.children)


def _relative(url: str) -> bool:
    """A path inside the repository: no scheme, host, absolute path or fragment only."""
    return bool(url) and not url.startswith(("/", "#", "?")) and ":" not in url.split("/")[0]


@dataclass(frozen=True)
class Signatures:
    state: str  # "verified" | "present" | "none" | "unknown"
    text: str


def basic_user(authorization: str | None) -> str | None:
    """The user name of Basic credentials (to say who is signed in), else None."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(value.strip(), validate=True).decode().partition(":")[0] or None
    except (binascii.Error, UnicodeDecodeError):
        return None


class Pages:
    def __init__(
        self, config: GatewayConfig, catalog: Catalog, resolver: Resolver, pulls: PullThrough
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.resolver = resolver
        self.pulls = pulls

    # -- responses ------------------------------------------------------------------

    def _html(self, status: int, title: str, body: str, request: Request,
              headers: dict[str, str] | None = None) -> Response:  # fmt: skip
        user = basic_user(request.header("Authorization"))
        who = (
            f"signed in as {e(user)}"
            if user
            else "signed in"
            if request.header("Authorization")
            else '<a href="/?signin=1">Sign in</a> (registry credentials)'
        )
        search = e((request.query.get("search") or [""])[-1])
        page = (
            "<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="stylesheet" href="/-/hub.css"></head><body>'
            '<header class="top"><a class="brand" href="/">modelpack hub</a>'
            '<form action="/" method="get" role="search">'
            f'<input type="search" name="search" value="{search}" placeholder="Search models">'
            f'</form><span class="who">{who}</span></header>'
            f"<main>{body}</main></body></html>\n"
        )
        return Response(
            status,
            {
                "Content-Type": "text/html; charset=utf-8",
                "Content-Security-Policy": CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin",
                "Cache-Control": "private, no-cache",
                "Vary": "Authorization",
                **(headers or {}),
            },
            page.encode(),
        )

    def error(self, request: Request, error: HubError) -> Response:
        """An error page; a refusal asks the browser for credentials."""
        headers = {}
        hint = ""
        if error.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="modelpack gateway", charset="UTF-8"'
            hint = "<p>Sign in with registry credentials that may read it.</p>"
        body = (
            f'<h1>{e(error.status)}</h1><div class="error">{e(error.message)}</div>{hint}'
            '<p><a href="/">All models</a></p>'
        )
        return self._html(error.status, f"{error.status}: modelpack hub", body, request, headers)

    def stylesheet(self) -> Response:
        css = package_files("modelpack.gateway.web").joinpath("static/hub.css").read_bytes()
        return Response(200, {"Content-Type": "text/css; charset=utf-8",
                              "Cache-Control": "public, max-age=300"}, css)  # fmt: skip

    # -- the listing ------------------------------------------------------------------

    def index(self, request: Request, datasets: bool = False) -> Response:
        """``/`` lists the models, ``/datasets`` the datasets."""
        authorization = request.header("Authorization")
        what, here = ("Datasets", "/datasets") if datasets else ("Models", "/")
        if request.flag("signin") and not authorization:
            return self.error(request, HubError(401, "Sign in to see the models you may read"))
        q = request.query
        search = (q.get("search") or [""])[-1].strip()
        try:
            number = max(1, int((q.get("page") or ["1"])[-1]))
        except ValueError:
            number = 1
        query = ListQuery(search=search.lower(), limit=INDEX_PAGE,
                          offset=(number - 1) * INDEX_PAGE, datasets=datasets)  # fmt: skip
        repositories = self.catalog.repositories()
        page, more = self.catalog.search(query, authorization)
        other = '<a href="/">Models</a>' if datasets else '<a href="/datasets">Datasets</a>'
        parts = [f"<h1>{what}{f' matching “{e(search)}”' if search else ''}</h1>",
                 f'<p class="muted" id="other-kind">{other}</p>']  # fmt: skip
        if not repositories.available:
            parts.append(f'<div class="notice">{e(repositories.reason)}. {what} are still '
                         "served by name: open /ORG/NAME.</div>")  # fmt: skip
        elif not page and not authorization:
            parts.append(f'<div class="notice">No {what.lower()} here can be read without '
                         f'credentials. <a href="{here}?signin=1">Sign in</a> to see yours.</div>')  # fmt: skip
        elif not page:
            parts.append(f'<p class="muted">No {what.lower()}.</p>')
        parts.append('<ul class="models">')
        parts += [self._list_item(entry) for entry in page]
        parts.append("</ul>")
        nav = []
        if number > 1:
            nav.append(
                f'<a href="{here}?search={quote(search)}&amp;page={number - 1}">← previous</a>'
            )
        if more:
            nav.append(f'<a href="{here}?search={quote(search)}&amp;page={number + 1}">next →</a>')
        if nav:
            parts.append(f'<p class="pages">{" · ".join(nav)}</p>')
        return self._html(200, "modelpack hub", "".join(parts), request)

    def _list_item(self, entry: Entry) -> str:
        href = url_path(*entry.repo_id.split("/"))
        badges = "".join(f'<span class="badge">{e(t)}</span>' for t in
                         (model_tags(entry.model, entry.card) if entry.model else [])[:8])  # fmt: skip
        revision = entry.revision
        shown_tags = ", ".join(entry.tags[:6]) + (" …" if len(entry.tags) > 6 else "")
        created = _config_time(entry.model)
        return (
            f'<li><a class="name" href="{e(href)}">{e(shown_repo_id(entry.repo_id))}</a>'
            f'<div class="muted">revision {e(revision)} · tags: {e(shown_tags)}'
            f"{f' · built {e(created[:10])}' if created else ''}</div>"
            f'<div class="badges">{badges}</div></li>'
        )

    # -- one model --------------------------------------------------------------------

    def model(self, request: Request, repo_id: str, revision: str | None) -> Response:
        authorization = request.header("Authorization")
        _, client = self.resolver.clients.for_header(authorization)
        tags = RegistryRepository(client, self.config.repository(repo_id)).user_tags()
        if not tags:
            raise repo_not_found(repo_id)
        revision = revision or default_revision(tags)
        model = self.resolver.open(repo_id, revision, authorization)
        files = self.pulls.listing(model)
        card = self.catalog.cards.card(model, files)
        signatures = self.signatures(model)
        base = request.base_url(self.config)
        kind = '<span class="badge">dataset</span> ' if is_dataset(repo_id) else ""
        body = (
            f"<h1>{kind}{e(shown_repo_id(repo_id))}</h1>"
            f'<div class="muted">revision <b>{e(revision)}</b> · commit <code>{e(model.commit)}'
            f"</code> · {len(files)} files, {e(human_size(sum(f.size or 0 for f in files.values())))}"
            "</div>"
            f"{self._badges(model, card, signatures)}"
            '<div class="layout"><section>'
            f"{self._card_html(card, url_path(*repo_id.split('/'), 'resolve', model.commit) + '/')}"
            f"<h2>Files</h2>{self._files(model, files)}"
            "</section><aside>"
            f"{self._revisions(repo_id, tags, revision)}"
            f"{self._snippets(base, model, revision)}"
            "</aside></div>"
        )
        return self._html(200, f"{shown_repo_id(repo_id)}: modelpack hub", body, request)

    def signatures(self, model: Model) -> Signatures:
        """Whether cosign-style signatures name this manifest, and with ``--verify-key``
        whether one is valid by that key (else the gateway would not have opened it)."""
        try:
            if self.resolver.public_key is not None:
                display = f"{self.config.host}/{model.repository.name}"
                result = check_signatures(
                    model.repository, model.root, self.resolver.public_key, display
                )
                if result.valid:
                    return Signatures("verified", f"signature verified with key {result.key_id}")
                return Signatures("none", f"no valid signature by key {result.key_id}")
            found = len(scan_signatures(model.repository, model.root).found)
            found += sum(
                1
                for bundle in find_bundle_signatures(model.repository, model.root)
                if bundle.is_cosign_signature()
            )
        except ModelpackError:
            return Signatures("unknown", "signatures could not be read")
        if found:
            return Signatures("present", f"{found} cosign signature(s), not verified here "
                              "(this gateway has no --verify-key)")  # fmt: skip
        return Signatures("none", "not signed")

    def _badges(self, model: Model, card: Card | None, signatures: Signatures) -> str:
        css = {"verified": "sig-ok", "present": "sig-some"}.get(signatures.state, "sig-none")
        badges = [f'<span class="badge {css}" id="signature">{e(signatures.text)}</span>']
        shown: set[str] = set()
        data = card.data if card else {}
        for key in (*CARD_KEYS, *sorted(k for k in data if k not in CARD_KEYS)):
            for value in _values(data.get(key))[:12]:
                label = "" if key == "tags" else f"<b>{e(key)}</b>"  # tags as the hub shows them
                badges.append(f'<span class="badge">{label}{e(value)}</span>')
                shown.add(str(value))
            if len(badges) > 40:
                break
        badges += [f'<span class="badge">{e(t)}</span>' for t in model_tags(model)
                   if t not in shown and t.split(":")[-1] not in shown]  # fmt: skip
        return f'<div class="badges">{"".join(badges)}</div>'

    def _card_html(self, card: Card | None, files_url: str) -> str:
        if card is None:
            return '<div class="card"><p class="muted">This repo has no README.</p></div>'
        warnings = "".join(f'<div class="notice">{e(w)}</div>' for w in card.warnings)
        return f'{warnings}<article class="card" id="readme">{render_markdown(card.text, files_url)}</article>'

    def _files(self, model: Model, files: dict[str, RepoFile]) -> str:
        rows = []
        repo = model.repo_id.split("/")
        for path, f in sorted(files.items()):
            href = url_path(*repo, "resolve", model.commit, *path.split("/"))
            rows.append(
                f'<tr><td><a href="{e(href)}">{e(path)}</a>{scan_badge(f)}</td>'
                f'<td class="size">{e(human_size(f.size))}</td></tr>'
            )
        return f'<table class="files" id="files">{"".join(rows)}</table>'

    def _revisions(self, repo_id: str, tags: list[str], current: str) -> str:
        links = []
        for tag in tags[:100]:
            href = url_path(*repo_id.split("/"), "tree", tag)
            css = ' class="current"' if tag == current else ""
            links.append(f'<a{css} href="{e(href)}">{e(tag)}</a>')
        more = f" and {len(tags) - 100} more" if len(tags) > 100 else ""
        return f'<h2>Revisions</h2><p class="revisions">{" · ".join(links)}{e(more)}</p>'

    def _snippets(self, base: str, model: Model, revision: str) -> str:
        repo_id = shown_repo_id(model.repo_id)
        name = repo_id.split("/")[-1]
        registry_ref = f"{self.config.host}/{model.repository.name}"
        kind = ', repo_type="dataset"' if is_dataset(model.repo_id) else ""
        python = (
            f"export HF_ENDPOINT={base}\n"
            "python -c 'from huggingface_hub import snapshot_download; "
            f"print(snapshot_download({json.dumps(repo_id)}{kind}, "
            f"revision={json.dumps(revision)}))'"
        )
        pull = f"modelpack pull {registry_ref}:{revision} -o ./{name}"
        init = yaml.safe_dump(
            {
                "initContainers": [
                    {
                        "name": "fetch-model",
                        "image": "registry.example.com/tools/modelpack-init:0.1.0",
                        "env": [
                            {
                                "name": "MODELPACK_REF",
                                "value": f"{registry_ref}@{model.root.digest}",
                            },
                            {"name": "MODELPACK_TARGET", "value": f"/models/{name}"},
                        ],
                        "volumeMounts": [{"name": "models", "mountPath": "/models"}],
                    }
                ]
            },
            sort_keys=False,
        )
        return (
            "<h2>Use it</h2>"
            f'<p class="muted">Hugging Face clients</p><pre id="snippet-hf"><code>{e(python)}'
            "</code></pre>"
            f'<p class="muted">modelpack</p><pre id="snippet-pull"><code>{e(pull)}</code></pre>'
            '<p class="muted">Kubernetes init container (the image of '
            "examples/kubernetes/Dockerfile)</p>"
            f'<pre id="snippet-k8s"><code>{e(init)}</code></pre>'
        )


def _values(value: Any) -> list[str]:
    if value is None or isinstance(value, dict):
        return []
    items = value if isinstance(value, list) else [value]
    return [str(v) for v in items if v is not None and not isinstance(v, dict | list)]


def _config_time(model: Model | None) -> str | None:
    config = model.view.config if model else None
    return hub_time(config.descriptor.created_at if config else None)
