"""Parallel ranged downloads of one big blob (issue 19): exact bytes from many Range
requests against the real registry, a SIGKILLed pull that refetches only the missing
pieces, a server that ignores Range, a bad piece, the connection budget, and ranges
that follow a redirect to storage without the registry's credentials."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.helpers import build_and_push, tree_files
from support.http_proxy import Fault, HttpProxy, registry_with_storage

import modelpack
from modelpack.errors import IntegrityError
from modelpack.storage.store import LayoutStore
from modelpack.testing import make_tiny_model

PIECE = 256 * 1024
RANGED = {"MODELPACK_RANGED_MIN": "1MiB", "MODELPACK_RANGED_PIECE": "256KiB"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    # ~6.7 MB of weights: 26 pieces of 256 KiB; the other files stay single streams.
    return make_tiny_model(tmp_path_factory.mktemp("ranged") / "bert", hidden=256)


@pytest.fixture
def proxy(registry):
    front = HttpProxy(upstream=registry.url).start()
    yield front
    front.stop()


@pytest.fixture
def ranged(settings):
    return settings.with_overrides(ranged_min=1024 * 1024, piece_size=PIECE, concurrency=4)


def _push(model, host, settings, name):
    ref = f"{host}/ranged/{name}:v1"
    built = build_and_push(model, ref, settings)
    weight = next(x.descriptor for x in built.layers if x.plan.file.relpath == "model.safetensors")
    return ref, weight


def _gets(proxy, digest, start=0):
    return [e for e in proxy.exchanges[start:] if e.method == "GET" and digest in e.path]


def _pieces(size):
    return math.ceil(size / PIECE)


@pytest.mark.parametrize("into", ["directory", "store"])
def test_a_multi_piece_pull_gives_the_exact_blob(model, proxy, ranged, tmp_path, into):
    ref, weight = _push(model, proxy.host, ranged, f"exact-{into}")
    start = len(proxy.exchanges)
    node = ranged.with_overrides(home=tmp_path / "node")  # not the home that built it
    out = modelpack.pull(ref, tmp_path / "out" if into == "directory" else None, settings=node)
    assert tree_files(out) == tree_files(model)
    gets = _gets(proxy, weight.digest, start)
    assert len(gets) == _pieces(weight.size) > 1
    assert all(e.status == 206 and e.request_headers.get("Range") for e in gets)
    wanted = {f"bytes={s}-{min(s + PIECE, weight.size) - 1}" for s in range(0, weight.size, PIECE)}
    assert {e.request_headers["Range"] for e in gets} == wanted
    assert proxy.bytes_served(lambda e: e in gets) == weight.size  # each byte once
    assert not list(tmp_path.rglob("*.pieces"))
    if into == "store":
        assert LayoutStore(node.store_dir).exists(weight)


def test_below_the_threshold_a_blob_is_one_stream(model, proxy, settings, tmp_path):
    plain = settings.with_overrides(ranged_min=64 * 1024 * 1024, piece_size=PIECE, concurrency=4)
    ref, weight = _push(model, proxy.host, plain, "small")
    start = len(proxy.exchanges)
    out = modelpack.pull(ref, tmp_path / "out", settings=plain)
    assert tree_files(out) == tree_files(model)
    gets = _gets(proxy, weight.digest, start)
    assert len(gets) == 1 and "Range" not in gets[0].request_headers


def _spawn_pull(ref, home, out, *extra):
    env = {
        **os.environ,
        **RANGED,
        "MODELPACK_HOME": str(home),
        "MODELPACK_CONCURRENCY": "4",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "modelpack", "pull", ref, "--plain-http", "-q", "-o", str(out), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _quiet(proxy):
    """The exchange count once the killed puller's last requests (still in the proxy's
    accept queue when it died) have come in and ended: the next run's start."""
    count = -1
    while count != len(proxy.exchanges):
        count = len(proxy.exchanges)
        proxy.finished_exchanges(lambda e: True)
        time.sleep(1.0)
    return count


def _recorded(journal):
    lines = journal.read_text().split("\n")
    return {int(line) for line in lines[1:-1] if line.isdigit()}


