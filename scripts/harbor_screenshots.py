"""Screenshots of Harbor's portal showing a ModelPack model (``make harbor-screenshots``).

Starts a Harbor (modelpack.testing.harbor), serves the portal scripts/peers/build-harbor-portal.sh
built the way Harbor's deployment does (the portal container's nginx serving the static files,
the proxy nginx in front routing /api/, /c/, /v2/ and /service/ to core: Harbor's
make/photon/prepare/templates/{portal/nginx.conf,nginx/nginx.http.conf}.jinja, on 127.0.0.1),
builds, pushes and signs a tiny model with the modelpack CLI, signs in through the portal in
headless Chromium and writes docs/img/harbor-*.png.

    python scripts/harbor_screenshots.py [--version v2.15.2] [--out docs/img] [--keep]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT / "tests"))

from support.browser import Browser  # noqa: E402

from modelpack.testing.harbor import ADMIN, HarborServer, peers_dir  # noqa: E402
from modelpack.testing.registry import free_port  # noqa: E402
from modelpack.testing.tiny_model import make_tiny_model  # noqa: E402

README = """# bert-tiny

A tiny BERT-style sentence encoder, packaged with **modelpack** as a
[CNCF ModelPack](https://github.com/modelpack/model-spec) artifact.

| file | what |
|---|---|
| `model.safetensors` | the weights |
| `config.json` | the architecture |
| `tokenizer.json`, `vocab.txt` | the tokenizer |

```bash
modelpack pull harbor.example.com/ml/bert-tiny:v1 -o ./bert-tiny
modelpack verify harbor.example.com/ml/bert-tiny:v1 --key team.pub
```
"""

# One nginx, two servers: the portal container's (static files) and the proxy's.
NGINX = """\
{user}worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
daemon off;
events {{ worker_connections 1024; }}
http {{
  client_body_temp_path {root}/client_body_temp;
  proxy_temp_path {root}/proxy_temp;
  fastcgi_temp_path {root}/fastcgi_temp;
  uwsgi_temp_path {root}/uwsgi_temp;
  scgi_temp_path {root}/scgi_temp;
  access_log {root}/access.log;
  tcp_nodelay on;
  proxy_http_version 1.1;
  upstream core {{ server {core}; }}
  upstream portal {{ server 127.0.0.1:{portal_port}; }}
  map $http_x_forwarded_proto $x_forwarded_proto {{ default $http_x_forwarded_proto; "" $scheme; }}

  server {{  # the portal container (templates/portal/nginx.conf.jinja)
    listen 127.0.0.1:{portal_port};
    server_name localhost;
    root {html};
    index index.html index.htm;
    include /etc/nginx/mime.types;
    gzip on;
    gzip_min_length 1000;
    gzip_proxied expired no-cache no-store private auth;
    gzip_types text/plain text/css application/json application/javascript text/xml application/xml;
    location /devcenter-api-2.0 {{ try_files $uri $uri/ /swagger-ui-index.html; }}
    location / {{ try_files $uri $uri/ /index.html; }}
    location = /index.html {{ add_header Cache-Control "no-store, no-cache, must-revalidate"; }}
  }}

  server {{  # the proxy container (templates/nginx/nginx.http.conf.jinja)
    listen 127.0.0.1:{port};
    server_tokens off;
    client_max_body_size 0;
    add_header X-Frame-Options DENY;
    add_header Content-Security-Policy "frame-ancestors 'none'";
{locations}
    location /v1/ {{ return 404; }}
    location /service/notifications {{ return 404; }}
  }}
}}
"""

LOCATION = """\
    location {path} {{
      proxy_pass http://{upstream}{path};
      proxy_set_header Host {host};
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $x_forwarded_proto;
      proxy_buffering off;
      proxy_request_buffering off;
    }}
"""


def portal_html(version: str) -> Path:
    html = peers_dir() / f"harbor-portal-{version}" / "html"
    if not (html / "index.html").is_file():
        raise SystemExit(
            f"the portal is not built in {html}: run "
            f"MODELPACK_HARBOR_VERSIONS={version} scripts/peers/build-harbor-portal.sh"
        )
    return html.resolve()


def start_nginx(root: Path, html: Path, core: str) -> tuple[subprocess.Popen, int]:
    port, portal_port = free_port(), free_port()
    locations = "".join(
        LOCATION.format(
            path=path,
            upstream=upstream,
            host="$http_host" if path == "/v2/" else "$host",
        )
        for path, upstream in (("/", "portal"), ("/c/", "core"), ("/api/", "core"),
                               ("/v2/", "core"), ("/service/", "core"))
    )  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(
        NGINX.format(
            user="user root;\n" if os.geteuid() == 0 else "",  # html may be under /root
            root=root, core=core, port=port, portal_port=portal_port, html=html,
            locations=locations,
        )
    )  # fmt: skip
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        raise SystemExit("nginx not found: apt-get install nginx (Debian's; it serves the portal)")
    process = subprocess.Popen([nginx, "-p", str(root), "-c", str(conf)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(100):
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                return process, port
        time.sleep(0.1)
    process.terminate()
    raise SystemExit(f"nginx did not answer: {(root / 'error.log').read_text()[-1000:]}")


def small(path: Path) -> None:
    """128 colours without dithering: a page of flat colours stays sharp at a quarter of the
    bytes. Left as Chromium wrote it when Pillow is not installed."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        quantized = image.convert("RGB").quantize(
            colors=128, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
        )
    quantized.save(path, optimize=True)


