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
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import IntegrityError, NotFoundError
from ..oci.digests import is_digest, parse_digest
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
BUNDLE_SIGNATURE_TYPE = "cosign sign statement (sigstore bundle)"
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
class SimpleSigning:
    """The fields of a cosign simple-signing payload that verification reads."""

    docker_reference: str
    manifest_digest: str
    type: str


def parse_simple_signing(data: bytes, what: str) -> SimpleSigning:
    """The payload, or IntegrityError unless it is cosign's simple-signing shape:
    ``{"critical": {"identity": {"docker-reference": str}, "image":
    {"docker-manifest-digest": digest}, "type": str}, "optional": object|null}``."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):  # not UTF-8 or not JSON; nested past the stack
        raise IntegrityError(f"{what}: the payload is not JSON") from None
    if not isinstance(document, dict):
        raise IntegrityError(f"{what}: the payload is not a JSON object")
    if document.get("optional") is not None:
        _field(document, "optional", dict, what)
    critical = _field(document, "critical", dict, what)
    image = _field(critical, "image", dict, what)
    digest = _field(image, "docker-manifest-digest", str, what)
    if not is_digest(digest):
        raise IntegrityError(f"{what}: payload field docker-manifest-digest is not a digest")
    return SimpleSigning(
        docker_reference=_field(
            _field(critical, "identity", dict, what), "docker-reference", str, what
        ),
        manifest_digest=digest,
        type=_field(critical, "type", str, what),
    )


def _field(document: dict, name: str, kind: type, what: str) -> Any:
    """``document[name]``; IntegrityError unless it is a ``kind`` (dict or str)."""
    value = document.get(name)
    if not isinstance(value, kind):
        wanted = "an object" if kind is dict else "a string"
        raise IntegrityError(f"{what}: payload field {name} is not {wanted}")
    return value


@dataclass(frozen=True)
class FoundSignature:
    source: str  # "tag" (sha256-<hex>.sig), "referrer", or "bundle" (a sigstore bundle referrer)
    layer: Descriptor
    payload: SimpleSigning
    data: bytes = field(repr=False)  # the payload's bytes, what the signature is over
    signature: bytes = field(repr=False)

    @property
    def docker_reference(self) -> str:
        return self.payload.docker_reference

    @property
    def signed_digest(self) -> str:
        return self.payload.manifest_digest


@dataclass
class SignatureScan:
    """What ``scan_signatures`` found: the well-formed signatures, and one
    IntegrityError for each entry that is not (it never hides the others)."""

    found: list[FoundSignature] = field(default_factory=list)
    rejected: list[IntegrityError] = field(default_factory=list)


@dataclass
class SignatureCheck:
    reference: str
    digest: str
    key_id: str
    valid: list[FoundSignature] = field(default_factory=list)
    others: int = 0  # signatures present that are not valid for this key and digest
    rejected: list[str] = field(default_factory=list)  # why each malformed one was refused

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


def _layers_with_signatures(repository: Target, manifest: Descriptor) -> list[Descriptor]:
    document = parse_manifest(fetch_bytes(repository, manifest), f"signature {manifest.digest}")
    return [
        layer
        for layer in document.layers
        if layer.media_type == SIMPLESIGNING_MEDIA_TYPE
        and SIGNATURE_ANNOTATION in layer.annotations
    ]


def _signature_sources(
    repository: Target,
    subject: Descriptor,
    tag_reference: Callable[[str], str],
    scan: SignatureScan,
) -> list[tuple[str, Descriptor]]:
    """The manifests that may hold signatures: the ``.sig`` tag, then cosign referrers."""
    sources: list[tuple[str, Descriptor]] = []
    tag = tag_reference(signature_tag(subject.digest))
    try:
        sources.append(("tag", repository.resolve(tag)))
    except NotFoundError:
        pass  # no .sig tag
    except IntegrityError as exc:  # a junk .sig tag: the referrers still count
        scan.rejected.append(exc)
    try:
        sources += [
            ("referrer", r) for r in referrers_of(repository, subject, COSIGN_ARTIFACT_TYPE)
        ]
    except IntegrityError as exc:  # a junk referrers list: the .sig tag still counts
        scan.rejected.append(exc)
    return sources


def _read_signature(repository: Target, source: str, layer: Descriptor) -> FoundSignature:
    """One signature layer, IntegrityError (or NotFoundError) when it is unusable."""
    what = f"signature {layer.digest} ({source})"
    if layer.size > MAX_PAYLOAD:
        raise IntegrityError(f"{what}: payload of {layer.size} bytes, over {MAX_PAYLOAD}")
    data = fetch_bytes(repository, layer, limit=MAX_PAYLOAD)
    payload = parse_simple_signing(data, what)
    try:
        signature = base64.b64decode(layer.annotations[SIGNATURE_ANNOTATION], validate=True)
    except ValueError:
        raise IntegrityError(f"{what}: the signature annotation is not base64") from None
    return FoundSignature(source, layer, payload, data, signature)


def scan_signatures(
    repository: Target, subject: Descriptor, tag_reference: Callable[[str], str] = lambda tag: tag
) -> SignatureScan:
    """Every distinct cosign signature of ``subject``: in its ``.sig`` tag and in
    referrers (the same signature in both places counts once).  A manifest or
    layer that is junk is one rejection; the rest are still read."""
    scan = SignatureScan()
    seen: set[tuple[str, str]] = set()
    for source, manifest in _signature_sources(repository, subject, tag_reference, scan):
        try:
            layers = _layers_with_signatures(repository, manifest)
        except (IntegrityError, NotFoundError) as exc:
            scan.rejected.append(_as_integrity_error(exc))
            continue
        for layer in layers:
            mark = (layer.digest, layer.annotations[SIGNATURE_ANNOTATION])
            if mark in seen:
                continue
            seen.add(mark)
            try:
                scan.found.append(_read_signature(repository, source, layer))
            except (IntegrityError, NotFoundError) as exc:
                scan.rejected.append(_as_integrity_error(exc))
    return scan


def _as_integrity_error(exc: IntegrityError | NotFoundError) -> IntegrityError:
    return exc if isinstance(exc, IntegrityError) else IntegrityError(exc.message)


def find_signatures(
    repository: Target, subject: Descriptor, tag_reference: Callable[[str], str] = lambda tag: tag
) -> list[FoundSignature]:
    """The well-formed signatures of ``scan_signatures``."""
    return scan_signatures(repository, subject, tag_reference).found


def check_signatures(
    repository: RegistryRepository, subject: Descriptor, public: PublicKey, display: str
) -> SignatureCheck:
    result = SignatureCheck(display, subject.digest, key_id(public))
    scan = scan_signatures(repository, subject)
    result.rejected = [exc.message for exc in scan.rejected]
    for found in scan.found:
        if (
            found.signed_digest == subject.digest
            and found.payload.type == SIGNATURE_TYPE
            and verify_bytes(public, found.signature, found.data)
        ):
            result.valid.append(found)
        else:
            result.others += 1
    result.others += len(scan.rejected)
    for bundle in find_bundle_signatures(repository, subject):  # cosign v3's default form
        if not bundle.is_cosign_signature():
            continue  # a model-signing bundle: `verify --dir`/--model-signature's business
        if bundle.verifies(public, subject.digest):
            statement = SimpleSigning("", subject.digest, BUNDLE_SIGNATURE_TYPE)
            result.valid.append(
                FoundSignature("bundle", bundle.layer, statement, bundle.payload, bundle.signature)
            )
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
        if result.rejected:
            detail += f" ({len(result.rejected)} malformed; the first: {result.rejected[0]})"
        raise IntegrityError(
            f"{display}@{subject.digest}: no valid signature by key {result.key_id}: {detail}",
            hint="sign it with `modelpack sign`, or check that the tag still points to the signed model",
        )
    return result
