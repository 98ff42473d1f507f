"""Where model files come from: a local directory (an HF cache snapshot too), hf://, modelscope://."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import SourceError
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
    hub: str = "https://huggingface.co"  # where README `datasets` ids live


def open_source(
    src: str,
    exclude: Iterable[str] = (),
    include: Iterable[str] = (),
    *,
    cache_root: Path | None = None,
) -> ModelSource:
    """Resolve a SRC argument into files on local disk (downloading if it is remote).

    ``include`` / ``exclude`` globs also narrow what hf:// downloads.
    """
    exclude, include = list(exclude), list(include)
    if src.startswith("hf://"):
        from .hf import download_snapshot, parse_hf_source

        repo_id, revision = parse_hf_source(src)
        snapshot = download_snapshot(repo_id, revision, include=include, exclude=exclude)
        source = _source(snapshot.path, exclude, include, repo_id.split("/")[-1], snapshot.source_url,
                         snapshot.commit, snapshot.annotations)  # fmt: skip
        source.hub = snapshot.source_url.rsplit("/", 2)[0] if snapshot.source_url else source.hub
        return source
    if src.startswith("modelscope://"):
        from .modelscope import download_modelscope, parse_modelscope_source

        model_id, revision = parse_modelscope_source(src)
        root = (cache_root or Path.home() / ".cache" / "modelpack") / "sources" / "modelscope"
        snapshot = download_modelscope(model_id, revision, root)
        return _source(snapshot.path, exclude, include, model_id.split("/")[-1], snapshot.source_url,
                       snapshot.revision, {})  # fmt: skip
    scheme, sep, _ = src.partition("://")
    if sep and scheme:
        raise SourceError(
            f"unsupported model source {src!r}",
            hint="a directory, hf://ORG/NAME or modelscope://ORG/NAME",
        )
    root = Path(src).expanduser()
    from .hf import snapshot_in_hf_cache

    if cached := snapshot_in_hf_cache(root):
        return _source(
            root,
            exclude,
            include,
            cached.repo_id.split("/")[-1],
            None,
            cached.commit,
            cached.annotations,
        )
    return _source(root, exclude, include, root.resolve().name or "model", None, None, {})


def _source(
    root: Path,
    exclude: list[str],
    include: list[str],
    name: str,
    source_url: str | None,
    revision: str | None,
    annotations: dict[str, str],
) -> ModelSource:
    files = scan_directory(root, exclude, include)
    return ModelSource(root, files, name, source_url, revision, dict(annotations))
