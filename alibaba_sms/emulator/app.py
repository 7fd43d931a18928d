"""The emulated dysmsapi gateway as an ASGI app: `create_app(config)`.

`POST /` (and `GET /`, as the real RPC gateway allows for V1) serves `BatchSendMessageToGlobe`,
`SendMessageToGlobe` and `QueryMessage`. `Gateway`, a plain ASGI app reached before Starlette's middleware
and router (`EmulatorApp`: they cost more than the rest of a SendMessageToGlobe call), takes each request
through the modules that hold the pieces, then journals it as one `RequestRecord`:

    call.py        parse the query and form parameters; tell V3, V1 or unsigned
    verify.py      authenticate: signature, AccessKeyId, clock, nonce (gateway errors in a fixed order)
    (pause)        the latency fault (`faults.py`), before any operation
    operations.py  the operation: flow control, batch fault, business checks, accepted messages
    answers.py     the outcome or refusal, written as JSON or XML

Admin endpoints under `/_emulator/` (journal, faults, reset, health, receipts), served by Starlette, are in
`admin.py`. The state and its journal are in `state.py`; delivery receipts (outcomes, QueryMessage answers,
pushes to a callback URL) in `receipts.py`; uvicorn's protocol writing each answer in one system call in
`one_write.py`.
"""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from alibaba_sms.emulator.admin import admin_routes
from alibaba_sms.emulator.answers import BusinessError, DroppedConnection, GatewayError, render
from alibaba_sms.emulator.call import parse_call
from alibaba_sms.emulator.operations import HANDLERS, numbers_in, segments
from alibaba_sms.emulator.state import EmulatorConfig, EmulatorState, RequestRecord
from alibaba_sms.emulator.verify import authenticate

# `DroppedConnection` and `segments` are imported from here elsewhere; their homes are answers/operations.
__all__ = ["DroppedConnection", "Gateway", "create_app", "segments"]


async def read_body(receive: Receive) -> bytes:
    """The whole request body, from as many ASGI messages as it comes in."""
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while message.get("more_body", False):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


async def pause(receive: Receive, seconds: float) -> None:
    """Wait up to `seconds`, ending early when the client goes away (so shutdown is never held up)."""
    if seconds <= 0:
        return

    async def until_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(until_disconnect(), seconds)
    except TimeoutError:
        pass


class Gateway:
    """The API endpoint, bound to one emulator state: a plain ASGI app (no Starlette `Request` or `Response`),
    since it is on the path of every call."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The RPC endpoint: verify, apply latency, dispatch, journal, answer."""
        state = self.state
        call = parse_call(scope, await read_body(receive), state)
        call.numbers = numbers_in(call)
        decided = state.now()
        try:
            authenticate(call, state)
            await pause(receive, state.faults.latency())
            # The moment flow control admits or throttles the call (no await from here to the admission), so
            # journal times and the rate limit agree; handling 1,000 numbers afterwards does not move it.
            decided = state.now()
            outcome = HANDLERS[call.action](call, state)
        except (GatewayError, BusinessError) as error:
            outcome = error.outcome(call.request_id)
        state.record_request(
            RequestRecord(
                decided,
                call.action,
                call.access_key_id,
                outcome.status,
                outcome.code,
                call.numbers,
                call.task_id,
                call.request_id,
                call.version,
                call.fault,
            )
        )
        await pause(receive, outcome.delay)
        await render(call, outcome, state.config.host_id).send(send)


class EmulatorApp(Starlette):
    """Starlette for the admin endpoints; API calls (`GET`/`POST /`) go straight to the `Gateway`, past
    Starlette's middleware and router, which cost more than the rest of a SendMessageToGlobe call. The
    gateway raises nothing but `DroppedConnection` (the fault meant to break the connection) and bugs."""

    def __init__(self, gateway: Gateway, routes: list[BaseRoute]) -> None:
        super().__init__(routes=[Route("/", gateway, methods=["GET", "POST"]), *routes])
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/" and scope["method"] in ("POST", "GET"):
            await self.gateway(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(config: EmulatorConfig | None = None) -> Starlette:
    """Build the emulator app; its state is `app.state.emulator` (an `EmulatorState`).

    Example:
        app = create_app(EmulatorConfig(batch_calls_per_second=None))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://emulator")
    """
    state = EmulatorState(config or EmulatorConfig())
    app = EmulatorApp(Gateway(state), admin_routes(state))
    app.state.emulator = state
    return app
