"""``modelpack serve``: a Hugging Face hub-compatible, read-only endpoint in front of an
OCI registry, serving model files from the node cache (pulled through on first use).

    from modelpack.gateway import GatewayConfig, make_app, serve
    config = GatewayConfig("harbor.example.com/models", port=8080)
    app = make_app(config)   # a WSGI application, for any WSGI server
    serve(config)            # or run it on gunicorn, as `modelpack serve` does

Clients set ``HF_ENDPOINT=http://gateway:8080`` and nothing else (docs/gateway.md).
The server pieces (gunicorn) are the optional extra ``modelpack-oci[serve]``;
nothing here is imported by ``import modelpack``.
"""

from __future__ import annotations

from typing import Any

from .core.config import GatewayConfig

__all__ = ["GatewayConfig", "make_app", "serve"]


def make_app(config: GatewayConfig) -> Any:
    """The gateway as a WSGI callable."""
    from .app import Gateway

    return Gateway(config)


def serve(config: GatewayConfig) -> None:
    """Serve ``config`` on gunicorn (gthread worker, sendfile) until stopped."""
    from .server import run

    run(config)
