"""Write a small but real Hugging Face-style model repository.

A BERT with 2 layers and hidden size 32: config.json, tokenizer files, a
real safetensors file written with the ``safetensors`` package (tensor names
and shapes as transformers' BertModel expects), a README with model-card
front matter, a LICENSE and a sentence-transformers ``1_Pooling/`` folder.
Seeded, so the same call always writes the same bytes.  Needs numpy and safetensors
(in the ``[test]`` extra), which the base install does not bring.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
    w
    for w in [
        "the",
        "of",
        "and",
        "to",
        "in",
        "a",
        "is",
        "that",
        "for",
        "it",
        "as",
        "was",
        "with",
        "be",
        "by",
        "on",
        "not",
        "he",
        "i",
        "this",
        "are",
        "or",
        "his",
        "from",
        "at",
        "which",
        "but",
        "have",
        "an",
        "they",
        "you",
        "were",
        "her",
        "she",
        "there",
        "been",
        "one",
        "all",
        "we",
        "their",
        "has",
        "would",
        "when",
        "if",
        "so",
        "no",
        "will",
        "more",
        "can",
        "its",
        "out",
        "up",
        "into",
        "do",
        "any",
        "your",
        "what",
        "some",
        "about",
        "them",
        "model",
        "weight",
    ]
]

README = """---
license: apache-2.0
language:
- en
pipeline_tag: feature-extraction
tags:
- tiny
- testing
---

# tiny-bert

A {hidden}-dimensional, {layers}-layer BERT made by `modelpack.testing.tiny_model`
for demos and tests. Its weights are random: it is the shape of a model, not a
useful one.
"""

LICENSE = """Apache License
Version 2.0, January 2004
http://www.apache.org/licenses/

(The full text of the Apache License 2.0 applies to this test model.)
"""


def bert_tensor_shapes(
    hidden: int, layers: int, intermediate: int, vocab: int, positions: int
) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of transformers' BertModel."""
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (vocab, hidden),
        "embeddings.position_embeddings.weight": (positions, hidden),
        "embeddings.token_type_embeddings.weight": (2, hidden),
        "embeddings.LayerNorm.weight": (hidden,),
        "embeddings.LayerNorm.bias": (hidden,),
        "pooler.dense.weight": (hidden, hidden),
        "pooler.dense.bias": (hidden,),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            shapes[f"{p}attention.self.{name}.weight"] = (hidden, hidden)
            shapes[f"{p}attention.self.{name}.bias"] = (hidden,)
        shapes[f"{p}attention.output.dense.weight"] = (hidden, hidden)
        shapes[f"{p}attention.output.dense.bias"] = (hidden,)
        shapes[f"{p}attention.output.LayerNorm.weight"] = (hidden,)
        shapes[f"{p}attention.output.LayerNorm.bias"] = (hidden,)
        shapes[f"{p}intermediate.dense.weight"] = (intermediate, hidden)
        shapes[f"{p}intermediate.dense.bias"] = (intermediate,)
        shapes[f"{p}output.dense.weight"] = (hidden, intermediate)
        shapes[f"{p}output.dense.bias"] = (hidden,)
        shapes[f"{p}output.LayerNorm.weight"] = (hidden,)
        shapes[f"{p}output.LayerNorm.bias"] = (hidden,)
    return shapes


def _write_json(path: Path, document: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def make_tiny_model(
    directory: str | os.PathLike[str],
    *,
    hidden: int = 32,
    layers: int = 2,
    dtype: str = "float32",
    shards: int = 1,
    seed: int = 0,
) -> Path:
    """Write the model into ``directory`` (created) and return its path.

    ``shards > 1`` splits the weights into ``model-0000i-of-0000n.safetensors``
    files plus ``model.safetensors.index.json``, as large hub models are.
    """
    from ..extras import require

    np = require("numpy", purpose="tiny test models")
    save_file = require(
        "safetensors.numpy", purpose="tiny test models", package="safetensors"
    ).save_file

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    intermediate, positions = hidden * 4, 64
    shapes = bert_tensor_shapes(hidden, layers, intermediate, len(VOCAB), positions)
    rng = np.random.default_rng(seed)
    np_dtype = {"float32": np.float32, "float16": np.float16}[dtype]
    tensors = {
        name: (rng.standard_normal(shape) * 0.02).astype(np_dtype) for name, shape in shapes.items()
    }

    names = sorted(tensors)
    if shards <= 1:
        save_file(tensors, str(root / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map: dict[str, str] = {}
        total = 0
        for index in range(shards):
            part = names[index::shards]
            filename = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
            save_file(
                {n: tensors[n] for n in part}, str(root / filename), metadata={"format": "pt"}
            )
            weight_map.update({n: filename for n in part})
            total += sum(tensors[n].nbytes for n in part)
        _write_json(
            root / "model.safetensors.index.json",
            {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
        )

    _write_json(
        root / "config.json",
        {
            "architectures": ["BertModel"],
            "attention_probs_dropout_prob": 0.1,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "hidden_size": hidden,
            "initializer_range": 0.02,
            "intermediate_size": intermediate,
            "layer_norm_eps": 1e-12,
            "max_position_embeddings": positions,
            "model_type": "bert",
            "num_attention_heads": 2,
            "num_hidden_layers": layers,
            "pad_token_id": 0,
            "torch_dtype": dtype,
            "transformers_version": "4.44.0",
            "type_vocab_size": 2,
            "vocab_size": len(VOCAB),
        },
    )
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    _write_json(
        root / "tokenizer_config.json",
        {"do_lower_case": True, "model_max_length": positions, "tokenizer_class": "BertTokenizer"},
    )
    _write_json(
        root / "special_tokens_map.json",
        {
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
            "pad_token": "[PAD]",
            "sep_token": "[SEP]",
            "unk_token": "[UNK]",
        },
    )
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    _write_json(
        root / "tokenizer.json",
        {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {"id": VOCAB.index(t), "content": t, "single_word": False, "lstrip": False,
                 "rstrip": False, "normalized": False, "special": True}
                for t in special
            ],
            "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                           "strip_accents": None, "lowercase": True},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": None,
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": {w: i for i, w in enumerate(VOCAB)}},
        },
    )  # fmt: skip
    _write_json(root / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ])  # fmt: skip
    _write_json(
        root / "1_Pooling" / "config.json",
        {"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True},
    )
    (root / "README.md").write_text(README.format(hidden=hidden, layers=layers), encoding="utf-8")
    (root / "LICENSE").write_text(LICENSE, encoding="utf-8")
    return root


def main(argv: list[str] | None = None) -> None:
    """``python -m modelpack.testing.tiny_model DIR [--shards N] [--dtype float16] [--hidden N]``"""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m modelpack.testing.tiny_model",
        description="Write a small, real Hugging Face-style model to try modelpack on.",
    )
    parser.add_argument("directory")
    parser.add_argument("--shards", type=int, default=1, help="split the weights into N files")
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument("--hidden", type=int, default=32, help="hidden size (bigger, bigger file)")
    args = parser.parse_args(argv)
    from ..errors import ModelpackError

    try:
        root = make_tiny_model(
            args.directory, shards=args.shards, dtype=args.dtype, hidden=args.hidden
        )
    except ModelpackError as exc:
        raise SystemExit(f"Error: {exc}") from None
    print(root)


if __name__ == "__main__":
    main()
