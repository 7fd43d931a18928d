"""A small HTTP/1.1 transport for httpx on plain asyncio: keep-alive connections, httptools parsing.

`AsyncSmsClient` sends up to 2,000 SendMessageToGlobe calls a second, each a small signed POST with a small
JSON answer. A general-purpose client spends most of its CPU on what these calls never need (cookies,
redirects, compression, header objects); `WireTransport` writes the request's bytes on an
`asyncio.Protocol` and parses the answer with `httptools.HttpResponseParser` (the parser uvicorn uses), and
its `exchange` returns `(status, body)` without building an `httpx.Response` (bench/README-single.md), and
`exchange_raw` sends a request the caller wrote out as bytes itself, without an `httpx.Request`
(`AsyncSmsClient`'s V3 calls).

What it does: HTTP/1.1 over TCP, TLS for `https://` (an `ssl.SSLContext`, by default the system's trust
store), bodies framed by Content-Length, chunked or the end of the connection, `Connection: close` and
keep-alive (`should_keep_alive`), a pool of at most `max_connections` connections per origin, idle ones kept
`keepalive_expiry` seconds. What it does not: proxies, HTTP/2, redirects, cookies, decompression (it sends
no `Accept-Encoding`; `handle_async_request` leaves a `Content-Encoding` answer to httpx to decode).

Errors are httpx's, classified so that `alibaba_sms.errors.transport_error` tells "not sent" from "may have
been processed" (the ledger's exactly-once rests on it):

| what happened | httpx | outcome |
|---|---|---|
| connecting took longer than the `connect` timeout | `ConnectTimeout` | not sent |
| refused, unreachable, DNS, TLS handshake | `ConnectError` | not sent |
| no pooled connection within the `pool` timeout | `PoolTimeout` | not sent |
| after the request was written: no bytes of the answer for `read` s | `ReadTimeout` | may have been |
| after it was written: the server closed before a whole answer | `RemoteProtocolError` | may have been |
| an answer that is not HTTP (garbage, bad chunking) | `RemoteProtocolError` | may have been |
| after it was written: the connection failed otherwise (reset, ...) | `ReadError` | may have been |

("may have been": processed; `transport_error` makes these `ResponseLost`, the others `ConnectionFailed`.)

A request is written at most once: nothing is ever resent, not even on a keep-alive connection the server
closed at the same moment (that is `RemoteProtocolError`, ambiguous). Connections the server closed while
idle are discarded before reuse. Timeouts come from the request's `timeout` extension as httpx sets it;
`read` is the gap between two reads (reset on every chunk that arrives); there is no write timeout (the
requests are small and the socket buffers them).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Mapping
from typing import Any

import httptools
import httpx

DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_KEEPALIVE_EXPIRY = 15.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HTTP11 = b" HTTP/1.1\r\n"

Origin = tuple[str, str, int | None]
"""Where a request goes: (scheme, host, port or None for the scheme's default), as `origin_of` gives it."""


def origin_of(url: httpx.URL) -> Origin:
    """The (scheme, host, port) of a URL, for `WireTransport.exchange_raw` (the pool `exchange` uses too)."""
    return url.scheme, url.host, url.port


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, its answer parsed as the bytes arrive."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]] | None = None
        self._request: httpx.Request | None = None
        self.closed = False
        self.broken = False
        self.keep_alive = False
        self.encoded = False
        self.idle_since = 0.0
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._headers_done = False
        self._framed = False
        self._head = False
        self._read_timeout: float | None = None
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def usable(self, oldest: float) -> bool:
        """Open, in a known state, and idle since no earlier than `oldest` (loop time)."""
        return not (self.closed or self.broken or self.idle_since < oldest or self.transport.is_closing())

    def close(self) -> None:
        self.broken = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close at once (the connection is in an unknown state: a timeout, a cancelled call)."""
        self.broken = True
        if self.transport is not None:
            self.transport.abort()

    # --- one exchange ---------------------------------------------------------------------------------

    def send(
        self,
        data: bytes,
        read_timeout: float | None,
        request: httpx.Request | None = None,
        head: bool = False,
    ) -> asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]]:
        """Write the request's bytes; the future gets (status, raw headers, body) or an httpx error (naming
        `request`, when there is one). `head`: a HEAD request, whose answer has no body."""
        self._waiter = waiter = self._loop.create_future()
        self._request = request
        self._status, self._headers, self._body = 0, [], []
        self._headers_done = self._framed = self.encoded = False
        self._head = head
        self._last_read = now = self._loop.time()
        self.transport.write(data)
        self._read_timeout = read_timeout
        if read_timeout is not None:
            # One timer per connection, not per request: it outlives the answers and moves on to the last
            # read when it fires, so 2,000 calls a second do not create and cancel 2,000 timers.
            timer = self._timer
            if timer is not None and timer.when() > now + read_timeout:  # a shorter timeout than before
                timer.cancel()
                timer = None
            if timer is None:
                self._timer = self._loop.call_at(now + read_timeout, self._read_timer)
        return waiter

    def _read_timer(self) -> None:
        self._timer = None
        if self._waiter is None or self._waiter.done() or self._read_timeout is None:
            return  # idle: the next request arms it again
        due = self._last_read + self._read_timeout
        if self._loop.time() < due:  # bytes arrived (or a new request left) since: wait for the rest
            self._timer = self._loop.call_at(due, self._read_timer)
            return
        self._fail(httpx.ReadTimeout("timed out waiting for the answer", request=self._request))

    def _fail(self, error: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.abort()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _finish(self) -> None:
        waiter, self._waiter = self._waiter, None  # the read timer stays: see `send`
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, self._headers, b"".join(self._body)))

    # --- asyncio.Protocol -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: the connection's state is unknown
            self.close()
            return
        self._last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP answer: {exc}", request=self._request))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost tells the waiter

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._waiter is None or self._waiter.done():
            return
        if exc is None and self._headers_done and not self._framed and not self.broken:
            self.keep_alive = False  # the body ran to the end of the connection: it is complete
            self._finish()
        elif exc is None:
            self._fail(
                httpx.RemoteProtocolError(
                    "the server closed the connection before a whole answer", request=self._request
                )
            )
        else:
            self._fail(httpx.ReadError(f"{type(exc).__name__}: {exc}", request=self._request))

    # --- httptools callbacks ----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._waiter is None:  # a second answer to one request
            self.broken = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or lowered == b"transfer-encoding":
            self._framed = True
        elif lowered == b"content-encoding":
            self.encoded = True

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headers_done = True
        if self._head and self._status >= 200:  # no body follows; the parser cannot know
            self.keep_alive = False
            self.broken = True
            self._finish()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._waiter is None:
            return
        if 100 <= self._status < 200:  # an interim answer (100 Continue): the real one follows
            self._status, self._headers, self._body, self._headers_done = 0, [], [], False
            return
        self.keep_alive = self._parser.should_keep_alive()
        self._finish()


class _Pool:
    """At most `limit` connections to one origin; idle ones reused most recent first, for `expiry` s."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        limit: int,
        expiry: float,
    ) -> None:
        self.loop = loop
        self._host, self._port, self._ssl = host, port, ssl_context
        self._limit, self._expiry = limit, expiry
        self._idle: deque[_Connection] = deque()
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._slots = 0  # connections open or being opened
        self._closed = False  # the transport was closed: answered connections are closed, not kept
        self._sweep: asyncio.TimerHandle | None = None

    def take_idle(self) -> _Connection | None:
        """The most recently used idle connection that can be reused; the others on the way are closed."""
        oldest = self.loop.time() - self._expiry
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.usable(oldest):
                return connection
            connection.close()
            self._slots -= 1
        return None

    async def acquire(self, connect_timeout: float | None, pool_timeout: float | None) -> _Connection:
        """A new connection (within the limit), or one another call hands over; `take_idle` first."""
        oldest = self.loop.time() - self._expiry
        if self._slots < self._limit:
            self._slots += 1
        else:
            handed = await self._wait(pool_timeout)
            if handed is not None:
                if handed.usable(oldest):
                    return handed
                handed.close()  # closed meanwhile: its slot is ours, connect anew
        try:
            return await self._connect(connect_timeout)
        except BaseException:
            self._free_slot()
            raise

    async def _wait(self, timeout: float | None) -> _Connection | None:
        waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
        self._waiters.append(waiter)
        timer = None if timeout is None else self.loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over just as we were cancelled: pass it on
                if handed is None:
                    self._free_slot()
                else:
                    self.release(handed)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    async def _connect(self, timeout: float | None) -> _Connection:
        loop = self.loop
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            raise httpx.ConnectTimeout(f"timed out connecting to {self._host}:{self._port}") from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        return connection

    def _free_slot(self) -> None:
        """A connection is gone: its slot goes to the first waiter, or back to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._slots -= 1

    def release(self, connection: _Connection) -> None:
        """After a whole answer: keep the connection (or hand it to a waiter) if it can be reused."""
        if not connection.keep_alive or connection.broken or connection.closed or self._closed:
            self.discard(connection)
            return
        connection.idle_since = self.loop.time()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._idle.append(connection)
        if self._sweep is None:
            self._sweep = self.loop.call_later(self._expiry, self._expire_idle)

    def discard(self, connection: _Connection) -> None:
        connection.abort()
        self._free_slot()

    def _expire_idle(self) -> None:
        self._sweep = None
        oldest = self.loop.time() - self._expiry
        idle = self._idle
        while idle and not idle[0].usable(oldest):  # oldest first; a closed one anywhere goes at reuse
            idle.popleft().close()
            self._slots -= 1
        if idle:
            self._sweep = self.loop.call_later(max(0.0, idle[0].idle_since - oldest), self._expire_idle)

    def close(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        while self._idle:
            self._idle.pop().close()
            self._slots -= 1


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.PoolTimeout("timed out waiting for a connection from the pool"))


class WireTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 for httpx on asyncio (see the module docstring). One transport belongs to one event loop
    at a time; after `aclose` it can be used again (on any loop).

    Args:
        max_connections: most connections per origin, i.e. most requests in flight to it.
        keepalive_expiry: seconds an idle connection is kept.
        ssl_context: for `https://`; default `ssl.create_default_context()` (verifies certificates).
    """

    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._pools: dict[Origin, _Pool] = {}

    def __repr__(self) -> str:
        return f"WireTransport(max_connections={self.max_connections})"

    def _pool(self, scheme: str, host: str, port: int | None) -> _Pool:
        key = (scheme, host, port)
        pool = self._pools.get(key)
        if pool is None:
            if scheme not in _DEFAULT_PORTS:
                raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
            if scheme == "https" and self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            pool = _Pool(
                asyncio.get_running_loop(),
                host,
                port or _DEFAULT_PORTS[scheme],
                self._ssl_context if scheme == "https" else None,
                self.max_connections,
                self.keepalive_expiry,
            )
            self._pools[key] = pool
        return pool

    async def exchange(self, request: httpx.Request) -> tuple[int, bytes]:
        """Send a request and return its status and body without building an `httpx.Response`: the
        client's fast path, for small JSON answers. Errors are httpx's, as for `handle_async_request`."""
        status, headers, body, encoded = await self._exchange(request)
        if encoded:  # not asked for; rare: let httpx decode it
            return status, await _decoded(status, headers, body, request)
        return status, body

    async def exchange_raw(
        self, origin: Origin, data: bytes, timeout: Mapping[str, float | None]
    ) -> tuple[int, bytes]:
        """`exchange` for a request already written out: `data` is a whole HTTP/1.1 request (not HEAD; its
        target, `Host` and `Content-Length` as they should go), sent as it is to `origin`, (scheme, host,
        port) as `origin_of` gives it. The async client's path for requests it signs itself: no
        `httpx.Request` is built. `timeout` is httpx's `Timeout.as_dict()`. Errors are httpx's, as for
        `exchange` (with no request attached)."""
        status, headers, body, encoded = await self._roundtrip(self._pool(*origin), data, timeout, None)
        if encoded:
            return status, await _decoded(status, headers, body, None)
        return status, body

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        status, headers, body, _ = await self._exchange(request)
        return httpx.Response(
            status, headers=headers, content=body, request=request, extensions={"http_version": b"HTTP/1.1"}
        )

    async def _exchange(self, request: httpx.Request) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
        data = _serialize(request, body)
        timeout = request.extensions.get("timeout") or {}
        return await self._roundtrip(self._pool(*origin_of(request.url)), data, timeout, request)

    async def _roundtrip(
        self,
        pool: _Pool,
        data: bytes,
        timeout: Mapping[str, float | None],
        request: httpx.Request | None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        connection = pool.take_idle()
        if connection is None:
            try:
                connection = await pool.acquire(timeout.get("connect"), timeout.get("pool"))
            except httpx.TransportError as exc:
                if request is not None:
                    exc.request = request
                raise
        head = request is not None and request.method == "HEAD"
        try:
            status, headers, content = await connection.send(data, timeout.get("read"), request, head)
        except BaseException:  # a timeout, a lost connection, a cancelled call: never reused
            pool.discard(connection)
            raise
        pool.release(connection)
        return status, headers, content, connection.encoded

    async def aclose(self) -> None:
        """Close every idle connection and forget the pools; connections in use close when answered."""
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()


async def _decoded(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, request: httpx.Request | None
) -> bytes:
    """A body sent with a `Content-Encoding`, decoded by httpx."""
    response = httpx.Response(status, headers=headers, content=body, request=request)
    return await response.aread()


def _serialize(request: httpx.Request, body: bytes) -> bytes:
    """The request line, headers and body as one bytes: the URL's target exactly as signed (no second
    encoding), the headers as built, `Host` from the URL if missing, the body's length if not given."""
    url = request.url
    lines = [request.method.encode("ascii"), b" ", url.raw_path, _HTTP11]
    has_host = has_length = False
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"host":
            has_host = True
        elif lowered == b"content-length":
            has_length = True
        elif lowered == b"transfer-encoding":  # the body is sent whole, with its length
            continue
        lines += (name, b": ", value, b"\r\n")
    if not has_host:
        lines += (b"Host: ", url.netloc, b"\r\n")
    if not has_length and (body or request.method in ("POST", "PUT", "PATCH")):
        lines += (b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n")
    lines += (b"\r\n", body)
    return b"".join(lines)


__all__ = [
    "DEFAULT_KEEPALIVE_EXPIRY",
    "DEFAULT_MAX_CONNECTIONS",
    "Origin",
    "WireTransport",
    "origin_of",
]
