"""benchmarks/xet_download.py's bookkeeping (`make bench-hubs`): version 2's changed regions,
the gateway log split by kind of request, and the section written from saved rows (and
written again in place, kept by `make bench`)."""

from __future__ import annotations

from pathlib import Path

from support.bench import rewritten_twice

from benchmarks.report import KEPT_SECTIONS
from benchmarks.xet_download import HEADING, Row, Run, changed_regions, log_kinds, section

GIB = 1024 * 1024 * 1024


def test_version_2_rewrites_five_percent_in_twenty_separate_regions() -> None:
    regions = changed_regions(GIB)
    assert len(regions) == 20
    assert sum(length for _, length in regions) == GIB * 5 // 100 // 20 * 20
    ends = [(start, start + length) for start, length in regions]
    assert all(a_end < b_start for (_, a_end), (b_start, _) in zip(ends, ends[1:], strict=False))
    assert ends[0][0] > 0 and ends[-1][1] < GIB


def test_the_gateway_log_by_kind_of_request_leaves_uploads_out() -> None:
    log = "\n".join([
        "2026-12-07 10:00:00,000 gateway: 127.0.0.1 GET /api/modelpack/xet-read/v1/fetch/ab?r=0-9 200 1000B",
        "2026-12-07 10:00:00,000 gateway: 127.0.0.1 GET /api/modelpack/xet-read/v1/reconstructions/cd 200 30B",
        "2026-12-07 10:00:00,000 gateway: 127.0.0.1 GET /bench/weights/resolve/abc/weights.dat 200 500B",
        "2026-12-07 10:00:00,000 gateway: 127.0.0.1 POST /api/modelpack/xet/v1/xorbs/default/ef 200 20B",
        "2026-12-07 10:00:00,000 gateway: 127.0.0.1 HEAD /api/models/bench/weights 200 7B",
    ])  # fmt: skip
    assert log_kinds(log) == {"xet xorb ranges": 1000, "xet reconstructions": 30,
                              "resolve (plain HTTP)": 500, "other": 7}  # fmt: skip


RUN = Run("2026-12-07", GIB, 53_687_080, {"cpu": "2 x EPYC"}, {"hf_xet": "1.8.0"},
          {"minutes": 4.0, "load_min": 1.0, "load_median": 2.0, "load_max": 3.0,
           "busy_cores": 1.5, "ours_cores": 1.0, "others_cores": 0.5},
          {"modelpack serve": True, "MatrixHub": False},
          [Row("modelpack serve", "Xet (hf_xet defaults)", "upload version 1", GIB + 900_000, 30.0),
           Row("modelpack serve", "Xet (hf_xet defaults)", "download version 1", GIB + 400_000, 9.0,
               {"xet xorb ranges": GIB}),
           Row("modelpack serve", "Xet (hf_xet defaults)", "download version 2", GIB + 500_000, 9.5,
               {"xet xorb ranges": GIB, "xet reconstructions": 200_000}),
           Row("MatrixHub", "plain HTTP", "download version 1", GIB + 100_000, 4.0),
           Row("MatrixHub", "plain HTTP", "download version 2", GIB + 100_000, 4.1)])  # fmt: skip


def test_the_section_shows_version_2_beside_version_1_for_each_hub() -> None:
    text = section(RUN)
    assert text.startswith(HEADING + "\n")
    assert (
        "| modelpack serve | Xet (hf_xet defaults) | 1,074.1 MB | **1,074.2 MB** (xet xorb ranges "
        "1,073,741,824, xet reconstructions 200,000: the gateway log) | 100.0% | 9.5 s |"
    ) in text
    assert "| MatrixHub | plain HTTP | 1,073.8 MB | **1,073.8 MB** | 100.0% | 4.1 s |" in text
    assert "| modelpack serve | version 1, Xet (hf_xet defaults) | 1,074.6 MB | 30.0 s |" in text
    assert "modelpack serve: yes; MatrixHub: no" in text
    assert "Every client downloaded version 2 whole" in text
    assert "FileDownloadSession::new(config, None)" in text


def test_saved_rows_write_the_section_again_in_place(tmp_path: Path) -> None:
    assert HEADING in KEPT_SECTIONS
    text = rewritten_twice(RUN, HEADING, section, tmp_path)
    assert text.index("## After") < text.index(HEADING)
