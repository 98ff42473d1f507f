"""The upstream import's token per pattern (gateway/core/upstreamtokens.py) and its memory of
misses (gateway/upstream/misses.py), without a network: parsing, precedence, refusals that
never quote a token, and the bounds of the miss memory."""

import os
import random
import string
import threading
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from support.helpers import Clock

from modelpack.errors import (
    AuthenticationError,
    NotFoundError,
    RegistryUnavailableError,
    UsageError,
)
from modelpack.gateway import GatewayConfig
from modelpack.gateway.core.egress import Egress, EgressPolicy, RefusedError
from modelpack.gateway.core.upstreamtokens import (
    MAX_RULES,
    MAX_TOKEN,
    TokenRule,
    choose,
    literal_characters,
    parse_token_rules,
)
from modelpack.gateway.upstream.files import (
    UpstreamFileMissingError,
    UpstreamIntegrityError,
    UpstreamNotFoundError,
    UpstreamRefusedAccessError,
)
from modelpack.gateway.upstream.misses import Misses

ACME, BETA, SECRET, DEFAULT = "hf_acme_token_1", "hf_beta_token_2", "hf_secret_3", "hf_default_4"
UP = {"upstream": "http://127.0.0.1:1", "upstream_allow": ("*",)}


# -- which token -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "count"),
    [("*", 0), ("acme/*", 5), ("acme/secret-*", 12), ("acme/bert", 9), ("a?c/[xy]z", 4),
     ("a[!b]c", 2), ("a[]]c", 2), ("a[c", 3), ("[", 1), ("**", 0)],
)  # fmt: skip
def test_specificity_counts_the_characters_that_match_only_themselves(pattern, count):
    assert literal_characters(pattern) == count


def _rules(*pairs: str) -> tuple[TokenRule, ...]:
    return parse_token_rules(pairs, ())


@pytest.mark.parametrize(
    ("repo", "expected"),
    [
        ("acme/bert", ACME),
        ("acme/secret-llm", SECRET),  # acme/secret-* beats acme/*, whatever the order
        ("acme/secret-exact", BETA),  # an exact id beats every pattern
        ("beta/x", DEFAULT),  # only '*' matches
        ("ACME/Bert", ACME),  # ids are matched in lower case
    ],
)
def test_the_most_specific_pattern_wins(repo, expected):
    rules = _rules(
        f"*={DEFAULT}", f"acme/*={ACME}", f"acme/secret-*={SECRET}", f"acme/secret-exact={BETA}"
    )
    assert choose(rules, repo).token == expected
    assert choose(tuple(reversed(rules)), repo).token == expected


def test_equally_specific_patterns_go_by_the_order_given():
    # 'acme/a*' and 'acme/*a' have 6 literal characters each; acme/aha matches both.
    first = _rules(f"acme/a*={ACME}", f"acme/*a={BETA}")
    assert choose(first, "acme/aha").token == ACME
    assert choose(tuple(reversed(first)), "acme/aha").token == BETA
    assert choose(first, "other/x") is None
    # Inline values come before files.
    assert [r.pattern for r in first] == ["acme/a*", "acme/*a"]


def test_tokens_from_files_are_read_once_and_stripped(tmp_path):
    (tmp_path / "acme").write_text(f"{ACME}\n")
    (tmp_path / "beta").write_text(f"  {BETA}\r\n")
    rules = parse_token_rules(
        [f"gamma/*={SECRET}"], [f"acme/*={tmp_path / 'acme'}", f"Beta/*={tmp_path / 'beta'}"]
    )
    assert [(r.pattern, r.token) for r in rules] == [
        ("gamma/*", SECRET), ("acme/*", ACME), ("beta/*", BETA)
    ]  # fmt: skip
    assert all(r.token not in repr(r) for r in rules)
    assert rules[1].source == f"--upstream-token-file acme/*={tmp_path / 'acme'}"


