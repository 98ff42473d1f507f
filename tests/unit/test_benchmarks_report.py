"""benchmarks/report.py: the page it writes says how a ratio reads, its chart is a grid with a
legend, and the chart can be drawn again from the numbers of the page."""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.runner import Measurement

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "benchmarks.md"


def _results() -> list[Measurement]:
    out = []
    for tool, seconds in (("modelpack", [2.0, 2.2, 2.1]), ("skopeo", [4.0, 4.4, 4.2])):
        for s in seconds:
            out.append(Measurement(tool, "push", "a", s, 40.0, 1.0, True, extra={"bytes": 10**6}))
    out.append(Measurement("oras", "pull", "a", 3.0, 30.0, 1.0, True))
    out.append(Measurement("modelpack", "pull", "a", 1.5, 45.0, 1.0, True, extra={"bytes": 0}))
    return out


def _write(tmp_path: Path) -> Path:
    page = tmp_path / "benchmarks.md"
    args = argparse.Namespace(rounds=3, cases="a", size_gib=0)
    report.write(page, _results(), [], {"cpu": "test"}, args)
    return page


def test_the_page_says_which_way_a_ratio_reads(tmp_path):
    assert "below 1.0 means modelpack is faster" in report.RATIO_NOTE
    assert "modelpack time / peer time" in report.RATIO_NOTE
    written = _write(tmp_path).read_text(encoding="utf-8")
    targets = written[written.index("## Targets") : written.index("| target |")]
    assert report.RATIO_NOTE in targets
    assert report.RATIO_NOTE in PAGE.read_text(encoding="utf-8")  # and the committed page


def test_the_numbers_come_back_from_the_page(tmp_path):
    again = report.summaries_from_page(_write(tmp_path).read_text(encoding="utf-8"))
    summaries = report.summarize(_results())
    key = [(s.case, s.operation, s.tool, s.runs, s.failures) for s in summaries]
    assert [(s.case, s.operation, s.tool, s.runs, s.failures) for s in again] == key
    for a, b in zip(again, summaries, strict=True):
        assert (a.median, a.low, a.high) == pytest.approx((b.median, b.low, b.high), abs=0.005)
        assert a.bytes == b.bytes
    committed = report.summaries_from_page(PAGE.read_text(encoding="utf-8"))
    push = next(s for s in committed if (s.case, s.operation, s.tool) == ("a", "push", "oras"))
    assert (push.median, push.low, push.high, push.runs) == (13.02, 12.61, 13.43, 2)
    harbor = next(
        s for s in committed if (s.case, s.operation, s.tool) == ("a", "push (Harbor)", "oras")
    )
    assert (harbor.median, harbor.low, harbor.high, harbor.runs) == (12.40, 12.14, 12.67, 2)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_the_committed_chart_is_a_grid():
    # Nine panels in one 3960 x 440 strip could not be read; a grid of 3 columns can.
    width, height = _png_size(ROOT / "docs" / "benchmarks.png")
    assert width <= 1600 and width / height <= 2, (width, height)


