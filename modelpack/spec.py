"""The ModelPack and OCI vocabulary: media types, annotation keys and documents.

Constants follow ../shared/modelpack-spec (mediatype.go, annotations.go).  The
dataclasses hold exactly the fields the specs define; ``to_dict`` omits empty
optional fields (as Go's ``omitempty`` does) and ``canonical_json`` gives the
bytes that are hashed, so the same document always has the same digest.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

# -- OCI ----------------------------------------------------------------------

MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_TYPE_OCI_EMPTY = "application/vnd.oci.empty.v1+json"

MANIFEST_MEDIA_TYPES = (
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
)
INDEX_MEDIA_TYPES = (MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST)

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_CREATED = "org.opencontainers.image.created"

# -- ModelPack ----------------------------------------------------------------

ARTIFACT_TYPE_MODEL_MANIFEST = "application/vnd.cncf.model.manifest.v1+json"
MEDIA_TYPE_MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"

ANNOTATION_FILEPATH = "org.cncf.model.filepath"
ANNOTATION_FILE_METADATA = "org.cncf.model.file.metadata+json"
ANNOTATION_MEDIATYPE_UNTESTED = "org.cncf.model.file.mediatype.untested"

# Where a model came from on a Hugging Face-compatible hub, so `pull --hf-cache` can
# rebuild the hub cache layout under the same repo id and commit.
ANNOTATION_HF_REPO_ID = "io.modelpack.hf.repo-id"
ANNOTATION_HF_COMMIT = "io.modelpack.hf.commit"

# The pre-CNCF names (dragonflyoss/model-spec, "cnai"), still produced by old
# modctl releases and read by Harbor; accepted on pull, never written.
LEGACY_ARTIFACT_TYPE_MODEL_MANIFEST = "application/vnd.cnai.model.manifest.v1+json"
LEGACY_MEDIA_TYPE_MODEL_CONFIG = "application/vnd.cnai.model.config.v1+json"
LEGACY_ANNOTATION_FILEPATH = "org.cnai.model.filepath"
LEGACY_ANNOTATION_FILE_METADATA = "org.cnai.model.file.metadata+json"

MODEL_ARTIFACT_TYPES = (ARTIFACT_TYPE_MODEL_MANIFEST, LEGACY_ARTIFACT_TYPE_MODEL_MANIFEST)
MODEL_CONFIG_MEDIA_TYPES = (MEDIA_TYPE_MODEL_CONFIG, LEGACY_MEDIA_TYPE_MODEL_CONFIG)

_MODEL_PREFIXES = ("application/vnd.cncf.model.", "application/vnd.cnai.model.")


class LayerKind(enum.StrEnum):
    """What a file is to the model; the middle part of a layer media type."""

    WEIGHT = "weight"
    WEIGHT_CONFIG = "weight.config"
    DOC = "doc"
    CODE = "code"
    DATASET = "dataset"


class LayerFormat(enum.StrEnum):
    """How a file is serialized into a layer blob; the suffix of the media type."""

    RAW = "raw"
    TAR = "tar"
    TAR_GZIP = "tar+gzip"
    TAR_ZSTD = "tar+zstd"

    @property
    def is_tar(self) -> bool:
        return self is not LayerFormat.RAW


def layer_media_type(kind: LayerKind, fmt: LayerFormat) -> str:
    return f"application/vnd.cncf.model.{kind.value}.v1.{fmt.value}"


def parse_layer_media_type(media_type: str) -> tuple[LayerKind, LayerFormat] | None:
    """Split a (current or legacy) model layer media type; None if it is not one."""
    for prefix in _MODEL_PREFIXES:
        if not media_type.startswith(prefix):
            continue
        rest = media_type[len(prefix) :]
        kind_part, sep, fmt_part = rest.rpartition(".v1.")
        if not sep:
            return None
        try:
            return LayerKind(kind_part), LayerFormat(fmt_part)
        except ValueError:
            return None
    return None


ALL_LAYER_MEDIA_TYPES = tuple(
    layer_media_type(kind, fmt) for kind in LayerKind for fmt in LayerFormat
)


# -- JSON ---------------------------------------------------------------------


def canonical_json(document: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8: the bytes we hash."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def _drop_empty(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v not in (None, "", [], {})}


# -- OCI documents ------------------------------------------------------------


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str | None = None
    urls: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return _drop_empty(
            {
                "mediaType": self.media_type,
                "digest": self.digest,
                "size": self.size,
                "artifactType": self.artifact_type,
                "urls": list(self.urls),
                "annotations": dict(self.annotations),
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Descriptor:
        annotations = data.get("annotations") or {}
        return cls(
            media_type=str(data.get("mediaType", "")),
            digest=str(data["digest"]),
            size=int(data["size"]),
            annotations={str(k): str(v) for k, v in annotations.items()},
            artifact_type=data.get("artifactType"),
            urls=tuple(data.get("urls") or ()),
        )

    @property
    def filepath(self) -> str | None:
        """The model file path a layer carries (current key, then legacy key)."""
        return self.annotations.get(ANNOTATION_FILEPATH) or self.annotations.get(
            LEGACY_ANNOTATION_FILEPATH
        )


@dataclass(frozen=True)
class Manifest:
    """An OCI image manifest (the shape every ModelPack artifact has)."""

    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str = MEDIA_TYPE_OCI_MANIFEST
    artifact_type: str | None = ARTIFACT_TYPE_MODEL_MANIFEST
    annotations: dict[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
        }
        if self.artifact_type:
            doc["artifactType"] = self.artifact_type
        if self.subject is not None:
            doc["subject"] = self.subject.to_dict()
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        return doc

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        subject = data.get("subject")
        return cls(
            config=Descriptor.from_dict(data["config"]),
            layers=tuple(Descriptor.from_dict(d) for d in data.get("layers") or ()),
            media_type=str(data.get("mediaType") or MEDIA_TYPE_OCI_MANIFEST),
            artifact_type=data.get("artifactType"),
            annotations={str(k): str(v) for k, v in (data.get("annotations") or {}).items()},
            subject=Descriptor.from_dict(subject) if subject else None,
        )

    @property
    def is_model(self) -> bool:
        return (
            self.artifact_type in MODEL_ARTIFACT_TYPES
            or self.config.media_type in MODEL_CONFIG_MEDIA_TYPES
        )


def manifest_successors(media_type: str, document: dict[str, Any]) -> list[Descriptor]:
    """The descriptors a manifest or index points at, in the order to copy them."""
    if media_type in INDEX_MEDIA_TYPES or "manifests" in document:
        return [Descriptor.from_dict(d) for d in document.get("manifests") or ()]
    successors = [Descriptor.from_dict(document["config"])] if "config" in document else []
    successors.extend(Descriptor.from_dict(d) for d in document.get("layers") or ())
    return successors


# -- ModelPack documents ------------------------------------------------------


@dataclass
class ModelCapabilities:
    input_types: list[str] = field(default_factory=list)
    output_types: list[str] = field(default_factory=list)
    knowledge_cutoff: str | None = None
    reasoning: bool | None = None
    tool_usage: bool | None = None
    reward: bool | None = None
    languages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _drop_empty(
            {
                "inputTypes": self.input_types,
                "outputTypes": self.output_types,
                "knowledgeCutoff": self.knowledge_cutoff,
                "reasoning": self.reasoning,
                "toolUsage": self.tool_usage,
                "reward": self.reward,
                "languages": self.languages,
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCapabilities:
        return cls(
            input_types=list(data.get("inputTypes") or []),
            output_types=list(data.get("outputTypes") or []),
            knowledge_cutoff=data.get("knowledgeCutoff"),
            reasoning=data.get("reasoning"),
            tool_usage=data.get("toolUsage"),
            reward=data.get("reward"),
            languages=list(data.get("languages") or []),
        )


@dataclass
class ModelDescriptor:
    """General information about the model (config.md "descriptor")."""

    name: str | None = None
    created_at: str | None = None
    authors: list[str] = field(default_factory=list)
    vendor: str | None = None
    family: str | None = None
    version: str | None = None
    title: str | None = None
    description: str | None = None
    doc_url: str | None = None
    source_url: str | None = None
    datasets_url: list[str] = field(default_factory=list)
    revision: str | None = None
    licenses: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _drop_empty(
            {
                "createdAt": self.created_at,
                "authors": self.authors,
                "vendor": self.vendor,
                "family": self.family,
                "name": self.name,
                "version": self.version,
                "title": self.title,
                "description": self.description,
                "docURL": self.doc_url,
                "sourceURL": self.source_url,
                "datasetsURL": self.datasets_url,
                "revision": self.revision,
                "licenses": self.licenses,
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelDescriptor:
        return cls(
            name=data.get("name"),
            created_at=data.get("createdAt"),
            authors=list(data.get("authors") or []),
            vendor=data.get("vendor"),
            family=data.get("family"),
            version=data.get("version"),
            title=data.get("title"),
            description=data.get("description"),
            doc_url=data.get("docURL"),
            source_url=data.get("sourceURL"),
            datasets_url=list(data.get("datasetsURL") or []),
            revision=data.get("revision"),
            licenses=list(data.get("licenses") or []),
        )


@dataclass
class ModelTechnicalConfig:
    """Technical metadata (config.md "config")."""

    architecture: str | None = None
    format: str | None = None
    param_size: str | None = None
    precision: str | None = None
    quantization: str | None = None
    capabilities: ModelCapabilities | None = None

    def to_dict(self) -> dict[str, Any]:
        caps = self.capabilities.to_dict() if self.capabilities else None
        return _drop_empty(
            {
                "architecture": self.architecture,
                "format": self.format,
                "paramSize": self.param_size,
                "precision": self.precision,
                "quantization": self.quantization,
                "capabilities": caps,
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelTechnicalConfig:
        caps = data.get("capabilities")
        return cls(
            architecture=data.get("architecture"),
            format=data.get("format"),
            param_size=data.get("paramSize"),
            precision=data.get("precision"),
            quantization=data.get("quantization"),
            capabilities=ModelCapabilities.from_dict(caps) if caps else None,
        )


@dataclass
class ModelConfig:
    """The ``application/vnd.cncf.model.config.v1+json`` document."""

    descriptor: ModelDescriptor
    config: ModelTechnicalConfig
    diff_ids: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "descriptor": self.descriptor.to_dict(),
            "config": self.config.to_dict(),
            "modelfs": {"type": "layers", "diffIds": list(self.diff_ids)},
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        modelfs = data.get("modelfs") or {}
        return cls(
            descriptor=ModelDescriptor.from_dict(data.get("descriptor") or {}),
            config=ModelTechnicalConfig.from_dict(data.get("config") or {}),
            diff_ids=list(modelfs.get("diffIds") or []),
        )


@dataclass(frozen=True)
class FileMetadata:
    """Value of the ``org.cncf.model.file.metadata+json`` layer annotation."""

    name: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: str  # RFC 3339, as Go's time.Time marshals
    typeflag: int = 0

    def to_json(self) -> str:
        return canonical_json(
            {
                "name": self.name,
                "mode": self.mode,
                "uid": self.uid,
                "gid": self.gid,
                "size": self.size,
                "mtime": self.mtime,
                "typeflag": self.typeflag,
            }
        ).decode("utf-8")

    @classmethod
    def from_json(cls, text: str) -> FileMetadata:
        data = json.loads(text)
        return cls(
            name=str(data.get("name", "")),
            mode=int(data.get("mode", 0)),
            uid=int(data.get("uid", 0)),
            gid=int(data.get("gid", 0)),
            size=int(data.get("size", 0)),
            mtime=str(data.get("mtime", "")),
            typeflag=int(data.get("typeflag", 0)),
        )
