"""`modelpack serve` against hostile hops and hostile clients (issue 16, second round).

Bad bytes from a registry hop never reach a client's cache; revisions cannot
name anything outside ``--registry HOST/NAMESPACE``; half-sent requests do not
stall the gateway; odd ``Range`` headers are answered as the hub does; errors
do not name the deployment's internals; header-less clients borrow the
gateway's credentials only when the operator says so.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from support.gateway import Gateway
from support.helpers import make_artifact
from support.hostile_registry import HostileRegistry
from support.http_proxy import Fault, HttpProxy, requests_to

from modelpack.oci.reference import parse_reference
from modelpack.oci.spec import ANNOTATION_FILEPATH
from modelpack.registry.client import open_repository
from modelpack.settings import Settings
from modelpack.testing import RegistryServer
from modelpack.testing.registry import free_port

WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
CONFIG_RAW = "application/vnd.cncf.model.weight.config.v1.raw"
WEIGHTS = bytes(range(256)) * 8192  # 2 MiB


def _files(**files: bytes) -> list[tuple[str, bytes, dict[str, str]]]:
    return [
        (WEIGHT_RAW if name.endswith(".safetensors") else CONFIG_RAW, data,
         {ANNOTATION_FILEPATH: name})
        for name, data in files.items()
    ]  # fmt: skip


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def hostile():
    server = HostileRegistry().start()
    yield server
    server.stop()


def _started(gateway: Gateway):
    gateway.start()
    return gateway


# -- 1: no byte before the whole file is verified ------------------------------------------


def _resuming_download(url: str) -> bytes | None:
    """What huggingface_hub does with an interrupted download: keep the bytes, resume
    with ``Range: bytes=N-``, never re-hash.  None: the gateway answered an error."""
    data = b""
    for _ in range(5):
        headers = {"Range": f"bytes={len(data)}-"} if data else {}
        try:
            with requests.get(url, headers=headers, stream=True, timeout=60) as answer:
                if answer.status_code not in (200, 206):
                    return None
                for chunk in answer.iter_content(1 << 16):
                    data += chunk
            return data
        except requests.exceptions.ChunkedEncodingError:
            continue  # cut: resume
    return data


def test_bytes_corrupted_once_never_end_up_in_a_client_cache(hostile, tmp_path):
    """A hop flips one early byte of the blob once, then serves it right: a client that
    resumes a cut download with Range and never re-hashes (huggingface_hub) ends with
    the right file or an error, never with the bad byte under the good sha256's name."""
    make_artifact(hostile, "v1", _files(**{"model.safetensors": WEIGHTS}))
    proxy = HttpProxy(upstream=f"http://{hostile.host}", blob_delay=0.02).start()
    weights = requests_to("GET", f"/blobs/{_digest(WEIGHTS)}")
    gateway = _started(Gateway(proxy.host, tmp_path / "gateway"))
    try:
        url = f"{gateway.url}/org/bad/resolve/v1/model.safetensors"
        proxy.add(Fault(weights, corrupt_at=1000))
        got = _resuming_download(url)
        assert got is None or got == WEIGHTS, "a corrupt file was served"
        gateway.wait_idle()
        shutil.rmtree(gateway.cache)  # cold again, and huggingface_hub itself as the client
        proxy.add(Fault(weights, corrupt_at=1000))
        results = gateway.hf([["file", "org/bad", "model.safetensors", "v1"]], tmp_path / "c")
        if "path" in results[0]:
            assert Path(results[0]["path"]).read_bytes() == WEIGHTS
        blobs = [b for b in (tmp_path / "c" / "hub").rglob("blobs/*") if b.is_file()]
        assert all(b.read_bytes() == WEIGHTS for b in blobs), blobs
        # No GET of the file sent bytes and then broke off.
        log = gateway.wait_for_log(r"GET /org/bad/resolve/v1/model\.safetensors \d{3}")
        assert "(cut)" not in log
    finally:
        gateway.stop()
        proxy.stop()


