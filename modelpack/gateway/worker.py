"""gunicorn's ``gthread`` worker, with a deadline for reading each request's head.

gunicorn hands a connection to a thread as soon as its first bytes arrive and
the thread then blocks until the request line and headers are complete: four
clients that send half a request stall a ``--threads 4`` gateway, ``/healthz``
included, for as long as they like.  Here every connection's socket carries a
deadline while a request head is read (``read_timeout`` seconds in all, not per
``recv``, so dripping one byte at a time does not extend it); past it the
connection is treated as closed by the client (gunicorn drops it quietly).  Once
the head is in, the deadline is lifted and each send or body read may take
``IO_TIMEOUT`` seconds (a client that stops reading a download is dropped too).
Imported only by ``server.run``, after gunicorn is known to be installed.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

IO_TIMEOUT = 120.0  # per send/recv once a request is being answered


class DeadlineSocket(socket.socket):
    """A socket whose ``recv`` gives up (returns EOF) once ``deadline`` has passed."""

    deadline: float | None = None

    def arm(self, seconds: float | None) -> None:
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self.deadline is None:
            return super().recv(bufsize, flags)
        left = self.deadline - time.monotonic()
        if left <= 0:
            return b""
        previous = self.gettimeout()
        self.settimeout(left)
        try:
            return super().recv(bufsize, flags)
        except TimeoutError:
            return b""  # as if the client went away: gunicorn closes without a traceback
        finally:
            self.settimeout(previous)


class _Listener:
    """A listening socket whose accepted connections are :class:`DeadlineSocket`\\ s."""

    def __init__(self, listener: Any) -> None:
        self._listener = listener

    def accept(self) -> tuple[DeadlineSocket, Any]:
        conn, address = self._listener.accept()
        wrapped = DeadlineSocket(conn.family, conn.type, conn.proto, fileno=conn.detach())
        return wrapped, address

    def getsockname(self) -> Any:
        return self._listener.getsockname()


def worker_class(read_timeout: float) -> type:
    """The gthread worker class with this head-reading deadline."""

    class GatewayWorker(ThreadWorker):
        def accept(self, listener: Any) -> None:
            super().accept(_Listener(listener))

        def handle(self, conn: Any) -> Any:
            if isinstance(conn.sock, DeadlineSocket):
                conn.sock.arm(read_timeout)  # each request's head, keep-alive ones too
            return super().handle(conn)

        def handle_request(self, req: Any, conn: Any) -> Any:
            if isinstance(conn.sock, DeadlineSocket):
                conn.sock.arm(None)
                conn.sock.settimeout(IO_TIMEOUT)
            return super().handle_request(req, conn)

    return GatewayWorker
