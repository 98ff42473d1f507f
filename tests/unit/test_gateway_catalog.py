"""The listing's parts a client controls (query, cursor) and the page's markdown, in-process."""

from __future__ import annotations

import pytest

from modelpack.errors import UsageError
from modelpack.gateway.core.config import GatewayConfig
from modelpack.gateway.core.http import Request
from modelpack.gateway.core.hub import HubError
from modelpack.gateway.read.catalog import (
    ListQuery,
    _cursor,
    default_revision,
    hub_time,
    next_link,
)
from modelpack.gateway.web.pages import render_markdown


def _request(query: str = "", **headers: str) -> Request:
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": f"/api/models?{query}", "HTTP_HOST": "gw:8080",
               "wsgi.url_scheme": "http"}  # fmt: skip
    environ.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    return Request.from_environ(environ)


def test_the_query_huggingface_hub_sends():
    query = ListQuery.from_request(_request(
        "search=BERT&author=Org&filter=a&filter=b&sort=lastModified&limit=5000"
        "&expand=sha&expand=tags&full=True&cardData=true"))  # fmt: skip
    assert (query.search, query.author, query.filters) == ("bert", "org", ("a", "b"))
    assert query.sort == "lastModified" and query.descending
    assert query.limit == 1000  # the hub's largest page
    assert query.expand == ("sha", "tags") and query.full and query.card_data
    assert not ListQuery.from_request(_request("sort=id")).descending
    assert ListQuery.from_request(_request("sort=id&direction=-1")).descending
    assert not ListQuery.from_request(_request("sort=createdAt&direction=1")).descending
    assert ListQuery.from_request(_request("limit=0")).limit == 1


@pytest.mark.parametrize("query", ["sort=stars", "limit=x", "cursor=!!", "cursor=e30"])
def test_a_bad_query_is_a_400(query):
    with pytest.raises(HubError) as caught:
        ListQuery.from_request(_request(query))
    assert caught.value.status == 400


def test_next_link_keeps_the_query_and_moves_the_cursor(tmp_path):
    config = GatewayConfig("127.0.0.1:9", public_url=("http://gw:8080",))
    request = _request("search=x&filter=a&filter=b&limit=2&cursor=" + _cursor(2))
    query = ListQuery.from_request(request)
    assert query.offset == 2
    link = next_link(request, query, config)
    assert link.startswith("http://gw:8080/api/models?search=x&filter=a&filter=b&limit=2&cursor=")
    assert ListQuery.from_request(_request(link.split("?", 1)[1])).offset == 4


def test_the_base_url_is_a_public_url_or_a_loopback_or_listen_address():
    """Issue 28, defect 11: a Host header is never reflected unless it is known."""
    config = GatewayConfig("127.0.0.1:9", bind="10.1.2.3", port=8080)
    assert _request().base_url(config) == "http://10.1.2.3:8080"  # Host gw:8080: not ours
    assert _request(HOST="10.1.2.3:8080").base_url(config) == "http://10.1.2.3:8080"
    assert _request(HOST="localhost:9999", X_FORWARDED_PROTO="https").base_url(config) == (
        "https://localhost:9999"
    )
    assert _request(HOST="[::1]:80").base_url(config) == "http://[::1]"
    for hostile in ("evil.example", "evil.example@127.0.0.1", "127.0.0.1/x", "a b", ""):
        assert _request(HOST=hostile).base_url(config) == "http://10.1.2.3:8080", hostile
    anywhere = GatewayConfig("127.0.0.1:9", bind="0.0.0.0", port=8080)
    assert _request(HOST="0.0.0.0:8080").base_url(anywhere) == "http://127.0.0.1:8080"
    public = GatewayConfig(
        "127.0.0.1:9", public_url=("HTTPS://Hub.Example.com:443/, http://gw:8080", "http://gw:8080")
    )
    assert public.public_url == ("https://hub.example.com", "http://gw:8080")
    assert _request().base_url(public) == "http://gw:8080"
    assert _request(HOST="localhost").base_url(public) == "https://hub.example.com"
    assert _request(HOST="hub.example.com", X_FORWARDED_PROTO="https").base_url(public) == (
        "https://hub.example.com"
    )


@pytest.mark.parametrize(
    "url", ["hub.example.com", "ftp://hub", "https://hub/prefix", "https://u@hub", "http://h:0",
            "http://h:99999", "https://hub?x", "https://"]
)  # fmt: skip
def test_a_public_url_is_an_http_origin(url):
    with pytest.raises(UsageError):
        GatewayConfig("127.0.0.1:9", public_url=(url,))


def test_default_revision_and_hub_times():
    assert default_revision(["v1", "main", "latest"]) == "main"
    assert default_revision(["v1", "latest"]) == "latest"
    assert default_revision(["v9", "v10", "v2"]) == "v10"
    assert default_revision([]) == "main"
    assert hub_time("2024-11-16T00:27:02Z") == "2024-11-16T00:27:02.000Z"
    assert hub_time("2024-11-16T02:27:02.123456+02:00") == "2024-11-16T00:27:02.123Z"
    assert hub_time("yesterday") is None and hub_time(None) is None


def test_markdown_has_no_raw_html_and_relative_links_point_at_files():
    html = render_markdown(
        "<script>x</script> [a](config.json) [b](https://e.com) [c](javascript:x) "
        "![i](img/p.png) [d](#top) [e](../../up)",
        "/org/m/resolve/abc/",
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="/org/m/resolve/abc/config.json"' in html
    assert 'src="/org/m/resolve/abc/img/p.png"' in html
    assert 'href="https://e.com"' in html and 'href="#top"' in html
    assert "javascript:" not in html.split("[c](")[0] and 'href="javascript' not in html
    assert 'href="../../up"' in html  # leaves the repository: left alone


def test_front_matter_too_deep_or_too_large_is_ignored():
    from modelpack.gateway.read.card import _TooLarge, as_json
    from modelpack.model.metadata import front_matter

    warnings: list[str] = []
    deep = "---\nx: " + "[" * 5000 + "]" * 5000 + "\n---\n"
    assert front_matter(deep, "README.md", warnings) == {}
    assert "not valid YAML" in warnings[-1]  # libyaml: too deep; the Python parser: RecursionError
    with pytest.raises(_TooLarge):
        as_json({"a": [[0] * 1000] * 1000})  # a million values, shared as aliases make them
