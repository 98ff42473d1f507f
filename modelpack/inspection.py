"""What an artifact is, read without its layers: manifest, model config, referrers, signatures.

The model config is ModelPack's, or (for a model Docker Model Runner packaged in its own
format) Model Runner's: each has its own typed field, the other stays None."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .endpoints import Endpoint
from .errors import ModelpackError, UsageError
from .model.image import ANNOTATION_IMAGE_KIND, ANNOTATION_IMAGE_MODEL
from .model.pickles import PickleScan
from .oci.modelrunner import (
    DockerModelConfig,
    is_docker_model,
    parse_docker_model_config,
    unnamed_layer_names,
)
from .oci.spec import (
    ANNOTATION_PICKLE_SCAN,
    DOCKER_ARCHIVE_MEDIA_TYPES,
    INDEX_MEDIA_TYPES,
    MODEL_CONFIG_MEDIA_TYPES,
    Descriptor,
    Manifest,
    ModelConfig,
    parse_document,
    parse_manifest,
    parse_model_config,
)
from .oci.target import Target, fetch_bytes, referrers_of
from .signing.cosign import COSIGN_ARTIFACT_TYPE, find_signatures

# artifactType values of signature referrers: cosign, sigstore bundles, notation.
SIGNATURE_ARTIFACT_TYPES = (
    "application/vnd.dev.cosign.artifact.sig.v1+json",
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.cncf.notary.signature",
)


@dataclass
class Inspection:
    """An artifact as the store or registry holds it: manifest, model config, referrers and the
    number of signatures, read without fetching any layer.  ``config`` is a ModelPack model's
    config; ``docker_config`` that of a model in Docker Model Runner's own format."""

    reference: str
    descriptor: Descriptor
    manifest: Manifest
    config: ModelConfig | None
    location: str  # "local" or "remote"
    referrers: list[Descriptor] = field(default_factory=list)
    signatures: int = (
        0  # distinct cosign signatures + other signature referrers (sigstore, notation)
    )
    docker_config: DockerModelConfig | None = None

    @property
    def is_model(self) -> bool:
        """A ModelPack model or a Docker Model Runner one (not a generic OCI artifact)."""
        return self.config is not None or self.docker_config is not None

    @cached_property
    def layer_names(self) -> dict[str, str]:
        """Digest -> path of each layer that names none (Model Runner's older models)."""
        return unnamed_layer_names(self.manifest)

    def _path(self, layer: Descriptor) -> str | None:
        """Where a pull writes the layer's file: its file path, or the name Model Runner
        gives one that names none; None for a Model Runner archive (unpacked as it is)."""
        if layer.media_type in DOCKER_ARCHIVE_MEDIA_TYPES:
            return None
        if layer.named_path:
            return layer.filepath
        return self.layer_names.get(layer.digest)

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.manifest.layers)

    @property
    def images(self) -> list[Descriptor]:
        """The images ``modelpack image`` made of this model (referrers that say so)."""
        return [r for r in self.referrers if ANNOTATION_IMAGE_KIND in r.annotations]

    @property
    def image_of(self) -> str | None:
        """For an image ``modelpack image`` made: the model's name@digest."""
        if ANNOTATION_IMAGE_KIND not in self.manifest.annotations:
            return None
        return self.manifest.annotations.get(ANNOTATION_IMAGE_MODEL)

    def to_dict(self) -> dict[str, Any]:
        layers = []
        for layer in self.manifest.layers:
            entry: dict[str, Any] = {
                "mediaType": layer.media_type,
                "digest": layer.digest,
                "size": layer.size,
            }
            if path := self._path(layer):
                entry["path"] = path
            scan = PickleScan.from_annotation(
                layer.named_path or "", layer.annotations.get(ANNOTATION_PICKLE_SCAN)
            )
            if scan is not None:
                entry["pickleScan"] = scan.to_dict()
            layers.append(entry)
        return {
            "reference": self.reference,
            "location": self.location,
            "digest": self.descriptor.digest,
            "mediaType": self.descriptor.media_type,
            "artifactType": self.manifest.artifact_type,
            "size": self.size,
            "manifest": self.manifest.to_dict(),
            "config": self.config.to_dict() if self.config else None,
            "dockerConfig": self.docker_config.to_dict() if self.docker_config else None,
            "layers": layers,
            "referrers": [
                {"digest": r.digest, "mediaType": r.media_type, "artifactType": r.artifact_type}
                for r in self.referrers
            ],
            "signatures": self.signatures,
            "images": [
                {"digest": r.digest, "kind": r.annotations[ANNOTATION_IMAGE_KIND]}
                for r in self.images
            ],
            "imageOf": self.image_of,
        }


def inspect_endpoint(endpoint: Endpoint, location: str, *, attached: bool = True) -> Inspection:
    """Read the manifest and config (never the layers); ``attached`` also lists
    referrers and counts signatures."""
    target = endpoint.target
    root = endpoint.resolved or target.resolve(endpoint.reference)
    if root.media_type in INDEX_MEDIA_TYPES:
        raise UsageError(
            f"{endpoint.display} is an image index, not a model manifest",
            hint=_index_hint(target, root, endpoint),
        )
    manifest = parse_manifest(fetch_bytes(target, root), f"{endpoint.display} manifest")
    config = docker_config = None
    if manifest.config.media_type in MODEL_CONFIG_MEDIA_TYPES:
        config = parse_model_config(
            fetch_bytes(target, manifest.config), f"{endpoint.display} model config"
        )
    elif is_docker_model(manifest):
        docker_config = parse_docker_model_config(
            fetch_bytes(target, manifest.config), f"{endpoint.display} Docker model config"
        )
    inspection = Inspection(
        endpoint.display, root, manifest, config, location, docker_config=docker_config
    )
    if attached:
        inspection.referrers = referrers_of(target, root)
        cosign = find_signatures(target, root, endpoint.tag_reference)
        others = [
            r for r in inspection.referrers
            if r.artifact_type in SIGNATURE_ARTIFACT_TYPES and r.artifact_type != COSIGN_ARTIFACT_TYPE
        ]  # fmt: skip
        inspection.signatures = len(cosign) + len(others)
    return inspection


def _index_hint(target: Target, root: Descriptor, endpoint: Endpoint) -> str:
    """Which manifests an index holds, so the user can name one (best effort)."""
    display = endpoint.display
    try:
        document = parse_document(fetch_bytes(target, root), f"{display} index")
        entries = [
            Descriptor.from_dict(m, f"{display} index") for m in document.get("manifests", [])
        ]
        platforms = [m.get("platform") or {} for m in document.get("manifests", [])]
    except ModelpackError:
        return "inspect one of its manifests by digest"
    name = f"{endpoint.registry_ref.name}@" if endpoint.registry_ref else ""
    listed = ", ".join(
        f"{name}{entry.digest}"
        + (f" ({p.get('os')}/{p.get('architecture')})" if isinstance(p, dict) and p else "")
        for entry, p in zip(entries[:4], platforms, strict=False)
    )
    return f"inspect one of its manifests by digest: {listed}" if listed else "it lists no manifest"
