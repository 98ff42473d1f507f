"""Signing and verification, checked by us and independently (openssl, cryptography, model_signing)."""

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support.helpers import build_and_push, run_cli, tree_files
from support.junk_signatures import add_junk_signatures

import modelpack
from modelpack.schemas import CLI_SIGNATURE, validate
from modelpack.testing import make_tiny_model

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    first = modelpack.keygen(root / "first", password=PASSWORD)
    second = modelpack.keygen(root / "second", password=None)
    edwards = modelpack.keygen(root / "edwards", password=None, algorithm="ed25519")
    return first, second, edwards


@pytest.fixture
def pushed(tiny_model, registry, settings, request):
    ref = f"{registry.host}/signed/{request.node.name.replace('_', '-')[:40].strip('-')}:v1"
    build_and_push(tiny_model, ref, settings)
    return ref


def _sign(ref, key, *args, env=None):
    result = run_cli(
        "sign",
        ref,
        "--key",
        str(key),
        "--plain-http",
        *args,
        env={"MODELPACK_KEY_PASSWORD": PASSWORD, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return result


def test_keygen_writes_pem_keys_encrypted_unless_told(tmp_path):
    result = run_cli(
        "keygen", "--out", str(tmp_path / "k"), env={"MODELPACK_KEY_PASSWORD": PASSWORD}
    )
    assert result.returncode == 0, result.stderr
    private = (tmp_path / "k.key").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in private
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    serialization.load_pem_private_key(private, PASSWORD.encode())
    assert isinstance(
        serialization.load_pem_public_key((tmp_path / "k.pub").read_bytes()),
        ec.EllipticCurvePublicKey,
    )
    refused = run_cli(
        "keygen", "--out", str(tmp_path / "nopass"), env={"MODELPACK_KEY_PASSWORD": ""}, input=""
    )
    assert refused.returncode == 2 and not (tmp_path / "nopass.key").exists()
    plain = run_cli("keygen", "--out", str(tmp_path / "plain"), "--unencrypted")
    assert plain.returncode == 0 and b"ENCRYPTED" not in (tmp_path / "plain.key").read_bytes()
    assert (
        run_cli("keygen", "--out", str(tmp_path / "k"), "--unencrypted").returncode == 2
    )  # no overwrite


def test_sign_then_verify_round_trip(pushed, keys):
    first, _, _ = keys
    _sign(pushed, first.private_path)
    result = run_cli("verify", pushed, "--key", str(first.public_path), "--plain-http", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    validate(document, CLI_SIGNATURE)
    assert document["verified"] is True and document["keyId"] == first.key_id
    # One signature, written to the .sig tag and as a referrer: counted once.
    assert len(document["signatures"]) == 1
    referrers = modelpack.inspect(pushed, remote=True, plain_http=True).referrers
    assert "application/vnd.dev.cosign.artifact.sig.v1+json" in {r.artifact_type for r in referrers}


def test_unsigned_wrong_key_and_retagged_models_exit_5(
    pushed, keys, tiny_model, tmp_path, settings
):
    first, second, _ = keys
    unsigned = run_cli("verify", pushed, "--key", str(first.public_path), "--plain-http")
    assert unsigned.returncode == 5 and "not signed" in unsigned.stderr
    _sign(pushed, first.private_path)
    wrong = run_cli("verify", pushed, "--key", str(second.public_path), "--plain-http")
    assert wrong.returncode == 5 and "none by key" in wrong.stderr
    # Someone pushes a different model under the same tag: the signature no longer applies.
    other = make_tiny_model(tmp_path / "other", seed=7)
    modelpack.build(other, pushed, settings=settings)
    modelpack.push(pushed, settings=settings)
    retagged = run_cli("verify", pushed, "--key", str(first.public_path), "--plain-http")
    assert retagged.returncode == 5
    assert len(retagged.stderr.strip().splitlines()) == 1


def _pull_verified(reference, out, public_key, env):
    """``modelpack pull REF -o OUT --verify-key PUB`` as a user runs it."""
    return run_cli(
        "pull", reference, "-o", str(out), "--verify-key", str(public_key), "--plain-http", env=env
    )


def test_pull_verify_key_refuses_and_writes_nothing(pushed, keys, tiny_model, tmp_path, settings):
    first, _, _ = keys
    out, node = tmp_path / "out", tmp_path / "node"
    env = {"MODELPACK_HOME": str(node)}
    refused = _pull_verified(pushed, out, first.public_path, env)
    assert refused.returncode == 5
    assert not out.exists() and not list(tmp_path.glob(".modelpack-staging-*"))
    refused_cache = run_cli(
        "pull", pushed, "--plain-http", env={**env, "MODELPACK_VERIFY_KEY": str(first.public_path)}
    )
    assert refused_cache.returncode == 5
    assert not (node / "models").exists() or not any((node / "models").rglob("*.json"))
    _sign(pushed, first.private_path)
    accepted = _pull_verified(pushed, out, first.public_path, env)
    assert accepted.returncode == 0, accepted.stderr
    assert tree_files(out) == tree_files(tiny_model)
    # Tampered: the tag moves to an unsigned model; a fresh pull refuses it.
    modelpack.build(make_tiny_model(tmp_path / "evil", seed=9), pushed, settings=settings)
    modelpack.push(pushed, settings=settings)
    again = _pull_verified(pushed, tmp_path / "again", first.public_path, env)
    assert again.returncode == 5 and not (tmp_path / "again").exists()


def test_signature_checks_independently_with_openssl_and_cryptography(
    pushed, keys, registry, tmp_path
):
    first, _, _ = keys
    _sign(pushed, first.private_path)
    digest = modelpack.inspect(pushed, remote=True, plain_http=True).descriptor.digest
    repository = pushed.split("/", 1)[1].rsplit(":", 1)[0]
    base = f"{registry.url}/v2/{repository}"
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    sig_manifest = requests.get(
        f"{base}/manifests/sha256-{digest.split(':')[1]}.sig", headers=accept, timeout=10
    ).json()
    layer = sig_manifest["layers"][0]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload = requests.get(f"{base}/blobs/{layer['digest']}", timeout=10).content
    signature = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
    document = json.loads(payload)
    assert document["critical"]["image"]["docker-manifest-digest"] == digest
    assert document["critical"]["type"] == "cosign container image signature"
    assert document["critical"]["identity"]["docker-reference"] == pushed.rsplit(":", 1)[0]
    (tmp_path / "payload.json").write_bytes(payload)
    (tmp_path / "sig.der").write_bytes(signature)
    openssl = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(first.public_path), "-signature", str(tmp_path / "sig.der"), str(tmp_path / "payload.json")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert openssl.returncode == 0 and "Verified OK" in openssl.stdout
    public = serialization.load_pem_public_key(first.public_path.read_bytes())
    public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))  # raises if invalid
    (tmp_path / "payload.json").write_bytes(payload.replace(b"sha256:", b"sha256:0"))
    bad = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(first.public_path), "-signature", str(tmp_path / "sig.der"), str(tmp_path / "payload.json")], capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0


