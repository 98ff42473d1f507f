"""Run the gateway on gunicorn: ``--workers`` processes (one by default), many threads
each (``gthread``).

Why gunicorn and plain WSGI rather than an asyncio stack: everything below the
routes (the registry client, flocks, SQLite) blocks, so threads are the natural
unit and nothing needs a thread pool hop; and gunicorn sends a
``wsgi.file_wrapper`` body with ``socket.sendfile`` (sendfile(2): weights go from
the page cache to the socket without passing through Python), honouring the
Content-Length of a Range answer.  uvicorn has no sendfile path for Starlette's
FileResponse.  The gthread worker parks idle keep-alive connections outside the
threads, so ``threads`` bounds concurrent transfers, not connected clients;
``worker.py`` adds the deadline for reading a request head that gthread lacks.

More than one worker process is what takes the gateway past one GIL.  The workers then
share what replicas share, through ``--redis`` (config.py refuses ``--workers`` without
it), the node cache through its file locks, and ``/metrics`` through prometheus_client's
multiprocess files in a folder made here before the fork and removed at exit.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from typing import Any

from ..extras import require
from . import lane
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
    if config.lane_port is not None:  # taken: one line and exit 2, before any worker
        lane.check_port(config)
    for line in config.banner():
        logging.getLogger("modelpack.gateway").info(line)
    from .worker import worker_class

    options = {
        "bind": [
            f"[{config.bind}]:{config.port}"
            if ":" in config.bind
            else f"{config.bind}:{config.port}"
        ],
        "workers": config.workers,
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
    if config.workers > 1:
        options.update(_summed_metrics())
    if config.lane_port is not None:  # the download lane: a thread in every worker

        def post_worker_init(worker: Any) -> None:
            lane.start(worker.wsgi, config)

        options["post_worker_init"] = post_worker_init

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:  # older gunicorn lacks some
                    self.cfg.set(key, value)

        def load(self):  # noqa: ANN202 - built in the worker, after the fork
            from .app import Gateway

            return Gateway(config)

    Application().run()


def _summed_metrics() -> dict[str, Any]:
    """gunicorn hooks for the workers' /metrics files (state/metrics.py): a folder of this
    server's own, named to the workers by the environment they inherit (prometheus_client
    reads it when a worker first imports it, after the fork); a worker that exits has its
    live gauges dropped; the folder goes at exit."""
    from .state.metrics import MULTIPROCESS_DIR

    folder = tempfile.mkdtemp(prefix="modelpack-serve-metrics-")
    os.environ[MULTIPROCESS_DIR] = folder

    def child_exit(server: Any, worker: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, folder)

    def on_exit(server: Any) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    return {"child_exit": child_exit, "on_exit": on_exit}


def _log_requests() -> None:
    logger = logging.getLogger("modelpack.gateway")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s gateway: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
