"""Init-container entrypoint: fetch one model before the serving or training container starts.

Configured only by environment variables, as a pod spec gives them:

  MODELPACK_REF          (required) the model, e.g. harbor.example.com/ml/bert:v1 (or @sha256:...)
  MODELPACK_TARGET       write the files here, exactly as in the source repo (an emptyDir)
  MODELPACK_HOME         or: keep them in this node cache (a hostPath shared by pods)
  MODELPACK_HF_CACHE     also lay them out as a Hugging Face hub cache here (serve by repo id
                         with HF_HUB_CACHE pointing at it and HF_HUB_OFFLINE=1)
  MODELPACK_INCLUDE      comma-separated globs: only these files
  MODELPACK_VERIFY_KEY   refuse the model unless it is signed with this public key (PEM path)
  MODELPACK_PATH_FILE    write the final model path into this file (for the next container)
  DOCKER_CONFIG          directory of a mounted docker-config Secret (registry credentials)

As KServe's storage initializer it is called with two arguments instead,
``modelpack-init modelpack://REF /mnt/models`` (see docs/kubernetes.md).

Exit codes are the CLI's (2 usage, 3 not found, 4 auth, 5 integrity/signature, 6 registry down).
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    import modelpack

    if len(argv) == 2:  # KServe storage initializer: SOURCE_URI DESTINATION
        reference = argv[0].removeprefix("modelpack://").removeprefix("oci://")
        target: str | None = argv[1]
    elif argv:
        print("Error: expected no arguments, or SOURCE_URI DESTINATION", file=sys.stderr)
        return 2
    else:
        reference = os.environ.get("MODELPACK_REF", "").strip()
        target = os.environ.get("MODELPACK_TARGET") or None
    if not reference:
        print("Error: MODELPACK_REF is not set (the model reference to fetch)", file=sys.stderr)
        return 2
    include = [g.strip() for g in os.environ.get("MODELPACK_INCLUDE", "").split(",") if g.strip()]
    hf_cache = os.environ.get("MODELPACK_HF_CACHE") or False
    verify_key = os.environ.get("MODELPACK_VERIFY_KEY") or None
    if target is None and "MODELPACK_HOME" not in os.environ:
        print(
            "Error: set MODELPACK_TARGET (a directory) or MODELPACK_HOME (a node cache)",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    try:
        result = modelpack.pull_model(
            reference,
            target,
            include=include,
            hf_cache=hf_cache,
            verify_key=verify_key,
            progress=True,
        )
    except modelpack.ModelpackError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    if path_file := os.environ.get("MODELPACK_PATH_FILE"):
        with open(path_file, "w", encoding="utf-8") as f:
            f.write(str(result.path))
    summary = {**result.to_dict(), "seconds": round(time.monotonic() - started, 2)}
    summary.pop("files", None)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
