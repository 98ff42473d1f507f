"""modelpack serve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from modelpack.gateway import GatewayConfig
from modelpack.gateway import serve as run_gateway

from .state import global_options, state


def gateway_option(flag: str, **kwargs: Any) -> Callable[[Any], Any]:
    """``click.option`` read also from MODELPACK_GATEWAY_<FLAG>, which its help names (the
    env var of a repeatable option holds a space-separated list)."""
    env = "MODELPACK_GATEWAY_" + flag.removeprefix("--").upper().replace("-", "_")
    listed = ", space separated" if kwargs.get("multiple") else ""
    kwargs["help"] = f"{kwargs['help'].removesuffix('.')} [env {env}{listed}]."
    return click.option(flag, envvar=env, **kwargs)


@click.command(
    short_help="Serve models to Hugging Face clients.",
    epilog="""\b
Examples:
  modelpack serve --registry harbor.example.com/models --cache /var/lib/modelpack
  modelpack serve --registry 127.0.0.1:5000/hub --port 8080
  HF_ENDPOINT=http://127.0.0.1:8080 python -c \\
    'from huggingface_hub import snapshot_download; print(snapshot_download("org/name", revision="v1"))'
""",
)
@gateway_option(
    "--registry",
    required=True,
    metavar="HOST[/NAMESPACE]",
    help="Registry to front: hub repo org/name is NAMESPACE/org/name there.",
)
@gateway_option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="TCP port.",
)
@click.option(
    "--bind",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 in a container or to serve other machines).",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False),
    help="Node cache directory (default: --home / MODELPACK_HOME).",
)
@click.option(
    "--verify-key",
    type=click.Path(dir_okay=False, exists=True),
    envvar="MODELPACK_VERIFY_KEY",
    help="Public key: serve only models signed by it [env MODELPACK_VERIFY_KEY].",
)
@gateway_option(
    "--token-user",
    metavar="USER",
    help="Use a client's `Authorization: Bearer TOKEN` as the registry password of USER "
    "(default: TOKEN is USER:PASSWORD, else an identity token).",
)
@gateway_option(
    "--lend-credentials",
    is_flag=True,
    help="Requests without Authorization use the gateway's own registry credentials "
    "(default: they are anonymous at the registry).",
)
@click.option(
    "--read-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds a client has to send a request's line and headers.",
)
@click.option(
    "--max-pulls",
    type=click.IntRange(1, 1024),
    help="Requests that may wait on pulls from the registry at once; more get 429 "
    "and retry (default: half of --threads).",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 1024),
    default=64,
    show_default=True,
    help="Concurrent requests (each download holds one), per worker process.",
)
@gateway_option(
    "--workers",
    type=click.IntRange(1, GatewayConfig.workers_max),
    default=1,
    show_default=True,
    metavar="N",
    help="Worker processes, each with --threads threads: past one core's worth of requests "
    "(needs --redis, which the workers share as replicas do).",
)
@gateway_option(
    "--upstream",
    metavar="URL",
    help="Hugging Face-compatible hub to import repos the registry lacks from, on first "
    "request (pushed with the gateway's own registry credentials).",
)
@gateway_option(
    "--upstream-allow",
    multiple=True,
    metavar="PATTERN",
    help="Repo ids that may be imported (fnmatch, e.g. 'myorg/*'; repeatable; required "
    "with --upstream, '*' for all).",
)
@gateway_option(
    "--upstream-redirect-allow",
    multiple=True,
    metavar="HOST",
    help="Hosts the upstream may redirect downloads to (fnmatch, e.g. '*.hf.co'; "
    "repeatable; default '*.hf.co' '*.huggingface.co'); only global addresses are ever "
    "fetched.",
)
@gateway_option(
    "--upstream-token",
    metavar="TOKEN",
    help="Token for gated or private repos, sent to the upstream only (prefer the env var).",
)
@gateway_option(
    "--upstream-token-for",
    multiple=True,
    metavar="PATTERN=TOKEN",
    help="The token for repo ids matching PATTERN (fnmatch; repeatable; the most specific "
    "pattern wins, --upstream-token is for the rest); prefer the env var or "
    "--upstream-token-file.",
)
@gateway_option(
    "--upstream-token-file",
    multiple=True,
    metavar="PATTERN=FILE",
    help="As --upstream-token-for, the token read from FILE at start (a mounted secret).",
)
@gateway_option(
    "--upstream-miss-ttl",
    type=click.IntRange(min=0),
    default=GatewayConfig.upstream_miss_ttl,
    show_default=True,
    metavar="SECONDS",
    help="Seconds a repo, revision or file the upstream lacks (or refuses) is not asked "
    "about again; 0: always ask; at most a week.",
)
@gateway_option(
    "--upstream-miss-max",
    type=click.IntRange(min=1),
    default=GatewayConfig.upstream_miss_max,
    show_default=True,
    metavar="N",
    help="Upstream misses remembered at once (at most 1,000,000); past it the least "
    "recently used is dropped.",
)
@gateway_option(
    "--offline",
    is_flag=True,
    help="Never ask the upstream: serve only what the registry has.",
)
@gateway_option(
    "--inline-max",
    type=click.IntRange(min=0),
    default=10 * 1024 * 1024,
    show_default=True,
    metavar="BYTES",
    help="Uploads: files up to this size go inline in the commit, larger ones through Xet or LFS.",
)
@gateway_option(
    "--xet-file-max",
    type=click.IntRange(min=1),
    default=GatewayConfig.xet_file_max,
    show_default=True,
    metavar="BYTES",
    help="Uploads: the largest file a Xet shard may put together.",
)
@gateway_option(
    "--xet-session-max",
    type=click.IntRange(min=1),
    default=GatewayConfig.xet_session_max,
    show_default=True,
    metavar="BYTES",
    help="Uploads: the bytes one Xet token may send as xorbs, and publish as files.",
)
@gateway_option(
    "--xet-cache-max",
    default="100GiB",
    show_default=True,
    metavar="SIZE",
    help="With --redis: the xorbs this replica keeps in its node cache (each is also a "
    "registry blob, fetched again when needed); past this the least recently used go. "
    "0: no bound but the free-space reserve.",
)
@gateway_option(
    "--public-url",
    multiple=True,
    metavar="URL",
    help="http(s)://HOST[:PORT] clients reach this gateway at, used in every absolute URL "
    "it hands out (upload URLs, next pages); repeatable or a comma list. Without it only "
    "loopback names and the --bind address are taken from a request's Host.",
)
@gateway_option(
    "--allow-unsafe-pickle",
    is_flag=True,
    help="Uploads and imports keep pickle files (.bin, .pt, .ckpt ...) that run code when "
    "loaded (refused by default); their scans are shown either way.",
)
@gateway_option(
    "--redis",
    metavar="URL",
    help="Replicas: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (rediss:// with TLS) that "
    "every replica of this gateway is given; upload tickets, Xet tokens and branch locks "
    "live there, so a plain round-robin balancer may send any request to any replica "
    "(default: in this process, one replica).",
)
@gateway_option(
    "--audit-log",
    metavar="FILE|-",
    help="Write one JSON line per file read, write, upstream import and refusal to FILE "
    "('-': stdout): time, user, client, action, repo, revision, path, status, bytes; never "
    "a secret.",
)
@gateway_option(
    "--audit-log-max-bytes",
    default="0",
    show_default=True,
    metavar="SIZE",
    help="Rotate the audit log file at this size (e.g. 100MiB; 0: never, logrotate's rename "
    "is noticed by itself).",
)
@gateway_option(
    "--audit-log-backups",
    type=click.IntRange(1, 100),
    default=5,
    show_default=True,
    metavar="N",
    help="Rotated audit log files kept (FILE.1 ... FILE.N) with --audit-log-max-bytes.",
)
@gateway_option(
    "--trusted-proxy",
    multiple=True,
    metavar="ADDR[/BITS]",
    help="A load balancer or proxy whose X-Forwarded-For names the client in the audit log "
    "(an address or network; repeatable or a comma list; nobody's is trusted by default).",
)
@gateway_option(
    "--protect",
    multiple=True,
    metavar="PATTERN",
    help="Branches and tags (fnmatch, e.g. 'v*', 'release-*'; repeatable or a comma list) "
    "that no commit, tag creation or deletion may move once they exist.",
)
@gateway_option(
    "--auth-cache-ttl",
    type=click.FloatRange(0, GatewayConfig.auth_cache_ttl_max),
    default=GatewayConfig.auth_cache_ttl,
    show_default=True,
    metavar="SECONDS",
    help="Keep the registry's yes to a client's credentials for a repository this long "
    "(per credential, repository, revision and pull/push; refusals are never kept): a "
    "revoked credential or a moved tag is seen within it; 0 asks on every request.",
)
@gateway_option(
    "--accel-redirect",
    metavar="PREFIX",
    help="Downloads the node cache holds are sent by the --trusted-proxy in front: nginx "
    "gets X-Accel-Redirect: PREFIX<path under the gateway's home> (docs/gateway.md, "
    "Downloads sent by nginx).",
)
@gateway_option(
    "--lane-port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="With --accel-redirect: also listen on 127.0.0.1:PORT, where that nginx sends "
    "downloads first; those answered from what the gateway keeps are handed off from an "
    "event loop, the rest go back to nginx for --port (docs/gateway.md, The download lane).",
)
@global_options
def serve(
    registry: str,
    port: int,
    bind: str,
    cache: str | None,
    verify_key: str | None,
    token_user: str | None,
    lend_credentials: bool,
    read_timeout: float,
    max_pulls: int | None,
    threads: int,
    workers: int,
    upstream: str | None,
    upstream_allow: tuple[str, ...],
    upstream_redirect_allow: tuple[str, ...],
    upstream_token: str | None,
    upstream_token_for: tuple[str, ...],
    upstream_token_file: tuple[str, ...],
    upstream_miss_ttl: int,
    upstream_miss_max: int,
    offline: bool,
    inline_max: int,
    xet_file_max: int,
    xet_session_max: int,
    xet_cache_max: str,
    public_url: tuple[str, ...],
    allow_unsafe_pickle: bool,
    redis: str | None,
    audit_log: str | None,
    audit_log_max_bytes: str,
    audit_log_backups: int,
    trusted_proxy: tuple[str, ...],
    protect: tuple[str, ...],
    auth_cache_ttl: float,
    accel_redirect: str | None,
    lane_port: int | None,
) -> None:
    """Serve models from an OCI registry to Hugging Face clients (HF_ENDPOINT).

    A read-only hub endpoint: model info, file tree and file downloads
    (HEAD/GET, ETag, Range) for huggingface_hub, transformers, vLLM and TGI.
    Files come from the node cache, pulled through from the registry on first
    request; a client's Authorization is used as its registry credentials.
    With --upstream, repos the registry lacks are imported from another hub
    on first request and served from the registry from then on.
    Health at /healthz, Prometheus metrics at /metrics, a log line per request
    on stderr.  Needs the serve extra: pip install 'modelpack-oci[serve]'.
    """
    settings = state().settings()
    if cache:
        settings = settings.with_overrides(home=cache)
    config = GatewayConfig(
        registry,
        settings=settings,
        verify_key=verify_key,
        token_user=token_user,
        lend_credentials=lend_credentials,
        read_timeout=read_timeout,
        max_pulls=max_pulls,
        bind=bind,
        port=port,
        threads=threads,
        workers=workers,
        upstream=upstream,
        upstream_allow=upstream_allow,
        upstream_redirect_allow=upstream_redirect_allow or None,
        upstream_token=upstream_token,
        upstream_token_for=upstream_token_for,
        upstream_token_file=upstream_token_file,
        upstream_miss_ttl=upstream_miss_ttl,
        upstream_miss_max=upstream_miss_max,
        offline=offline,
        inline_max=inline_max,
        xet_file_max=xet_file_max,
        xet_session_max=xet_session_max,
        xet_cache_max=xet_cache_max,
        public_url=public_url,
        allow_unsafe_pickle=allow_unsafe_pickle,
        redis=redis,
        audit_log=audit_log,
        audit_log_max_bytes=audit_log_max_bytes,
        audit_log_backups=audit_log_backups,
        trusted_proxies=trusted_proxy,
        protect=protect,
        auth_cache_ttl=auth_cache_ttl,
        accel_redirect=accel_redirect,
        lane_port=lane_port,
    )
    run_gateway(config)


COMMANDS = [serve]
