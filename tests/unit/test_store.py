import json
import multiprocessing
import os

import pytest

from modelpack import api
from modelpack.errors import IntegrityError, ReferenceNotFoundError
from modelpack.oci.digests import sha256_bytes
from modelpack.oci.spec import MEDIA_TYPE_OCI_MANIFEST, Descriptor
from modelpack.oci.target import push_bytes
from modelpack.storage.store import LayoutStore


def _manifest(store, name):
    data = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": {"mediaType": "x", "digest": sha256_bytes(b""), "size": 0},
            "layers": [],
            "n": name,
        }
    ).encode()
    push_bytes(store, Descriptor("x", sha256_bytes(b""), 0), b"")
    desc = Descriptor(MEDIA_TYPE_OCI_MANIFEST, sha256_bytes(data), len(data))
    push_bytes(store, desc, data, reference=name)
    return desc


def test_layout_files_are_oci(tmp_path):
    store = LayoutStore(tmp_path / "s")
    assert json.loads((tmp_path / "s" / "oci-layout").read_text()) == {
        "imageLayoutVersion": "1.0.0"
    }
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    assert index["schemaVersion"] == 2 and index["manifests"] == []
    assert store.refs() == []


def test_push_verifies_bytes(tmp_path):
    store = LayoutStore(tmp_path / "s")
    with pytest.raises(IntegrityError):
        push_bytes(store, Descriptor("x", sha256_bytes(b"good"), 4), b"evil")
    assert not store.exists(Descriptor("x", sha256_bytes(b"good"), 4))
    assert list(store.ingest_dir.iterdir()) == []


def test_tag_resolve_untag(tmp_path):
    store = LayoutStore(tmp_path / "s")
    desc = _manifest(store, "reg.io/a:v1")
    assert store.resolve("reg.io/a:v1").digest == desc.digest
    assert store.resolve(desc.digest).digest == desc.digest
    store.tag(desc, "reg.io/a:v2")
    assert [r.name for r in store.refs()] == ["reg.io/a:v1", "reg.io/a:v2"]
    store.untag("reg.io/a:v1")
    with pytest.raises(ReferenceNotFoundError):
        store.resolve("reg.io/a:v1")
    with pytest.raises(ReferenceNotFoundError):
        store.untag("reg.io/a:v1")


def _tag_many(root, start):
    store = LayoutStore(root)
    for i in range(start, start + 20):
        _manifest(store, f"reg.io/m:t{i}")


def test_concurrent_processes_lose_no_tags(tmp_path):
    root = tmp_path / "s"
    LayoutStore(root)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_tag_many, args=(root, n * 100)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    assert len(LayoutStore(root).refs()) == 80


def test_prune_keeps_what_tags_reach(tiny_model, settings):
    first = api.build(tiny_model, "reg.io/a:v1", settings=settings)
    (tiny_model / "config.json").write_text('{"model_type": "changed"}')
    second = api.build(tiny_model, "reg.io/a:v2", settings=settings)
    api.remove("reg.io/a:v1", settings=settings)
    store = LayoutStore(settings.store_dir)
    result = api.prune(settings=settings)
    assert result.blobs_removed >= 3  # old manifest, old config, old config.json layer
    assert store.exists(second.manifest_descriptor)
    for layer in second.manifest.layers:
        assert store.exists(layer)
    assert not store.exists(first.manifest_descriptor)
    assert api.prune(settings=settings).blobs_removed == 0


def test_index_is_replaced_atomically(tmp_path):
    store = LayoutStore(tmp_path / "s")
    _manifest(store, "reg.io/a:v1")
    leftovers = [p for p in (tmp_path / "s").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert os.stat(tmp_path / "s" / "index.json").st_size > 0


def _tag_forever(root, ready):
    store = LayoutStore(root)
    desc = store.resolve("reg.io/a:v1")
    i = 0
    while True:
        store.tag(desc, f"reg.io/a:t{i}")
        if i == 0:
            ready.set()
        i += 1


@pytest.mark.parametrize("delay_ms", [0, 3, 7, 13, 29])
def test_a_process_killed_mid_write_leaves_a_whole_index(tmp_path, delay_ms):
    """SIGKILL while tagging in a loop: index.json is always a whole, earlier state."""
    import signal
    import time

    root = tmp_path / "s"
    _manifest(LayoutStore(root), "reg.io/a:v1")
    ctx = multiprocessing.get_context("fork")
    for attempt in range(4):
        ready = ctx.Event()
        writer = ctx.Process(target=_tag_forever, args=(root, ready))
        writer.start()
        assert ready.wait(30)
        time.sleep(delay_ms / 1000 + attempt * 0.011)
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        names = [ref.name for ref in LayoutStore(root).refs()]  # parses, or raises
        tags = sorted(int(n.rsplit(":t", 1)[1]) for n in names if ":t" in n)
        assert "reg.io/a:v1" in names
        assert tags == list(range(len(tags)))  # a prefix of what was written: no torn state
    # Temp files of killed writers are hidden, and prune clears them.
    store = LayoutStore(root)
    store.prune()
    assert [p.name for p in root.iterdir() if p.name.endswith(".tmp")] == []


def test_a_blob_stored_before_seals_is_hashed_once_then_sealed(tmp_path):
    import shutil

    store = LayoutStore(tmp_path / "s")
    good, bad = Descriptor("x", sha256_bytes(b"good"), 4), Descriptor("x", sha256_bytes(b"mine"), 4)
    push_bytes(store, good, b"good")
    push_bytes(store, bad, b"mine")
    shutil.rmtree(store.seals_dir)  # as an older modelpack left them
    store.blob_path(bad.digest).chmod(0o644)
    store.blob_path(bad.digest).write_bytes(b"evil")
    assert store.exists(good) and not store.exists(bad)
    assert (store.seals_dir / "sha256" / good.digest.split(":")[1]).is_file()
    with pytest.raises(IntegrityError, match="changed after it was verified"), store.fetch(bad):
        pass
