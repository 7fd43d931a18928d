"""The receipt endpoint: a Starlette ASGI app that takes Alibaba's HTTP push and writes it to the ledger.

`POST /receipts/<token>` (also `POST /receipts?token=<token>`, and `POST /` or `POST /receipts` when no
token is configured) takes a JSON array of receipts in either spelling and answers what Alibaba requires:

| request | answer | Alibaba then |
|---|---|---|
| no token, though one is configured | 401 `{"code": 401, ...}`, the body not even read | retries, gives up |
| a wrong token | 403 `{"code": 403, ...}`, the body not even read | retries, gives up |
| receipts stored (duplicates and stale ones included) | 200 `{"code": 0, "msg": "..."}` | done |
| items without MessageId among them | 200, the rest stored, the skipped counted in `msg` | done |
| body not JSON (or too deeply nested), neither array nor object | 400 `{"code": 400, ...}` | retries |
| body over `max_body_bytes` (4 MiB by default) | 413 `{"code": 413, ...}`, the rest unread | retries |
| the database failed | 500 `{"code": 500, "msg": "..."}` | retries (after 1, 5, 10 minutes) |

The token (`globe_sms.receipts.auth`) is optional: without one the receiver works as before and warns once
that anyone who reaches it can forge receipts. Refused pushes are logged at most once a minute, counted, and
never with the token or the value presented; every request gets one access line with its path and query
redacted (`"POST /receipts/****" 200`), and uvicorn's own access log, should it be turned on, is redacted too.

A push body is read only up to `max_body_bytes`: a declared `Content-Length` above it is answered 413 at
once, and a body sent without one (chunked) is counted as it streams in and answered 413 as soon as it passes
the limit, so no push can make the receiver hold more than that in memory. Alibaba's pushes are a few
hundred bytes per receipt; raise the limit with `globe-sms receipts serve --max-body-bytes`.

`GET /health` answers `{"status": "ok"}` and the receiver's counters. Database writes run in a worker
thread, so a slow SQLite lock never blocks the event loop. Served by uvicorn: `ReceiverServer` in a daemon
thread (tests, the embedded emulator), `serve_forever` in the foreground (`globe-sms receipts serve`).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alibaba_sms.emulator import EmulatorConfig, EmulatorServer
from alibaba_sms.emulator.receipts import ReceiptSettings
from alibaba_sms.emulator.server import ThreadedUvicorn, uvicorn_config
from globe_sms.ledger import LedgerLocation
from globe_sms.receipts.auth import (
    TOKEN_ENV,
    TOKEN_QUERY_PARAMETER,
    ReceiverToken,
    RefusalLog,
    install_access_log_filter,
    masked_push_url,
    redact_path,
)
from globe_sms.receipts.model import ReceiptFormatError, parse_receipts
from globe_sms.receipts.store import ApplyResult, ReceiptStore

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("globe_sms.receipts.access")

EMBEDDED_DRAIN_SECONDS = 30.0
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


class Receiver:
    """The endpoints, bound to one store; `totals` sums what every push did.

    Args:
        store: where receipts go.
        token: the shared secret every push must carry; None accepts any push.
        refusals: counts and logs refused pushes (default: one warning a minute at most).
        max_body_bytes: the largest push body read; a larger one is answered 413.
    """

    def __init__(
        self,
        store: ReceiptStore,
        token: ReceiverToken | None = None,
        refusals: RefusalLog | None = None,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1, got {max_body_bytes}")
        self.store = store
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.refusals = refusals or RefusalLog(logger)
        self.totals = ApplyResult()
        self.posts = 0
        self.failed_posts = 0
        self._lock = threading.Lock()

    def _refusal(self, request: Request) -> Response | None:
        """None if the push may go on; else the 401 / 403 answer, counted and logged without the token."""
        if self.token is None:
            return None
        # The path segment wins: it is the documented form, the query string only a fallback.
        presented = request.path_params.get("token") or request.query_params.get(TOKEN_QUERY_PARAMETER)
        if self.token.matches(presented):
            return None
        missing = not presented
        self.refusals.note(missing=missing, client=request.client.host if request.client else "?")
        if missing:
            return JSONResponse(
                {"code": 401, "msg": "a token is required: push to /receipts/<token>"}, status_code=401
            )
        return JSONResponse({"code": 403, "msg": "wrong token"}, status_code=403)

    async def receive(self, request: Request) -> Response:
        """Check the token, then store one push; 200 `{"code": 0}` once it is committed."""
        refused = self._refusal(request)
        if refused is not None:
            return refused  # the body is never read, let alone stored
        raw = await self._body(request)
        if raw is None:
            logger.warning(
                "receipt push refused: body larger than %s bytes (413)", f"{self.max_body_bytes:,}"
            )
            return JSONResponse(
                {"code": 413, "msg": f"the body is larger than {self.max_body_bytes} bytes"}, status_code=413
            )
        try:
            receipts, skipped = parse_receipts(json.loads(raw))
        except (
            ValueError,
            ReceiptFormatError,
            RecursionError,
        ) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if isinstance(exc, ReceiptFormatError):
                reason = str(exc)
            elif isinstance(exc, RecursionError):  # `[[[[...` deeper than Python's parser goes
                reason = "the body is JSON nested too deeply"
            else:
                reason = "the body is not JSON"
            logger.info("receipt push refused: %s", reason)
            return JSONResponse({"code": 400, "msg": reason}, status_code=400)
        try:
            result = await run_in_threadpool(self.store.record, receipts)
        except Exception:  # noqa: BLE001 - any storage failure: 5xx so that Alibaba pushes again
            logger.exception("receipt push of %s receipts could not be stored", len(receipts))
            with self._lock:
                self.failed_posts += 1
            return JSONResponse({"code": 500, "msg": "receipts not stored; push again"}, status_code=500)
        result.skipped = skipped
        with self._lock:
            self.totals = self.totals.add(result)
            self.posts += 1
        message = (
            f"stored {result.received}: {result.new} new, {result.advanced} advanced, "
            f"{result.duplicates} duplicate, {result.stale} stale, {result.conflicts} conflicting, "
            f"{result.orphans} orphan; skipped {skipped}"
        )
        return JSONResponse({"code": 0, "msg": message})

    async def _body(self, request: Request) -> bytes | None:
        """The request body, or None once it is known to pass `max_body_bytes` (the rest is not read)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                return None
        return bytes(body)

    async def health(self, request: Request) -> Response:
        """`GET /health`: the counters since start."""
        with self._lock:
            body = {
                "status": "ok",
                "posts": self.posts,
                "failed_posts": self.failed_posts,
                "refused_posts": self.refusals.total,
                **asdict(self.totals),
            }
        return JSONResponse(body)