def modelpack(*args: str, env: dict[str, str], stdin: str | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "modelpack", *args], input=stdin,
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=600)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"modelpack {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


class Portal:
    """The headless browser on the proxy's port."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.browser, self.base = browser, base

    def js(self, expression: str):  # noqa: ANN201
        result = self.browser.call(
            "Runtime.evaluate", session=self.browser.session, expression=expression,
            returnByValue=True, awaitPromise=True,
        )  # fmt: skip
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.js(expression):
                return
            time.sleep(0.3)
        self.fail(f"the portal did not show {what} within {timeout:.0f}s")

    def text_visible(self, text: str) -> str:
        return f"document.body && document.body.innerText.includes({json.dumps(text)})"

    def shot(self, path: Path, settle: float = 1.5) -> Path:
        time.sleep(settle)  # animations and the last XHRs
        data = self.browser.call(
            "Page.captureScreenshot", session=self.browser.session, format="png"
        )["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        small(path)
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)", flush=True)
        return path

    def go(self, path: str) -> None:
        self.browser.visit(self.base + path)

    def click(self, selector: str) -> None:
        found = f"document.querySelector({json.dumps(selector)})"
        ok = self.js(
            f"(() => {{ const e = {found}; if (!e) return false; e.click(); return true; }})()"
        )
        if not ok:
            self.fail(f"no {selector} on the page")

    def fail(self, why: str) -> None:
        """Stop, leaving what the browser showed next to the output."""
        shown = self.shot(Path(tempfile.gettempdir()) / "harbor-screenshots-failed.png", 0)
        raise SystemExit(f"{why} ({self.js('location.href')}; the page: {shown})")

    def sign_in(self, user: str, password: str) -> None:
        self.go("/account/sign-in")
        self.wait_for("!!document.querySelector('#login_username')", "the sign-in form")
        self.js(
            "(() => { for (const [id, v] of ["
            f"['login_username', {json.dumps(user)}], ['login_password', {json.dumps(password)}]]) {{"
            " const e = document.getElementById(id); e.value = v;"
            " e.dispatchEvent(new Event('input', {bubbles: true})); } })()"
        )
        self.click("#log_in")
        self.wait_for("location.pathname.startsWith('/harbor')", "the projects after signing in")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="v2.15.2")
    parser.add_argument("--out", type=Path, default=CHECKOUT / "docs/img")
    parser.add_argument("--keep", action="store_true", help="leave Harbor running until Ctrl-C")
    args = parser.parse_args()
    html = portal_html(args.version)
    work = Path(tempfile.mkdtemp(prefix="modelpack-harbor-shots-"))
    harbor = HarborServer(version=args.version)  # its own folder: PostgreSQL runs as postgres
    nginx = browser = None
    try:
        harbor.start()
        nginx, port = start_nginx(work / "nginx", html, harbor.host)
        base = f"http://127.0.0.1:{port}"
        print(f"Harbor {args.version}: core {harbor.url}, portal {base}", flush=True)
        harbor.create_project("ml")
        model = make_tiny_model(work / "bert-tiny")
        (model / "README.md").write_text(README)
        env = {"MODELPACK_HOME": str(work / "home"), "MODELPACK_PLAIN_HTTP": "1",
               "MODELPACK_USERNAME": ADMIN, "MODELPACK_PASSWORD": harbor.admin_password}  # fmt: skip
        ref = f"{harbor.host}/ml/bert-tiny:v1"
        media = "cnai" if args.version != "main" else "cncf"  # what this Harbor renders
        modelpack("build", str(model), "-t", ref, "-q", "--media-types", media, env=env)
        modelpack("push", ref, "-q", env=env)
        modelpack("keygen", "--out", str(work / "team"), "--unencrypted", env=env)
        modelpack("sign", ref, "--key", str(work / "team.key"), env=env)
        modelpack("sign", ref, "--key", str(work / "team.key"), "--model-signing", env=env)
        artifact = harbor.api("GET", "/projects/ml/repositories/bert-tiny/artifacts/v1").json()
        project_id = harbor.api("GET", "/projects/ml").json()["project_id"]
        digest = artifact["digest"]
        print(f"pushed {ref} ({artifact['type']}, {digest}), signed twice", flush=True)
        accessories = harbor.api(
            "GET", f"/projects/ml/repositories/bert-tiny/artifacts/{digest}/accessories"
        ).json()
        for accessory in accessories:
            inner = harbor.api(
                "GET", f"/projects/ml/repositories/bert-tiny/artifacts/{accessory['digest']}"
            ).json()
            print(f"  accessory {accessory['digest'][:19]} {accessory['type']} {accessory['size']} B"
                  f" manifest {inner.get('manifest_media_type')} type {inner.get('artifact_type')}"
                  f" tags {[t['name'] for t in inner.get('tags') or []]}", flush=True)  # fmt: skip

        browser = Browser(work / "browser", "--window-size=1280,800", "--hide-scrollbars")
        browser.call("Emulation.setDeviceMetricsOverride", session=browser.session,
                     width=1280, height=800, deviceScaleFactor=1, mobile=False)  # fmt: skip
        portal = Portal(browser, base)
        portal.sign_in(ADMIN, harbor.admin_password)
        out = args.out
        portal.go(f"/harbor/projects/{project_id}/repositories")
        portal.wait_for(portal.text_visible("ml/bert-tiny"), "the repository")
        portal.shot(out / "harbor-repositories.png")

        portal.go(f"/harbor/projects/{project_id}/repositories/bert-tiny/artifacts-tab")
        portal.wait_for(portal.text_visible("v1"), "the artifact list")
        portal.wait_for(
            "!!document.querySelector('clr-dg-row button.datagrid-expandable-caret-button')",
            "the accessories' caret",
        )
        portal.click("clr-dg-row button.datagrid-expandable-caret-button")
        portal.wait_for("!!document.querySelector('sub-accessories clr-dg-row')", "the accessories")
        portal.shot(out / "harbor-artifacts.png")

        portal.go(f"/harbor/projects/{project_id}/repositories/bert-tiny/artifacts-tab"
                  f"/artifacts/{digest}")  # fmt: skip
        portal.wait_for(portal.text_visible("bert-tiny"), "the artifact page")
        portal.wait_for("!!document.querySelector('#summary-content')", "the README")
        portal.wait_for(portal.text_visible("sentence encoder"), "the README's text")
        portal.shot(out / "harbor-artifact.png")  # its top: type, annotations, tags, config
        additions = "document.querySelector('artifact-additions')"
        portal.js(f"{additions}.scrollIntoView()")  # Additions: README, LICENSE, Files
        portal.shot(out / "harbor-artifact-readme.png")
        portal.click("#files-link")
        portal.wait_for(portal.text_visible("model.safetensors"), "the files")
        portal.js(f"{additions}.scrollIntoView()")
        portal.shot(out / "harbor-artifact-files.png")
        if args.keep:
            print(f"portal: {base} (admin / {harbor.admin_password}); Ctrl-C stops", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    finally:
        if browser is not None:
            browser.close()
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=20)
        harbor.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
