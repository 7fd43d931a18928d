"""One socket write per answer: uvicorn's httptools protocol with writes gathered per event-loop turn.

uvicorn writes an answer's status line and headers when the app sends `http.response.start`, and its body on
`http.response.body`: two `send()` system calls and two TCP segments for every SendMessageToGlobe answer,
a fifth of the emulator's CPU per call and one more wake-up for the client. `OneWriteHttpToolsProtocol`
hands uvicorn a transport that keeps what is written during one turn of the event loop and writes it all
at the end of the turn (`loop.call_soon`), or before the transport is closed.

uvicorn takes a protocol class for its `http` setting (`uvicorn.Config(http=...)`); the class extends
`HttpToolsProtocol` of `uvicorn.protocols.http.httptools_impl`, a public module, and only wraps the
transport it is given in `connection_made`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class GatheringTransport:
    """An `asyncio.Transport` stand-in whose writes in one event-loop turn reach the socket as one.

    Everything else goes to the wrapped transport; closing it writes what is pending first.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Write what is pending, as one `write` of the wrapped transport."""
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(chunk) for chunk in self._pending)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol, writing each answer (head and body) in one system call."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        gathering = GatheringTransport(transport, asyncio.get_running_loop())
        super().connection_made(gathering)  # type: ignore[arg-type]
