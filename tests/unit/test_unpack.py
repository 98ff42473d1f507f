import pytest
from support.helpers import compress, make_artifact, make_tar

from modelpack.errors import IntegrityError, UnsafePathError
from modelpack.oci.copy import CopyOptions, copy_graph
from modelpack.oci.spec import ANNOTATION_FILEPATH, ANNOTATION_TITLE
from modelpack.storage.store import LayoutStore
from modelpack.storage.unpack import STAGING_PREFIX, DirectoryTarget

RAW = "application/vnd.cncf.model.weight.v1.raw"


def _pull(store, reference, destination, **options):
    with DirectoryTarget(destination, **options) as directory:
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
    _pull(store, "x", out, force=True)  # replacing a/w.bin is asked for
    assert (out / "a" / "w.bin").read_bytes() == b"new"
    assert (out / "keep.txt").read_bytes() == b"keep"
    assert _leftovers(out) == []


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (".blobs/x.bin", "reserves"),
        (".BLOBS/x.bin", "reserves"),
        (".modelpack-staging/x.bin", "reserves"),
        (".modelpack-staging-out", "reserves"),
        ("\udcff.bin", "not valid UTF-8"),
        ("a" * 256, "longer than 255 bytes"),
        ("sub/" + "é" * 128, "longer than 255 bytes"),  # 256 bytes in UTF-8
    ],
    ids=["blobs", "BLOBS", "staging-inside", "staging-beside", "surrogate", "long", "long-utf8"],
)
def test_odd_and_reserved_names_are_one_clear_refusal(tmp_path, path, message):
    """Item 13: .blobs/ files were dropped while listed as pulled, a lone surrogate raised
    UnicodeEncodeError, a 256-byte name a raw OSError."""
    store = LayoutStore(tmp_path / "store")
    layers = [(RAW, b"odd", {ANNOTATION_FILEPATH: path}), (RAW, b"ok", {ANNOTATION_FILEPATH: "ok"})]
    make_artifact(store, "x", layers, ascii_json=True)
    with pytest.raises(UnsafePathError, match=message):
        _pull(store, "x", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path) == []


def test_names_just_within_the_limits_are_pulled(tmp_path):
    store = LayoutStore(tmp_path / "store")
    names = ["a" * 255, "é" * 127, ".blobs2/x", ".gitattributes", ".github/workflows/ci.yml"]
    make_artifact(store, "x", [(RAW, n.encode(), {ANNOTATION_FILEPATH: n}) for n in names])
    _pull(store, "x", tmp_path / "out")
    assert all((tmp_path / "out" / n).read_bytes() == n.encode() for n in names)


@pytest.mark.parametrize(
    "path",
    [".git/config", ".GIT/hooks/post-checkout", "sub/.Git/config", ".git./config",
     ".git /config", ".g\u200cit/config", "GIT~1/config"],
)  # fmt: skip
def test_git_folders_are_refused_in_layer_paths(tmp_path, path):
    """Item 5: `pull -o .` wrote .git/config (core.fsmonitor runs a command on git status)."""
    store = LayoutStore(tmp_path / "store")
    make_artifact(store, "x", [(RAW, b"[core]\n\tfsmonitor = evil\n", {ANNOTATION_FILEPATH: path})])
    out = tmp_path / "repo"
    out.mkdir()
    with pytest.raises(UnsafePathError, match=r"\.git folder"):
        _pull(store, "x", out)
    assert list(out.iterdir()) == []


