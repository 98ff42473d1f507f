"""Write a small, real Hugging Face-style model to try modelpack on.

python examples/make_tiny_model.py ./my-model [--shards N] [--dtype float16]

The same as ``python -m modelpack.testing.tiny_model``, which works from any install
that has numpy and safetensors.
"""

from __future__ import annotations

from modelpack.testing.tiny_model import main

if __name__ == "__main__":
    main()
