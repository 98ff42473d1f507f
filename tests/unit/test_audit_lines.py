"""The audit trail's parts (state/audit.py) and the options that configure it and protected
tags (core/config.py): users named without secrets, clients from trusted proxies only,
bounded lines, a log file shared and rotated by several processes, refused options; with
replicas, one identity token named alike by every replica (the key from the shared state)."""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.auditlog import write_lines

from modelpack.errors import SharedStateUnavailableError, UsageError
from modelpack.gateway.core.config import PROTECT_MAX, TRUSTED_PROXIES_MAX, GatewayConfig
from modelpack.gateway.state import audit as audit_module
from modelpack.gateway.state.audit import (
    Audit,
    AuditLog,
    client_of,
    event_line,
    is_refusal,
    networks,
    node_key,
    user_of,
)
from modelpack.gateway.state.metrics import Metrics
from modelpack.gateway.state.shared import InProcess
from modelpack.gateway.writes.protected import protecting
from modelpack.schemas import GATEWAY_AUDIT, load_schema
from modelpack.settings import Settings

SCHEMA = jsonschema.Draft202012Validator(load_schema(GATEWAY_AUDIT))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_the_user_is_the_name_the_credentials_give_never_their_secret():
    assert user_of(None, None) is None and user_of("", None) is None
    assert user_of(basic("alice", "pw-1"), None) == "alice"
    assert user_of("Bearer bob:pw-2", None) == "bob"
    assert user_of("Bearer secret-3", "robot$ci") == "robot$ci"  # --token-user
    token = user_of("Bearer identity-token-4", None)
    assert token is not None and token.startswith("token:") and "identity" not in token
    assert token == user_of("Bearer identity-token-4", None) != user_of("Bearer other", None)
    # A guessable "token" (a password sent alone) is not its plain hash: keyed per node.
    weak = user_of("Bearer hunter2", None, b"k" * 32)
    assert weak != "token:" + hashlib.sha256(b"hunter2").hexdigest()[:12]
    assert weak != user_of("Bearer hunter2", None, b"j" * 32)


def test_the_fingerprint_key_is_made_once_per_node_cache(tmp_path):
    path = tmp_path / "cache" / "audit.key"
    key = node_key(path)
    assert len(key) == 32 and node_key(path) == key
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.write_bytes(b"short")  # a crash between create and write
    assert node_key(path) != key and len(path.read_bytes()) == 32
    assert user_of("Digest abc", None) is None and user_of("Basic !!!", None) is None


class _Replicas(InProcess):
    """The audit key of state/shared.py's RedisShared, as replicas see one Redis; ``down``
    fails as an unreachable Redis does."""

    replicated = True

    def __init__(self, key: bytes) -> None:
        super().__init__(Path("/nonexistent"))
        self.key, self.down, self.asked = key, False, 0

    def audit_key(self) -> bytes | None:
        self.asked += 1
        if self.down:
            raise SharedStateUnavailableError("Redis at 127.0.0.1:9 did not answer")
        return self.key


def test_replicas_with_their_own_caches_name_one_token_alike(tmp_path, monkeypatch):
    shared = _Replicas(b"r" * 32)
    audits = [
        Audit(
            GatewayConfig("127.0.0.1:9/gw", settings=Settings(home=tmp_path / f"node-{n}")),
            Metrics(),
            shared,
        )  # fmt: skip
        for n in range(2)
    ]
    assert audits[0].node_key != audits[1].node_key  # each node cache its own key file
    assert shared.asked == 0  # asked for only when an identity token is named
    names = [user_of("Bearer identity-token-4", None, audit.key) for audit in audits]
    assert names[0] == names[1] == user_of("Bearer identity-token-4", None, b"r" * 32)
    assert user_of(basic("alice", "pw"), None, audits[0].key) == "alice"
    asked = shared.asked
    user_of("Bearer identity-token-4", None, audits[0].key)
    assert shared.asked == asked  # kept once had

    # Redis down when a replica first needs the key: its node key meanwhile, Redis asked
    # again KEY_RETRY seconds later, not once per request.
    shared.down = True
    late = Audit(GatewayConfig("127.0.0.1:9/gw", settings=Settings(home=tmp_path / "late")),
                 Metrics(), shared)  # fmt: skip
    clock = [1000.0]
    monkeypatch.setattr(audit_module.time, "monotonic", lambda: clock[0])
    alone = user_of("Bearer identity-token-4", None, late.node_key)
    assert user_of("Bearer identity-token-4", None, late.key) == alone
    asked = shared.asked
    assert user_of("Bearer identity-token-4", None, late.key) == alone and shared.asked == asked
    shared.down = False
    clock[0] += audit_module.KEY_RETRY
    assert user_of("Bearer identity-token-4", None, late.key) == names[0]


