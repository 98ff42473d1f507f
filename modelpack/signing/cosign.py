"""cosign-compatible, key-based signatures of model artifacts, fully offline.

What we write, for a model manifest with digest D in repository R:

* the simple-signing payload cosign signs::

    {"critical":{"identity":{"docker-reference":"R"},"image":{"docker-manifest-digest":"D"},
     "type":"cosign container image signature"},"optional":null}

* a layer with that payload (``application/vnd.dev.cosign.simplesigning.v1+json``),
  its base64 ECDSA-SHA256 signature in ``dev.cosignproject.cosign/signature``,
  appended to the manifest tagged ``sha256-<hex of D>.sig`` (other signatures
  there are kept): the tag form cosign, Harbor and policy controllers read;
* the same layer in an OCI 1.1 referrer of D (artifactType
  ``application/vnd.dev.cosign.artifact.sig.v1+json``), through the referrers
  API or its tag-schema fallback.

Verification accepts a signature from either place when its payload names
exactly D and the signature checks with the given public key.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import IntegrityError, NotFoundError
from ..oci.digests import parse_digest
from ..oci.spec import (
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    canonical_json,
    parse_manifest,
)
from ..oci.target import Target, fetch_bytes, referrers_of
from ..registry.client import RegistryRepository
from .attach import attach, push_blob, push_manifest
from .keys import key_id, sign_bytes, verify_bytes
from .sigstore import find_bundle_signatures

if TYPE_CHECKING:
    from .keys import PrivateKey, PublicKey

SIMPLESIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_ARTIFACT_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
SIGNATURE_TYPE = "cosign container image signature"
OCI_CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MAX_PAYLOAD = 256 * 1024


def signature_tag(digest: str) -> str:
    alg, hexpart = parse_digest(digest)
    return f"{alg}-{hexpart}.sig"


def simple_signing_payload(docker_reference: str, digest: str) -> bytes:
    """Byte for byte what cosign signs (Go's encoding/json field order)."""
    return (
        '{"critical":{"identity":{"docker-reference":'
        + json.dumps(docker_reference)
        + '},"image":{"docker-manifest-digest":'
        + json.dumps(digest)
        + '},"type":"cosign container image signature"},"optional":null}'
    ).encode()


@dataclass(frozen=True)
class FoundSignature:
    source: str  # "tag" (sha256-<hex>.sig), "referrer", or "bundle" (a sigstore bundle referrer)
    layer: Descriptor
    payload: dict[str, Any]
    signature: bytes

    @property
    def docker_reference(self) -> str:
        return str(
            ((self.payload.get("critical") or {}).get("identity") or {}).get("docker-reference", "")
        )

    @property
    def signed_digest(self) -> str:
        return str(
            ((self.payload.get("critical") or {}).get("image") or {}).get(
                "docker-manifest-digest", ""
            )
        )


@dataclass
class SignatureCheck:
    reference: str
    digest: str
    key_id: str
    valid: list[FoundSignature] = field(default_factory=list)
    others: int = 0  # signatures present that are not valid for this key and digest

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "verified": bool(self.valid),
            "keyId": self.key_id,
            "signatures": [
                {
                    "source": s.source,
                    "payloadDigest": s.layer.digest,
                    "dockerReference": s.docker_reference,
                }
                for s in self.valid
            ],
            "otherSignatures": self.others,
        }


# -- writing ------------------------------------------------------------------


def _signature_layer(
    repository: RegistryRepository, key: PrivateKey, subject: Descriptor
) -> Descriptor:
    payload = simple_signing_payload(f"{repository.registry}/{repository.name}", subject.digest)
    signature = base64.b64encode(sign_bytes(key, payload)).decode()
    return push_blob(
        repository, SIMPLESIGNING_MEDIA_TYPE, payload, {SIGNATURE_ANNOTATION: signature}
    )


def _cosign_config(layers: list[Descriptor]) -> bytes:
    """The image config cosign writes for a signature manifest."""
    return canonical_json(
        {
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        }
    )


