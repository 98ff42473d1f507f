"""Protected branches and tags (``serve --protect PATTERN``): once a branch or tag whose
name matches a pattern exists, no commit, tag creation or deletion through the gateway
moves it.

One function, :func:`refuse_protected`, called by every write route before it reads a
byte of the request's payload or writes anything to the registry: a commit (and the
preupload, LFS batch and Xet token requests that come before one, so a client is told
before it uploads), ``create_branch``, ``create_tag``, ``delete_branch``, ``delete_tag``
and ``super_squash_history``.  ``create_repo`` writes only to a repository without tags.
The refusal is a 403 in the hub's format (huggingface_hub raises ``HfHubHTTPError`` with
the message, and no ``exist_ok`` swallows it as it would a 409) and an audit line.

A name that matches but does not exist yet may be created (that is how a release tag is
made); from then on it stays.  Whether it exists is asked of the registry, with the
client's credentials, only for names that match.  The check and the write happen under
the name's branch lock (writes/uploads.py), which with ``--redis`` is the lease every
replica takes in Redis (state/shared.py): of two replicas creating the same protected
name at once, one creates it and the other is refused.  Every replica is given the same
``--protect``, as the same ``--registry``.  Gateways that share no Redis share no lock:
two of them creating the same protected name at the same moment can both succeed (OCI
tags have no compare-and-swap), the later one naming the tag.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from ...errors import NotFoundError
from ...registry.client import RegistryRepository
from ..core.config import GatewayConfig
from ..core.hub import HubError


def protecting(config: GatewayConfig, name: str) -> str | None:
    """The first ``--protect`` pattern ``name`` matches (case-sensitive, as OCI tags
    are), or None."""
    return next((p for p in config.protect if fnmatchcase(name, p)), None)


def refuse_protected(
    config: GatewayConfig, repository: RegistryRepository, repo_id: str, name: str, write: str
) -> None:
    """A 403 if ``name`` is protected and exists in ``repository``; ``write`` says what
    was asked ("commit to", "create", "delete", "squash")."""
    pattern = protecting(config, name)
    if pattern is None:
        return
    try:
        repository.resolve(name)
    except NotFoundError:
        return  # not there yet: creating it is how a protected name comes to be
    raise HubError(
        403,
        f"{repo_id}: cannot {write} {name}: it is protected on this gateway (it matches "
        f"--protect {pattern!r}); once it exists no commit, tag or deletion moves it. "
        "Commit to another branch, or make a new tag",
    )
