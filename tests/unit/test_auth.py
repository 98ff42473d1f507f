import base64
import json

import pytest

from modelpack.errors import UsageError
from modelpack.registry.challenge import parse_challenges
from modelpack.registry.credentials import Credentials, find_credentials


def test_bearer_challenge():
    (c,) = parse_challenges(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:team/bert:pull,push"'
    )
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "scope": "repository:team/bert:pull,push",
    }


def test_basic_challenge_and_multiple():
    basic, bearer = parse_challenges(
        'Basic realm="Registry Realm", Bearer realm="https://t/x",service=s'
    )
    assert (basic.scheme, basic.params) == ("basic", {"realm": "Registry Realm"})
    assert (bearer.scheme, bearer.params) == ("bearer", {"realm": "https://t/x", "service": "s"})


def test_credentials_repr_hides_the_password():
    creds = Credentials("alice", "s3cret")
    assert "s3cret" not in repr(creds)
    assert creds.basic_header() == "Basic " + base64.b64encode(b"alice:s3cret").decode()


def test_credentials_from_env_then_docker_config(tmp_path, monkeypatch):
    config = tmp_path / "docker-config"
    config.mkdir()
    auth = base64.b64encode(b"bob:pw").decode()
    (config / "config.json").write_text(json.dumps({"auths": {"reg.io": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    assert find_credentials("reg.io") == Credentials("bob", "pw")
    assert find_credentials("other.io") is None
    monkeypatch.setenv("MODELPACK_USERNAME", "ci")
    monkeypatch.setenv("MODELPACK_PASSWORD", "token")
    assert find_credentials("reg.io") == Credentials("ci", "token")


CI = Credentials("ci", "token")


@pytest.mark.parametrize(
    ("named", "host", "command_registry", "expected"),
    [
        (None, "reg.io", None, CI),  # the command's own registry
        (None, "mirror.io", "reg.io", None),  # a mirror of it, or a copy's source
        (None, "reg.io", "reg.io", CI),
        ("reg.io", "reg.io", "other.io", CI),  # the one MODELPACK_REGISTRY names
        ("reg.io", "other.io", None, None),  # and no other
        ("reg.io", "mirror.io", "reg.io", None),
        ("mirror.io", "mirror.io", "reg.io", CI),  # a mirror when it is the one named
        ("https://Reg.IO:5000/", "reg.io:5000", None, CI),  # docker login's spellings
        ("reg.io:5000", "reg.io", None, None),  # another port is another registry
        ("https://index.docker.io/v1/", "docker.io", None, CI),
        ("docker.io", "registry-1.docker.io", None, CI),
    ],
)
def test_environment_credentials_are_for_one_registry(
    monkeypatch, named, host, command_registry, expected
):
    monkeypatch.setenv("MODELPACK_USERNAME", "ci")
    monkeypatch.setenv("MODELPACK_PASSWORD", "token")
    if named is not None:
        monkeypatch.setenv("MODELPACK_REGISTRY", named)
    assert find_credentials(host, command_registry) == expected


@pytest.mark.parametrize("named", ["reg.io/team", "reg io", "https://"])
def test_a_registry_variable_that_is_not_a_host_is_a_usage_error(monkeypatch, named):
    monkeypatch.setenv("MODELPACK_USERNAME", "ci")
    monkeypatch.setenv("MODELPACK_PASSWORD", "token")
    monkeypatch.setenv("MODELPACK_REGISTRY", named)
    with pytest.raises(UsageError, match="MODELPACK_REGISTRY"):
        find_credentials("reg.io")


def test_docker_hub_references_talk_to_its_api_host():
    from modelpack.registry import RegistryRepository, connect
    from modelpack.settings import Settings

    client = connect("docker.io", Settings(), credentials=Credentials("u", "p"))
    assert client.transport.host == "registry-1.docker.io"
    assert (
        RegistryRepository(client, "library/bert").describe() == "registry-1.docker.io/library/bert"
    )


def test_mirrors_parse_and_borrow_upstream_credentials(monkeypatch, tmp_path):
    from modelpack.oci.reference import parse_reference
    from modelpack.registry.client import mirror_repositories
    from modelpack.settings import Settings

    monkeypatch.setenv(
        "MODELPACK_MIRRORS",
        "harbor.example.com=http://127.0.0.1:4001,https://cache.example.com/hub-proxy",
    )
    config = tmp_path / "docker-config"
    config.mkdir()
    auth = base64.b64encode(b"robot$ml+ci:secret").decode()
    (config / "config.json").write_text(
        json.dumps({"auths": {"harbor.example.com": {"auth": auth}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    repos = mirror_repositories(parse_reference("harbor.example.com/ml/bert:v1"), Settings())
    assert [r.describe() for r in repos] == [
        "127.0.0.1:4001/ml/bert",
        "cache.example.com/hub-proxy/ml/bert",
    ]
    assert repos[0].client.transport.base_url == "http://127.0.0.1:4001"
    assert repos[1].client.transport.base_url == "https://cache.example.com"
    assert repos[0].client.auth.credentials.username == "robot$ml+ci"


def test_mirrors_never_get_the_environment_credentials(monkeypatch):
    from modelpack.oci.reference import parse_reference
    from modelpack.registry.client import mirror_repositories
    from modelpack.settings import Settings

    monkeypatch.setenv("MODELPACK_MIRRORS", "harbor.example.com=http://127.0.0.1:4001")
    monkeypatch.setenv("MODELPACK_USERNAME", "ci")
    monkeypatch.setenv("MODELPACK_PASSWORD", "token")
    (mirror,) = mirror_repositories(parse_reference("harbor.example.com/ml/bert:v1"), Settings())
    assert mirror.client.auth.credentials is None


def test_a_token_asked_for_many_scopes_covers_each_and_the_cover_is_bounded(monkeypatch):
    from modelpack.registry import auth as auth_module
    from modelpack.registry.auth import Authenticator
    from modelpack.registry.challenge import Challenge

    auth = Authenticator(transport=None, credentials=None)  # type: ignore[arg-type]
    asked: list[list[str]] = []

    def request_token(challenge, scopes):  # noqa: ANN001, ANN202
        asked.append(scopes)
        return {"token": f"t{len(asked)}", "expires_in": 60}

    monkeypatch.setattr(auth, "request_token", request_token)
    scopes = [f"repository:team/m{n}:pull" for n in range(3)]
    assert not auth.prefetch(scopes)  # no bearer challenge seen yet: nothing to ask
    auth._challenge = Challenge("bearer", {"realm": "https://t/token"})
    assert auth.prefetch(scopes + scopes[:1])
    assert asked == [scopes]  # once, each scope once
    assert auth.headers((scopes[1],)) == {"Authorization": "Bearer t1"}
    assert auth.headers(("repository:team/other:pull",)) == {}
    assert auth.headers((scopes[0], "repository:team/other:pull")) == {}  # not all covered
    assert not auth.prefetch(scopes)  # all held: not asked again
    auth.forget((scopes[0],))
    assert auth.headers((scopes[0],)) == {}
    monkeypatch.setattr(auth_module, "MAX_COVERED", 4)
    assert auth.prefetch([f"repository:team/n{n}:pull" for n in range(3)])
    assert len(auth._covering) <= 4


def test_concurrent_first_requests_each_answer_a_basic_challenge():
    """Two requests sent before any challenge was seen both go out without credentials: the
    second 401 is no refusal of the credentials (it was, before: "the registry refused
    alice" on a fresh gateway's first concurrent downloads), a 401 to Basic ones is."""
    import requests

    from modelpack.registry.auth import Authenticator

    auth = Authenticator(transport=None, credentials=Credentials("alice", "pw"))  # type: ignore[arg-type]

    def challenged(sent: dict[str, str]) -> requests.Response:
        response = requests.Response()
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Basic realm="registry"'
        response.request = requests.Request("GET", "http://r/v2/", headers=sent).prepare()
        return response

    assert auth.headers(("repository:a:pull",)) == {}
    assert auth.answer(challenged({}), ("repository:a:pull",))
    assert auth.answer(challenged({}), ("repository:a:pull",))  # the other, sent meanwhile
    basic = auth.headers(("repository:a:pull",))
    assert basic == {"Authorization": Credentials("alice", "pw").basic_header()}
    assert not auth.answer(challenged(basic), ("repository:a:pull",))  # refused: no retry
    assert not Authenticator(None, None).answer(challenged({}), ())  # type: ignore[arg-type]
