import os
from pathlib import Path

import pytest

from modelpack.errors import FileNotFoundInSourceError, SourceError
from modelpack.model.source import open_source
from modelpack.model.source.local import scan_directory


def _write(root: Path, rel: str, data: bytes = b"x") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_scan_keeps_subfolders_and_skips_junk(tmp_path):
    for rel in [
        "config.json",
        "1_Pooling/config.json",
        ".git/HEAD",
        ".cache/x",
        "__pycache__/m.pyc",
        ".DS_Store",
        "a/.hidden",
        "model.safetensors",
        "Modelfile",
    ]:
        _write(tmp_path, rel)
    files = [f.relpath for f in scan_directory(tmp_path)]
    assert files == ["1_Pooling/config.json", "config.json", "model.safetensors"]


def test_exclude_globs_match_paths_and_names(tmp_path):
    for rel in ["model.safetensors", "checkpoint-1/model.safetensors", "logs/run.log", "x/y.bin"]:
        _write(tmp_path, rel)
    files = [f.relpath for f in scan_directory(tmp_path, ["checkpoint-*", "*.log"])]
    assert files == ["model.safetensors", "x/y.bin"]


def test_lfs_pointers_are_refused_with_a_hint(tmp_path):
    _write(tmp_path, "config.json", b"{}")
    _write(
        tmp_path,
        "model.safetensors",
        b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n",
    )
    with pytest.raises(SourceError) as info:
        scan_directory(tmp_path)
    assert "git lfs pull" in str(info.value)
    assert "model.safetensors" in str(info.value)
    assert info.value.exit_code == 2


def test_symlinks_are_followed_and_packaged_as_files(tmp_path):
    blobs = tmp_path / "blobs"
    _write(blobs, "abc", b"weights")
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    os.symlink(blobs / "abc", snapshot / "model.safetensors")
    (files,) = scan_directory(snapshot)
    assert files.relpath == "model.safetensors"
    assert files.path == (blobs / "abc").resolve()
    assert files.size == len(b"weights")


def test_broken_symlink_is_a_clear_error(tmp_path):
    os.symlink(tmp_path / "missing", tmp_path / "model.safetensors")
    with pytest.raises(SourceError, match="broken symlink"):
        scan_directory(tmp_path)


def test_symlink_loop_terminates(tmp_path):
    _write(tmp_path, "a/config.json")
    os.symlink(tmp_path / "a", tmp_path / "a" / "loop")
    assert [f.relpath for f in scan_directory(tmp_path)] == ["a/config.json"]


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(FileNotFoundInSourceError):
        scan_directory(tmp_path / "nope")
    with pytest.raises(SourceError, match="no files"):
        scan_directory(tmp_path)
    with pytest.raises(SourceError, match="unsupported model source"):
        open_source("s3://bucket/model")
