"""Discovery (``/api/models``) and the web page of ``modelpack serve``, with real clients.

huggingface_hub's ``list_models``, its pagination helper, ``model_info``, ``list_repo_files``,
``list_repo_tree``, ``file_exists``, ``resolve_revision``, ``HfFileSystem`` and transformers'
``has_file`` run in a subprocess with only HF_ENDPOINT set; the pages are loaded in headless
Chromium (screenshots in the test's tmp dir and /tmp/hub-shots/).
"""

import base64
import hashlib
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
import yaml
from support.browser import dump_dom, screenshot
from support.gateway import Gateway, clean_env
from support.helpers import build_and_push, tree_files
from support.token_server import TokenServer

import modelpack
from modelpack.settings import Settings
from modelpack.testing import RegistryServer, make_tiny_model

NAMESPACE = "disco"  # the session registry holds other tests' repositories too
EPOCHS = {"org/alpha": 1_600_000_000, "org/beta": 1_700_000_000, "team/gamma": 1_650_000_000}
HOSTILE_README = """---
license: "<img src=x onerror=alert(1)>"
tags:
- "<script>alert('tag')</script>"
- hostile
---
# Hostile <script>document.title='pwned'</script>

<script>document.title='pwned'</script>
<img src=x onerror="document.title='pwned'">

[click me](javascript:document.title='pwned') and [fine](https://example.com/ok),
[the config](./config.json) and ![a picture](1_Pooling/config.json)
"""

LIST_CLIENT = """
import json, os, sys
from huggingface_hub import HfApi
from huggingface_hub.utils._pagination import paginate
api = HfApi()
ids = lambda models: [m.id for m in models]
out = {
    "all": ids(api.list_models()),
    "author": ids(api.list_models(author="team")),
    "search": ids(api.list_models(search="alp")),
    "filter": ids(api.list_models(filter="hostile")),
    "filter_config": ids(api.list_models(filter=["safetensors", "license:apache-2.0"])),
    "newest": ids(api.list_models(sort="last_modified", limit=2)),
    "limit": ids(api.list_models(limit=1)),
    "expanded": [
        {"id": m.id, "sha": m.sha, "tags": m.tags, "last_modified": str(m.last_modified)}
        for m in api.list_models(author="org", expand=["sha", "tags", "lastModified"])
    ],
    "full": [
        sorted(s.rfilename for s in m.siblings or [])
        for m in api.list_models(search="alpha", full=True)
    ],
    # The client's own pagination helper, two per page: it follows each Link.
    "paged": [m["id"] for m in paginate(
        os.environ["HF_ENDPOINT"] + "/api/models", params={"limit": 2}, headers={})],
}
print(json.dumps(out))
"""

LOAD_CLIENT = """
import json, sys
import huggingface_hub
from huggingface_hub import HfApi, HfFileSystem, file_exists, list_repo_files
from transformers import AutoConfig, AutoTokenizer
from transformers.utils.hub import has_file
api = HfApi()
repo, rev = "org/alpha", "v1"
info = api.model_info(repo, revision=rev, expand=["sha", "siblings", "cardData", "tags",
                                                  "lastModified", "createdAt"])
tree = api.list_repo_tree(repo, revision=rev, recursive=True)
fs = HfFileSystem()
out = {
    "sha": info.sha,
    "siblings": sorted(s.rfilename for s in info.siblings),
    "card": info.card_data.to_dict() if info.card_data else None,
    "tags": info.tags,
    "last_modified": str(info.last_modified),
    "default": (lambda i: [i.card_data.to_dict()["pipeline_tag"], i.pipeline_tag, i.tags])(
        api.model_info(repo, revision=rev)),
    "files": sorted(list_repo_files(repo, revision=rev)),
    "tree": sorted((e.path, type(e).__name__) for e in tree),
    "top": sorted(e.path for e in api.list_repo_tree(repo, revision=rev)),
    "exists": [file_exists(repo, "config.json", revision=rev),
               api.file_exists(repo, "1_Pooling/config.json", revision=rev),
               file_exists(repo, "nope.json", revision=rev)],
    "has_file": [has_file(repo, "model.safetensors", revision=rev),
                 has_file(repo, "pytorch_model.bin", revision=rev)],
    "resolved": str(api.resolve_revision(repo, revision=rev).resolved),
    "fs": sorted(p["name"] for p in fs.ls(f"{repo}@{rev}", detail=True)),
    "fs_size": fs.info(f"{repo}@{rev}/model.safetensors")["size"],
    "config": AutoConfig.from_pretrained(repo, revision=rev).model_type,
    "tokenizer": type(AutoTokenizer.from_pretrained(repo, revision=rev)).__name__,
}
print(json.dumps(out))
"""