def test_the_chart_has_a_panel_grid_and_a_legend(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.figure

    saved: list[matplotlib.figure.Figure] = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    summaries = report.summaries_from_page(PAGE.read_text(encoding="utf-8"))
    assert report.chart(summaries, tmp_path / "chart.png")
    (fig,) = saved
    panels = [ax for ax in fig.axes if ax.get_visible()]
    # the committed run is case a alone: build, push, push (Harbor), pull, pull (Harbor)
    assert [ax.get_title() for ax in panels] == [
        "case a: build", "case a: push", "case a: push (Harbor)", "case a: pull",
        "case a: pull (Harbor)",
    ]  # fmt: skip
    assert {ax.get_subplotspec().get_geometry()[:2] for ax in panels} == {(2, 3)}
    # an operation and the same through Harbor share their scale
    assert panels[1].get_ylim() == panels[2].get_ylim()
    assert panels[3].get_ylim() == panels[4].get_ylim()
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[:4] == ["modelpack", "skopeo", "oras", "modelpack-client"]


def test_a_rewrite_keeps_the_sections_other_benchmarks_wrote(tmp_path):
    """`make bench` rewrote docs/benchmarks.md whole and dropped the cluster section."""
    from benchmarks.report import kept_sections

    page = tmp_path / "benchmarks.md"
    page.write_text(
        "# Benchmarks\n\n## Targets\n\nold\n\n## Many nodes at once\n\n| a | b |\n\n"
        "### detail\n\ntext\n\n## All results\n\nold too\n",
        encoding="utf-8",
    )
    assert kept_sections(page) == [
        "", "## Many nodes at once", "", "| a | b |", "", "### detail", "", "text", "",
    ]  # fmt: skip
    assert kept_sections(tmp_path / "missing.md") == []


def _through_harbor() -> list[Measurement]:
    """Push and pull of case a against distribution and through Harbor, with server CPU."""
    out = []
    for tool, plain, harbor in (("modelpack", 8.0, 10.0), ("skopeo", 12.0, 18.0)):
        for operation, factor in (("push", 1.0), ("pull", 0.5)):
            for i in range(3):
                out.append(Measurement(tool, operation, "a", plain * factor + i * 0.1, 40.0, 2.0,
                                       True, extra={"server_cpu": {"registry": 5.0}}))  # fmt: skip
                out.append(Measurement(tool, f"{operation} (Harbor)", "a", harbor * factor + i * 0.1,
                                       40.0, 2.5, True,
                                       extra={"server_cpu": {"core": 4.0, "registry": 5.0,
                                                             "other": 0.5}}))  # fmt: skip
    # oras: its Harbor push failed every run, so it has no Harbor row
    out.append(Measurement("oras", "push", "a", 15.0, 900.0, 4.0, True))
    out.append(Measurement("oras", "push (Harbor)", "a", 1.0, 0.0, 0.0, False, error="denied"))
    return out


def test_a_harbor_row_pairs_a_tool_with_its_row_against_distribution():
    rows = report.harbor_rows(report.summarize(_through_harbor()))
    assert [(r.operation, r.tool) for r in rows] == [
        ("push", "modelpack"), ("push", "skopeo"), ("pull", "modelpack"), ("pull", "skopeo"),
    ]  # fmt: skip
    push = rows[0]
    assert (push.plain.median, push.harbor.median) == pytest.approx((8.1, 10.1))
    assert push.ratio == pytest.approx(10.1 / 8.1)
    assert push.added == pytest.approx(2.0)
    assert (push.plain_server, push.harbor_server) == pytest.approx((5.0, 9.5))
    assert push.harbor.server_cpu == {"core": 4.0, "other": 0.5, "registry": 5.0}


def test_the_page_says_what_the_harbor_hop_costs(tmp_path):
    page = tmp_path / "benchmarks.md"
    args = argparse.Namespace(rounds=3, cases="a", size_gib=0, harbor="v2.15.2")
    machine = {"cpu": "test", "harbor": "v2.15.2 (harbor-v2.15.2-abc)"}
    report.write(page, _through_harbor(), [], machine, args, harbor_idle=0.004)
    text = page.read_text(encoding="utf-8")
    section = text[text.index("## Through Harbor") : text.index("## Failures")]
    assert "through Harbor v2.15.2 on 127.0.0.1" in section
    assert (
        "| push | modelpack | 8.10 | 10.10 | 1.25 | +2.00 | 2.0 / 2.5 | 5.0 "
        "| 9.5 (core 4.0, registry 5.0, other 0.5) |" in section
    )
    assert "| pull | skopeo | 6.10 | 9.10 | 1.49 | +3.00 |" in section
    assert "oras" not in section  # its Harbor push failed: in Failures, not compared
    assert "- oras push (Harbor)" not in section and "a push (Harbor) oras: denied" in text
    assert (
        "**Push**: through Harbor took 1.25x (modelpack) to 1.50x (skopeo) the time against "
        "plain distribution; modelpack 8.10 s -> 10.10 s. The servers spent 9.5 s of CPU per "
        "push through Harbor against 5.0 s for distribution alone (medians over the tools), "
        "4.0 s of it in Harbor's core; the clients' own CPU changed by +0.5 s (median)."
    ) in section
    assert "left alone it used 0.4% of a core" in section
    assert "the operations marked (Harbor) go through Harbor" in text
    # the rows through Harbor come back from the page like the others
    again = report.summaries_from_page(text)
    harbor = [s for s in again if s.operation.endswith("(Harbor)")]
    assert [(s.operation, s.tool) for s in harbor] == [
        ("push (Harbor)", "modelpack"), ("push (Harbor)", "oras"), ("push (Harbor)", "skopeo"),
        ("pull (Harbor)", "modelpack"), ("pull (Harbor)", "skopeo"),
    ]  # fmt: skip


def test_without_harbor_rows_the_page_has_no_harbor_section(tmp_path):
    text = _write(tmp_path).read_text(encoding="utf-8")
    assert "## Through Harbor" not in text and "(Harbor)" not in text
    assert report.harbor_section(report.summarize(_results())) == []


def test_server_cpu_is_given_whole_and_by_part():
    assert report._cpu({}) == "-"
    assert report._cpu({"registry": 5.04}) == "5.0"
    assert report._cpu({"other": 1.0, "registry": 2.0, "core": 3.0}) == (
        "6.0 (core 3.0, registry 2.0, other 1.0)"
    )


def test_a_rewrite_of_the_committed_page_keeps_every_section_it_does_not_write(tmp_path):
    """The gateway's section (written by hand, cited by docs/security.md) was not kept."""
    written_by_bench = {
        "## Machine", "## Cases", "## Targets", "## All results", "## Through Harbor",
        "## Failures", "## Where the time goes (profiles)",
    }  # fmt: skip
    headings = [line for line in PAGE.read_text(encoding="utf-8").splitlines()
                if line.startswith("## ")]  # fmt: skip
    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE.read_text(encoding="utf-8"), encoding="utf-8")
    report.write(page, _results(), [], {"cpu": "test"}, argparse.Namespace(rounds=1, cases="a",
                                                                            size_gib=0))  # fmt: skip
    after = page.read_text(encoding="utf-8").splitlines()
    for heading in headings:
        if heading not in written_by_bench:
            assert heading in after, heading
    assert "## The gateway (`modelpack serve`)" in headings