def test_a_pull_killed_with_sigkill_refetches_only_the_missing_pieces(
    model, registry, settings, tmp_path
):
    slow = HttpProxy(upstream=registry.url, blob_delay=0.05).start()
    try:
        ref, weight = _push(model, slow.host, settings, "killed")
        out, home = tmp_path / "out", tmp_path / "home"
        puller = _spawn_pull(ref, home, out)
        deadline, journal = time.monotonic() + 120, None
        while time.monotonic() < deadline and puller.poll() is None:
            found = list(tmp_path.rglob(f"*{weight.digest.split(':')[1]}.pieces"))
            if found and len(_recorded(found[0])) >= 4:
                journal = found[0]
                break
            time.sleep(0.01)
        puller.send_signal(signal.SIGKILL)
        puller.wait()
        assert journal is not None, puller.stderr.read()
        done = _recorded(journal)
        total = _pieces(weight.size)
        assert 4 <= len(done) < total
        before = _quiet(slow)
        again = _spawn_pull(ref, home, out, "--json")
        report, err = again.communicate(timeout=300)
        assert again.returncode == 0, err
        assert tree_files(out) == tree_files(model)
        gets = _gets(slow, weight.digest, before)
        missing = sorted(set(range(total)) - done)
        assert len(gets) == len(missing)
        asked = sorted(int(e.request_headers["Range"].split("=")[1].split("-")[0]) for e in gets)
        assert asked == [i * PIECE for i in missing]
        missing_bytes = sum(min(PIECE, weight.size - i * PIECE) for i in missing)
        assert slow.bytes_served(lambda e: e in gets) == missing_bytes
        assert not journal.exists()
        # What this run moved, not the pieces already there (small layers may come too).
        others = sum(
            e.response_bytes
            for e in slow.exchanges[before:]
            if "/blobs/" in e.path and e not in gets
        )
        assert missing_bytes <= json.loads(report)["bytesTransferred"] <= missing_bytes + others
    finally:
        slow.stop()


def test_a_server_that_ignores_range_gets_one_stream(model, registry, ranged, tmp_path):
    deaf = HttpProxy(upstream=registry.url, strip_range=True).start()
    try:
        ref, weight = _push(model, deaf.host, ranged, "deaf")
        start = len(deaf.exchanges)
        out = modelpack.pull(ref, tmp_path / "out", settings=ranged)
        assert tree_files(out) == tree_files(model)
        gets = _gets(deaf, weight.digest, start)
        # The first piece's answer is the whole blob (200): dropped, then one stream.
        assert [e.status for e in gets] == [200, 200]
        assert "Range" in gets[0].request_headers and "Range" not in gets[1].request_headers
        assert not list(tmp_path.rglob("*.pieces"))
    finally:
        deaf.stop()


@pytest.mark.parametrize("into", ["directory", "store"])
def test_a_piece_with_wrong_bytes_fails_the_digest_and_nothing_is_published(
    model, proxy, ranged, tmp_path, into
):
    ref, weight = _push(model, proxy.host, ranged, f"bad-{into}")
    third = f"bytes={2 * PIECE}-{3 * PIECE - 1}"
    # The third piece, whichever connection asks for it, has one byte flipped.
    proxy.add(Fault(lambda m, p: m == "GET" and weight.digest in p, corrupt_at=1000, range=third))
    node = ranged.with_overrides(home=tmp_path / "node")
    with pytest.raises(IntegrityError, match="digest mismatch"):
        modelpack.pull(ref, tmp_path / "out" if into == "directory" else None, settings=node)
    assert any(e.request_headers.get("Range") == third for e in _gets(proxy, weight.digest))
    assert not (tmp_path / "out").exists()
    store = LayoutStore(node.store_dir)
    assert not store.exists(weight)
    assert not store.partial_path(weight).exists()
    assert not list(tmp_path.rglob("*.pieces"))


@pytest.mark.parametrize("concurrency", [2, 3])
def test_layers_and_pieces_share_the_concurrency_budget(
    model, registry, settings, tmp_path, concurrency
):
    slow = HttpProxy(upstream=registry.url, blob_delay=0.01).start()
    try:
        budget = settings.with_overrides(
            ranged_min=1024 * 1024, piece_size=PIECE, concurrency=concurrency
        )
        ref, weight = _push(model, slow.host, budget, f"budget{concurrency}")
        slow.blob_gets_peak = 0
        out = modelpack.pull(ref, tmp_path / "out", settings=budget)
        assert tree_files(out) == tree_files(model)
        assert len(_gets(slow, weight.digest)) == _pieces(weight.size)
        assert 2 <= slow.blob_gets_peak <= concurrency
    finally:
        slow.stop()


