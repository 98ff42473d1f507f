"""gunicorn's ``gthread`` worker, where a slow request head holds no thread.

gunicorn hands a connection to a thread as soon as its first bytes arrive, and
the thread then blocks until the request line and headers are complete: four
clients that send half a request stall a ``--threads 4`` gateway, ``/healthz``
included, for as long as they like.  Here a thread only collects what has
arrived (without waiting) and, while the head is incomplete, hands the
connection back to gunicorn's poller, which wakes it when more bytes come.  A
head has ``read_timeout`` seconds in all (not per read: dripping one byte at a
time does not extend it); a connection that sends nothing more is closed after
the keep-alive timeout.  A pipelined request that gunicorn's parser already
buffered while answering the one before is taken up without reading the socket
(every read here is non-blocking), so it holds no thread either.  Once the head
is in, each send or body read may take ``IO_TIMEOUT`` seconds (a client that
stops reading a download is dropped).  After a keep-alive answer the thread waits up to
``LINGER`` seconds for the same client's next request head and answers it itself, but
only while no other connection waits for a thread (``_next_head``).
gunicorn is imported by :func:`worker_class`, which ``server.run`` calls once it is known
to be installed.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any

IO_TIMEOUT = 120.0  # per send/recv once a request is being answered
HEAD_LIMIT = 64 * 1024  # past this, gunicorn's own limits answer (431, 400)
# Seconds a thread that just answered a keep-alive request waits for the same client's next
# one before handing the connection back to the poller (only while no other waits).
LINGER = 0.002


class DeadlineSocket(socket.socket):
    """A socket whose ``recv`` gives up (returns EOF) once ``deadline`` has passed."""

    deadline: float | None = None

    def arm(self, seconds: float | None) -> None:
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def available(self) -> tuple[bytes, bool]:
        """What has arrived, without waiting, and whether the client closed.

        ``MSG_DONTWAIT`` alone is not enough: on a socket with a timeout (the
        ``IO_TIMEOUT`` of an answered request, still set when gunicorn hands back a
        connection whose next request it already buffered) Python polls for up to
        that timeout before it calls recv.  So the socket is non-blocking meanwhile."""
        data = b""
        previous = self.gettimeout()
        self.setblocking(False)
        try:
            while len(data) < HEAD_LIMIT:
                try:
                    chunk = socket.socket.recv(self, HEAD_LIMIT)
                except (BlockingIOError, InterruptedError):
                    return data, False
                except OSError:
                    return data, True
                if not chunk:
                    return data, True
                data += chunk
            return data, False
        finally:
            self.settimeout(previous)

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


def _head_arrived(conn: Any, sock: DeadlineSocket) -> bool:
    """Move what has arrived into the connection's parser buffer; True once the
    head is complete (or the client closed, or it is too long: gunicorn answers)."""
    conn.init()
    unreader = conn.parser.unreader
    buffered = unreader.take_buffered()
    closed = False
    if not _complete(buffered):  # a pipelined request may be here already: read nothing
        data, closed = sock.available()
        buffered += data
    unreader.unread(buffered)
    return closed or _complete(buffered)


def _complete(head: bytes) -> bool:
    """Whether a request head is all there (or too long: gunicorn answers it)."""
    return len(head) >= HEAD_LIMIT or b"\r\n\r\n" in head or b"\n\n" in head


def _next_head(conn: Any, sock: DeadlineSocket, read_timeout: float) -> bool:
    """After a keep-alive answer: whether the client's next request head is here within
    LINGER seconds, read into the parser (then this thread answers it).  Handing the
    connection back to gunicorn's poller and a thread again costs two thread switches and
    the main thread's turn; a client that asks again at once (a download loop, a
    snapshot's next file) is answered without them.  Only a whole head is taken: anything
    less goes back to the poller with what arrived, under the usual deadline."""
    if not conn.parser.unreader.buf.getvalue():  # nothing pipelined: wait a moment
        readable = select.poll()
        readable.register(sock, select.POLLIN)
        try:
            if not readable.poll(LINGER * 1000):
                return False
        except OSError:
            return False
    sock.arm(read_timeout)  # as for any head (handle_request disarms it)
    return _head_arrived(conn, sock) and _complete(conn.parser.unreader.buf.getvalue())


def worker_class(read_timeout: float) -> type:
    """The gthread worker class with this head-reading deadline."""
    from gunicorn.workers.gthread import _DEFER, ThreadWorker  # the serve extra

    class GatewayWorker(ThreadWorker):
        def accept(self, listener: Any) -> None:
            super().accept(_Listener(listener))

        def handle(self, conn: Any) -> Any:
            sock = conn.sock
            if not isinstance(sock, DeadlineSocket) or self.cfg.is_ssl:
                return super().handle(conn)
            if sock.deadline is None:  # a new request's head (keep-alive ones too)
                sock.arm(read_timeout)
            if not _head_arrived(conn, sock):
                if sock.expired():
                    return False  # gunicorn closes the connection
                conn.data_ready = False
                return _DEFER  # back to the poller until more bytes arrive
            kept = super().handle(conn)
            while (
                kept is True
                and self.alive
                and self._idle()
                and _next_head(conn, sock, read_timeout)
            ):
                kept = super().handle(conn)
            return kept

        def _idle(self) -> bool:
            """Whether no other connection waits for a thread (then this one may linger)."""
            waiting = getattr(self.tpool, "_work_queue", None)  # ThreadPoolExecutor's queue
            return waiting is not None and waiting.empty()

        def handle_request(self, req: Any, conn: Any) -> Any:
            if isinstance(conn.sock, DeadlineSocket):
                conn.sock.arm(None)
                conn.sock.settimeout(IO_TIMEOUT)
            return super().handle_request(req, conn)

    return GatewayWorker