def _append_to_signature_tag(
    repository: RegistryRepository, subject: Descriptor, layer: Descriptor
) -> None:
    tag = signature_tag(subject.digest)
    layers: list[Descriptor] = []
    try:
        existing = parse_manifest(fetch_bytes(repository, repository.resolve(tag)), tag)
        layers = list(existing.layers)
    except NotFoundError:
        pass
    if any(
        existing_layer.digest == layer.digest
        and existing_layer.annotations.get(SIGNATURE_ANNOTATION)
        == layer.annotations[SIGNATURE_ANNOTATION]
        for existing_layer in layers
    ):
        return
    layers.append(layer)
    config_desc = push_blob(repository, OCI_CONFIG_MEDIA_TYPE, _cosign_config(layers))
    push_manifest(
        repository,
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": config_desc.to_dict(),
            "layers": [d.to_dict() for d in layers],
        },
        tag,
    )


def sign_manifest(repository: RegistryRepository, subject: Descriptor, key: PrivateKey) -> str:
    """Sign ``subject`` in both places; returns the key id."""
    layer = _signature_layer(repository, key, subject)
    _append_to_signature_tag(repository, subject, layer)
    attach(repository, subject, COSIGN_ARTIFACT_TYPE, [layer])
    return key_id(key.public_key())


# -- reading ------------------------------------------------------------------


def _layers_with_signatures(
    repository: RegistryRepository, manifest: Descriptor
) -> list[Descriptor]:
    document = parse_manifest(fetch_bytes(repository, manifest), f"signature {manifest.digest}")
    return [
        layer
        for layer in document.layers
        if layer.media_type == SIMPLESIGNING_MEDIA_TYPE
        and SIGNATURE_ANNOTATION in layer.annotations
    ]


def find_signatures(
    repository: Target, subject: Descriptor, tag_reference: Callable[[str], str] = lambda tag: tag
) -> list[FoundSignature]:
    """Every distinct cosign signature of ``subject``: in its ``.sig`` tag and in
    referrers (the same signature in both places counts once)."""
    sources: list[tuple[str, Descriptor]] = []
    with contextlib.suppress(NotFoundError):
        sources.append(("tag", repository.resolve(tag_reference(signature_tag(subject.digest)))))
    sources += [("referrer", r) for r in referrers_of(repository, subject, COSIGN_ARTIFACT_TYPE)]
    found: list[FoundSignature] = []
    seen: set[tuple[str, str]] = set()
    for source, manifest in sources:
        for layer in _layers_with_signatures(repository, manifest):
            mark = (layer.digest, layer.annotations[SIGNATURE_ANNOTATION])
            if mark in seen or layer.size > MAX_PAYLOAD:
                continue
            seen.add(mark)
            payload = fetch_bytes(repository, layer, limit=MAX_PAYLOAD)
            try:
                document = json.loads(payload)
                signature = base64.b64decode(layer.annotations[SIGNATURE_ANNOTATION], validate=True)
            except ValueError:
                continue  # malformed entries are someone else's problem, never a pass
            found.append(FoundSignature(source, layer, document, signature))
    return found


def check_signatures(
    repository: RegistryRepository, subject: Descriptor, public: PublicKey, display: str
) -> SignatureCheck:
    result = SignatureCheck(display, subject.digest, key_id(public))
    for found in find_signatures(repository, subject):
        payload = fetch_bytes(repository, found.layer, limit=MAX_PAYLOAD)
        critical = found.payload.get("critical") or {}
        if (
            found.signed_digest == subject.digest
            and critical.get("type") == SIGNATURE_TYPE
            and verify_bytes(public, found.signature, payload)
        ):
            result.valid.append(found)
        else:
            result.others += 1
    for bundle in find_bundle_signatures(repository, subject):  # cosign v3's default form
        if not bundle.is_cosign_signature():
            continue  # a model-signing bundle: `verify --dir`/--model-signature's business
        if bundle.verifies(public, subject.digest):
            statement = bundle.statement() or {}
            result.valid.append(FoundSignature("bundle", bundle.layer, statement, bundle.signature))
        else:
            result.others += 1
    return result


def require_signature(
    repository: RegistryRepository, subject: Descriptor, public: PublicKey, display: str
) -> SignatureCheck:
    """IntegrityError (exit 5) unless a valid signature by ``public`` names this digest."""
    result = check_signatures(repository, subject, public, display)
    if not result.valid:
        detail = (
            f"{result.others} signature(s) found, none by key {result.key_id} over this digest"
            if result.others
            else "it is not signed"
        )
        raise IntegrityError(
            f"{display}@{subject.digest}: no valid signature by key {result.key_id}: {detail}",
            hint="sign it with `modelpack sign`, or check that the tag still points to the signed model",
        )
    return result
