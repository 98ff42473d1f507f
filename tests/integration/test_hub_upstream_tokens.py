"""`modelpack serve --upstream`: a token per repo pattern, for gated repos of two orgs.

Two upstreams, each asserting on what it received:

* a second `modelpack serve` in front of a registry with token auth (tests/support/
  token_server.py) where `acme-bot` may read only `up/acme/*` and `beta-bot` only
  `up/beta/*`: the registry decides, and the token server records which account asked for
  which repository;
* the hub double (tests/support/model_hubs.py) with gated repos, which records every
  request's Authorization and Cookie: overlapping patterns, the most specific one wins.
"""

import hashlib
from pathlib import Path

import pytest
import requests
from support.gateway import Gateway
from support.helpers import build_and_push, tree_files
from support.model_hubs import FakeHub, HubRepo
from support.token_server import TokenServer

from modelpack.settings import Settings
from modelpack.testing import RegistryServer, make_tiny_model

NS = "tokens"
ACME = "acme-bot:acme-pass-7f3a"  # `Bearer USER:PASSWORD`: a registry account to the upstream
BETA = "beta-bot:beta-pass-91c2"
USERS = {"pusher": "push-pass", "acme-bot": "acme-pass-7f3a", "beta-bot": "beta-pass-91c2"}
POLICY = {
    "pusher": {"up/*": ["pull", "push"]},
    "acme-bot": {"up/acme/*": ["pull"]},
    "beta-bot": {"up/beta/*": ["pull"]},
}


def _info(gateway: Gateway, repo: str, revision: str = "main") -> requests.Response:
    return requests.get(f"{gateway.url}/api/models/{repo}/revision/{revision}", timeout=300)


@pytest.fixture(scope="module")
def gated(registry, tmp_path_factory):
    """(model, token server, upstream gateway, gateway under test): the token for acme/*
    is an option, beta/*'s is a file, gamma/* has none."""
    work = tmp_path_factory.mktemp("upstream-tokens")
    model = make_tiny_model(work / "tiny")
    tokens = TokenServer(work / "tokens", users=dict(USERS), policy=POLICY).start()
    up_registry = RegistryServer(
        workdir=work / "upstream-registry", extra_config=tokens.registry_auth_yaml()
    ).start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_CONFIG", str(work / "docker"))
        mp.setenv("MODELPACK_USERNAME", "pusher")
        mp.setenv("MODELPACK_PASSWORD", USERS["pusher"])
        settings = Settings(home=work / "home", plain_http=True)
        for org in ("acme", "beta", "gamma"):
            build_and_push(model, f"{up_registry.host}/up/{org}/gated:main", settings)
    (work / "beta-token").write_text(BETA + "\n")
    upstream = Gateway(f"{up_registry.host}/up", work / "upstream").start()
    gateway = Gateway(
        f"{registry.host}/{NS}",
        work / "gateway",
        ("--upstream", upstream.url,
         "--upstream-allow", "acme/*", "--upstream-allow", "beta/*", "--upstream-allow", "gamma/*",
         "--upstream-token-file", f"beta/*={work / 'beta-token'}"),
        env={"MODELPACK_GATEWAY_UPSTREAM_TOKEN_FOR": f"acme/*={ACME}"},
    ).start()  # fmt: skip
    tokens.requests.clear()
    try:
        yield model, tokens, upstream, gateway
    finally:
        gateway.stop()
        upstream.stop()
        up_registry.cleanup()
        tokens.stop()


def test_each_orgs_gated_repo_is_imported_with_its_own_token_only(gated, tmp_path):
    model, tokens, upstream, gateway = gated
    results = gateway.hf(
        [["snapshot", "acme/gated", "main"], ["snapshot", "beta/gated", "main"]], tmp_path / "hf"
    )
    for result in results:
        assert "path" in result, result
        assert tree_files(Path(result["path"])) == tree_files(model)
    # What the upstream's registry saw: which account asked for which repository.
    asked: dict[str, set[str]] = {}
    for request in tokens.requests:
        for scope in request.get("scopes", []):
            asked.setdefault(request.get("user") or "anonymous", set()).add(scope.split(":")[1])
    assert asked.get("acme-bot") == {"up/acme/gated"}, asked
    assert asked.get("beta-bot") == {"up/beta/gated"}, asked
    assert "anonymous" not in asked
    gateway.wait_for_log(r"upstream: importing acme/gated@main \(--upstream-token-for acme/\*\)")
    gateway.wait_for_log(r"upstream: importing beta/gated@main \(--upstream-token-file beta/\*=")


