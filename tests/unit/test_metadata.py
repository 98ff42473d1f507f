import math
import shutil

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from modelpack.model.metadata import (
    _SAFETENSORS_PRECISION,
    derive_metadata,
    format_param_size,
    read_safetensors_header,
)
from modelpack.model.source.local import scan_directory
from modelpack.oci.spec import LayerKind
from modelpack.testing import make_tiny_model


def _kinds(files):
    from modelpack.model.source import classify

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


def _gguf(path, *, file_type, tensors):
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_file_type(file_type)
    for name, array, raw in tensors:
        writer.add_tensor(name, array, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_header_gives_params_family_quantization(tmp_path):
    import gguf

    root = tmp_path / "gguf"
    root.mkdir()
    _gguf(root / "tiny.Q4_K_M.gguf", file_type=15, tensors=[
        ("token_embd.weight", np.zeros((10, 8), np.float32), None),
        ("blk.0.ffn_up.weight", np.zeros((2, 34), np.uint8), gguf.GGMLQuantizationType.Q8_0),
    ])  # fmt: skip
    files = scan_directory(root)
    derived = derive_metadata(files, _kinds(files), name="g")
    assert derived.config.format == "gguf"
    assert derived.config.param_size == "144"  # 80 float + 64 quantized values
    assert derived.descriptor.family == "llama"
    assert derived.config.quantization == "q4_k_m"
    assert derived.config.precision is None  # quantized blocks have no precision name


def test_gguf_all_float_reports_precision(tmp_path):
    root = tmp_path / "gguf"
    root.mkdir()
    _gguf(
        root / "model-f16.gguf", file_type=1, tensors=[("w", np.zeros((100, 20), np.float16), None)]
    )
    files = scan_directory(root)
    derived = derive_metadata(files, _kinds(files), name="g")
    assert (derived.config.precision, derived.config.quantization, derived.config.param_size) == (
        "float16",
        None,
        "2K",
    )


def test_pytorch_and_onnx_get_a_format_and_nothing_guessed(tmp_path):
    root = tmp_path / "pt"
    root.mkdir()
    (root / "pytorch_model.bin").write_bytes(b"\x80\x02not-unpickled")
    derived = derive_metadata(
        scan_directory(root),
        {"pytorch_model.bin": LayerKind.WEIGHT},
        name="p",
    )
    assert derived.config.format == "pt"
    assert derived.config.param_size is None and derived.config.precision is None


@pytest.mark.parametrize(
    ("card", "licenses", "datasets", "warned"),
    [
        (None, [], [], False),
        ("---\nlicense: [unclosed\n---\n", [], [], True),
        ("---\n- just\n- a list\n---\n", [], [], True),
        ("---\nlicense: other\nlicense_name: llama3\n---\n", ["LicenseRef-llama3"], [], False),
        ("---\nlicense: other\n---\n", [], [], False),
        ("---\nlicense: [mit, apache-2.0]\ndatasets: [squad, https://example.com/d]\n---\n",
         ["MIT", "Apache-2.0"], ["https://huggingface.co/datasets/squad", "https://example.com/d"], False),
    ],
)  # fmt: skip
def test_readme_front_matter_variants(tmp_path, card, licenses, datasets, warned):
    root = make_tiny_model(tmp_path / "m")
    if card is None:
        (root / "README.md").unlink()
    else:
        (root / "README.md").write_text(card + "# card\n")
    files = scan_directory(root)
    derived = derive_metadata(files, _kinds(files), name="m")
    assert derived.descriptor.licenses == licenses
    assert derived.descriptor.datasets_url == datasets
    assert bool(derived.warnings) == warned
    from modelpack.oci.spec import ModelConfig
    from modelpack.schemas import MODEL_CONFIG, validate

    validate(
        ModelConfig(derived.descriptor, derived.config, ["sha256:" + "0" * 64]).to_dict(),
        MODEL_CONFIG,
    )


def test_set_overrides_and_their_validation(tiny_model, settings):
    import modelpack

    result = modelpack.build(
        tiny_model, "reg.io/a:v1", settings=settings,
        set_fields=["config.quantization=awq", 'descriptor.licenses=["MIT"]', "config.precision=",
                    "config.capabilities.reasoning=true"],
    )  # fmt: skip
    assert result.config.config.quantization == "awq"
    assert result.config.descriptor.licenses == ["MIT"]
    assert result.config.config.precision is None
    assert result.config.config.capabilities.reasoning is True
    with pytest.raises(modelpack.UsageError, match=r"config\.capabilities\.languages\[0\]"):
        modelpack.build(
            tiny_model,
            "reg.io/a:v2",
            settings=settings,
            set_fields=['config.capabilities.languages=["english"]'],
        )
    with pytest.raises(modelpack.UsageError, match="expected descriptor.FIELD=VALUE"):
        modelpack.build(tiny_model, "reg.io/a:v3", settings=settings, set_fields=["modelfs.type=x"])


def test_front_matter_that_expands_past_a_budget_is_ignored_at_once():
    """A few lines of YAML aliases name 10^9 values: `modelpack build` hung on such a README
    (its license list was stringified value by value). It is ignored, with a warning."""
    from modelpack.model.metadata import MAX_FRONT_MATTER_VALUES, front_matter

    lines = ["---", "a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]")
    lines += ["license: *i", "---", "# card"]
    warnings: list[str] = []
    assert front_matter("\n".join(lines), "README.md", warnings) == {}
    assert warnings == [
        "README.md: front matter ignored, it expands to more than "
        f"{MAX_FRONT_MATTER_VALUES} values (YAML aliases)"
    ]
    small: list[str] = []
    assert front_matter("---\nlicense: [mit, apache-2.0]\n---\n", "README.md", small) == {
        "license": ["mit", "apache-2.0"]
    }
    assert small == []
