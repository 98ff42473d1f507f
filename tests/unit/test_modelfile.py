"""modctl Modelfiles: the docs example, errors with line numbers, generate -> parse."""

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import modelpack
from modelpack.model.source.local import scan_directory
from modelpack.model.source.modelfile import ModelfileError, apply_modelfile, parse_modelfile
from modelpack.oci.spec import LayerKind

# The example in modctl's docs/getting-started.md.
MODCTL_DOCS_EXAMPLE = """\
# Model name (string), such as llama3-8b-instruct, gpt2-xl, qwen2-vl-72b-instruct, etc.
NAME gemma-2b

# Model architecture (string), such as transformer, cnn, rnn, etc.
ARCH transformer

# Model family (string), such as llama3, gpt2, qwen2, etc.
FAMILY gemma

# Model format (string), such as onnx, tensorflow, pytorch, etc.
FORMAT safetensors

# Number of parameters in the model (integer).
PARAMSIZE 16

# Model precision (string), such as bf16, fp16, int8, etc.
PRECISION bf16

# Model quantization (string), such as awq, gptq, etc.
QUANTIZATION awq

# Specify model configuration file, support glob path pattern.
CONFIG config.json

# Specify model configuration file, support glob path pattern.
CONFIG generation_config.json

# Model weight, support glob path pattern.
MODEL *.safetensors

# Specify code, support glob path pattern.
CODE *.py

# Specify documentation, support glob path pattern.
DOC *.md
"""


def _workspace(root: Path) -> Path:
    for rel in ["config.json", "generation_config.json", "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors", "tokenizer.json", "modeling_gemma.py",
                "README.md", "LICENSE", "sub/extra.safetensors"]:  # fmt: skip
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".safetensors"):
            save_file({"w": np.zeros((4, 4), np.float16)}, str(path))
        else:
            path.write_text("{}" if rel.endswith(".json") else rel)
    return root


def test_the_modctl_docs_example_parses_and_classifies_as_modctl_would(tmp_path):
    modelfile = parse_modelfile(MODCTL_DOCS_EXAMPLE)
    assert modelfile.values == {"NAME": "gemma-2b", "ARCH": "transformer", "FAMILY": "gemma",
                                "FORMAT": "safetensors", "PARAMSIZE": "16", "PRECISION": "bf16",
                                "QUANTIZATION": "awq"}  # fmt: skip
    files, kinds = apply_modelfile(modelfile, scan_directory(_workspace(tmp_path)))
    assert kinds == {
        "config.json": LayerKind.WEIGHT_CONFIG,
        "generation_config.json": LayerKind.WEIGHT_CONFIG,
        "model-00001-of-00002.safetensors": LayerKind.WEIGHT,
        "model-00002-of-00002.safetensors": LayerKind.WEIGHT,
        "modeling_gemma.py": LayerKind.CODE,
        "README.md": LayerKind.DOC,
    }
    # As with Go's filepath.Glob, '*' stays in one folder; files no line names stay out.
    assert {f.relpath for f in files} == set(kinds)


def test_build_with_the_modctl_example_uses_its_kinds_and_values(tmp_path, settings):
    root = _workspace(tmp_path / "gemma")
    (tmp_path / "Modelfile").write_text(MODCTL_DOCS_EXAMPLE)
    result = modelpack.build(
        root, "reg.io/ml/gemma:v1", modelfile=tmp_path / "Modelfile", settings=settings
    )
    media = {
        x.plan.file.relpath: x.descriptor.media_type.split(".model.")[1] for x in result.layers
    }
    assert media == {
        "README.md": "doc.v1.raw",
        "config.json": "weight.config.v1.raw",
        "generation_config.json": "weight.config.v1.raw",
        "model-00001-of-00002.safetensors": "weight.v1.raw",
        "model-00002-of-00002.safetensors": "weight.v1.raw",
        "modeling_gemma.py": "code.v1.raw",
    }
    assert result.config.descriptor.name == "gemma-2b"
    assert result.config.descriptor.family == "gemma"
    assert result.config.config.to_dict() | {} == {
        "architecture": "transformer", "format": "safetensors", "paramSize": "16",
        "precision": "bf16", "quantization": "awq",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("NAME a\nFROBNICATE x\n", 2, "unknown command"),
        ("NAME a\n\n# c\nNAME b\n", 4, "duplicate NAME (first on line 1)"),
        ("MODEL a.bin b.bin\n", 1, "exactly one argument"),
        ('DOC "unclosed\n', 1, "unclosed quotes"),
        ("CONFIG\n", 1, "exactly one argument, got 0"),
    ],
)
def test_errors_name_the_line(text, line, message):
    with pytest.raises(ModelfileError) as info:
        parse_modelfile(text, "Modelfile")
    assert f"Modelfile:{line}:" in str(info.value) and message in str(info.value)
    assert info.value.exit_code == 2


def test_quoted_arguments_and_case_insensitive_commands(tmp_path):
    (tmp_path / "my model.bin").write_text("x")
    modelfile = parse_modelfile('model "my model.bin"\n')
    _, kinds = apply_modelfile(modelfile, scan_directory(tmp_path))
    assert kinds == {"my model.bin": LayerKind.WEIGHT}


def test_missing_file_and_conflicting_kinds_are_errors(tmp_path):
    _workspace(tmp_path)
    with pytest.raises(ModelfileError, match=r"Modelfile:2: MODEL missing.bin: no such file"):
        apply_modelfile(
            parse_modelfile("CONFIG config.json\nMODEL missing.bin\n"), scan_directory(tmp_path)
        )
    with pytest.raises(
        ModelfileError, match=r"Modelfile:2: config.json is already CONFIG \(line 1\)"
    ):
        apply_modelfile(
            parse_modelfile("CONFIG config.json\nDOC *.json\n"), scan_directory(tmp_path)
        )


def test_generate_then_build_round_trips(tiny_model, settings):
    (tiny_model / "notes with space.md").write_text("hi")
    path = modelpack.generate_modelfile(tiny_model)
    text = path.read_text()
    assert 'DOC "notes with space.md"' in text and "MODEL model.safetensors" in text
    assert "CONFIG 1_Pooling/config.json" in text and "FAMILY bert" in text
    for line in text.splitlines():  # modctl's grammar: comments, blanks, COMMAND ARG
        assert not line or line.startswith("#") or line.split(" ", 1)[0] in (
            "NAME", "ARCH", "FAMILY", "FORMAT", "PARAMSIZE", "PRECISION", "QUANTIZATION",
            "CONFIG", "MODEL", "CODE", "DOC", "DATASET")  # fmt: skip
    auto = modelpack.build(tiny_model, "reg.io/a:auto", settings=settings)
    from_file = modelpack.build(tiny_model, "reg.io/a:file", modelfile=path, settings=settings)
    assert [(x.plan.file.relpath, x.descriptor.media_type) for x in auto.layers] == [
        (x.plan.file.relpath, x.descriptor.media_type) for x in from_file.layers
    ]
    with pytest.raises(modelpack.UsageError, match="already exists"):
        modelpack.generate_modelfile(tiny_model)
