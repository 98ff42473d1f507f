"""Cross-site request forgery against `modelpack serve`'s write routes (issue 28, defect 4).

The page's sign-in makes a browser hold Basic credentials for the gateway, and a browser
attaches them to a form another site makes it post.  A real headless Chromium signs in,
then visits an attacker's page on another site (``localhost`` is another site than
``127.0.0.1``; ports would only make another origin) that posts forms (``text/plain``,
the enctype that smuggles JSON) and ``fetch()``es to every write route: the registry must
not change.  huggingface_hub, git-lfs-style clients and curl send no ``Origin`` or
``Sec-Fetch-Site`` and keep working (test_hub_uploads.py, and below).
"""

from __future__ import annotations

import json
import re
import time

import pytest
import requests
from support.browser import Browser
from support.gateway import Gateway
from support.serving import QuietHandler, serve, shutdown

from modelpack.testing import RegistryServer

USER, PASSWORD = "alice", "alice-Pa55"
NAMESPACE = "csrf"
ACCESS_POST = r"gateway: 127\.0\.0\.1 POST (/api/\S+) (\d{3}) \d+B"


@pytest.fixture(scope="module")
def private_gateway(tmp_path_factory):
    work = tmp_path_factory.mktemp("csrf")
    with RegistryServer(users={USER: PASSWORD}, workdir=work / "registry") as registry:
        gateway = Gateway(f"{registry.host}/{NAMESPACE}", work / "gateway").start()
        try:
            created = requests.post(f"{gateway.url}/api/repos/create", auth=(USER, PASSWORD),
                                    json={"name": "victim", "organization": "org"}, timeout=60)  # fmt: skip
            assert created.status_code == 200, created.text
            yield gateway, registry
        finally:
            gateway.stop()


def registry_state(registry: RegistryServer) -> dict[str, list[str]]:
    """Every repository under the namespace and its tags, as the registry says."""
    auth = (USER, PASSWORD)
    names = requests.get(f"{registry.url}/v2/_catalog", auth=auth, timeout=30).json()
    return {
        name: sorted(
            requests.get(f"{registry.url}/v2/{name}/tags/list", auth=auth, timeout=30).json()[
                "tags"
            ]
            or []
        )  # fmt: skip
        for name in names["repositories"]
    }


def _form(number: int, action: str, fields: list[tuple[str, str]]) -> str:
    """A form that posts ``name=value`` lines (text/plain): a name that opens a JSON
    string and a value that closes it make each line JSON."""
    inputs = "".join(
        f"<input name='{name}' value='{value}'>" for name, value in fields
    )  # the names and values below hold no quote that would end the attribute
    return (f'<form id="f{number}" method="POST" action="{action}" enctype="text/plain" '
            f'target="_blank">{inputs}</form>')  # fmt: skip


def attacker_page(gateway: str) -> str:
    header = '{"key":"header","value":{"summary":"forged","pad":"'
    file = '{"key":"file","value":{"path":"forged.txt","encoding":"base64","content":"aGk'
    forms = [
        (f"{gateway}/api/repos/create", [('{"name":"forged-form","organization":"org","p":"',
                                          '"}')]),
        (f"{gateway}/api/models/org/victim/branch/forged", [('{"p":"', '"}')]),
        (f"{gateway}/api/models/org/victim/tag/main", [('{"tag":"forged","p":"', '"}')]),
        (f"{gateway}/api/models/org/victim/commit/main", [(header, '"}}'), (file, '"}}')]),
    ]  # fmt: skip
    fetches = [
        (f"{gateway}/api/repos/create", json.dumps({"name": "forged-fetch", "organization": "org"})),
        (f"{gateway}/api/models/org/victim/branch/forged2", "{}"),
        (f"{gateway}/api/models/org/victim/commit/main",
         '{"key":"header","value":{"summary":"forged"}}\n'
         '{"key":"file","value":{"path":"f.txt","encoding":"base64","content":"aGk="}}\n'),
    ]  # fmt: skip
    return (
        "<!DOCTYPE html><html><body>"
        + "".join(_form(i, action, fields) for i, (action, fields) in enumerate(forms))
        + "<script>\n"
        + f"for (let i = 0; i < {len(forms)}; i++) document.getElementById('f' + i).submit();\n"
        + f"const attempts = {json.dumps(fetches)};\n"
        + """(async () => {
  for (const [url, body] of attempts) {
    for (const type of ["text/plain", undefined]) {
      const headers = type ? {"Content-Type": type} : {};
      try {
        await fetch(url, {method: "POST", mode: "no-cors", credentials: "include", body, headers});
      } catch (e) {}
    }
  }
  await fetch("/done");
})();
</script></body></html>"""
    )


