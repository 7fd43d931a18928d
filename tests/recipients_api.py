"""A recipients JSON API for the HTTP source tests: a Starlette app under uvicorn on a free loopback port.

`RecipientsApi` serves one list of records three ways, each checking the `Authorization` header:

* `/cursor?cursor=N`: `{"data": [...], "links": {"next": "/cursor?cursor=N+1" | null}}` (relative next links
  in the body);
* `/linked?page=N`: a bare JSON list, with an absolute `Link: <...>; rel="next"` header;
* `/paged?page=N&per_page=K`: `{"items": [...]}`, an empty page past the end.

With `delay_seconds` set, every `/cursor` page takes that long. With `next_base` set, `/cursor` writes its
next links absolute, on that base (another host or scheme); with
`key_param` set, every route checks the token in that query parameter instead of the header. `/big?bytes=N`
answers a JSON list padded to N bytes (`&chunked=1`: streamed without a Content-Length); `/nested?depth=N`
answers N nested arrays.

Faults are scripted per page: `api.faults[(route, page)] = [503, 200]` answers 503 once, then normally;
`api.faults[(route, page)] = [500] * 99` keeps failing. Every request is recorded in `api.requests`.
Used by tests/{unit,integration}/test_sources.py and tests/{unit,integration}/test_streaming.py through
`serve()`; the server thread is started like
the emulator's (`alibaba_sms/emulator/server.py`).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from alibaba_sms.emulator.server import uvicorn_config

TOKEN = "s3cret-token-42"


@dataclass
class Seen:
    """One request as the API saw it."""

    route: str
    page: int
    authorized: bool
    query: dict[str, str]


@dataclass
class RecipientsApi:
    """The API's data, fault script and request log; `app` is its ASGI app."""

    records: list[dict[str, Any]]
    page_size: int = 3
    token: str = TOKEN
    faults: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    base_url: str = ""
    next_base: str | None = None
    key_param: str | None = None
    delay_seconds: float = 0.0  # how long each `/cursor` page takes (a slow API)

    def page(self, number: int, size: int | None = None) -> list[dict[str, Any]]:
        size = size or self.page_size
        return self.records[number * size : (number + 1) * size]

    def _fault(self, route: str, page: int) -> Response | None:
        script = self.faults.get((route, page))
        if script:
            status = script.pop(0)
            if status != 200:
                headers = {"Retry-After": "0"} if status == 429 else {}
                return JSONResponse({"error": f"scripted {status}"}, status_code=status, headers=headers)
        return None

    def _check(self, request: Request, route: str, page: int) -> Response | None:
        if self.key_param is not None:
            authorized = request.query_params.get(self.key_param) == self.token
        else:
            authorized = request.headers.get("authorization") == f"Bearer {self.token}"
        self.requests.append(Seen(route, page, authorized, dict(request.query_params)))
        if not authorized:
            # Echo what was sent, as some APIs do: the reader must mask it in its error.
            return JSONResponse({"error": f"bad credentials: {request.headers.get('authorization')}"}, 401)
        return self._fault(route, page)

    async def cursor(self, request: Request) -> Response:
        page = int(request.query_params.get("cursor", "0"))
        if (refused := self._check(request, "cursor", page)) is not None:
            return refused
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        more = (page + 1) * self.page_size < len(self.records)
        link = f"{self.next_base or ''}/cursor?cursor={page + 1}"
        return JSONResponse({"data": self.page(page), "links": {"next": link if more else None}})

    async def linked(self, request: Request) -> Response:
        page = int(request.query_params.get("page", "0"))
        if (refused := self._check(request, "linked", page)) is not None:
            return refused
        headers = {}
        if (page + 1) * self.page_size < len(self.records):
            headers["Link"] = (
                f'<{self.base_url}/linked?page={page + 1}>; rel="next", <{self.base_url}/linked>; rel="first"'
            )
        return Response(json.dumps(self.page(page)), media_type="application/json", headers=headers)

    async def paged(self, request: Request) -> Response:
        page = int(request.query_params.get("page", "1"))
        size = int(request.query_params.get("per_page", str(self.page_size)))
        if (refused := self._check(request, "paged", page)) is not None:
            return refused
        return JSONResponse({"items": self.page(page - 1, size)})

    async def not_json(self, request: Request) -> Response:
        return Response("<html>maintenance</html>", media_type="text/html")

    async def big(self, request: Request) -> Response:
        """A JSON list of one record, padded with spaces to `bytes` bytes."""
        if (refused := self._check(request, "big", 0)) is not None:
            return refused
        record = json.dumps([{"phone": "+6591200000"}]).encode()
        size = int(request.query_params["bytes"])
        body = record[:-1] + b" " * max(0, size - len(record)) + b"]"
        if request.query_params.get("chunked"):
            chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
            return StreamingResponse(chunks, media_type="application/json")
        return Response(body, media_type="application/json")

    async def nested(self, request: Request) -> Response:
        """`depth` nested JSON arrays: valid JSON, deeper than Python's parser goes."""
        if (refused := self._check(request, "nested", 0)) is not None:
            return refused
        depth = int(request.query_params["depth"])
        return Response(b"[" * depth + b"]" * depth, media_type="application/json")

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/cursor", self.cursor),
                Route("/linked", self.linked),
                Route("/paged", self.paged),
                Route("/html", self.not_json),
                Route("/big", self.big),
                Route("/nested", self.nested),
            ]
        )


class ApiServer:
    """A `RecipientsApi` under uvicorn in a daemon thread, bound before the thread starts."""

    def __init__(self, api: RecipientsApi) -> None:
        self.api = api
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        api.base_url = self.url
        config = uvicorn_config(api.app, "127.0.0.1", sock.getsockname()[1], log_level="warning", quiet=True)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the recipients API did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def records(n: int) -> list[dict[str, Any]]:
    """`n` distinct valid Singapore mobiles with names and codes."""
    return [{"phone": f"+65912{i:05d}", "first_name": f"Name{i}", "code": 100000 + i} for i in range(n)]


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@contextmanager
def serve(api: RecipientsApi, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    """Serve `api` for a test; the token is put in `RECIPIENTS_API_TOKEN` and proxies are cleared."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RECIPIENTS_API_TOKEN", api.token)
    server = ApiServer(api)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def recipients_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    """The recipients API on a loopback port over `records(10)`, 3 a page; a test may replace
    `recipients_api.api.records` (or add `faults`) before its first request."""
    with serve(RecipientsApi(records(10)), monkeypatch) as server:
        yield server
