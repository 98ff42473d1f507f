"""``serve --accel-redirect``: which downloads are handed to the proxy in front, and the
refusals of the option (tests/integration/test_gateway_handoff.py runs it behind nginx)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.helpers import serve_refusal

from modelpack.errors import UsageError
from modelpack.gateway.core.config import GatewayConfig
from modelpack.gateway.core.http import Request
from modelpack.gateway.read.handoff import CONDITIONAL, Handoff
from modelpack.settings import Settings

PREFIX = "/_modelpack_cache/"


def asked(address: str = "127.0.0.1", prefix: str | None = PREFIX, **headers: str) -> Request:
    """A GET from ``address`` through the handoff nginx (which names ``prefix``)."""
    environ = {"REMOTE_ADDR": address, "PATH_INFO": "/o/n/resolve/main/x"}
    if prefix is not None:
        environ["HTTP_X_MODELPACK_ACCEL_REDIRECT"] = prefix
    for name, value in headers.items():
        environ["HTTP_" + name.upper()] = value
    return Request.from_environ(environ)


def test_a_cached_file_is_handed_only_to_the_trusted_nginx(tmp_path):
    handoff = Handoff(PREFIX, tmp_path, ("10.0.0.5/32", "::1/128"))
    blob = tmp_path / "store" / "blobs" / "sha256" / ("ab" * 32)
    assert handoff.uri(asked("10.0.0.5"), blob, False) == PREFIX + "store/blobs/sha256/" + "ab" * 32
    assert handoff.uri(asked("::1"), blob, False) is not None
    assert handoff.uri(asked("::ffff:10.0.0.5"), blob, False) is not None  # IPv4 in IPv6
    for untrusted in ("10.0.0.6", "127.0.0.1", "", "not an address", "10.0.0.5, 1.2.3.4"):
        assert handoff.uri(asked(untrusted), blob, False) is None, untrusted
    # A trusted balancer that does not map the prefix (it only forwards) gets the bytes.
    assert handoff.uri(asked("10.0.0.5", prefix=None), blob, False) is None
    assert handoff.uri(asked("10.0.0.5", prefix="/other/"), blob, False) is None
    assert Handoff(None, tmp_path, ("10.0.0.5/32",)).uri(asked("10.0.0.5"), blob, False) is None


@pytest.mark.parametrize("header", CONDITIONAL)
def test_a_conditional_request_is_answered_by_the_gateway(tmp_path, header):
    handoff = Handoff(PREFIX, tmp_path, ("127.0.0.1",))
    blob = tmp_path / "models" / "sha256" / ("ab" * 32) / "model.safetensors"
    assert handoff.uri(asked(), blob, False) is not None
    key = header.replace("-", "_")
    assert handoff.uri(asked(**{key: '"x"'}), blob, False) is None


@pytest.mark.parametrize(
    ("value", "ranged", "handed"),
    [("bytes=0-0", True, True), ("bytes=100-", True, True), ("bytes=-100", True, True),
     ("bytes=5-2", False, False), ("Bytes=0-9", False, False), ("bytes= 0-9", False, False),
     ("bytes=0-1,5-6", False, False), ("bytes=abc", False, False),
     ("bytes=0-99999999999999999999999", True, False), ("bytes=0-9", False, False)],
)  # fmt: skip
def test_only_a_plain_range_the_gateway_answers_as_one_is_handed_off(tmp_path, value, ranged,
                                                                     handed):  # fmt: skip
    handoff = Handoff(PREFIX, tmp_path, ("127.0.0.1",))
    blob = tmp_path / "store" / "blobs" / "sha256" / ("ab" * 32)
    assert (handoff.uri(asked(Range=value), blob, ranged) is not None) is handed


@pytest.mark.parametrize(
    "relative",
    ["models/x/name with space.bin", "models/x/caf\u00e9.bin", "models/x/a?b", "models/x/%2e",
     "models/.hidden/x", "models/x/a;b", "models/x/a\nb", "audit.key", "cache.sqlite",
     "store/index.json", "uploads/x/part", "xet/verified/x", "modelsx/y"],
)  # fmt: skip
def test_a_path_nginx_does_not_map_plainly_is_sent_by_the_gateway(tmp_path, relative):
    handoff = Handoff(PREFIX, tmp_path, ("127.0.0.1",))
    assert handoff.uri(asked(), tmp_path / relative, False) is None
    assert handoff.uri(asked(), tmp_path / "models/x/model-00001.safetensors", False)


def test_a_file_outside_the_home_is_sent_by_the_gateway(tmp_path):
    handoff = Handoff(PREFIX, tmp_path / "home", ("127.0.0.1",))
    assert handoff.uri(asked(), tmp_path / "elsewhere" / "models" / "blob", False) is None
    assert handoff.uri(asked(), Path("/etc/passwd"), False) is None
    assert handoff.uri(asked(), tmp_path / "home" / "models" / ".." / ".." / "x", False) is None


@pytest.mark.parametrize("how", ["symlink", "relative"])
def test_a_home_through_a_symlink_or_relative_still_hands_off(tmp_path, monkeypatch, how):
    real = tmp_path / "real"
    real.mkdir()
    if how == "symlink":
        home = tmp_path / "link"
        home.symlink_to(real)
    else:
        monkeypatch.chdir(tmp_path)
        home = Path("real")
    settings = Settings(home=home)
    cached = settings.models_dir / "sha256" / ("ab" * 32) / "x.bin"  # as the node cache names it
    handoff = Handoff(PREFIX, settings.home, ("127.0.0.1",))
    assert handoff.uri(asked(), cached, False) == PREFIX + f"models/sha256/{'ab' * 32}/x.bin"


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
    assert "--accel-redirect" in serve_refusal(tmp_path, *args)