def _push(model, ref, home, monkeypatch, epoch=None):
    if epoch is not None:
        monkeypatch.setenv("SOURCE_DATE_EPOCH", str(epoch))
    build_and_push(model, ref, Settings(home=home, plain_http=True))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    return ref


@pytest.fixture(scope="module")
def hub(registry, tmp_path_factory):
    """Four models (one with a hostile card), alpha signed, and a gateway before them."""
    work = tmp_path_factory.mktemp("discovery")
    model = make_tiny_model(work / "tiny")
    hostile = make_tiny_model(work / "hostile")
    (hostile / "README.md").write_text(HOSTILE_README)
    home = work / "home"
    keys = modelpack.keygen(work / "key")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_CONFIG", str(work / "docker"))
        base = f"{registry.host}/{NAMESPACE}"
        for repo, epoch in EPOCHS.items():
            _push(model, f"{base}/{repo}:v1", home, mp, epoch)
        _push(hostile, f"{base}/team/hostile:v1", home, mp, 1_500_000_000)
        modelpack.tag(f"{base}/org/alpha:v1", f"{base}/org/alpha:v2",
                      settings=Settings(home=home, plain_http=True))  # fmt: skip
        modelpack.push(f"{base}/org/alpha:v2", settings=Settings(home=home, plain_http=True))
        modelpack.sign(f"{base}/org/alpha:v1", keys.private_path,
                       settings=Settings(home=home, plain_http=True))  # fmt: skip
    gateway = Gateway(f"{registry.host}/{NAMESPACE}", work / "gateway").start()
    yield gateway, model, keys, work
    gateway.stop()


ALL = ["org/alpha", "org/beta", "team/gamma", "team/hostile"]


def test_list_models_with_the_real_client(hub, registry, tmp_path):
    gateway, model, _, _ = hub
    out = gateway.client(LIST_CLIENT, None, tmp_path / "hf")
    # Eleven listings read the README once (the same bytes in three repositories: one
    # GET into the node cache) and never a weights file.
    gets = re.findall(
        rf"GET /v2/{NAMESPACE}/\S+/blobs/(sha256:[0-9a-f]{{64}})", registry.access_log()
    )
    readme = hashlib.sha256((model / "README.md").read_bytes()).hexdigest()
    weights = hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()
    assert gets.count(f"sha256:{readme}") == 1 and f"sha256:{weights}" not in gets, gets
    assert out["all"] == ALL
    assert out["author"] == ["team/gamma", "team/hostile"]
    assert out["search"] == ["org/alpha"]
    assert out["filter"] == ["team/hostile"]  # the card's tag
    # format and license come from the model config (the hostile card names another license)
    assert out["filter_config"] == ALL[:3]
    assert out["newest"] == ["org/beta", "team/gamma"]  # built last, first
    assert out["limit"] == ["org/alpha"]
    expanded = {m["id"]: m for m in out["expanded"]}
    assert set(expanded) == {"org/alpha", "org/beta"}
    assert re.fullmatch(r"[0-9a-f]{40}", expanded["org/alpha"]["sha"])
    assert "safetensors" in expanded["org/alpha"]["tags"]
    assert expanded["org/beta"]["last_modified"].startswith("2023-11-14 22:13:20")
    assert out["full"] == [sorted(tree_files(model))]
    assert out["paged"] == ALL  # two per page: the client followed the first page's Link
    first = requests.get(f"{gateway.url}/api/models", params={"limit": 2})
    assert first.links["next"]["url"].startswith(f"{gateway.url}/api/models?limit=2&cursor=")
    last = requests.get(first.links["next"]["url"])
    assert [m["id"] for m in last.json()] == ALL[2:] and "next" not in last.links
    assert requests.get(f"{gateway.url}/api/models", params={"sort": "stars"}).status_code == 400
    # Behind a TLS proxy the next page stays on https (the client's token goes with it);
    # a Host the gateway is not known by is not reflected (--public-url names it).
    host = f"localhost:{gateway.port}"
    proxied = requests.get(f"{gateway.url}/api/models", params={"limit": 2},
                           headers={"X-Forwarded-Proto": "https", "Host": host})  # fmt: skip
    assert proxied.links["next"]["url"].startswith(f"https://{host}/api/models?limit=2&")
    assert requests.post(f"{gateway.url}/api/models").status_code == 405
    # An Authorization that is no credential is refused (and is no 500); the page asks
    # the browser for credentials again.
    junk = requests.get(f"{gateway.url}/api/models", headers={"Authorization": "0"})
    assert junk.status_code == 401 and "error" in junk.json()
    page = requests.get(f"{gateway.url}/", headers={"Authorization": "0"})
    assert page.status_code == 401 and page.headers["WWW-Authenticate"].startswith("Basic")


