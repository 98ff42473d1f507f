"""Where model files come from: a local directory (hf:// and Modelfiles build on it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SourceError
from .classify import Classification, classify
from .local import SourceFile, scan_directory

__all__ = ["Classification", "ModelSource", "SourceFile", "classify", "open_source"]


@dataclass
class ModelSource:
    """A model repository on local disk, ready to plan layers from."""

    root: Path
    files: list[SourceFile]
    name: str
    source_url: str | None = None
    revision: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)


def open_source(src: str, exclude: Iterable[str] = ()) -> ModelSource:
    """Resolve a SRC argument (a directory path) into a :class:`ModelSource`."""
    scheme, sep, _ = src.partition("://")
    if sep and scheme:
        raise SourceError(
            f"unsupported model source {src!r}",
            hint="pass a local directory",
        )
    root = Path(src).expanduser()
    files = scan_directory(root, exclude)
    name = root.resolve().name or "model"
    return ModelSource(root=root, files=files, name=name)
