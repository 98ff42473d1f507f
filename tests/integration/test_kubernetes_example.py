"""examples/kubernetes: the manifests are valid, the entrypoint does what a pod asks of it."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from support.helpers import build_and_push, tree_files

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kubernetes"
ENTRYPOINT = EXAMPLES / "entrypoint.py"
K8S_VERSION = "1.31.0"
# Image volumes are GA in 1.36: that example is checked against that version's API.
K8S_VERSIONS = {"pod-image-volume.yaml": "1.36.0"}
KSERVE_SCHEMA = Path(__file__).resolve().parents[1] / "data" / "kserve"
KSERVE_API = "serving.kserve.io/v1beta1"


def unknown_fields(document, schema, path="") -> list[str]:  # noqa: ANN001
    """Fields the CRD's structural schema does not declare (the API server would prune them):
    the `strict` half that plain JSON Schema validation of a CRD schema lacks."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(document, dict):
        known = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        found = []
        for key, value in document.items():
            if not path and key == "metadata":
                continue  # ObjectMeta: checked by the API server, not in the CRD's schema
            if key in known:
                found += unknown_fields(value, known[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(value, extra, f"{path}.{key}")
            else:
                found.append(f"{path}.{key}")
        return found
    if isinstance(document, list) and "items" in schema:
        return [f for i, item in enumerate(document)
                for f in unknown_fields(item, schema["items"], f"{path}[{i}]")]  # fmt: skip
    return []


def validate_kserve(document) -> None:  # noqa: ANN001
    import jsonschema

    schema = json.loads(gzip.decompress(
        (KSERVE_SCHEMA / "inferenceservice-v1beta1.schema.json.gz").read_bytes()))  # fmt: skip
    assert document["kind"] == "InferenceService"
    jsonschema.validate(document, schema)
    assert not unknown_fields(document, schema)


@pytest.mark.parametrize("manifest", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_manifests_validate_offline(manifest):
    documents = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    assert documents
    for document in documents:
        if document["apiVersion"] == KSERVE_API:
            validate_kserve(document)
        else:
            version = K8S_VERSIONS.get(manifest.name, K8S_VERSION)
            kubernetes_validate.validate(document, version, strict=True)


def test_kserve_validation_catches_a_misspelt_field():
    document = yaml.safe_load((EXAMPLES / "kserve-modelcar.yaml").read_text())
    document["spec"]["predictor"]["model"]["storageURI"] = "oci://x/y:z"
    with pytest.raises(AssertionError):
        validate_kserve(document)
    document = yaml.safe_load((EXAMPLES / "kserve-modelcar.yaml").read_text())
    document["spec"]["predictor"]["model"]["storageUri"] = 7
    with pytest.raises(Exception, match="is not of type"):
        validate_kserve(document)


def test_the_image_volume_is_checked_against_an_api_that_has_it():
    document = yaml.safe_load((EXAMPLES / "pod-image-volume.yaml").read_text())
    assert document["spec"]["volumes"][0]["image"]["reference"].endswith(":v1-image")
    document["spec"]["volumes"][0]["image"]["pullPolcy"] = "Always"
    with pytest.raises(Exception, match="pullPolcy"):
        kubernetes_validate.validate(document, K8S_VERSIONS["pod-image-volume.yaml"], strict=True)


def test_manifests_use_the_entrypoints_variables():
    documented = set(__import__("re").findall(r"\b(MODELPACK_[A-Z_]+)\b", ENTRYPOINT.read_text()))
    for manifest in EXAMPLES.glob("*.yaml"):
        used = set(__import__("re").findall(r"name: (MODELPACK_[A-Z_]+)", manifest.read_text()))
        assert used <= documented, (manifest.name, used - documented)


def _run(env, *args):
    return subprocess.run(
        [sys.executable, str(ENTRYPOINT), *args],
        env={k: v for k, v in {**os.environ, **env}.items() if v is not None},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture
def pushed(tiny_model, registry, settings):
    ref = f"{registry.host}/k8s/bert:v1"
    build_and_push(tiny_model, ref, settings)
    return ref


def test_entrypoint_fills_an_emptydir(pushed, tiny_model, tmp_path):
    target = tmp_path / "models" / "bert"
    path_file = tmp_path / "model-path"
    result = _run({"MODELPACK_REF": pushed, "MODELPACK_TARGET": str(target),
                   "MODELPACK_PATH_FILE": str(path_file), "MODELPACK_HOME": None})  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["reference"] == pushed and summary["path"] == str(target)
    assert tree_files(target) == tree_files(tiny_model)
    assert path_file.read_text() == str(target)


def test_entrypoint_fills_a_node_cache_with_an_hf_layout(pushed, tiny_model, tmp_path):
    env = {"MODELPACK_REF": pushed, "MODELPACK_HOME": str(tmp_path / "node" / "modelpack"),
           "MODELPACK_HF_CACHE": str(tmp_path / "node" / "hf"), "MODELPACK_TARGET": None}  # fmt: skip
    first = _run(env)
    assert first.returncode == 0, first.stderr
    snapshot = Path(json.loads(first.stdout.strip().splitlines()[-1])["path"])
    assert snapshot.is_relative_to(tmp_path / "node" / "hf" / "models--k8s--bert")
    assert tree_files(snapshot) == tree_files(tiny_model)
    second = _run(env)  # the next pod on the node
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1])["bytesTransferred"] == 0


def test_entrypoint_uses_a_mounted_docker_config(pushed, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "config.json").write_text(json.dumps({"auths": {}}))
    result = _run(
        {
            "MODELPACK_REF": pushed,
            "MODELPACK_TARGET": str(tmp_path / "t"),
            "DOCKER_CONFIG": str(secret),
        }
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("env", "code"),
    [
        ({"MODELPACK_REF": None}, 2),
        ({"MODELPACK_REF": "Not A Ref"}, 2),
        ({"MODELPACK_REF": "127.0.0.1:1/k8s/none:v1"}, 6),
    ],
)
def test_entrypoint_errors_are_one_line_and_exit_codes(env, code, tmp_path):
    result = _run({**env, "MODELPACK_TARGET": str(tmp_path / "t"), "MODELPACK_RETRIES": "1"})
    assert result.returncode == code
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("Error: ")
    assert not (tmp_path / "t").exists()


def test_entrypoint_as_a_kserve_storage_initializer(pushed, tiny_model, tmp_path):
    result = _run(
        {"MODELPACK_REF": None}, f"modelpack://{pushed}", str(tmp_path / "mnt" / "models")
    )
    assert result.returncode == 0, result.stderr
    assert tree_files(tmp_path / "mnt" / "models") == tree_files(tiny_model)
