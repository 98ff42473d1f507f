"""Write small artifacts next to a model: an OCI 1.1 referrer (``subject`` = the model).

Signatures, model-signing bundles and SBOMs are all "one or two small blobs
plus a manifest that points at the model"; this is that, once.
"""

from __future__ import annotations

from typing import Any

from ..oci.digests import sha256_bytes
from ..oci.spec import MEDIA_TYPE_OCI_EMPTY, MEDIA_TYPE_OCI_MANIFEST, Descriptor, canonical_json
from ..oci.target import Target, push_bytes


def push_empty_config(target: Target) -> Descriptor:
    data = b"{}"
    desc = Descriptor(MEDIA_TYPE_OCI_EMPTY, sha256_bytes(data), len(data))
    push_bytes(target, desc, data)
    return desc


def push_blob(
    target: Target, media_type: str, data: bytes, annotations: dict[str, str] | None = None
) -> Descriptor:
    desc = Descriptor(
        media_type, sha256_bytes(data), len(data), annotations=dict(annotations or {})
    )
    push_bytes(target, desc, data)
    return desc


def push_manifest(
    target: Target, document: dict[str, Any], reference: str | None = None
) -> Descriptor:
    data = canonical_json(document)
    desc = Descriptor(
        document.get("mediaType", MEDIA_TYPE_OCI_MANIFEST),
        sha256_bytes(data),
        len(data),
        artifact_type=document.get("artifactType"),
    )
    push_bytes(target, desc, data, reference=reference)
    return desc


def attach(
    target: Target, subject: Descriptor, artifact_type: str, layers: list[Descriptor]
) -> Descriptor:
    """Push a referrer manifest of ``subject`` whose (already pushed) ``layers`` are given."""
    return push_manifest(
        target,
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": push_empty_config(target).to_dict(),
            "layers": [layer.to_dict() for layer in layers],
            "subject": subject.to_dict(),
        },
    )
