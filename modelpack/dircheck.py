"""Re-hash an unpacked model against its manifest and name every file that differs.

Raw layers are compared with the layer digest (the file's own sha256); for
tar layers the layer is read (from the local store if it has it, else the
registry), each entry hashed and compared with the file on disk.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from .endpoints import Endpoint
from .oci.digests import CHUNK_SIZE, VerifyingReader, sha256_file
from .oci.modelrunner import unnamed_layer_names
from .oci.spec import LayerFormat, layer_format_of, parse_manifest
from .oci.target import fetch_bytes
from .storage.unpack import _layer_path, safe_relpath


@dataclass
class DirectoryReport:
    """A directory re-hashed against a manifest: how many files were checked, and which are
    missing, differ, or are extra (on disk but not in the artifact, not an error)."""

    reference: str
    digest: str
    directory: Path
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # on disk, not in the artifact (not an error)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.different

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "directory": str(self.directory),
            "verified": self.ok,
            "checked": self.checked,
            "missing": self.missing,
            "different": self.different,
            "extra": self.extra,
        }


def _tar_members(stream: BinaryIO, layer_format: LayerFormat) -> tarfile.TarFile:
    if layer_format is LayerFormat.TAR_GZIP:
        stream = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
    elif layer_format is LayerFormat.TAR_ZSTD:
        stream = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
    return tarfile.open(fileobj=stream, mode="r|")


def verify_directory(endpoint: Endpoint, directory: Path) -> DirectoryReport:
    target = endpoint.target
    root = endpoint.resolved or target.resolve(endpoint.reference)
    manifest = parse_manifest(fetch_bytes(target, root), f"{endpoint.display} manifest")
    report = DirectoryReport(endpoint.display, root.digest, directory)
    expected: set[str] = set()
    names = unnamed_layer_names(manifest)

    def check(relpath: str, digest: str) -> None:
        expected.add(relpath)
        report.checked += 1
        path = directory / relpath
        if not path.is_file():
            report.missing.append(relpath)
        elif sha256_file(str(path))[0] != digest:
            report.different.append(relpath)

    for layer in manifest.layers:
        layer_format = layer_format_of(layer.media_type)
        if layer_format is LayerFormat.RAW:
            check(
                str(safe_relpath(_layer_path(layer, names), f"layer {layer.digest}")), layer.digest
            )
            continue
        with target.fetch(layer) as raw:
            reader = VerifyingReader(raw, layer.digest, layer.size, f"layer {layer.digest}")
            with _tar_members(reader, layer_format) as tar:
                for member in tar:
                    if not member.isreg():
                        continue
                    data = tar.extractfile(member)
                    digest = hashlib.sha256()
                    while data is not None and (chunk := data.read(CHUNK_SIZE)):
                        digest.update(chunk)
                    check(
                        str(safe_relpath(member.name, f"layer {layer.digest}")),
                        "sha256:" + digest.hexdigest(),
                    )
            reader.drain()
            reader.verify()
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            relpath = Path(dirpath, name).relative_to(directory).as_posix()
            if relpath not in expected and not name.startswith("."):
                report.extra.append(relpath)
    report.missing.sort()
    report.different.sort()
    report.extra.sort()
    return report
