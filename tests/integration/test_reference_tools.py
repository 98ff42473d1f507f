"""modelpack against the reference tools themselves, built at their pins (not our imitations):
modctl, ORAS, KitOps, cosign and crane, each direction where it makes sense, raw and tar
layers.  docs/interop.md says what each row showed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from support.helpers import build_and_push, run_cli, tree_files

import modelpack


@pytest.fixture
def model(tiny_model):
    return tiny_model


@pytest.fixture(params=["tiny", "minilm"])
def models(request, tmp_path):
    """The tiny model and the real MiniLM (91 MB, 14 files, a subfolder), each in turn; a
    copy, since the tools write beside the files (Kitfile, Modelfile)."""
    if request.param == "tiny":
        return request.getfixturevalue("tiny_model")
    copy = tmp_path / "all-MiniLM-L6-v2"
    shutil.copytree(request.getfixturevalue("minilm_model"), copy)
    return copy


def _ref(registry, name: str) -> str:
    return f"{registry.host}/reference-tools/{name}"


# -- modctl -----------------------------------------------------------------------


def _modctl_modelfile(go_peers, model, folder):
    folder.mkdir(exist_ok=True)
    go_peers.run("modctl", "modelfile", "generate", str(model), "--output", str(folder))
    return folder / "Modelfile"


def _modctl_build_push(go_peers, model, ref, modelfile, *extra):
    go_peers.run("modctl", "build", "-t", ref, "-f", str(modelfile), *extra, str(model))
    go_peers.run("modctl", "push", "--plain-http", ref)


@pytest.mark.interop(
    "modctl",
    "modctl build + push, we pull",
    "files identical (raw and tar layers); config read: name, family; `inspect --remote` shows them",
)
@pytest.mark.parametrize("layers", ["raw", "tar"])
def test_modctl_build_push_then_modelpack_pull(
    layers, go_peers, models, registry, settings, tmp_path
):
    ref = _ref(registry, f"modctl-{layers}:v1")
    modelfile = _modctl_modelfile(go_peers, models, tmp_path / "mf")
    _modctl_build_push(
        go_peers, models, ref, modelfile, *([] if layers == "raw" else ["--raw=false"])
    )
    out = modelpack.pull(ref, tmp_path / "out", settings=settings)
    assert tree_files(out) == tree_files(models)
    inspected = modelpack.inspect(ref, remote=True, settings=settings)
    assert inspected.config is not None
    assert inspected.config.descriptor.family == "bert"  # modctl read config.json's model_type
    assert inspected.config.descriptor.name == models.name
    shown = run_cli("inspect", ref, "--remote", "--plain-http")
    assert shown.returncode == 0, shown.stderr
    assert "model.safetensors" in shown.stdout and "bert" in shown.stdout


@pytest.mark.interop(
    "modctl",
    "we push, modctl pull / extract",
    "`modctl pull --extract-dir` and `modctl extract` give identical files (raw and tar)",
)
@pytest.mark.parametrize("layer_format", ["raw", "tar"])
def test_modelpack_push_then_modctl_pull_and_extract(
    layer_format, go_peers, models, registry, settings, tmp_path
):
    ref = _ref(registry, f"ours-for-modctl-{layer_format}:v1")
    build_and_push(models, ref, settings, layer_format=layer_format)
    go_peers.run("modctl", "pull", "--plain-http", ref, "--extract-dir", str(tmp_path / "pulled"))
    assert tree_files(tmp_path / "pulled") == tree_files(models)
    go_peers.run("modctl", "extract", ref, "--output", str(tmp_path / "extracted"))
    assert tree_files(tmp_path / "extracted") == tree_files(models)


@pytest.mark.interop(
    "modctl",
    "we push, modctl fetch",
    "`modctl fetch --patterns '*.json'` gets exactly the matching files (Go's filepath.Match: `*` stops at `/`)",
)
def test_modctl_fetch_patterns_of_ours(go_peers, model, registry, settings, tmp_path):
    ref = _ref(registry, "ours-for-modctl-fetch:v1")
    build_and_push(model, ref, settings)
    out = tmp_path / "fetched"
    go_peers.run(
        "modctl", "fetch", "--plain-http", ref, "--output", str(out), "--patterns", "*.json"
    )
    # modctl matches patterns with Go's filepath.Match: `*` stops at a `/`.
    wanted = {k: v for k, v in tree_files(model).items() if k.endswith(".json") and "/" not in k}
    assert tree_files(out) == wanted


@pytest.mark.interop(
    "modctl",
    "Modelfiles both ways",
    "ours builds with `modctl build -f`, modctl's with `modelpack build -f`; both pull identical",
)
def test_modelfiles_cross_build(go_peers, model, registry, settings, tmp_path):
    """Ours builds with modctl build -f; modctl's builds with modelpack build -f."""
    ours = tmp_path / "ours.Modelfile"
    made = run_cli("modelfile", "generate", str(model), "--output", str(ours))
    assert made.returncode == 0, made.stderr
    ref = _ref(registry, "modctl-from-our-modelfile:v1")
    _modctl_build_push(go_peers, model, ref, ours)
    assert tree_files(modelpack.pull(ref, tmp_path / "a", settings=settings)) == tree_files(model)

    theirs = _modctl_modelfile(go_peers, model, tmp_path / "theirs")
    ref = _ref(registry, "ours-from-modctl-modelfile:v1")
    built = modelpack.build(model, ref, modelfile=theirs, settings=settings)
    assert built.config.descriptor.family == "bert"
    modelpack.push(ref, settings=settings)
    assert tree_files(modelpack.pull(ref, tmp_path / "b", settings=settings)) == tree_files(model)


