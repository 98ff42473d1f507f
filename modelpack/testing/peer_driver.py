"""Push or pull a directory with a Python peer; run by the peers' venv, not ours.

python peer_driver.py oras push 127.0.0.1:5000/x/model:v1 ./model
python peer_driver.py modelpack-client pull 127.0.0.1:5000/x/model:v1 ./out
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def files_of(root: Path) -> list[Path]:
    """Every file below ``root`` as a path relative to it (subdirectories included)."""
    return sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def oras(operation: str, reference: str, path: Path) -> None:
    import oras.provider

    registry = oras.provider.Registry(hostname=reference.split("/", 1)[0], insecure=True)
    if operation == "push":
        os.chdir(path)  # oras-py names files by their path relative to here
        registry.push(target=reference, files=[str(p) for p in files_of(path)], quiet=True)
    else:
        registry.pull(target=reference, outdir=str(path))


def modelpack_client(operation: str, reference: str, path: Path) -> None:
    from modelpack_client import ModelDescriptor, ModelLayer, ModelPackClient, ModelPackConfig

    client = ModelPackClient(insecure=True)
    if operation == "push":
        weight = "application/vnd.cncf.model.weight.v1.raw"
        config = "application/vnd.cncf.model.weight.config.v1.raw"
        layers = [
            ModelLayer(path / p, media_type=config if p.suffix == ".json" else weight,
                       artifact_path=p.as_posix())
            for p in files_of(path)
        ]  # fmt: skip
        client.push(reference, layers, ModelPackConfig(descriptor=ModelDescriptor(name="peer")))
    else:
        client.pull(reference, path)


def main() -> None:
    tool, operation, reference, path = sys.argv[1:5]
    {"oras": oras, "modelpack-client": modelpack_client}[tool](operation, reference, Path(path))


if __name__ == "__main__":
    main()
