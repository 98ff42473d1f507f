"""Turn measurements into docs/benchmarks.md, a bar chart beside it, and a terminal table."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.runner import Measurement

HARBOR = " (Harbor)"  # the suffix of an operation through Harbor: "push (Harbor)"
OPERATIONS = ("build", "build+push", "push", "push" + HARBOR, "pull", "pull" + HARBOR, "re-push",
              "re-pull")  # fmt: skip
CHARTED = ("build", "push", "push" + HARBOR, "pull", "pull" + HARBOR)
PEERS = ("skopeo", "oras", "modelpack-client")


@dataclass
class Summary:
    case: str
    operation: str
    tool: str
    median: float
    low: float
    high: float
    rss_mb: float
    cpu: float
    runs: int
    failures: int
    bytes: int | None
    store_bytes: int | None
    server_cpu: dict[str, float] = field(default_factory=dict)  # median CPU s of each server part


def load_run(run_type: type, row_type: type, path: Path) -> Any:
    """A benchmark run saved by :func:`save_run` (a dataclass with a ``rows`` list)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data["rows"] = [row_type(**r) for r in data["rows"]]
    return run_type(**data)


def save_run(run: Any, path: Path) -> None:
    path.write_text(json.dumps(asdict(run), indent=1) + "\n", encoding="utf-8")


