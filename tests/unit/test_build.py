import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile

import pytest
import zstandard

from modelpack import api
from modelpack.errors import UsageError
from modelpack.oci.spec import (
    ANNOTATION_FILE_METADATA,
    ANNOTATION_FILEPATH,
    ANNOTATION_MEDIATYPE_UNTESTED,
    ANNOTATION_TITLE,
    MEDIA_TYPE_MODEL_CONFIG,
)
from modelpack.schemas import MODEL_CONFIG, validate
from modelpack.storage.store import LayoutStore

REF = "127.0.0.1:5000/team/bert:v1"


def _blob(settings, digest):
    return LayoutStore(settings.store_dir).blob_path(digest).read_bytes()


def test_raw_build_has_one_layer_per_file_with_annotations(tiny_model, settings):
    result = api.build(tiny_model, REF, settings=settings)
    files = sorted(
        p.relative_to(tiny_model).as_posix() for p in tiny_model.rglob("*") if p.is_file()
    )
    assert [layer.plan.file.relpath for layer in result.layers] == files
    for layer in result.layers:
        annotations = layer.descriptor.annotations
        assert annotations[ANNOTATION_FILEPATH] == layer.plan.file.relpath
        assert annotations[ANNOTATION_TITLE] == layer.plan.file.relpath
        meta = json.loads(annotations[ANNOTATION_FILE_METADATA])
        assert meta["size"] == layer.descriptor.size
        assert meta["name"] == layer.plan.file.relpath.rsplit("/", 1)[-1]
        data = (tiny_model / layer.plan.file.relpath).read_bytes()
        assert layer.descriptor.digest == "sha256:" + hashlib.sha256(data).hexdigest()
        assert layer.diff_id == layer.descriptor.digest
        assert layer.descriptor.media_type.endswith(".v1.raw")
    weight = next(x for x in result.layers if x.plan.file.relpath == "model.safetensors")
    assert weight.descriptor.media_type == "application/vnd.cncf.model.weight.v1.raw"
    assert result.manifest.config.media_type == MEDIA_TYPE_MODEL_CONFIG
    validate(result.config.to_dict(), MODEL_CONFIG)


def test_raw_weights_are_not_rewritten_on_the_same_filesystem(tiny_model, settings):
    result = api.build(tiny_model, REF, settings=settings)
    weight = next(x for x in result.layers if x.plan.file.relpath == "model.safetensors")
    blob = LayoutStore(settings.store_dir).blob_path(weight.descriptor.digest)
    assert weight.placement is not None and weight.placement.value in ("reflink", "hardlink")
    if weight.placement.value == "hardlink":
        assert os.stat(blob).st_ino == os.stat(tiny_model / "model.safetensors").st_ino


def test_unknown_file_is_packaged_and_marked_untested(tiny_model, settings):
    (tiny_model / "notes.xyz").write_text("?")
    result = api.build(tiny_model, REF, settings=settings)
    layer = next(x for x in result.layers if x.plan.file.relpath == "notes.xyz")
    assert layer.descriptor.annotations[ANNOTATION_MEDIATYPE_UNTESTED] == "true"
    assert layer.descriptor.media_type == "application/vnd.cncf.model.code.v1.raw"
    others = [x for x in result.layers if x is not layer]
    assert all(ANNOTATION_MEDIATYPE_UNTESTED not in x.descriptor.annotations for x in others)


@pytest.mark.parametrize(
    ("compress", "suffix", "decompress"),
    [
        ("none", "tar", lambda b: b),
        ("gzip", "tar+gzip", gzip.decompress),
        ("zstd", "tar+zstd", lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b)),
    ],
)
def test_tar_layers_are_deterministic_one_file_tars(
    tiny_model, settings, monkeypatch, compress, suffix, decompress
):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    result = api.build(tiny_model, REF, layer_format="tar", compress=compress, settings=settings)
    for layer in result.layers:
        assert layer.descriptor.media_type.endswith(f".v1.{suffix}")
        tar_bytes = decompress(_blob(settings, layer.descriptor.digest))
        assert layer.diff_id == "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            *parents, member = tar.getmembers()
            assert member.name == layer.plan.file.relpath
            # Its folders first (KitOps' unpack needs them), then the one file.
            folders = layer.plan.file.relpath.split("/")[:-1]
            assert [p.name for p in parents] == [
                "/".join(folders[: i + 1]) for i in range(len(folders))
            ]
            assert all(p.isdir() and p.mtime == 1700000000 for p in parents)
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
            assert member.mtime == 1700000000
            assert member.mode in (0o644, 0o755)
            data = tar.extractfile(member).read()
        assert data == (tiny_model / layer.plan.file.relpath).read_bytes()
    assert result.config.diff_ids == [x.diff_id for x in result.layers]


