"""What a progress display is told: the whole size before the first unit starts, labels
that name files, and the bytes a resumed transfer already had (so rates stay honest)."""

import io
import sys

from support.helpers import make_artifact

from modelpack.display import LABEL_WIDTH, PlainProgress, fit_label
from modelpack.oci.copy import CopyOptions, copy_graph
from modelpack.oci.digests import sha256_bytes
from modelpack.oci.spec import ANNOTATION_FILEPATH
from modelpack.progress import PlannedProgress
from modelpack.storage.store import LayoutStore
from modelpack.storage.unpack import PARTIAL_DIR, DirectoryTarget

RAW = "application/vnd.cncf.model.weight.v1.raw"


class Recorder:
    """A PlannedProgress that writes down every call."""

    def __init__(self):
        self.calls = []

    def expect(self, units):
        self.calls.append(("expect", sorted(size for _, size in units)))

    def start(self, key, label, total):
        self.calls.append(("start", label, total))

    def resumed(self, key, already):
        self.calls.append(("resumed", already))

    def advance(self, key, amount):
        self.calls.append(("advance", amount))

    def finish(self, key, *, note=""):
        self.calls.append(("finish", note))


def _model(tmp_path):
    store = LayoutStore(tmp_path / "store")
    weights = {"a.bin": b"a" * 300_000, "nested/b.bin": b"b" * 200_000}
    make_artifact(
        store, "x", [(RAW, blob, {ANNOTATION_FILEPATH: path}) for path, blob in weights.items()]
    )
    return store, weights


def test_whole_size_is_announced_before_the_first_unit_and_units_are_named(tmp_path):
    store, weights = _model(tmp_path)
    progress = Recorder()
    assert isinstance(progress, PlannedProgress)
    with DirectoryTarget(tmp_path / "out") as directory:
        copy_graph(store, "x", directory, None, CopyOptions(progress=progress, concurrency=1))
    first = progress.calls[0]
    assert first[0] == "expect"
    config_size = next(c[2] for c in progress.calls if c[0] == "start" and c[1] == "config")
    assert first[1] == sorted([config_size, *map(len, weights.values())])
    labels = {c[1] for c in progress.calls if c[0] == "start"}
    assert labels == {"config", "a.bin", "nested/b.bin"}
    assert not [c for c in progress.calls if c[0] == "resumed"]


def test_a_resumed_download_reports_the_bytes_it_already_had(tmp_path):
    store, weights = _model(tmp_path)
    out = tmp_path / "out"
    # What an interrupted pull left: the first 100,000 bytes of a.bin.
    first = DirectoryTarget(out)
    partial = first.staging / PARTIAL_DIR / f"sha256-{sha256_bytes(weights['a.bin'])[7:]}"
    partial.write_bytes(weights["a.bin"][:100_000])
    first.suspend()
    progress = Recorder()
    with DirectoryTarget(out) as directory:
        copy_graph(store, "x", directory, None, CopyOptions(progress=progress, concurrency=1))
    assert ("resumed", 100_000) in progress.calls
    moved = sum(c[1] for c in progress.calls if c[0] == "advance")
    config_size = next(c[2] for c in progress.calls if c[0] == "start" and c[1] == "config")
    assert moved == config_size + 200_000 + 200_000  # not the 100,000 bytes kept
    assert (out / "a.bin").read_bytes() == weights["a.bin"]


def test_plain_progress_counts_only_what_moved(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr("modelpack.display.PLAIN_LAYER_MIN", 10)
    display = PlainProgress("pull")
    display.expect([("k1", 1000), ("k2", 500)])
    display.start("k1", "big.bin", 1000)
    display.resumed("k1", 400)
    display.advance("k1", 600)
    display.finish("k1")
    display.start("k2", "there.bin", 500)
    display.finish("k2", note="exists")
    assert display._units.expected == 600
    assert "pull: big.bin (1.0 kB) done (resumed after 400 B)\n" in stream.getvalue()


def test_labels_have_one_width_and_keep_the_file_name():
    long = "models/" + "very-long-directory-name/" * 4 + "model-00001-of-00004.safetensors"
    assert len(fit_label(long)) == LABEL_WIDTH
    assert fit_label(long).endswith("model-00001-of-00004.safetensors")
    assert fit_label("a.bin") == "a.bin"


def test_a_copy_that_moved_nothing_draws_no_empty_bar(monkeypatch):
    """Issue 22 item 8: a push of blobs all there already ended on `0/0 bytes ? -:--:--`."""
    from modelpack.display import RichProgress

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    with RichProgress("push") as display:
        display.expect([("k1", 1000)])
        display.start("k1", "weights.bin", 1000)
        display.finish("k1", note="mounted")
    assert "0/0" not in stream.getvalue()
    stream.truncate(0)
    with RichProgress("push") as display:
        display.start("k1", "weights.bin", 1000)
        display.advance("k1", 1000)
        display.finish("k1")
    assert "push total" in stream.getvalue() and "1.0/1.0 kB" in stream.getvalue()
