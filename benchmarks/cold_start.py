"""A node's cold start: the model pulled by an init container vs mounted as an image (issue 20).

    python -m benchmarks.cold_start [--size-gib 2] [--shards 4]     # root (runs containerd)

One model, built twice (raw layers, modelpack's default, and tar layers), in a local registry.
Measured in one run, each from an empty node: ``modelpack pull -o`` of either (what the init
container does), ``modelpack image`` (and ``--convert-raw``) themselves, and Debian's containerd
pulling and unpacking the image (what the kubelet does before an image volume or a modelcar is
there: ``ctr images pull``, then ``ctr images mount``). The section ``## Cold start on a node``
of docs/benchmarks.md is rewritten with the numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import models
from benchmarks.report import replace_section
from benchmarks.runner import Measurement, measure
from modelpack.testing.containerd import Containerd, version
from modelpack.testing.registry import RegistryServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
HEADING = "## Cold start on a node"


def _modelpack(*args: str) -> list[str]:
    return [PY, "-m", "modelpack", *args, "-q"]


def run(args: argparse.Namespace, work: Path, disk: dict[str, int]) -> list[Measurement]:
    model = models.large_model(
        Path(args.cache) / f"cold-{args.size_gib:g}g-{args.shards}",
        int(args.size_gib * 1024 * models.MIB), files=args.shards,
    )  # fmt: skip
    env = {"MODELPACK_HOME": str(work / "home"), "MODELPACK_PLAIN_HTTP": "1"}
    results: list[Measurement] = []

    def timed(tool: str, case: str, command: list[str], **extra: str) -> Measurement:
        m = measure(tool, "cold start", case, command, env={**env, **extra})
        print(f"  {case}: {m.seconds:.1f} s{'' if m.ok else ' FAILED ' + m.error}", flush=True)
        results.append(m)
        return m

    with RegistryServer(workdir=work / "registry") as registry:
        raw, tar = f"{registry.host}/bench/raw:v1", f"{registry.host}/bench/tar:v1"
        for ref, fmt in ((raw, "raw"), (tar, "tar")):
            built = measure("modelpack", "build", fmt,
                            _modelpack("build", str(model), "-t", ref, "--layer-format", fmt,
                                       "--push"), env=env)  # fmt: skip
            assert built.ok, built.error
        for ref, fmt in ((raw, "raw"), (tar, "tar")):
            shutil.rmtree(work / "home", ignore_errors=True)
            timed("modelpack", f"pull -o, {fmt} layers (init container)",
                  _modelpack("pull", ref, "-o", str(work / f"out-{fmt}")))  # fmt: skip
            shutil.rmtree(work / f"out-{fmt}", ignore_errors=True)
        timed("modelpack", "modelpack image of the tar model",
              _modelpack("image", tar, f"{tar}-image"))  # fmt: skip
        timed("modelpack", "modelpack image --modelcar of the tar model",
              _modelpack("image", tar, f"{tar}-modelcar", "--modelcar"))  # fmt: skip
        shutil.rmtree(work / "home", ignore_errors=True)
        timed("modelpack", "modelpack image --convert-raw of the raw model",
              _modelpack("image", raw, f"{raw}-image", "--convert-raw"))  # fmt: skip
        for ref, case in ((f"{tar}-image", "image volume"), (f"{tar}-modelcar", "modelcar")):
            with Containerd(work / "containerd") as daemon:
                address = ["ctr", "--address", str(daemon.socket)]
                timed("containerd", f"containerd pull + unpack, {case}",
                      [*address, "images", "pull", "--plain-http", ref])  # fmt: skip
                if case == "image volume":
                    root = daemon.workdir / "root"
                    disk["content"] = _disk_use(root / "io.containerd.content.v1.content")
                    disk["snapshots"] = _disk_use(root / "io.containerd.snapshotter.v1.overlayfs")
                mount = work / "mount"
                mount.mkdir(exist_ok=True)
                timed("containerd", f"containerd mount, {case}",
                      [*address, "images", "mount", ref, str(mount)])  # fmt: skip
                daemon.ctr("images", "unmount", str(mount))
    return results


def _gib(nbytes: int) -> str:
    return f"{nbytes / 1024**3:.2f} GiB"


def _disk_use(folder: Path) -> int:
    """Bytes the files below ``folder`` hold (each inode once)."""
    seen, total = set(), 0
    for path in folder.rglob("*"):
        st = path.lstat()
        if path.is_file() and not path.is_symlink() and st.st_ino not in seen:
            seen.add(st.st_ino)
            total += st.st_blocks * 512
    return total


def write_doc(path: Path, args: argparse.Namespace, results: list[Measurement],
              disk: dict[str, int]) -> None:  # fmt: skip
    from benchmarks.__main__ import machine

    info = machine()
    lines = [
        HEADING,
        "",
        f"Measured {datetime.now(UTC).strftime('%Y-%m-%d')} on {info.get('cpu', '?')} "
        f"({os.cpu_count()} cores), `python -m benchmarks.cold_start` (root): one model of "
        f"{args.size_gib:g} GiB in {args.shards} safetensors shards, a local registry on "
        f"loopback, every row from an empty node (containerd {version('containerd')}, runc "
        f"{version('runc')}, overlayfs snapshotter).",
        "",
        "| what | time | peak RSS |",
        "|---|---|---|",
    ]
    for m in results:
        rss = f"{m.peak_rss_mb:.0f} MB" if m.tool == "modelpack" else "n/a (in the daemon)"
        lines.append(f"| {m.case} | {m.seconds:.1f} s{'' if m.ok else ' (failed)'} | {rss} |")
    lines += [
        "",
        "`modelpack image` of a tar-layered model moves no layer byte (a config and a manifest), "
        "so it takes the same time whatever the model's size; `--convert-raw` pulls the model and "
        "writes and uploads a tar copy of it. containerd's mount is an overlay of the unpacked "
        "layers, shared by every pod on the node: the cost of an image volume's cold start is "
        "the pull, paid once per node.",
        "",
    ]
    times = {m.case: m.seconds for m in results if m.ok}
    pulled, mounted = (
        times.get("pull -o, tar layers (init container)"),
        times.get("containerd pull + unpack, image volume"),
    )
    if pulled and mounted:
        lines[-1:-1] = [
            "",
            f"Here containerd took {mounted / pulled:.1f}x as long as `modelpack pull -o` for "
            "the same tar layers. It writes every layer twice, into its content store and "
            "unpacked into the snapshotter, and keeps both: after the image volume's pull its "
            f"content store held {_gib(disk.get('content', 0))} and its snapshots "
            f"{_gib(disk.get('snapshots', 0))} for a {args.size_gib:g} GiB model (the CRI "
            "plugin's `discard_unpacked_layers` drops the first). Where its time goes was not "
            "profiled; containerd 2.x, which image volumes need, was not measured.",
        ]
    replace_section(path, HEADING, "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "modelpack-bench"))
    parser.add_argument("--workdir", default=str(HERE / ".work-cold"))
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("benchmarks.cold_start runs containerd: it needs root")
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    disk: dict[str, int] = {}
    try:
        results = run(args, work, disk)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_write:
        write_doc(Path(args.output), args, results, disk)
    print(f"cold-start benchmark done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
