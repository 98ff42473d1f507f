"""HTTP basic auth (htpasswd) against a real registry: login, push, pull, refusals, secrets."""

import base64
import json
import os
import stat
import sys

import pytest
from support.helpers import make_artifact, run_cli, tree_files
from support.hostile_registry import HostileRegistry

import modelpack
from modelpack.testing import RegistryServer

USER, PASSWORD = "alice", "s3cret-Pa55word"


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("basic-registry") / "server"
    with RegistryServer(users={USER: PASSWORD}, workdir=workdir) as server:
        yield server


def test_login_push_pull_logout(tiny_model, basic_registry, tmp_path):
    host = basic_registry.host
    login = run_cli(
        "login", host, "-u", USER, "--password-stdin", "--plain-http", input=PASSWORD + "\n"
    )
    assert login.returncode == 0, login.stderr
    config = tmp_path / "docker-config" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert host in json.loads(config.read_text())["auths"]
    assert PASSWORD not in login.stdout + login.stderr

    ref = f"{host}/private/tiny:v1"
    built = run_cli("build", str(tiny_model), "-t", ref, "-q")
    assert built.returncode == 0, built.stderr
    pushed = run_cli("push", ref, "--plain-http", "-v")
    assert pushed.returncode == 0, pushed.stderr
    out = tmp_path / "out"
    pulled = run_cli("pull", ref, "-o", str(out), "--plain-http", "-v")
    assert pulled.returncode == 0, pulled.stderr
    assert tree_files(out) == tree_files(tiny_model)
    for result in (pushed, pulled):
        assert PASSWORD not in result.stdout + result.stderr

    assert run_cli("logout", host).returncode == 0
    assert host not in json.loads(config.read_text())["auths"]
    denied = run_cli("pull", ref, "-o", str(tmp_path / "again"), "--plain-http")
    assert denied.returncode == 4, denied.stderr


def test_wrong_password_exits_4_with_one_line_naming_the_host(basic_registry):
    result = run_cli(
        "login", basic_registry.host, "-u", USER, "--password-stdin", "--plain-http",
        input="wrong-password\n",
    )  # fmt: skip
    assert result.returncode == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and basic_registry.host in lines[0]
    assert "wrong-password" not in result.stderr