def test_model_info_and_what_loaders_call(hub, tmp_path):
    """What transformers and vLLM call at load time (vLLM itself is not installed here:
    its repo_utils call these huggingface_hub functions)."""
    gateway, model, _, _ = hub
    out = gateway.client(LOAD_CLIENT, None, tmp_path / "hf")
    files = sorted(tree_files(model))
    assert re.fullmatch(r"[0-9a-f]{40}", out["sha"]) and out["resolved"] == out["sha"]
    assert out["siblings"] == files and out["files"] == files
    assert out["card"]["license"] == "apache-2.0" and out["card"]["tags"] == ["tiny", "testing"]
    assert {"tiny", "testing", "safetensors", "license:apache-2.0"} <= set(out["tags"])
    assert out["last_modified"].startswith("2020-09-13 12:26:40")
    # Without expand too, as the hub: the card, and the tags it gives (transformers'
    # is_base_mistral reads them).
    assert out["default"][:2] == ["feature-extraction", "feature-extraction"]
    assert {"tiny", "testing"} <= set(out["default"][2])
    kinds = dict(out["tree"])
    assert kinds.pop("1_Pooling") == "RepoFolder"
    assert kinds == dict.fromkeys(files, "RepoFile")
    assert "1_Pooling/config.json" not in out["top"] and "1_Pooling" in out["top"]
    assert out["exists"] == [True, True, False]
    assert out["has_file"] == [True, False]
    assert [p.rsplit("/", 1)[-1] for p in out["fs"]] == sorted({p.split("/")[0] for p in files}), (
        out["fs"]
    )
    assert out["fs_size"] == len((model / "model.safetensors").read_bytes())
    assert out["config"] == "bert" and out["tokenizer"].startswith("Bert")


# -- per-client access ---------------------------------------------------------------

USERS = {"lister": "lister-pass", "alice": "alice-pass", "reader": "reader-pass",
         "pusher": "pusher-pass"}  # fmt: skip
POLICY = {
    "lister": {"*": ["pull"]},
    "pusher": {"*": ["pull", "push"]},
    "alice": {"team/*": ["pull", "push"]},
    "reader": {"*": ["pull"]},
    "": {"public/*": ["pull"]},
}


@pytest.fixture(scope="module")
def token_hub(tmp_path_factory):
    """A registry with token auth as Harbor runs it: per-repository policies, and the
    catalog only for the gateway's own user (``lister``)."""
    work = tmp_path_factory.mktemp("discovery-token")
    tokens = TokenServer(work / "tokens", users=dict(USERS), policy=POLICY,
                         catalog_users={"lister"}).start()  # fmt: skip
    server = RegistryServer(workdir=work / "server", extra_config=tokens.registry_auth_yaml())
    server.start()
    model = make_tiny_model(work / "tiny")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_CONFIG", str(work / "docker"))
        mp.setenv("MODELPACK_USERNAME", "pusher")
        mp.setenv("MODELPACK_PASSWORD", USERS["pusher"])
        for repo in ("team/one", "team/two", "public/open", "prod/secret"):
            _push(model, f"{server.host}/{repo}:v1", work / "home", mp)
    yield server, tokens, work
    server.cleanup()
    tokens.stop()


