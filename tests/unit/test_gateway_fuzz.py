"""Property tests on what a gateway client controls: paths, revisions, ranges, headers.

The WSGI app runs in-process in front of a registry of the tests' own that
records every path it is asked for.  Whatever the request, the answer is never
a 500, the gateway logs no traceback, and the registry sees no path outside
the gateway's namespace.  MODELPACK_FUZZ_EXAMPLES raises the example count for a
long run, as in test_fuzz.py.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.helpers import make_artifact
from support.hostile_registry import HostileRegistry

from modelpack.gateway import GatewayConfig, make_app
from modelpack.gateway.core.http import parse_range
from modelpack.gateway.core.hub import HubError
from modelpack.oci.spec import ANNOTATION_FILEPATH
from modelpack.settings import Settings

EXAMPLES = int(os.environ.get("MODELPACK_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
NAMESPACE = "ns"
WEIGHTS = bytes(range(256)) * 64

WORDS = ["api", "models", "datasets", "resolve", "revision", "tree", "paths-info", "org",
         "m", "v1", "main", "latest", "model.safetensors", "config.json", "sha256:", "..",
         ".", "", "%2F", "%2E%2E", "refs", "pr", "1", "healthz", "metrics", "a" * 300,
         "\u00e9", "%00", "sha256:" + "0" * 64, "%0A", "?", "#", ";", "@", "~"]  # fmt: skip
segment = st.sampled_from(WORDS) | st.text(max_size=12)
header_text = st.text(max_size=40) | st.sampled_from(
    ["bytes=0-", "bytes=-1", "bytes=" + "9" * 5000 + "-", "bytes=1-0", "bytes=0-1,2-3",
     "Bearer x", "Basic !!", "Basic " + "A" * 100, '"abc"', "*"]
)  # fmt: skip


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    registry = HostileRegistry().start()
    files = [("application/vnd.cncf.model.weight.v1.raw", WEIGHTS, {ANNOTATION_FILEPATH: "model.safetensors"}),
             ("application/vnd.cncf.model.weight.config.v1.raw", b"{}", {ANNOTATION_FILEPATH: "config.json"})]  # fmt: skip
    make_artifact(registry, "v1", files)
    home = tmp_path_factory.mktemp("gateway-fuzz")
    config = GatewayConfig(
        f"{registry.host}/{NAMESPACE}", settings=Settings(home=home, plain_http=True)
    )
    yield make_app(config), registry
    registry.stop()


def _call(app, method: str, raw_path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    environ = {
        "REQUEST_METHOD": method,
        "RAW_URI": raw_path,
        "PATH_INFO": unquote(raw_path.partition("?")[0]).encode().decode("latin-1"),
        "QUERY_STRING": raw_path.partition("?")[2],
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_LENGTH": headers.pop("Content-Length", ""),
        "CONTENT_TYPE": headers.pop("Content-Type", ""),
        "wsgi.input": io.BytesIO(b'{"paths": ["config.json"]}'),
    }
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    status: list[str] = []
    body = app(environ, lambda line, _headers: status.append(line))
    data = b"".join(body)
    getattr(body, "close", lambda: None)()
    return int(status[0].split()[0]), data


@FUZZ
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE"]),
    parts=st.lists(segment, min_size=1, max_size=8),
    encode=st.booleans(),
    headers=st.dictionaries(
        st.sampled_from(
            ["Range", "Authorization", "If-None-Match", "Content-Length", "Content-Type"]
        ),  # fmt: skip
        header_text,
        max_size=4,
    ),
)
def test_no_request_gets_a_500_or_leaves_the_namespace(
    gateway, caplog, method, parts, encode, headers
):
    app, registry = gateway
    caplog.set_level(logging.WARNING, logger="modelpack.gateway")
    path = "/" + "/".join(quote(p, safe="%:") if encode else p for p in parts)
    # A usable prefix now and then, so requests get as far as the registry.
    if parts[0] == "org":
        path = "/org/m/resolve" + path
    elif parts[0] == "api":
        path = "/api/models/org/m/revision" + path
    status, _ = _call(app, method, path, dict(headers))
    assert status != 500, (method, path, headers)
    assert not [r for r in caplog.records if r.exc_info], (method, path, headers)
    for request in registry.requests:
        seen = request.split(" ", 1)[1].split("?")[0]
        # /v2/_catalog: the listing (``/``, ``/api/models``) reads the registry's names;
        # /api/v2.0/systeminfo: it asks once whether the registry is Harbor (harborlist.py)
        assert seen in ("/v2", "/v2/", "/v2/_catalog", "/api/v2.0/systeminfo") or (
            seen.startswith(f"/v2/{NAMESPACE}/") and posixpath.normpath(seen) == seen
        ), (path, seen)


@FUZZ
@given(header=header_text | st.from_regex(r"bytes=[0-9]{0,30}-[0-9]{0,30}", fullmatch=True),
       size=st.integers(0, 1 << 40))  # fmt: skip
def test_any_range_header_is_a_span_inside_the_file_or_416_or_ignored(header, size):
    try:
        span = parse_range(header, size)
    except HubError as exc:
        assert exc.status == 416 and exc.headers["Content-Range"] == f"bytes */{size}"
        return
    if span is not None:
        first, last = span
        assert 0 <= first <= last < size
