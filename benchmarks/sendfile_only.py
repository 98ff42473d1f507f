"""The gateway's ceiling: a WSGI app that does nothing but send one file, on the gateway's own
server (gunicorn, one process, its gthread worker class), for benchmarks/gateway_speed.py.

    python -m benchmarks.sendfile_only FILE PORT [THREADS]
"""

from __future__ import annotations

import os
import sys
from typing import Any

from modelpack.gateway.worker import worker_class


def app(path: str) -> Any:
    def serve(environ: dict[str, Any], start_response: Any) -> Any:
        f = open(path, "rb")  # noqa: SIM115 - closed by the server after sending
        size = os.fstat(f.fileno()).st_size
        start_response("200 OK", [("Content-Length", str(size)),
                                  ("Content-Type", "application/octet-stream")])  # fmt: skip
        return environ["wsgi.file_wrapper"](f, 1 << 20)

    return serve


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        raise SystemExit(__doc__)
    path, port, threads = args[0], int(args[1]), int(args[2]) if len(args) == 3 else 64
    from gunicorn.app.base import BaseApplication

    options = {"bind": [f"127.0.0.1:{port}"], "workers": 1, "threads": threads,
               "worker_class": worker_class(10.0), "accesslog": None, "loglevel": "warning",
               "keepalive": 15, "control_socket_disable": True}  # fmt: skip

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return app(path)

    Application().run()


if __name__ == "__main__":
    main()