def test_git_folders_are_refused_in_tar_members(tmp_path):
    store = LayoutStore(tmp_path / "store")
    tar = make_tar([("code/", None), ("code/.git/hooks/pre-commit", b"#!/bin/sh\nevil\n")])
    make_artifact(
        store, "x", [("application/vnd.cncf.model.code.v1.tar", tar, {ANNOTATION_FILEPATH: "code"})]
    )
    with pytest.raises(UnsafePathError, match=r"\.git folder"):
        _pull(store, "x", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("inside", [True, False], ids=["DIR exists", "DIR is new"])
def test_a_planted_link_named_like_the_staging_folder_is_never_followed(tmp_path, inside):
    """Item 4: `.modelpack-staging[-x] -> /home/user/important` in the pull's place made the
    pull empty the link's target (and write the model there)."""
    store = LayoutStore(tmp_path / "store")
    make_artifact(store, "x", [(RAW, b"weights", {ANNOTATION_FILEPATH: "w.bin"})])
    important = tmp_path / "important"
    important.mkdir()
    (important / "thesis.tex").write_bytes(b"years of work")
    (important / "sub").mkdir()
    (important / "sub" / "data").write_bytes(b"more")
    repo = tmp_path / "repo"
    repo.mkdir()
    out = repo / "x"
    if inside:
        out.mkdir()
        (out / ".modelpack-staging").symlink_to(important)
    else:
        (repo / ".modelpack-staging-x").symlink_to(important)
    _pull(store, "x", out)
    assert (out / "w.bin").read_bytes() == b"weights"
    assert sorted(p.name for p in important.rglob("*")) == ["data", "sub", "thesis.tex"]
    assert (important / "thesis.tex").read_bytes() == b"years of work"
    links = [p for p in (out, repo) for p in p.iterdir() if p.is_symlink()]
    assert len(links) == 1  # the planted link itself is left alone
    assert [p.name for p in (out if inside else repo).iterdir() if p.name.startswith(
        ".modelpack-staging") and not p.is_symlink()] == []  # fmt: skip


def test_a_foreign_folder_named_like_the_staging_folder_is_left_alone(tmp_path):
    """A cloned repo can ship a real folder of that name (mode 0755, as git makes them)
    holding a link named .blobs: it is not ours, so nothing in it is used or removed."""
    store = LayoutStore(tmp_path / "store")
    make_artifact(store, "x", [(RAW, b"weights", {ANNOTATION_FILEPATH: "w.bin"})])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shipped = tmp_path / ".modelpack-staging-out"
    shipped.mkdir(mode=0o755)
    (shipped / ".blobs").symlink_to(elsewhere)
    (shipped / "README").write_bytes(b"shipped")
    _pull(store, "x", tmp_path / "out")
    assert (tmp_path / "out" / "w.bin").read_bytes() == b"weights"
    assert sorted(p.name for p in shipped.iterdir()) == [".blobs", "README"]
    assert list(elsewhere.iterdir()) == []


def test_an_existing_file_with_other_bytes_is_not_overwritten_unless_forced(tmp_path):
    """Item 5: a pull replaced the user's files in -o DIR without asking."""
    from modelpack.errors import DestinationConflictError

    store = LayoutStore(tmp_path / "store")
    tar = make_tar([("tok/", None), ("tok/vocab.txt", b"new vocab")])
    make_artifact(
        store,
        "x",
        [
            (RAW, b"new weights", {ANNOTATION_FILEPATH: "w.bin"}),
            ("application/vnd.cncf.model.code.v1.tar", tar, {ANNOTATION_FILEPATH: "tok"}),
        ],
    )
    out = tmp_path / "out"
    (out / "tok").mkdir(parents=True)
    (out / "tok" / "vocab.txt").write_bytes(b"my vocab")  # same path inside a tar layer
    (out / "mine.txt").write_bytes(b"mine")
    with pytest.raises(DestinationConflictError, match=r"tok/vocab\.txt") as raised:
        _pull(store, "x", out)
    assert raised.value.exit_code == 2 and "--force" in str(raised.value)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "mine.txt", "tok", "tok/vocab.txt"
    ]  # fmt: skip
    assert (out / "tok" / "vocab.txt").read_bytes() == b"my vocab"
    (out / "w.bin").write_bytes(b"my weights")  # a raw layer's file: refused before the pull
    with (
        pytest.raises(DestinationConflictError, match=r"w\.bin"),
        DirectoryTarget(out) as directory,
    ):
        directory.check_planned(list(store_layers(store)))
    assert (out / "w.bin").read_bytes() == b"my weights"
    _pull(store, "x", out, force=True)
    assert (out / "w.bin").read_bytes() == b"new weights"
    assert (out / "tok" / "vocab.txt").read_bytes() == b"new vocab"
    assert (out / "mine.txt").read_bytes() == b"mine"


def store_layers(store):
    import json

    from modelpack.oci.spec import Descriptor

    manifest = json.loads(store.blob_path(store.resolve("x").digest).read_bytes())
    return [Descriptor.from_dict(layer) for layer in manifest["layers"]]


