"""``modelscope://ORG/NAME[@REVISION]``: a model on ModelScope, through its HTTP API.

No SDK needed: the file list (with sha256 per file) comes from
``/api/v1/models/{id}/repo/files`` and each file from ``/api/v1/models/{id}/repo``.
Files are verified against the listed sha256 and kept under
MODELPACK_HOME/sources/modelscope/<id>/<revision>/, so a second build needs no
download.  MODELSCOPE_ENDPOINT (or MODELSCOPE_DOMAIN) points at another
deployment; MODELSCOPE_API_TOKEN is sent as a bearer token for private models.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import requests

from ...errors import (
    AuthenticationError,
    ReferenceNotFoundError,
    RegistryUnavailableError,
)
from ...oci.digests import sha256_file
from ...oci.spec import Descriptor
from ...storage.partial import fill_partial
from ...storage.unpack import safe_relpath
from .hf import split_hub_source

SCHEME = "modelscope://"
DEFAULT_REVISION = "master"


@dataclass(frozen=True)
class ModelScopeSnapshot:
    path: Path
    model_id: str
    revision: str
    source_url: str


def endpoint() -> str:
    if value := os.environ.get("MODELSCOPE_ENDPOINT"):
        return value.rstrip("/")
    return "https://" + os.environ.get("MODELSCOPE_DOMAIN", "www.modelscope.cn")


def parse_modelscope_source(text: str) -> tuple[str, str]:
    model_id, revision = split_hub_source(text, SCHEME, "a ModelScope model")
    return model_id, revision or DEFAULT_REVISION


def _get(session: requests.Session, url: str, what: str, **kwargs) -> requests.Response:  # noqa: ANN003
    try:
        response = session.get(url, timeout=(15, 120), **kwargs)
    except requests.RequestException as exc:
        raise RegistryUnavailableError(f"cannot reach {endpoint()} for {what}: {exc}") from exc
    if response.status_code in (401, 403):
        raise AuthenticationError(
            f"{what}: {endpoint()} refused access", hint="set MODELSCOPE_API_TOKEN"
        )
    if response.status_code == 404:
        raise ReferenceNotFoundError(f"{what} not found on {endpoint()}")
    if response.status_code >= 400:
        raise RegistryUnavailableError(f"{what}: {endpoint()} answered HTTP {response.status_code}")
    return response


def download_modelscope(model_id: str, revision: str, cache_root: Path) -> ModelScopeSnapshot:
    what = f"modelscope://{model_id}@{revision}"
    base = f"{endpoint()}/api/v1/models/{model_id}/repo"
    session = requests.Session()
    if token := os.environ.get("MODELSCOPE_API_TOKEN"):
        session.headers["Authorization"] = f"Bearer {token}"
    listing = _get(
        session, f"{base}/files", what, params={"Revision": revision, "Recursive": "True"}
    ).json()
    files = [f for f in (listing.get("Data") or {}).get("Files") or [] if f.get("Type") == "blob"]
    if not files:
        raise ReferenceNotFoundError(f"{what} has no files")
    root = cache_root / model_id / revision
    for entry in files:
        relpath = safe_relpath(str(entry["Path"]), what)
        target = root.joinpath(*relpath.parts)
        expected = str(entry.get("Sha256") or "")
        if target.is_file() and expected and sha256_file(str(target))[0] == f"sha256:{expected}":
            continue
        _fetch_file(session, base, revision, str(relpath), target, entry, f"{what} {relpath}")
    commit = next((str(f["Revision"]) for f in files if f.get("Revision")), revision)
    return ModelScopeSnapshot(root, model_id, commit, f"{endpoint()}/models/{model_id}")


def _fetch_file(
    session: requests.Session,
    base: str,
    revision: str,
    relpath: str,
    target: Path,
    entry: dict,
    what: str,
) -> None:
    """Stream one file to ``target``, resuming a partial one, verified when a sha256 is listed."""
    expected, size = str(entry.get("Sha256") or ""), int(entry.get("Size") or 0)
    partial = target.with_name(f".{target.name}.partial")
    target.parent.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def opener(offset: int) -> Iterator[BinaryIO]:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        params = {"Revision": revision, "FilePath": relpath}
        with _get(session, base, what, params=params, headers=headers, stream=True) as response:
            if offset and response.status_code != 206:
                raise RegistryUnavailableError(f"{what}: the server cannot resume downloads")
            yield response.raw

    if expected and size:
        fill_partial(
            partial,
            Descriptor("application/octet-stream", f"sha256:{expected}", size),
            opener,
            what,
        )
    else:  # nothing to verify against: at least never leave a half file under the real name
        partial.unlink(missing_ok=True)
        with opener(0) as stream, open(partial, "wb") as out:
            while chunk := stream.read(1 << 20):
                out.write(chunk)
    os.replace(partial, target)
