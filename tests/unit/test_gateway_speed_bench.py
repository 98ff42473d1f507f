"""benchmarks/gateway_speed.py (`make bench`'s gateway beside nginx): wrk's report read into
numbers, the section written and kept by the rest of `make bench`."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import report
from benchmarks.gateway_speed import (
    HEADING,
    NGINX,
    WITH,
    WITHOUT,
    WORKERS,
    Load,
    Results,
    milliseconds,
    parse_wrk,
    section,
)

WRK = """Running 10s test @ http://127.0.0.1:8080/org/bench/resolve/v1/model.safetensors
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    58.12ms   20.47ms 300.11ms   75.00%
    Req/Sec   550.00     80.00   700.00     70.00%
  Latency Distribution
     50%   54.40ms
     75%   70.00ms
     90%   90.00ms
     99%    1.13s
  11140 requests in 10.00s, 10.88GB read
  Socket errors: connect 0, read 0, write 0, timeout 3
Requests/sec:   1114.00
Transfer/sec:      1.09GB
"""


def test_wrk_durations_and_report_are_read_as_numbers():
    assert milliseconds("980.00us") == pytest.approx(0.98)
    assert milliseconds("54.40ms") == 54.4 and milliseconds("1.13s") == pytest.approx(1130)
    with pytest.raises(ValueError):
        milliseconds("5m")
    load = parse_wrk(WRK)
    assert (load.rps, load.p50, load.p99) == (1114.0, 54.4, pytest.approx(1130))
    assert load.errors == "Socket errors: connect 0, read 0, write 0, timeout 3"
    with pytest.raises(RuntimeError, match="wrk said no numbers"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


SLOW_WORKERS = Load(1000, 40, 120)


def _results(rps: float, p99: float, workers: Load = SLOW_WORKERS) -> Results:
    return Results(
        runs={
            WITHOUT: [Load(350, 170, 400)] * 2,
            WITH: [Load(rps, 30, p99)] * 2,
            WORKERS: [workers] * 2,
            NGINX: [Load(3000, 20, 24), Load(3200, 20, 30)],
        },
        cold={WITHOUT: [0.07, 0.08], WITH: [0.07, 0.07], NGINX: [0.001]},
    )


def _goal(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("Goal:") and name in line)


@pytest.mark.parametrize(("rps", "p99", "met"), [(1700, 45, True), (1400, 45, False),
                                                  (1700, 60, False)])  # fmt: skip
def test_the_section_says_whether_the_goal_is_met(rps, p99, met):
    args = argparse.Namespace(rounds=2, seconds=10, connections=64)
    text = section(_results(rps, p99), args, "2 cores")
    assert text.startswith(HEADING + "\n")
    row = next(line for line in text.splitlines() if line.startswith(f"| {WITH} |"))
    assert f"{rps / 3100:.2f}x" in row and f"{p99:.1f} / {p99:.1f}" in row
    assert _goal(text, WITH).endswith("**met**.") is met
    assert _goal(text, WORKERS).endswith("**not met**.")  # 0.32x
    assert "| nginx, from disk | 3000 / 3200 | 1.00x |" in text


def test_each_gateway_row_is_judged_on_its_own():
    args = argparse.Namespace(rounds=2, seconds=10, connections=64)
    text = section(_results(1000, 200, workers=Load(2000, 20, 45)), args, "2 cores")
    assert _goal(text, WITH).endswith("**not met**.")
    assert _goal(text, WORKERS).endswith("0.65x, p99 at most 45.0 ms: **met**.")
    row = next(line for line in text.splitlines() if line.startswith(f"| {WORKERS} |"))
    assert "| 2000 / 2000 | 0.65x |" in row


def test_make_bench_keeps_the_section(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n## All results\n\nold\n")
    args = argparse.Namespace(rounds=2, seconds=10, connections=64)
    report.replace_section(page, HEADING, section(_results(1700, 45), args, "2 cores"))
    assert HEADING in report.kept_sections(page)