def _environ(peer: str, forwarded: str | None = None) -> dict:
    environ = {"REMOTE_ADDR": peer}
    if forwarded is not None:
        environ["HTTP_X_FORWARDED_FOR"] = forwarded
    return environ


def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy():
    trusted = networks(["10.0.0.5", "10.1.0.0/16"])
    # Not a trusted proxy: its header is whatever the client wrote.
    assert client_of(_environ("192.0.2.7", "198.51.100.1"), trusted) == "192.0.2.7"
    assert client_of(_environ("192.0.2.7", "198.51.100.1"), ()) == "192.0.2.7"
    # The proxy appended the address it was reached from: that is the client.
    assert client_of(_environ("10.0.0.5", "198.51.100.1"), trusted) == "198.51.100.1"
    # A client that writes its own header is to the left of what the proxy appended.
    spoofed = "203.0.113.9, 198.51.100.1"
    assert client_of(_environ("10.0.0.5", spoofed), trusted) == "198.51.100.1"
    # Two trusted proxies in a row; the first untrusted address from the right wins.
    chained = "203.0.113.9, 198.51.100.1, 10.1.2.3"
    assert client_of(_environ("10.0.0.5", chained), trusted) == "198.51.100.1"
    # An entry that is no address stops the walk at the last address that was one.
    assert client_of(_environ("10.0.0.5", "198.51.100.1, junk"), trusted) == "10.0.0.5"
    assert client_of(_environ("10.0.0.5", "[2001:db8::1]:443"), trusted) == "2001:db8::1"
    assert client_of(_environ("10.0.0.5", "198.51.100.1:5555"), trusted) == "198.51.100.1"
    assert client_of(_environ("10.0.0.5"), trusted) == "10.0.0.5"  # no header
    assert client_of(_environ("::ffff:10.0.0.5", "198.51.100.1"), trusted) == "198.51.100.1"
    assert client_of({}, trusted) == "-"


def test_a_huge_x_forwarded_for_costs_a_bounded_walk():
    trusted = networks(["10.0.0.0/8"])
    header = ", ".join(["10.9.9.9"] * 100_000)  # every hop "trusted": the walk stops at 32
    assert client_of(_environ("10.0.0.5", header), trusted) == "10.9.9.9"
    header = "198.51.100.1, " + ", ".join(["10.9.9.9"] * 40)
    assert client_of(_environ("10.0.0.5", header), trusted) == "10.9.9.9"  # past 32: not read


@settings(max_examples=300, deadline=None)
@given(
    user=st.one_of(st.none(), st.text(max_size=2000)),
    repo=st.text(max_size=3000),
    path=st.one_of(st.none(), st.text(max_size=5000)),
    error=st.one_of(st.none(), st.text(max_size=5000)),
)
def test_every_line_is_one_bounded_ascii_json_object_of_the_schema(user, repo, path, error):
    line = event_line(
        {
            "time": "2026-11-05T10:00:00.000Z",
            "user": user,
            "client": "192.0.2.1",
            "action": "download",
            "repo": repo,
            "revision": "main" * 100,
            "path": path,
            "status": 200,
            "bytes": 5,
            "error": error,
        }  # fmt: skip
    )
    assert "\n" not in line and line.isascii()
    assert len(line.encode()) < 4096  # PIPE_BUF: one atomic write to a pipe
    document = json.loads(line)
    SCHEMA.validate(document)
    assert list(document)[:9] == ["time", "user", "client", "action", "repo", "revision",
                                  "path", "status", "bytes"]  # fmt: skip
    if path is not None and len(json.dumps(path)) <= 1100:
        assert document["path"] == path  # kept whole when it fits


def test_refusals_are_the_4xx_that_say_no():
    assert all(is_refusal(s) for s in (400, 401, 403, 405, 409, 412, 413, 415, 422, 429))
    assert not any(is_refusal(s) for s in (200, 206, 304, 307, 404, 416, 500, 502, 503))


def test_processes_sharing_a_rotated_log_lose_and_split_no_line(tmp_path):
    """Four processes write 2,000 lines each into one file rotated every 64 KiB: every
    line arrives once, whole, and rotation kept the backups it was asked to."""
    path = tmp_path / "audit.log"
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=write_lines, args=(str(path), w, 2000, 64 * 1024)) for w in range(4)
    ]
    for process in writers:
        process.start()
    for process in writers:
        process.join(120)
        assert process.exitcode == 0
    files = [path, *sorted(tmp_path.glob("audit.log.*"))]
    assert len(files) > 5  # it rotated
    seen = set()
    for file in files:
        for line in file.read_text(encoding="ascii").splitlines():
            record = json.loads(line)  # a split or interleaved line would not parse
            seen.add((record["writer"], record["i"]))
        assert file.stat().st_size < 2 * 64 * 1024
    assert seen == {(w, i) for w in range(4) for i in range(2000)}


