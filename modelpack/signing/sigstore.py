"""Sigstore bundles as cosign v3 writes them by default: key-based, offline verification.

``cosign sign --key`` (v3, ``--new-bundle-format`` is the default) attaches an OCI 1.1
referrer of the signed manifest D, artifactType ``application/vnd.dev.sigstore.bundle.v0.3+json``,
whose one layer is a bundle holding a DSSE envelope::

    {"dsseEnvelope": {"payloadType": "application/vnd.in-toto+json",
                      "payload": base64(in-toto Statement v1 whose subject is sha256 of D,
                                        predicateType https://sigstore.dev/cosign/sign/v1),
                      "signatures": [{"sig": base64(ECDSA-SHA256 over PAE(type, payload))}]}}

A bundle verifies when its envelope's signature checks with the given public key over
DSSE's pre-authentication encoding and the statement names exactly D.  No transparency
log is consulted (as ``cosign verify --insecure-ignore-tlog``); everything read is typed
and bounded, and anything that is not this shape is simply not a valid signature.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ..oci.digests import parse_digest
from ..oci.spec import Descriptor, parse_manifest
from ..oci.target import Target, fetch_bytes, referrers_of
from .keys import verify_bytes

if TYPE_CHECKING:
    from .keys import PublicKey

BUNDLE_ARTIFACT_TYPES = (
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
)
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
INTOTO_STATEMENT_TYPES = ("https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1")
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
MAX_BUNDLE = 256 * 1024


@dataclass(frozen=True)
class BundleSignature:
    """One DSSE signature of a bundle attached to a manifest."""

    layer: Descriptor
    payload_type: str
    payload: bytes
    signature: bytes

    @cached_property
    def statement(self) -> dict[str, Any] | None:
        """The payload as a JSON object (parsed once), or None."""
        try:
            document = json.loads(self.payload)
        except (ValueError, RecursionError):  # not JSON; nested past the stack
            return None
        return document if isinstance(document, dict) else None

    def is_cosign_signature(self) -> bool:
        """A ``cosign sign`` statement (not, say, an OpenSSF model-signing bundle, which
        shares the bundle media type and signs files, not the manifest)."""
        statement = self.statement
        return statement is not None and statement.get("predicateType") == COSIGN_SIGN_PREDICATE

    def names(self, digest: str) -> bool:
        """The in-toto statement is cosign's signing statement and names ``digest``."""
        statement = self.statement
        if not self.is_cosign_signature() or statement.get("_type") not in INTOTO_STATEMENT_TYPES:
            return False
        algorithm, hexpart = parse_digest(digest)
        subjects = statement.get("subject")
        return isinstance(subjects, list) and any(
            isinstance(s, dict)
            and isinstance(s.get("digest"), dict)
            and s["digest"].get(algorithm) == hexpart
            for s in subjects
        )

    def verifies(self, public: PublicKey, digest: str) -> bool:
        return (
            self.payload_type == INTOTO_PAYLOAD_TYPE
            and self.names(digest)
            and verify_bytes(
                public, self.signature, pre_authentication(self.payload_type, self.payload)
            )
        )


def pre_authentication(payload_type: str, payload: bytes) -> bytes:
    """DSSE's PAE: what a DSSE signature is computed over."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def parse_bundle(data: bytes, layer: Descriptor) -> list[BundleSignature]:
    """The DSSE signatures of one bundle blob; none when it is not that shape."""
    try:
        bundle = json.loads(data)
    except ValueError:
        return []
    envelope = bundle.get("dsseEnvelope") if isinstance(bundle, dict) else None
    if not isinstance(envelope, dict):
        return []
    payload_type, payload, signatures = (
        envelope.get("payloadType"),
        envelope.get("payload"),
        envelope.get("signatures"),
    )
    if not (isinstance(payload_type, str) and isinstance(payload, str)):
        return []
    if not isinstance(signatures, list):
        return []
    try:
        body = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return []
    found = []
    for entry in signatures:
        sig = entry.get("sig") if isinstance(entry, dict) else None
        if not isinstance(sig, str):
            continue
        try:
            found.append(
                BundleSignature(layer, payload_type, body, base64.b64decode(sig, validate=True))
            )
        except (binascii.Error, ValueError):
            continue
    return found


def find_bundle_signatures(repository: Target, subject: Descriptor) -> list[BundleSignature]:
    """Every DSSE signature in the sigstore bundles attached to ``subject`` as referrers."""
    found: list[BundleSignature] = []
    # One listing for both spellings of the type (a tag-schema registry reads its index once).
    for referrer in referrers_of(repository, subject):
        if referrer.artifact_type not in BUNDLE_ARTIFACT_TYPES:
            continue
        manifest = parse_manifest(
            fetch_bytes(repository, referrer), f"signature bundle {referrer.digest}"
        )
        for layer in manifest.layers:
            if layer.media_type in BUNDLE_ARTIFACT_TYPES and layer.size <= MAX_BUNDLE:
                found += parse_bundle(fetch_bytes(repository, layer, limit=MAX_BUNDLE), layer)
    return found
