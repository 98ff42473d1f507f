"""Docker Model Runner (github.com/docker/model-runner v1.2.9) both ways: its distribution
library, driven by tests/clients/model-runner the way `docker model pull` and
`docker model package --push` drive it, pulls what we push and we pull, inspect and serve
what it packages, as ModelPack (`--format cncf`) and in its own format (the default).

Model Runner speaks plain HTTP only to `localhost` and `*.local` registries
(pkg/distribution/oci/reference/reference.go, isInsecureHost), so the registry is named
localhost:PORT here.  The hostile variants of its own format are the artifact it wrote
with one thing changed in the manifest (a path, the config), re-pushed under another tag.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
import requests
from support.gateway import Gateway
from support.helpers import run_cli, tree_files

import modelpack
from modelpack.oci.limits import MAX_MANIFEST_BYTES
from modelpack.schemas import CLI_INSPECT, validate


@pytest.fixture(scope="module")
def model_runner(go_peers):  # noqa: ANN201 - a function running the peer
    store = go_peers.workdir / "model-runner-store"

    def run(command: str, *args: str) -> str:
        result = subprocess.run(
            [str(go_peers.path("model-runner-peer")), command, *args],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, f"model-runner-peer {command}: {result.stderr[-3000:]}"
        return result.stdout.strip()

    run.store = str(store)
    return run


def _localhost(registry) -> str:
    return "localhost:" + registry.host.rsplit(":", 1)[1]


@pytest.mark.interop(
    "Docker Model Runner v1.2.9", "pulls ours", "identical files; inspect reads our config"
)
def test_model_runner_pulls_our_model(model_runner, registry, minilm_model, settings):
    ref = f"{_localhost(registry)}/dmr/ours-minilm:v1"
    modelpack.build(minilm_model, ref, settings=settings)
    modelpack.push(ref, settings=settings)
    model_dir = Path(model_runner("pull", "--store", model_runner.store, ref))
    assert tree_files(model_dir) == tree_files(minilm_model)
    seen = json.loads(model_runner("inspect", "--store", model_runner.store, ref))
    assert seen["format"] == "safetensors"
    assert seen["id"] == modelpack.inspect(ref, settings=settings).descriptor.digest


@pytest.mark.interop(
    "Docker Model Runner v1.2.9",
    "pulls ours (tar layers)",
    "writes each tar layer as the file: use raw layers",
)
def test_model_runner_writes_a_tar_layer_as_the_archive_itself(
    model_runner, registry, tiny_model, settings
):
    """Model Runner hard-links every layer that has a file path annotation to that path
    (pkg/distribution/internal/bundle/unpack.go, UnpackFromLayers -> unpackLayerToFile): it
    does not unpack `application/vnd.cncf.model.*.tar` layers. docs/kubernetes.md says to
    build with raw layers (our default) for Model Runner; this test notices if that changes."""
    ref = f"{_localhost(registry)}/dmr/ours-tar:v1"
    modelpack.build(tiny_model, ref, layer_format="tar", settings=settings)
    modelpack.push(ref, settings=settings)
    model_dir = Path(model_runner("pull", "--store", model_runner.store, ref))
    written = tree_files(model_dir)
    assert set(written) == set(tree_files(tiny_model))
    config = written["config.json"]
    with tarfile.open(fileobj=io.BytesIO(config)) as archive:
        assert (
            archive.extractfile("config.json").read() == (tiny_model / "config.json").read_bytes()
        )


@pytest.mark.interop(
    "Docker Model Runner v1.2.9",
    "we pull theirs (--format cncf)",
    "identical files; inspect reads its config",
)
def test_we_pull_what_model_runner_packages_as_modelpack(
    model_runner, registry, minilm_model, settings, tmp_path
):
    ref = f"{_localhost(registry)}/dmr/theirs-cncf:v1"
    model_runner("package", "--dir", str(minilm_model), "--format", "cncf", ref)
    out = tmp_path / "pulled"
    modelpack.pull(ref, out, settings=settings)
    assert tree_files(out) == tree_files(minilm_model)
    inspection = modelpack.inspect(ref, remote=True, settings=settings)
    assert inspection.config is not None
    assert inspection.config.config.format == "safetensors"


# -- its own format (no --format cncf) ------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def docker_format(model_runner, registry, minilm_model) -> str:
    """all-MiniLM-L6-v2 as `docker model package --safetensors-dir DIR --push` writes it:
    a v0.2 config and one Model Runner layer per file (1_Pooling/config.json too)."""
    ref = f"{_localhost(registry)}/dmr/peer/minilm-docker:v1"
    model_runner("package", "--dir", str(minilm_model), "--format", "docker", ref)
    manifest = _manifest(registry, "dmr/peer/minilm-docker", "v1")
    assert manifest["config"]["mediaType"] == "application/vnd.docker.ai.model.config.v0.2+json"
    assert "artifactType" not in manifest
    return ref


@pytest.fixture(scope="module")
def dmr_gateway(registry, tmp_path_factory):  # noqa: ANN201 - support.gateway.Gateway
    """`modelpack serve` in front of the registry's dmr/ namespace."""
    gateway = Gateway(f"{registry.host}/dmr", tmp_path_factory.mktemp("dmr-gateway")).start()
    yield gateway
    gateway.stop()


