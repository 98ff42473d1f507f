"""modelpack copy between registries, layouts and the store; OCI 1.1 referrers."""

import json
import subprocess

import pytest
from support.helpers import build_and_push, run_cli, tree_files

import modelpack
from modelpack.oci.digests import sha256_bytes
from modelpack.oci.reference import parse_reference
from modelpack.oci.spec import MEDIA_TYPE_OCI_MANIFEST, Descriptor
from modelpack.registry.client import open_repository
from modelpack.signing.attach import attach, push_blob
from modelpack.testing import RegistryServer

SBOM_TYPE = "application/vnd.example.sbom.v1+json"


@pytest.fixture(scope="module", params=["distribution", "crane"])
def second_registry(request):
    """Where copies go: another distribution, and go-containerregistry's registry."""
    if request.param == "crane":
        yield request.getfixturevalue("crane_registry")
        return
    with RegistryServer() as server:
        yield server


def _push_model(tiny_model, registry, settings, name):
    ref = f"{registry.host}/{name}"
    return ref, build_and_push(tiny_model, ref, settings)


def _attach(repository, subject: Descriptor, artifact_type: str, payload: bytes):
    """Push a small artifact whose subject is ``subject`` (a referrer)."""
    return attach(
        repository,
        subject,
        artifact_type,
        [push_blob(repository, "application/octet-stream", payload)],
    )


@pytest.mark.interop(
    "registries", "referrers", "no referrers API on either: the tag schema is written and read"
)
def test_referrers_fall_back_to_the_tag_schema(tiny_model, any_registry, settings):
    """Neither distribution 2.8 nor crane's registry serves the referrers API."""
    ref, built = _push_model(tiny_model, any_registry, settings, "refs/model:v1")
    repository = open_repository(parse_reference(ref), settings)
    sbom = _attach(repository, built.manifest_descriptor, SBOM_TYPE, b'{"sbom": true}')
    assert repository.referrers_api is None or repository.referrers_api is False
    found = repository.referrers(built.manifest_descriptor)
    assert [(d.digest, d.artifact_type) for d in found] == [(sbom.digest, SBOM_TYPE)]
    assert repository.referrers_api is False
    hexpart = built.digest.split(":")[1]
    assert f"sha256-{hexpart}" in repository.list_tags()
    inspected = modelpack.inspect(ref, remote=True, settings=settings)
    assert [r.digest for r in inspected.referrers] == [sbom.digest]


@pytest.mark.interop(
    "registries",
    "copy between registries",
    "digest kept; SBOM, signature referrer and `.sig` tag arrive; verify passes there",
)
def test_copy_between_registries_keeps_the_digest_and_brings_referrers(
    tiny_model, registry, second_registry, settings, tmp_path
):
    ref, built = _push_model(tiny_model, registry, settings, f"copy/src-{second_registry.port}:v1")
    source_repo = open_repository(parse_reference(ref), settings)
    sbom = _attach(source_repo, built.manifest_descriptor, SBOM_TYPE, b'{"sbom": 1}')
    hexpart = built.digest.split(":")[1]
    key = modelpack.keygen(tmp_path / "copy-key", password=None)
    modelpack.sign(ref, key.private_path, settings=settings)
    signature = source_repo.resolve(f"sha256-{hexpart}.sig")

    destination = f"{second_registry.host}/copy/dst:v1"
    result = run_cli("copy", ref, destination, "--plain-http", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["digest"] == built.digest
    assert document["referrers"] == 3  # the SBOM, the signature referrer, the .sig tag
    raw = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{destination}"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert sha256_bytes(raw) == built.digest
    dst_repo = open_repository(parse_reference(destination), settings)
    assert sbom.digest in [d.digest for d in dst_repo.referrers(built.manifest_descriptor)]
    assert dst_repo.resolve(f"sha256-{hexpart}.sig").digest == signature.digest
    out = modelpack.pull(destination, tmp_path / "out", settings=settings)
    assert tree_files(out) == tree_files(tiny_model)
    assert modelpack.inspect(destination, remote=True, settings=settings).signatures == 1
    assert modelpack.verify(destination, key.public_path, settings=settings).valid


def test_copy_within_one_registry_mounts(tiny_model, registry, settings):
    ref, built = _push_model(tiny_model, registry, settings, "copy/mount-src:v1")
    result = modelpack.copy(ref, f"{registry.host}/copy/mount-dst:v1", settings=settings)
    assert result.stats.mounted == len(built.layers) + 1
    assert result.stats.bytes_transferred == 0


def test_copy_to_and_from_an_oci_layout_and_the_store(
    tiny_model, registry, second_registry, settings, tmp_path
):
    ref, built = _push_model(tiny_model, registry, settings, "copy/layout:v1")
    layout = tmp_path / "layout"
    to_layout = modelpack.copy(ref, f"oci:{layout}:v1", settings=settings)
    assert to_layout.digest == built.digest
    index = json.loads((layout / "index.json").read_text())
    assert any(
        m["annotations"]["org.opencontainers.image.ref.name"] == "v1" for m in index["manifests"]
    )
    # skopeo reads our layout as it is.
    subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{layout}:v1"], check=True, capture_output=True
    )
    back = f"{second_registry.host}/copy/from-layout:v1"
    assert modelpack.copy(f"oci:{layout}:v1", back, settings=settings).digest == built.digest
    node = settings.with_overrides(home=tmp_path / "node")
    stored = modelpack.copy(back, f"store:{back}", settings=node)
    assert stored.digest == built.digest
    assert [m.reference for m in modelpack.list_models(settings=node)] == [back]


def test_copy_errors(registry, settings, tmp_path):
    missing = run_cli(
        "copy", f"{registry.host}/copy/none:v1", f"oci:{tmp_path / 'x'}:v1", "--plain-http"
    )
    assert missing.returncode == 3
    bad = run_cli("copy", "oci:", f"{registry.host}/x:v1")
    assert bad.returncode == 2


def test_a_registry_with_the_referrers_api_is_asked_first(tiny_model, registry, settings):
    from support.http_proxy import Fault, HttpProxy, requests_to

    from modelpack.oci.spec import MEDIA_TYPE_OCI_INDEX

    front = HttpProxy(upstream=registry.url).start()
    try:
        ref, built = _push_model(tiny_model, front, settings, "refs/api:v1")
        listed = {
            "digest": "sha256:" + "ab" * 32,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "size": 321,
            "artifactType": SBOM_TYPE,
        }
        index = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": [listed]}
        front.add(
            Fault(
                requests_to("GET", f"/referrers/{built.digest}"),
                status=200,
                body=json.dumps(index).encode(),
                content_type=MEDIA_TYPE_OCI_INDEX,
            )
        )
        repository = open_repository(parse_reference(ref), settings)
        found = repository.referrers(built.manifest_descriptor)
        assert [(d.digest, d.artifact_type) for d in found] == [(listed["digest"], SBOM_TYPE)]
        assert repository.referrers_api is True
        assert not [
            e for e in front.exchanges if "/manifests/sha256-" in e.path
        ]  # no tag-schema lookup
    finally:
        front.stop()
