"""Other clients of the gateway's download API, each the real client against the real registry.

huggingface_hub's own downloads are test_gateway.py's; here: the ``hf`` CLI, transformers'
``from_pretrained`` loaders, the Rust ``hf-hub`` crate (what TGI and ModelExpress link) and
Dragonfly's ``hf://`` backend (the ``dragonfly-client-backend`` crate dfdaemon links), the
last two built with cargo from crates.io (tests/clients/, scripts/peers/build-rust-peers.sh).
Each gets the bytes of the pushed model, compared file by file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from support.gateway import Gateway, clean_env
from support.helpers import build_and_push, tree_files
from support.rust_clients import build_rust_peers

from modelpack.settings import Settings
from modelpack.testing import RegistryServer, make_tiny_model

NAMESPACE = "hc"
HF = Path(sys.executable).with_name("hf")


@pytest.fixture(scope="module")
def hub(registry, tmp_path_factory):
    """org/tiny:v1 (the tiny BERT) and org/tiny:v2 (other weights, one more file), no main."""
    work = tmp_path_factory.mktemp("hub-clients")
    v1 = make_tiny_model(work / "v1")
    v2 = make_tiny_model(work / "v2", seed=1)
    (v2 / "extra" / "notes.txt").parent.mkdir()
    (v2 / "extra" / "notes.txt").write_text("only in v2\n")
    settings = Settings(home=work / "home", plain_http=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_CONFIG", str(work / "docker"))
        for tag, model in (("v1", v1), ("v2", v2)):
            build_and_push(model, f"{registry.host}/{NAMESPACE}/org/tiny:{tag}", settings)
    gateway = Gateway(f"{registry.host}/{NAMESPACE}", work / "gateway").start()
    yield gateway, {"v1": v1, "v2": v2}
    gateway.stop()


@pytest.fixture(scope="module")
def rust_bin():
    return build_rust_peers()


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result


def _hub_env(gateway: Gateway, home: Path) -> dict[str, str]:
    return clean_env(
        home,
        HF_ENDPOINT=gateway.url,
        HF_HOME=str(home / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )


# -- the hf CLI ---------------------------------------------------------------------


@pytest.mark.interop(
    "hf CLI (huggingface_hub)",
    "downloads through serve",
    "hf download --revision --local-dir: identical bytes, a whole repo and one file",
)
def test_hf_cli_download_gets_identical_bytes(hub, tmp_path):
    gateway, models = hub
    env = _hub_env(gateway, tmp_path)
    out = tmp_path / "out"
    cmd = [str(HF), "download", "org/tiny", "--quiet", "--revision", "v1"]
    result = _run([*cmd, "--local-dir", str(out)], env)
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert tree_files(out) == tree_files(models["v1"])

    one = tmp_path / "one"
    cmd = [str(HF), "download", "org/tiny", "1_Pooling/config.json", "--quiet", "--revision", "v2"]
    result = _run([*cmd, "--local-dir", str(one)], env)
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path == one / "1_Pooling" / "config.json"
    assert path.read_bytes() == (models["v2"] / "1_Pooling" / "config.json").read_bytes()


# -- transformers -------------------------------------------------------------------

# Loads from a hub repo id (through HF_ENDPOINT) and from the folder; prints what each gave.
TRANSFORMERS_CLIENT = """
import hashlib, json, sys
from transformers import AutoConfig, AutoTokenizer
from transformers.utils.hub import cached_file

def load(source, **kwargs):
    config = AutoConfig.from_pretrained(source, **kwargs).to_dict()
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    # The weights file as from_pretrained resolves it for AutoModel (no torch here to build one).
    weights = cached_file(source, "model.safetensors", **kwargs)
    return {
        "config": {k: v for k, v in config.items() if not k.startswith("_")},
        "tokenizer": type(tokenizer).__name__,
        "ids": tokenizer("hello world, a tiny model")["input_ids"],
        "weights": hashlib.sha256(open(weights, "rb").read()).hexdigest(),
        "weights_path": weights,
    }