def test_wrong_password_on_pull_exits_4(basic_registry, tmp_path):
    result = run_cli(
        "pull", f"{basic_registry.host}/private/tiny:v1", "-o", str(tmp_path / "x"), "--plain-http",
        env={"MODELPACK_USERNAME": USER, "MODELPACK_PASSWORD": "nope-nope"},
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "nope-nope" not in result.stderr
    assert not (tmp_path / "x").exists()


def test_ci_credentials_from_the_environment(tiny_model, basic_registry, settings, monkeypatch):
    monkeypatch.setenv("MODELPACK_USERNAME", USER)
    monkeypatch.setenv("MODELPACK_PASSWORD", PASSWORD)
    ref = f"{basic_registry.host}/ci/tiny:v1"
    modelpack.build(tiny_model, ref, settings=settings)
    assert modelpack.push(ref, settings=settings).stats.transferred > 0


CI_ENV = {"MODELPACK_USERNAME": USER, "MODELPACK_PASSWORD": PASSWORD}


@pytest.fixture
def recorder():
    """Another registry, on another port, that demands credentials and records what it gets."""
    server = HostileRegistry(basic_auth=True).start()
    yield server
    server.stop()


def test_ci_credentials_never_reach_a_mirror(tiny_model, basic_registry, recorder, tmp_path):
    ref = f"{basic_registry.host}/ci/mirrored:v1"
    assert run_cli("build", str(tiny_model), "-t", ref, "-q").returncode == 0
    assert run_cli("push", ref, "--plain-http", env=CI_ENV).returncode == 0
    mirrors = {"MODELPACK_MIRRORS": f"{basic_registry.host}=http://{recorder.host}"}
    for named in ({}, {"MODELPACK_REGISTRY": basic_registry.host}):
        out = tmp_path / f"out-{len(named)}"
        pulled = run_cli(
            "pull", ref, "-o", str(out), "--plain-http", env={**CI_ENV, **mirrors, **named}
        )
        assert pulled.returncode == 0, pulled.stderr  # from the registry, with the credentials
        assert tree_files(out) == tree_files(tiny_model)
    assert recorder.requests  # the mirror was asked first
    assert recorder.authorizations == []  # and never got them


def test_ci_credentials_go_to_the_registry_named_and_no_other(basic_registry, recorder, tmp_path):
    make_artifact(recorder, "v1", [("application/vnd.cncf.model.weight.v1.raw", b"w", {})])
    source, destination = f"{recorder.host}/evil/model:v1", f"{basic_registry.host}/ci/copied:v1"
    # A copy between two registries: the credentials are for the one written to, not the source.
    copied = run_cli("copy", source, destination, "--plain-http", env=CI_ENV)
    assert copied.returncode == 4, copied.stderr
    assert recorder.host in copied.stderr and "MODELPACK_REGISTRY" in copied.stderr
    assert recorder.authorizations == []
    # MODELPACK_REGISTRY names the source: it gets them, and the destination does not.
    named = {**CI_ENV, "MODELPACK_REGISTRY": recorder.host}
    copied = run_cli("copy", source, destination, "--plain-http", env=named)
    assert copied.returncode == 4 and basic_registry.host in copied.stderr, copied.stderr
    assert recorder.authorizations and set(recorder.authorizations) == {
        "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    }


HELPER = """#!{python}
import json, sys, pathlib
store = pathlib.Path({store!r})
pathlib.Path({argv_log!r}).open("a").write(json.dumps(sys.argv) + "\\n")
action = sys.argv[1]
data = sys.stdin.read()
if action == "store":
    store.write_text(data)
elif action == "get":
    saved = json.loads(store.read_text()) if store.exists() else None
    if not saved or saved["ServerURL"] != data.strip():
        print("credentials not found"); sys.exit(1)
    print(json.dumps({{"Username": saved["Username"], "Secret": saved["Secret"]}}))
elif action == "erase":
    store.unlink(missing_ok=True)
"""


def test_credential_helper_gets_secrets_on_stdin_never_argv(
    tiny_model, basic_registry, tmp_path, monkeypatch
):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-modelpacktest"
    argv_log = tmp_path / "helper-argv.log"
    helper.write_text(
        HELPER.format(
            python=sys.executable, store=str(tmp_path / "helper-store.json"), argv_log=str(argv_log)
        )
    )
    helper.chmod(0o755)
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir(exist_ok=True)
    (config_dir / "config.json").write_text(json.dumps({"credsStore": "modelpacktest"}))
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    host = basic_registry.host
    login = run_cli(
        "login", host, "-u", USER, "--password-stdin", "--plain-http", input=PASSWORD, env=env
    )
    assert login.returncode == 0, login.stderr
    assert PASSWORD not in (config_dir / "config.json").read_text()
    ref = f"{host}/helper/tiny:v1"
    assert run_cli("build", str(tiny_model), "-t", ref, "-q", env=env).returncode == 0
    pushed = run_cli("push", ref, "--plain-http", env=env)
    assert pushed.returncode == 0, pushed.stderr
    calls = [json.loads(line) for line in argv_log.read_text().splitlines()]
    assert {c[1] for c in calls} >= {"store", "get"}
    assert all(PASSWORD not in arg for call in calls for arg in call)


@pytest.mark.parametrize("field", ["credsStore", "credHelpers"])
def test_a_credential_helper_name_that_is_a_path_is_never_run(tmp_path, basic_registry, field):
    """Issue 28, defect 2: a config.json naming ``x/../../<dir>/prog`` made us run ``prog``
    (docker-credential-x/../../... resolves through the working directory)."""
    planted = tmp_path / "work" / "prog"
    planted.parent.mkdir()
    canary = tmp_path / "ran"
    planted.write_text(f"#!/bin/sh\ntouch {canary}\n")
    planted.chmod(0o755)
    (tmp_path / "work" / "docker-credential-x").mkdir()
    name = "x/../prog"
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir(exist_ok=True)
    host = basic_registry.host
    config = {"credsStore": name} if field == "credsStore" else {"credHelpers": {host: name}}
    (config_dir / "config.json").write_text(json.dumps(config))
    env = {"PATH": f"{tmp_path / 'work'}{os.pathsep}{os.environ['PATH']}"}
    result = run_cli("tags", f"{host}/helper/tiny", "--plain-http", env=env, cwd=tmp_path / "work")
    assert not canary.exists(), "the planted program ran"
    assert result.returncode == 2, result.stderr
    assert "not a plain word" in result.stderr and "Traceback" not in result.stderr
