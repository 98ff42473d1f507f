"""OCI 1.1 referrers: the referrers API, and the tag schema where it is missing.

A registry without the API (distribution 2.8 answers 404) keeps an image
index tagged ``sha256-<hex>`` listing the manifests whose ``subject`` is
that digest; we read it and, after pushing a referrer, update it, as
oras-go and cosign do.
"""

from __future__ import annotations

import contextlib
import re

import requests

from ..errors import IntegrityError, ReferenceNotFoundError
from ..oci.digests import parse_digest, sha256_bytes
from ..oci.limits import MAX_MANIFEST_BYTES
from ..oci.spec import (
    MEDIA_TYPE_OCI_INDEX,
    Descriptor,
    canonical_json,
    manifest_successors,
    parse_document,
    referrer_artifact_type,
)
from ..oci.target import fetch_bytes
from .session import RepositoryAccess
from .transport import raise_for_status


def is_companion_tag(tag: str) -> bool:
    """A tag that holds signatures or a referrers index of a manifest (``sha256-<hex>``,
    ``sha256-<hex>.sig``/``.att``/``.sbom``), not a model version a user tagged."""
    return re.fullmatch(r"sha256-[0-9a-f]{64}(\.[a-z]+)?", tag) is not None


def referrers_tag(digest: str) -> str:
    alg, hexpart = parse_digest(digest)
    return f"{alg}-{hexpart}"


def referrer_descriptor(desc: Descriptor, document: dict) -> Descriptor:
    """How a referrer manifest is listed in a referrers index."""
    return Descriptor(
        media_type=desc.media_type,
        digest=desc.digest,
        size=desc.size,
        artifact_type=referrer_artifact_type(document),
        annotations={str(k): str(v) for k, v in _mapping(document.get("annotations")).items()},
    )


def _mapping(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _tag_schema_index(repo: RepositoryAccess, subject_digest: str) -> list[Descriptor]:
    try:
        index_desc = repo.resolve(referrers_tag(subject_digest))
    except ReferenceNotFoundError:
        return []
    document = parse_document(fetch_bytes(repo, index_desc), f"referrers index {index_desc.digest}")
    return manifest_successors(MEDIA_TYPE_OCI_INDEX, document, "referrers index")


def list_referrers(
    repo: RepositoryAccess, subject: Descriptor, artifact_type: str | None = None
) -> list[Descriptor]:
    """The referrers of ``subject``: every page the API serves, else the tag schema."""
    params = {"artifactType": artifact_type} if artifact_type else {}
    what = f"listing referrers of {subject.digest}"
    entries: list[Descriptor] = []
    api = True
    pages = repo.client.pages(
        repo.path("referrers", subject.digest),
        repo.pull_scope,
        what,
        headers={"Accept": MEDIA_TYPE_OCI_INDEX},
        params=params,
        stream=True,  # read with a cap below, not whole
    )
    with contextlib.closing(pages):
        for number, response in enumerate(pages):
            if number == 0 and response.status_code in (404, 400, 405):
                api = False
                break
            raise_for_status(response, what)
            if response.status_code != 200 or not response.headers.get(
                "Content-Type", ""
            ).startswith(MEDIA_TYPE_OCI_INDEX):
                break  # not a referrers index (an old registry's catch-all): none listed
            entries += _referrers_page(response, subject.digest)
    repo.referrers_api = api
    if not api:
        entries = _tag_schema_index(repo, subject.digest)
    if artifact_type:
        entries = [d for d in entries if d.artifact_type == artifact_type]
    return entries


def _referrers_page(response: requests.Response, subject_digest: str) -> list[Descriptor]:
    data = response.raw.read(MAX_MANIFEST_BYTES + 1, decode_content=True)
    if len(data) > MAX_MANIFEST_BYTES:
        raise IntegrityError(
            f"referrers of {subject_digest}: larger than {MAX_MANIFEST_BYTES} bytes"
        )
    document = parse_document(data, f"referrers of {subject_digest}")
    return manifest_successors(MEDIA_TYPE_OCI_INDEX, document, "referrers list")


def index_referrer(repo: RepositoryAccess, subject_digest: str, referrer: Descriptor) -> None:
    """Add ``referrer`` to the tag-schema index of ``subject_digest`` (if not there)."""
    entries = _tag_schema_index(repo, subject_digest)
    if any(entry.digest == referrer.digest for entry in entries):
        return
    entries.append(referrer)
    document = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_INDEX,
        "manifests": [entry.to_dict() for entry in entries],
    }
    data = canonical_json(document)
    desc = Descriptor(MEDIA_TYPE_OCI_INDEX, sha256_bytes(data), len(data))
    repo.put_manifest(desc, data, referrers_tag(subject_digest))