def test_two_keys_sign_one_artifact(pushed, keys, registry):
    first, second, edwards = keys
    _sign(pushed, first.private_path)
    _sign(pushed, second.private_path)
    _sign(pushed, edwards.private_path)
    for pair in (first, second, edwards):
        check = modelpack.verify(pushed, pair.public_path, plain_http=True)
        assert check.valid and check.key_id == pair.key_id
        assert check.others == 2  # the other two keys' signatures
    inspected = modelpack.inspect(pushed, remote=True, plain_http=True)
    assert inspected.signatures == 3
    digest = inspected.descriptor.digest
    sig = modelpack.inspect(
        f"{pushed.rsplit(':', 1)[0]}:sha256-{digest.split(':')[1]}.sig",
        remote=True,
        plain_http=True,
    )
    assert len(sig.manifest.layers) == 3  # appended, none replaced


def test_copy_carries_signatures(pushed, keys, registry, tmp_path):
    first, _, _ = keys
    _sign(pushed, first.private_path)
    with modelpack.testing.RegistryServer() as other:
        destination = f"{other.host}/copied/model:v1"
        result = modelpack.copy(pushed, destination, plain_http=True)
        assert result.stats.referrers >= 2
        assert modelpack.verify(destination, first.public_path, plain_http=True).valid