def test_tampered_weights_are_refused_before_any_byte(hostile, tmp_path):
    """A registry that always serves other bytes under the digest: every GET is a 403
    (GatedRepo, the reason in the hub's format), none sends a byte; nothing is cached."""
    make_artifact(hostile, "v1", _files(**{"model.safetensors": WEIGHTS}))
    digest = _digest(WEIGHTS)
    hostile.blobs[digest] = WEIGHTS[:-1] + b"X"  # same size, other bytes
    gateway = _started(Gateway(hostile.host, tmp_path / "gateway"))
    try:
        answer = requests.get(f"{gateway.url}/org/bad/resolve/v1/model.safetensors")
        assert answer.status_code == 403, answer.status_code
        assert answer.headers["X-Error-Code"] == "GatedRepo"
        assert "digest" in answer.json()["error"] and hostile.host not in answer.text
        results = gateway.hf([["file", "org/bad", "model.safetensors", "v1"]], tmp_path / "c")
        assert results[0].get("error") == "GatedRepoError", results
        gateway.wait_idle()
        assert not (gateway.cache / "store" / "blobs" / "sha256" / digest[7:]).exists()
        log = gateway.wait_for_log(r"GET /org/bad/resolve/v1/model\.safetensors 403")
        access = re.findall(r"GET /org/bad/resolve/v1/model\.safetensors (\d{3}) \d+B", log)
        assert access and set(access) == {"403"}, access
        assert digest in log  # the detail is in the gateway's log
    finally:
        gateway.stop()


# -- 7: revisions cannot leave the namespace --------------------------------------------------

ESCAPES = [
    "sha256:x%2F..%2F..%2F..%2F..%2F..%2Fprivate%2Fsecret%2Fmanifests%2Flatest",
    "sha256:x%2F..%2F..%2Fprivate%2Fsecret%2Fmanifests%2Flatest",
    "..%2F..%2F..%2F..%2Fprivate%2Fsecret%2Fmanifests%2Flatest",
    "v1%2F..%2F..%2F..%2F..%2F..%2Fprivate%2Fsecret%2Fmanifests%2Flatest",
    "%2E%2E",
    "sha256:..",
    "v1%3F",
    "v1%23x",
    "latest%0A",
]


def test_no_revision_reaches_outside_the_namespace(registry, tmp_path):
    settings = Settings(home=tmp_path / "home", plain_http=True)
    for name in ("escape/org/tiny", "private/secret"):
        make_artifact(
            open_repository(parse_reference(f"{registry.host}/{name}"), settings),
            "latest",
            _files(**{"config.json": b"{}", "model.safetensors": WEIGHTS[:4096]}),
        )
    proxy = HttpProxy(upstream=registry.url).start()
    gateway = _started(Gateway(f"{proxy.host}/escape", tmp_path / "gateway"))
    try:
        for revision in ESCAPES:
            for url in (
                f"/api/models/org/tiny/revision/{revision}",
                f"/api/models/org/tiny/tree/{revision}",
                f"/org/tiny/resolve/{revision}/config.json",
            ):
                answer = requests.get(gateway.url + url)
                assert answer.status_code in (400, 404), (url, answer.status_code, answer.text)
        paths = [e.path.split("?")[0] for e in proxy.exchanges]
        assert paths, "the gateway never asked the registry"
        outside = [
            p for p in paths
            if p != "/v2/" and not (p.startswith("/v2/escape/") and posixpath.normpath(p) == p)
        ]  # fmt: skip
        assert not outside, outside
    finally:
        gateway.stop()
        proxy.stop()


# -- 9: slow clients, capped pull-throughs -----------------------------------------------------


