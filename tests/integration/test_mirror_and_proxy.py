"""Pull-through caches (a second distribution in proxy mode) and HTTP proxies."""

import pytest
from support.helpers import tree_files
from support.http_proxy import HttpProxy

import modelpack
from modelpack.testing import RegistryServer


@pytest.fixture
def upstream_with_model(registry, tiny_model, settings):
    ref = f"{registry.host}/mirrored/tiny:v1"
    modelpack.build(tiny_model, ref, settings=settings)
    modelpack.push(ref, settings=settings)
    return ref


def test_pull_through_a_mirror_then_fall_back_when_it_stops(
    registry, upstream_with_model, tiny_model, settings, tmp_path, monkeypatch
):
    mirror = RegistryServer(extra_config=f"proxy:\n  remoteurl: {registry.url}\n").start()
    try:
        monkeypatch.setenv("MODELPACK_MIRRORS", f"{registry.host}=http://{mirror.host}")
        node = settings.with_overrides(home=tmp_path / "node-a")
        out = modelpack.pull(upstream_with_model, tmp_path / "via-mirror", settings=node)
        assert tree_files(out) == tree_files(tiny_model)
        log = mirror.access_log()
        assert "GET /v2/mirrored/tiny/blobs/sha256:" in log  # the bytes came through the mirror
    finally:
        mirror.cleanup()
    # The mirror is gone: the same pull goes to the upstream registry.
    node = settings.with_overrides(home=tmp_path / "node-b")
    out = modelpack.pull(upstream_with_model, tmp_path / "via-upstream", settings=node)
    assert tree_files(out) == tree_files(tiny_model)


def test_mirror_from_the_config_file_with_a_path_prefix(
    registry, upstream_with_model, tiny_model, settings, tmp_path
):
    # A Harbor proxy-cache project serves upstream repositories under its own name:
    # harbor.example.com/hub-cache/<repository>.  Here a rewriting proxy plays Harbor.
    harbor = HttpProxy(
        upstream=registry.url, rewrite=lambda p: p.replace("/v2/hub-cache/", "/v2/", 1)
    ).start()
    try:
        config = tmp_path / "config.toml"
        config.write_text(
            f'[registries."{registry.host}"]\nmirrors = ["http://{harbor.host}/hub-cache"]\n'
        )
        out = modelpack.pull(
            upstream_with_model,
            tmp_path / "out",
            settings=settings.with_overrides(config_file=config),
        )
        assert tree_files(out) == tree_files(tiny_model)
        assert any(
            e.path.startswith("/v2/hub-cache/mirrored/tiny/blobs/") for e in harbor.exchanges
        )
    finally:
        harbor.stop()


def test_https_proxy_environment_is_honoured(
    registry, upstream_with_model, tiny_model, settings, tmp_path, monkeypatch
):
    forward = HttpProxy(upstream=None).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", forward.url)
        monkeypatch.setenv("NO_PROXY", "")
        # A name other than the bare loopback IP, so nothing bypasses the proxy by default.
        ref = upstream_with_model.replace("127.0.0.1", "localhost")
        out = modelpack.pull(ref, tmp_path / "proxied", settings=settings)
        assert tree_files(out) == tree_files(tiny_model)
        assert any("/blobs/sha256:" in e.path for e in forward.exchanges)
        forward.exchanges.clear()
        monkeypatch.setenv("NO_PROXY", "localhost")
        modelpack.pull(ref, tmp_path / "direct", settings=settings)
        assert forward.exchanges == []
    finally:
        forward.stop()