def _manifest(registry, repository: str, tag: str) -> dict:
    response = requests.get(
        f"http://{registry.host}/v2/{repository}/manifests/{tag}",
        headers={"Accept": OCI_MANIFEST},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


def _put_blob(registry, repository: str, data: bytes) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = requests.post(f"http://{registry.host}/v2/{repository}/blobs/uploads/", timeout=30)
    started.raise_for_status()
    location = started.headers["Location"]
    if location.startswith("/"):
        location = f"http://{registry.host}{location}"
    separator = "&" if "?" in location else "?"
    requests.put(f"{location}{separator}digest={digest}", data=data, timeout=30).raise_for_status()
    return {"digest": digest, "size": len(data)}


def _variant(registry, docker_format: str, tag: str, edit) -> str:  # noqa: ANN001
    """The artifact Model Runner wrote with ``edit(manifest)`` applied, tagged ``tag``; where
    the layers changed, its config's rootfs lists the new ones (Model Runner's store finds
    layers by those diff ids)."""
    repository = "dmr/peer/minilm-docker"
    manifest = _manifest(registry, repository, "v1")
    edit(manifest)
    config_url = f"http://{registry.host}/v2/{repository}/blobs/{manifest['config']['digest']}"
    try:
        document = json.loads(requests.get(config_url, timeout=30).content)
    except ValueError:
        document = None  # a malformed config stays as the test made it
    layers = [layer["digest"] for layer in manifest["layers"]]
    diff_ids = document.get("rootfs", {}).get("diff_ids") if isinstance(document, dict) else None
    if isinstance(diff_ids, list) and diff_ids != layers:
        document["rootfs"]["diff_ids"] = layers
        manifest["config"].update(_put_blob(registry, repository, json.dumps(document).encode()))
    requests.put(
        f"http://{registry.host}/v2/{repository}/manifests/{tag}",
        data=json.dumps(manifest).encode(),
        headers={"Content-Type": OCI_MANIFEST},
        timeout=30,
    ).raise_for_status()
    return docker_format.rsplit(":", 1)[0] + f":{tag}"


def _layer(manifest: dict, path: str) -> dict:
    return next(
        layer for layer in manifest["layers"]
        if layer.get("annotations", {}).get("org.cncf.model.filepath") == path
    )  # fmt: skip


@pytest.mark.interop(
    "Docker Model Runner v1.2.9",
    "we pull theirs (its own format)",
    "pull -o (CLI and API) and into the node cache: the files Model Runner itself unpacks, "
    "at the same paths, 1_Pooling/ too; no --allow-oci-artifact",
)
def test_we_pull_what_model_runner_packages_in_its_own_format(
    model_runner, docker_format, minilm_model, settings, tmp_path
):
    expected = tree_files(minilm_model)  # hidden files (.gitattributes) are left out by both
    theirs = Path(model_runner("pull", "--store", model_runner.store, docker_format))
    assert tree_files(theirs) == expected
    pulled = run_cli("pull", "--plain-http", docker_format, "-o", str(tmp_path / "cli"))
    assert pulled.returncode == 0, pulled.stderr
    assert tree_files(tmp_path / "cli") == expected
    assert (
        tree_files(modelpack.pull(docker_format, tmp_path / "api", settings=settings)) == expected
    )
    cached = modelpack.pull(docker_format, settings=settings)
    assert tree_files(cached) == expected
    assert cached.parent.name == "sha256"  # the node cache's tree of this manifest


@pytest.mark.interop(
    "Docker Model Runner v1.2.9",
    "we inspect theirs (its own format)",
    "inspect --remote (its --json valid against the schema) and the API: format, parameters, "
    "quantization, context size and size as Model Runner reads them",
)
def test_we_inspect_what_model_runner_packages_in_its_own_format(
    model_runner, docker_format, registry, minilm_model, settings
):
    model_runner("pull", "--store", model_runner.store, docker_format)
    seen = json.loads(model_runner("inspect", "--store", model_runner.store, docker_format))
    inspection = modelpack.inspect(docker_format, remote=True, settings=settings)
    assert inspection.config is None  # no ModelPack config: Model Runner's has its own field
    docker = inspection.docker_config
    assert docker is not None and inspection.descriptor.digest == seen["id"]
    assert (docker.format, docker.parameters, docker.size, docker.architecture or "") == (
        seen["format"], seen["parameters"], seen["size"], seen["architecture"]
    )  # fmt: skip
    manifest = _manifest(registry, "dmr/peer/minilm-docker", "v1")
    raw = requests.get(
        f"http://{registry.host}/v2/dmr/peer/minilm-docker/blobs/{manifest['config']['digest']}",
        timeout=30,
    ).json()
    assert (docker.quantization, docker.context_size) == (
        raw["config"]["quantization"], raw["config"]["context_size"]
    )  # fmt: skip
    assert docker.context_size == 512  # max_position_embeddings of the model's config.json
    assert docker.diff_ids == tuple(layer["digest"] for layer in manifest["layers"])

    result = run_cli("inspect", "--remote", "--plain-http", "--json", docker_format)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    validate(document, CLI_INSPECT)
    assert document["config"] is None
    assert document["dockerConfig"]["config"] == {
        key: raw["config"][key] for key in document["dockerConfig"]["config"]
    }
    assert {layer["path"] for layer in document["layers"]} == set(tree_files(minilm_model))
    text = run_cli("inspect", "--remote", "--plain-http", docker_format)
    assert text.returncode == 0, text.stderr
    assert "Docker Model Runner format v0.2" in text.stdout
    assert seen["parameters"] in text.stdout and "512" in text.stdout


HUB_CLIENT = """
import json, sys
from huggingface_hub import HfApi, snapshot_download
repo, revision = json.loads(sys.argv[1])
api = HfApi()
info = api.model_info(repo, revision=revision, files_metadata=True)
out = {"snapshot": snapshot_download(repo, revision=revision),
       "siblings": {s.rfilename: s.size for s in info.siblings}, "sha": info.sha}
try:
    api.upload_file(path_or_fileobj=b"notes", path_in_repo="notes.txt", repo_id=repo,
                    revision=revision)
    out["commit"] = "accepted"
except Exception as exc:
    out["commit"] = {"error": type(exc).__name__, "message": str(exc),
                     "status": getattr(getattr(exc, "response", None), "status_code", None)}
print(json.dumps(out))
"""


@pytest.mark.interop(
    "Docker Model Runner v1.2.9",
    "modelpack serve serves theirs (its own format)",
    "huggingface_hub: snapshot_download gets identical files, model_info lists them; "
    "a commit is refused in the hub's format",
)
def test_modelpack_serve_serves_what_model_runner_packages(
    docker_format, dmr_gateway, registry, minilm_model, tmp_path
):
    expected = tree_files(minilm_model)
    before = _manifest(registry, "dmr/peer/minilm-docker", "v1")
    seen = dmr_gateway.client(HUB_CLIENT, ["peer/minilm-docker", "v1"], tmp_path / "hf")
    assert tree_files(Path(seen["snapshot"])) == expected
    assert seen["siblings"] == {path: len(data) for path, data in expected.items()}
    refused = seen["commit"]
    assert refused != "accepted" and refused["status"] == 400, refused
    assert "Docker Model Runner model" in refused["message"], refused
    assert _manifest(registry, "dmr/peer/minilm-docker", "v1") == before  # nothing moved


DOCKER = "application/vnd.docker.ai."
V01 = DOCKER + "model.config.v0.1+json"


def _unnamed(manifest: dict, path: str, media_type: str) -> dict:
    """The layer of ``path`` as a v0.1 layer of ``media_type`` that names no file."""
    layer = _layer(manifest, path)
    layer.pop("annotations")
    layer["mediaType"] = DOCKER + media_type
    return layer


def _archive(registry, manifest: dict, model: Path, paths: list[str], media_type: str) -> None:
    """Replace the layers of ``paths`` by one Model Runner archive of those files (a tar as
    its packaging.CreateDirectoryTarArchive wrote them: folder entries, then files)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in paths:
            for folder in Path(path).parents[:-1][::-1]:
                if folder.as_posix() not in tar.getnames():
                    tar.add(model / folder, folder.as_posix(), recursive=False)
            tar.add(model / path, path)
    for path in paths:
        manifest["layers"].remove(_layer(manifest, path))
    blob = _put_blob(registry, "dmr/peer/minilm-docker", buffer.getvalue())
    manifest["layers"].append({"mediaType": DOCKER + media_type, **blob})


def _gguf_and_friends(registry, manifest: dict, model: Path) -> None:
    _unnamed(manifest, "model.safetensors", "gguf.v3")  # two shards, in manifest order
    _unnamed(manifest, "vocab.txt", "gguf.v3")
    _unnamed(manifest, "tokenizer_config.json", "chat.template.jinja")
    _unnamed(manifest, "special_tokens_map.json", "mmproj")
    _unnamed(manifest, "README.md", "license")  # Model Runner does not unpack licenses


def _archives(registry, manifest: dict, model: Path) -> None:
    _unnamed(manifest, "model.safetensors", "safetensors")
    _archive(registry, manifest, model, ["1_Pooling/config.json"], "dir.tar")
    _archive(registry, manifest, model, ["config.json", "tokenizer.json"], "vllm.config.tar")


def _dduf(registry, manifest: dict, model: Path) -> None:
    _unnamed(manifest, "model.safetensors", "dduf")


@pytest.mark.interop(
    "Docker Model Runner v1.2.9",
    "we pull theirs (v0.1: layers naming no file, archives)",
    "pull -o, the node cache and modelpack serve write the files Model Runner's own pull "
    "unpacks, under its names (model-0000N-of-0000M.gguf, model.mmproj, template.jinja, "
    "model.safetensors, DIGEST.dduf, dir and vLLM config archives unpacked); a license as LICENSE",
)
@pytest.mark.parametrize(
    ("variant", "include"),
    [(_gguf_and_friends, "*.gguf"), (_archives, "model.safetensors"), (_dduf, "*.dduf")],
    ids=["gguf", "archives", "dduf"],
)
def test_model_runners_older_layers_get_the_names_model_runner_gives_them(
    model_runner, docker_format, dmr_gateway, registry, minilm_model, settings, tmp_path,
    variant, include,
):  # fmt: skip
    """Docker Hub's older ai/* models are v0.1 artifacts whose layers may carry no file path
    (internal/bundle/unpack.go, unpackLegacy names them).  Made here from what Model Runner
    packaged, each layer's media type changed and its annotations dropped, plus tars of some
    files as its archive layers; Model Runner's own pull of it is what ours must match."""
    tag = f"v01-{variant.__name__.strip('_')}"

    def edit(manifest: dict) -> None:
        manifest["config"]["mediaType"] = V01
        variant(registry, manifest, minilm_model)

    ref = _variant(registry, docker_format, tag, edit)
    theirs = tree_files(Path(model_runner("pull", "--store", model_runner.store, ref)))
    readme = (minilm_model / "README.md").read_bytes()
    expected = {**theirs, "LICENSE": readme} if variant is _gguf_and_friends else theirs
    if variant is _archives:
        assert theirs == tree_files(minilm_model)
    ours = modelpack.pull(ref, tmp_path / "out", settings=settings)
    assert tree_files(ours) == expected
    report = modelpack.verify_dir(ref, ours, settings=settings)
    assert report.ok and not report.extra, report
    assert tree_files(modelpack.pull(ref, settings=settings)) == expected
    some = modelpack.pull(ref, tmp_path / "some", include=[include], settings=settings)
    wanted = {path: data for path, data in expected.items() if fnmatch.fnmatch(path, include)}
    assert wanted and tree_files(some) == wanted
    inspection = modelpack.inspect(ref, remote=True, settings=settings)
    named = {layer.get("path") for layer in inspection.to_dict()["layers"]}
    assert named - {None} <= set(expected)
    served = dmr_gateway.hf([["snapshot", "peer/minilm-docker", tag]], tmp_path / "hf")
    assert "path" in served[0], served
    assert tree_files(Path(served[0]["path"])) == expected


def _one_line(result, code: int, *needles: str) -> None:  # noqa: ANN001
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert all(n in lines[0] for n in needles), lines[0]


def _into(where: str, tmp_path: Path) -> list[str]:
    return ["-o", str(tmp_path / "out" / "model")] if where == "-o" else []


def _nothing_written(where: str, tmp_path: Path, home: Path) -> None:
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "evil.json").exists()
    if where == "node cache":
        assert not (home / "models").exists() or not any((home / "models").rglob("*.json"))


