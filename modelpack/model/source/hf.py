"""``hf://ORG/NAME[@REVISION]``: a model on a Hugging Face-compatible hub, or in the local HF cache.

Downloads go through ``huggingface_hub.snapshot_download``, so everything it
honours applies: HF_ENDPOINT (mirrors, private hubs), HF_TOKEN, HF_HUB_CACHE,
HF_HUB_OFFLINE, hf-xet where installed.  The files land in the HF cache and
are hardlinked from there into the store, not copied again.  With the hub
offline or unreachable, a revision already in the cache is used as it is.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ...errors import (
    AuthenticationError,
    ReferenceNotFoundError,
    RegistryUnavailableError,
    SourceError,
)
from ...extras import require
from ...oci.spec import ANNOTATION_HF_COMMIT, ANNOTATION_HF_REPO_ID

SCHEME = "hf://"
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_CACHE_SNAPSHOT_RE = re.compile(
    r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<commit>[0-9a-f]{40})/?$"
)


@dataclass(frozen=True)
class HubSnapshot:
    path: Path
    repo_id: str
    commit: str
    source_url: str | None

    @property
    def annotations(self) -> dict[str, str]:
        return {ANNOTATION_HF_REPO_ID: self.repo_id, ANNOTATION_HF_COMMIT: self.commit}


def parse_hf_source(text: str) -> tuple[str, str | None]:
    """``hf://org/name@rev`` -> (``org/name``, ``rev`` or None)."""
    return split_hub_source(text, SCHEME, "a Hugging Face model")


def split_hub_source(text: str, scheme: str, kind: str) -> tuple[str, str | None]:
    """``SCHEME org/name@rev`` (scheme optional) -> (``org/name``, ``rev`` or None); hubs
    that mirror Hugging Face (ModelScope) name their models the same way."""
    body = text[len(scheme) :] if text.startswith(scheme) else text
    repo_id, _, revision = body.partition("@")
    repo_id = repo_id.strip("/")
    if not _REPO_RE.match(repo_id):
        raise SourceError(f"{text!r} is not {kind}: expected {scheme}ORG/NAME[@REVISION]")
    return repo_id, revision or None


def snapshot_in_hf_cache(path: Path) -> HubSnapshot | None:
    """A local path like ``.../models--org--name/snapshots/<sha>`` names its repo and commit."""
    match = _CACHE_SNAPSHOT_RE.search(path.resolve().as_posix())
    if not match:
        return None
    return HubSnapshot(path, f"{match['org']}/{match['name']}", match["commit"], None)


def _quiet_tqdm():  # noqa: ANN202 - a tqdm class
    from huggingface_hub.utils import tqdm

    class Quiet(tqdm):
        def __init__(self, *args, **kwargs):  # noqa: ANN002, ANN003
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Quiet


def download_snapshot(
    repo_id: str,
    revision: str | None,
    *,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    endpoint: str | None = None,
    token: str | bool | None = None,
    cache_dir: Path | None = None,
) -> HubSnapshot:
    """snapshot_download, with its failures turned into modelpack errors.

    ``endpoint`` / ``token`` / ``cache_dir`` default to huggingface_hub's own
    (HF_ENDPOINT, HF_TOKEN, HF_HUB_CACHE); ``token=False`` sends none."""
    require("huggingface_hub", purpose="hf:// sources", extra="hf")
    from huggingface_hub import constants, snapshot_download

    what = f"hf://{repo_id}" + (f"@{revision}" if revision else "")
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    with hub_errors(what, endpoint):
        path = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=list(include) or None,
            ignore_patterns=list(exclude) or None,
            tqdm_class=None if sys.stderr.isatty() else _quiet_tqdm(),
            endpoint=endpoint,
            token=token,
            cache_dir=cache_dir,
        )
    snapshot = Path(path)
    commit = snapshot.name if _COMMIT_RE.match(snapshot.name) else (revision or "")
    return HubSnapshot(snapshot, repo_id, commit, f"{endpoint}/{repo_id}")


@contextmanager
def hub_errors(what: str, endpoint: str) -> Iterator[None]:
    """huggingface_hub's failures as modelpack errors."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except GatedRepoError as exc:
        raise AuthenticationError(
            f"{what} is gated on {endpoint}", hint="accept its terms on the hub and set HF_TOKEN"
        ) from exc
    except RevisionNotFoundError as exc:
        raise ReferenceNotFoundError(f"{what}: revision not found on {endpoint}") from exc
    except RepositoryNotFoundError as exc:
        raise ReferenceNotFoundError(
            f"{what} not found on {endpoint}",
            hint="check the name; if it is private, set HF_TOKEN (and HF_ENDPOINT for a private hub)",
        ) from exc
    except LocalEntryNotFoundError as exc:
        if constants.HF_HUB_OFFLINE:
            raise ReferenceNotFoundError(
                f"{what} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1",
                hint="download it once with the hub reachable, or unset HF_HUB_OFFLINE",
            ) from exc
        raise RegistryUnavailableError(
            f"cannot reach {endpoint} and {what} is not in the local Hugging Face cache",
            hint="check the network or HF_ENDPOINT",
        ) from exc
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise AuthenticationError(
                f"{what}: {endpoint} refused access", hint="set HF_TOKEN"
            ) from exc
        raise RegistryUnavailableError(f"{what}: {endpoint} answered {status}: {exc}") from exc
    except Exception as exc:
        # The HTTP library's connect/read failures (httpx, or httpx2 in newer releases).
        if type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "requests"):
            raise RegistryUnavailableError(
                f"cannot reach {endpoint} for {what}: {type(exc).__name__}",
                hint="check the network or HF_ENDPOINT",
            ) from exc
        raise
