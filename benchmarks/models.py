"""Synthetic models for the benchmarks: real file layouts, random (incompressible) weights."""

from __future__ import annotations

import json
import os
import random
import struct
from pathlib import Path

MIB = 1024 * 1024
SMALL_FILES = 2000


def _write_random(path: Path, size: int, rng: random.Random, mode: str = "wb") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as f:
        remaining = size
        while remaining > 0:
            n = min(remaining, 16 * MIB)
            f.write(rng.randbytes(n))
            remaining -= n


def _safetensors(path: Path, size: int, rng: random.Random) -> None:
    """A valid safetensors file: one uint8 tensor of ``size`` random bytes."""
    header = json.dumps(
        {"weight": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}
    ).encode()
    header += b" " * (-len(header) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    _write_random(path, size, rng, mode="ab")


def _configs(root: Path) -> None:
    (root / "config.json").write_text(
        json.dumps(
            {
                "model_type": "bench",
                "architectures": ["BenchModel"],
                "transformers_version": "4.44.0",
            }
        )
    )
    (root / "tokenizer.json").write_text(
        json.dumps(
            {
                "version": "1.0",
                "model": {"type": "WordPiece", "vocab": {str(i): i for i in range(5000)}},
            }
        )
    )
    (root / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer"}')
    (root / "README.md").write_text("---\nlicense: apache-2.0\n---\n# benchmark model\n")


def large_model(root: Path, total: int, files: int = 4, seed: int = 1) -> Path:
    """``files`` safetensors shards summing to ``total`` bytes, plus config/tokenizer files."""
    if (root / ".complete").exists():
        return root
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    each = total // files
    for i in range(files):
        _safetensors(root / f"model-{i + 1:05d}-of-{files:05d}.safetensors", each, rng)
    _configs(root)
    (root / ".complete").write_text("")
    return root


def many_files_model(root: Path, count: int = SMALL_FILES, seed: int = 2) -> Path:
    """``count`` files of 4-64 KiB (the many-files case), flat so every tool can push them."""
    if (root / ".complete").exists():
        return root
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        _write_random(root / f"shard-{i:05d}.bin", rng.randint(4 * 1024, 64 * 1024), rng)
    _configs(root)
    (root / ".complete").write_text("")
    return root


def model_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))


def model_bytes(root: Path) -> int:
    return sum(os.path.getsize(p) for p in model_files(root))
