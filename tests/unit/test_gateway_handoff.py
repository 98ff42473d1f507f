"""``serve --accel-redirect``: which downloads are handed to the proxy in front, and the
refusals of the option (tests/integration/test_gateway_handoff.py runs it behind nginx)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelpack.errors import UsageError
from modelpack.gateway.core.config import GatewayConfig
from modelpack.gateway.read.handoff import Handoff
from modelpack.settings import Settings

PREFIX = "/_modelpack_cache/"


def peer(address: str) -> dict[str, str]:
    return {"REMOTE_ADDR": address}


def test_a_cached_file_is_handed_only_to_a_trusted_peer(tmp_path):
    handoff = Handoff(PREFIX, tmp_path, ("10.0.0.5/32", "::1/128"))
    blob = tmp_path / "store" / "sha256" / ("ab" * 32)
    assert handoff.uri(peer("10.0.0.5"), blob) == PREFIX + "store/sha256/" + "ab" * 32
    assert handoff.uri(peer("::1"), blob) is not None
    assert handoff.uri(peer("::ffff:10.0.0.5"), blob) is not None  # IPv4 in IPv6: the same
    for untrusted in ("10.0.0.6", "127.0.0.1", "", "not an address", "10.0.0.5, 1.2.3.4"):
        assert handoff.uri(peer(untrusted), blob) is None, untrusted
    assert handoff.uri({}, blob) is None
    assert Handoff(None, tmp_path, ("10.0.0.5/32",)).uri(peer("10.0.0.5"), blob) is None


@pytest.mark.parametrize(
    "relative",
    ["models/x/name with space.bin", "models/x/caf\u00e9.bin", "models/x/a?b", "models/x/%2e",
     "models/.hidden/x", "models/x/a;b", "models/x/a\nb"],
)  # fmt: skip
def test_a_path_nginx_would_need_escaped_is_sent_by_the_gateway(tmp_path, relative):
    handoff = Handoff(PREFIX, tmp_path, ("127.0.0.1",))
    assert handoff.uri(peer("127.0.0.1"), tmp_path / relative) is None
    assert handoff.uri(peer("127.0.0.1"), tmp_path / "models/x/model-00001.safetensors")


def test_a_file_outside_the_home_is_sent_by_the_gateway(tmp_path):
    handoff = Handoff(PREFIX, tmp_path / "home", ("127.0.0.1",))
    assert handoff.uri(peer("127.0.0.1"), tmp_path / "elsewhere" / "blob") is None
    assert handoff.uri(peer("127.0.0.1"), Path("/etc/passwd")) is None


@pytest.mark.parametrize(
    "prefix",
    ["_cache/", "/_cache", "/", "/../", "/a/../b/", "/a b/", "/caf\u00e9/", "/a?x/", "//"],
)
def test_the_config_refuses_a_prefix_that_is_no_plain_path(tmp_path, prefix):
    settings = Settings(home=tmp_path, plain_http=True)
    with pytest.raises(UsageError, match="--accel-redirect"):
        GatewayConfig("127.0.0.1:9/gw", settings=settings, trusted_proxies=("127.0.0.1",),
                      accel_redirect=prefix)  # fmt: skip


def test_the_config_needs_a_trusted_proxy(tmp_path):
    settings = Settings(home=tmp_path, plain_http=True)
    with pytest.raises(UsageError, match="needs --trusted-proxy"):
        GatewayConfig("127.0.0.1:9/gw", settings=settings, accel_redirect=PREFIX)
    config = GatewayConfig("127.0.0.1:9/gw", settings=settings, trusted_proxies=("127.0.0.1",),
                           accel_redirect="/a.b/_c-d/")  # fmt: skip
    assert config.accel_redirect == "/a.b/_c-d/"
    unset = GatewayConfig("127.0.0.1:9/gw", settings=settings, accel_redirect="")
    assert unset.accel_redirect is None


@pytest.mark.parametrize(
    "args", [["--accel-redirect", PREFIX], ["--accel-redirect", "/../", "--trusted-proxy", "::1"]]
)
def test_serve_refuses_with_one_line_and_exit_2(tmp_path, args):
    result = subprocess.run(
        [sys.executable, "-m", "modelpack", "serve", "--registry", "127.0.0.1:9/gw",
         "--cache", str(tmp_path), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "--accel-redirect" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
