"""Downloads sent by nginx (`serve --accel-redirect`): the gateway decides, nginx sends the
node cache's bytes.  Against the real registry, with Debian's nginx configured by the block of
docs/gateway.md's "Downloads sent by nginx" (only its addresses and the gateway's home put
in), huggingface_hub in subprocesses and raw HTTP for the headers.  What an independent
review found (a client's headers making nginx send something else than the audit line says,
a forwarding balancer following the header to nowhere, the home's other files behind the
internal location) is each a test here."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import requests
from support.gateway import HF_CLIENT, Gateway, hub_client
from support.helpers import build_and_push, tree_files

from modelpack.gateway.lane import MAX_CONNECTIONS
from modelpack.settings import Settings
from modelpack.testing import make_tiny_model
from modelpack.testing.registry import free_port
from modelpack.testing.replicas import HANDOFF_SECTION, Balancer, RedisServer

NAMESPACE = "handoff"
PREFIX = "/_modelpack_cache/"
UNTRUSTED_SOURCE = "127.0.0.2"  # a client reaching the gateway directly
PROXIED = 'modelpack_gateway_served_bytes_total{source="proxy"}'
PATH = "/team/handed/resolve/v1/blob.dat"
HEAD_SECONDS = 3  # --read-timeout: what a request head may take, on the threads and the lane


@pytest.fixture(scope="module")
def world(registry, tmp_path_factory):
    """(gateway, nginx in front of it, the model pushed as team/handed:v1, the audit log)."""
    work = tmp_path_factory.mktemp("handoff")
    model = make_tiny_model(work / "tiny")
    (model / "blob.dat").write_bytes(os.urandom(3 << 20))  # bigger than any header
    reference = f"{registry.host}/{NAMESPACE}/team/handed:v1"
    build_and_push(model, reference, Settings(home=work / "home", plain_http=True))
    audit = work / "audit.log"
    lane = free_port()
    args = ("--trusted-proxy", "127.0.0.1", "--accel-redirect", PREFIX, "--audit-log", str(audit),
            "--lane-port", str(lane), "--read-timeout", str(HEAD_SECONDS))  # fmt: skip
    gateway = Gateway(f"{registry.host}/{NAMESPACE}", work / "gateway", args).start()
    nginx = Balancer(work / "nginx", [gateway.url.removeprefix("http://")],
                     section=HANDOFF_SECTION, home=gateway.cache, lanes=[f"127.0.0.1:{lane}"])  # fmt: skip
    nginx.start()
    try:
        yield gateway, nginx, model, audit
    finally:
        nginx.stop()
        gateway.stop()


def _get(port: int, path: str, source: str = "127.0.0.1", **headers: str):
    """(status, headers (case-insensitive), body) of a GET sent from the local address
    ``source``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60,
                                            source_address=(source, 0))  # fmt: skip
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read()  # names: any case
    finally:
        connection.close()


def test_a_snapshot_through_nginx_is_sent_by_nginx_once_cached(world, tmp_path):
    gateway, nginx, model, _ = world
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
    gateway, nginx, model, _ = world
    data = (model / "blob.dat").read_bytes()
    path = "/team/handed/resolve/v1/blob.dat"
    requests.get(gateway.url + path, timeout=60).raise_for_status()  # in the node cache now
    direct = requests.head(gateway.url + path, timeout=60).headers
    status, headers, body = _get(nginx.port, path, Range="bytes=0-0")
    assert (status, body) == (206, data[:1])
    assert headers["Content-Range"] == f"bytes 0-0/{len(data)}"
    status, headers, body = _get(nginx.port, path, Range="bytes=1000-2999")
    assert (status, body) == (206, data[1000:3000]) and headers["Content-Length"] == "2000"
    status, headers, body = _get(nginx.port, path)
    assert (status, body) == (200, data)
    for name in ("X-Repo-Commit", "ETag", "X-Linked-Etag", "X-Linked-Size", "Content-Disposition",
                 "Cache-Control", "Vary"):  # fmt: skip
        assert headers[name] == direct[name], name
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "Last-Modified" not in headers  # the node cache's mtime: the gateway sends none
    status, headers, _ = _get(nginx.port, path, **{"If-None-Match": direct["ETag"]})
    assert status == 304  # the gateway's answer, not a file


