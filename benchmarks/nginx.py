"""Debian's nginx as the benchmarks' reverse proxy: one configuration shape, a server block each.

benchmarks/ranged.py caps each connection (``limit_rate``, an object store's per-connection
cap); benchmarks/cluster_bench.py's case (b3) caches blobs with ``proxy_cache_lock``, so
concurrent first requests for a blob wait for one fetch from the origin.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# The part every configuration shares: foreground, root (the benchmarks run as root), every
# temporary path in ``work``.
_MAIN = """
user root;
worker_processes 2;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {work}/nginx-access.log;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    client_max_body_size 0;
{http}
}}
"""

# How a location forwards to the registry (keep-alive, the client's Host for its URLs).
PASS = """proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;"""


def binary() -> str:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(found).exists():
        raise SystemExit("nginx is missing: apt-get install nginx-light")
    return found


def write_conf(work: Path, http: str) -> Path:
    """``work``/nginx.conf with ``http`` (server blocks, caches) inside the http block."""
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "nginx.conf"
    conf.write_text(_MAIN.format(work=work, http=http), encoding="utf-8")
    return conf


def capping_proxy(listen: str, upstream: str, cap_bytes: int) -> str:
    """A server that forwards everything with each connection capped at ``cap_bytes``/s."""
    return f"""    server {{
        listen {listen};
        location / {{
            {PASS.format(upstream=upstream)}
            proxy_buffering on;
            proxy_max_temp_file_size 0;
            limit_rate {cap_bytes};
        }}
    }}"""


def blob_cache(work: Path, listen: str, upstream: str) -> str:
    """A pull-through mirror for blobs: a blob (named by its digest, so never stale) is fetched
    from the origin once, concurrent first requests waiting for that fetch
    (``proxy_cache_lock``); manifests, tags and the rest pass through uncached."""
    return f"""    proxy_cache_path {work}/cache levels=1:2 keys_zone=blobs:10m max_size=200g
                     inactive=7d use_temp_path=off;
    server {{
        listen {listen};
        location ~ "^/v2/.+/blobs/sha256:[0-9a-f]{{64}}$" {{
            {PASS.format(upstream=upstream)}
            proxy_buffering on;
            proxy_cache blobs;
            proxy_cache_key $uri;
            proxy_cache_valid 200 7d;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 1h;
            proxy_cache_lock_age 1h;
            proxy_ignore_headers Cache-Control Expires Set-Cookie;
        }}
        location / {{
            {PASS.format(upstream=upstream)}
            proxy_buffering off;
        }}
    }}"""


def static_files(listen: str, root: Path) -> str:
    """A server that sends the files under ``root`` from disk, with sendfile(2) as Debian's
    default nginx.conf turns it on."""
    return f"""    server {{
        listen {listen};
        root {root};
        sendfile on;
        tcp_nopush on;
    }}"""
