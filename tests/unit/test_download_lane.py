"""The download lane (``serve --lane-port``, gateway/lane.py): what it makes of a request,
which answers it may send itself, the Redis generations its requests share, and the
option's refusals.  tests/integration/test_gateway_handoff.py runs it behind nginx."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from support.helpers import serve_refusal

from modelpack.errors import SharedStateUnavailableError, UsageError
from modelpack.gateway.app import _lane_answer
from modelpack.gateway.core.config import GatewayConfig
from modelpack.gateway.core.http import LANE, Request, Response
from modelpack.gateway.lane import (
    HEAD_MAX,
    GenerationReads,
    Lane,
    Warmers,
    _environ,
    check_port,
)
from modelpack.gateway.state.audit import networks

PEER = ("127.0.0.1", 5000)


def scope(method: str = "GET", headers: list | None = None, **extra) -> dict:
    return {"type": "http", "method": method, "path": "/o/n/resolve/main/a b",
            "raw_path": b"/o/n/resolve/main/a%20b", "query_string": b"x=1",
            "headers": headers or [], "client": PEER, **extra}  # fmt: skip


def test_a_request_becomes_the_environ_the_threads_would_see():
    environ = _environ(scope(headers=[(b"authorization", b"Bearer t"), (b"x-a", b"1"),
                                      (b"x-a", b"2"), (b"x_modelpack_accel_redirect", b"/p/")]),
                       PEER)  # fmt: skip
    assert environ is not None and environ[LANE] is True
    request = Request.from_environ(environ)
    assert request.segments == ["o", "n", "resolve", "main", "a b"]  # the raw target
    assert request.query == {"x": ["1"]}
    assert request.header("Authorization") == "Bearer t"
    assert request.header("X-A") == "1,2"  # as gunicorn joins them
    assert request.header("X-Modelpack-Accel-Redirect") is None  # an underscore stands in for none
    assert request.on_lane and environ["REMOTE_ADDR"] == "127.0.0.1"
    for body in ([(b"content-length", b"3")], [(b"transfer-encoding", b"chunked")]):
        assert _environ(scope(headers=body), PEER) is None, body
    assert _environ(scope(headers=[(b"content-length", b"0")]), PEER) is not None


def answered(lane: Lane, **kwargs) -> int:
    return lane.answer(scope(**kwargs))[0]


def test_the_lane_refuses_before_the_app_sees_anything():
    seen = []
    lane = Lane(lambda environ, start: seen.append(environ) or [b""], networks(["127.0.0.1"]))
    assert answered(lane, client=("127.0.0.2", 1)) == 403
    assert answered(lane, client=None) == 403
    assert answered(lane, method="POST") == 405
    assert answered(lane, headers=[(b"content-length", b"5")]) == 400
    assert answered(lane, headers=[(b"x-big", b"a" * HEAD_MAX)]) == 431
    assert seen == []


def test_only_headers_are_ever_the_lanes_to_send():
    get, head = (Request.from_environ({"REQUEST_METHOD": m}) for m in ("GET", "HEAD"))
    assert _lane_answer(get, Response(200, {}, b"", handoff="/p/models/x"))
    assert _lane_answer(get, Response(304, {}, b""))
    assert _lane_answer(head, Response(200, {}, b""))
    assert _lane_answer(get, Response(200, {}, b""))  # an empty file
    assert not _lane_answer(get, Response(200, {}, b"{}"))
    assert not _lane_answer(get, Response(200, {}, iter([b"x"])))
    assert not _lane_answer(get, Response(206, {}, b""))


async def settle() -> None:
    """Let every task run as far as it can."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_request_never_takes_a_generation_read_sent_before_it_arrived():
    """One GET per repository at a time; the requests that arrive while it is on its way
    share the next one, never the one sent before they arrived."""
    sent: list[tuple[str, asyncio.Event]] = []

    async def read(repository: str) -> str | None:
        arrived = asyncio.Event()
        sent.append((repository, arrived))
        await arrived.wait()
        if repository == "broken":
            raise SharedStateUnavailableError("Redis did not answer")
        return f"{repository}{sum(name == repository for name, _ in sent)}"

    async def main() -> None:
        reads = GenerationReads(read)
        first = asyncio.ensure_future(reads.get("r"))
        await settle()
        waiting = [asyncio.ensure_future(reads.get("r")) for _ in range(3)]
        other = asyncio.ensure_future(reads.get("s"))  # another repository: its own GET
        await settle()
        assert [name for name, _ in sent] == ["r", "s"]
        sent[0][1].set()
        assert await first == "r1"
        await settle()
        assert [name for name, _ in sent] == ["r", "s", "r"]  # the three: one more GET
        late = asyncio.ensure_future(reads.get("r"))  # arrived after it was sent
        sent[2][1].set()
        assert await asyncio.gather(*waiting) == ["r2"] * 3
        await settle()
        assert not late.done() and [name for name, _ in sent][-1] == "r"
        sent[3][1].set(), sent[1][1].set()
        assert (await late, await other) == ("r3", "s1")
        broken = asyncio.ensure_future(reads.get("broken"))
        await settle()
        sent[4][1].set()
        assert isinstance(await broken, SharedStateUnavailableError)  # handed on, not raised
        # Requests of one turn of the loop (nginx's requests read in one wake) share a GET.
        reads, count = GenerationReads(read), len(sent)
        together = [asyncio.ensure_future(reads.get("t")) for _ in range(4)]
        await settle()
        assert [name for name, _ in sent[count:]] == ["t"]
        sent[-1][1].set()
        assert await asyncio.gather(*together) == ["t1"] * 4

    asyncio.run(asyncio.wait_for(main(), 10))


