"""hf:// (through the real huggingface_hub code path) and modelscope:// sources."""

import json
import shutil

import jsonschema
import pytest
from support.helpers import run_cli, tree_files
from support.model_hubs import FakeHub, HubRepo

from modelpack.testing import make_tiny_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"
UPSTREAM_SCHEMA = json.loads(
    (
        __import__("pathlib").Path(__file__).resolve().parents[1]
        / "data"
        / "modelpack-spec"
        / "config-schema.json"
    ).read_text()
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    server = FakeHub().start()
    server.add(HubRepo("org/tiny", make_tiny_model(root / "tiny"), COMMIT))
    server.add(
        HubRepo(
            "org/private",
            make_tiny_model(root / "private", seed=1),
            "f" * 40,
            private_token="hf_secret",
        )
    )
    yield server
    server.stop()


@pytest.fixture
def hf_env(hub, tmp_path):
    return {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "hf-cache"), "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "SOURCE_DATE_EPOCH": "1700000000"}  # fmt: skip


def _build(src, ref, env, *extra):
    result = run_cli("build", src, "-t", ref, "--json", *extra, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_hf_build_end_to_end(hub, hf_env, registry, tmp_path):
    ref = f"{registry.host}/hf/tiny:v1"
    built = _build(f"hf://org/tiny@{COMMIT}", ref, hf_env)
    config = built["config"]
    jsonschema.Draft202012Validator(UPSTREAM_SCHEMA).validate(config)
    assert config["descriptor"]["revision"] == COMMIT
    assert config["descriptor"]["sourceURL"] == f"{hub.url}/org/tiny"
    assert config["descriptor"]["name"] == "tiny"
    assert any(r.startswith("GET /org/tiny/resolve/") for r in hub.requests)
    assert run_cli("push", ref, "--plain-http", env=hf_env).returncode == 0
    out = tmp_path / "out"
    assert run_cli("pull", ref, "-o", str(out), "--plain-http", env=hf_env).returncode == 0
    assert tree_files(out) == tree_files(hub.repos["org/tiny"].root)
    # The hub repo id and commit travel with the artifact: --hf-cache rebuilds the same layout
    # when the puller trusts what the artifact recorded.
    hf_home = tmp_path / "other-hf"
    pulled = run_cli(
        "pull", ref, "--hf-cache", str(hf_home), "--hf-trust-annotations", "--plain-http",
        env=hf_env,
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip().endswith(f"models--org--tiny/snapshots/{COMMIT}")


def test_from_hf_with_a_branch_resolves_the_commit(hub, hf_env):
    result = run_cli(
        "build",
        "--from-hf",
        "org/tiny",
        "--revision",
        "main",
        "-t",
        "reg.io/hf/tiny:main",
        "--json",
        env=hf_env,
    )
    assert result.returncode == 0, result.stderr
    built = json.loads(result.stdout)
    assert built["config"]["descriptor"]["revision"] == COMMIT


def test_include_narrows_the_download(hub, hf_env):
    hub.requests.clear()
    built = _build("hf://org/tiny", "reg.io/hf/tiny:json", hf_env, "--include", "*.json")
    assert {layer["path"] for layer in built["layers"]} == {
        p for p in tree_files(hub.repos["org/tiny"].root) if p.endswith(".json")
    }
    assert not [r for r in hub.requests if "model.safetensors" in r]


def test_private_repo_needs_a_token(hub, hf_env):
    denied = run_cli("build", "hf://org/private", "-t", "reg.io/hf/private:v1", env=hf_env)
    assert denied.returncode in (3, 4), denied.stderr
    assert "HF_TOKEN" in denied.stderr and len(denied.stderr.strip().splitlines()) == 1
    allowed = run_cli(
        "build",
        "hf://org/private",
        "-t",
        "reg.io/hf/private:v1",
        env={**hf_env, "HF_TOKEN": "hf_secret"},
    )
    assert allowed.returncode == 0, allowed.stderr


def test_unknown_repo_and_revision_exit_3(hf_env):
    assert run_cli("build", "hf://org/nope", "-t", "reg.io/x:v1", env=hf_env).returncode == 3
    assert run_cli("build", "hf://org/tiny@v9", "-t", "reg.io/x:v1", env=hf_env).returncode == 3
    assert run_cli("build", "hf://not-a-repo", "-t", "reg.io/x:v1", env=hf_env).returncode == 2


def test_offline_and_unreachable_hub_builds_from_the_hf_cache(hub, hf_env, tmp_path):
    online = _build("hf://org/tiny", "reg.io/hf/tiny:v1", hf_env)  # also records refs/main
    offline = _build(
        f"hf://org/tiny@{COMMIT}", "reg.io/hf/tiny:v1", {**hf_env, "HF_HUB_OFFLINE": "1"}
    )
    assert offline["digest"] == online["digest"]
    # The hub goes away altogether (nothing listens there any more): the cache still serves.
    gone = {**hf_env, "HF_ENDPOINT": "http://127.0.0.1:9"}
    unreachable = _build("hf://org/tiny", "reg.io/hf/tiny:v1", {**gone, "HF_HUB_OFFLINE": "1"})
    assert [x["digest"] for x in unreachable["layers"]] == [x["digest"] for x in online["layers"]]
    assert unreachable["config"]["descriptor"]["revision"] == COMMIT
    without_flag = _build(
        "hf://org/tiny", "reg.io/hf/tiny:v1", gone
    )  # not told: finds out, uses the cache
    assert [x["digest"] for x in without_flag["layers"]] == [x["digest"] for x in online["layers"]]
    missing = run_cli(
        "build", "hf://org/other", "-t", "reg.io/x:v1", env={**gone, "HF_HUB_OFFLINE": "1"}
    )
    assert missing.returncode == 3 and "HF_HUB_OFFLINE" in missing.stderr


def test_a_path_into_the_hf_cache_records_repo_and_commit(hub, hf_env, tmp_path, settings):
    _build(f"hf://org/tiny@{COMMIT}", "reg.io/hf/tiny:v1", hf_env)
    snapshot = tmp_path / "hf-cache" / "models--org--tiny" / "snapshots" / COMMIT
    assert (snapshot / "model.safetensors").is_symlink()
    built = _build(str(snapshot), "reg.io/hf/from-path:v1", hf_env)
    assert built["config"]["descriptor"]["revision"] == COMMIT
    assert built["config"]["descriptor"]["name"] == "tiny"


def test_modelscope_source(hub, tmp_path, registry, settings):
    env = {"MODELSCOPE_ENDPOINT": hub.url, "SOURCE_DATE_EPOCH": "1700000000"}
    ref = f"{registry.host}/ms/tiny:v1"
    built = _build("modelscope://org/tiny", ref, env)
    assert built["config"]["descriptor"]["sourceURL"] == f"{hub.url}/models/org/tiny"
    assert built["config"]["descriptor"]["revision"] == COMMIT
    assert {layer["path"] for layer in built["layers"]} == set(
        tree_files(hub.repos["org/tiny"].root)
    )
    # The downloaded files are kept: a second build fetches nothing.
    hub.requests.clear()
    again = _build("modelscope://org/tiny", ref, env)
    assert again["digest"] == built["digest"]
    assert not [r for r in hub.requests if "FilePath" in r or "/repo?" in r]


def test_modelscope_file_that_does_not_match_its_sha256_is_refused(hub, tmp_path):
    repo = hub.add(HubRepo("org/tampered", make_tiny_model(tmp_path / "bad"), COMMIT))
    repo.tampered["config.json"] = b'{"model_type": "evil"}'  # served, but not what is listed
    result = run_cli(
        "build",
        "modelscope://org/tampered",
        "-t",
        "reg.io/ms/bad:v1",
        env={"MODELSCOPE_ENDPOINT": hub.url},
    )
    assert result.returncode == 5, result.stderr
    assert "config.json" in result.stderr


def test_modelscope_unknown_model_exits_3(hub):
    result = run_cli(
        "build",
        "modelscope://org/none",
        "-t",
        "reg.io/ms/none:v1",
        env={"MODELSCOPE_ENDPOINT": hub.url},
    )
    assert result.returncode == 3


@pytest.fixture(autouse=True)
def _no_leftover_hf_cache(tmp_path):
    yield
    shutil.rmtree(tmp_path / "hf-cache", ignore_errors=True)
