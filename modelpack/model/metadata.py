"""Derive the ModelPack model config from the files themselves.

Nothing here loads tensors: safetensors files are read up to the end of
their JSON header (8 + N bytes), config.json and the README front matter are
small.  What a Modelfile or the caller states wins over what is derived.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import SourceError, UsageError
from ..oci.spec import LayerKind, ModelCapabilities, ModelDescriptor, ModelTechnicalConfig
from .source import SourceFile

SAFETENSORS_HEADER_MAX = 100 * 1024 * 1024  # the format's own limit

# safetensors dtype names -> ModelPack precision names (config.md table)
_SAFETENSORS_PRECISION = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3", "F8_E5M2": "float8_e5m2", "I8": "int8", "I16": "int16",
    "I32": "int32", "I64": "int64", "U8": "uint8", "U16": "uint16", "U32": "uint32",
    "U64": "uint64", "BOOL": "bool", "C64": "complex64", "C128": "complex128",
}  # fmt: skip

# torch_dtype strings in config.json -> precision
_TORCH_DTYPE_PRECISION = {
    "float32": "float32", "float": "float32", "float16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "float64": "float64", "int8": "int8", "uint8": "uint8",
}  # fmt: skip

# weight file extension -> ModelPack "format"
_FORMAT_BY_SUFFIX = {
    ".safetensors": "safetensors", ".gguf": "gguf", ".onnx": "onnx", ".bin": "pt",
    ".pt": "pt", ".pth": "pt", ".pt2": "pt", ".h5": "h5", ".keras": "keras",
    ".tflite": "tflite", ".pb": "tensorflow", ".msgpack": "flax", ".ckpt": "ckpt",
    ".mlmodel": "coreml", ".engine": "tensorrt", ".ot": "openvino", ".pkl": "pickle",
}  # fmt: skip

# Common Hugging Face license ids -> SPDX spelling.
_SPDX = {
    "apache-2.0": "Apache-2.0", "mit": "MIT", "bsd-2-clause": "BSD-2-Clause",
    "bsd-3-clause": "BSD-3-Clause", "gpl-2.0": "GPL-2.0", "gpl-3.0": "GPL-3.0",
    "lgpl-3.0": "LGPL-3.0", "agpl-3.0": "AGPL-3.0", "mpl-2.0": "MPL-2.0",
    "cc-by-4.0": "CC-BY-4.0", "cc-by-sa-4.0": "CC-BY-SA-4.0", "cc-by-nc-4.0": "CC-BY-NC-4.0",
    "cc-by-nc-sa-4.0": "CC-BY-NC-SA-4.0", "cc0-1.0": "CC0-1.0", "openrail": "OpenRAIL",
    "bigscience-openrail-m": "BigScience-OpenRAIL-M", "unlicense": "Unlicense",
}  # fmt: skip

# pipeline_tag -> (inputTypes, outputTypes)
_PIPELINE_MODALITIES = {
    "text-generation": (["text"], ["text"]),
    "text2text-generation": (["text"], ["text"]),
    "fill-mask": (["text"], ["text"]),
    "text-classification": (["text"], ["text"]),
    "token-classification": (["text"], ["text"]),
    "question-answering": (["text"], ["text"]),
    "summarization": (["text"], ["text"]),
    "translation": (["text"], ["text"]),
    "feature-extraction": (["text"], ["embedding"]),
    "sentence-similarity": (["text"], ["embedding"]),
    "image-classification": (["image"], ["text"]),
    "image-to-text": (["image"], ["text"]),
    "image-text-to-text": (["text", "image"], ["text"]),
    "text-to-image": (["text"], ["image"]),
    "text-to-speech": (["text"], ["audio"]),
    "automatic-speech-recognition": (["audio"], ["text"]),
    "audio-classification": (["audio"], ["text"]),
    "text-to-video": (["text"], ["video"]),
}


@dataclass
class TensorStats:
    """Parameter count and bytes per precision, summed over weight files."""

    parameters: int = 0
    per_precision: Counter[str] = field(default_factory=Counter)

    @property
    def precision(self) -> str | None:
        """Dtypes holding at least 1% of the parameters, most first.

        The floor keeps buffers such as BERT's int64 ``position_ids`` (512 of
        22.7M values) from being reported as a precision of the model.
        """
        if not self.per_precision:
            return None
        total = sum(self.per_precision.values())
        ordered = sorted(self.per_precision.items(), key=lambda kv: (-kv[1], kv[0]))
        kept = [name for name, count in ordered if count * 100 >= total] or [ordered[0][0]]
        return ",".join(kept)


def read_safetensors_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor name -> dtype/shape/offsets)."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise SourceError(f"{path} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > SAFETENSORS_HEADER_MAX:
            raise SourceError(f"{path}: safetensors header of {length} bytes is implausible")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: safetensors header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise SourceError(f"{path}: safetensors header is not a JSON object")
    return header


def safetensors_stats(paths: Iterable[str | os.PathLike[str]]) -> TensorStats:
    stats = TensorStats()
    for path in paths:
        for name, info in read_safetensors_header(path).items():
            if name == "__metadata__" or not isinstance(info, dict):
                continue
            shape = info.get("shape", [])
            if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
            ):  # ["x"], 5, [null]: int() and iteration failed with a traceback
                raise SourceError(f"{path}: the shape of tensor {name!r} is not a list of sizes")
            count = math.prod(shape)
            dtype = str(info.get("dtype", ""))
            stats.parameters += count
            stats.per_precision[_SAFETENSORS_PRECISION.get(dtype, dtype.lower())] += count
    return stats


def _counted_safetensors(files: list[SourceFile]) -> list[SourceFile]:
    """The safetensors files whose tensors make up the model, without double counting.

    In a folder with a ``*.safetensors.index.json`` only the shards it names
    count (a consolidated copy beside the shards would otherwise count twice).
    """
    by_dir: dict[str, list[SourceFile]] = {}
    indexes: dict[str, list[SourceFile]] = {}
    for f in files:
        parent = str(PurePosixPath(f.relpath).parent)
        if f.relpath.endswith(".safetensors"):
            by_dir.setdefault(parent, []).append(f)
        elif f.relpath.endswith(".safetensors.index.json"):
            indexes.setdefault(parent, []).append(f)
    counted: list[SourceFile] = []
    for parent, shards in by_dir.items():
        named: set[str] = set()
        for index in indexes.get(parent, []):
            try:
                weight_map = json.loads(index.path.read_text("utf-8")).get("weight_map", {})
            except (OSError, ValueError, AttributeError):
                continue
            if not isinstance(weight_map, dict):  # [1], "x", null: no index to go by
                continue
            named.update(str(v) for v in weight_map.values())
        if named:
            counted.extend(f for f in shards if PurePosixPath(f.relpath).name in named)
        else:
            counted.extend(shards)
    return counted


def format_param_size(count: int) -> str:
    """``<count><scale>`` with at most one decimal: 6738415616 -> '6.7B'."""
    for scale, letter in ((10**15, "Q"), (10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if count >= scale:
            value = f"{count / scale:.1f}".rstrip("0").rstrip(".")
            return f"{value}{letter}"
    return str(count)


def _weight_format(files: list[SourceFile], kinds: dict[str, LayerKind]) -> str | None:
    sizes: Counter[str] = Counter()
    for f in files:
        if kinds.get(f.relpath) is not LayerKind.WEIGHT:
            continue
        name = f.relpath.lower()
        for suffix, fmt in _FORMAT_BY_SUFFIX.items():
            if name.endswith(suffix) or f"{suffix}." in PurePosixPath(name).name:
                sizes[fmt] += f.size
                break
    if not sizes:
        return None
    return sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    return [str(value)]


# The model-card front matter block, as huggingface_hub's repocard finds it.
_FRONT_MATTER = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")


def front_matter_problem(text: str) -> str | None:
    """Why a model card's front matter would be ignored (None: it is fine or absent);
    what the gateway answers huggingface_hub's ``validate-yaml`` with."""
    warnings: list[str] = []
    front_matter(text, "README.md", warnings)
    return warnings[0] if warnings else None


