"""What a changed weights file costs to download again, through Xet and over plain HTTP.

A file of SIZE random bytes (XET_BENCH_MIB, 256 by default) is uploaded through Xet as
version 1; version 2 changes 5 % of its bytes, in 20 contiguous regions of 0.25 % each,
evenly spaced (scattered regions, each region contiguous), and is uploaded through Xet
too.  Then clients that already downloaded version 1 download version 2:

- through Xet (hf_xet as pip installs it, its defaults),
- through Xet with ``HF_XET_CHUNK_CACHE_SIZE_BYTES`` set (10 GB),
- over plain HTTP (``HF_HUB_DISABLE_XET=1``),

and the bytes the gateway sent for that second download are printed, from its log (every
response's body bytes: reconstructions, xorb ranges, resolve).  A measurement, not a
timed assertion.  Run from the repository root:

    PYTHONPATH=. python scripts/xet_download_bench.py
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.gateway import Gateway  # noqa: E402

from modelpack.testing import RegistryServer  # noqa: E402

MIB = 1024 * 1024
SIZE = int(os.environ.get("XET_BENCH_MIB", "256")) // 16 * 16 * MIB  # whole 16 MiB
REPO = "bench/weights"

UPLOAD = """
import json, sys
from huggingface_hub import HfApi
args = json.loads(sys.argv[1])
api = HfApi()
api.create_repo(args["repo"], exist_ok=True)
info = api.upload_file(path_or_fileobj=args["path"], path_in_repo="weights.dat",
                       repo_id=args["repo"], commit_message=args["message"])
print(json.dumps(info.oid))
"""

DOWNLOAD = """
import json, sys
from huggingface_hub import hf_hub_download
args = json.loads(sys.argv[1])
print(json.dumps(hf_hub_download(args["repo"], "weights.dat", revision=args["revision"])))
"""

LINE = re.compile(r"gateway: \S+ (GET|HEAD|POST|PUT) (\S+) (\d{3}) (\d+)B", re.M)


def sent_since(gateway: Gateway, offset: int) -> dict[str, int]:
    """Body bytes the gateway sent since log offset ``offset``, by kind of request."""
    totals: dict[str, int] = {}
    for method, path, _, count in LINE.findall(gateway.log()[offset:]):
        if "/xet-read/v1/fetch/" in path:
            kind = "xet xorb ranges"
        elif "/xet-read/" in path:
            kind = "xet reconstructions"
        elif "/resolve/" in path:
            kind = "resolve (plain HTTP)"
        elif method in ("POST", "PUT"):
            continue
        else:
            kind = "other"
        totals[kind] = totals.get(kind, 0) + int(count)
    return totals


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="xet-bench-"))
    rng = random.Random(42)
    v1 = bytearray(b"".join(rng.randbytes(16 * MIB) for _ in range(SIZE // (16 * MIB))))
    v2 = bytearray(v1)
    regions, changed = 20, SIZE * 5 // 100
    length = changed // regions
    for i in range(regions):
        start = i * (SIZE // regions) + (SIZE // regions - length) // 2
        v2[start : start + length] = rng.randbytes(length)
    (work / "v1").write_bytes(v1)
    (work / "v2").write_bytes(v2)
    differing = sum(1 for a, b in zip(v1[::4096], v2[::4096], strict=True) if a != b) * 4096
    print(f"file {SIZE / MIB:.0f} MiB, {regions} changed regions of {length / MIB:.2f} MiB "
          f"({changed / MIB:.1f} MiB, 5 %; ~{differing / MIB:.1f} MiB differ by sampling)")  # fmt: skip
    with RegistryServer() as registry:
        gateway = Gateway(f"{registry.host}/bench", work / "gateway",
                          env={"MODELPACK_GATEWAY_INLINE_MAX": "200"}).start()  # fmt: skip
        try:
            store = gateway.cache / "xet" / "verified"
            commits = []
            for version in ("v1", "v2"):
                before = sum(p.stat().st_size for p in store.glob("*")) if store.exists() else 0
                started = time.monotonic()
                commits.append(gateway.client(UPLOAD, {"repo": REPO, "path": str(work / version),
                                                       "message": version}, work / "uploader"))  # fmt: skip
                after = sum(p.stat().st_size for p in store.glob("*"))
                print(f"upload {version} through Xet: {time.monotonic() - started:.1f} s, "
                      f"{(after - before) / MIB:.1f} MiB of new xorbs received")  # fmt: skip
            results = {}
            clients = {
                "Xet (hf_xet defaults)": {},
                "Xet, HF_XET_CHUNK_CACHE_SIZE_BYTES=10000000000": {
                    "HF_XET_CHUNK_CACHE_SIZE_BYTES": "10000000000"
                },
                "plain HTTP (HF_HUB_DISABLE_XET=1)": {"HF_HUB_DISABLE_XET": "1"},
            }
            for n, (name, env) in enumerate(clients.items()):
                home = work / f"client{n}"
                for version, commit in zip(("v1", "v2"), commits, strict=True):
                    offset = len(gateway.log())
                    started = time.monotonic()
                    path = gateway.client(DOWNLOAD, {"repo": REPO, "revision": commit}, home,
                                          env_extra=env)  # fmt: skip
                    elapsed = time.monotonic() - started
                    time.sleep(1)  # a request's line is written after its body
                    assert Path(path).read_bytes() == (v1 if version == "v1" else v2)
                    sent = sent_since(gateway, offset)
                    results[(name, version)] = (sent, elapsed)
                    total = sum(sent.values())
                    print(f"{name}: download {version}: {total / MIB:.1f} MiB sent in "
                          f"{elapsed:.1f} s {json.dumps(sent)}")  # fmt: skip
        finally:
            gateway.stop()
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
