"""What a cached download no longer does on every request still holds (docs/benchmarks.md,
The gateway beside nginx): the node cache's tree is checked whole once and then one file's
seal per request (read/pullthrough.py), so a file written to after it was verified must
still never be served."""

from __future__ import annotations

import os

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
