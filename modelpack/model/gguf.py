"""Read a GGUF file's header: metadata key/values and tensor shapes, never tensor data.

Layout (ggml docs/gguf.md, little endian): magic ``GGUF``, version (u32),
tensor count (u64), metadata kv count (u64), the key/values, then per tensor
its name, dimensions and ggml type.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..errors import SourceError

MAGIC = b"GGUF"
MAX_STRING = 1 << 20  # a key or string value longer than this is not a sane header
MAX_ITEMS = 1 << 24

_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9

# llama.cpp's LLAMA_FTYPE values (general.file_type) -> quantization names.
FILE_TYPES = {
    0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 8: "q5_0", 9: "q5_1", 10: "q2_k",
    11: "q3_k_s", 12: "q3_k_m", 13: "q3_k_l", 14: "q4_k_s", 15: "q4_k_m", 16: "q5_k_s",
    17: "q5_k_m", 18: "q6_k", 19: "iq2_xxs", 20: "iq2_xs", 21: "q2_k_s", 22: "iq3_xs",
    23: "iq3_xxs", 24: "iq1_s", 25: "iq4_nl", 26: "iq3_s", 27: "iq3_m", 28: "iq2_s",
    29: "iq2_m", 30: "iq4_xs", 31: "iq1_m", 32: "bf16", 36: "tq1_0", 37: "tq2_0",
}  # fmt: skip
# ggml tensor types that are plain floats -> ModelPack precision names.
FLOAT_TYPES = {0: "float32", 1: "float16", 30: "bfloat16", 28: "float64"}


@dataclass
class GGUFHeader:
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)
    tensor_types: dict[int, int] = field(default_factory=dict)  # ggml type -> element count
    parameters: int = 0

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    @property
    def quantization(self) -> str | None:
        file_type = self.metadata.get("general.file_type")
        name = FILE_TYPES.get(file_type) if isinstance(file_type, int) else None
        return None if name in (None, "f32", "f16", "bf16") else name

    @property
    def precision(self) -> str | None:
        """Only when every tensor is a plain float type: quantized blocks have no precision name."""
        if not self.tensor_types or any(t not in FLOAT_TYPES for t in self.tensor_types):
            return None
        ordered = sorted(self.tensor_types.items(), key=lambda kv: -kv[1])
        return ",".join(FLOAT_TYPES[t] for t, _ in ordered)


class _Reader:
    def __init__(self, stream: BinaryIO, what: str) -> None:
        self.stream, self.what = stream, what

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = self.stream.read(size)
        if len(data) != size:
            raise SourceError(f"{self.what}: GGUF header ends early")
        return struct.unpack(fmt, data)[0]

    def string(self) -> str:
        length = self.unpack("<Q")
        if length > MAX_STRING:
            raise SourceError(f"{self.what}: GGUF string of {length} bytes is implausible")
        return self.stream.read(length).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.unpack("<I"), self.unpack("<Q")
            if count > MAX_ITEMS:
                raise SourceError(f"{self.what}: GGUF array of {count} items is implausible")
            return [self.value(item_kind) for _ in range(count)]
        raise SourceError(f"{self.what}: unknown GGUF value type {kind}")


def read_gguf_header(path: str) -> GGUFHeader:
    with open(path, "rb") as f:
        if f.read(4) != MAGIC:
            raise SourceError(f"{path} is not a GGUF file")
        reader = _Reader(f, path)
        header = GGUFHeader(version=reader.unpack("<I"))
        tensors, kv_count = reader.unpack("<Q"), reader.unpack("<Q")
        if tensors > MAX_ITEMS or kv_count > MAX_ITEMS:
            raise SourceError(f"{path}: GGUF header counts are implausible")
        for _ in range(kv_count):
            key = reader.string()
            header.metadata[key] = reader.value(reader.unpack("<I"))
        for _ in range(tensors):
            reader.string()  # name
            dims = [reader.unpack("<Q") for _ in range(reader.unpack("<I"))]
            ggml_type = reader.unpack("<I")
            reader.unpack("<Q")  # offset
            count = math.prod(dims)
            header.parameters += count
            header.tensor_types[ggml_type] = header.tensor_types.get(ggml_type, 0) + count
    return header