repo, revision, folder = sys.argv[1:4]
print(json.dumps({"hub": load(repo, revision=revision), "folder": load(folder)}))
"""


@pytest.mark.interop(
    "transformers",
    "downloads through serve",
    "AutoConfig/AutoTokenizer.from_pretrained(repo, revision=) equal to loading the folder; "
    "the weights file from_pretrained resolves has the same bytes (AutoModel not run: no torch)",
)
def test_transformers_from_pretrained_matches_the_folder(hub, tmp_path):
    gateway, models = hub
    env = _hub_env(gateway, tmp_path)
    for revision in ("v1", "v2"):
        command = [sys.executable, "-c", TRANSFORMERS_CLIENT, "org/tiny", revision]
        result = _run([*command, str(models[revision])], env)
        loaded = json.loads(result.stdout.strip().splitlines()[-1])
        hub_side, folder = loaded["hub"], loaded["folder"]
        assert hub_side["config"] == folder["config"]
        assert hub_side["config"]["model_type"] == "bert"
        assert hub_side["tokenizer"] == folder["tokenizer"]
        assert hub_side["ids"] == folder["ids"] and len(hub_side["ids"]) > 2
        assert hub_side["weights"] == folder["weights"]
        assert hub_side["weights_path"].startswith(str(tmp_path / "hf-home" / "hub"))
    # Through the gateway, not a cache: the revision's listing and its weights were asked for.
    log = gateway.wait_for_log(r"GET /org/tiny/resolve/v2/model\.safetensors 200")
    assert "GET /api/models/org/tiny/revision/v2 200" in log


# -- the Rust hf-hub crate ----------------------------------------------------------


def _fields(stdout: str, kind: str) -> list[list[str]]:
    return [line.split("\t")[1:] for line in stdout.splitlines() if line.startswith(kind + "\t")]


@pytest.mark.interop(
    "hf-hub 0.4.3 (Rust, sync ureq)",
    "downloads through serve",
    "info() lists the revision's files, get() of each: identical bytes in its snapshot cache; "
    "a second get() is served from that cache",
)
def test_rust_hf_hub_downloads_identical_bytes(hub, rust_bin, tmp_path):
    gateway, models = hub
    env = _hub_env(gateway, tmp_path)
    commit = requests.get(f"{gateway.url}/api/models/org/tiny/revision/v1", timeout=30).json()[
        "sha"
    ]
    result = _run([str(rust_bin / "hf-hub-fetch"), "org/tiny", "v1"], env)
    assert _fields(result.stdout, "sha") == [[commit]]
    files = {name: Path(path) for name, path in _fields(result.stdout, "file")}
    expected = tree_files(models["v1"])
    assert set(files) == set(expected)
    snapshot = tmp_path / "hf-home" / "hub" / "models--org--tiny" / "snapshots" / commit
    for name, path in files.items():
        assert path == snapshot / name
        assert path.read_bytes() == expected[name], name

    resolves = _settled_count(gateway, "/org/tiny/resolve/v1/")
    again = _run([str(rust_bin / "hf-hub-fetch"), "org/tiny", "v1", "config.json"], env)
    assert _fields(again.stdout, "file") == [["config.json", str(snapshot / "config.json")]]
    assert _settled_count(gateway, "/org/tiny/resolve/v1/") == resolves  # no request: its cache


def _settled_count(gateway: Gateway, text: str) -> int:
    """How often ``text`` is in the gateway's access log once the log stops growing: a line
    is written after its response is sent, so the client may be done before it is."""
    count = gateway.log().count(text)
    for _ in range(20):
        time.sleep(0.3)
        now = gateway.log().count(text)
        if now == count:
            return count
        count = now
    return count


# -- Dragonfly's hf:// backend --------------------------------------------------------


def _dragonfly(
    rust_bin: Path, gateway: Gateway, revision: str, out: Path, repo: str = "org/tiny", *token: str
) -> subprocess.CompletedProcess:
    command = [str(rust_bin / "dragonfly-hf-fetch"), gateway.url, repo, revision, str(out)]
    return subprocess.run(
        [*command, "32768", *token],
        env=clean_env(out.parent),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.interop(
    "Dragonfly hf:// backend (dragonfly-client-backend 1.5.10)",
    "downloads through serve",
    "stat of hf://org/tiny at a revision (?revision=), then stat, 32 KiB ranged gets and "
    "exists of each file: identical bytes; a missing repo is a 404",
)
def test_dragonfly_hf_backend_downloads_each_revision(hub, rust_bin, tmp_path):
    gateway, models = hub
    for revision in ("v1", "v2"):
        out = tmp_path / revision
        result = _dragonfly(rust_bin, gateway, revision, out)
        assert result.returncode == 0, result.stderr[-3000:]
        expected = tree_files(models[revision])
        assert tree_files(out) == expected
        files = {name: (int(size), int(n), found) for name, size, n, found in _fields(
            result.stdout, "file")}  # fmt: skip
        assert {name: size for name, (size, _, _) in files.items()} == {
            name: len(data) for name, data in expected.items()
        }
        assert {found for _, _, found in files.values()} == {"true"}
        size, pieces, _ = files["model.safetensors"]
        assert pieces == -(-size // 32768) > 1
    assert "extra/notes.txt" in tree_files(tmp_path / "v2")

    log = gateway.log()
    for line in (
        "GET /api/models/org/tiny 200",  # stat(hf://org/tiny): ?revision=v2 (query not logged)
        "HEAD /org/tiny/resolve/v2/extra/notes.txt 200",  # stat of a file: its size
        "GET /org/tiny/resolve/v2/model.safetensors 206",  # a ranged piece
    ):
        assert line in log, line

    api = f"{gateway.url}/api/models/org/tiny"
    by_query = requests.get(api, params={"revision": "v2"}, timeout=30).json()
    assert by_query["sha"] == requests.get(f"{api}/revision/v2", timeout=30).json()["sha"]
    hostile = requests.get(api, params={"revision": "../../v1"}, timeout=30)
    assert hostile.status_code == 404 and hostile.headers["X-Error-Code"] == "RevisionNotFound"
    assert gateway.registry.split("/")[0] not in hostile.text

    missing = _dragonfly(rust_bin, gateway, "v1", tmp_path / "missing", "org/absent")
    assert missing.returncode == 1
    assert "stat hf://org/absent" in missing.stderr and "404" in missing.stderr


# -- both Rust clients with a private model ---------------------------------------------

USER, PASSWORD = "alice", "clients-Pa55"


@pytest.mark.interop(
    "hf-hub 0.4.3 / Dragonfly hf:// backend 1.5.10",
    "download a private model through serve",
    "the client's token (hf-hub: $HF_HOME/token, Dragonfly: --hf-token) is the registry "
    "credential: identical bytes with it, 401 without it",
)
def test_rust_clients_pass_their_token_through(rust_bin, tmp_path):
    model = make_tiny_model(tmp_path / "model")
    expected = tree_files(model)
    with RegistryServer(users={USER: PASSWORD}, workdir=tmp_path / "registry") as server:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
            mp.setenv("MODELPACK_USERNAME", USER)
            mp.setenv("MODELPACK_PASSWORD", PASSWORD)
            settings = Settings(home=tmp_path / "home", plain_http=True)
            build_and_push(model, f"{server.host}/{NAMESPACE}/team/private:v1", settings)
        gateway = Gateway(
            f"{server.host}/{NAMESPACE}", tmp_path / "gateway", ("--token-user", USER)
        ).start()
        try:
            env = _hub_env(gateway, tmp_path / "hf-hub")
            (tmp_path / "hf-hub" / "hf-home").mkdir(parents=True)
            (tmp_path / "hf-hub" / "hf-home" / "token").write_text(PASSWORD)
            result = _run([str(rust_bin / "hf-hub-fetch"), "team/private", "v1"], env)
            files = {name: Path(path) for name, path in _fields(result.stdout, "file")}
            assert {name: path.read_bytes() for name, path in files.items()} == expected
            anonymous = subprocess.run(
                [str(rust_bin / "hf-hub-fetch"), "team/private", "v1"],
                env=_hub_env(gateway, tmp_path / "anonymous"),
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert anonymous.returncode == 1 and "401" in anonymous.stderr, anonymous.stderr

            out = tmp_path / "dragonfly" / "out"
            ok = _dragonfly(rust_bin, gateway, "v1", out, "team/private", PASSWORD)
            assert ok.returncode == 0, ok.stderr[-3000:]
            assert tree_files(out) == expected
            refused = _dragonfly(
                rust_bin, gateway, "v1", tmp_path / "df-anon" / "out", "team/private"
            )
            assert refused.returncode == 1 and "401" in refused.stderr, refused.stderr
        finally:
            gateway.stop()
    assert PASSWORD not in gateway.log()
