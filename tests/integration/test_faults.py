"""A registry behind a proxy that fails on purpose: push and pull still finish, byte-identical,
and interrupted transfers resume instead of starting over."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from support.helpers import build_and_push, run_cli, tree_files
from support.http_proxy import Fault, HttpProxy, registry_with_storage, requests_to

import modelpack
from modelpack.oci.digests import CHUNK_SIZE
from modelpack.testing import make_tiny_model


@pytest.fixture
def flaky(registry):
    proxy = HttpProxy(upstream=registry.url).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def model(tmp_path):
    # ~2 MB of weights: big enough to cut mid-blob, small enough to be quick.
    return make_tiny_model(tmp_path / "model", hidden=128)


def _weight_digest(built):
    return next(x.descriptor for x in built.layers if x.plan.file.relpath == "model.safetensors")


def _pushed(model, flaky, settings, name):
    ref = f"{flaky.host}/faults/{name}:v1"
    return ref, build_and_push(model, ref, settings)


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried(model, flaky, settings, tmp_path, status):
    ref, _ = _pushed(model, flaky, settings, f"e{status}")
    flaky.add(Fault(requests_to("GET", "/manifests/"), status=status, times=2))
    flaky.add(Fault(requests_to("GET", "/blobs/sha256:"), status=status, times=2))
    out = modelpack.pull(ref, tmp_path / "out", settings=settings.with_overrides(retries=4))
    assert tree_files(out) == tree_files(model)
    assert sum(1 for e in flaky.exchanges if e.status == status) == 4


def test_a_registry_that_keeps_failing_exits_6_and_leaves_nothing(model, flaky, settings, tmp_path):
    ref, _ = _pushed(model, flaky, settings, "down")
    flaky.add(Fault(requests_to("GET", "/blobs/sha256:"), status=503, times=1000))
    result = run_cli("pull", ref, "--plain-http", "-o", str(tmp_path / "out"))
    assert result.returncode == 6, result.stderr
    assert "503" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name) == []  # nor staging


def test_429_retry_after_is_honoured(model, flaky, settings, tmp_path):
    ref, _ = _pushed(model, flaky, settings, "429")
    flaky.add(Fault(requests_to("GET", "/manifests/"), status=429, retry_after="1"))
    start = len(flaky.exchanges)
    modelpack.pull(ref, tmp_path / "out", settings=settings)
    manifest_gets = [
        e for e in flaky.exchanges[start:] if e.method == "GET" and "/manifests/" in e.path
    ]
    assert manifest_gets[0].status == 429
    assert manifest_gets[1].at - manifest_gets[0].at >= 0.9


def test_connection_reset_mid_blob_resumes_with_range(model, flaky, settings, tmp_path):
    ref, built = _pushed(model, flaky, settings, "reset")
    weight = _weight_digest(built)
    cut = weight.size * 3 // 4
    flaky.add(Fault(requests_to("GET", f"/blobs/{weight.digest}"), drop_response_after=cut))
    out = modelpack.pull(ref, tmp_path / "out", settings=settings)
    assert tree_files(out) == tree_files(model)
    gets = [e for e in flaky.exchanges if e.method == "GET" and weight.digest in e.path]
    assert len(gets) == 2
    offset = int(gets[1].request_headers["Range"].removeprefix("bytes=").rstrip("-"))
    # Resumed from what had arrived (whole reads of CHUNK_SIZE), not from zero.
    assert offset == cut // CHUNK_SIZE * CHUNK_SIZE > 0
    assert gets[1].response_bytes == weight.size - offset


@pytest.mark.parametrize("with_output_dir", [True, False], ids=["pull -o", "pull to store"])
def test_interrupted_pull_resumes_in_the_next_process(
    model, flaky, settings, tmp_path, with_output_dir
):
    ref, built = _pushed(model, flaky, settings, "kill")
    weight = _weight_digest(built)
    flaky.add(
        Fault(
            requests_to("GET", f"/blobs/{weight.digest}"), drop_response_after=weight.size * 3 // 4
        )
    )
    args = ["pull", ref, "--plain-http"] + (
        ["-o", str(tmp_path / "out")] if with_output_dir else []
    )
    home = {"MODELPACK_HOME": str(tmp_path / "node")}
    first = run_cli(*args, env={**home, "MODELPACK_RETRIES": "1"})
    assert first.returncode == 6, first.stderr
    assert not (tmp_path / "out").exists()
    served_before = flaky.bytes_served(lambda e: weight.digest in e.path)
    second = run_cli(*args, env=home)
    assert second.returncode == 0, second.stderr
    fetched_again = flaky.bytes_served(lambda e: weight.digest in e.path) - served_before
    # What arrived was kept, up to the last whole 1 MiB read before the cut.
    kept = (weight.size * 3 // 4) // CHUNK_SIZE * CHUNK_SIZE
    assert kept > 0
    assert fetched_again == weight.size - kept
    pulled = tmp_path / "out" if with_output_dir else Path(second.stdout.strip())
    assert tree_files(pulled) == tree_files(model)


def test_connection_reset_mid_upload_restarts_the_blob(model, flaky, settings):
    ref = f"{flaky.host}/faults/upload-reset:v1"
    built = modelpack.build(model, ref, settings=settings)
    weight = _weight_digest(built)
    flaky.add(
        Fault(
            lambda m, p: m == "PUT" and "/blobs/uploads/" in p, drop_request_after=weight.size // 3
        )
    )
    pushed = modelpack.push(ref, settings=settings)
    assert pushed.stats.transferred == len(built.layers) + 1
    assert modelpack.inspect(ref, remote=True, settings=settings).descriptor.digest == built.digest


def test_chunked_upload_resumes_after_a_reset(model, flaky, settings, monkeypatch):
    monkeypatch.setenv("MODELPACK_CHUNK_SIZE", "256KiB")
    ref = f"{flaky.host}/faults/chunked:v1"
    built = modelpack.build(model, ref, settings=settings)
    weight = _weight_digest(built)
    flaky.add(Fault(lambda m, p: m == "PATCH", drop_request_after=100_000, times=1))
    pushed = modelpack.push(ref, settings=settings)
    assert pushed.digest == built.digest
    patches = [e for e in flaky.exchanges if e.method == "PATCH"]
    assert len(patches) >= weight.size // (256 * 1024)
    sent = sum(e.request_bytes for e in patches)
    assert sent < weight.size + 256 * 1024 + 100_000  # one chunk resent at most, not the blob
    out = modelpack.pull(ref, settings.home / "check", settings=settings)
    assert tree_files(out) == tree_files(model)


def test_blob_redirect_to_storage_gets_no_registry_credentials(
    model, tmp_path, settings, monkeypatch
):
    with registry_with_storage(monkeypatch) as hosts:
        ref, _ = _pushed(model, hosts.front, settings, "redirect")
        hosts.redirect(requests_to("GET", "/blobs/sha256:"))
        out = modelpack.pull(ref, tmp_path / "out", settings=settings)
        assert tree_files(out) == tree_files(model)
        assert hosts.storage.exchanges, "blobs were not fetched from the storage host"
        assert all("Authorization" not in e.request_headers for e in hosts.storage.exchanges)
        assert any("Authorization" in e.request_headers for e in hosts.front.exchanges)


def test_slow_start_then_ok_within_timeouts(model, flaky, settings, tmp_path, monkeypatch):
    ref, _ = _pushed(model, flaky, settings, "slow")
    flaky.add(Fault(requests_to("GET", "/manifests/"), status=502))
    t0 = time.monotonic()
    out = modelpack.pull(ref, tmp_path / "out", settings=settings)
    assert tree_files(out) == tree_files(model)
    assert time.monotonic() - t0 < 30


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: smaller than the model, so the disk fills mid-pull."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI and the dev machines run as root)")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _grow(mount):
    subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)


@pytest.mark.parametrize("into", ["pull -o", "pull to store"])
def test_disk_full_is_one_clear_error_and_the_pull_resumes(
    model, flaky, settings, tmp_path, small_disk, into
):
    ref, built = _pushed(model, flaky, settings, "full")
    weight = _weight_digest(built)
    if into == "pull -o":
        out = small_disk / "out"
        args, env = ["pull", ref, "--plain-http", "-o", str(out)], {}
    else:
        out = None
        args, env = ["pull", ref, "--plain-http"], {"MODELPACK_HOME": str(small_disk / "home")}

    checked = run_cli(*args, env=env)
    assert checked.returncode == 1, checked.stderr
    assert "not enough space" in checked.stderr, checked.stderr
    assert not (small_disk / "out").exists()
    assert flaky.bytes_served(lambda e: weight.digest in e.path) == 0

    # The free-space check can be wrong (quotas, thin volumes): then the disk fills mid-way.
    full = run_cli(*args, env={**env, "MODELPACK_SKIP_SPACE_CHECK": "1"})
    assert full.returncode == 1, full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "disk full while writing" in lines[0], full.stderr
    assert not (small_disk / "out").exists()  # nothing half-written is visible
    if out is None:
        index = json.loads((small_disk / "home" / "store" / "index.json").read_text())
        assert index["manifests"] == []  # the store names nothing it does not hold
    kept = flaky.bytes_served(lambda e: weight.digest in e.path)

    _grow(small_disk)
    again = run_cli(*args, env=env)
    assert again.returncode == 0, again.stderr
    pulled = out if out is not None else Path(again.stdout.strip())
    assert tree_files(pulled) == tree_files(model)
    fetched_again = flaky.bytes_served(lambda e: weight.digest in e.path) - kept
    assert 0 < fetched_again < weight.size, (  # resumed, not started over
        f"fetched again {fetched_again} of {weight.size} (kept {kept}): {again.stderr}"
    )


@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_a_tar_layer_cut_mid_file_is_extracted_again_from_the_start(
    model, flaky, settings, tmp_path, compress
):
    ref = f"{flaky.host}/faults/tar-{compress}:v1"
    built = modelpack.build(model, ref, layer_format="tar", compress=compress, settings=settings)
    modelpack.push(ref, settings=settings)
    weight = _weight_digest(built)
    # Past the first 1 MiB read, so the cut lands inside the member's data.
    assert weight.size > 1024 * 1024 + 50_000
    flaky.add(
        Fault(
            requests_to("GET", f"/blobs/{weight.digest}"), drop_response_after=weight.size - 50_000
        )
    )
    out = modelpack.pull(ref, tmp_path / "out", settings=settings)
    assert tree_files(out) == tree_files(model)
    gets = [e for e in flaky.exchanges if e.method == "GET" and weight.digest in e.path]
    assert len(gets) == 2 and "Range" not in gets[1].request_headers  # tar: start over
