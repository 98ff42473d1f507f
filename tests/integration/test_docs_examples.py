"""examples/training/train.py (the Python API page's training script), run as a job would."""

import os
import subprocess
import sys
from pathlib import Path

from safetensors.numpy import load_file

import modelpack

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "training" / "train.py"


def test_training_example_pulls_trains_and_publishes(tiny_model, registry, settings, tmp_path):
    base, tuned = f"{registry.host}/train/bert:base", f"{registry.host}/train/bert:tuned"
    modelpack.build(tiny_model, base, settings=settings)
    modelpack.push(base, settings=settings)
    node = tmp_path / "node"
    env = {**os.environ, "MODELPACK_HOME": str(node), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), base, tuned, "--steps", "5"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"base {node / 'models'}" in result.stdout  # the node cache, not a copy

    out = modelpack.pull(tuned, tmp_path / "tuned", settings=settings)
    before, after = (
        load_file(tiny_model / "model.safetensors"),
        load_file(out / "model.safetensors"),
    )
    assert before.keys() == after.keys()
    changed = [name for name in before if (before[name] != after[name]).any()]
    assert changed == ["pooler.dense.weight"]
    for path in tiny_model.rglob("*"):  # everything else arrives unchanged
        if path.is_file() and path.name != "model.safetensors":
            assert (out / path.relative_to(tiny_model)).read_bytes() == path.read_bytes()
    # Only the new weights (and the new model config) crossed the wire.
    assert ": 2 new blobs" in result.stdout