LIST_AS = """
import json, sys
from huggingface_hub import HfApi
try:
    print(json.dumps([m.id for m in HfApi().list_models()]))
except Exception as exc:
    print(json.dumps({"status": exc.response.status_code}))
"""


def _basic(user):
    return "Basic " + base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()


def test_each_client_sees_only_what_the_registry_lets_it_read(token_hub, tmp_path):
    server, tokens, _ = token_hub
    gateway = Gateway(server.host, tmp_path / "gateway", env={
        "MODELPACK_USERNAME": "lister", "MODELPACK_PASSWORD": USERS["lister"]}).start()  # fmt: skip
    try:
        seen = {
            who: gateway.client(LIST_AS, None, tmp_path / f"hf-{who}", token)
            for who, token in [
                ("anonymous", None),
                ("alice", f"alice:{USERS['alice']}"),
                ("reader", f"reader:{USERS['reader']}"),
                ("wrong", "alice:wrong"),
            ]
        }
        assert seen == {
            "anonymous": ["public/open"],
            "alice": ["team/one", "team/two"],
            "reader": ["prod/secret", "public/open", "team/one", "team/two"],
            "wrong": {"status": 401},  # refused once, not one tag list per repository
        }
        # One token for the reader's walk of the four repositories, not one each (on Harbor
        # every token request with a password costs its core 0.1 s of CPU); alice's token
        # names only team/*, the others were asked for alone and refused.
        asked = {who: [r["scopes"] for r in tokens.requests if r.get("user") == who]
                 for who in ("reader", "alice")}  # fmt: skip
        assert sorted(map(len, asked["reader"])) == [0, 4], asked
        assert sorted(map(len, asked["alice"])) == [0, 1, 1, 4], asked
        # The catalog was read with the gateway's own user only.
        catalog_users = {r["user"] for r in tokens.requests if "registry:catalog:*" in r["scopes"]}
        assert catalog_users == {"lister"}
        # The page follows the same rules, with a browser's Basic credentials.
        page = requests.get(f"{gateway.url}/", headers={"Authorization": _basic("alice")})
        assert "team/one" in page.text and "prod/secret" not in page.text
        assert "signed in as alice" in page.text
        refused = requests.get(
            f"{gateway.url}/prod/secret", headers={"Authorization": _basic("alice")}
        )
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Basic ")
        assert server.host not in refused.text
        anonymous = requests.get(f"{gateway.url}/prod/secret")
        assert anonymous.status_code == 401 and "WWW-Authenticate" in anonymous.headers
        signin = requests.get(f"{gateway.url}/?signin=1")
        assert signin.status_code == 401 and signin.headers["WWW-Authenticate"].startswith("Basic")
        allowed = requests.get(
            f"{gateway.url}/prod/secret", headers={"Authorization": _basic("reader")}
        )
        assert allowed.status_code == 200 and "model.safetensors" in allowed.text
        # Sign in in a browser: /?signin=1 challenges, the browser answers with Basic
        # credentials (from the URL here: headless Chromium has no prompt to type them into).
        dom = dump_dom(
            f"http://alice:{USERS['alice']}@127.0.0.1:{gateway.port}/?signin=1", tmp_path
        )
        assert "signed in as alice" in dom and 'href="/team/one"' in dom
        assert "prod/secret" not in dom and "public/open" not in dom
    finally:
        gateway.stop()
    assert USERS["lister"] not in gateway.log() and USERS["alice"] not in gateway.log()