def _fifo(path):
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    ("inline", "file", "content", "message"),
    [
        (ACME, None, None, "expected PATTERN=TOKEN"),  # a token with no pattern
        ("acme/*=", None, None, "expected PATTERN=TOKEN"),
        ("acme/*=  ", None, None, "expected PATTERN=TOKEN"),
        (f"=={ACME}", None, None, "not a repo id pattern"),
        (f"acme/*={ACME} x", None, None, "not a token"),  # a space in it
        (f"acme/*={ACME}\nX-Evil: 1", None, None, "not a token"),  # header injection
        (f"acme/*={ACME}\u00e9", None, None, "not a token"),
        ("acme/*=" + "t" * (MAX_TOKEN + 1), None, None, "not a token"),
        (None, "acme/*", f"{ACME}\n", "expected PATTERN=FILE"),
        (None, "acme/*=FILE", "", "is empty"),
        (None, "acme/*=FILE", "\n\n", "is empty"),
        (None, "acme/*=FILE", f"{ACME}\n{ACME}\n", "not a token"),  # two lines
        (None, "acme/*=FILE", "t" * (MAX_TOKEN + 64), "larger than a token"),
        (None, "acme/*=FILE", f"{ACME}\u00e9", "not a token"),
        (None, "acme/*=FILE", None, "cannot read"),  # no such file
        (None, "acme/*=DIR", None, "not a regular file"),
        (None, "acme/*=FIFO", None, "not a regular file"),  # read without blocking
    ],
)
def test_a_token_that_cannot_be_used_is_one_usage_error_that_never_shows_it(
    tmp_path, inline, file, content, message
):
    if file is not None:
        path = tmp_path / "token"
        if content is not None:
            path.write_bytes(content.encode())
        if file.endswith("DIR"):
            path.mkdir()
        if file.endswith("FIFO"):
            _fifo(path)
        file = file.replace("FILE", str(path)).replace("DIR", str(path))
        file = file.replace("FIFO", str(path))
    with pytest.raises(UsageError, match=message) as error:
        parse_token_rules([inline] if inline else [], [file] if file else [])
    text = str(error.value)
    assert ACME not in text and "tttt" not in text and "\n" not in text


def test_the_number_of_patterns_is_bounded():
    many = [f"org{i}/*={ACME}" for i in range(MAX_RULES)]
    assert len(parse_token_rules(many, ())) == MAX_RULES
    with pytest.raises(UsageError, match=f"at most {MAX_RULES}") as error:
        parse_token_rules([*many, f"one-more/*={ACME}"], ())
    assert ACME not in str(error.value)


def test_a_pattern_given_two_tokens_is_refused(tmp_path):
    (tmp_path / "t").write_text(BETA)
    with pytest.raises(UsageError, match="has a token already") as error:
        parse_token_rules([f"acme/*={ACME}"], [f"ACME/*={tmp_path / 't'}"])
    assert ACME not in str(error.value) and BETA not in str(error.value)


def test_the_gateway_config_checks_tokens_at_start(tmp_path):
    config = GatewayConfig(
        "127.0.0.1:5000",
        **UP,
        upstream_token=f" {DEFAULT} ",
        upstream_token_for=(f"acme/*={ACME}",),
    )
    assert config.upstream_token == DEFAULT
    assert [r.pattern for r in config.upstream_tokens] == ["acme/*"]
    assert ACME not in repr(config) and DEFAULT not in repr(config)
    banner = "\n".join(config.banner())
    assert "acme/*" in banner and ACME not in banner and DEFAULT not in banner
    with pytest.raises(UsageError, match="need --upstream URL"):
        GatewayConfig("127.0.0.1:5000", upstream_token_for=(f"acme/*={ACME}",))
    with pytest.raises(UsageError, match="need --upstream URL"):
        GatewayConfig("127.0.0.1:5000", upstream_token_file=("acme/*=/nonexistent",))
    with pytest.raises(UsageError, match="both name the token for every repo"):
        GatewayConfig("127.0.0.1:5000", **UP, upstream_token=DEFAULT,
                      upstream_token_for=(f"*={ACME}",))  # fmt: skip
    with pytest.raises(UsageError, match="--upstream-token: not a token") as error:
        GatewayConfig("127.0.0.1:5000", **UP, upstream_token=f"{DEFAULT}\r\nX-Evil: 1")
    assert DEFAULT not in str(error.value)
    assert GatewayConfig("127.0.0.1:5000", **UP, upstream_token="  ").upstream_token is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("upstream_miss_ttl", -1, "--upstream-miss-ttl must be 0 to 604800"),
        ("upstream_miss_ttl", 604801, "--upstream-miss-ttl must be 0 to 604800"),
        ("upstream_miss_max", 0, "--upstream-miss-max must be 1 to 1000000"),
        ("upstream_miss_max", 1_000_001, "--upstream-miss-max must be 1 to 1000000"),
    ],
)
def test_the_miss_memory_has_bounded_options(field, value, message):
    with pytest.raises(UsageError, match=message):
        GatewayConfig("127.0.0.1:5000", **UP, **{field: value})
    config = GatewayConfig("127.0.0.1:5000", **UP)
    assert (config.upstream_miss_ttl, config.upstream_miss_max) == (600, 10_000)  # documented


