"""A training job that gets its base model from an OCI registry and publishes the result there.

    python examples/training/train.py BASE_REF OUTPUT_REF [--steps 20]

1. ``modelpack.pull`` puts the base model in the node cache (every worker on the node can
   call it at once; one download, later calls are free) and returns its directory.
2. The weights load with ``safetensors`` (``safetensors.torch.load_file`` in a torch job; the
   numpy flavour here keeps the example dependency-free) and the config and tokenizer with
   transformers, exactly as from a Hugging Face download.
3. A few steps of least-squares fitting of the pooler's dense layer stand in for training.
4. The fine-tuned model (the base files plus the new weights) is built and pushed under
   OUTPUT_REF; the base model's files are not copied into the store (they are hardlinked or
   reflinked), and layers the registry already has are not sent again.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

import modelpack

POOLER = "pooler.dense.weight"


def fine_tune(weights: dict[str, np.ndarray], steps: int) -> dict[str, np.ndarray]:
    """Gradient steps pulling the pooler towards the identity on the token embeddings."""
    embeddings = weights["embeddings.word_embeddings.weight"]
    w = weights[POOLER].copy()
    for _ in range(steps):
        predicted = embeddings @ w.T
        gradient = (predicted - embeddings).T @ embeddings / len(embeddings)
        w -= 0.1 * gradient
    return {**weights, POOLER: w.astype(weights[POOLER].dtype)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("output")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    with modelpack.use_model(args.base) as base:  # held: `cache prune` will not evict it
        weights = load_file(base / "model.safetensors")
        try:
            from transformers import AutoConfig, AutoTokenizer
        except ImportError:
            print("transformers not installed: skipping the config/tokenizer check")
        else:
            config = AutoConfig.from_pretrained(base)
            tokenizer = AutoTokenizer.from_pretrained(base)
            vocab = weights["embeddings.word_embeddings.weight"].shape[0]
            assert vocab == config.vocab_size == len(tokenizer)
        tuned = fine_tune(weights, args.steps)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "model"
            for file in base.rglob("*"):  # config, tokenizer, README: links, not copies
                if file.is_file() and file.name != "model.safetensors":
                    link = out / file.relative_to(base)
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(file)
            save_file(tuned, str(out / "model.safetensors"))
            built = modelpack.build(out, args.output, push=True)
    change = float(np.abs(tuned[POOLER] - weights[POOLER]).mean())
    print(f"base {base}")
    sent = built.pushed.stats.transferred if built.pushed else 0
    print(f"pushed {args.output}@{built.digest}: {sent} new blobs (the weights and the config)")
    print(f"pooler changed by {change:.4f} on average")


if __name__ == "__main__":
    main()