def test_a_registry_without_catalog_access_lists_nothing_and_says_so(token_hub, tmp_path):
    """Harbor gives /v2/_catalog to system admins only: a gateway whose user is not one
    lists nothing, its page says why, and models are still served by name."""
    server, _, _ = token_hub
    gateway = Gateway(server.host, tmp_path / "gateway", env={
        "MODELPACK_USERNAME": "reader", "MODELPACK_PASSWORD": USERS["reader"]}).start()  # fmt: skip
    try:
        assert gateway.client(LIST_AS, None, tmp_path / "hf", f"reader:{USERS['reader']}") == []
        gateway.wait_for_log(r"/v2/_catalog\) failed, /api/models lists nothing")
        page = requests.get(f"{gateway.url}/", headers={"Authorization": _basic("reader")})
        assert page.status_code == 200 and "does not let this gateway list" in page.text
        info = requests.get(f"{gateway.url}/api/models/team/one/revision/v1",
                            headers={"Authorization": _basic("reader")})  # fmt: skip
        assert info.status_code == 200 and info.json()["id"] == "team/one"
    finally:
        gateway.stop()


# -- the web page --------------------------------------------------------------------


class _Elements(HTMLParser):
    """Every element and attribute of a DOM, as the browser built it."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.ids: dict[str, str] = {}
        self._open: list[str] = []
        self._text: dict[str, list[str]] = {}

    def handle_starttag(self, tag, attrs):
        attributes = {k: v or "" for k, v in attrs}
        self.elements.append((tag, attributes))
        if "id" in attributes:
            self._open.append(attributes["id"])
            self._text[attributes["id"]] = []

    def handle_data(self, data):
        for name in self._open:
            self._text[name].append(data)

    def handle_endtag(self, tag):
        pass

    def text(self, element_id: str) -> str:
        return "".join(self._text.get(element_id, []))


def _elements(dom: str) -> _Elements:
    parser = _Elements()
    parser.feed(dom)
    return parser


def _snippet(dom: str, element_id: str) -> str:
    import html

    match = re.search(rf'<pre id="{element_id}"><code>(.*?)</code></pre>', dom, re.S)
    assert match, element_id
    return html.unescape(match.group(1))


def test_pages_in_a_browser(hub, tmp_path):
    gateway, model, _, _ = hub
    shots = tmp_path / "shots"
    index = dump_dom(f"{gateway.url}/", tmp_path)
    screenshot(f"{gateway.url}/", shots / "hub-index.png", tmp_path)
    links = [a.get("href") for t, a in _elements(index).elements if t == "a"]
    assert [h for h in links if h in {f"/{r}" for r in ALL}] == [f"/{r}" for r in ALL]

    found = dump_dom(f"{gateway.url}/?search=gam", tmp_path)
    screenshot(f"{gateway.url}/?search=gam", shots / "hub-search.png", tmp_path)
    assert "/team/gamma" in found and "/org/alpha" not in found

    dom = dump_dom(f"{gateway.url}/org/alpha/tree/v1", tmp_path)
    screenshot(f"{gateway.url}/org/alpha/tree/v1", shots / "hub-model.png", tmp_path,
               size="1280,1400")  # fmt: skip
    assert "<h1>tiny-bert</h1>" in dom  # the README, rendered
    assert "1 cosign signature(s)" in dom  # signed, and this gateway has no --verify-key
    badges = re.findall(r'<span class="badge"><b>([^<]+)</b>([^<]+)</span>', dom)
    assert ("license", "apache-2.0") in badges and '<span class="badge">tiny</span>' in dom
    rows = re.findall(r'<td><a href="([^"]+)">([^<]+)</a></td><td class="size">([^<]+)</td>', dom)
    assert {name for _, name, _ in rows} == set(tree_files(model))
    sizes = {name: size for _, name, size in rows}
    assert sizes["config.json"] == f"{len((model / 'config.json').read_bytes())} B"
    for href, name, _ in rows:  # each file link downloads that file
        if name == "config.json":
            assert requests.get(gateway.url + href).content == (model / name).read_bytes()
    revisions = re.findall(r'<p class="revisions">(.*?)</p>', dom)[0]
    assert re.findall(r">(v\d)</a>", revisions) == ["v1", "v2"]
    assert 'class="current" href="/org/alpha/tree/v1"' in revisions

    # The snippets work as printed.
    hf = _snippet(dom, "snippet-hf")
    assert hf.startswith(f"export HF_ENDPOINT={gateway.url}\n")
    env = clean_env(tmp_path, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1",
                    PATH=os.environ["PATH"])  # fmt: skip
    ran = subprocess.run(["bash", "-c", hf.replace("python ", f"{sys.executable} ", 1)], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert tree_files(Path(ran.stdout.strip().splitlines()[-1])) == tree_files(model)

    pull = _snippet(dom, "snippet-pull")
    assert pull.startswith("modelpack pull ") and pull.endswith(" -o ./alpha")
    ran = subprocess.run([sys.executable, "-m", "modelpack", *pull.split()[1:]], cwd=tmp_path,
                         env=clean_env(tmp_path, MODELPACK_HOME=str(tmp_path / "mp")),
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert tree_files(tmp_path / "alpha") == tree_files(model)

    init = yaml.safe_load(_snippet(dom, "snippet-k8s"))["initContainers"][0]
    variables = {v["name"]: v["value"] for v in init["env"]}
    target = tmp_path / "pod" / "models" / "alpha"
    entrypoint = Path(__file__).resolve().parents[2] / "examples" / "kubernetes" / "entrypoint.py"
    ran = subprocess.run(
        [sys.executable, str(entrypoint)],
        env=clean_env(tmp_path, MODELPACK_REF=variables["MODELPACK_REF"],
                      MODELPACK_TARGET=str(target), MODELPACK_HOME=str(tmp_path / "mp2")),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert variables["MODELPACK_TARGET"] == "/models/alpha"
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert tree_files(target) == tree_files(model)

    style = requests.get(f"{gateway.url}/-/hub.css")
    assert style.status_code == 200 and style.headers["Content-Type"].startswith("text/css")
    missing = requests.get(f"{gateway.url}/org/nothing-here")
    assert missing.status_code == 404 and "text/html" in missing.headers["Content-Type"]
    assert "Repository not found: org/nothing-here" in missing.text
    screenshot(f"{gateway.url}/org/nothing-here", shots / "hub-not-found.png", tmp_path)
    assert (
        requests.get(f"{gateway.url}/Org/Alpha", allow_redirects=False).headers["Location"]
        == "/org/alpha"
    )


def test_a_hostile_card_cannot_inject_html(hub, tmp_path):
    gateway, _, _, _ = hub
    url = f"{gateway.url}/team/hostile"
    dom = dump_dom(url, tmp_path)
    screenshot(url, tmp_path / "shots" / "hub-hostile.png", tmp_path)
    elements = _elements(dom).elements
    assert not [t for t, _ in elements if t in ("script", "iframe", "object", "embed")]
    assert not [(t, a) for t, a in elements if any(k.lower().startswith("on") for k in a)]
    hrefs = [a.get("href", "") for t, a in elements if t == "a"]
    assert not [h for h in hrefs if h.strip().lower().startswith("javascript:")]
    assert "https://example.com/ok" in hrefs  # a plain link still works
    # Relative links and images point at the model's files, and download them.
    commit = re.search(r"commit <code>([0-9a-f]{40})</code>", dom).group(1)
    assert f"/team/hostile/resolve/{commit}/config.json" in hrefs
    images = [a.get("src", "") for t, a in elements if t == "img"]
    assert images == [f"/team/hostile/resolve/{commit}/1_Pooling/config.json"]
    assert requests.get(gateway.url + images[0]).status_code == 200
    assert "<title>team/hostile: modelpack hub</title>" in dom  # no script renamed it
    # The hostile text is shown as text.
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    assert "&lt;img src=x onerror=alert(1)&gt;" in dom  # the license badge
    assert "<span class=\"badge\">&lt;script&gt;alert('tag')&lt;/script&gt;</span>" in dom
    headers = requests.get(url).headers
    assert "script-src" not in headers["Content-Security-Policy"]
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    # Listing and search escape it too.
    listed = requests.get(f"{gateway.url}/", params={"search": "<script>x</script>"}).text
    assert "<script>x" not in listed and "&lt;script&gt;x&lt;/script&gt;" in listed


def test_signature_status_with_a_verify_key(hub, tmp_path):
    gateway, _, keys, _ = hub
    verifying = Gateway(gateway.registry, tmp_path / "gateway",
                        ("--verify-key", str(keys.public_path))).start()  # fmt: skip
    try:
        signed = requests.get(f"{verifying.url}/org/alpha/tree/v1")
        assert signed.status_code == 200
        assert re.search(r'id="signature">signature verified with key [^<]+<', signed.text)
        screenshot(f"{verifying.url}/org/alpha/tree/v1", tmp_path / "shots" / "hub-verified.png",
                   tmp_path)  # fmt: skip
        refused = requests.get(f"{verifying.url}/org/beta")
        assert refused.status_code == 403 and "no valid signature" in refused.text
    finally:
        verifying.stop()
    unsigned = requests.get(f"{gateway.url}/org/beta")
    assert 'id="signature">not signed<' in unsigned.text


def test_the_catalog_is_read_page_by_page(hub, registry, tmp_path, monkeypatch):
    """distribution pages /v2/_catalog with Link headers; two names a page here."""
    from modelpack.gateway import GatewayConfig, make_app
    from modelpack.gateway.read import catalog

    monkeypatch.setattr(catalog, "CATALOG_PAGE", 2)
    config = GatewayConfig(
        f"{registry.host}/{NAMESPACE}", settings=Settings(home=tmp_path / "home", plain_http=True)
    )
    found = make_app(config).catalog.repositories()
    assert found.available and list(found.ids) == ALL
    pages = re.findall(r"GET /v2/_catalog\?\S*n=2\S* ", registry.access_log())
    assert len(pages) >= 2  # four names here, more when other tests pushed to the registry


ODD_CARD = """---
date: 2024-01-01
when: 2024-01-01T10:00:00Z
blob: !!binary aGVsbG8=
score: .nan
1: one
---
# Odd
"""
ALIAS_BOMB = "---\na: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
) + "---\n# Bomb\n"  # fmt: skip


def test_cards_json_cannot_carry_or_that_expand_are_answered_safely(registry, tmp_path):
    """YAML dates, binary and NaN become JSON; aliases that expand to 10^9 values are
    refused (the card is shown without front matter), never a 500 or a hung thread."""
    model = make_tiny_model(tmp_path / "odd")
    bomb = make_tiny_model(tmp_path / "bomb")
    (model / "README.md").write_text(ODD_CARD)
    (bomb / "README.md").write_text(ALIAS_BOMB)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
        _push(model, f"{registry.host}/disco-odd/org/odd:v1", tmp_path / "home", mp)
        _push(bomb, f"{registry.host}/disco-odd/org/bomb:v1", tmp_path / "home", mp)
    gateway = Gateway(f"{registry.host}/disco-odd", tmp_path / "gateway").start()
    try:
        odd = requests.get(f"{gateway.url}/api/models/org/odd/revision/v1", timeout=30)
        assert odd.status_code == 200
        assert odd.json()["cardData"] == {"date": "2024-01-01", "when": "2024-01-01T10:00:00+00:00",
                                          "blob": None, "score": None, "1": "one"}  # fmt: skip
        answer = requests.get(f"{gateway.url}/api/models/org/bomb/revision/v1", timeout=30)
        assert answer.status_code == 200 and answer.json()["cardData"] == {}
        page = requests.get(f"{gateway.url}/org/bomb", timeout=30)
        assert page.status_code == 200
        assert "front matter ignored, it expands to more than 100000 values" in page.text
        assert "<h1>Bomb</h1>" in page.text
        listed = requests.get(
            f"{gateway.url}/api/models", params={"expand": "cardData"}, timeout=30
        )
        assert [m["id"] for m in listed.json()] == ["org/bomb", "org/odd"]
    finally:
        gateway.stop()
    assert "Traceback" not in gateway.log()
