"""Where the API listens: aiohttp's HTTP server with Toxiproxy's read and idle timeouts, and
one log line per malformed request.

Toxiproxy 2.x's API is a Go ``http.Server`` with ``ReadTimeout: 15s`` and ``IdleTimeout: 60s``
(api.go; no ``ReadHeaderTimeout``, so Go reads the request line and headers under the read
timeout too). aiohttp has neither: a client that sends half a request line and nothing more
holds its connection for the keep-alive timeout (an hour). ``ReadDeadline`` gives each request
``read_timeout_s`` from its first byte (from the connection's start for the first request) to
its last body byte, and each idle connection ``idle_timeout_s`` between requests; then the
connection is closed without an answer, as Go does.

Go answers a malformed request 400 and logs nothing; aiohttp logs each at ERROR with a
traceback. ``OneLineErrors`` keeps aiohttp's answer and logs one line at INFO instead.

Go takes any token as a method, as it is written (``FOO``, ``get``: mux answers those 405);
aiohttp's C parser (llhttp) refuses methods it does not know with 400, and its Python parser
upper-cases them. ``TokenMethods``, the Python parser keeping the method as sent, reads the
API's requests (the API is not on the data path; the proxies' bytes never meet a parser).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import BadStatusLine, HttpProcessingError
from aiohttp.http_parser import HttpRequestParserPy, RawRequestMessage
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from harness.proxy.listener import join_host_port

__all__ = ["IDLE_TIMEOUT_S", "READ_TIMEOUT_S", "DeadlineSite", "OneLineErrors", "answered",
           "request_read"]

READ_TIMEOUT_S = 15.0
"""Toxiproxy's ``read_timeout`` (api.go): from a request's first byte to its last."""
IDLE_TIMEOUT_S = 60.0
"""Toxiproxy's ``IdleTimeout`` (api.go): an idle keep-alive connection is closed after it."""

log = logging.getLogger(__name__)
_LONGEST = 200   # characters of a malformed request quoted in the log line


class TokenMethods(HttpRequestParserPy):
    """aiohttp's Python request parser, keeping the method's case as Go does."""

    def parse_message(self, lines: list[bytes]) -> RawRequestMessage:
        message = super().parse_message(lines)
        if message.version.major != 1:   # Go: 505; llhttp, and so aiohttp: 400, as here
            raise BadStatusLine(error=f"Bad status line: Invalid HTTP version: {lines[0]!r}")
        sent = lines[0].split(b" ", 1)[0].decode("ascii", "replace")
        return message._replace(method=sent) if sent != message.method else message


def _token_methods(inner: RequestHandler) -> None:
    """Swap ``inner``'s request parser for ``TokenMethods`` (same limits), if this aiohttp
    still builds its handler as 3.14 does; otherwise keep aiohttp's own."""
    try:
        inner._parser = TokenMethods(
            inner, inner._loop, inner._read_bufsize, max_line_size=inner.max_line_size,
            max_field_size=inner.max_field_size, max_headers=inner.max_headers,
            payload_exception=RequestPayloadError, auto_decompress=True,
            max_msg_queue_size=inner._max_msg_queue_size)
    except (AttributeError, TypeError) as exc:   # pragma: no cover - another aiohttp
        log.debug("keeping aiohttp's request parser: %s", exc)


class ReadDeadline(asyncio.Protocol):
    """aiohttp's protocol for one connection, closed when a request takes longer than
    ``read_s`` to arrive or the connection idles longer than ``idle_s``. The API's handler
    says when a request is in (``request_read``) and when it has been answered (``answered``)."""

    def __init__(self, inner: RequestHandler, read_s: float, idle_s: float) -> None:
        self.inner = inner
        self.read_s = read_s
        self.idle_s = idle_s
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._state = "reading"   # reading (timer: read_s), handling (none), idle (timer: idle_s)

    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire, seconds)

    def _expire(self, seconds: float) -> None:
        self._timer = None
        if self._transport is not None:
            what = "a request did not arrive" if self._state == "reading" else "the connection was idle"
            log.debug("closing an API connection from %s: %s within %gs",
                      self._transport.get_extra_info("peername"), what, seconds)
            self._transport.abort()

    def read(self) -> None:
        """The request is in: no deadline while it is handled."""
        self._state = "handling"
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def done(self) -> None:
        """The answer is made: the connection idles until the next request's first byte."""
        self._state = "idle"
        self._arm(self.idle_s)

    # asyncio.Protocol, passed on to aiohttp's handler ------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)   # uvloop's is not a subclass
        self.inner.connection_made(transport)
        self._arm(self.read_s)

    def data_received(self, data: bytes) -> None:
        if self._state == "idle":
            self._state = "reading"
            self._arm(self.read_s)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        self.inner.eof_received()   # aiohttp's returns nothing: the transport closes itself
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def _deadline_of(request: web.BaseRequest) -> ReadDeadline | None:
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, ReadDeadline) else None


def request_read(request: web.BaseRequest) -> None:
    """The API has read ``request`` whole (headers and body): its read deadline is met."""
    deadline = _deadline_of(request)
    if deadline is not None:
        deadline.read()


def answered(request: web.BaseRequest) -> None:
    """The API has answered ``request``: its connection idles from now."""
    deadline = _deadline_of(request)
    if deadline is not None:
        deadline.done()


class DeadlineSite(web.BaseSite):
    """A TCP site like aiohttp's ``TCPSite`` whose connections keep ``ReadDeadline``'s timeouts."""

    __slots__ = ("_host", "_port", "_read_s", "_idle_s")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 read_timeout_s: float = READ_TIMEOUT_S, idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._read_s = read_timeout_s
        self._idle_s = idle_timeout_s

    @property
    def name(self) -> str:
        return f"http://{join_host_port(self._host, self._port)}"

    async def start(self) -> None:
        await super().start()
        handlers = self._runner.server
        assert handlers is not None   # the runner is set up

        def connection() -> ReadDeadline:
            inner = handlers()
            _token_methods(inner)
            return ReadDeadline(inner, self._read_s, self._idle_s)

        self._server = await asyncio.get_running_loop().create_server(
            connection, self._host, self._port, reuse_address=True)


def _one_line(exc: HttpProcessingError) -> str:
    """aiohttp's several-line parse error (the message, the bytes, a caret) as one line."""
    parts = [part.strip() for part in str(exc.message).splitlines()]
    text = " ".join(part for part in parts if part and set(part) != {"^"})
    return text if len(text) <= _LONGEST else text[:_LONGEST] + "..."


class OneLineErrors(logging.LoggerAdapter):  # type: ignore[type-arg]  # generic only in typeshed
    """aiohttp's server logger, except that a request it cannot parse is one INFO line
    ("bad request from ADDRESS: what"), not an ERROR with a traceback."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            where = args[0] if args else "a client"   # aiohttp: ("... from %s", request.remote)
            self.info("bad request from %s: %s, %s", where, exc_info.code, _one_line(exc_info))
            return
        self.error(msg, *args, exc_info=exc_info, **kwargs)
