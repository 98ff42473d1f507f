"""Run the gateway on gunicorn: one worker process, many threads (``gthread``).

Why gunicorn and plain WSGI rather than an asyncio stack: everything below the
routes (the registry client, flocks, SQLite) blocks, so threads are the natural
unit and nothing needs a thread pool hop; and gunicorn sends a
``wsgi.file_wrapper`` body with ``socket.sendfile`` (sendfile(2): weights go from
the page cache to the socket without passing through Python), honouring the
Content-Length of a Range answer.  uvicorn has no sendfile path for Starlette's
FileResponse.  The gthread worker parks idle keep-alive connections outside the
threads, so ``threads`` bounds concurrent transfers, not connected clients;
``worker.py`` adds the deadline for reading a request head that gthread lacks.
"""

from __future__ import annotations

import logging
import sys

from ..extras import require
from .core.config import GatewayConfig


def run(config: GatewayConfig) -> None:
    """Serve until SIGTERM/SIGINT (gunicorn's signal handling)."""
    BaseApplication = require(
        "gunicorn.app.base",
        purpose="modelpack serve's HTTP workers",
        extra="serve",
        package="gunicorn",
    ).BaseApplication
    _log_requests()
    if config.redis:  # reachable before the first request, or one line and exit 6
        from .state.shared import open_shared

        open_shared(config).check()
    for line in config.banner():
        logging.getLogger("modelpack.gateway").info(line)
    from .worker import worker_class

    options = {
        "bind": [
            f"[{config.bind}]:{config.port}"
            if ":" in config.bind
            else f"{config.bind}:{config.port}"
        ],
        "workers": 1,  # pulls are shared through in-process state (and flocks)
        "worker_class": worker_class(config.read_timeout),  # gthread + a head deadline
        "threads": config.threads,
        "timeout": 60,
        "graceful_timeout": 15,
        "keepalive": 15,
        "accesslog": None,  # the gateway logs each request itself, without credentials
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "modelpack-serve",
        "control_socket_disable": True,  # gunicorn >= 24 would open one in $HOME
    }

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:  # older gunicorn lacks some
                    self.cfg.set(key, value)

        def load(self):  # noqa: ANN202 - built in the worker, after the fork
            from .app import Gateway

            return Gateway(config)

    Application().run()


def _log_requests() -> None:
    logger = logging.getLogger("modelpack.gateway")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s gateway: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
