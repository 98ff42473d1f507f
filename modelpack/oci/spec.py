"""The ModelPack and OCI vocabulary: media types, annotation keys and documents.

Constants follow ../shared/modelpack-spec (mediatype.go, annotations.go).  The
dataclasses hold exactly the fields the specs define; ``to_dict`` omits empty
optional fields (as Go's ``omitempty`` does) and ``canonical_json`` gives the
bytes that are hashed, so the same document always has the same digest.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import IntegrityError
from .digests import parse_digest
from .limits import max_layers

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
# On a layer of a pickle-based file: what a scan found it imports when loaded (JSON:
# status, scanner, imports; model/pickles.py).
ANNOTATION_PICKLE_SCAN = "io.modelpack.pickle.scan"

# The pre-CNCF names (dragonflyoss/model-spec, "cnai"), still produced by modctl
# releases and the only ones released Harbor (v2.13-v2.15) renders as models; accepted
# on pull everywhere, written with `--media-types cnai` (see MediaTypes below).
LEGACY_ARTIFACT_TYPE_MODEL_MANIFEST = "application/vnd.cnai.model.manifest.v1+json"
LEGACY_MEDIA_TYPE_MODEL_CONFIG = "application/vnd.cnai.model.config.v1+json"
LEGACY_ANNOTATION_FILEPATH = "org.cnai.model.filepath"
LEGACY_ANNOTATION_FILE_METADATA = "org.cnai.model.file.metadata+json"

MODEL_ARTIFACT_TYPES = (ARTIFACT_TYPE_MODEL_MANIFEST, LEGACY_ARTIFACT_TYPE_MODEL_MANIFEST)
MODEL_CONFIG_MEDIA_TYPES = (MEDIA_TYPE_MODEL_CONFIG, LEGACY_MEDIA_TYPE_MODEL_CONFIG)

_MODEL_PREFIXES = ("application/vnd.cncf.model.", "application/vnd.cnai.model.")

# -- Docker Model Runner ------------------------------------------------------

# What `docker model package` writes without `--format cncf` (github.com/docker/model-runner
# pkg/distribution/types/config.go): an OCI image manifest with no artifactType, one of these
# configs, and layers of the media types below.  v0.2 (layer per file, each annotated with
# org.cncf.model.filepath) is what builder.FromDirectory writes; v0.1 is the older format of
# the Docker Hub ai/* models, whose layers may carry no file path (oci/modelrunner.py names them).
MEDIA_TYPE_DOCKER_MODEL_CONFIG_V01 = "application/vnd.docker.ai.model.config.v0.1+json"
MEDIA_TYPE_DOCKER_MODEL_CONFIG_V02 = "application/vnd.docker.ai.model.config.v0.2+json"
DOCKER_MODEL_CONFIG_MEDIA_TYPES = (
    MEDIA_TYPE_DOCKER_MODEL_CONFIG_V02,
    MEDIA_TYPE_DOCKER_MODEL_CONFIG_V01,
)
MEDIA_TYPE_DOCKER_GGUF = "application/vnd.docker.ai.gguf.v3"
MEDIA_TYPE_DOCKER_SAFETENSORS = "application/vnd.docker.ai.safetensors"
MEDIA_TYPE_DOCKER_DDUF = "application/vnd.docker.ai.dduf"
MEDIA_TYPE_DOCKER_LICENSE = "application/vnd.docker.ai.license"
MEDIA_TYPE_DOCKER_MMPROJ = "application/vnd.docker.ai.mmproj"
MEDIA_TYPE_DOCKER_CHAT_TEMPLATE = "application/vnd.docker.ai.chat.template.jinja"
MEDIA_TYPE_DOCKER_MODEL_FILE = "application/vnd.docker.ai.model.file"
# Tar archives unpacked into the model folder (internal/bundle/unpack.go, unpackLegacy):
# their file path annotation, if any, names the archive, not a file of the model.
MEDIA_TYPE_DOCKER_VLLM_CONFIG_TAR = "application/vnd.docker.ai.vllm.config.tar"
MEDIA_TYPE_DOCKER_DIR_TAR = "application/vnd.docker.ai.dir.tar"
DOCKER_ARCHIVE_MEDIA_TYPES = (MEDIA_TYPE_DOCKER_DIR_TAR, MEDIA_TYPE_DOCKER_VLLM_CONFIG_TAR)


class MediaTypes(enum.StrEnum):
    """The two families of ModelPack names: ``cncf`` (the spec today, the default) and
    ``cnai`` (the names before the spec moved to the CNCF, which Harbor releases read)."""

    CNCF = "cncf"
    CNAI = "cnai"

    @property
    def prefix(self) -> str:
        return f"application/vnd.{self.value}.model."

    @property
    def annotation_prefix(self) -> str:
        return f"org.{self.value}.model."


def media_types_of(manifest: Manifest) -> MediaTypes | None:
    """Which family a model manifest is written in; None for anything else."""
    for family in MediaTypes:
        if manifest.config.media_type.startswith(family.prefix):
            return family
    return None


def convert_manifest(manifest: Manifest, family: MediaTypes) -> Manifest:
    """The same model in the other family's names: artifact type, config and layer media
    types and the ``org.*.model.*`` annotation keys.  Blobs are untouched (the config JSON
    is the same in both), so only the manifest and its digest change."""
    source = media_types_of(manifest)
    if source is None or source is family:
        return manifest

    def media_type(value: str | None) -> str | None:
        if value is not None and value.startswith(source.prefix):
            return family.prefix + value[len(source.prefix) :]
        return value

    def annotations(values: dict[str, str]) -> dict[str, str]:
        return {
            (family.annotation_prefix + key[len(source.annotation_prefix) :])
            if key.startswith(source.annotation_prefix)
            else key: value
            for key, value in values.items()
        }

    def descriptor(desc: Descriptor) -> Descriptor:
        return dataclasses.replace(
            desc,
            media_type=media_type(desc.media_type) or desc.media_type,
            annotations=annotations(desc.annotations),
            artifact_type=media_type(desc.artifact_type),
        )

    return dataclasses.replace(
        manifest,
        config=descriptor(manifest.config),
        layers=tuple(descriptor(layer) for layer in manifest.layers),
        artifact_type=media_type(manifest.artifact_type),
        annotations=annotations(manifest.annotations),
    )


def rewrite_manifest_bytes(data: bytes, family: MediaTypes, what: str) -> bytes:
    """``data`` unchanged unless it is a model manifest in the other family's names (an
    image index, a multi-platform image, is never one)."""
    document = parse_document(data, what)
    if document.get("mediaType") in INDEX_MEDIA_TYPES or "manifests" in document:
        return data
    manifest = Manifest.from_dict(document, what)
    converted = convert_manifest(manifest, family)
    return data if converted is manifest else converted.to_bytes()


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


def layer_media_type(
    kind: LayerKind, fmt: LayerFormat, family: MediaTypes = MediaTypes.CNCF
) -> str:
    return f"{family.prefix}{kind.value}.v1.{fmt.value}"


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


def layer_format_of(media_type: str) -> LayerFormat:
    """How a pull writes a layer: a ModelPack layer by its media type's suffix, Model Runner's
    archives as tar, anything else (Model Runner's files, a generic artifact's) as one raw file."""
    parsed = parse_layer_media_type(media_type)
    if parsed is not None:
        return parsed[1]
    return LayerFormat.TAR if media_type in DOCKER_ARCHIVE_MEDIA_TYPES else LayerFormat.RAW


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


# Reading untrusted documents: every shape error is an IntegrityError naming the
# field, never a KeyError/TypeError from deep inside (fuzzed in tests/unit/test_fuzz.py).


def parse_document(data: bytes, what: str) -> dict[str, Any]:
    """Decode a JSON object from a registry, a layout or an artifact."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise IntegrityError(f"{what} is not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(document, dict):
        raise IntegrityError(f"{what} is not a JSON object")
    return document


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise IntegrityError(f"{what}: {key!r} has the wrong type ({type(value).__name__})")
    return value


