"""Helpers for tests: run the CLI as a user would, compare trees, make artifacts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(
    *args: str,
    input: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python -m modelpack`` as a user would; exit code and streams are the contract."""
    return subprocess.run(
        [sys.executable, "-m", "modelpack", *args],
        capture_output=True,
        text=True,
        input=input,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=600,
    )


def serve_refusal(cache: Path, *args: str) -> str:
    """``modelpack serve`` with ``args`` must refuse to start as the contract says (exit 2,
    one ``Error`` line, no traceback); that line."""
    result = run_cli("serve", "--registry", "127.0.0.1:9/gw", "--cache", str(cache), *args)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def build_and_push(model: Path, reference: str, settings, **build_options):  # noqa: ANN001, ANN201
    """``modelpack.build`` then ``modelpack.push``, as a user publishes a model; the build result."""
    import modelpack

    built = modelpack.build(model, reference, settings=settings, **build_options)
    modelpack.push(reference, settings=settings)
    return built


def tree_files(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every regular file below ``root``."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def make_tar(entries: list[tuple[str, bytes | None]], *, kind: str = "file") -> bytes:
    """A tar of (name, data) regular files; data None makes a directory entry."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def compress(data: bytes, how: str) -> bytes:
    import gzip

    import zstandard

    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def make_artifact(
    store,
    reference: str,
    layers: list[tuple[str, bytes, dict[str, str]]],
    *,
    config: tuple[str, bytes] | None = None,
    annotations: dict[str, str] | None = None,
    ascii_json: bool = False,
):
    """Write a ModelPack manifest with the given (mediaType, blob, annotations) layers
    into a LayoutStore (or any Target) by hand, the way another tool would; ``config``
    (mediaType, bytes) and manifest ``annotations`` make it another kind of artifact;
    ``ascii_json`` writes the manifest with JSON escapes, so an annotation can carry what our
    own writer cannot encode (a lone surrogate travels as ``"\\udcff"``)."""
    import json

    from modelpack.oci.digests import sha256_bytes
    from modelpack.oci.spec import MEDIA_TYPE_MODEL_CONFIG, Descriptor, Manifest
    from modelpack.oci.target import push_bytes

    descriptors = []
    for media_type, blob, layer_annotations in layers:
        desc = Descriptor(media_type, sha256_bytes(blob), len(blob), dict(layer_annotations))
        push_bytes(store, desc, blob)
        descriptors.append(desc)
    model_config = json.dumps(
        {
            "descriptor": {"name": "handmade"},
            "config": {},
            "modelfs": {
                "type": "layers",
                "diffIds": [d.digest for d in descriptors] or ["sha256:0"],
            },
        }
    ).encode()
    config_type, config_bytes = config or (MEDIA_TYPE_MODEL_CONFIG, model_config)
    config_desc = Descriptor(config_type, sha256_bytes(config_bytes), len(config_bytes))
    push_bytes(store, config_desc, config_bytes)
    manifest = Manifest(
        config=config_desc, layers=tuple(descriptors), annotations=dict(annotations or {})
    )
    data = json.dumps(manifest.to_dict()).encode() if ascii_json else manifest.to_bytes()
    root = Descriptor(
        manifest.media_type, sha256_bytes(data), len(data), artifact_type=manifest.artifact_type
    )
    push_bytes(store, root, data, reference=reference)
    return root


class Clock:
    """A clock for the gateway's TTL maps in tests: ``now`` moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
