"""Downloads sent by nginx (`serve --accel-redirect`): the gateway decides, nginx sends the
node cache's bytes.  Against the real registry, with Debian's nginx configured by the block of
docs/gateway.md's "Downloads sent by nginx" (only its addresses and the gateway's home put
in), huggingface_hub in subprocesses and raw HTTP for the headers."""

from __future__ import annotations

import http.client
import os
import re
from pathlib import Path

import pytest
import requests
from support.gateway import HF_CLIENT, Gateway, hub_client
from support.helpers import build_and_push, tree_files

from modelpack.settings import Settings
from modelpack.testing import make_tiny_model
from modelpack.testing.replicas import HANDOFF_SECTION, Balancer

NAMESPACE = "handoff"
PREFIX = "/_modelpack_cache/"
UNTRUSTED_SOURCE = "127.0.0.2"  # a client reaching the gateway directly
PROXIED = 'modelpack_gateway_served_bytes_total{source="proxy"}'


@pytest.fixture(scope="module")
def world(registry, tmp_path_factory):
    """(gateway, nginx in front of it, the model pushed as team/handed:v1)."""
    work = tmp_path_factory.mktemp("handoff")
    model = make_tiny_model(work / "tiny")
    (model / "blob.dat").write_bytes(os.urandom(3 << 20))  # bigger than any header
    reference = f"{registry.host}/{NAMESPACE}/team/handed:v1"
    build_and_push(model, reference, Settings(home=work / "home", plain_http=True))
    args = ("--trusted-proxy", "127.0.0.1", "--accel-redirect", PREFIX)
    gateway = Gateway(f"{registry.host}/{NAMESPACE}", work / "gateway", args).start()
    nginx = Balancer(work / "nginx", [gateway.url.removeprefix("http://")],
                     section=HANDOFF_SECTION, home=gateway.cache)  # fmt: skip
    nginx.start()
    try:
        yield gateway, nginx, model
    finally:
        nginx.stop()
        gateway.stop()


def _get(port: int, path: str, source: str = "127.0.0.1", **headers: str):
    """(status, headers, body) of a GET sent from the local address ``source``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60,
                                            source_address=(source, 0))  # fmt: skip
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_a_snapshot_through_nginx_is_sent_by_nginx_once_cached(world, tmp_path):
    gateway, nginx, model = world
    ops = [["snapshot", "team/handed", "v1"]]
    (cold,) = hub_client(nginx.url, HF_CLIENT, ops, tmp_path / "cold")
    assert tree_files(Path(cold["path"])) == tree_files(model)
    gateway.wait_idle()
    before = gateway.metrics()[PROXIED]
    (warm,) = hub_client(nginx.url, HF_CLIENT, ops, tmp_path / "warm")
    assert tree_files(Path(warm["path"])) == tree_files(model)
    # Every file of the warm download was handed to nginx: the gateway sent none of it.
    handed = gateway.metrics()[PROXIED] - before
    assert handed == sum(len(data) for data in tree_files(model).values())
    log = gateway.wait_for_log(r"GET /team/handed/resolve/\S+/blob.dat 200 \d+B proxy ")
    assert re.search(rf"GET /team/handed/resolve/\S+/blob.dat 200 {3 << 20}B proxy ", log)
    # nginx never passes the header on, and its internal prefix is no route of its own.
    status, headers, body = _get(nginx.port, "/team/handed/resolve/v1/blob.dat")
    assert status == 200 and "X-Accel-Redirect" not in headers
    assert body == (model / "blob.dat").read_bytes()
    status, _, _ = _get(nginx.port, PREFIX + "store/")
    assert status == 404
    files = sorted(p for p in gateway.cache.rglob("*") if p.is_file() and p.stat().st_size)
    assert files, "the node cache holds the model"
    status, _, body = _get(nginx.port, PREFIX + files[0].relative_to(gateway.cache).as_posix())
    assert status == 404 and body != files[0].read_bytes()


def test_ranges_and_the_hub_headers_through_nginx(world):
    gateway, nginx, model = world
    data = (model / "blob.dat").read_bytes()
    path = "/team/handed/resolve/v1/blob.dat"
    requests.get(gateway.url + path, timeout=60).raise_for_status()  # in the node cache now
    direct = requests.head(gateway.url + path, timeout=60).headers
    status, headers, body = _get(nginx.port, path, Range="bytes=0-0")
    assert (status, body) == (206, data[:1])
    assert headers["Content-Range"] == f"bytes 0-0/{len(data)}"
    status, headers, body = _get(nginx.port, path, Range="bytes=1000-2999")
    assert (status, body) == (206, data[1000:3000]) and headers["Content-Length"] == "2000"
    status, headers, body = _get(nginx.port, path, Range="bytes=0-1,5-6")
    assert (status, body) == (200, data)  # several ranges: the whole file, as the gateway does
    for name in ("X-Repo-Commit", "ETag", "X-Linked-Etag", "X-Linked-Size", "Content-Disposition",
                 "Cache-Control", "Vary"):  # fmt: skip
        assert headers[name] == direct[name], name
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, _ = _get(nginx.port, path, **{"If-None-Match": direct["ETag"]})
    assert status == 304  # the gateway's answer, not a file


def test_only_the_trusted_proxy_gets_the_header(world):
    gateway, _, model = world
    path = "/team/handed/resolve/v1/blob.dat"
    requests.get(gateway.url + path, timeout=60).raise_for_status()
    status, headers, body = _get(gateway.port, path)  # from 127.0.0.1: the trusted proxy
    assert status == 200 and body == b"" and headers["Content-Length"] == "0"
    assert headers["X-Accel-Redirect"].startswith(PREFIX)
    target = gateway.cache / headers["X-Accel-Redirect"].removeprefix(PREFIX)
    assert target.read_bytes() == (model / "blob.dat").read_bytes()
    status, headers, body = _get(gateway.port, path, source=UNTRUSTED_SOURCE)
    assert status == 200 and "X-Accel-Redirect" not in headers
    assert body == (model / "blob.dat").read_bytes()
    status, headers, _ = _get(gateway.port, path.replace("/v1/", "/v9/"))
    assert status == 404 and "X-Accel-Redirect" not in headers  # refusals stay the gateway's
