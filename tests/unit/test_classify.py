import pytest

from modelpack.model.source.classify import UNKNOWN_WEIGHT_THRESHOLD, classify, is_skipped
from modelpack.oci.spec import LayerKind

W, C, D, K, S = (
    LayerKind.WEIGHT,
    LayerKind.WEIGHT_CONFIG,
    LayerKind.DOC,
    LayerKind.CODE,
    LayerKind.DATASET,
)


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("model.safetensors", W),
        ("model-00001-of-00002.safetensors", W),
        ("pytorch_model.bin", W),
        ("onnx/model.onnx", W),
        ("llama-3-8b.Q4_K_M.gguf", W),
        ("config.json", C),
        ("1_Pooling/config.json", C),
        ("model.safetensors.index.json", C),
        ("tokenizer.json", C),
        ("tokenizer.model", C),
        ("vocab.txt", C),
        ("merges.txt", C),
        ("generation_config.json", C),
        ("chat_template.jinja", C),
        ("README.md", D),
        ("LICENSE", D),
        ("LICENSE.txt", D),
        ("notes.txt", D),
        ("images/arch.png", D),
        ("modeling_bert.py", K),
        ("requirements.txt", K),
        ("Makefile", K),
        ("data/train.parquet", S),
        ("datasets/eval.jsonl", S),
        ("data/sample.csv", S),
        ("eval.csv", D),  # outside a data folder modctl calls it a doc
    ],
)
def test_known_files_follow_modctl(path, kind):
    result = classify(path, 1000)
    assert result.kind is kind
    assert result.untested is False


def test_unknown_small_file_is_code_marked_untested():
    result = classify("weird.xyz", 10)
    assert (result.kind, result.untested) == (K, True)


def test_unknown_large_file_is_weight_marked_untested():
    result = classify("blob.xyz", UNKNOWN_WEIGHT_THRESHOLD + 1)
    assert (result.kind, result.untested) == (W, True)


def test_case_insensitive():
    assert classify("MODEL.SAFETENSORS", 1).kind is W
    assert classify("readme.MD", 1).kind is D


@pytest.mark.parametrize(
    "name", [".git", ".cache", ".DS_Store", "__pycache__", "x.pyc", "Modelfile", "Thumbs.db"]
)
def test_skipped(name):
    assert is_skipped(name)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "README.md"])
def test_not_skipped(name):
    assert not is_skipped(name)