def test_only_the_trusted_nginx_gets_the_header(world):
    gateway, _, model, _ = world
    path = PATH
    requests.get(gateway.url + path, timeout=60).raise_for_status()
    mapped = {"X-Modelpack-Accel-Redirect": PREFIX}  # what the handoff nginx says
    status, headers, body = _get(gateway.port, path)  # trusted, but not saying it maps PREFIX
    assert status == 200 and "X-Accel-Redirect" not in headers
    assert body == (model / "blob.dat").read_bytes()
    status, headers, body = _get(gateway.port, path, **mapped)  # from the trusted nginx
    assert status == 200 and body == b"" and headers["Content-Length"] == "0"
    assert headers["X-Accel-Redirect"].startswith(PREFIX)
    target = gateway.cache / headers["X-Accel-Redirect"].removeprefix(PREFIX)
    assert target.read_bytes() == (model / "blob.dat").read_bytes()
    status, headers, body = _get(gateway.port, path, source=UNTRUSTED_SOURCE, **mapped)
    assert status == 200 and "X-Accel-Redirect" not in headers
    assert body == (model / "blob.dat").read_bytes()
    status, headers, _ = _get(gateway.port, path.replace("/v1/", "/v9/"), **mapped)
    assert status == 404 and "X-Accel-Redirect" not in headers  # refusals stay the gateway's


def _downloads(audit: Path, client: str) -> list[dict]:
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    return [line for line in lines if line["action"] == "download" and line["client"] == client]


def _next_download(audit: Path, client: str, seen: int, timeout: float = 20.0) -> dict:
    """``client``'s download line after its first ``seen`` (a line is written once its
    answer went out, so possibly after the client had the bytes)."""
    deadline = time.monotonic() + timeout
    while len(found := _downloads(audit, client)) <= seen:
        assert time.monotonic() < deadline, found[-3:]
        time.sleep(0.05)
    return found[seen]


