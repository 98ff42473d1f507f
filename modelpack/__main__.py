"""``python -m modelpack``: the same CLI as the ``modelpack`` console script."""

from modelpack_cli.main import main

if __name__ == "__main__":
    main()