class AccessLog:
    """ASGI middleware: one INFO line per request, path and query redacted (`"POST /receipts/****" 200`).

    uvicorn's own access log stays off (`uvicorn_config`): it prints the raw path, token included.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            client = scope.get("client")
            access_logger.info(
                '%s - "%s %s" %d',
                client[0] if client else "-",
                scope["method"],
                redact_path(scope["path"], scope["query_string"].decode("latin-1")),
                status,
            )


def create_receiver_app(
    store: ReceiptStore, token: ReceiverToken | None = None, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> Starlette:
    """The receiver as an ASGI app; its `Receiver` is `app.state.receiver`.

    Args:
        store: where receipts go.
        token: the shared secret pushes must carry (`/receipts/<token>` or `?token=`); None accepts any
            push and logs a warning saying so, once.
        max_body_bytes: the largest push body read (default 4 MiB); a larger one is answered 413.

    Example:
        app = create_receiver_app(ReceiptStore(default_ledger_url()), ReceiverToken.from_env())
        client = httpx.Client(transport=httpx.ASGITransport(app=app), base_url="http://receiver")
    """
    receiver = Receiver(store, token, max_body_bytes=max_body_bytes)
    install_access_log_filter()
    if token is None:
        logger.warning(
            "the receipt endpoint is UNAUTHENTICATED: no token is configured, so anyone who can reach it can "
            "forge delivery receipts (and make 'retry failed' resend). Set %s or a Secret block and push "
            "to /receipts/<token>; see docs/receipts.md",
            TOKEN_ENV,
        )
    app = Starlette(
        routes=[
            Route("/", receiver.receive, methods=["POST"]),
            Route("/receipts", receiver.receive, methods=["POST"]),
            Route("/receipts/{token}", receiver.receive, methods=["POST"]),
            Route("/health", receiver.health, methods=["GET"]),
        ],
        middleware=[Middleware(AccessLog)],
    )
    app.state.receiver = receiver
    return app


class ReceiverServer:
    """The receiver served by uvicorn from a daemon thread, on a free loopback port by default.

    Args:
        ledger_url: the ledger's SQLAlchemy URL (or where it is kept); receipts are written next to it.
        token: the shared secret pushes must carry; None accepts any push (and warns).
        host: the address to bind.
        port: 0 picks a free port.
        startup_timeout: seconds to wait for uvicorn to start serving.
        max_body_bytes: the largest push body read; a larger one is answered 413.
    """

    def __init__(
        self,
        ledger_url: LedgerLocation,
        *,
        token: ReceiverToken | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 10.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ):
        self.ledger_url = ledger_url
        self.token = token
        self.store = ReceiptStore(ledger_url)
        self.app = create_receiver_app(self.store, token, max_body_bytes=max_body_bytes)
        self.host = host
        self._runner = ThreadedUvicorn(
            self.app, host=host, port=port, startup_timeout=startup_timeout, name="receipt receiver"
        )

    @property
    def port(self) -> int:
        """The port it listens on (0 before `start`)."""
        return self._runner.port

    @property
    def receiver(self) -> Receiver:
        """The endpoints and their counters."""
        receiver: Receiver = self.app.state.receiver
        return receiver

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:54321`, no path."""
        if not self.port:
            raise RuntimeError("the receiver is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The push URL as it may be shown: `http://127.0.0.1:54321/`, or `.../receipts/****` with a token.

        Safe to log; with a token it is not the URL to push to (`push_url()` is).
        """
        return masked_push_url(self.base_url, self.token)

    def push_url(self) -> str:
        """The URL to push to, token included (`http://127.0.0.1:54321/receipts/<token>`): never log it."""
        if self.token is None:
            return self.base_url + "/"
        return self.base_url + self.token.url_path()

    def __repr__(self) -> str:
        return f"ReceiverServer({self.url if self.port else 'not started'})"

    def start(self) -> ReceiverServer:
        """Bind, start uvicorn in a daemon thread, and wait until it serves.

        Raises:
            RuntimeError: uvicorn did not come up within `startup_timeout`.
        """
        if not self._runner.running:
            self._runner.start()
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit, wait for the thread, close the store; safe to call twice."""
        self._runner.stop(timeout=10)
        self.receiver.refusals.flush()
        self.store.close()

    def __enter__(self) -> ReceiverServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_forever(
    host: str,
    port: int,
    ledger_url: LedgerLocation,
    *,
    token: ReceiverToken | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> None:
    """Serve the receiver in the foreground until interrupted (`globe-sms receipts serve`).

    Args:
        host: the address to bind.
        port: the port to listen on.
        ledger_url: the ledger's SQLAlchemy URL.
        token: the shared secret pushes must carry; None accepts any push (and warns).
        max_body_bytes: the largest push body read; a larger one is answered 413.
    """
    with ReceiptStore(ledger_url) as store:
        app = create_receiver_app(store, token, max_body_bytes=max_body_bytes)
        try:
            uvicorn.Server(uvicorn_config(app, host, port, log_level="info", quiet=False)).run()
        finally:
            app.state.receiver.refusals.flush()


def embedded_receipt_settings() -> ReceiptSettings:
    """The embedded emulator's receipts: 90 % delivered, 7 % failed, 3 % expired, with Alibaba's quirks."""
    return ReceiptSettings(
        delay_seconds=0.3, delay_jitter_seconds=0.4, duplicate_rate=0.05, interim_rate=0.1, reorder=True
    )


class EmulatorWithReceipts:
    """An embedded emulator whose receipts go to an embedded receiver writing to `ledger_url` (one run).

    The receiver requires a random token made for this run, so nothing else on the machine can push into
    the ledger through it, and no "unauthenticated" warning is due. On exit it waits (at most
    `drain_seconds`) until every receipt is pushed and stored, then stops both.
    """

    def __init__(
        self,
        config: EmulatorConfig,
        ledger_url: LedgerLocation,
        drain_seconds: float = EMBEDDED_DRAIN_SECONDS,
    ):
        self.receiver = ReceiverServer(ledger_url, token=ReceiverToken.generate())
        self._config = config
        self._drain_seconds = drain_seconds
        self.emulator: EmulatorServer | None = None

    def start(self) -> EmulatorServer:
        """Start the receiver, then the emulator pushing to it; returns the emulator."""
        self.receiver.start()
        config = self._config.model_copy(
            update={"receipt_callback_url": self.receiver.push_url(), "receipts": embedded_receipt_settings()}
        )
        self.emulator = EmulatorServer(config).start()
        return self.emulator

    def stop(self) -> None:
        """Let the last receipts arrive, then stop the emulator and the receiver."""
        try:
            if self.emulator is not None:
                if not self.emulator.state.receipts.drain(self._drain_seconds):
                    logger.warning(
                        "receipts still queued after %s s; the rest is left to reconciliation",
                        self._drain_seconds,
                    )
                self.emulator.stop()
        finally:
            self.receiver.stop()