def test_a_repo_no_pattern_gives_a_token_goes_without_and_is_refused(gated, tmp_path):
    """gamma/* has no token (and there is no --upstream-token): asked anonymously, refused
    by the upstream, answered as a repo not found, and remembered as a miss."""
    _, tokens, upstream, gateway = gated
    tokens.requests.clear()
    results = gateway.hf([["snapshot", "gamma/gated", "main"]] * 2, tmp_path / "hf")
    assert [r.get("error") for r in results] == ["RepositoryNotFoundError"] * 2, results
    users = {r.get("user") for r in tokens.requests if "repository:up/gamma/gated:pull" in
             r.get("scopes", [])}  # fmt: skip
    assert users == {""}  # anonymous, never acme's or beta's account
    assert upstream.answered(r"GET /api/models/gamma/gated/revision/main") == [
        "GET /api/models/gamma/gated/revision/main"
    ]
    gateway.wait_for_log(r"upstream: gamma/gated@main not asked: a miss")


def test_no_token_is_in_a_log_an_answer_or_the_metrics(gated, tmp_path):
    _, _, upstream, gateway = gated
    answers = [_info(gateway, repo) for repo in ("acme/gated", "gamma/gated", "acme/missing")]
    metrics = requests.get(f"{gateway.url}/metrics", timeout=10).text
    page = requests.get(f"{gateway.url}/", timeout=30).text
    seen = [gateway.log(), upstream.log(), metrics, page]
    seen += [a.text + str(dict(a.headers)) for a in answers]
    for secret in (ACME, BETA, USERS["acme-bot"], USERS["beta-bot"]):
        assert not [text for text in seen if secret in text]


# -- overlapping patterns, on the hub double -----------------------------------------

TOKENS = {
    "acme/open": "hf_acme_wide_token",
    "acme/secret-llm": "hf_acme_secret_token",
    "beta/model": "hf_beta_token",
    "zeta/model": "hf_default_token",
}


@pytest.fixture
def hub(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    (files / "config.json").write_text('{"model_type": "bert"}\n')
    (files / "weights.bin").write_bytes(bytes(range(256)) * 64)  # over the LFS threshold
    server = FakeHub()
    for repo, token in TOKENS.items():
        commit = hashlib.sha1(repo.encode()).hexdigest()
        server.add(HubRepo(repo, files, commit, private_token=token, gated=True,
                           cookie=f"session={repo.replace('/', '-')}; Path=/"))  # fmt: skip
    server.start()
    yield server
    server.stop()


def test_overlapping_patterns_the_most_specific_wins_and_nothing_else_is_sent(
    hub, registry, tmp_path
):
    """acme/* and the later, narrower acme/secret-* overlap: acme/secret-llm gets the
    narrower one's token (a first-match rule would send acme/*'s); --upstream-token is for
    the rest.  Every request the upstream received carries exactly its repo's token, and
    no cookie that an answer about another org set."""
    (tmp_path / "beta").write_text(TOKENS["beta/model"])
    gateway = Gateway(
        f"{registry.host}/{NS}-double",
        tmp_path / "gateway",
        ("--upstream", hub.url, "--upstream-allow", "*",
         "--upstream-token-for", f"acme/*={TOKENS['acme/open']}",
         "--upstream-token-for", f"acme/secret-*={TOKENS['acme/secret-llm']}",
         "--upstream-token-file", f"beta/*={tmp_path / 'beta'}"),
        env={"MODELPACK_GATEWAY_UPSTREAM_TOKEN": TOKENS["zeta/model"]},
    ).start()  # fmt: skip
    try:
        for repo in TOKENS:
            response = _info(gateway, repo)
            assert response.status_code == 200, (repo, response.text)
        log = gateway.log()
    finally:
        gateway.stop()
    assert len(hub.seen) == 3 * len(TOKENS)  # a listing and two files each
    for method, path, authorization, cookie in hub.seen:
        repo = next(r for r in TOKENS if f"/{r}/" in path)
        assert (method, authorization, cookie) == ("GET", f"Bearer {TOKENS[repo]}", ""), path
    assert "importing acme/secret-llm@main (--upstream-token-for acme/secret-*)" in log
    assert "importing zeta/model@main (--upstream-token)" in log
    assert not [t for t in TOKENS.values() if t in log]


def test_a_token_the_upstream_refuses_is_a_401_without_the_token(hub, registry, tmp_path):
    """A gated repo whose pattern's token lacks access: the upstream answers 403 GatedRepo;
    the client is told the repo is not found or refused, never which token was tried."""
    gateway = Gateway(
        f"{registry.host}/{NS}-refused",
        tmp_path / "gateway",
        ("--upstream", hub.url, "--upstream-allow", "acme/*",
         "--upstream-token-for", "acme/*=hf_not_granted_token"),
    ).start()  # fmt: skip
    try:
        (result,) = gateway.hf([["file", "acme/open", "config.json", "main"]], tmp_path / "hf")
        assert result["error"] == "RepositoryNotFoundError" and result["status"] == 401, result
        log = gateway.log()
    finally:
        gateway.stop()
    assert "hf_not_granted_token" not in log and "hf_not_granted_token" not in result["message"]
    statuses = [(path.split("?")[0], auth) for _, path, auth, _ in hub.seen]
    assert statuses == [("/api/models/acme/open/revision/main", "Bearer hf_not_granted_token")]
