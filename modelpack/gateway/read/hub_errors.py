"""A library error as the hub says it: the status, ``X-Error-Code`` and message that
huggingface_hub turns into its own errors. One mapping for every route: reads, writes and
the upstream's imports (which add their own cases first)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from ...errors import (
    AuthenticationError,
    IntegrityError,
    LeaseLostError,
    ModelpackError,
    NotFoundError,
    RegistryPolicyError,
    RegistryUnavailableError,
    SharedStateUnavailableError,
    UsageError,
)
from ..core.http import Request
from ..core.hub import HubError, repo_not_found
from .models import SignatureRefusedError

log = logging.getLogger("modelpack.gateway")


def hub_error(exc: ModelpackError, repo_id: str) -> HubError:
    """A library error as the hub would say it (what huggingface_hub maps to its errors).

    The client sees the repo id it asked for and what kind of failure it was, never
    the library's message: that names registry hosts, namespaces and digests of the
    deployment (the gateway log keeps it, see ``Gateway._guarded``)."""
    if isinstance(exc, AuthenticationError):
        # The hub answers 401 RepoNotFound for private repos too: existence is not revealed.
        return HubError(401, f"Repository not found or access denied: {repo_id}", "RepoNotFound")
    # "GatedRepo" makes huggingface_hub raise (GatedRepoError, with this message)
    # instead of hiding the refusal behind "check your connection".
    if isinstance(exc, SignatureRefusedError):
        return HubError(403, f"{repo_id}: refused: {SIGNATURE_REFUSED}", "GatedRepo")
    if isinstance(exc, IntegrityError):
        return HubError(403, f"{repo_id}: refused: {INTEGRITY_REFUSED}", "GatedRepo")
    if isinstance(exc, NotFoundError):
        return repo_not_found(repo_id)
    if isinstance(exc, LeaseLostError):
        return HubError(503, f"{repo_id}: {exc}", None, {"Retry-After": "5"})
    if isinstance(exc, SharedStateUnavailableError):  # names no host: that is in the log
        return HubError(503, f"{repo_id}: the gateway's shared state is unavailable; "
                        "try again later", None, {"Retry-After": "5"})  # fmt: skip
    if isinstance(exc, RegistryUnavailableError):
        return HubError(502, f"{repo_id}: the registry behind this gateway is unavailable; "
                        "try again later")  # fmt: skip
    if isinstance(exc, UsageError):
        return HubError(400, f"{repo_id}: the gateway cannot serve this request")
    if isinstance(exc, RegistryPolicyError):
        return policy_refusal(exc, repo_id)
    return HubError(502, f"{repo_id}: the registry behind this gateway answered with an error")


@contextlib.contextmanager
def shared_state_guard(request: Request) -> Iterator[None]:
    """The shared state out of reach (Redis) on a route that names no repository (the Xet
    CAS): a 503 the client retries, the detail in the log."""
    try:
        yield
    except SharedStateUnavailableError as exc:
        log.warning("%s %s: %s", request.method, request.path, exc)
        raise HubError(503, "the gateway's shared state is unavailable; try again", None,
                       {"Retry-After": "5"}) from None  # fmt: skip


def policy_refusal(exc: RegistryPolicyError, repo_id: str) -> HubError:
    """A rule the registry's operators set refused a write (Harbor: a tag immutability
    rule, a project's storage quota): the client's request, not the gateway, is what
    cannot go through, so a 4xx naming the rule, never a 5xx the client would retry."""
    text = str(exc)
    if "tag immutability rule" in text:
        return HubError(409, f"{repo_id}: the registry refused to move the branch or tag: a "
                        "tag immutability rule protects it; commit to another branch, or ask "
                        "a project admin to change the rule")  # fmt: skip
    if "storage quota" in text:
        return HubError(413, f"{repo_id}: the commit would exceed the project's storage quota "
                        "in the registry; ask an admin to raise it")  # fmt: skip
    return HubError(403, f"{repo_id}: a policy of the registry refused the write")


SIGNATURE_REFUSED = "the model has no valid signature by the key this gateway requires"
INTEGRITY_REFUSED = (
    "the bytes the registry sent failed verification against their digest; "
    "nothing was served or cached, try again later"
)
