"""Cosign signature entries a broken or hostile signer writes: payloads of every wrong
shape, and a good payload whose signature is not base64.  A test puts them in front
of the real signatures in a model's ``.sig`` tag; each must be refused on its own."""

from __future__ import annotations

import json

from modelpack.oci.digests import sha256_bytes

GOOD_DIGEST = sha256_bytes(b"model")
SIGNATURE_TYPE = "cosign container image signature"


def _payload(critical: object, **extra: object) -> bytes:
    return json.dumps({"critical": critical, **extra}).encode()


def _critical(**changes: object) -> dict:
    critical = {
        "identity": {"docker-reference": "registry.example/team/model"},
        "image": {"docker-manifest-digest": GOOD_DIGEST},
        "type": SIGNATURE_TYPE,
    }
    critical.update(changes)
    return critical


JUNK_PAYLOADS: dict[str, bytes] = {
    "array": b"[]",
    "string": b'"x"',
    "number": b"1",
    "null": b"null",
    "true": b"true",
    "empty object": b"{}",
    "not json": b"{",
    "not utf-8": b"\xff\xfe{}",
    "nested past the stack": b"[" * 100_000,
    "critical is an array": _payload([]),
    "critical is a string": _payload("x"),
    "identity is a string": _payload(_critical(identity="x")),
    "identity lacks docker-reference": _payload(_critical(identity={})),
    "docker-reference is a number": _payload(_critical(identity={"docker-reference": 1})),
    "image is an array": _payload(_critical(image=[])),
    "digest is a number": _payload(_critical(image={"docker-manifest-digest": 7})),
    "digest is not a digest": _payload(_critical(image={"docker-manifest-digest": "sha256:x"})),
    "digest is an object": _payload(_critical(image={"docker-manifest-digest": {}})),
    "type is null": _payload(_critical(type=None)),
    "type is a list": _payload(_critical(type=[SIGNATURE_TYPE])),
    "optional is an array": _payload(_critical(), optional=[]),
    "optional is a string": _payload(_critical(), optional="x"),
}


def add_junk_signatures(reference: str, settings) -> int:  # noqa: ANN001
    """Put every junk entry in front of the signatures in ``reference``'s ``.sig`` tag
    (making the tag if there is none); returns how many entries were added."""
    from modelpack.errors import NotFoundError
    from modelpack.oci.reference import parse_reference
    from modelpack.oci.spec import MEDIA_TYPE_OCI_MANIFEST, parse_manifest
    from modelpack.oci.target import fetch_bytes
    from modelpack.registry.client import open_repository
    from modelpack.signing.attach import push_blob, push_manifest
    from modelpack.signing.cosign import (
        OCI_CONFIG_MEDIA_TYPE,
        SIGNATURE_ANNOTATION,
        SIMPLESIGNING_MEDIA_TYPE,
        signature_tag,
        simple_signing_payload,
    )

    ref = parse_reference(reference)
    repository = open_repository(ref, settings)
    subject = repository.resolve(ref.target)
    tag = signature_tag(subject.digest)
    try:
        existing = list(
            parse_manifest(fetch_bytes(repository, repository.resolve(tag)), tag).layers
        )
    except NotFoundError:
        existing = []
    signature = {SIGNATURE_ANNOTATION: "c2lnbmF0dXJl"}  # base64, not a signature
    junk = [
        push_blob(repository, SIMPLESIGNING_MEDIA_TYPE, payload, signature)
        for payload in JUNK_PAYLOADS.values()
    ]
    good = simple_signing_payload(f"{ref.registry}/{ref.repository}", subject.digest)
    not_base64 = {SIGNATURE_ANNOTATION: "not base64!"}
    junk.append(push_blob(repository, SIMPLESIGNING_MEDIA_TYPE, good, not_base64))
    config = push_blob(repository, OCI_CONFIG_MEDIA_TYPE, b"{}")
    push_manifest(
        repository,
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": config.to_dict(),
            "layers": [d.to_dict() for d in junk + existing],
        },
        tag,
    )
    return len(junk)
