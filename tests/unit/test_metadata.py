import math
import shutil

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from modelpack.metadata import (
    _SAFETENSORS_PRECISION,
    derive_metadata,
    format_param_size,
    read_safetensors_header,
)
from modelpack.source.local import scan_directory
from modelpack.testing import make_tiny_model


def _kinds(files):
    from modelpack.source import classify

    return {f.relpath: classify(f.relpath, f.size).kind for f in files}


def _independent_stats(paths):
    """Count parameters and dtypes with the safetensors library itself."""
    count, dtypes = 0, {}
    for path in paths:
        with safe_open(str(path), framework="numpy") as f:
            for name in f.keys():
                tensor_slice = f.get_slice(name)
                n = math.prod(tensor_slice.get_shape())
                count += n
                dtype = _SAFETENSORS_PRECISION[tensor_slice.get_dtype()]
                dtypes[dtype] = dtypes.get(dtype, 0) + n
    return count, dtypes


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (6_738_415_616, "6.7B"),
        (8_000_000_000, "8B"),
        (124_439_808, "124.4M"),
        (22_713_216, "22.7M"),
        (30_784, "30.8K"),
        (1_000_000_000_000, "1T"),
        (999, "999"),
        (1_250_000_000_000_000, "1.2Q"),
    ],
)
def test_format_param_size(count, text):
    assert format_param_size(count) == text


def test_param_size_and_precision_match_the_safetensors_headers(tmp_path):
    root = make_tiny_model(tmp_path / "m", dtype="float16")
    files = scan_directory(root)
    derived = derive_metadata(files, _kinds(files), name="m")
    count, dtypes = _independent_stats([root / "model.safetensors"])
    assert derived.config.param_size == format_param_size(count)
    assert derived.config.precision == "float16" == next(iter(dtypes))
    assert derived.config.format == "safetensors"
    assert derived.config.architecture == "transformer"
    assert derived.descriptor.family == "bert"
    assert derived.descriptor.licenses == ["Apache-2.0"]
    assert derived.config.capabilities.languages == ["en"]
    assert derived.config.capabilities.output_types == ["embedding"]


def test_sharded_model_counts_each_tensor_once(tmp_path):
    root = make_tiny_model(tmp_path / "sharded", shards=3)
    single = make_tiny_model(tmp_path / "single")
    # A consolidated copy beside the shards must not be counted twice.
    shutil.copy(single / "model.safetensors", root / "model.safetensors")
    files = scan_directory(root)
    derived = derive_metadata(files, _kinds(files), name="sharded")
    count, _ = _independent_stats(sorted(root.glob("model-*.safetensors")))
    assert count == _independent_stats([single / "model.safetensors"])[0]
    assert derived.config.param_size == format_param_size(count)


def test_mixed_precision_lists_the_dominant_first(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    save_file(
        {"big": np.zeros((100, 10), np.float16), "small": np.zeros((20,), np.float32)},
        str(root / "model.safetensors"),
    )
    files = scan_directory(root)
    derived = derive_metadata(files, _kinds(files), name="mixed")
    assert derived.config.precision == "float16,float32"
    assert derived.config.param_size == "1K"


def test_header_only_is_read(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"w": np.ones((4, 4), np.float32)}, str(path))
    header = read_safetensors_header(path)
    assert header["w"]["shape"] == [4, 4]
    assert header["w"]["dtype"] == "F32"


def test_created_at_follows_source_date_epoch(tmp_path, monkeypatch):
    root = make_tiny_model(tmp_path / "m")
    files = scan_directory(root)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    derived = derive_metadata(files, _kinds(files), name="m")
    assert derived.descriptor.created_at == "2023-11-14T22:13:20Z"


def test_quantization_and_dtype_fallback_from_config(tmp_path):
    root = tmp_path / "q"
    root.mkdir()
    (root / "config.json").write_text(
        '{"model_type": "llama", "torch_dtype": "bfloat16", "transformers_version": "4.4",'
        ' "quantization_config": {"quant_method": "awq"}}'
    )
    (root / "model.gguf").write_bytes(b"GGUF")
    files = scan_directory(root)
    derived = derive_metadata(files, _kinds(files), name="q")
    assert derived.config.quantization == "awq"
    assert derived.config.precision == "bfloat16"
    assert derived.config.format == "gguf"
    assert derived.descriptor.family == "llama"


def test_malformed_readme_front_matter_does_not_break_the_build(tmp_path):
    root = make_tiny_model(tmp_path / "m")
    (root / "README.md").write_text("---\nlicense: [unclosed\n---\n# x\n")
    files = scan_directory(root)
    derived = derive_metadata(files, _kinds(files), name="m")
    assert derived.descriptor.licenses == []


def test_tiny_buffers_are_not_reported_as_precision(tmp_path):
    root = tmp_path / "buffers"
    root.mkdir()
    save_file(
        {"w": np.zeros((1000, 10), np.float32), "position_ids": np.zeros((1, 64), np.int64)},
        str(root / "model.safetensors"),
    )
    files = scan_directory(root)
    assert derive_metadata(files, _kinds(files), name="b").config.precision == "float32"