def test_ranges_follow_a_redirect_to_storage_without_registry_credentials(
    model, tmp_path, settings, monkeypatch
):
    with registry_with_storage(monkeypatch) as hosts:
        ranged = settings.with_overrides(ranged_min=1024 * 1024, piece_size=PIECE)
        ref, weight = _push(model, hosts.front.host, ranged, "redirect")
        hosts.redirect(
            lambda m, p: m == "GET" and weight.digest in p, "?X-Amz-Signature=s", times=1000
        )
        out = modelpack.pull(ref, tmp_path / "out", settings=ranged)
        assert tree_files(out) == tree_files(model)
        pieces = [e for e in hosts.storage.exchanges if weight.digest in e.path]
        assert len(pieces) == _pieces(weight.size)
        assert all(e.status == 206 and "Range" in e.request_headers for e in pieces)
        assert all("Authorization" not in e.request_headers for e in hosts.storage.exchanges)
        redirected = [
            e for e in hosts.front.exchanges if weight.digest in e.path and e.method == "GET"
        ]
        assert len(redirected) == len(pieces)
        assert all("Authorization" in e.request_headers for e in redirected)


class Recorder:
    """A PlannedProgress that keeps, per unit, the bytes advanced and the bytes resumed."""

    def __init__(self):
        self.advanced, self.resumed_bytes = {}, {}

    def expect(self, units):
        pass

    def start(self, key, label, total):
        self.advanced.setdefault(key, 0)

    def advance(self, key, amount):
        self.advanced[key] += amount

    def resumed(self, key, already):
        self.resumed_bytes[key] = self.resumed_bytes.get(key, 0) + already

    def finish(self, key, *, note=""):
        pass


def test_a_piece_cut_mid_way_is_fetched_again_alone(model, proxy, ranged, tmp_path):
    ref, weight = _push(model, proxy.host, ranged, "cut")
    third = f"bytes={2 * PIECE}-{3 * PIECE - 1}"
    proxy.add(
        Fault(lambda m, p: m == "GET" and weight.digest in p, drop_response_after=1000, range=third)
    )
    progress = Recorder()
    node = ranged.with_overrides(home=tmp_path / "node")
    start = len(proxy.exchanges)
    out = modelpack.pull(ref, tmp_path / "out", settings=node, progress=progress)
    assert tree_files(out) == tree_files(model)
    asked = [e.request_headers["Range"] for e in _gets(proxy, weight.digest, start)]
    assert asked.count(third) == 2  # cut, then again
    assert len(set(asked)) == _pieces(weight.size)
    # Only the pieces in flight when the cut came (at most one per connection) come again.
    assert len(asked) <= _pieces(weight.size) + node.concurrency
    key = next(k for k in progress.advanced if k.startswith(weight.digest))
    # The bytes reported: this attempt's pieces plus those kept from the cut attempt.
    assert progress.advanced[key] + progress.resumed_bytes.get(key, 0) == weight.size
    assert progress.resumed_bytes.get(key, 0) > 0


@pytest.mark.parametrize("asked", [False, True])
def test_through_a_mirror_a_blob_is_one_request_unless_ranges_are_asked_for(
    model, registry, proxy, ranged, tmp_path, monkeypatch, asked
):
    """A mirror (here a proxy in front of the registry) is near and uncapped, and a P2P one
    would make each range a peer of its own: one request per blob there, by default."""
    ref, weight = _push(model, registry.host, ranged, f"mirrored-{str(asked).lower()}")
    monkeypatch.setenv("MODELPACK_MIRRORS", f"{registry.host}=http://{proxy.host}")
    node = ranged.with_overrides(home=tmp_path / "node", ranged_through_mirrors=asked)
    start = len(proxy.exchanges)
    out = modelpack.pull(ref, tmp_path / "out", settings=node)
    assert tree_files(out) == tree_files(model)
    gets = _gets(proxy, weight.digest, start)  # every byte came through the mirror
    assert proxy.bytes_served(lambda e: e in gets) == weight.size
    assert len(gets) == (_pieces(weight.size) if asked else 1)