def test_the_options_refusals(tmp_path):
    with pytest.raises(UsageError, match="--lane-port needs --accel-redirect"):
        GatewayConfig("127.0.0.1:5000/gw", lane_port=8081)
    accel = {"accel_redirect": "/_c/", "trusted_proxies": ("127.0.0.1",)}
    with pytest.raises(UsageError, match="other than --port"):
        GatewayConfig("127.0.0.1:5000/gw", port=8081, lane_port=8081, **accel)
    assert GatewayConfig("127.0.0.1:5000/gw", lane_port=8081, **accel).lane_port == 8081
    assert "--lane-port needs --accel-redirect" in serve_refusal(tmp_path, "--lane-port", "8081")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=f"--lane-port {port}: cannot listen"):
            check_port(GatewayConfig("127.0.0.1:5000/gw", lane_port=port, **accel))
        line = serve_refusal(tmp_path, "--trusted-proxy", "127.0.0.1", "--accel-redirect",
                             "/_c/", "--lane-port", str(port))  # fmt: skip
        assert f"--lane-port {port}: cannot listen" in line


def test_a_failed_read_is_handed_on_at_once_for_a_while_and_a_cancel_spares_the_others():
    reads: list[str] = []
    gate = asyncio.Event()

    async def read(repository: str) -> str | None:
        reads.append(repository)
        await gate.wait()
        if repository == "broken":
            raise SharedStateUnavailableError("Redis did not answer")
        return "g"

    async def main() -> None:
        generations = GenerationReads(read)
        first = asyncio.ensure_future(generations.get("r"))
        await settle()
        waiters = [asyncio.ensure_future(generations.get("r")) for _ in range(2)]
        await settle()
        waiters[0].cancel()  # one request gone: the other still gets the shared answer
        gate.set()
        assert (await first, await waiters[1]) == ("g", "g")
        failed = await generations.get("broken")
        assert isinstance(failed, SharedStateUnavailableError)
        count = len(reads)
        assert await generations.get("other") is failed  # no read while the threads skip Redis
        assert len(reads) == count

    asyncio.run(asyncio.wait_for(main(), 10))


def test_what_could_not_be_kept_is_not_warmed_again_for_a_while():
    outcomes = {"/refused": "refused", "/missing": "missing", "/kept": "kept",
                "/pending": "pending"}  # fmt: skip
    asked: list[str] = []
    done = threading.Event()

    def warm(environ: dict, fresh: bool = False) -> str:
        asked.append(environ["RAW_URI"])
        done.set()
        return outcomes[environ["RAW_URI"].split("?")[0]]

    warmers = Warmers(warm)

    def submit(uri: str, who: str = "Basic a") -> bool:
        done.clear()
        accepted = warmers.submit({"RAW_URI": uri, "HTTP_AUTHORIZATION": who})
        if accepted:
            assert done.wait(10)
            time.sleep(0.05)  # its outcome recorded
        return accepted

    assert submit("/missing") and not submit("/missing")  # that URL, for a minute
    assert submit("/pending") and submit("/pending")  # still being pulled: asked again
    assert submit("/kept") and submit("/kept")  # kept: the next answer may need it again
    assert submit("/refused") and not submit("/kept")  # refused: these credentials at all
    assert submit("/kept", "Basic b")  # other credentials are not held back
    assert asked == ["/missing", "/pending", "/pending", "/kept", "/kept", "/refused", "/kept"]


def test_a_header_that_reads_none_is_not_the_anonymous_client():
    """Warming names a request without Authorization apart from every header value: a
    refused ``Authorization: None`` held back anonymous warming and refreshes before."""
    done = threading.Event()

    def warm(environ: dict, fresh: bool = False) -> str:
        done.set()
        return "refused" if "HTTP_AUTHORIZATION" in environ else "kept"

    warmers = Warmers(warm)
    for environ in ({"RAW_URI": "/a", "HTTP_AUTHORIZATION": "None"}, {"RAW_URI": "/a"}):
        done.clear()
        assert warmers.submit(environ)
        assert done.wait(10)
        time.sleep(0.05)  # its outcome recorded
    assert warmers.submit({"RAW_URI": "/a"}, fresh=True)  # anonymous: not held back
    assert not warmers.submit({"RAW_URI": "/b", "HTTP_AUTHORIZATION": "None"})  # that one is


def test_a_refusal_holds_back_warming_for_that_repository_only():
    """Anonymous readers may read one repository and not another (Harbor's public and
    private projects): one refused anonymous request held back every anonymous warm."""
    done = threading.Event()

    def warm(environ: dict, fresh: bool = False) -> str:
        done.set()
        return "refused" if environ["RAW_URI"].startswith("/private/") else "kept"

    warmers = Warmers(warm, repository_of=lambda path: path.split("/")[1])
    done.clear()
    assert warmers.submit({"RAW_URI": "/private/m/resolve/main/a"}) and done.wait(10)
    time.sleep(0.05)  # its outcome recorded
    assert not warmers.submit({"RAW_URI": "/private/m/resolve/main/b"})  # that repository
    assert warmers.submit({"RAW_URI": "/public/m/resolve/main/a"}, fresh=True)  # not others
