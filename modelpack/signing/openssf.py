"""File-level provenance with OpenSSF model signing (the ``model-signing`` package).

A sigstore bundle whose in-toto statement lists the digest of every file of
the model tree, signed with the same ECDSA key, offline.  It is attached to
the artifact as an OCI referrer, and ``pull -o DIR --model-signature``
writes it as ``DIR/model.sig`` so that::

    model_signing verify key --signature DIR/model.sig --public_key KEY.pub DIR

passes on the pulled directory, independently of modelpack.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import IntegrityError, UsageError
from ..extras import require
from ..oci.spec import (
    ANNOTATION_TITLE,
    Descriptor,
    parse_manifest,
)
from ..oci.target import fetch_bytes
from ..registry.client import RegistryRepository
from .attach import attach, push_blob
from .keys import key_password

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SIGNATURE_FILENAME = "model.sig"
MAX_BUNDLE = 16 * 1024 * 1024


def _model_signing():  # noqa: ANN202 - the module
    return require(
        "model_signing", extra="signing", purpose="file-level signatures", package="model-signing"
    )


def sign_tree(tree: Path, private_key: str | os.PathLike[str], password: str | None) -> bytes:
    """The model_signing bundle for every file below ``tree``."""
    model_signing = _model_signing()
    password = key_password(private_key, password)
    with tempfile.TemporaryDirectory(prefix="modelpack-sig-") as work:
        output = Path(work) / SIGNATURE_FILENAME
        try:
            config = model_signing.signing.Config().use_elliptic_key_signer(
                private_key=os.fspath(private_key),
                password=password.encode() if password else None,  # it wants bytes
            )
            config.sign(tree, output)
        except Exception as exc:  # the package raises plain ValueError/TypeError for key problems
            raise UsageError(
                f"model signing failed: {exc}", hint="model-signing needs an ECDSA P-256 key"
            ) from exc
        return output.read_bytes()


def verify_tree(tree: Path, signature: Path, public_key: str | os.PathLike[str]) -> None:
    model_signing = _model_signing()
    try:
        model_signing.verifying.Config().use_elliptic_key_verifier(
            public_key=os.fspath(public_key)
        ).verify(tree, signature)
    except Exception as exc:
        raise IntegrityError(f"{tree} does not match its model signature: {exc}") from exc


def attach_bundle(repository: RegistryRepository, subject: Descriptor, bundle: bytes) -> Descriptor:
    layer = push_blob(repository, BUNDLE_MEDIA_TYPE, bundle, {ANNOTATION_TITLE: SIGNATURE_FILENAME})
    return attach(repository, subject, BUNDLE_MEDIA_TYPE, [layer])


def fetch_bundle(repository: RegistryRepository, subject: Descriptor) -> bytes:
    for referrer in repository.referrers(subject, BUNDLE_MEDIA_TYPE):
        document = parse_manifest(fetch_bytes(repository, referrer), f"referrer {referrer.digest}")
        for layer in document.layers:
            if layer.media_type == BUNDLE_MEDIA_TYPE:
                return fetch_bytes(repository, layer, limit=MAX_BUNDLE)
    raise IntegrityError(
        f"{repository.describe()}@{subject.digest} has no model signature",
        hint="sign it with `modelpack sign --model-signing`",
    )
