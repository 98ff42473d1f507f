"""The upstream import's egress rules (gateway/core/egress.py), without a network."""

import socket

import pytest

from modelpack.gateway.core.egress import (
    EgressPolicy,
    EgressRefusedError,
    global_addresses,
    is_global_address,
)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.0.0.2", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
        "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1",
        "fd00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::", "64:ff9b::a00:1",
        "not an address",
    ],
)  # fmt: skip
def test_addresses_that_are_not_global_are_refused(address):
    assert not is_global_address(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "64:ff9b::808:808"])
def test_global_addresses_are_allowed(address):
    assert is_global_address(address)


POLICY = EgressPolicy("http://127.0.0.1:8080", ("*.hf.co", "cdn.example"))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/org/x/resolve/main/a",  # the upstream as configured
        "http://127.0.0.1:9999/other-port",  # its host (its addresses are checked at connect)
        "https://cdn-lfs-us-1.hf.co/repos/x?sig=1",
        "http://cdn.example/x",
    ],
)
def test_urls_the_import_may_fetch(url):
    POLICY.check_url(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.2:8080/", "neither the upstream's host"),
        ("http://169.254.169.254/latest/meta-data", "neither the upstream's host"),
        ("http://evil.hf.co.example/", "neither the upstream's host"),
        ("file:///etc/passwd", "not an http"),
        ("http://[::1", "not an http"),
    ],
)
def test_urls_the_import_refuses(url, reason):
    with pytest.raises(EgressRefusedError, match=reason):
        POLICY.check_url(url)


def test_an_https_upstream_is_never_followed_to_plain_http():
    with pytest.raises(EgressRefusedError, match="downgrade"):
        EgressPolicy("https://huggingface.co").check_url("http://cdn-lfs.hf.co/x")


def test_a_name_with_any_non_global_address_is_refused(monkeypatch):
    """A DNS answer that mixes a public address with an internal one: refused whole, so
    which of the two a connection would use does not matter."""
    answers = {"mixed.example": ["93.184.216.34", "127.0.0.1"], "public.example": ["1.1.1.1"]}

    def getaddrinfo(host, port, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(EgressRefusedError, match="127.0.0.1, not a global address"):
        global_addresses("mixed.example", 443)
    assert global_addresses("public.example", 443) == ["1.1.1.1"]