@pytest.mark.parametrize("where", ["-o", "node cache"])
@pytest.mark.parametrize(
    ("path", "needles"),
    [("../../evil.json", ("escapes the target directory",)),
     ("ABSOLUTE", ("absolute path",)),
     ("config.json", ("config.json is written twice",)),
     ("1_Pooling/../../evil.json", ("escapes the target directory",))],
    ids=["dotdot", "absolute", "two-layers-one-path", "inner-dotdot"],
)  # fmt: skip
def test_a_hostile_file_path_in_model_runners_format_is_one_clear_refusal(
    docker_format, registry, home, tmp_path, path, needles, where
):
    """Model Runner itself strips leading `..` and goes on (internal/bundle/unpack.go,
    sanitizeRelativePath); a pull refuses the artifact before its first byte: exit 5."""
    path = str(tmp_path / "evil.json") if path == "ABSOLUTE" else path

    def edit(manifest: dict) -> None:
        _layer(manifest, "README.md")["annotations"]["org.cncf.model.filepath"] = path

    tag = "hostile-" + hashlib.sha256(f"{path} {where}".encode()).hexdigest()[:12]
    ref = _variant(registry, docker_format, tag, edit)
    _one_line(run_cli("pull", "--plain-http", ref, *_into(where, tmp_path)), 5, *needles)
    _nothing_written(where, tmp_path, home)