def section_options(parser: argparse.ArgumentParser, results: Path) -> None:
    """``--output``, ``--no-write`` and ``--from-json``, for a benchmark that writes a section."""
    parser.add_argument(
        "--output", default=str(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md")
    )
    parser.add_argument("--no-write", action="store_true", help="print only; docs/ untouched")
    parser.add_argument("--from-json", action="store_true",
                        help=f"write the section again from {results.name} (no run)")  # fmt: skip


def summarize(results: list[Measurement]) -> list[Summary]:
    groups: dict[tuple[str, str, str], list[Measurement]] = defaultdict(list)
    for m in results:
        groups[(m.case, m.operation, m.tool)].append(m)
    out = []
    for (case, operation, tool), runs in groups.items():
        good = [m for m in runs if m.ok]
        seconds = [m.seconds for m in good] or [float("nan")]
        moved = [m.extra["bytes"] for m in good if "bytes" in m.extra]
        stored = [m.extra["store_bytes"] for m in good if "store_bytes" in m.extra]
        servers = [m.extra["server_cpu"] for m in good if m.extra.get("server_cpu")]
        parts = {name for spent in servers for name in spent}
        out.append(Summary(case, operation, tool, statistics.median(seconds), min(seconds), max(seconds),
                           max((m.peak_rss_mb for m in good), default=0.0),
                           statistics.median([m.cpu_seconds for m in good]) if good else 0.0,
                           len(runs), len(runs) - len(good), max(moved) if moved else None,
                           max(stored) if stored else None,
                           {n: statistics.median([s.get(n, 0.0) for s in servers]) for n in sorted(parts)}))  # fmt: skip
    order = {op: i for i, op in enumerate(OPERATIONS)}
    return sorted(
        out, key=lambda s: (s.case, order.get(s.operation, 99), s.tool != "modelpack", s.tool)
    )


def _find(summaries: list[Summary], case: str, operation: str, tool: str) -> Summary | None:
    return next(
        (s for s in summaries if (s.case, s.operation, s.tool) == (case, operation, tool)), None
    )


def ratio(summaries: list[Summary], case: str, operation: str, peer: str) -> float | None:
    ours, theirs = (
        _find(summaries, case, operation, "modelpack"),
        _find(summaries, case, operation, peer),
    )
    if not ours or not theirs or theirs.failures == theirs.runs or ours.failures == ours.runs:
        return None
    return ours.median / theirs.median


def targets(summaries: list[Summary]) -> list[tuple[str, str, bool | None]]:
    """(target, what was measured, met?) for every target of the performance issue."""
    rows: list[tuple[str, str, bool | None]] = []

    def check(name: str, value: float | None, limit: float, fmt: str = "{:.2f}") -> None:
        if value is None:
            rows.append((name, "not measured", None))
        else:
            rows.append((name, fmt.format(value), value <= limit))

    for op in ("push", "pull"):
        check(f"case a {op}: modelpack / skopeo <= 1.0", ratio(summaries, "a", op, "skopeo"), 1.0)
        for peer in ("oras", "modelpack-client"):
            check(f"case a {op}: modelpack / {peer} <= 0.5", ratio(summaries, "a", op, peer), 0.5)
        check(f"case b {op}: modelpack / skopeo <= 1.5", ratio(summaries, "b", op, "skopeo"), 1.5)
    build = _find(summaries, "a", "build", "modelpack")
    floors = [
        s
        for s in (
            _find(summaries, "a", "build", "sha256sum"),
            _find(summaries, "a", "build", "python hashlib"),
        )
        if s
    ]
    check(
        "case a build / hashing once <= 1.15",
        build.median / min(f.median for f in floors) if build and floors else None,
        1.15,
    )
    for case in ("a", "c"):
        rss = [s.rss_mb for s in summaries if s.case == case and s.tool == "modelpack"]
        check(
            f"case {case} peak RSS of every modelpack command <= 150 MB",
            max(rss) if rss else None,
            150,
            "{:.0f} MB",
        )
    for op in ("re-push", "re-pull"):
        s = _find(summaries, "a", op, "modelpack")
        check(f"case a {op}: under 1 s", s.median if s else None, 1.0, "{:.2f} s")
        check(
            f"case a {op}: 0 bytes transferred",
            float(s.bytes) if s and s.bytes is not None else None,
            0,
            "{:.0f} bytes",
        )
    direct = _find(summaries, "a", "build+push", "modelpack")
    check(
        "case a build --push: weight bytes stored locally",
        float(direct.store_bytes) if direct and direct.store_bytes is not None else None,
        1 << 20,
        "{:.0f} bytes",
    )
    return rows


@dataclass
class HarborRow:
    """One tool's push or pull against plain distribution and through Harbor, same case."""

    case: str
    operation: str  # push or pull
    tool: str
    plain: Summary
    harbor: Summary

    @property
    def ratio(self) -> float:
        return self.harbor.median / self.plain.median

    @property
    def added(self) -> float:
        return self.harbor.median - self.plain.median

    @property
    def plain_server(self) -> float:
        return sum(self.plain.server_cpu.values())

    @property
    def harbor_server(self) -> float:
        return sum(self.harbor.server_cpu.values())


def harbor_rows(summaries: list[Summary]) -> list[HarborRow]:
    """Every push and pull measured both ways (neither side failing every run)."""
    rows = []
    for s in summaries:
        if not s.operation.endswith(HARBOR) or s.failures == s.runs:
            continue
        operation = s.operation.removesuffix(HARBOR)
        plain = _find(summaries, s.case, operation, s.tool)
        if plain and plain.failures < plain.runs:
            rows.append(HarborRow(s.case, operation, s.tool, plain, s))
    return rows


def _cpu(parts: dict[str, float]) -> str:
    """``12.3 (core 4.0, registry 7.1, other 1.2)``, or ``-`` when not recorded."""
    if not parts:
        return "-"
    if len(parts) == 1:
        return f"{sum(parts.values()):.1f}"
    order = ["core", "registry", "other"]
    named = sorted(parts, key=lambda n: order.index(n) if n in order else len(order))
    return f"{sum(parts.values()):.1f} ({', '.join(f'{n} {parts[n]:.1f}' for n in named)})"


def hop_findings(rows: list[HarborRow]) -> list[str]:
    """One sentence per operation: what going through Harbor cost, from the numbers."""
    out = []
    for operation in ("push", "pull"):
        these = [r for r in rows if r.operation == operation]
        if not these:
            continue
        low, high = min(these, key=lambda r: r.ratio), max(these, key=lambda r: r.ratio)
        text = (
            f"**{operation.capitalize()}**: through Harbor took {low.ratio:.2f}x ({low.tool}) to "
            f"{high.ratio:.2f}x ({high.tool}) the time against plain distribution"
        )
        ours = next((r for r in these if r.tool == "modelpack"), None)
        if ours:
            text += f"; modelpack {ours.plain.median:.2f} s -> {ours.harbor.median:.2f} s"
        text += "."
        with_cpu = [r for r in these if r.plain.server_cpu and r.harbor.server_cpu]
        if with_cpu:
            core = statistics.median([r.harbor.server_cpu.get("core", 0.0) for r in with_cpu])
            plain = statistics.median([r.plain_server for r in with_cpu])
            harbor = statistics.median([r.harbor_server for r in with_cpu])
            text += (
                f" The servers spent {harbor:.1f} s of CPU per {operation} through Harbor against "
                f"{plain:.1f} s for distribution alone (medians over the tools), {core:.1f} s of it "
                "in Harbor's core"
            )
            client = round(statistics.median([r.harbor.cpu - r.plain.cpu for r in these]), 1)
            text += f"; the clients' own CPU changed by {client or 0.0:+.1f} s (median)."
        out.append(text)
    return out


def harbor_section(
    summaries: list[Summary], version: str = "", idle: float | None = None
) -> list[str]:
    """The page's "Through Harbor" section, or nothing when no Harbor row was measured."""
    rows = harbor_rows(summaries)
    if not rows:
        return []
    lines = [
        "## Through Harbor",
        "",
        f"Case {rows[0].case}'s push and pull again, the same tools in the same rounds, through "
        f"Harbor{' ' + version if version else ''} on 127.0.0.1 (modelpack.testing.harbor: core, "
        "jobservice and registryctl built from source, Debian's PostgreSQL, Redis and the same "
        "distribution as the plain rows as Harbor's registry). Harbor's core answers `/v2/` "
        "itself (token auth, checks against its database) and proxies every request, blob bytes "
        "included, to its distribution: this is the hop the plain rows do not have. Each push goes "
        "to a fresh private project with that project's robot account (pull and push: with the "
        "admin, skopeo mounted the blobs from an earlier round's project instead of uploading "
        "them; Harbor's distribution may hold the blobs, it still receives and hashes every "
        "byte); each pull fetches the project `bench` as the admin. Every tool reads the "
        "credentials from a docker config, as `docker login` writes it (skopeo with "
        "`--authfile`). Server CPU is user+sys of the server "
        "processes and their children while the command ran (/proc): for distribution its one "
        "process, for Harbor core, its registry, and the other parts (PostgreSQL, Redis, "
        "jobservice, registryctl); client CPU comes from GNU time.",
        "",
        "| operation | tool | distribution s | Harbor s | Harbor / distribution | added s "
        "| client CPU s (distribution / Harbor) | server CPU s: distribution | server CPU s: Harbor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.operation} | {r.tool} | {r.plain.median:.2f} | {r.harbor.median:.2f} | "
            f"{r.ratio:.2f} | {r.added:+.2f} | {r.plain.cpu:.1f} / {r.harbor.cpu:.1f} | "
            f"{_cpu(r.plain.server_cpu)} | {_cpu(r.harbor.server_cpu)} |"
        )
    lines += ["", *(f"- {finding}" for finding in hop_findings(rows))]
    if idle is not None:
        lines += [
            f"- Harbor ran through the whole case, the plain rows included; left alone it used "
            f"{idle:.1%} of a core."
        ]
    return lines


# One colour per tool, the same in every panel: modelpack blue, each peer its own colour, the
# hashing and copying floors of the build in greys.
COLORS = {
    "modelpack": "#2a7ae2",
    "skopeo": "#e8912d",
    "oras": "#3aa655",
    "modelpack-client": "#9b59b6",
    "cp": "#c8c8c8",
    "python hashlib": "#969696",
    "sha256sum": "#5f5f5f",
}
RATIO_NOTE = (
    "A ratio is modelpack's median time divided by the other tool's (ratio = modelpack time / "
    "peer time): below 1.0 means modelpack is faster, 0.5 means it takes half the time, above 1.0 "
    "means it is slower. `build / hashing once` divides modelpack's build by the faster of "
    "sha256sum and python hashlib reading the same files. The `ours / this` column of the results "
    "is the same ratio, against the tool of its row."
)


def chart(summaries: list[Summary], path: Path, columns: int = 3) -> bool:
    """A grid of bar charts, one per case and operation (build, push, pull, and push and pull
    through Harbor), ``columns`` wide,
    median seconds with min-max whiskers, and one legend for the tools of every panel."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        return False
    panels = [(c, op) for c in sorted({s.case for s in summaries}) for op in CHARTED
              if any(s.case == c and s.operation == op for s in summaries)]  # fmt: skip
    if not panels:
        return False
    columns = min(columns, len(panels))
    rows_n = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows_n, columns, figsize=(4 * columns, 3 * rows_n + 0.6),
                             squeeze=False, layout="constrained")  # fmt: skip
    slots = max(len([s for s in summaries if (s.case, s.operation) == p]) for p in panels)
    tools: list[str] = []
    for ax, (case, op) in zip(axes.flat, panels, strict=False):
        rows = [
            s for s in summaries if s.case == case and s.operation == op and s.failures < s.runs
        ]
        rows.sort(key=lambda s: list(COLORS).index(s.tool) if s.tool in COLORS else len(COLORS))
        tools += [s.tool for s in rows if s.tool not in tools]
        x = range(len(rows))
        ax.bar(x, [s.median for s in rows],
               yerr=[[s.median - s.low for s in rows], [s.high - s.median for s in rows]],
               color=[COLORS.get(s.tool, "#999999") for s in rows], capsize=3, width=0.7)  # fmt: skip
        for i, s in enumerate(rows):
            ax.annotate(f"{s.median:.1f}", (i, s.high), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=11)  # fmt: skip
        ax.set_xticks(list(x), [s.tool for s in rows], rotation=30, ha="right", fontsize=11)
        ax.set_xlim(-0.6, slots - 0.4)  # the same bar width in every panel
        alone = f" ({rows[0].tool} only)" if len(rows) == 1 else ""
        ax.set_title(f"case {case}: {op}{alone}", fontsize=14)
        ax.set_ylabel("seconds", fontsize=11)
        ax.tick_params(axis="y", labelsize=10)
        ax.margins(y=0.15)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    # an operation and the same through Harbor on one scale, so their bars compare by eye
    drawn = dict(zip(panels, axes.flat, strict=False))
    for (case, op), ax in drawn.items():
        if op.endswith(HARBOR) and (plain := drawn.get((case, op.removesuffix(HARBOR)))):
            top = max(ax.get_ylim()[1], plain.get_ylim()[1])
            ax.set_ylim(0, top)
            plain.set_ylim(0, top)
    tools.sort(key=lambda t: list(COLORS).index(t) if t in COLORS else len(COLORS))
    fig.legend(
        handles=[Patch(color=COLORS.get(t, "#999999"), label=t) for t in tools],
        loc="outside upper center",
        ncol=len(tools),
        frameon=False,
        fontsize=12,
        title="median seconds, whiskers min-max: lower is faster",
        title_fontsize=12,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def summaries_from_page(text: str) -> list[Summary]:
    """The summaries back from the "All results" table of a docs/benchmarks.md that `write`
    wrote, so the chart can be drawn again without measuring again."""
    table = text[text.index("## All results") :].split("\n\n")[1].splitlines()[2:]
    out = []
    for line in table:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        case, operation, tool, median, span, _ratio, rss, cpu, moved, runs = cells
        low, high = span.split("-")
        total, failed = runs.rstrip(")").split(" (")
        out.append(Summary(case, operation, tool, float(median), float(low), float(high),
                           float(rss.removesuffix(" MB")), float(cpu), int(total), int(failed),
                           None if moved == "-" else round(float(moved.removesuffix(" MB").replace(",", "")) * 1e6),
                           None))  # fmt: skip
    return out


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.1f} MB"


def write(
    path: Path,
    results: list[Measurement],
    cases: list,
    machine: dict[str, str],
    args: argparse.Namespace,
    harbor_idle: float | None = None,
) -> None:
    summaries = summarize(results)
    through_harbor = harbor_section(summaries, machine.get("harbor", "").split(" ")[0], harbor_idle)
    image = path.with_suffix(".png")
    has_chart = chart(summaries, image)
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m benchmarks --rounds {args.rounds} --cases {args.cases}"
        + (f" --size-gib {args.size_gib}" if args.size_gib else "")
        + (" --harbor none" if getattr(args, "harbor", "") == "none" else "")
        + f"`) on {time.strftime('%Y-%m-%d')}. Every tool runs in the same session, alternating, "
        f"{args.rounds} rounds; times are medians with min-max; peak RSS and CPU (user+sys) come from "
        "GNU time. Each push goes to a fresh, empty registry (nothing to skip or mount); each pull "
        "to an empty directory (modelpack: `pull -o DIR` with an empty MODELPACK_HOME; skopeo: an OCI "
        "layout). Registries are Debian's CNCF distribution on 127.0.0.1, on the same 2 cores"
        + (
            "; the operations marked (Harbor) go through Harbor instead (see Through Harbor)."
            if through_harbor
            else "."
        ),
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in machine.items()),
        "",
        "## Cases",
        "",
        *(f"- **{c.name}**: {c.label} ({c.size / 1024**3:.2f} GiB)" for c in cases),
        "",
    ]
    if has_chart:
        lines += [f"[![benchmarks]({image.name})]({image.name})", ""]
    lines += ["## Targets", "", RATIO_NOTE, "", "| target | measured | met |", "|---|---|---|"]
    for name, measured, met in targets(summaries):
        lines.append(f"| {name} | {measured} | {'yes' if met else 'no' if met is False else '-'} |")
    lines += ["", "## All results", "",
              "| case | operation | tool | median s | min-max s | ours / this | peak RSS | CPU s | bytes moved | runs (failed) |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for s in summaries:
        theirs = (
            ""
            if s.tool == "modelpack"
            else (
                f"{r:.2f}"
                if (r := ratio(summaries, s.case, s.operation, s.tool)) is not None
                else "-"
            )
        )
        lines.append(
            f"| {s.case} | {s.operation} | {s.tool} | {s.median:.2f} | {s.low:.2f}-{s.high:.2f} | {theirs} | "
            f"{s.rss_mb:.0f} MB | {s.cpu:.1f} | {_mb(s.bytes)} | {s.runs} ({s.failures}) |"
        )
    if through_harbor:
        lines += ["", *through_harbor]
    failures = [m for m in results if not m.ok]
    if failures:
        lines += ["", "## Failures", ""] + [
            f"- {m.case} {m.operation} {m.tool}: {m.error}" for m in failures[:20]
        ]
    notes = Path(__file__).with_name("NOTES.md")
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    lines += kept_sections(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path}" + (f" and {image}" if has_chart else ""))


# Sections other benchmarks write into the same page (`make bench-cluster`, the ranged
# download benchmark): a `make bench` rewrites the page and must keep them.
KEPT_SECTIONS = (
    "## The gateway (`modelpack serve`)",  # written by hand from `--cases gateway` and gateway_load
    "## The gateway beside nginx",  # benchmarks/gateway_speed.py (`--cases speed`)
    "## Many nodes at once",
    "## One big blob over a capped link",
    "## Cold start on a node",
    "## Uploads and downloads through replicas",  # benchmarks/replicas.py, part of `make bench`
    "## MatrixHub side by side",  # benchmarks/hubs.py (`make bench-hubs`)
    "## Xet downloads: a changed file again",  # benchmarks/xet_download.py (`make bench-hubs`)
)


def replace_section(path: Path, heading: str, text: str) -> None:
    """Put ``text`` (which starts with ``heading``) where that section of the page is, up to
    the next ``## `` heading, or at the end: how each standalone benchmark writes its part."""
    page = path.read_text(encoding="utf-8") if path.exists() else ""
    if heading in page:
        head, rest = page.split(heading, 1)
        tail = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
        page = head + text.rstrip("\n") + "\n" + ("\n" + tail if tail else "")
    else:
        page = page.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    path.write_text(page, encoding="utf-8")


def kept_sections(path: Path) -> list[str]:
    """The lines of every KEPT_SECTIONS section of the page at ``path``, in page order."""
    if not path.exists():
        return []
    kept: list[str] = []
    keeping = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            keeping = line.strip() in KEPT_SECTIONS
            if keeping:
                kept.append("")
        if keeping:
            kept.append(line)
    return kept


def print_table(results: list[Measurement]) -> None:
    from rich.console import Console
    from rich.table import Table

    summaries = summarize(results)
    table = Table(title="modelpack benchmarks (median seconds)")
    for column in ("case", "op", "tool", "median", "min-max", "ours/this", "RSS MB"):
        table.add_column(
            column, justify="right" if column not in ("case", "op", "tool") else "left"
        )
    for s in summaries:
        r = ratio(summaries, s.case, s.operation, s.tool) if s.tool != "modelpack" else None
        table.add_row(s.case, s.operation, s.tool, f"{s.median:.2f}", f"{s.low:.2f}-{s.high:.2f}",
                      "" if r is None else f"{r:.2f}", f"{s.rss_mb:.0f}",
                      style="bold" if s.tool == "modelpack" else None)  # fmt: skip
    Console().print(table)
    for name, measured, met in targets(summaries):
        print(f"{'MET ' if met else 'MISS' if met is False else '----'} {name}: {measured}")


def main(argv: list[str] | None = None) -> None:
    """`python -m benchmarks.report`: draw docs/benchmarks.png again from the numbers of
    docs/benchmarks.md (a new chart layout without a new run of `make bench`)."""
    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--page", default=str(Path(__file__).parents[1] / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    page = Path(args.page)
    if not chart(summaries_from_page(page.read_text(encoding="utf-8")), page.with_suffix(".png")):
        raise SystemExit("the chart needs matplotlib: pip install '.[bench]'")
    print(f"wrote {page.with_suffix('.png')}")


if __name__ == "__main__":
    main()
