"""`make bench-hubs`, after the hubs case: what a changed weights file costs to download
again (issue 32), from `modelpack serve` through Xet and over plain HTTP, and from MatrixHub;
written to the section "Xet downloads: a changed file again" of docs/benchmarks.md.

    python -m benchmarks.xet_download [--mib 1024] [--workdir DIR] [--no-write] [--from-json]

A file of random bytes (``--mib``, or XET_BENCH_MIB; 1024 by default, whole 16 MiB) is
version 1; version 2, a fine-tune that changed 5 % of it, rewrites 20 contiguous regions of
0.25 % each, evenly spaced.  Both versions are committed to `modelpack serve` through Xet
(hf_xet as pip installs it) and to MatrixHub through LFS (``HF_HUB_DISABLE_XET=1``: MatrixHub
gives no Xet write token).  Then clients with an empty HF_HOME download version 1 and,
once they hold it, version 2 (``hf_hub_download`` at each commit, checked against its
sha256): from `modelpack serve` through Xet with hf_xet's defaults, through Xet with
``HF_XET_CHUNK_CACHE_SIZE_BYTES=10000000000``, and over plain HTTP (``HF_HUB_DISABLE_XET=1``);
from MatrixHub with hf_xet installed (no Xet there: plain HTTP).  The run re-executes itself in
a network namespace of its own (``unshare --net``): both hubs listen on that namespace's
127.0.0.1 and iptables rules there count the bytes each hub's port sent to its clients
(TCP/IP headers included), the same way for both hubs; the gateway's own log splits its
count by kind of request.  A measurement, not a timed assertion.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.hubs import Counters, Hub, Load, matrixhub, ours, versions
from benchmarks.replicas import _clean_env
from benchmarks.report import load_run, replace_section, save_run, section_options

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
HEADING = "## Xet downloads: a changed file again"
RESULTS = HERE / "xet-download-results.json"
NETNS_ENV = "MODELPACK_BENCH_XET_NETNS"
MIB = 1024 * 1024
CHUNK = 16 * MIB
REGIONS, CHANGED_PERCENT = 20, 5
REPO = "bench/weights"
VERSIONS = ("version 1", "version 2")

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

# What each hub offers for the file: the headers huggingface_hub decides Xet or not by.
OFFER = """
import json, sys
from huggingface_hub import get_hf_file_metadata, hf_hub_url
args = json.loads(sys.argv[1])
meta = get_hf_file_metadata(hf_hub_url(args["repo"], "weights.dat", revision=args["revision"]))
print(json.dumps(meta.xet_file_data is not None))
"""

# (name, environment) of each client that downloads both versions, by hub.
CLIENTS = {
    "modelpack serve": [
        ("Xet (hf_xet defaults)", {}),
        ("Xet, HF_XET_CHUNK_CACHE_SIZE_BYTES=10000000000",
         {"HF_XET_CHUNK_CACHE_SIZE_BYTES": "10000000000"}),
        ("plain HTTP (HF_HUB_DISABLE_XET=1)", {"HF_HUB_DISABLE_XET": "1"}),
    ],
    "MatrixHub": [("hf_xet installed (MatrixHub offers no Xet: plain HTTP)", {})],
}  # fmt: skip
UPLOADS = {"modelpack serve": ("Xet", {}), "MatrixHub": ("LFS", {"HF_HUB_DISABLE_XET": "1"})}

# Why, from the sources (the section's last paragraph).
WHY = (
    "The sources say why a client that holds version 1 gets version 2 whole. hf_xet's download "
    "path has no chunk cache: xet-core's `xet_pkg/src/xet_session/file_download_group.rs` "
    "(`XetSession.new_file_download_group`) builds `FileDownloadSession::new(config, None)` "
    '(the optional cache came with xet-core PR #731 for hf-mount: "all existing callers pass '
    'None"), so `HF_XET_CHUNK_CACHE_SIZE_BYTES` changes nothing; and huggingface_hub writes '
    "each version to a new blob named by its sha256, so nothing of version 1 is read again. "
    "Over plain HTTP, from either hub, a changed file is a new file. Xet saves on the way up "
    "(hf_xet's upload dedup sends only the new chunks), not on the way down. Random bytes do "
    "not compress; weights that do would send fewer xorb bytes than plain HTTP."
)

LINE = re.compile(r"gateway: \S+ (GET|HEAD|POST|PUT) (\S+) (\d{3}) (\d+)B", re.M)


@dataclass
class Row:
    """One step: ``hub`` answered ``client``'s ``what`` (upload or download of a version);
    ``sent`` is the bytes counted on the hub's port, by the hub (downloads) or to it (uploads)."""

    hub: str
    client: str
    what: str
    sent: int
    seconds: float
    detail: dict[str, int] = field(default_factory=dict)  # the gateway's log, by kind