@pytest.mark.parametrize("where", ["-o", "node cache"])
@pytest.mark.parametrize(
    ("config", "needles"),
    [(b'{"config":{"format":"' + b"x" * MAX_MANIFEST_BYTES + b'"}}', ("configs are capped at",)),
     (b'{"config": {"format": "gguf"', ("not valid JSON",)),
     (b"[]", ("not a JSON object",)),
     (b'{"config":{"context_size":"512"}}', ("'context_size' has the wrong type",)),
     (b'{"config":{"context_size":4294967296}}', ("'context_size' 4294967296 is out of range",)),
     (b'{"config":{"gguf":{"general.name":1}}}', ("'gguf' must map names to strings",)),
     (b'{"config":{},"rootfs":{"diff_ids":"sha256:x"}}', ("'diff_ids' has the wrong type",))],
    ids=["oversized", "truncated", "array", "context-size-text", "context-size-int64",
         "gguf-number", "diff-ids-text"],
)  # fmt: skip
def test_an_oversized_or_malformed_model_runner_config_is_refused(
    docker_format, registry, home, tmp_path, config, needles, where
):
    def edit(manifest: dict) -> None:
        manifest["config"].update(_put_blob(registry, "dmr/peer/minilm-docker", config))

    ref = _variant(
        registry, docker_format, f"config-{hashlib.sha256(config).hexdigest()[:12]}", edit
    )
    _one_line(run_cli("pull", "--plain-http", ref, *_into(where, tmp_path)), 5, *needles)
    _nothing_written(where, tmp_path, home)
    _one_line(run_cli("inspect", "--remote", "--plain-http", ref), 5, *needles)
