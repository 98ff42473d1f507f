"""`make bench-hubs`' bookkeeping: iptables' byte counters, the machine's busy ticks, the
section written from saved rows (and written again in place), and the git face's answers:
an LFS pointer, the LFS batch API, git http-backend's CGI output."""

from __future__ import annotations

import json
from pathlib import Path

from support.bench import rewritten_twice

from benchmarks.gitface import GitFace, lfs_pointer, parse_cgi
from benchmarks.hubs import HEADING, Row, Run, busy_ticks, compare, parse_counters, section

LISTING = """Chain OUTPUT (policy ACCEPT 1200 packets, 99000 bytes)
    pkts      bytes target     prot opt in     out     source               destination
      17  1000892            6    --  *      lo      0.0.0.0/0            0.0.0.0/0            tcp dpt:9999
       4      312            6    --  *      lo      0.0.0.0/0            0.0.0.0/0            tcp spt:9999
       0        0            6    --  *      lo      0.0.0.0/0            0.0.0.0/0            tcp dpt:8080
       2      100            6    --  *      lo      0.0.0.0/0            0.0.0.0/0            tcp dpt:9999
"""


def test_iptables_counters_by_port_and_direction() -> None:
    assert parse_counters(LISTING) == {"dpt:9999": 1000992, "spt:9999": 312, "dpt:8080": 0}
    assert parse_counters("Chain OUTPUT (policy ACCEPT)\n") == {}


def test_busy_ticks_leave_out_idle_and_iowait() -> None:
    stat = "cpu  100 5 50 1000 20 0 3 0 0 0\ncpu0 50 2 25 500 10 0 1 0 0 0\n"
    assert busy_ticks(stat) == (158, 1178)


ROWS = [
    Row("warm download, 8 clients at once: m (92 MB)", "modelpack serve", 3.9, 0, "upstream", 1.1,
        140_000_000),
    Row("warm download, 8 clients at once: m (92 MB)", "MatrixHub", 3.3, 0, "upstream", 1.0,
        160_000_000),
    Row("warm download, 8 clients at once: m (92 MB)", "modelpack serve --auth-cache-ttl 0", 4.5,
        0, "upstream", 2.0, 150_000_000),
    Row("upload_folder through Xet: u (1,074 MB), 4 shards", "modelpack serve", 8.1, 1_079_000_000,
        "client", 8.5, 150_000_000),
    Row("upload_folder through Xet: u (1,074 MB), 4 shards", "MatrixHub", None, 6_500, "client",
        0.0, 138_000_000, "ConnectionError: 404 /xet-write-token"),
]  # fmt: skip
RUN = Run("2026-12-07", {"cpu": "2 x AMD EPYC", "memory": "24 GiB"},
          {"MatrixHub": "v0.2.0-rc.3"}, {"minutes": 12.0, "load_min": 1.0, "load_median": 3.2,
          "load_max": 6.5, "busy_cores": 1.8, "ours_cores": 1.1, "others_cores": 0.7},
          ROWS, ["the cluster rows (--skip)"])  # fmt: skip


def test_the_section_puts_both_hubs_on_one_line_and_says_who_was_ahead() -> None:
    text = section(RUN)
    assert text.startswith(HEADING + "\n")
    assert (
        "| warm download, 8 clients at once: m (92 MB) | 3.90 s / 3.30 s | 0.0 kB / 0.0 kB from "
        "the upstream | 1.10 s / 1.00 s | 140 MB / 160 MB | `modelpack serve --auth-cache-ttl 0`: "
        "4.50 s, CPU 2.00 s |"
    ) in text
    assert (
        "| upload_folder through Xet: u (1,074 MB), 4 shards | 8.10 s / failed | 1,079.0 MB / "
        "6.5 kB from the client | 8.50 s / 0.00 s | 150 MB / 138 MB | MatrixHub: "
        "ConnectionError: 404 /xet-write-token |"
    ) in text
    assert "MatrixHub was ahead on: warm download, 8 clients at once: m (92 MB) (3.30 s " \
        "against 3.90 s)." in text  # fmt: skip
    assert "1.80 of 2 cores busy" in text and "0.70 other jobs'" in text
    assert "Left out of this run: the cluster rows (--skip)." in text
    assert compare(ROWS) == [("warm download, 8 clients at once: m (92 MB)", 3.9, 3.3)]


def test_saved_rows_write_the_section_again_in_place(tmp_path: Path) -> None:
    text = rewritten_twice(RUN, HEADING, section, tmp_path)
    assert text.index("## Before") < text.index(HEADING)


def test_an_lfs_pointer_as_git_lfs_writes_it() -> None:
    assert lfs_pointer("ab" * 32, 12) == (
        b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 12\n"
    )


def test_the_batch_api_points_downloads_at_the_hub(tmp_path: Path) -> None:
    face = GitFace("http://hub.test", tmp_path)
    try:
        oid = "cd" * 32
        face.objects["org/m"] = {oid: {"path": "dir/w 1.bin", "lfs": {"oid": oid, "size": 5}}}
        request = {"operation": "download", "objects": [{"oid": oid, "size": 5},
                                                        {"oid": "ef" * 32, "size": 1}]}  # fmt: skip
        status, headers, body = face.handle("POST", "/org/m.git/info/lfs/objects/batch", {},
                                            json.dumps(request).encode())  # fmt: skip
        assert status == 200 and headers["Content-Type"] == "application/vnd.git-lfs+json"
        found, missing = json.loads(body)["objects"]
        assert (
            found["actions"]["download"]["href"]
            == "http://hub.test/org/m/resolve/main/dir/w%201.bin"
        )
        assert missing["error"]["code"] == 404
        upload = {"operation": "upload", "objects": [{"oid": oid, "size": 5}]}
        status, _, body = face.handle("POST", "/org/m/info/lfs/objects/batch", {},
                                      json.dumps(upload).encode())  # fmt: skip
        assert "error" in json.loads(body)["objects"][0]
        assert (
            face.handle("GET", "/org/other.git/info/refs?service=git-upload-pack", {}, b"")[0]
            == 404
        )
    finally:
        face.close()


def test_cgi_output_becomes_status_headers_and_body() -> None:
    out = b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope\r\n\r\nstill body"
    assert parse_cgi(out) == (404, {"Content-Type": "text/plain"}, b"nope\r\n\r\nstill body")
    assert parse_cgi(b"Expires: 0\r\n\r\n001e# service")[0] == 200
