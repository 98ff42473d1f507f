"""The snippets of docs/python-api.md, run as a training script would run them."""

import os
import subprocess
import sys

import modelpack

TRAINING_SCRIPT = """
import sys
import modelpack
from safetensors.numpy import load_file
from transformers import AutoConfig, AutoTokenizer

path = modelpack.pull(sys.argv[1])
weights = load_file(path / "model.safetensors")
config = AutoConfig.from_pretrained(path)
tokenizer = AutoTokenizer.from_pretrained(path)
assert weights["embeddings.word_embeddings.weight"].shape == (config.vocab_size, config.hidden_size)
with modelpack.use_model(sys.argv[1]) as held:
    assert held == path
print(path, len(weights), tokenizer("the model")["input_ids"])
"""


def test_training_script_example(tiny_model, registry, settings, tmp_path):
    ref = f"{registry.host}/docs/bert:v1"
    modelpack.build(tiny_model, ref, settings=settings)
    modelpack.push(ref, settings=settings)
    env = {**os.environ, "MODELPACK_HOME": str(tmp_path / "node"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", TRAINING_SCRIPT, ref],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    path, tensors, _ = result.stdout.split(" ", 2)
    assert path.startswith(str(tmp_path / "node" / "models"))
    assert int(tensors) == 39  # every BERT tensor of the tiny model