def test_a_log_renamed_away_is_reopened_at_the_next_line(tmp_path):
    """logrotate's rename (no copytruncate, no signal): the next line goes to a new file."""
    path = tmp_path / "audit.log"
    log = AuditLog(str(path))
    log.write('{"n":1}')
    path.rename(tmp_path / "audit.log.1")
    log.write('{"n":2}')
    log.close()
    assert (tmp_path / "audit.log.1").read_text() == '{"n":1}\n'
    assert path.read_text() == '{"n":2}\n'


def test_a_line_that_cannot_be_written_is_counted_not_raised(tmp_path, capsys):
    from modelpack.gateway.state.metrics import Metrics

    metrics = Metrics()
    log = AuditLog("-", metrics=metrics)
    log.write('{"n":1}')
    assert capsys.readouterr().out == '{"n":1}\n'
    log.handler.stream = open(os.devnull, "rb")  # noqa: SIM115 - writing fails
    log.write('{"n":2}')
    assert "modelpack_gateway_audit_write_errors_total 1.0\n" in metrics.render()


def _config(tmp_path: Path, **options) -> GatewayConfig:
    return GatewayConfig(
        "127.0.0.1:9/gw", settings=Settings(home=tmp_path, plain_http=True), **options
    )


def test_the_options_are_checked_at_the_start(tmp_path):
    config = _config(tmp_path, audit_log=str(tmp_path / "a.log"), audit_log_max_bytes="1MiB",
                     trusted_proxies=("10.0.0.5, 10.1.0.0/16", "::1"),
                     protect=("v*", "release-*,stable"))  # fmt: skip
    assert config.audit_log_max_bytes == 1 << 20
    made = (tmp_path / "a.log").stat().st_mode & 0o777
    assert made & 0o007 == 0  # made at the start, not for every local account
    assert config.trusted_proxies == ("10.0.0.5/32", "10.1.0.0/16", "::1/128")
    assert config.protect == ("v*", "release-*", "stable")
    assert _config(tmp_path, audit_log="-").audit_log == "-"
    refused = {
        "a folder": {"audit_log": str(tmp_path)},
        "a missing folder": {"audit_log": str(tmp_path / "nope" / "a.log")},
        "a size that is none": {"audit_log_max_bytes": "lots"},
        "a size too small to rotate": {"audit_log_max_bytes": 100},
        "no backups": {"audit_log_backups": 0},
        "too many backups": {"audit_log_backups": 101},
        "no address": {"trusted_proxies": ("proxy.example.com",)},
        "too many proxies": {"trusted_proxies": tuple(f"10.0.0.{i}" for i in range(65))},
        "a slash": {"protect": ("release/*",)},
        "a space": {"protect": ("v 1",)},
        "a long pattern": {"protect": ("v" * 129,)},
        "too many patterns": {"protect": tuple(f"p{i}*" for i in range(PROTECT_MAX + 1))},
    }
    for what, options in refused.items():
        with pytest.raises(UsageError):
            _config(tmp_path, **options)
        assert what
    assert TRUSTED_PROXIES_MAX == 64


def test_protected_patterns_match_whole_names_case_sensitively(tmp_path):
    config = _config(tmp_path, protect=("v*", "release-[0-9]*", "main"))
    assert protecting(config, "v1") == "v*" and protecting(config, "v") == "v*"
    assert protecting(config, "release-2") == "release-[0-9]*"
    assert protecting(config, "main") == "main"
    for name in ("V1", "xv1", "release-x", "mainline", "dev", "release-"):
        assert protecting(config, name) is None, name
    assert protecting(_config(tmp_path), "v1") is None  # nothing protected by default


@pytest.mark.parametrize(
    ("option", "said"),
    [
        (["--protect", "release/*"], "--protect 'release/*' is not a pattern"),
        (["--audit-log", "/nonexistent/dir/a.log"], "cannot append to it"),
        (["--trusted-proxy", "proxy.local"], "is not an IP address or network"),
        (["--audit-log-max-bytes", "lots"], "is not a size"),
    ],
)
def test_serve_refuses_bad_options_with_one_line_and_exit_2(option, said):
    from support.helpers import run_cli

    result = run_cli("serve", "--registry", "127.0.0.1:9/x", "--port", "0", *option)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and said in line
