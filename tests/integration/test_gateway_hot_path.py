"""What a cached download no longer does on every request still holds (docs/benchmarks.md,
The gateway beside nginx): the node cache's tree is checked whole once and then one file's
seal per request (read/pullthrough.py), so a file written to after it was verified must
still never be served."""

from __future__ import annotations

import os
import re
import socket

import requests
from support.gateway import Gateway
from support.helpers import build_and_push

from modelpack.settings import Settings
from modelpack.testing import make_tiny_model


def test_a_cached_file_written_to_after_it_was_verified_is_never_served(registry, tmp_path):
    model = make_tiny_model(tmp_path / "model")
    settings = Settings(home=tmp_path / "home", plain_http=True)
    build_and_push(model, f"{registry.host}/hot/org/m:v1", settings)
    data = (model / "config.json").read_bytes()
    gateway = Gateway(f"{registry.host}/hot", tmp_path / "gateway").start()
    try:
        url = f"{gateway.url}/org/m/resolve/v1/config.json"
        assert requests.get(url, timeout=60).content == data
        gateway.wait_idle()  # the whole tree is in the node cache now
        for _ in range(3):  # served from the tree, its seals kept after the first
            assert requests.get(url, timeout=60).content == data
        gateway.wait_for_log(r"GET /org/m/resolve/v1/config.json 200 \d+B cache")
        trees = [p for p in (gateway.cache / "models").rglob("config.json") if p.is_file()]
        assert trees, "no tree in the node cache"
        for path in trees:  # written through its name (a hardlink of the store's blob too)
            os.chmod(path, 0o644)
            with open(path, "r+b") as f:
                f.write(b"X" * len(data))
        for _ in range(3):
            answer = requests.get(url, timeout=60)
            assert answer.status_code != 200 or answer.content == data, answer.content[:40]
            assert b"XXXX" not in answer.content
    finally:
        gateway.stop()


def _answer(sock: socket.socket, buffered: bytes) -> tuple[bytes, bytes]:
    """(one whole answer's head, what was read past it) from a keep-alive socket."""
    data = buffered
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(rest) < length:
        rest += sock.recv(65536)
    return head, rest[length:]


def test_a_client_asking_again_at_once_never_keeps_a_thread_from_others(tmp_path):
    """A thread that answered a keep-alive request takes the same client's next one at
    once when it is there (worker.py, LINGER) only while no other connection waits for a
    thread: with one thread, a client with 1000 requests pipelined does not keep another
    client's request waiting until all of them are answered (the log's order says)."""
    gateway = Gateway("127.0.0.1:9/none", tmp_path / "gateway", ("--threads", "1")).start()
    count, started = 1000, len(gateway.log())
    try:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=60) as busy:
            busy.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * count)
            head, rest = _answer(busy, b"")  # its thread is answering them now
            assert head.startswith(b"HTTP/1.1 200")
            with socket.create_connection(("127.0.0.1", gateway.port), timeout=60) as other:
                other.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                assert _answer(other, b"")[0].startswith(b"HTTP/1.1 200")
            for _ in range(count - 1):
                head, rest = _answer(busy, rest)
                assert head.startswith(b"HTTP/1.1 200")
        log = gateway.wait_for_log(r"GET /metrics 200")[started:]
        order = re.findall(r"GET (/healthz|/metrics) 200", log)
        assert order.count("/healthz") == count
        assert order.index("/metrics") < count // 2, order.index("/metrics")
    finally:
        gateway.stop()
