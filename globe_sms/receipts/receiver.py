"""The receipt endpoint: a Starlette ASGI app that takes Alibaba's HTTP push and writes it to the ledger.

`POST /` (also `POST /receipts`) takes a JSON array of receipts in either spelling and answers what Alibaba
requires:

| request | answer | Alibaba then |
|---|---|---|
| receipts stored (duplicates and stale ones included) | 200 `{"code": 0, "msg": "..."}` | done |
| items without MessageId among them | 200, the rest stored, the skipped counted in `msg` | done |
| body not JSON, or neither array nor object | 400 `{"code": 400, "msg": "..."}` | retries, then gives up |
| the database failed | 500 `{"code": 500, "msg": "..."}` | retries (after 1, 5, 10 minutes) |

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
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from alibaba_sms.emulator import EmulatorConfig, EmulatorServer
from alibaba_sms.emulator.receipts import ReceiptSettings
from alibaba_sms.emulator.server import ThreadedUvicorn, uvicorn_config
from globe_sms.receipts.model import ReceiptFormatError, parse_receipts
from globe_sms.receipts.store import ApplyResult, ReceiptStore

logger = logging.getLogger(__name__)

EMBEDDED_DRAIN_SECONDS = 30.0


class Receiver:
    """The endpoints, bound to one store; `totals` sums what every push did."""

    def __init__(self, store: ReceiptStore) -> None:
        self.store = store
        self.totals = ApplyResult()
        self.posts = 0
        self.failed_posts = 0
        self._lock = threading.Lock()

    async def receive(self, request: Request) -> Response:
        """Store one push; 200 `{"code": 0}` once it is committed."""
        raw = await request.body()
        try:
            receipts, skipped = parse_receipts(json.loads(raw))
        except (
            ValueError,
            ReceiptFormatError,
        ) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            reason = str(exc) if isinstance(exc, ReceiptFormatError) else "the body is not JSON"
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

    async def health(self, request: Request) -> Response:
        """`GET /health`: the counters since start."""
        with self._lock:
            body = {
                "status": "ok",
                "posts": self.posts,
                "failed_posts": self.failed_posts,
                **asdict(self.totals),
            }
        return JSONResponse(body)


def create_receiver_app(store: ReceiptStore) -> Starlette:
    """The receiver as an ASGI app; its `Receiver` is `app.state.receiver`.

    Example:
        app = create_receiver_app(ReceiptStore("sqlite:///.data/ledger.db"))
        client = httpx.Client(transport=httpx.ASGITransport(app=app), base_url="http://receiver")
    """
    receiver = Receiver(store)
    app = Starlette(
        routes=[
            Route("/", receiver.receive, methods=["POST"]),
            Route("/receipts", receiver.receive, methods=["POST"]),
            Route("/health", receiver.health, methods=["GET"]),
        ]
    )
    app.state.receiver = receiver
    return app


class ReceiverServer:
    """The receiver served by uvicorn from a daemon thread, on a free loopback port by default.

    Args:
        ledger_url: the ledger's SQLAlchemy URL; receipts are written next to it.
        host: the address to bind.
        port: 0 picks a free port.
        startup_timeout: seconds to wait for uvicorn to start serving.
    """

    def __init__(
        self, ledger_url: str, *, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 10.0
    ):
        self.ledger_url = ledger_url
        self.store = ReceiptStore(ledger_url)
        self.app = create_receiver_app(self.store)
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
    def url(self) -> str:
        """The push URL, e.g. `http://127.0.0.1:54321/`."""
        if not self.port:
            raise RuntimeError("the receiver is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

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
        self.store.close()

    def __enter__(self) -> ReceiverServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_forever(host: str, port: int, ledger_url: str) -> None:
    """Serve the receiver in the foreground until interrupted (`globe-sms receipts serve`)."""
    with ReceiptStore(ledger_url) as store:
        app = create_receiver_app(store)
        uvicorn.Server(uvicorn_config(app, host, port, log_level="info", quiet=False)).run()


def embedded_receipt_settings() -> ReceiptSettings:
    """The embedded emulator's receipts: 90 % delivered, 7 % failed, 3 % expired, with Alibaba's quirks."""
    return ReceiptSettings(
        delay_seconds=0.3, delay_jitter_seconds=0.4, duplicate_rate=0.05, interim_rate=0.1, reorder=True
    )


class EmulatorWithReceipts:
    """An embedded emulator whose receipts go to an embedded receiver writing to `ledger_url` (one run).

    On exit it waits (at most `drain_seconds`) until every receipt is pushed and stored, then stops both.
    """

    def __init__(
        self, config: EmulatorConfig, ledger_url: str, drain_seconds: float = EMBEDDED_DRAIN_SECONDS
    ):
        self.receiver = ReceiverServer(ledger_url)
        self._config = config
        self._drain_seconds = drain_seconds
        self.emulator: EmulatorServer | None = None

    def start(self) -> EmulatorServer:
        """Start the receiver, then the emulator pushing to it; returns the emulator."""
        self.receiver.start()
        config = self._config.model_copy(
            update={"receipt_callback_url": self.receiver.url, "receipts": embedded_receipt_settings()}
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
