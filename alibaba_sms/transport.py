"""An httpx async transport backed by aiohttp: httpx's requests, errors and responses; aiohttp's speed.

No longer `AsyncSmsClient`'s default: `alibaba_sms.wire.WireTransport` costs about half its CPU per call
(bench/README-single.md). Kept as the benchmark's reference and as a drop-in alternative transport.

`AsyncSmsClient` builds and signs `httpx.Request`s with the package's `httpx.Auth` signers and reads
`httpx.Response`s, like the sync client; only the bytes travel through aiohttp, whose HTTP/1.1 client costs
a fraction of httpx's default async transport per call (bench/README-single.md: about 0.2 ms of CPU per
signed call instead of 1-2.6 ms), which is what 2,000 SendMessageToGlobe calls a second need.

aiohttp's exceptions are mapped onto httpx's, so that `alibaba_sms.errors.transport_error` tells "not sent"
from "may have been processed" exactly as for the sync client:

| aiohttp | httpx | outcome |
|---|---|---|
| `ConnectionTimeoutError` (connecting, or waiting for the pool) | `ConnectTimeout` | not sent |
| `ClientConnectorError` (refused, DNS, TLS handshake) | `ConnectError` | not sent |
| `SocketTimeoutError`, other timeouts after the request left | `ReadTimeout` | may have been processed |
| `ServerDisconnectedError`, `ClientPayloadError` | `RemoteProtocolError` | may have been processed |
| any other `ClientError` / `OSError` | `ReadError` | may have been processed |

aiohttp never resends a POST on its own (it retries a dropped keep-alive connection for idempotent methods
only), so one `handle_async_request` is at most one request on the wire.

Timeouts come from the request's `timeout` extension, as httpx sets it: `connect` bounds establishing a
connection, `pool` (plus `connect`) waiting for a pooled one, `read` the gap between two reads. aiohttp has
no write timeout; the requests here are small.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx
from yarl import URL

DEFAULT_MAX_CONNECTIONS = 100


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests with one `aiohttp.ClientSession` (created lazily, inside the running loop).

    Args:
        max_connections: the pool's size (aiohttp's `limit`): at most this many requests in flight.
        keepalive_expiry: seconds an idle connection is kept.
    """

    def __init__(
        self, *, max_connections: int = DEFAULT_MAX_CONNECTIONS, keepalive_expiry: float = 15.0
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"AiohttpTransport(max_connections={self.max_connections})"

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections, limit_per_host=0, keepalive_timeout=self.keepalive_expiry
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Content-Type"),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        status, raw_headers, content = await self._exchange(request)
        # aiohttp decoded the body already: drop the header that would have httpx decode it again.
        headers = [(name, value) for name, value in raw_headers if name.lower() != b"content-encoding"]
        return httpx.Response(
            status,
            headers=headers,
            content=content,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def exchange(self, request: httpx.Request) -> tuple[int, bytes]:
        """Send a request and return its status and (decoded) body, without building an `httpx.Response`:
        the client's fast path, for small JSON answers. Errors are httpx's, as for `handle_async_request`."""
        status, _, content = await self._exchange(request)
        return status, content

    async def _exchange(self, request: httpx.Request) -> tuple[int, Any, bytes]:
        session = self._open()
        timeout = request.extensions.get("timeout", {})
        connect, pool, read = timeout.get("connect"), timeout.get("pool"), timeout.get("read")
        client_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None if connect is None and pool is None else (connect or 0) + (pool or 0),
            sock_connect=connect,
            sock_read=read,
        )
        body = request.content if isinstance(request.stream, httpx.ByteStream) else await request.aread()
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw]
        try:
            async with session.request(
                request.method,
                URL(str(request.url), encoded=True),  # exactly as signed: no second encoding
                data=body or None,
                headers=headers,
                timeout=client_timeout,
                allow_redirects=False,
                compress=False,
            ) as answer:
                content = await answer.read()
                return answer.status, answer.raw_headers, content
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "timed out connecting", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise httpx.RemoteProtocolError(str(exc) or "server disconnected", request=request) from exc
        except (aiohttp.SocketTimeoutError, TimeoutError) as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out reading", request=request) from exc
        except aiohttp.ClientPayloadError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from exc

    async def aclose(self) -> None:
        """Close the session and its connections."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


__all__ = ["DEFAULT_MAX_CONNECTIONS", "AiohttpTransport"]
