import pytest
from support.helpers import compress, make_artifact, make_tar

from modelpack.errors import IntegrityError, UnsafePathError
from modelpack.oci.copy import CopyOptions, copy_graph
from modelpack.oci.spec import ANNOTATION_FILEPATH, ANNOTATION_TITLE
from modelpack.storage.store import LayoutStore
from modelpack.storage.unpack import STAGING_PREFIX, DirectoryTarget

RAW = "application/vnd.cncf.model.weight.v1.raw"


def _pull(store, reference, destination):
    with DirectoryTarget(destination) as directory:
        copy_graph(store, reference, directory, None, CopyOptions(concurrency=4))
    return directory


def _leftovers(parent):
    return [p.name for p in parent.iterdir() if p.name.startswith(STAGING_PREFIX)]


@pytest.mark.parametrize("kind", ["weight", "weight.config", "doc", "code", "dataset"])
@pytest.mark.parametrize("how", ["tar", "gzip", "zstd"])
def test_every_tar_media_type_unpacks(tmp_path, kind, how):
    store = LayoutStore(tmp_path / "store")
    suffix = {"tar": "tar", "gzip": "tar+gzip", "zstd": "tar+zstd"}[how]
    blob = compress(make_tar([("sub/", None), ("sub/file.bin", b"payload-" + kind.encode())]), how)
    make_artifact(
        store,
        "x",
        [
            (
                f"application/vnd.cncf.model.{kind}.v1.{suffix}",
                blob,
                {ANNOTATION_FILEPATH: "sub/file.bin"},
            )
        ],
    )
    out = tmp_path / "out"
    directory = _pull(store, "x", out)
    assert (out / "sub" / "file.bin").read_bytes() == b"payload-" + kind.encode()
    assert directory.files == ["sub/file.bin"]


def test_legacy_cnai_and_oras_style_layers(tmp_path):
    store = LayoutStore(tmp_path / "store")
    make_artifact(
        store,
        "x",
        [
            (
                "application/vnd.cnai.model.doc.v1.tar",
                make_tar([("README.md", b"# hi")]),
                {"org.cnai.model.filepath": "README.md"},
            ),
            (
                "application/vnd.oci.image.layer.v1.tar",
                b"plain file",
                {ANNOTATION_TITLE: "notes/plain.txt"},
            ),
        ],
    )
    _pull(store, "x", tmp_path / "out")
    assert (tmp_path / "out" / "README.md").read_bytes() == b"# hi"
    assert (tmp_path / "out" / "notes" / "plain.txt").read_bytes() == b"plain file"


@pytest.mark.parametrize(
    "path",
    ["../evil", "/etc/passwd", "a/../../evil", "..", "", "a\\..\\b", "a\x00b"],
)
def test_raw_layer_paths_that_escape_are_refused(tmp_path, path):
    store = LayoutStore(tmp_path / "store")
    make_artifact(store, "x", [(RAW, b"data", {ANNOTATION_FILEPATH: path})])
    with pytest.raises((UnsafePathError, IntegrityError)):
        _pull(store, "x", tmp_path / "out" / "model")
    assert not (tmp_path / "out" / "model").exists()
    assert not (tmp_path / "evil").exists()
    assert _leftovers(tmp_path / "out") == []


def _hostile_tar(entry):
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(entry, io.BytesIO(b"x" * entry.size) if entry.isreg() else None)
    return buffer.getvalue()


def _entry(name, type_=b"0", linkname=""):
    import tarfile

    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    info.size = 1 if type_ == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    "entry",
    [
        _entry("../escape"),
        _entry("/abs/path"),
        _entry("link", b"2", "/etc/passwd"),
        _entry("hard", b"1", "../../etc/passwd"),
        _entry("inside-link", b"2", "config.json"),
        _entry("dev", b"3"),
        _entry("fifo", b"6"),
    ],
    ids=lambda e: e.name,
)
def test_hostile_tar_entries_are_refused(tmp_path, entry):
    store = LayoutStore(tmp_path / "store")
    make_artifact(
        store,
        "x",
        [
            (
                "application/vnd.cncf.model.weight.v1.tar",
                _hostile_tar(entry),
                {ANNOTATION_FILEPATH: "w"},
            )
        ],
    )
    with pytest.raises((UnsafePathError, IntegrityError)):
        _pull(store, "x", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "escape").exists()
    assert _leftovers(tmp_path) == []


def test_two_layers_writing_one_path_are_refused(tmp_path):
    store = LayoutStore(tmp_path / "store")
    make_artifact(
        store,
        "x",
        [
            (RAW, b"one", {ANNOTATION_FILEPATH: "config.json"}),
            (
                "application/vnd.cncf.model.weight.config.v1.tar",
                make_tar([("config.json", b"two")]),
                {ANNOTATION_FILEPATH: "config.json"},
            ),
        ],
    )
    with pytest.raises(UnsafePathError, match="two layers"):
        _pull(store, "x", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("order", [("a/b", "a/b/c"), ("a/b/c", "a/b")])
@pytest.mark.parametrize("attempt", range(5))  # layers race in parallel: try each order a few times
def test_a_file_where_another_layer_needs_a_directory_is_refused(tmp_path, order, attempt):
    """Found by the long fuzz run: with the deeper path first, the two layers raced to
    make a/b (a directory for one, a file for the other) and one failed with OSError."""
    store = LayoutStore(tmp_path / "store")
    layers = [(RAW, f"blob {i}".encode(), {ANNOTATION_FILEPATH: p}) for i, p in enumerate(order)]
    make_artifact(store, "x", layers)
    with pytest.raises(UnsafePathError, match="is a directory|is a file"):
        _pull(store, "x", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path) == []


def test_tar_directory_entry_over_a_file_of_another_layer_is_refused(tmp_path):
    store = LayoutStore(tmp_path / "store")
    make_artifact(
        store,
        "x",
        [
            (RAW, b"one", {ANNOTATION_FILEPATH: "tokenizer"}),
            (
                "application/vnd.cncf.model.weight.config.v1.tar",
                _hostile_tar(_entry("tokenizer/", b"5")),
                {ANNOTATION_FILEPATH: "tokenizer"},
            ),
        ],
    )
    with pytest.raises(UnsafePathError, match="tokenizer"):
        _pull(store, "x", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_blob_leaves_nothing(tmp_path):
    store = LayoutStore(tmp_path / "store")
    root = make_artifact(
        store,
        "x",
        [
            (RAW, b"good bytes", {ANNOTATION_FILEPATH: "w.bin"}),
            (RAW, b"other", {ANNOTATION_FILEPATH: "o.bin"}),
        ],
    )
    import json

    layer = json.loads(store.blob_path(root.digest).read_bytes())["layers"][0]
    blob = store.blob_path(layer["digest"])
    blob.chmod(0o644)
    blob.write_bytes(b"evil bytes")  # same size, other content
    with pytest.raises(IntegrityError, match="changed after it was verified"):
        _pull(store, "x", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path) == []


def test_existing_directory_is_filled_in_place(tmp_path):
    store = LayoutStore(tmp_path / "store")
    make_artifact(store, "x", [(RAW, b"new", {ANNOTATION_FILEPATH: "a/w.bin"})])
    out = tmp_path / "volume"
    (out / "a").mkdir(parents=True)
    (out / "a" / "w.bin").write_bytes(b"old")
    (out / "keep.txt").write_bytes(b"keep")
    _pull(store, "x", out)
    assert (out / "a" / "w.bin").read_bytes() == b"new"
    assert (out / "keep.txt").read_bytes() == b"keep"
    assert _leftovers(out) == []