def test_a_page_on_another_site_cannot_write_with_the_browsers_credentials(
    private_gateway, tmp_path
):
    gateway, registry = private_gateway
    before = registry_state(registry)
    assert before == {f"{NAMESPACE}/org/victim": before[f"{NAMESPACE}/org/victim"]}
    page = attacker_page(gateway.url).encode()
    done = []

    class Attacker(QuietHandler):
        def do_GET(self) -> None:
            if self.path == "/done":
                done.append(time.monotonic())
            self.answer(200, page, {"Content-Type": "text/html; charset=utf-8"})

    server = serve(Attacker)
    browser = Browser(tmp_path, "--disable-popup-blocking")
    try:
        # The person signs in on the gateway's page (the browser keeps the credentials)...
        browser.visit(f"http://{USER}:{PASSWORD}@127.0.0.1:{gateway.port}/?signin=1")
        signed_in = gateway.wait_for_log(r"GET /\?signin=1 200|GET / 200")
        assert " GET / 200" in signed_in
        # ...and later opens a page on another site.
        browser.visit(f"http://localhost:{server.server_address[1]}/")
        deadline = time.monotonic() + 30
        while not done or len(re.findall(ACCESS_POST, gateway.log())) < 10:
            assert time.monotonic() < deadline, gateway.log()[-3000:]
            time.sleep(0.2)
        time.sleep(1)  # the last forms' windows
    finally:
        browser.close()
        shutdown(server)
    posts = re.findall(ACCESS_POST, gateway.log())
    forged = [(path, status) for path, status in posts if "forged" in path or "victim" in path
              or path == "/api/repos/create"][1:]  # fmt: skip  # [0]: the fixture's own
    assert len(forged) >= 10, posts  # every form and fetch reached the gateway
    assert all(status in ("401", "403", "415") for _, status in forged), forged
    assert registry_state(registry) == before


def test_browser_marks_and_simple_content_types_are_refused_and_clients_are_not(private_gateway):
    """Each defence on its own, for every write route: a cross-site Sec-Fetch-Site, a
    foreign or null Origin, and a body type a browser may send without asking are
    refused before the registry is asked; the same request as huggingface_hub or curl
    sends it is answered."""
    gateway, registry = private_gateway
    auth = (USER, PASSWORD)
    before = registry_state(registry)
    json_type = {"Content-Type": "application/json"}
    routes = [
        ("/api/repos/create", {"name": "forged", "organization": "org"}, json_type),
        ("/api/models/org/victim/branch/forged", {}, json_type),
        ("/api/models/org/victim/tag/main", {"tag": "forged"}, json_type),
        ("/api/models/org/victim/preupload/main", {"files": []}, json_type),
        ("/api/validate-yaml", {"content": "---\na: 1\n---\n"}, json_type),
        ("/org/victim.git/info/lfs/objects/batch", {"operation": "upload", "objects": []},
         {"Content-Type": "application/vnd.git-lfs+json"}),
        ("/api/models/org/victim/commit/main", None, {"Content-Type": "application/x-ndjson"}),
    ]  # fmt: skip
    commit = b'{"key":"header","value":{"summary":"s"}}\n'
    cross_site = [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://localhost:1"},
        {"Origin": "null"},
        {"Origin": f"http://127.0.0.1:{gateway.port}", "Sec-Fetch-Site": "cross-site"},
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "multipart/form-data; boundary=x"},
        {"Content-Type": ""},
    ]
    for path, document, right_type in routes:
        body = commit if document is None else json.dumps(document).encode()
        for headers in cross_site:
            answer = requests.post(f"{gateway.url}{path}", data=body, auth=auth, timeout=30,
                                   headers={**right_type, **headers})  # fmt: skip
            assert answer.status_code in (403, 415), (path, headers, answer.status_code)
            assert answer.headers["X-Error-Message"] and "error" in answer.json()
    assert registry_state(registry) == before
    # Same-origin, and no browser marks at all: answered.
    own = {"Origin": f"http://127.0.0.1:{gateway.port}", "Sec-Fetch-Site": "same-origin"}
    for headers in ({}, own):
        for path, document, right_type in routes[3:]:
            body = commit if document is None else json.dumps(document).encode()
            answer = requests.post(f"{gateway.url}{path}", data=body, auth=auth, timeout=60,
                                   headers={**right_type, **headers})  # fmt: skip
            assert answer.status_code == 200, (path, headers, answer.text)