def _serve(monkeypatch, *args: str, **env: str) -> GatewayConfig:
    from modelpack_cli import commands_serve
    from modelpack_cli.main import main

    seen = []
    monkeypatch.setattr(commands_serve, "run_gateway", seen.append)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--registry", "127.0.0.1:5000/ns", "--upstream", "http://127.0.0.1:1",
              "--upstream-allow", "*", *args])  # fmt: skip
    if exit_.value.code == 0:
        (config,) = seen
        return config
    raise AssertionError(exit_.value.code)


def test_serve_takes_tokens_from_options_the_environment_and_files(monkeypatch, tmp_path):
    (tmp_path / "gamma").write_text(SECRET + "\n")
    config = _serve(
        monkeypatch,
        "--upstream-token-for", f"acme/*={ACME}",
        "--upstream-miss-ttl", "0",
        "--upstream-miss-max", "5",
        MODELPACK_GATEWAY_UPSTREAM_TOKEN_FILE=f"gamma/*={tmp_path / 'gamma'}",
    )  # fmt: skip
    assert [(r.pattern, r.token) for r in config.upstream_tokens] == [
        ("acme/*", ACME), ("gamma/*", SECRET)
    ]  # fmt: skip
    assert (config.upstream_miss_ttl, config.upstream_miss_max) == (0, 5)
    config = _serve(
        monkeypatch,
        MODELPACK_GATEWAY_UPSTREAM_TOKEN_FOR=f"acme/*={ACME} beta/*={BETA}",
        MODELPACK_GATEWAY_UPSTREAM_MISS_TTL="30",
    )
    assert [(r.pattern, r.token) for r in config.upstream_tokens][1] == ("beta/*", BETA)
    assert config.upstream_miss_ttl == 30


@pytest.mark.parametrize(
    "args",
    [
        ("--upstream-token-for", f"acme/*={ACME}\tx"),
        ("--upstream-token-for", ACME),
        ("--upstream-token-file", "acme/*=/nonexistent/token"),
        ("--upstream-miss-ttl", "604801"),
        ("--upstream-miss-ttl", "-1"),
        ("--upstream-miss-max", "0"),
        ("--upstream-miss-max", "lots"),
    ],
)
def test_bad_upstream_options_exit_2_with_one_line(monkeypatch, capsys, args):
    with pytest.raises(AssertionError) as failed:
        _serve(monkeypatch, *args)
    assert str(failed.value) == "2"
    err = capsys.readouterr().err.strip()
    assert ACME not in err
    if args[0].startswith("--upstream-token"):  # ours; click's own usage errors say more
        assert len(err.splitlines()) == 1, err


# -- the token on the wire -----------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    """Answers 200 with a cookie; records (path, Authorization, Cookie)."""

    seen: list[tuple[str, str | None, str | None]] = []

    def log_message(self, *args):  # noqa: ANN002
        pass

    def do_GET(self) -> None:  # noqa: N802
        _Recorder.seen.append(
            (self.path, self.headers.get("Authorization"), self.headers.get("Cookie"))
        )
        self.send_response(200)
        self.send_header("Set-Cookie", f"session=for-{self.path.strip('/')}; Path=/")
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_an_egress_with_another_token_shares_connections_not_the_token_or_cookies():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        egress = Egress(EgressPolicy(url))
        acme, beta = egress.with_token(ACME), egress.with_token(BETA)
        assert acme.session is egress.session is beta.session and egress.token is None
        for client, path in ((acme, "/acme"), (beta, "/beta"), (egress, "/none")):
            client.get(f"{url}{path}").close()
    finally:
        server.shutdown()
        server.server_close()
    assert _Recorder.seen == [
        ("/acme", f"Bearer {ACME}", None),
        ("/beta", f"Bearer {BETA}", None),  # no cookie the answer to acme's token set
        ("/none", None, None),
    ]