@pytest.mark.parametrize(
    "headers",
    [{"Range": "Bytes=0-9"}, {"Range": "bytes= 0-9"}, {"Range": "bytes=5-2"},
     {"Range": "bytes=abc"}, {"Range": "bytes=0-1,999999999-"}, {"Range": "bytes=0-1,5-6"},
     {"Range": "bytes=0-99999999999999999999999"}, {"Range": "bytes=0-0", "If-Range": '"other"'},
     {"If-Unmodified-Since": "Thu, 01 Jan 1970 00:00:01 GMT"}, {"If-None-Match": "*"},
     {"If-Match": "ETAG"}, {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"},
     {"Range": "bytes=1000-2999"}, {}],
)  # fmt: skip
def test_through_nginx_a_client_gets_what_the_gateway_answers_and_the_audit_says(world, headers):
    gateway, nginx, _, audit = world
    if headers.get("If-Match") == "ETAG":
        headers = {"If-Match": _get(gateway.port, PATH, UNTRUSTED_SOURCE)[1]["ETag"]}
    status, _, body = _get(gateway.port, PATH, UNTRUSTED_SOURCE, **headers)  # the gateway's bytes
    seen = len(_downloads(audit, "127.0.0.1"))  # the client behind nginx, not UNTRUSTED_SOURCE
    proxied = _get(nginx.port, PATH, **headers)
    assert (proxied[0], proxied[2]) == (status, body), headers
    line = _next_download(audit, "127.0.0.1", seen)
    assert (line["status"], line["bytes"]) == (status, len(body)), (headers, line)


def test_a_forwarding_balancer_named_by_trusted_proxy_still_gets_the_file(world, tmp_path):
    """The replicas' balancer (a trusted proxy for X-Forwarded-For) has no internal location:
    it must get the bytes, not a header it would follow to nowhere."""
    gateway, _, model, _ = world
    balancer = Balancer(tmp_path / "balancer", [gateway.url.removeprefix("http://")]).start()
    try:
        status, headers, body = _get(balancer.port, PATH)
    finally:
        balancer.stop()
    assert (status, body) == (200, (model / "blob.dat").read_bytes())


def test_the_internal_location_maps_no_other_file_of_the_home(world, tmp_path):
    """Whatever answers nginx on the gateway's address (here an impostor answering every
    request with X-Accel-Redirect to it) gets none of the home's other files out of nginx."""
    gateway, _, _, _ = world

    class Impostor(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("X-Accel-Redirect", PREFIX + self.path.lstrip("/"))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", free_port()), Impostor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    impostor = [f"127.0.0.1:{server.server_address[1]}"]
    nginx = Balancer(tmp_path / "impostor", impostor, section=HANDOFF_SECTION,
                     home=gateway.cache, lanes=impostor).start()  # fmt: skip
    try:
        secrets = [p for p in gateway.cache.iterdir() if p.is_file() and p.stat().st_size]
        assert {"audit.key"} <= {p.name for p in secrets}, secrets
        for path in secrets:
            status, _, body = _get(nginx.port, "/" + path.name)
            assert status in (404, 500) and body != path.read_bytes(), path
        # What it does map is the model's bytes only, by the paths the gateway names.
        blob = next(p for p in (gateway.cache / "store" / "blobs").rglob("*") if p.is_file())
        status, _, body = _get(nginx.port, "/" + blob.relative_to(gateway.cache).as_posix())
        assert (status, body) == (200, blob.read_bytes())
    finally:
        nginx.stop()
        server.shutdown()


# -- the download lane (serve --lane-port) -------------------------------------------------

LANED = " lane "  # the log line of a request the lane answered


def _lane_port(nginx: Balancer) -> int:
    return int(nginx.lanes[0].rsplit(":", 1)[1])


def _new_lines(gateway: Gateway, before: int, count: int) -> list[str]:
    """The next ``count`` download lines of ``gateway``'s log after its first ``before``."""
    deadline = time.monotonic() + 20
    while len(lines := _download_lines(gateway)) < before + count:
        assert time.monotonic() < deadline, lines[before:]
        time.sleep(0.05)
    return lines[before:]


def _download_lines(gateway: Gateway) -> list[str]:
    return [line for line in gateway.log().splitlines() if f" GET {PATH} " in line]


def test_the_lane_answers_what_is_kept_and_sends_the_rest_back_to_the_threads(world):
    gateway, nginx, model, audit = world
    data = (model / "blob.dat").read_bytes()
    requests.get(gateway.url + PATH, timeout=60).raise_for_status()  # in the node cache now
    # Credentials this gateway has no answer kept for: the lane sends the request back to
    # nginx, the threads ask the registry and answer it; the next one is the lane's.
    token = {"Authorization": f"Bearer lane-{time.monotonic_ns()}"}
    before, seen = len(_download_lines(gateway)), len(_downloads(audit, "127.0.0.1"))
    for _ in range(3):
        assert _get(nginx.port, PATH, **token)[::2] == (200, data)
    first, *rest = _new_lines(gateway, before, 3)
    assert LANED not in first and " proxy " in first, first
    assert all(LANED in line and " proxy " in line for line in rest), rest
    # One audit line per download, whoever answered it: none for the request sent back.
    _next_download(audit, "127.0.0.1", seen + 2)
    time.sleep(0.5)
    assert len(_downloads(audit, "127.0.0.1")) == seen + 3
    # Another client's credentials are never answered from the first one's kept answer.
    before = len(_download_lines(gateway))
    other = f"Bearer someone-else-{time.monotonic_ns()}"
    assert _get(nginx.port, PATH, Authorization=other)[::2] == (200, data)
    assert LANED not in _new_lines(gateway, before, 1)[0]
    # A Range and a conditional request through the lane: nginx's answer, the audit's bytes.
    status, headers, body = _get(nginx.port, PATH, Range="bytes=10-19", **token)
    assert (status, body, headers["Content-Range"]) == (
        206,
        data[10:20],
        f"bytes 10-19/{len(data)}",
    )
    status, _, body = _get(nginx.port, PATH, **{"If-None-Match": headers["ETag"]}, **token)
    assert (status, body) == (304, b"")


def test_the_lane_answers_the_trusted_nginx_only_and_never_with_bytes(world):
    gateway, nginx, model, _ = world
    port = _lane_port(nginx)
    requests.get(gateway.url + PATH, timeout=60).raise_for_status()
    _get(nginx.port, PATH)  # the threads keep this client's answer for the lane
    mapped = {"X-Modelpack-Accel-Redirect": PREFIX}
    status, headers, body = _get(port, PATH, **mapped)
    assert (status, body, headers["Content-Length"]) == (200, b"", "0")
    target = gateway.cache / headers["X-Accel-Redirect"].removeprefix(PREFIX)
    assert target.read_bytes() == (model / "blob.dat").read_bytes()
    # Without the header nginx sets (or with a look-alike name) the file is the threads'.
    for asked in ({}, {"X-Modelpack-Accel-Redirect": "/elsewhere/"},
                  {"X_Modelpack_Accel_Redirect": PREFIX}):  # fmt: skip
        status, headers, body = _get(port, PATH, **asked)
        assert (status, body, headers["X-Accel-Redirect"]) == (200, b"", "@modelpack_gateway")
    for path in ("/api/models", "/team/handed/resolve/v9/blob.dat", "/healthz", PREFIX + "x"):
        status, headers, body = _get(port, path, **mapped)  # every other answer: the threads'
        assert (status, body, headers["X-Accel-Redirect"]) == (200, b"", "@modelpack_gateway")
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):  # closed at once
        _get(port, PATH, source=UNTRUSTED_SOURCE, **mapped)
    for method, status in (("POST", 405), ("GET", 400)):  # a body, or a method not read here
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request(method, PATH, body=b"{}", headers=mapped)
            assert connection.getresponse().status == status, method
        finally:
            connection.close()
    assert _raw_answer(port, PATH, "X-Big: " + "a" * (256 << 10)).split(b" ")[1:2] in ([], [b"400"])
    assert _raw_answer(port, PATH, "X-Big: " + "a" * (20 << 10))[:12] == b"HTTP/1.1 431"
    assert _raw_answer(port, PATH, "X-Big: " + "a" * 1000)[:12] == b"HTTP/1.1 200"
    # The gateway's own port still answers all of it.
    assert requests.get(gateway.url + "/healthz", timeout=10).status_code == 200


def _raw_answer(port: int, path: str, header: str) -> bytes:
    """The first bytes answered to a GET with ``header`` and the mapped prefix (b"" when the
    server closed the connection before reading the whole head)."""
    head = (f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Modelpack-Accel-Redirect: {PREFIX}\r\n"
            f"{header}\r\n\r\n").encode()  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(head)
            return sock.recv(64)
        except (ConnectionResetError, BrokenPipeError):
            return b""


def test_the_lane_drops_idle_and_slow_heads_and_past_its_connections(world):
    gateway, nginx, model, _ = world
    port, data = _lane_port(nginx), (model / "blob.dat").read_bytes()
    idle = socket.create_connection(("127.0.0.1", port), timeout=30)
    slow = socket.create_connection(("127.0.0.1", port), timeout=30)
    slow.sendall(b"GET " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n")  # never ends
    started = time.monotonic()
    assert idle.recv(1) == b"" and slow.recv(1) == b""  # closed by the lane
    assert HEAD_SECONDS - 0.5 <= time.monotonic() - started < HEAD_SECONDS + 5
    idle.close(), slow.close()
    held = [
        socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(MAX_CONNECTIONS)
    ]
    try:
        extra = socket.create_connection(("127.0.0.1", port), timeout=30)
        assert extra.recv(1) == b""  # past the bound: closed as it was accepted
        extra.close()
        # Meanwhile nginx sends the downloads the lane does not take to the threads.
        assert _get(nginx.port, PATH)[::2] == (200, data)
    finally:
        for sock in held:
            sock.close()


def test_nginx_sends_downloads_to_the_threads_while_the_lane_takes_none(world, tmp_path):
    gateway, _, model, _ = world
    nowhere = f"127.0.0.1:{free_port()}"  # a lane that is down (a worker restarting)
    nginx = Balancer(tmp_path / "nginx", [gateway.url.removeprefix("http://")],
                     section=HANDOFF_SECTION, home=gateway.cache, lanes=[nowhere]).start()  # fmt: skip
    try:
        for _ in range(3):
            assert _get(nginx.port, PATH)[::2] == (200, (model / "blob.dat").read_bytes())
    finally:
        nginx.stop()


def test_a_download_in_steady_use_stays_on_the_lane_past_the_answers_ttl(world, registry, tmp_path):
    """The registry's kept answer is asked again in the background near its end, so a
    download asked every 0.1 s is never sent back when it ends (it was, every ttl: every
    request in flight went to the threads at once)."""
    _, _, model, _ = world
    lane, ttl = free_port(), 2
    args = ("--trusted-proxy", "127.0.0.1", "--accel-redirect", PREFIX, "--lane-port", str(lane),
            "--auth-cache-ttl", str(ttl))  # fmt: skip
    gateway = Gateway(f"{registry.host}/{NAMESPACE}", tmp_path / "gateway", args).start()
    nginx = Balancer(tmp_path / "nginx", [gateway.url.removeprefix("http://")],
                     section=HANDOFF_SECTION, home=gateway.cache, lanes=[f"127.0.0.1:{lane}"])  # fmt: skip
    try:
        nginx.start()
        data, token = (model / "blob.dat").read_bytes(), {"Authorization": "Bearer steady"}
        started = time.monotonic()
        while time.monotonic() - started < 3.3 * ttl:  # three ends of a kept answer
            assert _get(nginx.port, PATH, **token)[::2] == (200, data)
            time.sleep(0.1)
        first, *rest = _download_lines(gateway)
        assert LANED not in first and len(rest) > 30  # the first asks the registry
        # Without the refresh, three went back (one per end); a loaded machine may let one
        # refresh come late.
        assert sum(LANED not in line for line in rest) <= 1, "\n".join(rest)
    finally:
        nginx.stop()
        gateway.stop()


def test_with_two_workers_the_lane_answers_once_the_threads_answered(world, registry, tmp_path):
    """nginx's connection to the lane and the one to the threads may reach different worker
    processes: a request sent back also has the lane's own process keep what it needs."""
    _, _, model, _ = world
    redis = RedisServer(tmp_path / "redis").start()
    lane = free_port()
    args = ("--trusted-proxy", "127.0.0.1", "--accel-redirect", PREFIX, "--lane-port", str(lane),
            "--workers", "2", "--redis", redis.url)  # fmt: skip
    gateway = Gateway(f"{registry.host}/{NAMESPACE}", tmp_path / "gateway", args).start()
    nginx = Balancer(tmp_path / "nginx", [gateway.url.removeprefix("http://")],
                     section=HANDOFF_SECTION, home=gateway.cache, lanes=[f"127.0.0.1:{lane}"],
                     worker_processes=2)  # fmt: skip
    try:
        nginx.start()
        for name in ("blob.dat", "config.json"):  # a blob of its own, a file of a tree
            data, path = (model / name).read_bytes(), PATH.replace("blob.dat", name)
            for _ in range(30):
                assert _get(nginx.port, path)[::2] == (200, data)
            lines = [line for line in gateway.log().splitlines() if f" GET {path} " in line]
            laned = sum(LANED in line for line in lines)
            assert len(lines) == 30 and laned >= 20, "\n".join(lines)
        # A stalled Redis holds the lane's loop for its short timeout, not the threads' 10 s:
        # the download goes back to the threads.
        redis.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            status, headers, _ = _get(lane, PATH, **{"X-Modelpack-Accel-Redirect": PREFIX})
            assert (status, headers["X-Accel-Redirect"]) == (200, "@modelpack_gateway")
            assert time.monotonic() - started < 3
        finally:
            redis.process.send_signal(signal.SIGCONT)
    finally:
        nginx.stop()
        gateway.stop()
        redis.stop()
