"""What released Harbor shows for a model artifact, as its processor decides it.

Harbor's model processor (goharbor/harbor ``src/controller/artifact/processor/cnai``,
v2.13-v2.15) is Go code in the ``github.com/goharbor/harbor/src`` module, which the Go
module proxy here does not serve (``403 This module version is not available`` for
v2.13.0 and for commit pseudo-versions), so it cannot be built and driven.  These are its
rules, read from that source, for tests:

* the artifact is a MODEL when its config media type is
  ``application/vnd.cnai.model.config.v1+json`` (the processor is registered for it);
* README: the first layer whose media type is ``application/vnd.cnai.model.doc.v1.tar`` and
  whose ``org.cnai.model.filepath`` is ``README`` or ``README.md``; its blob is read as a
  tar (every regular file's bytes, concatenated), at most 4 MiB;
* LICENSE: likewise for ``LICENSE`` or ``LICENSE.txt``;
* FILES: a tree built from every layer's ``org.cnai.model.filepath`` and size.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from typing import Any

CONFIG_MEDIA_TYPE = "application/vnd.cnai.model.config.v1+json"
DOC_MEDIA_TYPE = "application/vnd.cnai.model.doc.v1.tar"
FILEPATH = "org.cnai.model.filepath"
SIZE_LIMIT = 4 * 1024 * 1024


def is_model(manifest: dict[str, Any]) -> bool:
    return manifest["config"]["mediaType"] == CONFIG_MEDIA_TYPE


def _untar(blob: bytes) -> bytes:
    out = b""
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as archive:  # raises on a non-tar
        for member in archive:
            if member.isreg():
                extracted = archive.extractfile(member)
                out += extracted.read() if extracted else b""
    return out


def addition(
    manifest: dict[str, Any], names: tuple[str, ...], blob: Callable[[str], bytes]
) -> bytes | None:
    """README (names README, README.md) or LICENSE (LICENSE, LICENSE.txt) as Harbor renders it."""
    for layer in manifest["layers"]:
        path = (layer.get("annotations") or {}).get(FILEPATH)
        if layer["mediaType"] == DOC_MEDIA_TYPE and path in names:
            if layer["size"] > SIZE_LIMIT:
                return None
            return _untar(blob(layer["digest"]))
    return None


def files(manifest: dict[str, Any]) -> dict[str, int]:
    """The FILES tab: path -> size for every layer that names a path."""
    return {
        layer["annotations"][FILEPATH]: layer["size"]
        for layer in manifest["layers"]
        if (layer.get("annotations") or {}).get(FILEPATH)
    }