# -- what is remembered --------------------------------------------------------------


def test_a_missing_repo_covers_every_revision_and_a_missing_revision_only_itself():
    clock = Clock()
    misses = Misses(100, 60, clock)
    assert misses.listing_failed(
        "org/ghost", "main", UpstreamNotFoundError("gone", code="RepoNotFound")
    )
    assert misses.listing_failed(
        "org/tiny", "nope", UpstreamNotFoundError("no rev", code="RevisionNotFound")
    )
    for revision in ("main", "v2"):
        with pytest.raises(NotFoundError, match="gone"):
            misses.check("org/ghost", revision)
    with pytest.raises(UpstreamNotFoundError, match="no rev") as raised:
        misses.check("org/tiny", "nope")
    assert raised.value.code == "RevisionNotFound"  # a copy, with its fields
    misses.check("org/tiny", "main")  # another revision of that repo: asked
    clock.now += 59.9
    with pytest.raises(NotFoundError):
        misses.check("org/ghost", "main")
    clock.now += 0.2  # past the TTL: asked again
    misses.check("org/ghost", "main")
    misses.check("org/tiny", "nope")


def test_refusals_and_missing_files_are_misses_other_failures_are_not():
    misses = Misses(100, 60, Clock())
    for code in ("RepoNotFound", "GatedRepo"):
        refused = UpstreamRefusedAccessError("401", code=code)
        assert misses.listing_failed(f"org/{code.lower()}", "main", refused)
        with pytest.raises(AuthenticationError):
            misses.check(f"org/{code.lower()}", "v9")  # access is per repo
    assert misses.download_failed("org/broken", "main", UpstreamFileMissingError("listed"))
    with pytest.raises(UpstreamIntegrityError, match="listed") as raised:
        misses.check("org/broken", "main")
    assert isinstance(raised.value, RefusedError)  # the same 403 the first client got
    misses.check("org/broken", "v1")
    for exc in (RegistryUnavailableError("503"), RefusedError("caps"), UpstreamIntegrityError("x")):
        assert not misses.listing_failed("org/flaky", "main", exc)
        assert not misses.download_failed("org/flaky", "main", exc)
    misses.check("org/flaky", "main")
    assert len(misses) == 3


def test_a_ttl_of_zero_remembers_nothing():
    misses = Misses(100, 0)
    assert misses.listing_failed(
        "org/ghost", "main", UpstreamNotFoundError("gone", code="RepoNotFound")
    )
    misses.check("org/ghost", "main")
    assert len(misses) == 0


def _random_id(rng: random.Random) -> str:
    name = "".join(rng.choices(string.ascii_lowercase + string.digits, k=96))
    return f"{name[:48]}/{name[48:]}"


def test_made_up_repos_cannot_grow_the_memory_past_its_bound():
    """An attacker naming 10,000 random repos the upstream lacks (the longest ids there are,
    the longest revisions): the memory holds the last 1000, and its size stays that of
    1000 entries."""
    rng = random.Random(7)
    misses = Misses(1000, 600, Clock())
    tracemalloc.start()
    try:
        for i in range(10_000):
            revision = "r" * 127 + str(i % 10)
            exc = UpstreamNotFoundError(f"{i}: not found", code="RepoNotFound" if i % 2 else "")
            misses.listing_failed(_random_id(rng), revision, exc)
            if i == 999:
                full, _ = tracemalloc.get_traced_memory()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(misses) == 1000
    assert held < full * 1.5, (full, held)  # no growth past the first 1000
    assert held < 2 * 1024 * 1024, held  # about 1 KiB an entry at the longest ids


def test_no_request_a_client_makes_up_can_have_a_whole_repo_remembered():
    """A 403 without the hub's error code (a proxy or firewall in front of the upstream,
    refusing one odd request) or a bare 404 covers only the revision asked for: a client
    choosing a revision that draws one cannot make the repo missing for everybody."""
    misses = Misses(100, 60, Clock())
    assert misses.listing_failed("org/real", "odd", UpstreamRefusedAccessError("403 waf"))
    assert misses.listing_failed("org/real", "odd2", UpstreamNotFoundError("404"))
    for revision in ("odd", "odd2"):
        with pytest.raises(AuthenticationError if revision == "odd" else NotFoundError):
            misses.check("org/real", revision)
    misses.check("org/real", "main")