# -- ORAS -------------------------------------------------------------------------


@pytest.mark.interop(
    "oras",
    "oras manifest fetch of ours",
    "the bytes hash to our digest; artifactType is the CNCF model manifest",
)
def test_oras_fetches_our_manifest_byte_for_byte(go_peers, model, registry, settings):
    ref = _ref(registry, "ours-for-oras:v1")
    built = build_and_push(model, ref, settings)
    fetched = go_peers.run("oras", "manifest", "fetch", "--plain-http", ref).stdout
    assert "sha256:" + __import__("hashlib").sha256(fetched.encode()).hexdigest() == built.digest
    assert json.loads(fetched)["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"


@pytest.mark.interop("oras", "oras pull of ours (raw)", "every file at its path, identical")
def test_oras_pull_of_raw_layers_gives_the_files(go_peers, model, registry, settings, tmp_path):
    ref = _ref(registry, "ours-for-oras-raw:v1")
    build_and_push(model, ref, settings)
    go_peers.run("oras", "pull", "--plain-http", "-o", str(tmp_path / "o"), ref)
    assert tree_files(tmp_path / "o") == tree_files(model)


@pytest.mark.interop(
    "oras",
    "oras pull of ours (tar)",
    "oras writes each tar layer as the archive under its title (not unpacked); the archive holds the file",
)
def test_oras_pull_of_tar_layers_writes_each_archive_under_its_path(
    go_peers, model, registry, settings, tmp_path
):
    """ORAS unpacks only layers it made itself (its own unpack annotation): a ModelPack tar
    layer lands as the tar archive, named by its title.  What users see, recorded."""
    ref = _ref(registry, "ours-for-oras-tar:v1")
    build_and_push(model, ref, settings, layer_format="tar")
    go_peers.run("oras", "pull", "--plain-http", "-o", str(tmp_path / "o"), ref)
    import tarfile

    with tarfile.open(tmp_path / "o" / "model.safetensors") as archive:
        member = archive.extractfile("model.safetensors")
        assert member is not None
        assert member.read() == (model / "model.safetensors").read_bytes()


@pytest.mark.interop("oras", "oras discover of ours", "our cosign signature referrer is listed")
def test_oras_discover_lists_our_signature(go_peers, model, registry, settings, tmp_path):
    ref = _ref(registry, "ours-signed-for-oras:v1")
    build_and_push(model, ref, settings)
    keys = modelpack.keygen(tmp_path / "k", password=None)
    modelpack.sign(ref, keys.private_path, settings=settings)
    shown = go_peers.run("oras", "discover", "--plain-http", "--format", "json", ref).stdout
    types = {r["artifactType"] for r in json.loads(shown).get("referrers", [])}
    assert "application/vnd.dev.cosign.artifact.sig.v1+json" in types


@pytest.mark.interop(
    "oras",
    "oras attach, we copy",
    "an SBOM attached with `oras attach` arrives with `modelpack copy` in the other repository",
)
def test_oras_attach_then_modelpack_copy_carries_the_sbom(
    go_peers, model, registry, settings, tmp_path
):
    ref = _ref(registry, "ours-sbom:v1")
    build_and_push(model, ref, settings)
    sbom = tmp_path / "sbom.spdx.json"
    sbom.write_text('{"spdxVersion": "SPDX-2.3"}')
    go_peers.run(
        "oras", "attach", "--plain-http", "--artifact-type", "application/spdx+json",
        ref, f"{sbom.name}:application/spdx+json", cwd=tmp_path,
    )  # fmt: skip
    copied = _ref(registry, "ours-sbom-copy:v1")
    result = modelpack.copy(ref, copied, settings=settings)
    assert result.stats.referrers >= 1
    shown = go_peers.run("oras", "discover", "--plain-http", "--format", "json", copied).stdout
    assert {r["artifactType"] for r in json.loads(shown)["referrers"]} == {"application/spdx+json"}


@pytest.mark.interop(
    "oras", "oras copy of ours", "same digest at the destination; we pull identical files from it"
)
def test_oras_copy_of_ours_keeps_the_digest(go_peers, model, registry, settings, tmp_path):
    ref = _ref(registry, "ours-for-oras-copy:v1")
    built = build_and_push(model, ref, settings)
    copied = _ref(registry, "ours-oras-copied:v1")
    go_peers.run("oras", "copy", "--from-plain-http", "--to-plain-http", ref, copied)
    assert (
        modelpack.inspect(copied, remote=True, settings=settings).descriptor.digest == built.digest
    )
    assert tree_files(modelpack.pull(copied, tmp_path / "o", settings=settings)) == tree_files(
        model
    )


# -- KitOps -----------------------------------------------------------------------


@pytest.mark.interop(
    "kit",
    "kit pack --use-model-pack + push, we pull",
    "files identical (tar layers, a directory as one layer)",
)
def test_kit_pack_modelpack_then_modelpack_pull(go_peers, models, registry, settings, tmp_path):
    source = tmp_path / "kit-model"
    shutil.copytree(models, source)
    go_peers.run("kit", "init", str(source))
    ref = _ref(registry, "kit-modelpack:v1")
    go_peers.run("kit", "pack", "--use-model-pack", "-t", ref, str(source))
    go_peers.run("kit", "push", "--plain-http", ref)
    out = modelpack.pull(ref, tmp_path / "out", settings=settings)
    expected = {k: v for k, v in tree_files(source).items() if k != "Kitfile"}
    assert tree_files(out) == expected


@pytest.mark.interop(
    "kit",
    "we push, kit pull + unpack",
    "identical files, raw and tar layers (tar layers carry their folders, which kit needs)",
)
@pytest.mark.parametrize("layer_format", ["raw", "tar"])
def test_modelpack_push_then_kit_pull_and_unpack(
    layer_format, go_peers, models, registry, settings, tmp_path
):
    ref = _ref(registry, f"ours-for-kit-{layer_format}:v1")
    build_and_push(models, ref, settings, layer_format=layer_format)
    go_peers.run("kit", "pull", "--plain-http", ref)
    go_peers.run("kit", "unpack", ref, "-d", str(tmp_path / "unpacked"))
    assert tree_files(tmp_path / "unpacked") == tree_files(models)


# -- crane ------------------------------------------------------------------------


@pytest.mark.interop(
    "crane",
    "crane validate / digest / manifest of ours",
    "`crane validate --remote` passes; digest and config media type as we wrote them (raw and tar)",
)
@pytest.mark.parametrize("layer_format", ["raw", "tar"])
def test_crane_validates_and_reads_our_artifacts(layer_format, go_peers, model, registry, settings):
    ref = _ref(registry, f"ours-for-crane-{layer_format}:v1")
    built = build_and_push(model, ref, settings, layer_format=layer_format)
    go_peers.run("crane", "validate", "--insecure", "--remote", ref)
    digest = go_peers.run("crane", "digest", "--insecure", ref).stdout.strip()
    assert digest == built.digest
    manifest = json.loads(go_peers.run("crane", "manifest", "--insecure", ref).stdout)
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"


# -- cosign -----------------------------------------------------------------------


@pytest.fixture
def cosign_keys(go_peers, tmp_path):
    go_peers.run("cosign", "generate-key-pair", cwd=tmp_path, env={"COSIGN_PASSWORD": ""})
    return tmp_path / "cosign.key", tmp_path / "cosign.pub"


def _cosign_verify(go_peers, public, ref, check=True):
    return go_peers.run(
        "cosign", "verify", "--key", str(public), "--insecure-ignore-tlog=true",
        "--allow-http-registry", ref, check=check,
    )  # fmt: skip


@pytest.mark.interop(
    "cosign",
    "cosign verify of our signatures",
    "`cosign verify --key --insecure-ignore-tlog` accepts ours and names our digest; another key is refused",
)
def test_cosign_verifies_modelpack_signatures(go_peers, model, registry, settings, tmp_path):
    ref = _ref(registry, "ours-signed-for-cosign:v1")
    built = build_and_push(model, ref, settings)
    keys = modelpack.keygen(tmp_path / "ours", password=None)
    modelpack.sign(ref, keys.private_path, settings=settings)
    verified = _cosign_verify(go_peers, keys.public_path, ref)
    claims = json.loads(verified.stdout)
    assert claims[0]["critical"]["image"]["docker-manifest-digest"] == built.digest
    other = modelpack.keygen(tmp_path / "other", password=None)
    refused = _cosign_verify(go_peers, other.public_path, ref, check=False)
    assert refused.returncode != 0


@pytest.mark.interop(
    "cosign",
    "cosign sign, we verify",
    "`cosign sign --key --tlog-upload=false` in both forms (sigstore bundle referrer, `.sig` tag): `verify` and `pull --verify-key` accept; another key exits 5",
)
@pytest.mark.parametrize("form", ["bundle", "legacy-tag"])
def test_modelpack_verifies_cosign_signatures(
    form, go_peers, cosign_keys, model, registry, settings, tmp_path
):
    """cosign v3 writes a sigstore bundle referrer by default, and the `.sig` tag with
    --new-bundle-format=false; both verify with `modelpack verify` and `pull --verify-key`."""
    private, public = cosign_keys
    ref = _ref(registry, f"cosign-signed-{form}:v1")
    build_and_push(model, ref, settings)
    extra = ["--new-bundle-format=false"] if form == "legacy-tag" else []
    go_peers.run(
        "cosign", "sign", "--key", str(private), "--use-signing-config=false",
        "--tlog-upload=false", "--allow-http-registry", "-y", *extra, ref,
        env={"COSIGN_PASSWORD": ""},
    )  # fmt: skip
    check = modelpack.verify(ref, public, settings=settings)
    assert check.valid and check.valid[0].source == ("bundle" if form == "bundle" else "tag")
    pulled = run_cli("pull", ref, "-o", str(tmp_path / "out"), "--verify-key", str(public),
                     "--plain-http")  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    assert tree_files(tmp_path / "out") == tree_files(model)
    other = modelpack.keygen(tmp_path / "other", password=None)
    refused = run_cli("verify", ref, "--key", str(other.public_path), "--plain-http")
    assert refused.returncode == 5, refused.stderr


# -- the cnai names (what released Harbor renders: tests/integration/test_harbor.py) -------

CNAI_CONFIG = "application/vnd.cnai.model.config.v1+json"


def _manifest_and_blobs(go_peers, ref):
    manifest = json.loads(go_peers.run("crane", "manifest", "--insecure", ref).stdout)
    repository = ref.rsplit(":", 1)[0]

    def blob(digest):
        return subprocess.run(
            [str(go_peers.path("crane")), "blob", "--insecure", f"{repository}@{digest}"],
            capture_output=True, check=True, timeout=120,
        ).stdout  # fmt: skip

    return manifest, blob


@pytest.mark.interop(
    "modctl",
    "build --media-types cnai, modctl pulls",
    "the cnai names modctl writes, raw weights, every layer with its path; modctl and we pull identical files",
)
def test_a_cnai_build_is_read_by_modctl_and_by_us(go_peers, model, registry, settings, tmp_path):
    ref = _ref(registry, "for-harbor:v1")
    built = modelpack.build(model, ref, media_types="cnai", settings=settings)
    modelpack.push(ref, settings=settings)
    manifest, _ = _manifest_and_blobs(go_peers, ref)
    assert manifest["artifactType"] == "application/vnd.cnai.model.manifest.v1+json"
    assert manifest["config"]["mediaType"] == CNAI_CONFIG
    paths = {layer["annotations"]["org.cnai.model.filepath"] for layer in manifest["layers"]}
    assert paths == set(tree_files(model))
    # the weights stay raw (zero-copy); only the doc layers are tar
    kinds = {layer.plan.file.relpath: layer.descriptor.media_type for layer in built.layers}
    assert kinds["model.safetensors"] == "application/vnd.cnai.model.weight.v1.raw"
    assert kinds["README.md"] == "application/vnd.cnai.model.doc.v1.tar"
    # every tool still reads it: modctl, and our own pull
    go_peers.run("modctl", "pull", "--plain-http", ref, "--extract-dir", str(tmp_path / "m"))
    assert tree_files(tmp_path / "m") == tree_files(model)
    assert tree_files(modelpack.pull(ref, tmp_path / "o", settings=settings)) == tree_files(model)


def test_copy_converts_media_types_and_leaves_signatures_behind(
    go_peers, model, registry, settings, tmp_path
):
    ref = _ref(registry, "convert-src:v1")
    built = build_and_push(model, ref, settings)
    keys = modelpack.keygen(tmp_path / "k", password=None)
    modelpack.sign(ref, keys.private_path, settings=settings)
    target = _ref(registry, "convert-dst:v1")
    copied = run_cli("copy", ref, target, "--media-types", "cnai", "--plain-http", "--json")
    assert copied.returncode == 0, copied.stderr
    document = json.loads(copied.stdout)
    assert document["convertedFrom"] == built.digest and document["digest"] != built.digest
    assert document["referrers"] == 0 and document["transferred"] == 0  # blobs mounted/skipped
    assert "signatures name that digest" in copied.stderr
    manifest, _ = _manifest_and_blobs(go_peers, target)
    assert manifest["config"]["mediaType"] == CNAI_CONFIG
    assert all("org.cnai.model.filepath" in layer["annotations"] for layer in manifest["layers"])
    assert tree_files(modelpack.pull(target, tmp_path / "o", settings=settings)) == tree_files(
        model
    )
    back = _ref(registry, "convert-back:v1")
    again = modelpack.copy(target, back, media_types="cncf", settings=settings)
    assert again.digest == built.digest  # the same names again: the same bytes, the same digest


def test_registries_config_media_types_applies_to_build_and_push(
    go_peers, model, registry, tmp_path, monkeypatch
):
    config = tmp_path / "registries.toml"
    config.write_text(f'[registries."{registry.host}"]\nmedia_types = "cnai"\nplain_http = true\n')
    monkeypatch.setenv("MODELPACK_CONFIG", str(config))
    ref = _ref(registry, "configured:v1")
    assert run_cli("build", str(model), "-t", ref, "-q").returncode == 0
    pushed = run_cli("push", ref, "--json")
    assert pushed.returncode == 0, pushed.stderr
    assert "convertedFrom" not in json.loads(pushed.stdout)  # built in cnai already
    manifest, _ = _manifest_and_blobs(go_peers, ref)
    assert manifest["config"]["mediaType"] == CNAI_CONFIG


@pytest.mark.interop(
    "modctl", "modctl's cnai artifacts, we pull", "node cache, `--hf-cache`, `verify --dir`"
)
@pytest.mark.parametrize("how", ["cache", "hf-cache", "verify-dir"])
def test_modctl_cnai_artifacts_work_on_every_pull_path(
    how, go_peers, model, registry, settings, tmp_path
):
    """modctl v0.2 writes vnd.cnai: the node cache, the HF layout and verify --dir read it."""
    ref = _ref(registry, f"modctl-cnai-{how}:v1")
    modelfile = _modctl_modelfile(go_peers, model, tmp_path / "mf")
    _modctl_build_push(go_peers, model, ref, modelfile)
    if how == "cache":
        assert tree_files(modelpack.pull(ref, settings=settings)) == tree_files(model)
    elif how == "hf-cache":
        snapshot = modelpack.pull(ref, hf_cache=tmp_path / "hf", settings=settings)
        assert tree_files(snapshot) == tree_files(model)
    else:
        out = modelpack.pull(ref, tmp_path / "o", settings=settings)
        assert modelpack.verify_dir(ref, out, settings=settings).ok


FIELDS = ("name", "family", "architecture", "format", "paramSize", "precision")


def _config_fields(go_peers, ref) -> dict[str, str]:
    manifest, blob = _manifest_and_blobs(go_peers, ref)
    config = json.loads(blob(manifest["config"]["digest"]))
    merged = {**config.get("descriptor", {}), **config.get("config", {})}
    return {field: str(merged.get(field, "")) for field in FIELDS}


@pytest.mark.interop(
    "modctl / kit",
    "config fields for the same directory",
    "what each tool derives (table below); modctl and we agree on name, family, "
    "architecture and precision; only we read format and parameter count",
)
def test_config_fields_each_tool_derives(go_peers, model, registry, settings, tmp_path):
    ours = _ref(registry, "fields-ours:v1")
    build_and_push(model, ours, settings)
    theirs = _ref(registry, "fields-modctl:v1")
    _modctl_build_push(go_peers, model, theirs, _modctl_modelfile(go_peers, model, tmp_path / "mf"))
    kit_source = tmp_path / "kit-model"
    shutil.copytree(model, kit_source)
    go_peers.run("kit", "init", str(kit_source))
    kit_ref = _ref(registry, "fields-kit:v1")
    go_peers.run("kit", "pack", "--use-model-pack", "-t", kit_ref, str(kit_source))
    go_peers.run("kit", "push", "--plain-http", kit_ref)
    table = {
        "modelpack": _config_fields(go_peers, ours),
        f"modctl {go_peers.versions['modctl']}": _config_fields(go_peers, theirs),
        f"kit {go_peers.versions['kit']}": _config_fields(go_peers, kit_ref),
    }
    mine, modctl = table["modelpack"], table[f"modctl {go_peers.versions['modctl']}"]
    for field in ("name", "family", "architecture", "precision"):
        assert mine[field] == modctl[field] != "", (field, table)
    assert mine["format"] == "safetensors" and mine["paramSize"]
    if report := os.environ.get("MODELPACK_INTEROP_REPORT"):
        with open(report, "a", encoding="utf-8") as out:
            out.write(json.dumps({"config-fields": table}) + "\n")


@pytest.mark.interop(
    "cosign",
    "a tampered signature",
    "one byte of a `.sig` signature flipped: `cosign verify` and `modelpack verify` both refuse",
)
def test_a_tampered_signature_is_refused_by_both(go_peers, cosign_keys, model, registry, settings):
    import base64

    from modelpack.oci.digests import sha256_bytes
    from modelpack.oci.reference import parse_reference
    from modelpack.oci.spec import MEDIA_TYPE_OCI_MANIFEST, Descriptor
    from modelpack.registry import open_repository

    private, public = cosign_keys
    ref = _ref(registry, "tampered:v1")
    built = build_and_push(model, ref, settings)
    go_peers.run(
        "cosign", "sign", "--key", str(private), "--use-signing-config=false",
        "--tlog-upload=false", "--allow-http-registry", "-y", "--new-bundle-format=false", ref,
        env={"COSIGN_PASSWORD": ""},
    )  # fmt: skip
    assert modelpack.verify(ref, public, settings=settings).valid  # intact: both accept
    assert _cosign_verify(go_peers, public, ref).returncode == 0
    tag = "sha256-" + built.digest.split(":")[1] + ".sig"
    repository = open_repository(parse_reference(ref), settings)
    manifest = json.loads(
        go_peers.run("crane", "manifest", "--insecure", f"{ref.rsplit(':', 1)[0]}:{tag}").stdout
    )
    key = "dev.cosignproject.cosign/signature"
    for layer in manifest["layers"]:
        signature = bytearray(base64.b64decode(layer["annotations"][key]))
        signature[len(signature) // 2] ^= 0x01
        layer["annotations"][key] = base64.b64encode(bytes(signature)).decode()
    data = json.dumps(manifest).encode()
    desc = Descriptor(MEDIA_TYPE_OCI_MANIFEST, sha256_bytes(data), len(data))
    repository.put_manifest(desc, data, tag)
    assert _cosign_verify(go_peers, public, ref, check=False).returncode != 0
    ours = run_cli("verify", ref, "--key", str(public), "--plain-http")
    assert ours.returncode == 5, ours.stderr
    assert "none by key" in ours.stderr
