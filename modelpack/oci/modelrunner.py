"""Docker Model Runner's own model format, read (never written): its config and its layer names.

``docker model package`` without ``--format cncf`` writes an OCI image manifest whose config is
``application/vnd.docker.ai.model.config.v0.2+json`` (v0.1 for older models) and whose layers
are Model Runner's media types (``oci/spec.py``).  Each v0.2 layer is one file named by the
``org.cncf.model.filepath`` annotation ModelPack also uses, so a pull writes it as ModelPack's
raw layers; v0.1 layers may name no file, and Model Runner then names them itself.  Read in
github.com/docker/model-runner v1.2.9, pkg/distribution: ``types/config.go`` (the config),
``internal/bundle/unpack.go`` (``unpackLegacy`` and the names below, ``UnpackFromLayers``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import IntegrityError
from .spec import (
    DOCKER_MODEL_CONFIG_MEDIA_TYPES,
    MEDIA_TYPE_DOCKER_CHAT_TEMPLATE,
    MEDIA_TYPE_DOCKER_DDUF,
    MEDIA_TYPE_DOCKER_GGUF,
    MEDIA_TYPE_DOCKER_LICENSE,
    MEDIA_TYPE_DOCKER_MMPROJ,
    MEDIA_TYPE_DOCKER_SAFETENSORS,
    Descriptor,
    Manifest,
    _drop_empty,
    _field,
    _object,
    _str_list,
    parse_document,
)

_INT32 = range(-(1 << 31), 1 << 31)  # Go's *int32 context_size


def is_docker_model(manifest: Manifest) -> bool:
    """A model ``docker model package`` wrote in Model Runner's own format (v0.1 or v0.2)."""
    return manifest.config.media_type in DOCKER_MODEL_CONFIG_MEDIA_TYPES


def _str_map(data: dict[str, Any], key: str, what: str) -> dict[str, str]:
    values = _object(data, key, what)
    if not all(isinstance(v, str) for v in values.values()):
        raise IntegrityError(f"{what}: {key!r} must map names to strings")
    return dict(values)


@dataclass(frozen=True)
class DockerModelConfig:
    """The config of a Docker Model Runner model (``types.ConfigFile``): what ``docker model
    inspect`` shows.  Only the fields Model Runner defines are kept; their names and meaning
    are Model Runner's (``parameters`` and ``size`` are its display strings, "30.78K", "127kB")."""

    format: str | None = None  # gguf, safetensors, dduf (diffusers in older models)
    quantization: str | None = None
    parameters: str | None = None
    architecture: str | None = None
    size: str | None = None
    context_size: int | None = None
    gguf: dict[str, str] = field(default_factory=dict)
    safetensors: dict[str, str] = field(default_factory=dict)
    diffusers: dict[str, str] = field(default_factory=dict)
    created: str | None = None  # descriptor.created, RFC 3339
    diff_ids: tuple[str, ...] = ()  # rootfs.diff_ids

    def to_dict(self) -> dict[str, Any]:
        """The document in Model Runner's own names, empty fields left out (Go's omitempty)."""
        config = _drop_empty(
            {
                "format": self.format,
                "quantization": self.quantization,
                "parameters": self.parameters,
                "architecture": self.architecture,
                "size": self.size,
                "gguf": self.gguf,
                "safetensors": self.safetensors,
                "diffusers": self.diffusers,
                "context_size": self.context_size,
            }
        )
        return {
            "config": config,
            "descriptor": _drop_empty({"created": self.created}),
            "rootfs": {"type": "rootfs", "diff_ids": list(self.diff_ids)},
        }

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], what: str = "Docker model config"
    ) -> DockerModelConfig:
        """Read an untrusted config; IntegrityError naming the field where Go's decoder would
        fail (a wrong type, a context size beyond int32)."""
        config = _object(data, "config", what)
        texts = ("format", "quantization", "parameters", "architecture", "size")
        context_size = _field(config, "context_size", int, what)
        if context_size is not None and context_size not in _INT32:
            raise IntegrityError(f"{what}: 'context_size' {context_size} is out of range")
        return cls(
            **{key: _field(config, key, str, what) for key in texts},
            context_size=context_size,
            gguf=_str_map(config, "gguf", what),
            safetensors=_str_map(config, "safetensors", what),
            diffusers=_str_map(config, "diffusers", what),
            created=_field(_object(data, "descriptor", what), "created", str, what),
            diff_ids=tuple(_str_list(_object(data, "rootfs", what), "diff_ids", what)),
        )


def parse_docker_model_config(data: bytes, what: str = "Docker model config") -> DockerModelConfig:
    return DockerModelConfig.from_dict(parse_document(data, what), what)


def _sharded(stem: str, suffix: str) -> tuple[str, str]:
    return f"{stem}{suffix}", f"{stem}-{{index:05d}}-of-{{count:05d}}{suffix}"


# Media type -> (the name of the only such layer, the name of one of several): Model Runner's
# unpackGGUFs, unpackSafetensorsLegacy, unpackMultiModalProjector and unpackTemplate.  Several
# projectors or templates get one name, so a pull refuses them as two layers writing one file
# (Model Runner refuses them too: partial.go, MMPROJPath "expected exactly 1").  A license
# Model Runner does not unpack at all; a pull writes every layer, so it gets a name of ours.
_NAMES = {
    MEDIA_TYPE_DOCKER_GGUF: _sharded("model", ".gguf"),
    MEDIA_TYPE_DOCKER_SAFETENSORS: _sharded("model", ".safetensors"),
    MEDIA_TYPE_DOCKER_MMPROJ: ("model.mmproj", "model.mmproj"),
    MEDIA_TYPE_DOCKER_CHAT_TEMPLATE: ("template.jinja", "template.jinja"),
    MEDIA_TYPE_DOCKER_LICENSE: ("LICENSE", "LICENSE-{index}"),
}


def unnamed_layer_names(manifest: Manifest) -> dict[str, str]:
    """Digest -> the file name of each layer of a Docker-format model that names no path, as
    Model Runner names it (shards counted among all layers of their media type, named or not);
    ``{}`` for any other manifest.  A DDUF file is named by its digest, as Model Runner names
    it (unpackDDUF: the blob's file name plus ``.dduf``); an unnamed layer of any other type
    (a ``model.file``, which Model Runner skips) gets no name, so a pull refuses it."""
    if not is_docker_model(manifest):
        return {}
    names: dict[str, str] = {}
    for media_type, (single, several) in _NAMES.items():
        of_type = [layer for layer in manifest.layers if layer.media_type == media_type]
        for index, layer in enumerate(of_type, 1):
            if not layer.named_path and layer.digest not in names:
                template = single if len(of_type) == 1 else several
                names[layer.digest] = template.format(index=index, count=len(of_type))
    for layer in manifest.layers:
        if layer.media_type == MEDIA_TYPE_DOCKER_DDUF and not layer.named_path:
            names.setdefault(layer.digest, f"{layer.digest.split(':', 1)[1]}.dduf")
    return names


def layer_path(desc: Descriptor, names: dict[str, str]) -> str | None:
    """The path a layer names itself, else the one ``names`` (:func:`unnamed_layer_names`) gives."""
    return desc.named_path or names.get(desc.digest)
