"""The cosign simple-signing payload: what cosign writes parses, everything else is one
IntegrityError (exit 5) naming the signature, never another exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.junk_signatures import GOOD_DIGEST, JUNK_PAYLOADS
from test_fuzz import FUZZ, json_values

from modelpack.errors import IntegrityError
from modelpack.signing.cosign import SimpleSigning, parse_simple_signing, simple_signing_payload

KEYS = ["critical", "identity", "image", "docker-reference", "docker-manifest-digest", "type",
        "optional"]  # fmt: skip

signing_like = st.recursive(
    json_values | st.just(GOOD_DIGEST) | st.just("cosign container image signature"),
    lambda children: st.dictionaries(st.sampled_from(KEYS), children, max_size=5),
    max_leaves=12,
)


def test_what_cosign_signs_parses():
    payload = simple_signing_payload("registry.example/team/model", GOOD_DIGEST)
    assert parse_simple_signing(payload, "signature") == SimpleSigning(
        "registry.example/team/model", GOOD_DIGEST, "cosign container image signature"
    )


@pytest.mark.parametrize("shape", sorted(JUNK_PAYLOADS))
def test_a_payload_of_another_shape_is_one_integrity_error(shape):
    with pytest.raises(IntegrityError, match="^signature sha256:ab: "):
        parse_simple_signing(JUNK_PAYLOADS[shape], "signature sha256:ab")


@FUZZ
@given(st.one_of(json_values, signing_like))
def test_any_json_parses_or_is_an_integrity_error(document):
    try:
        payload = parse_simple_signing(json.dumps(document).encode(), "signature")
    except IntegrityError:
        return
    assert isinstance(payload.docker_reference, str) and isinstance(payload.type, str)
    assert payload.manifest_digest == GOOD_DIGEST
