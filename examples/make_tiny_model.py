"""Write a small, real Hugging Face-style model to try modelpack on.

python examples/make_tiny_model.py ./my-model [--shards N] [--dtype float16]
"""

from __future__ import annotations

import argparse

from modelpack.testing import make_tiny_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--shards", type=int, default=1, help="split the weights into N files")
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument("--hidden", type=int, default=32, help="hidden size (bigger, bigger file)")
    args = parser.parse_args()
    root = make_tiny_model(args.directory, shards=args.shards, dtype=args.dtype, hidden=args.hidden)
    print(root)


if __name__ == "__main__":
    main()
