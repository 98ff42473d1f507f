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
    assert (push.median, push.low, push.high, push.runs) == (15.48, 14.97, 19.61, 3)


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
    assert len(panels) == 9
    assert {ax.get_subplotspec().get_geometry()[:2] for ax in panels} == {(3, 3)}
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
