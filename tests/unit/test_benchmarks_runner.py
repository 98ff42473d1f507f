"""benchmarks/runner.py: the CPU a server's processes spend while a command runs, from
/proc/PID/stat (its own time, its children's that it has reaped, its live descendants')."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.runner import measure, parse_rss_kb, parse_stat, tree_cpu, tree_rss


def _stat(pid: int, name: str, ppid: int, utime: int, stime: int, cutime: int = 0,
          cstime: int = 0) -> str:  # fmt: skip
    # proc(5): pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    # cmajflt utime stime cutime cstime priority nice ...
    return (f"{pid} ({name}) S {ppid} {pid} {pid} 0 -1 4194560 100 0 0 0 "
            f"{utime} {stime} {cutime} {cstime} 20 0 1 0 12345 0 0\n")  # fmt: skip


def test_a_stat_line_with_spaces_and_parentheses_in_the_name():
    assert parse_stat(_stat(42, "postgres: harbor (idle)", 7, 100, 20, 3, 4)) == (42, 7, 127)
    own = Path("/proc/self/stat").read_text()
    pid, ppid, ticks = parse_stat(own)
    assert pid > 0 and ppid >= 0 and ticks >= 0


def test_a_tree_counts_its_descendants_and_nothing_else(tmp_path):
    proc = tmp_path / "proc"
    for pid, name, ppid, ticks in (
        (1, "init", 0, (900, 0)),
        (10, "postgres", 1, (100, 50, 30, 20)),  # with reaped children: 200 ticks
        (11, "postgres: backend", 10, (40, 10)),  # 50
        (12, "postgres: worker", 11, (5, 5)),  # 10
        (20, "registry", 1, (70, 30)),  # 100, another root
        (30, "unrelated", 1, (1000, 0)),
    ):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "stat").write_text(_stat(pid, name, ppid, *ticks))
    (proc / "self").mkdir()  # not a pid: skipped
    (proc / "99").mkdir()  # exited between the listing and the read: skipped
    hz = os.sysconf("SC_CLK_TCK")
    assert tree_cpu([10], proc) == pytest.approx(260 / hz)
    assert tree_cpu([11], proc) == pytest.approx(60 / hz)
    assert tree_cpu([10, 20], proc) == pytest.approx(360 / hz)
    assert tree_cpu([], proc) == 0
    assert tree_cpu([404], proc) == 0


def test_a_measurement_records_its_servers_cpu_only_when_asked():
    burn = ["sh", "-c", "head -c 20000000 /dev/zero | sha256sum >/dev/null"]
    # this process stands in for a server: the command is its descendant while it runs
    watched = measure("sh", "burn", "t", burn, servers={"here": [os.getpid()]})
    assert watched.ok and set(watched.extra["server_cpu"]) == {"here"}
    assert watched.extra["server_cpu"]["here"] > 0
    plain = measure("sh", "burn", "t", burn)
    assert plain.ok and "server_cpu" not in plain.extra


def test_resident_memory_of_a_tree(tmp_path):
    proc = tmp_path / "proc"
    for pid, ppid, rss in ((10, 1, "VmRSS:\t  2048 kB\n"), (11, 10, "VmRSS:\t  1024 kB\n"),
                           (12, 11, ""), (20, 1, "VmRSS:\t  4096 kB\n")):  # fmt: skip
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "stat").write_text(_stat(pid, "p", ppid, 1, 1))
        (proc / str(pid) / "status").write_text(f"Name:\tp\n{rss}Threads:\t1\n")
    assert parse_rss_kb("Name:\tkthreadd\nThreads:\t1\n") == 0  # a kernel thread has none
    assert tree_rss([10], proc) == 3072 * 1024
    assert tree_rss([10, 20], proc) == 7168 * 1024
    assert tree_rss([404], proc) == 0
