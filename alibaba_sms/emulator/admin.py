"""The emulator's own endpoints under `/_emulator/`, for tests and demos; they need no signature.

Each is a method of `Admin`; `admin_routes` binds them to one emulator state:

    GET       /_emulator/journal   {"requests": [...], "messages": [...]}
    GET|POST  /_emulator/faults    show or change the fault config fields, `script`, `clear_script`,
                                   `single_script`, `clear_single_script` (SendMessageToGlobe calls)
    POST      /_emulator/reset     forget everything but the configuration
    GET       /_emulator/health    {"status": "ok", "actions": [...]}
    GET       /_emulator/receipts  decided delivery outcomes and what the receipt pusher did
"""

from __future__ import annotations

import json

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from alibaba_sms.emulator.operations import HANDLERS
from alibaba_sms.emulator.state import EmulatorState


class Admin:
    """The admin endpoints, bound to one emulator state."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def journal(self, request: Request) -> Response:
        """`GET /_emulator/journal`: `{"requests": [...], "messages": [...]}`."""
        return JSONResponse(self.state.journal())

    async def faults(self, request: Request) -> Response:
        """`GET|POST /_emulator/faults`: show or change fault config fields, `script`, `clear_script`."""
        if request.method == "POST":
            try:
                data = json.loads(await request.body() or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("expected a JSON object")
                scripts = [
                    (name, data.pop(name, None), bool(data.pop(f"clear_{name}", False)))
                    for name in ("script", "single_script")
                ]
                for name, script, _ in scripts:
                    if isinstance(script, str) or not isinstance(script or [], list):
                        raise ValueError(f"{name} must be a list of strings")
                if data:
                    self.state.faults.configure(**data)
                for name, script, clear in scripts:
                    if script is not None or clear:
                        self.state.faults.script(script or [], replace=clear, single=name == "single_script")
            except (ValueError, ValidationError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        faults = self.state.faults
        return JSONResponse(
            {
                "faults": faults.config.model_dump(),
                "script": faults.pending(),
                "single_script": faults.pending(single=True),
            }
        )

    async def reset(self, request: Request) -> Response:
        """`POST /_emulator/reset`: forget everything but the configuration."""
        self.state.reset()
        return JSONResponse({"status": "reset"})

    async def receipts(self, request: Request) -> Response:
        """`GET /_emulator/receipts`: decided outcomes and what the receipt pusher did."""
        return JSONResponse(self.state.receipts.summary())

    async def health(self, request: Request) -> Response:
        """`GET /_emulator/health`."""
        return JSONResponse({"status": "ok", "actions": sorted(HANDLERS)})


def admin_routes(state: EmulatorState) -> list[Route]:
    """The routes of the admin endpoints for `state`."""
    admin = Admin(state)
    return [
        Route("/_emulator/journal", admin.journal, methods=["GET"]),
        Route("/_emulator/faults", admin.faults, methods=["GET", "POST"]),
        Route("/_emulator/reset", admin.reset, methods=["POST"]),
        Route("/_emulator/health", admin.health, methods=["GET"]),
        Route("/_emulator/receipts", admin.receipts, methods=["GET"]),
    ]
