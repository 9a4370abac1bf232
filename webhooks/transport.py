"""One POST to a receiver, with the standard library's HTTP client: a hard deadline, no redirects followed, only
the start of the answer read."""

import contextlib
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

RESPONSE_EXCERPT_BYTES = 512


@dataclass(frozen=True)
class PostResult:
    status_code: int | None  # None: no answer (timeout, refused, TLS, ...)
    error: str  # why it did not deliver; empty when it did
    duration_ms: int
    response_excerpt: str

    @property
    def delivered(self) -> bool:
        return not self.error


def _abort(connection: http.client.HTTPConnection, fired: threading.Event) -> None:
    """The deadline passed: wake whatever read or write the connection is blocked in."""
    fired.set()
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if parts.scheme == "https":
        context = ssl.create_default_context()
        return http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout, context=context), target
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout), target


def webhook_post(url: str, *, body: bytes, headers: dict[str, str], timeout: float) -> PostResult:
    """POST ``body`` to ``url`` within ``timeout`` seconds all told (connecting, sending, the answer's status line,
    headers and first bytes). A 2xx delivers; any other status, a redirect included (never followed: a webhook's
    body is not resent to wherever a 3xx points), or no answer at all does not."""
    connection, target = _connection(url, timeout)
    fired = threading.Event()
    watchdog = threading.Timer(timeout, _abort, (connection, fired))
    watchdog.daemon = True
    started = time.monotonic()
    status, error, excerpt = None, "", b""
    watchdog.start()
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        status = response.status
        location = response.getheader("Location", "")
        with contextlib.suppress(OSError, http.client.HTTPException):  # the status is the answer; the rest is shown
            excerpt = response.read(RESPONSE_EXCERPT_BYTES)
    except (OSError, http.client.HTTPException) as exc:
        if fired.is_set() or isinstance(exc, TimeoutError):
            error = f"no answer within {timeout:g} s"
        else:
            error = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        watchdog.cancel()
        connection.close()
    duration_ms = round((time.monotonic() - started) * 1000)
    if status is not None and not error:
        if 300 <= status < 400:
            error = f"HTTP {status}: redirects are not followed (Location: {location[:300] or 'none'})"
        elif not 200 <= status < 300:
            error = f"HTTP {status}"
    return PostResult(status, error, duration_ms, excerpt.decode("utf-8", "replace"))
