"""The 8-node benchmark's bookkeeping: origin bytes from a distribution access log, its doc
section replaced in place (never duplicated), tc rates, the parents Dragonfly's scheduler
offered, and the section written from saved results with and without case (d)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cluster import access_log_bytes
from benchmarks.cluster_bench import (
    HEADING,
    RESULTS,
    Result,
    Run,
    bytes_by_client,
    rate_bits,
    scheduled_parents,
    section,
    write_section,
)
from benchmarks.dragonfly import Peer

LOG = (
    '10.213.0.5 - - [01/Dec/2026:19:40:01 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "modelpack/0.1"\n'
    'time="2026-12-01T19:40:01Z" level=info msg="response completed" http.response.written=7\n'
    '10.213.0.5 - - [01/Dec/2026:19:40:02 +0000] "GET /v2/m/blobs/sha256:ab HTTP/1.1" 200 1000 "" "x"\n'
    '10.213.0.3 - - [01/Dec/2026:19:40:03 +0000] "HEAD /v2/m/manifests/v1 HTTP/1.1" 200 0 "" "x"\n'
    '10.213.0.3 - - [01/Dec/2026:19:40:04 +0000] "GET /v2/m/blobs/sha256:ab HTTP/1.1" 200 1000 "" "x"\n'
)


def test_origin_bytes_by_client() -> None:
    assert bytes_by_client(LOG) == {"10.213.0.5": 1002, "10.213.0.3": 1000}
    assert access_log_bytes(LOG) == 2002
    assert access_log_bytes(LOG, since=LOG.index("10.213.0.3")) == 1000


def test_section_replaced_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Other\n\ntext\n", encoding="utf-8")
    write_section(f"{HEADING}\n\nfirst\n", doc)
    assert doc.read_text().endswith(f"text\n\n{HEADING}\n\nfirst\n")
    doc.write_text(doc.read_text() + "\n## After\n\nkept\n", encoding="utf-8")
    write_section(f"{HEADING}\n\nsecond\n", doc)
    page = doc.read_text()
    assert page.count(HEADING) == 1 and "first" not in page
    assert "second\n\n## After\n\nkept\n" in page and "## Other\n\ntext" in page


def test_rates() -> None:
    assert rate_bits("1gbit") == 1e9
    assert rate_bits("100mbit") == 1e8
    with pytest.raises(ValueError):
        rate_bits("fast")


def test_parents_offered_by_the_scheduler() -> None:
    peers = [Peer("df-seed", "10.213.0.6", 1, Path(), Path(), seed=True)]
    peers += [Peer(f"df-n{i}", f"10.213.0.{7 + i}", 1, Path(), Path()) for i in (1, 10)]
    log = (
        "INFO scheduling/scheduling.go:554 filter candidate parents is []string{}\n"
        "INFO scheduling/scheduling.go:554 filter candidate parents is []string{"
        '"10.213.0.6-df-seed-2b4b426e-bfca-4929-ad2c-86dd27f05240-seed", '
        '"10.213.0.17-df-n10-f0f44620-24d3-4a6e-ac20-878d80cb0c51"}\n'
    )
    assert scheduled_parents(log, peers) == {"df-seed", "df-n10"}
    assert scheduled_parents("", peers) == set()


def test_section_from_saved_results_with_and_without_dragonfly() -> None:
    old = Run.load(RESULTS)
    old.results = [r for r in old.results if r.case != "d"]  # as written before (d) existed
    text = section(old, None)
    assert "(d)" not in text and "Dragonfly" not in text
    d = Result("d", "through Dragonfly (a dfdaemon on every node)", [10.0] * old.nodes, 11.0,
               old.one_copy + 64, old.one_copy + 10**6, {"10.213.0.6": old.one_copy}, 0,
               ["the seed peer fetched it"])  # fmt: skip
    old.results.append(d)
    text = section(old, None)
    assert "| (d) through Dragonfly (a dfdaemon on every node) | 11.0 s |" in text
    assert "- **(d)** Dragonfly" in text and "Dragonfly fetched each blob once" in text


def test_section_with_the_harbor_preheat_case() -> None:
    run = Run.load(RESULTS)
    text = section(run, None)
    assert "(h)" not in text and "Harbor host" not in text
    h = Result("h", "Harbor preheat policy to Dragonfly, then through the dfdaemons",
               [70.0] * run.nodes, 74.7, run.one_copy + 664376, run.one_copy + 10**7,
               {"127.0.0.1": run.one_copy + 664376}, 0, ["the preheat took 51.5 s"])  # fmt: skip
    run.results.append(h)
    text = section(run, None)
    assert "(and for (h) a Harbor host)" in text and "- **(h)** the seed pipeline" in text
    assert "| (h) Harbor preheat policy to Dragonfly, then through the dfdaemons | 74.7 s |" in text
    assert "Harbor's preheat to Dragonfly (h) cost 1.00 copies" in text