def test_same_files_and_source_date_epoch_give_the_same_digest(
    tiny_model, tmp_path, settings, monkeypatch
):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = api.build(tiny_model, REF, settings=settings)
    again = api.build(tiny_model, REF, settings=settings)
    # A copy elsewhere, with other mtimes and modes, holds the same files.
    copy = tmp_path / "elsewhere" / tiny_model.name
    shutil.copytree(tiny_model, copy)
    for path in copy.rglob("*"):
        os.utime(path, (1, 1))
    other_home = settings.with_overrides(home=tmp_path / "other-home")
    copied = api.build(copy, REF, settings=other_home)
    assert first.digest == again.digest == copied.digest
    for fmt in ("gzip", "zstd"):
        a = api.build(tiny_model, REF, layer_format="tar", compress=fmt, settings=settings)
        b = api.build(copy, REF, layer_format="tar", compress=fmt, settings=other_home)
        assert a.digest == b.digest


def test_without_source_date_epoch_created_at_is_now(tiny_model, settings):
    result = api.build(tiny_model, REF, settings=settings)
    assert result.config.descriptor.created_at.startswith("20")


def test_build_rejects_bad_options(tiny_model, settings):
    with pytest.raises(UsageError, match="--compress needs --layer-format tar"):
        api.build(tiny_model, REF, compress="gzip", settings=settings)
    with pytest.raises(UsageError, match="not a digest"):
        api.build(tiny_model, "reg.io/a@sha256:" + "0" * 64, settings=settings)


def test_failed_build_leaves_no_tag(tmp_path, settings):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(
        b"version https://git-lfs.github.com/spec/v1\noid sha256:1\nsize 1\n"
    )
    with pytest.raises(UsageError):
        api.build(tmp_path / "m", REF, settings=settings)
    assert api.list_models(settings=settings) == []


def test_store_on_another_filesystem_copies_in_one_pass(tiny_model, settings, tmp_path):
    shm = os.environ.get("MODELPACK_TEST_OTHER_FS", "/dev/shm")
    if not os.path.isdir(shm) or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip(f"{shm} is not another filesystem here")
    home = tempfile.mkdtemp(dir=shm)
    try:
        result = api.build(tiny_model, REF, settings=settings.with_overrides(home=home))
        weight = next(x for x in result.layers if x.plan.file.relpath == "model.safetensors")
        assert weight.placement.value == "copy"
        blob = LayoutStore(settings.with_overrides(home=home).store_dir).blob_path(
            weight.descriptor.digest
        )
        assert blob.read_bytes() == (tiny_model / "model.safetensors").read_bytes()
        assert blob.stat().st_mode & 0o222 == 0  # our own copy: read-only
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_plain_progress_writes_each_line_whole(monkeypatch):
    """Worker threads finish layers at once; a line written in two parts (print's text, then
    its newline) ran together with another thread's in CI logs.  Each line is one write."""
    import sys
    import threading

    from modelpack.display import PlainProgress

    class Recorder(io.StringIO):
        calls: list[str] = []

        def write(self, text):
            self.calls.append(text)
            return super().write(text)

    stream = Recorder()
    monkeypatch.setattr(sys, "stderr", stream)
    display = PlainProgress("push")
    keys = [f"k{i}" for i in range(32)]
    for key in keys:
        display.start(key, f"file-{key}.bin", 10)
    threads = [
        threading.Thread(target=display.finish, args=(k,), kwargs={"note": "mounted"}) for k in keys
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(stream.calls) == sorted(f"push: file-{k}.bin (10 B) mounted\n" for k in keys)