def test_push_and_build_sign_in_one_step(tiny_model, registry, keys, tmp_path):
    first, _, _ = keys
    env = {"MODELPACK_KEY_PASSWORD": PASSWORD}
    ref = f"{registry.host}/signed/one-step:v1"
    built = run_cli(
        "build",
        str(tiny_model),
        "-t",
        ref,
        "--push",
        "--sign-key",
        str(first.private_path),
        "--plain-http",
        env=env,
    )
    assert built.returncode == 0, built.stderr
    assert modelpack.verify(ref, first.public_path, plain_http=True).valid
    ref2 = f"{registry.host}/signed/push-step:v1"
    assert run_cli("build", str(tiny_model), "-t", ref2, "-q").returncode == 0
    pushed = run_cli("push", ref2, "--sign-key", str(first.private_path), "--plain-http", env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert modelpack.verify(ref2, first.public_path, plain_http=True).valid
    no_password = run_cli(
        "sign",
        ref2,
        "--key",
        str(first.private_path),
        "--plain-http",
        env={"MODELPACK_KEY_PASSWORD": ""},
        input="",
    )
    assert no_password.returncode == 2 and "MODELPACK_KEY_PASSWORD" in no_password.stderr


def test_model_signing_bundle_verifies_with_model_signing_itself(
    pushed, keys, tmp_path, tiny_model
):
    first, _, _ = keys
    _sign(pushed, first.private_path, "--model-signing")
    out = tmp_path / "model"
    pulled = run_cli("pull", pushed, "-o", str(out), "--model-signature", "--plain-http")
    assert pulled.returncode == 0, pulled.stderr
    assert (out / "model.sig").is_file()
    assert set(tree_files(out)) == set(tree_files(tiny_model)) | {"model.sig"}
    cli = Path(sys.executable).with_name("model_signing")
    verify = [
        str(cli),
        "verify",
        "key",
        "--signature",
        str(out / "model.sig"),
        "--public_key",
        str(first.public_path),
        str(out),
    ]
    ok = subprocess.run(verify, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    data = bytearray((out / "config.json").read_bytes())
    data[0] ^= 1
    (out / "config.json").write_bytes(bytes(data))
    tampered = subprocess.run(verify, capture_output=True, text=True)
    assert tampered.returncode != 0


def test_init_container_refuses_unsigned_models(pushed, keys, tmp_path):
    first, _, _ = keys
    entrypoint = Path(__file__).resolve().parents[2] / "examples" / "kubernetes" / "entrypoint.py"
    env = {**os.environ, "MODELPACK_REF": pushed, "MODELPACK_TARGET": str(tmp_path / "models"),
           "MODELPACK_VERIFY_KEY": str(first.public_path)}  # fmt: skip
    refused = subprocess.run(
        [sys.executable, str(entrypoint)], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 5 and not (tmp_path / "models").exists()
    _sign(pushed, first.private_path)
    accepted = subprocess.run(
        [sys.executable, str(entrypoint)], env=env, capture_output=True, text=True
    )
    assert accepted.returncode == 0, accepted.stderr


@pytest.fixture(autouse=True)
def _clean(tmp_path):
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_junk_signatures_are_refused_one_by_one_and_hide_nothing(
    pushed, keys, tiny_model, registry, settings, tmp_path
):
    first, _, _ = keys
    _sign(pushed, first.private_path)
    junk = add_junk_signatures(pushed, settings)
    verified = run_cli("verify", pushed, "--key", str(first.public_path), "--plain-http", "--json")
    assert verified.returncode == 0, verified.stderr
    document = json.loads(verified.stdout)
    validate(document, CLI_SIGNATURE)
    assert len(document["signatures"]) == 1 and document["otherSignatures"] == junk
    pulled = _pull_verified(pushed, tmp_path / "out", first.public_path, {})
    assert pulled.returncode == 0, pulled.stderr
    assert tree_files(tmp_path / "out") == tree_files(tiny_model)
    # Nothing but junk: refused with exit 5, one line that says why.
    only_junk = f"{registry.host}/signed/only-junk:v1"
    build_and_push(tiny_model, only_junk, settings, set_fields=["config.precision=int8"])
    add_junk_signatures(only_junk, settings)
    refused = run_cli("verify", only_junk, "--key", str(first.public_path), "--plain-http")
    assert refused.returncode == 5, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{junk} malformed" in lines[0], lines
    assert _pull_verified(only_junk, tmp_path / "no", first.public_path, {}).returncode == 5
    assert not (tmp_path / "no").exists()