def _half_request(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    return sock


def _drip(port: int, stop: threading.Event) -> None:
    """A client that sends its request one byte every 0.5 s, forever."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for byte in b"GET /healthz HTTP/1.1\r\nX-Padding: " + b"a" * 10_000:
            if stop.wait(0.5):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return  # dropped by the gateway


def test_half_sent_requests_do_not_stop_healthz(tmp_path):
    gateway = _started(Gateway("127.0.0.1:9/gw", tmp_path / "gateway", ("--threads", "4")))
    stop = threading.Event()
    drips = [threading.Thread(target=_drip, args=(gateway.port, stop)) for _ in range(4)]
    hanging = [_half_request(gateway.port) for _ in range(8)]
    try:
        for thread in drips:
            thread.start()
        # Well within the default --read-timeout (10 s): slow heads hold no thread.
        for _ in range(3):
            assert requests.get(f"{gateway.url}/healthz", timeout=5).status_code == 200
        for thread in drips:  # dripping heads are cut off after --read-timeout
            thread.join(timeout=60)
            assert not thread.is_alive(), "a dripping client is still connected"
    finally:
        stop.set()
        for sock in hanging:
            sock.close()
        for thread in drips:
            thread.join()
        gateway.stop()


def _pipelined(port: int, count: int) -> socket.socket:
    """A keep-alive connection that sends ``count`` requests before reading any answer."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * count)
    return sock


def _answers(sock: socket.socket, count: int, timeout: float) -> int:
    """How many ``200`` answers arrive on ``sock`` within ``timeout`` seconds (at most count)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(b"HTTP/1.1 200") < count and time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data.count(b"HTTP/1.1 200")


def test_pipelined_requests_hold_no_thread(tmp_path):
    """Issue 28, defect 3: --threads connections that each send two requests at once (the
    second one buffered by the parser while the first is answered) are all answered at
    once, and /healthz still answers; they used to hold every thread for 120 s."""
    threads = 2
    gateway = _started(Gateway("127.0.0.1:9/gw", tmp_path / "gateway", ("--threads", str(threads))))
    connections = [_pipelined(gateway.port, 2) for _ in range(threads)]
    try:
        started = time.monotonic()
        # The first answers come either way (the second ones with them, once fixed)...
        received = [_answers(sock, 1, 5) for sock in connections]
        assert min(received) >= 1, received
        time.sleep(0.5)  # ...and the threads take up the buffered second requests
        assert requests.get(f"{gateway.url}/healthz", timeout=5).status_code == 200
        received = [
            n + _answers(sock, 2 - n, 5) for n, sock in zip(received, connections, strict=True)
        ]
        assert received == [2] * threads
        assert time.monotonic() - started < 5
    finally:
        for sock in connections:
            sock.close()
        gateway.stop()


def test_pull_throughs_are_capped_and_healthz_answers_meanwhile(hostile, tmp_path):
    make_artifact(hostile, "v1", _files(**{"model.safetensors": WEIGHTS, "b.safetensors": WEIGHTS[::-1]}))  # fmt: skip
    proxy = HttpProxy(upstream=f"http://{hostile.host}", blob_delay=0.1).start()  # ~3 s a blob
    gateway = _started(
        Gateway(proxy.host, tmp_path / "gateway", ("--threads", "4", "--max-pulls", "1"))
    )
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(
                requests.get, f"{gateway.url}/org/m/resolve/v1/model.safetensors", timeout=60
            )
            deadline = time.monotonic() + 30
            while gateway.metrics()["modelpack_gateway_pulls_in_flight"] == 0:
                assert time.monotonic() < deadline and not first.done(), "no pull started"
            busy = requests.get(f"{gateway.url}/org/m/resolve/v1/b.safetensors", timeout=60)
            health = requests.get(f"{gateway.url}/healthz", timeout=5)
            answers = {WEIGHTS: first.result(), WEIGHTS[::-1]: busy}
        assert health.status_code == 200
        # The one slot goes to whichever request asks for it first: the model's pull (counted
        # in flight) starts before the first request takes its slot, and on a loaded machine
        # the second may get there first. At most one is told to retry.
        assert sorted(a.status_code for a in answers.values()) in ([200, 200], [200, 429])
        for data, answer in answers.items():
            if answer.status_code == 200:
                assert answer.content == data
            else:
                assert answer.headers["Retry-After"], answer.headers
    finally:
        gateway.stop()
        proxy.stop()


# -- 12: ranges ------------------------------------------------------------------------------


def test_ranges_are_answered_as_the_hub_does(hostile, tmp_path):
    make_artifact(hostile, "v1", _files(**{"model.safetensors": WEIGHTS, "empty.json": b""}))
    gateway = _started(Gateway(hostile.host, tmp_path / "gateway"))
    big = "9" * 5000
    size = len(WEIGHTS)
    try:
        url = f"{gateway.url}/org/r/resolve/v1"
        cases = [
            ("model.safetensors", f"bytes={big}-", 416, f"bytes */{size}", b""),
            ("model.safetensors", f"bytes=0-{big}", 206, f"bytes 0-{size - 1}/{size}", WEIGHTS),
            ("model.safetensors", f"bytes=-{big}", 206, f"bytes 0-{size - 1}/{size}", WEIGHTS),
            ("model.safetensors", f"bytes={big[:4000]}-{big[:4000]}", 416, f"bytes */{size}", b""),
            ("model.safetensors", "bytes=5-2", 200, None, WEIGHTS),  # malformed: ignored
            ("model.safetensors", "bytes=0-1,5-6", 200, None, WEIGHTS),
            ("model.safetensors", "bytes=\u0661-", 200, None, WEIGHTS),  # not ASCII digits
            ("empty.json", "bytes=0-", 416, "bytes */0", b""),
            ("empty.json", "bytes=-5", 416, "bytes */0", b""),
            ("empty.json", None, 200, None, b""),
        ]
        for name, header, status, content_range, body in cases:
            headers = {"Range": header.encode("utf-8")} if header else {}
            answer = requests.get(f"{url}/{name}", headers=headers)
            assert answer.status_code == status, (name, header[:20] if header else None)
            assert answer.headers.get("Content-Range") == content_range, answer.headers
            if status != 416:
                assert answer.content == body
        assert "Traceback" not in gateway.log()
    finally:
        gateway.stop()


# -- 16: hub errors without internals; header-less clients and the gateway's identity -------


def test_hub_errors_do_not_name_registry_hosts_or_namespaces(tmp_path):
    port = free_port()  # nothing listens there: the registry is down
    namespace = "team-internal"
    gateway = _started(Gateway(f"127.0.0.1:{port}/{namespace}", tmp_path / "gateway"))
    try:
        for url in ("/api/models/org/x/revision/v1", "/org/x/resolve/v1/config.json"):
            answer = requests.get(gateway.url + url)
            assert answer.status_code == 502, answer.status_code
            text = answer.text + answer.headers.get("X-Error-Message", "")
            assert "org/x" in text
            assert str(port) not in text and namespace not in text, text
        gateway.wait_for_log(rf"127\.0\.0\.1:{port}")  # the detail is kept for operators
    finally:
        gateway.stop()


USER, PASSWORD = "gateway-robot", "robot-Pa55"


@pytest.fixture
def private_registry(tmp_path):
    with RegistryServer(users={USER: PASSWORD}, workdir=tmp_path / "registry") as server:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MODELPACK_USERNAME", USER)
            mp.setenv("MODELPACK_PASSWORD", PASSWORD)
            settings = Settings(home=tmp_path / "home", plain_http=True)
            repository = open_repository(parse_reference(f"{server.host}/gw/team/m"), settings)
            make_artifact(repository, "v1", _files(**{"config.json": b"{}"}))
        yield server


@pytest.mark.parametrize("lend", [False, True])
def test_header_less_clients_borrow_the_gateways_identity_only_when_lent(
    private_registry, tmp_path, lend
):
    gateway = _started(
        Gateway(
            f"{private_registry.host}/gw",
            tmp_path / "gateway",
            ("--lend-credentials",) if lend else (),
            env={"MODELPACK_USERNAME": USER, "MODELPACK_PASSWORD": PASSWORD},
        )
    )
    try:
        url = f"{gateway.url}/team/m/resolve/v1/config.json"
        anonymous = requests.get(url)
        assert anonymous.status_code == (200 if lend else 401), anonymous.text
        if not lend:
            assert anonymous.headers["X-Error-Code"] == "RepoNotFound"
        # A client that sends its own credentials is never helped by the gateway's.
        wrong = requests.get(url, headers={"Authorization": "Bearer nobody:wrong"})
        assert wrong.status_code == 401
        right = requests.get(url, headers={"Authorization": f"Bearer {USER}:{PASSWORD}"})
        assert right.status_code == 200 and right.content == b"{}"
    finally:
        gateway.stop()


# -- issue 28, defect 11: absolute URLs never reflect a hostile Host; headers -----------------

HOSTILE = {"Host": "evil.example:8080"}


def _absolute_urls(gateway: Gateway, headers: dict[str, str], repo: str) -> dict[str, str]:
    """Every absolute URL the gateway hands out, asked with ``headers``."""
    urls = {}
    created = requests.post(f"{gateway.url}/api/repos/create", json={"name": repo,
                            "organization": "org"}, headers=headers, timeout=30)  # fmt: skip
    assert created.status_code in (200, 409), created.text
    urls["create_repo"] = created.json()["url"]
    batch = requests.post(
        f"{gateway.url}/org/{repo}.git/info/lfs/objects/batch",
        json={"operation": "upload", "objects": [{"oid": "5" * 64, "size": 3}]},
        headers={**headers, "Content-Type": "application/vnd.git-lfs+json"},
        timeout=30,
    ).json()
    urls["lfs"] = batch["objects"][0]["actions"]["upload"]["href"]
    token = requests.get(
        f"{gateway.url}/api/models/org/{repo}/xet-write-token/main", headers=headers, timeout=30
    )
    assert token.status_code == 200, token.text
    urls["xet"] = token.json()["casUrl"]
    urls["xet_header"] = token.headers["X-Xet-Cas-Url"]
    listing = requests.get(f"{gateway.url}/api/models?limit=1", headers=headers, timeout=30)
    urls["next_page"] = listing.links["next"]["url"]
    page = requests.get(f"{gateway.url}/org/{repo}", headers=headers, timeout=30)
    urls["page"] = re.search(r"export HF_ENDPOINT=(\S+)", page.text).group(1) + "/"
    return urls


def test_absolute_urls_never_reflect_a_hostile_host(registry, tmp_path):
    """Upload hrefs, the Xet CAS URL, create_repo's url, the next-page Link and the page's
    HF_ENDPOINT come from --public-url; without it only loopback names and the listen
    address are taken from Host.  They used to be whatever Host the client sent."""
    namespace = "host28"
    gateway = _started(Gateway(f"{registry.host}/{namespace}", tmp_path / "gateway"))
    try:
        for repo in ("a", "b"):  # two repositories: the listing has a next page
            requests.post(f"{gateway.url}/api/repos/create", json={"name": repo,
                          "organization": "org"}, timeout=30).raise_for_status()  # fmt: skip
        hostile = _absolute_urls(gateway, HOSTILE, "a")
        assert all(url.startswith(gateway.url + "/") for url in hostile.values()), hostile
        local = _absolute_urls(gateway, {"Host": f"localhost:{gateway.port}"}, "a")
        assert all(u.startswith(f"http://localhost:{gateway.port}/") for u in local.values())
    finally:
        gateway.stop()
    public = "https://hub.example.com"
    gateway = Gateway(f"{registry.host}/{namespace}", tmp_path / "gateway2",
                      ("--public-url", f"{public}, http://127.0.0.1:1"))  # fmt: skip
    _started(gateway)
    try:
        for headers in (HOSTILE, {}, {"Host": "hub.example.com", "X-Forwarded-Proto": "https"}):
            urls = _absolute_urls(gateway, headers, "a")
            assert all(url.startswith(public + "/") for url in urls.values()), (headers, urls)
        urls = _absolute_urls(gateway, {"Host": "127.0.0.1:1"}, "a")  # the second public URL
        assert all(url.startswith("http://127.0.0.1:1/") for url in urls.values()), urls
    finally:
        gateway.stop()


def test_every_answer_says_nosniff_and_the_page_loads_no_foreign_image(registry, tmp_path):
    namespace = "sniff28"
    settings = Settings(home=tmp_path / "home", plain_http=True)
    repository = open_repository(parse_reference(f"{registry.host}/{namespace}/org/m"), settings)
    make_artifact(repository, "v1", _files(**{"config.json": b"{}", "x.html": b"<script>"}))
    gateway = _started(Gateway(f"{registry.host}/{namespace}", tmp_path / "gateway"))
    try:
        for path in ("/org/m/resolve/v1/x.html", "/org/m/resolve/v1/missing", "/healthz",
                     "/api/models/org/m", "/org/m", "/-/hub.css"):  # fmt: skip
            answer = requests.get(gateway.url + path, timeout=30)
            assert answer.headers.get("X-Content-Type-Options") == "nosniff", path
        csp = requests.get(f"{gateway.url}/org/m", timeout=30).headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["img-src"] == "'self' data:", csp
    finally:
        gateway.stop()


# -- issue 28, defect 10: no amplification without credentials --------------------------------


def _worker_cpu(gateway: Gateway) -> float:
    """CPU seconds (user + system) the gateway's worker process has used so far."""
    assert gateway.process is not None
    children = Path(f"/proc/{gateway.process.pid}/task/{gateway.process.pid}/children")
    total = 0.0
    for pid in children.read_text().split():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _costly_yaml(size: int) -> str:
    """Front matter the pure-Python YAML parser takes about 40 us a byte for."""
    line = "a: " + "[" * 200 + "]" * 200 + "\n"
    return "---\n" + line * (size // len(line)) + "---\n# card\n"


def test_validate_yaml_is_bounded(tmp_path):
    """Issue 28, defect 10: /api/validate-yaml needs no credentials.  Its front matter is
    parsed with libyaml and only up to 64 KiB (bigger is a warning, not parsed), the
    body is at most 1 MiB; it used to parse 4 MB in pure Python (300 KB: seconds)."""
    gateway = _started(Gateway("127.0.0.1:9/gw", tmp_path / "gateway"))
    url = f"{gateway.url}/api/validate-yaml"
    try:
        cases = [(_costly_yaml(300_000), 200, "not checked"), (_costly_yaml(60_000), 200, None)]
        for content, status, warning in cases:
            before = _worker_cpu(gateway)
            answer = requests.post(url, json={"content": content}, timeout=60)
            spent = _worker_cpu(gateway) - before
            assert answer.status_code == status, answer.text
            warnings = [w["message"] for w in answer.json()["warnings"]]
            assert (warning in " ".join(warnings)) if warning else not warnings, warnings
            assert spent < 1.0, f"{len(content)} bytes of YAML cost {spent:.2f} s of CPU"
        huge = requests.post(url, json={"content": "x" * (1 << 20)}, timeout=60)
        assert huge.status_code == 413 and huge.headers["X-Error-Message"]
    finally:
        gateway.stop()


def test_unknown_commits_cost_no_manifest_per_tag_per_request(registry, tmp_path):
    """Issue 28, defect 10: a 40-hex revision the gateway never handed out made it list the
    tags and fetch a manifest per tag, on every request.  Now the tags are searched once
    per repository and credential for SEARCH_TTL seconds; meanwhile an unknown commit
    costs one manifest request."""
    settings = Settings(home=tmp_path / "home", plain_http=True)
    repository = open_repository(parse_reference(f"{registry.host}/commits28/org/m"), settings)
    for number in range(6):
        make_artifact(repository, f"v{number}", _files(**{"config.json": f"{number}".encode()}))
    proxy = HttpProxy(upstream=registry.url).start()
    gateway = _started(Gateway(f"{proxy.host}/commits28", tmp_path / "gateway"))
    try:
        costs = []
        for number in range(8):
            commit = hashlib.sha1(f"unknown {number}".encode()).hexdigest()
            asked = len(proxy.exchanges)
            answer = requests.get(f"{gateway.url}/api/models/org/m/revision/{commit}", timeout=30)
            assert answer.status_code == 404, answer.text
            assert answer.headers["X-Error-Code"] == "RevisionNotFound"
            costs.append(len(proxy.exchanges) - asked)
        assert costs[0] >= 7, costs  # the first: the tag list and a manifest per tag
        assert max(costs[1:]) <= 1, costs
        # A commit the search found is still served (it was remembered).
        known = requests.get(f"{gateway.url}/api/models/org/m/revision/v3", timeout=30).json()
        again = requests.get(f"{gateway.url}/api/models/org/m/revision/{known['sha']}", timeout=30)
        assert again.status_code == 200 and again.json()["sha"] == known["sha"]
    finally:
        gateway.stop()
        proxy.stop()


def test_a_listing_with_wrong_credentials_is_one_check_and_a_401(tmp_path):
    """Issue 28, defect 10: GET /api/models with made-up credentials cost a tag list per
    repository of the catalog (each refused), on every request, and answered []. Now
    the credentials are checked once at the registry (as docker login does) and refused
    with 401 before the catalog is walked."""
    with RegistryServer(users={USER: PASSWORD}, workdir=tmp_path / "registry") as server:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MODELPACK_USERNAME", USER)
            mp.setenv("MODELPACK_PASSWORD", PASSWORD)
            settings = Settings(home=tmp_path / "home", plain_http=True)
            for number in range(6):
                reference = parse_reference(f"{server.host}/gw/org/m{number}")
                make_artifact(open_repository(reference, settings), "main", _files(**{"a.json": b"{}"}))  # fmt: skip
        proxy = HttpProxy(upstream=server.url).start()
        gateway = _started(Gateway(f"{proxy.host}/gw", tmp_path / "gateway",
                                   env={"MODELPACK_USERNAME": USER, "MODELPACK_PASSWORD": PASSWORD}))  # fmt: skip
        try:
            right = {"Authorization": f"Bearer {USER}:{PASSWORD}"}
            # One request first: the listing's parallel first requests would race for the
            # client's Basic answer (registry/auth.py; see docs/security.md).
            requests.get(f"{gateway.url}/api/models/org/m0", headers=right, timeout=60)
            listed = requests.get(f"{gateway.url}/api/models", headers=right, timeout=60)
            assert [m["id"] for m in listed.json()] == [f"org/m{n}" for n in range(6)]
            costs = []
            for number in range(3):
                asked = len(proxy.exchanges)
                junk = {"Authorization": f"Bearer nobody:wrong-{number}"}
                answer = requests.get(f"{gateway.url}/api/models", headers=junk, timeout=60)
                assert answer.status_code == 401, answer.text
                assert answer.headers["X-Error-Message"] and "error" in answer.json()
                costs.append(len(proxy.exchanges) - asked)
            assert max(costs) <= 2, costs  # /v2/ and the same with the credentials
            asked = len(proxy.exchanges)
            for header in ("0", "Basic !!", "Bearer"):  # no credentials at all: not asked
                answer = requests.get(f"{gateway.url}/api/models", timeout=60,
                                      headers={"Authorization": header})  # fmt: skip
                assert answer.status_code == 401
            page = requests.get(f"{gateway.url}/", headers=junk, timeout=60)
            assert page.status_code == 401 and page.headers["WWW-Authenticate"].startswith("Basic")
            assert len(proxy.exchanges) - asked <= 2  # the page's check of the last junk: cached
            again = requests.get(f"{gateway.url}/api/models", headers=right, timeout=60)
            assert again.json() == listed.json()
        finally:
            gateway.stop()
            proxy.stop()


def test_a_history_is_walked_once_per_head(registry, tmp_path):
    """Issue 28 (the attack after the fixes): ``list_repo_commits`` cost a manifest per
    commit (up to 1000) on every request, for anyone who may read the repository.  A walk
    is now remembered by its head's manifest digest: the next request costs the head."""
    from test_hub_uploads import hf_python

    proxy = HttpProxy(upstream=registry.url).start()
    gateway = _started(Gateway(f"{proxy.host}/history28", tmp_path / "gateway"))
    try:
        code = """
import json
from huggingface_hub import HfApi
api = HfApi()
api.create_repo("org/long")
for number in range(6):
    api.upload_file(path_or_fileobj=str(number).encode(), path_in_repo=f"f{number}.txt",
                    repo_id="org/long")
print(json.dumps([c.commit_id for c in api.list_repo_commits("org/long")]))
"""
        commits = hf_python(gateway, code, tmp_path / "hf")
        assert len(commits) == 7  # the create's first commit and six uploads
        costs = []
        for _ in range(3):
            asked = len(proxy.exchanges)
            answer = requests.get(f"{gateway.url}/api/models/org/long/commits/main", timeout=30)
            assert [c["id"] for c in answer.json()] == commits
            costs.append(len(proxy.exchanges) - asked)
        assert costs[0] <= 2 and costs[1] <= 2 and costs[2] <= 2, costs  # the head only
    finally:
        gateway.stop()
        proxy.stop()
