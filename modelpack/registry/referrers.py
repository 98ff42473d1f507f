"""OCI 1.1 referrers: the referrers API, and the tag schema where it is missing.

A registry without the API (distribution 2.8 answers 404) keeps an image
index tagged ``sha256-<hex>`` listing the manifests whose ``subject`` is
that digest; we read it and, after pushing a referrer, update it, as
oras-go and cosign do.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..digests import parse_digest, sha256_bytes
from ..errors import ReferenceNotFoundError
from ..spec import MEDIA_TYPE_OCI_INDEX, Descriptor, canonical_json
from .transport import raise_for_status

if TYPE_CHECKING:
    from .repository import RegistryRepository


def referrers_tag(digest: str) -> str:
    alg, hexpart = parse_digest(digest)
    return f"{alg}-{hexpart}"


def referrer_descriptor(desc: Descriptor, document: dict) -> Descriptor:
    """How a referrer manifest is listed in a referrers index."""
    artifact_type = document.get("artifactType") or (document.get("config") or {}).get("mediaType")
    return Descriptor(
        media_type=desc.media_type,
        digest=desc.digest,
        size=desc.size,
        artifact_type=artifact_type,
        annotations=dict(document.get("annotations") or {}),
    )


def _tag_schema_index(repo: RegistryRepository, subject_digest: str) -> list[dict]:
    try:
        index_desc = repo.resolve(referrers_tag(subject_digest))
    except ReferenceNotFoundError:
        return []
    with repo.fetch(index_desc) as stream:
        document = json.loads(stream.read())
    return list(document.get("manifests") or [])


def list_referrers(
    repo: RegistryRepository, subject: Descriptor, artifact_type: str | None = None
) -> list[Descriptor]:
    params = {"artifactType": artifact_type} if artifact_type else {}
    response = repo.client.request(
        "GET",
        repo._path("referrers", subject.digest),
        repo.pull_scope,
        headers={"Accept": MEDIA_TYPE_OCI_INDEX},
        params=params,
    )
    with response:
        if response.status_code == 200 and response.headers.get("Content-Type", "").startswith(
            MEDIA_TYPE_OCI_INDEX
        ):
            entries = list(response.json().get("manifests") or [])
            repo.referrers_api = True
        elif response.status_code in (404, 400, 405):
            repo.referrers_api = False
            entries = _tag_schema_index(repo, subject.digest)
        else:
            raise_for_status(response, f"listing referrers of {subject.digest}")
            entries = []
    found = [Descriptor.from_dict(entry) for entry in entries]
    if artifact_type:
        found = [d for d in found if d.artifact_type == artifact_type]
    return found


def index_referrer(repo: RegistryRepository, subject_digest: str, referrer: Descriptor) -> None:
    """Add ``referrer`` to the tag-schema index of ``subject_digest`` (if not there)."""
    entries = _tag_schema_index(repo, subject_digest)
    if any(entry.get("digest") == referrer.digest for entry in entries):
        return
    entries.append(referrer.to_dict())
    document = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": entries}
    data = canonical_json(document)
    desc = Descriptor(MEDIA_TYPE_OCI_INDEX, sha256_bytes(data), len(data))
    repo.put_manifest(desc, data, referrers_tag(subject_digest))