@pytest.mark.parametrize("planted", ["link", "file"])
def test_a_link_or_file_where_the_artifact_needs_a_folder_is_in_the_way(tmp_path, planted):
    from modelpack.errors import DestinationConflictError

    store = LayoutStore(tmp_path / "store")
    make_artifact(store, "x", [(RAW, b"w", {ANNOTATION_FILEPATH: "sub/w.bin"})])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    if planted == "link":
        (out / "sub").symlink_to(elsewhere)
    else:
        (out / "sub").write_bytes(b"a file")
    with pytest.raises(DestinationConflictError, match="sub"):
        _pull(store, "x", out)
    assert list(elsewhere.iterdir()) == []
    assert _leftovers(out) == []


def test_pulling_the_same_artifact_again_into_its_directory_works(tmp_path):
    store = LayoutStore(tmp_path / "store")
    tar = make_tar([("tok/", None), ("tok/vocab.txt", b"vocab")])
    make_artifact(
        store,
        "x",
        [
            (RAW, b"weights", {ANNOTATION_FILEPATH: "w.bin"}),
            ("application/vnd.cncf.model.code.v1.tar", tar, {ANNOTATION_FILEPATH: "tok"}),
        ],
    )
    out = tmp_path / "out"
    _pull(store, "x", out)
    again = _pull(store, "x", out)
    assert sorted(again.files) == ["tok/vocab.txt", "w.bin"]
    assert (out / "w.bin").read_bytes() == b"weights"
    assert _leftovers(out) == []


def test_a_new_model_folder_gets_the_mode_mkdir_gives(tmp_path):
    """Staging folders are private (0700, how we know one is ours); the model folder is not."""
    import os
    import stat

    store = LayoutStore(tmp_path / "store")
    make_artifact(store, "x", [(RAW, b"w", {ANNOTATION_FILEPATH: "sub/w.bin"})])
    (tmp_path / "probe").mkdir()
    _pull(store, "x", tmp_path / "out")
    expected = stat.S_IMODE(os.stat(tmp_path / "probe").st_mode)
    assert stat.S_IMODE(os.stat(tmp_path / "out").st_mode) == expected
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "sub").st_mode) == expected


def test_prune_leaves_the_staging_of_a_running_pull(tmp_path):
    """Interrupted-pull records: one a live pull holds is not cleared; once released, it is."""
    from modelpack.storage.interrupted import InterruptedPulls

    journal = InterruptedPulls(tmp_path / "home")
    running = DirectoryTarget(tmp_path / "out", journal=journal)
    (running.staging / "x").write_bytes(b"12345")
    assert journal.stale() == []  # held: a pull is using it
    assert journal.clear() == []
    assert running.staging.is_dir()
    running._release()  # what a killed process leaves: the folder, its record, no lock
    (kept,) = journal.stale()
    assert kept.staging == running.staging and kept.size == 5
    assert [p.staging for p in journal.clear()] == [running.staging]
    assert not running.staging.exists() and journal.stale() == []


def test_a_committed_or_aborted_pull_leaves_no_record(tmp_path):
    from modelpack.storage.interrupted import InterruptedPulls

    journal = InterruptedPulls(tmp_path / "home")
    store = LayoutStore(tmp_path / "store")
    make_artifact(store, "x", [(RAW, b"w" * 10, {ANNOTATION_FILEPATH: "w.bin"})])
    _pull(store, "x", tmp_path / "out", journal=journal)
    DirectoryTarget(tmp_path / "other", journal=journal).abort()
    assert list(journal.root.iterdir()) == []


def test_a_sparse_ranged_partial_counts_the_bytes_it_holds(tmp_path):
    """An interrupted ranged download is a sparse file of the blob's size: what Ctrl-C says
    was kept is what arrived, not that size."""
    from modelpack.storage.diskspace import held_bytes
    from modelpack.storage.unpack import PARTIAL_DIR

    target = DirectoryTarget(tmp_path / "out")
    partial = target.staging / PARTIAL_DIR / ("sha256-" + "a" * 64)
    with open(partial, "wb") as f:
        f.truncate(64 * 1024 * 1024)  # preallocated, as the piece writer does
        f.write(b"x" * 8192)  # one piece's worth arrived
    assert held_bytes(partial) < 1024 * 1024
    assert target.suspend() == held_bytes(partial) >= 8192
    assert held_bytes(tmp_path / "missing") == 0
