"""Bearer token auth as Harbor does it: a token server issuing scoped JWTs."""

import json
import time

import pytest
from support.helpers import run_cli, tree_files
from support.token_server import TokenServer

import modelpack
from modelpack.testing import RegistryServer

USERS = {"alice": "alice-pass", "reader": "reader-pass"}
POLICY = {
    "alice": {"team/*": ["pull", "push"], "prod/*": ["pull", "push"]},
    "reader": {"*": ["pull"]},
    "": {"public/*": ["pull"]},  # anonymous
}


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("token-registry")
    tokens = TokenServer(workdir / "tokens", users=dict(USERS), policy=POLICY).start()
    server = RegistryServer(
        workdir=workdir / "server", extra_config=tokens.registry_auth_yaml()
    ).start()
    yield server, tokens
    server.cleanup()
    tokens.stop()


def _as(user, monkeypatch):
    monkeypatch.setenv("MODELPACK_USERNAME", user)
    monkeypatch.setenv("MODELPACK_PASSWORD", USERS[user])


def test_push_then_mount_into_a_second_repository(
    tiny_model, token_registry, settings, monkeypatch, tmp_path
):
    server, tokens = token_registry
    _as("alice", monkeypatch)
    first = f"{server.host}/team/bert:v1"
    built = modelpack.build(tiny_model, first, settings=settings)
    pushed = modelpack.push(first, settings=settings)
    assert pushed.stats.transferred == len(built.layers) + 1

    second = f"{server.host}/prod/bert:v1"
    modelpack.tag(first, second, settings=settings)
    tokens.requests.clear()
    again = modelpack.push(second, settings=settings)
    assert again.stats.mounted == len(built.layers) + 1
    assert again.stats.bytes_transferred == 0
    # The mount asked for pull on the source repository in the same token.
    mount_scopes = [
        r["scopes"] for r in tokens.requests if "repository:team/bert:pull" in r["scopes"]
    ]
    assert any("repository:prod/bert:pull,push" in scopes for scopes in mount_scopes)

    out = modelpack.pull(second, tmp_path / "out", settings=settings)
    assert tree_files(out) == tree_files(tiny_model)


def test_token_without_push_scope_exits_4(tiny_model, token_registry):
    server, _ = token_registry
    ref = f"{server.host}/team/readonly:v1"
    assert run_cli("build", str(tiny_model), "-t", ref, "-q").returncode == 0
    result = run_cli(
        "push",
        ref,
        "--plain-http",
        env={"MODELPACK_USERNAME": "reader", "MODELPACK_PASSWORD": "reader-pass"},
    )
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "denied" in lines[0]


def test_wrong_password_exits_4(token_registry):
    server, _ = token_registry
    result = run_cli("login", server.host, "-u", "alice", "-p", "not-it", "--plain-http")
    assert result.returncode == 4
    assert server.host in result.stderr and "not-it" not in result.stderr


def test_anonymous_pull_of_a_public_repository(
    tiny_model, token_registry, settings, monkeypatch, tmp_path
):
    server, tokens = token_registry
    _as("alice", monkeypatch)
    monkeypatch.setitem(tokens.policy, "alice", {**POLICY["alice"], "public/*": ["pull", "push"]})
    ref = f"{server.host}/public/bert:v1"
    modelpack.build(tiny_model, ref, settings=settings)
    modelpack.push(ref, settings=settings)
    monkeypatch.delenv("MODELPACK_USERNAME")
    monkeypatch.delenv("MODELPACK_PASSWORD")
    out = modelpack.pull(ref, tmp_path / "anon", settings=settings)
    assert tree_files(out) == tree_files(tiny_model)
    with pytest.raises(modelpack.AuthenticationError):
        modelpack.pull(f"{server.host}/team/bert:v1", tmp_path / "denied", settings=settings)


def test_expired_tokens_are_renewed(tiny_model, token_registry, settings, monkeypatch):
    server, tokens = token_registry
    _as("alice", monkeypatch)
    monkeypatch.setattr(tokens, "expires_in", 2)
    ref = f"{server.host}/team/short-lived:v1"
    modelpack.build(tiny_model, ref, settings=settings)
    from modelpack.registry import RegistryRepository, connect

    client = connect(server.host, settings)
    repository = RegistryRepository(client, "team/short-lived")
    tokens.requests.clear()
    with pytest.raises(modelpack.NotFoundError):
        repository.resolve("v1")
    time.sleep(2.5)
    with pytest.raises(modelpack.NotFoundError):
        repository.resolve("v1")
    assert len([r for r in tokens.requests if r["method"] == "GET"]) == 2


def test_login_stores_a_refresh_token_and_uses_the_oauth2_flow(
    tiny_model, token_registry, tmp_path
):
    server, tokens = token_registry
    login = run_cli(
        "login",
        server.host,
        "-u",
        "alice",
        "--password-stdin",
        "--plain-http",
        input="alice-pass\n",
    )
    assert login.returncode == 0, login.stderr
    entry = json.loads((tmp_path / "docker-config" / "config.json").read_text())["auths"][
        server.host
    ]
    assert entry.get("identitytoken")
    assert "alice-pass" not in json.dumps(entry)
    tokens.requests.clear()
    ref = f"{server.host}/team/oauth:v1"
    assert run_cli("build", str(tiny_model), "-t", ref, "-q").returncode == 0
    pushed = run_cli("push", ref, "--plain-http")
    assert pushed.returncode == 0, pushed.stderr
    grants = {r.get("grant_type") for r in tokens.requests if r["method"] == "POST"}
    assert grants == {"refresh_token"}
    assert not [r for r in tokens.requests if r["method"] == "GET" and r["user"]]


def test_no_secret_in_anything_modelpack_prints(tiny_model, token_registry, tmp_path):
    """Password, basic header, access and refresh tokens: never on stdout/stderr, even -v."""
    import base64

    server, tokens = token_registry
    ref = f"{server.host}/team/secrets:v1"
    outputs = [
        run_cli("login", server.host, "-u", "alice", "--password-stdin", "--plain-http", "-v",
                input="alice-pass\n"),
        run_cli("build", str(tiny_model), "-t", ref, "-v"),
        run_cli("push", ref, "--plain-http", "-v"),
        run_cli("pull", ref, "-o", str(tmp_path / "out"), "--plain-http", "-v"),
        run_cli("pull", f"{server.host}/prod/none:v1", "--plain-http", "-v"),  # an error path
        run_cli("login", server.host, "-u", "alice", "-p", "alice-wrong", "--plain-http", "-v"),
    ]  # fmt: skip
    assert [r.returncode for r in outputs] == [0, 0, 0, 0, 3, 4], [r.stderr for r in outputs]
    printed = "".join(r.stdout + r.stderr for r in outputs)
    assert "debug: PUT" in printed and "debug: GET" in printed  # -v did log the requests
    config = json.loads((tmp_path / "docker-config" / "config.json").read_text())
    refresh = config["auths"][server.host]["identitytoken"]
    secrets = [
        "alice-pass",
        base64.b64encode(b"alice:alice-pass").decode(),
        refresh,
        *tokens.issued,
    ]
    assert len(tokens.issued) >= 3
    leaked = [s[:12] for s in secrets if s in printed]
    assert leaked == []
    # The command-line password got the warning docker gives.
    assert "--password-stdin" in outputs[-1].stderr