def read_front_matter(readme: Path, warnings: list[str]) -> dict[str, Any]:
    """YAML front matter of a model card, found and parsed as huggingface_hub does
    (its ``metadata_load`` is this regex plus ``yaml.safe_load``; importing the
    hub client for it would cost a build 0.4 s).  A malformed card must not stop
    a build: it is ignored, with a warning."""
    try:
        text = readme.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        warnings.append(f"{readme.name}: not read ({exc})")
        return {}
    return front_matter(text, readme.name, warnings)


def split_front_matter(text: str) -> tuple[str | None, str]:
    """(the YAML of a model card's front matter or None, the markdown after it)."""
    match = _FRONT_MATTER.search(text)
    return (match.group(2), text[match.end() :]) if match else (None, text)


MAX_FRONT_MATTER_VALUES = 100_000  # aliases expanded: a few lines of YAML can name 10^9


def expands_past(data: Any, budget: int) -> bool:
    """Whether ``data`` holds more than ``budget`` values once YAML aliases are expanded
    (every later walk over it, ``str()`` included, would take that long)."""
    stack = [data]
    while stack:
        budget -= 1
        if budget < 0:
            return True
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list | tuple | set):
            stack.extend(value)
    return False


def front_matter(text: str, name: str, warnings: list[str]) -> dict[str, Any]:
    """The front matter of a card's text as a mapping; {} (with a warning) if malformed."""
    import yaml

    block, _ = split_front_matter(text)
    if block is None:
        return {}
    try:
        # libyaml when PyYAML has it: 5-10x less CPU than the pure-Python parser on the
        # same card (the gateway's validate-yaml parses what anyone sends).
        card = yaml.load(block, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (yaml.YAMLError, RecursionError) as exc:  # RecursionError: nested too deep
        warnings.append(
            f"{name}: front matter ignored, it is not valid YAML ({type(exc).__name__})"
        )
        return {}
    if card is not None and not isinstance(card, dict):
        warnings.append(f"{name}: front matter ignored, it is not a mapping")
        return {}
    if expands_past(card, MAX_FRONT_MATTER_VALUES):
        warnings.append(
            f"{name}: front matter ignored, it expands to more than "
            f"{MAX_FRONT_MATTER_VALUES} values (YAML aliases)"
        )
        return {}
    return card or {}


def created_at() -> str:
    """RFC 3339 UTC; SOURCE_DATE_EPOCH pins it for reproducible builds."""
    epoch = source_date_epoch()
    moment = epoch if epoch is not None else int(time.time())
    return datetime.fromtimestamp(moment, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r} is not an integer") from None


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(int(timestamp), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class DerivedMetadata:
    descriptor: ModelDescriptor
    config: ModelTechnicalConfig
    warnings: list[str] = field(default_factory=list)


def _licenses(card: dict[str, Any]) -> list[str]:
    licenses = []
    for lic in _as_list(card.get("license")):
        if lic.lower() == "other":
            if name := card.get("license_name"):
                licenses.append("LicenseRef-" + re.sub(r"[^A-Za-z0-9.-]", "-", str(name)))
            continue  # "other" alone names no license: omitted, not guessed
        licenses.append(_SPDX.get(lic.lower(), lic))
    return licenses


def _apply_card(
    card: dict[str, Any], descriptor: ModelDescriptor, config: ModelTechnicalConfig, hub: str
) -> None:
    descriptor.licenses = _licenses(card)
    descriptor.datasets_url = [
        d if "://" in d else f"{hub}/datasets/{d}" for d in _as_list(card.get("datasets"))
    ]
    languages = sorted({lang.lower() for lang in _as_list(card.get("language"))})
    languages = [lang for lang in languages if re.fullmatch("[a-z]{2}", lang)]
    modalities = _PIPELINE_MODALITIES.get(str(card.get("pipeline_tag", "")))
    if languages or modalities:
        caps = ModelCapabilities(languages=languages)
        if modalities:
            caps.input_types, caps.output_types = list(modalities[0]), list(modalities[1])
        config.capabilities = caps


def _apply_hf_config(
    hf_config: dict[str, Any], descriptor: ModelDescriptor, config: ModelTechnicalConfig
) -> None:
    if isinstance(hf_config.get("model_type"), str):
        descriptor.family = descriptor.family or hf_config["model_type"]
    if "transformers_version" in hf_config or "architectures" in hf_config:
        config.architecture = "transformer"
    if not config.precision:
        dtype = hf_config.get("torch_dtype") or hf_config.get("dtype")
        if isinstance(dtype, str) and dtype in _TORCH_DTYPE_PRECISION:
            config.precision = _TORCH_DTYPE_PRECISION[dtype]
    quant = hf_config.get("quantization_config")
    if isinstance(quant, dict) and isinstance(quant.get("quant_method"), str):
        config.quantization = quant["quant_method"]


def _apply_gguf(
    files: list[SourceFile],
    descriptor: ModelDescriptor,
    config: ModelTechnicalConfig,
    warnings: list[str],
) -> None:
    from .gguf import read_gguf_header

    parameters, architectures, quantizations, precisions = 0, set(), set(), set()
    for f in files:
        if not PurePosixPath(f.relpath).name.lower().endswith(".gguf"):
            continue
        try:
            header = read_gguf_header(str(f.path))
        except SourceError as exc:
            warnings.append(f"{f.relpath}: GGUF header not read ({exc.message})")
            continue
        parameters += header.parameters
        architectures.add(header.architecture)
        quantizations.add(header.quantization)
        precisions.add(header.precision)
    if not parameters:
        return
    config.param_size = config.param_size or format_param_size(parameters)
    if len(architectures) == 1 and (arch := architectures.pop()):
        descriptor.family = descriptor.family or arch
    if len(quantizations) == 1 and (quant := quantizations.pop()):
        config.quantization = config.quantization or quant
    if len(precisions) == 1 and (precision := precisions.pop()):
        config.precision = config.precision or precision


def derive_metadata(
    files: list[SourceFile],
    kinds: dict[str, LayerKind],
    *,
    name: str,
    hub: str = "https://huggingface.co",
) -> DerivedMetadata:
    """Build the descriptor and technical config for a model from its files.

    A field that cannot be read from the files is left out, never guessed.
    ``hub`` turns README ``datasets`` ids into URLs.
    """
    by_path = {f.relpath: f for f in files}
    warnings: list[str] = []
    descriptor = ModelDescriptor(name=name, created_at=created_at())
    config = ModelTechnicalConfig(format=_weight_format(files, kinds))

    weights = _counted_safetensors(files)
    if weights:
        stats = safetensors_stats(f.path for f in weights)
        if stats.parameters:
            config.param_size = format_param_size(stats.parameters)
        config.precision = stats.precision
    _apply_gguf(files, descriptor, config, warnings)

    hf_config: dict[str, Any] = {}
    for candidate in ("generation_config.json", "config.json"):  # config.json wins, as in modctl
        if found := by_path.get(candidate):
            hf_config.update(_read_json(found.path))
    if hf_config:
        _apply_hf_config(hf_config, descriptor, config)

    readme = by_path.get("README.md") or by_path.get("README") or by_path.get("readme.md")
    if readme:
        _apply_card(read_front_matter(readme.path, warnings), descriptor, config, hub.rstrip("/"))
    return DerivedMetadata(descriptor=descriptor, config=config, warnings=warnings)