@dataclass
class Run:
    date: str
    size: int
    changed: int
    machine: dict[str, str]
    versions: dict[str, str]
    load: dict[str, float]
    offered: dict[str, bool]  # hub -> whether version 2's HEAD offered Xet
    rows: list[Row]

    @classmethod
    def load_json(cls, path: Path) -> Run:
        return load_run(cls, Row, path)

    def save(self, path: Path) -> None:
        save_run(self, path)


# -- the file and its second version -------------------------------------------------------


def changed_regions(size: int) -> list[tuple[int, int]]:
    """(start, length) of the REGIONS contiguous regions version 2 rewrites: CHANGED_PERCENT
    of ``size`` in all, one centred in each of REGIONS equal parts of the file."""
    length = size * CHANGED_PERCENT // 100 // REGIONS
    part = size // REGIONS
    return [(i * part + (part - length) // 2, length) for i in range(REGIONS)]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def make_versions(work: Path, size: int) -> dict[str, Path]:
    """Version 1 (``size`` random bytes) and version 2 in ``work``, written 16 MiB at a time."""
    rng = random.Random(42)
    paths = {v: work / v.replace(" ", "") for v in VERSIONS}
    with open(paths["version 1"], "wb") as f:
        for _ in range(size // CHUNK):
            f.write(rng.randbytes(CHUNK))
    shutil.copyfile(paths["version 1"], paths["version 2"])
    with open(paths["version 2"], "r+b") as f:
        for start, length in changed_regions(size):
            f.seek(start)
            f.write(rng.randbytes(length))
    return paths


# -- clients -------------------------------------------------------------------------------


def hf(hub: Hub, code: str, argument: object, home: Path, **env: str) -> object:
    """``code`` in a huggingface_hub process against ``hub`` (``sys.argv[1]``: ``argument``
    as JSON, its cache under ``home``); its last line of output, as JSON."""
    home.mkdir(parents=True, exist_ok=True)
    environ = _clean_env(home, HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_TOKEN=hub.token,
                         HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1",
                         HF_HUB_DOWNLOAD_TIMEOUT="600", HF_HUB_ETAG_TIMEOUT="600", **env)  # fmt: skip
    done = subprocess.run([PY, "-c", code, json.dumps(argument)], env=environ,
                          capture_output=True, text=True, timeout=3600)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"a client against {hub.name} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def log_kinds(log: str) -> dict[str, int]:
    """Body bytes a gateway's log lines say it sent, by kind of request (uploads left out)."""
    totals: dict[str, int] = {}
    for method, path, _, count in LINE.findall(log):
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


def measure(hub: Hub, work: Path, counters: Counters, files: dict[str, Path],
            digests: dict[str, str]) -> tuple[list[Row], bool]:  # fmt: skip
    """Both versions committed to ``hub``, then each of its CLIENTS downloads version 1 and
    version 2; and whether the hub offered Xet for version 2."""
    rows: list[Row] = []
    log = work / "ours" / "gateway.log"  # benchmarks.hubs.ours puts the gateway's there
    path, env = UPLOADS[hub.name]
    commits = []
    for version in VERSIONS:
        before, started = counters.read(), time.monotonic()
        commits.append(hf(hub, UPLOAD, {"repo": REPO, "path": str(files[version]),
                                        "message": version}, work / "uploader", **env))  # fmt: skip
        seconds, sent = time.monotonic() - started, counters.read()
        key = f"dpt:{hub.port}"
        rows.append(Row(hub.name, f"upload_file through {path}", f"upload {version}",
                        sent.get(key, 0) - before.get(key, 0), seconds))  # fmt: skip
        print(f"  {hub.name}: upload {version} through {path}: {seconds:.1f} s, "
              f"{rows[-1].sent / 1e6:,.1f} MB from the client", flush=True)  # fmt: skip
    shutil.rmtree(work / "uploader", ignore_errors=True)
    offered = bool(hf(hub, OFFER, {"repo": REPO, "revision": commits[1]}, work / "offer"))
    for n, (name, env) in enumerate(CLIENTS[hub.name]):
        home = work / f"client-{n}"
        shutil.rmtree(home, ignore_errors=True)
        for version, commit in zip(VERSIONS, commits, strict=True):
            offset = log.stat().st_size if log.exists() else 0
            before, started = counters.read(), time.monotonic()
            got = hf(hub, DOWNLOAD, {"repo": REPO, "revision": commit}, home, **env)
            seconds = time.monotonic() - started
            time.sleep(1)  # the gateway writes a request's line after its body
            sent, key = counters.read(), f"spt:{hub.port}"
            if sha256(Path(str(got))) != digests[version]:
                raise RuntimeError(f"{hub.name}, {name}: {version} downloaded differs")
            detail = {}
            if log.exists():
                with open(log, "rb") as f:
                    f.seek(offset)
                    detail = log_kinds(f.read().decode(errors="replace"))
            rows.append(Row(hub.name, name, f"download {version}",
                            sent.get(key, 0) - before.get(key, 0), seconds, detail))  # fmt: skip
            print(f"  {hub.name}: {name}: download {version}: {rows[-1].sent / 1e6:,.1f} MB "
                  f"sent in {seconds:.1f} s {json.dumps(detail)}", flush=True)  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)
    return rows, offered


# -- the page ------------------------------------------------------------------------------


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def table(run: Run) -> list[str]:
    downloads: dict[tuple[str, str], dict[str, Row]] = {}
    for r in run.rows:
        if r.what.startswith("download "):
            downloads.setdefault((r.hub, r.client), {})[r.what.removeprefix("download ")] = r
    lines = [
        "| hub | client | version 1: bytes the hub sent | **version 2** (the client has "
        "version 1): bytes the hub sent | version 2's bytes / the file's | version 2: time |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (hub, client), by in downloads.items():
        v1, v2 = by["version 1"], by["version 2"]
        split = ", ".join(f"{k} {v:,}" for k, v in v2.detail.items() if v)
        lines.append(
            f"| {hub} | {client} | {_mb(v1.sent)} | **{_mb(v2.sent)}**"
            f"{f' ({split}: the gateway log)' if split else ''} | "
            f"{v2.sent / run.size:.1%} | {v2.seconds:.1f} s |"
        )
    uploads = [r for r in run.rows if r.what.startswith("upload ")]
    lines += ["", "| hub | commit | bytes the client sent | time |", "|---|---|---:|---:|"]
    lines += [f"| {r.hub} | {r.what.removeprefix('upload ')}, {r.client} | {_mb(r.sent)} | "
              f"{r.seconds:.1f} s |" for r in uploads]  # fmt: skip
    return lines


def section(run: Run) -> str:
    """The page's section, from a run (saved in RESULTS)."""
    load = run.load
    v2 = {(r.hub, r.client): r.sent for r in run.rows if r.what == "download version 2"}
    least = min(v2.values()) if v2 else 0
    offered = "; ".join(f"{hub}: {'yes' if yes else 'no'}" for hub, yes in run.offered.items())
    lines = [
        HEADING,
        "",
        f"Written by `make bench-hubs` (`python -m benchmarks.xet_download`, after the hubs "
        f"case) on {run.date}, one run on this machine: a {run.size / MIB:,.0f} MiB weights "
        f"file of which version 2 changed {run.changed / MIB:,.1f} MiB ({CHANGED_PERCENT} %, "
        f"{REGIONS} regions). " + " ".join(__doc__.split("\n\n")[2].split()),
        "",
        "Versions: " + "; ".join(f"{k} {v}" for k, v in run.versions.items()) + ".",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in run.machine.items()) + f". Load during "
        f"the run ({load['minutes']:g} minutes): 1-minute load average {load['load_min']:.1f} "
        f"to {load['load_max']:.1f}; {load['busy_cores']:.2f} cores busy on average, "
        f"{load['others_cores']:.2f} of them other jobs'.",
        "",
        f"Xet offered for version 2 (its `HEAD` answer): {offered}.",
        "",
        *table(run),
        "",
        f"Every client downloaded version 2 whole: at least {least / run.size:.1%} of the "
        f"file's bytes, where {CHANGED_PERCENT} % changed. " + WHY
        if least >= run.size * 0.9
        else f"The least a client downloaded of version 2: {least / run.size:.1%} of the "
        f"file's bytes, where {CHANGED_PERCENT} % changed.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.xet_download",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--mib", type=int, default=int(os.environ.get("XET_BENCH_MIB", "1024")),
                        help="the file's size in MiB (whole 16 MiB; default XET_BENCH_MIB or 1024)")  # fmt: skip
    parser.add_argument("--workdir", default=str(HERE / ".work" / "xet-download"))
    section_options(parser, RESULTS)
    args = parser.parse_args(argv)
    if args.from_json:
        replace_section(Path(args.output), HEADING, section(Run.load_json(RESULTS)))
        return 0
    if args.mib < 16:
        parser.error("--mib: at least 16")
    if os.geteuid() != 0:
        print("benchmarks.xet_download: needs root (a network namespace, iptables)",
              file=sys.stderr)  # fmt: skip
        return 2
    if os.environ.get(NETNS_ENV) != "1":  # again, in a network namespace of its own
        argv = sys.argv[1:] if argv is None else argv
        os.execvpe("unshare", ["unshare", "--net", "--", PY, "-m", "benchmarks.xet_download",
                               *argv], {**os.environ, NETNS_ENV: "1"})  # fmt: skip
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # servers stopped on the way out
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    size = args.mib // 16 * CHUNK
    load, counters = Load(), Counters()
    load.start()
    files = make_versions(work, size)
    digests = {v: sha256(p) for v, p in files.items()}
    changed = sum(length for _, length in changed_regions(size))
    print(f"file {size / MIB:,.0f} MiB, {REGIONS} changed regions, {changed / MIB:,.1f} MiB "
          f"in all", flush=True)  # fmt: skip
    rows: list[Row] = []
    offered: dict[str, bool] = {}
    try:
        for start in (lambda: ours(work, None, counters), lambda: matrixhub(work, None, counters)):
            with start() as hub:
                measured, offered[hub.name] = measure(hub, work, counters, files, digests)
                rows += measured
    finally:
        for path in files.values():
            path.unlink(missing_ok=True)
    from benchmarks.__main__ import machine

    info = {k: v for k, v in machine().items() if k not in ("skopeo", "registry")}
    info["work folder"] = subprocess.run(["df", "--output=fstype", str(work)], capture_output=True,
                                         text=True).stdout.split()[-1]  # fmt: skip
    every = versions()
    kept = ("modelpack serve", "MatrixHub", "registry", "huggingface_hub", "hf_xet")
    run = Run(time.strftime("%Y-%m-%d"), size, changed, info, {k: every[k] for k in kept},
              load.summary(), offered, rows)  # fmt: skip
    print(section(run))
    if not args.no_write:
        run.save(RESULTS)
        replace_section(Path(args.output), HEADING, section(run))
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