def _str_list(data: dict[str, Any], key: str, what: str) -> list[str]:
    values = _field(data, key, list, what) or []
    if not all(isinstance(v, str) for v in values):
        raise IntegrityError(f"{what}: {key!r} must be a list of strings")
    return list(values)


def _object(data: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    return _field(data, key, dict, what) or {}


def _descriptor_list(data: dict[str, Any], key: str, what: str) -> list[Descriptor]:
    entries = _field(data, key, list, what) or []
    limit = max_layers()
    if len(entries) > limit:
        raise IntegrityError(
            f"{what} lists {len(entries)} {key}; more than the limit of {limit}",
            hint="raise MODELPACK_MAX_LAYERS if this artifact is legitimate",
        )
    return [Descriptor.from_dict(entry, what) for entry in entries]


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
    def from_dict(cls, data: Any, what: str = "descriptor") -> Descriptor:
        """Read a descriptor from an untrusted document; IntegrityError if malformed."""
        if not isinstance(data, dict):
            raise IntegrityError(f"{what}: a descriptor is not a JSON object")
        digest = _field(data, "digest", str, what)
        size = _field(data, "size", int, what)
        if digest is None or size is None:
            raise IntegrityError(f"{what}: a descriptor lacks its digest or size")
        parse_digest(digest)  # digests become file names: only well-formed ones pass
        if not 0 <= size < 1 << 63:
            raise IntegrityError(f"{what}: descriptor {digest} has an impossible size {size}")
        annotations = _object(data, "annotations", what)
        return cls(
            media_type=_field(data, "mediaType", str, what) or "",
            digest=digest,
            size=size,
            annotations={str(k): str(v) for k, v in annotations.items()},
            artifact_type=_field(data, "artifactType", str, what),
            urls=tuple(_str_list(data, "urls", what)),
        )

    @property
    def filepath(self) -> str | None:
        """The model file path a layer carries (current key, then legacy key)."""
        return self.annotations.get(ANNOTATION_FILEPATH) or self.annotations.get(
            LEGACY_ANNOTATION_FILEPATH
        )

    @property
    def named_path(self) -> str | None:
        """The path a layer names: its model filepath, else its OCI title (ORAS, generic tools)."""
        return self.filepath or self.annotations.get(ANNOTATION_TITLE)


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
    def from_dict(cls, data: dict[str, Any], what: str = "manifest") -> Manifest:
        if "config" not in data:
            raise IntegrityError(f"{what} has no config: not an image manifest")
        subject = data.get("subject")
        return cls(
            config=Descriptor.from_dict(data["config"], what),
            layers=tuple(_descriptor_list(data, "layers", what)),
            media_type=_field(data, "mediaType", str, what) or MEDIA_TYPE_OCI_MANIFEST,
            artifact_type=_field(data, "artifactType", str, what),
            annotations={str(k): str(v) for k, v in _object(data, "annotations", what).items()},
            subject=Descriptor.from_dict(subject, what) if subject else None,
        )

    @property
    def is_model(self) -> bool:
        return (
            self.artifact_type in MODEL_ARTIFACT_TYPES
            or self.config.media_type in MODEL_CONFIG_MEDIA_TYPES
        )


def parse_manifest(data: bytes, what: str = "manifest") -> Manifest:
    return Manifest.from_dict(parse_document(data, what), what)


def referrer_artifact_type(document: dict[str, Any]) -> str | None:
    """What a referrer is (a signature, an SBOM): its artifactType, else its config's type."""
    config = document.get("config")
    value = document.get("artifactType") or (
        config.get("mediaType") if isinstance(config, dict) else None
    )
    return value if isinstance(value, str) else None


def manifest_successors(
    media_type: str, document: dict[str, Any], what: str = "manifest"
) -> list[Descriptor]:
    """The descriptors a manifest or index points at, in the order to copy them."""
    if media_type in INDEX_MEDIA_TYPES or "manifests" in document:
        return _descriptor_list(document, "manifests", what)
    successors = [Descriptor.from_dict(document["config"], what)] if "config" in document else []
    successors.extend(_descriptor_list(document, "layers", what))
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
    def from_dict(cls, data: dict[str, Any], what: str = "model config") -> ModelCapabilities:
        return cls(
            input_types=_str_list(data, "inputTypes", what),
            output_types=_str_list(data, "outputTypes", what),
            knowledge_cutoff=_field(data, "knowledgeCutoff", str, what),
            reasoning=_field(data, "reasoning", bool, what),
            tool_usage=_field(data, "toolUsage", bool, what),
            reward=_field(data, "reward", bool, what),
            languages=_str_list(data, "languages", what),
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
    def from_dict(cls, data: dict[str, Any], what: str = "model config") -> ModelDescriptor:
        def text(key: str) -> str | None:
            return _field(data, key, str, what)

        return cls(
            name=text("name"),
            created_at=text("createdAt"),
            authors=_str_list(data, "authors", what),
            vendor=text("vendor"),
            family=text("family"),
            version=text("version"),
            title=text("title"),
            description=text("description"),
            doc_url=text("docURL"),
            source_url=text("sourceURL"),
            datasets_url=_str_list(data, "datasetsURL", what),
            revision=text("revision"),
            licenses=_str_list(data, "licenses", what),
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
    def from_dict(cls, data: dict[str, Any], what: str = "model config") -> ModelTechnicalConfig:
        def text(key: str) -> str | None:
            return _field(data, key, str, what)

        caps = _object(data, "capabilities", what)
        return cls(
            architecture=text("architecture"),
            format=text("format"),
            param_size=text("paramSize"),
            precision=text("precision"),
            quantization=text("quantization"),
            capabilities=ModelCapabilities.from_dict(caps, what) if caps else None,
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
    def from_dict(cls, data: dict[str, Any], what: str = "model config") -> ModelConfig:
        return cls(
            descriptor=ModelDescriptor.from_dict(_object(data, "descriptor", what), what),
            config=ModelTechnicalConfig.from_dict(_object(data, "config", what), what),
            diff_ids=_str_list(_object(data, "modelfs", what), "diffIds", what),
        )


def parse_model_config(data: bytes, what: str = "model config") -> ModelConfig:
    return ModelConfig.from_dict(parse_document(data, what), what)


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
    def from_json(cls, text: str, what: str = "file metadata") -> FileMetadata:
        data = parse_document(text.encode("utf-8", "surrogatepass"), what)

        def number(key: str) -> int:
            return _field(data, key, int, what) or 0

        return cls(
            name=_field(data, "name", str, what) or "",
            mode=number("mode"),
            uid=number("uid"),
            gid=number("gid"),
            size=number("size"),
            mtime=_field(data, "mtime", str, what) or "",
            typeflag=number("typeflag"),
        )
