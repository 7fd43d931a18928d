"""A local emulator of Alibaba Cloud's international SMS gateway (dysmsapi 2018-05-01).

A real HTTP server that verifies V3 and V1 signatures with `alibaba_sms.signing`, enforces the documented
limits, journals every request and accepted message, and injects faults on demand. Run it in-process
(`create_app` + `httpx.ASGITransport`), in a thread (`EmulatorServer`), or from the command line
(`serve_forever`, behind `globe-sms emulator`).
"""

from __future__ import annotations

from alibaba_sms.emulator.app import DroppedConnection, create_app
from alibaba_sms.emulator.faults import Fault, FaultConfig, FaultInjector, parse_fault
from alibaba_sms.emulator.server import EmulatorServer, serve_forever
from alibaba_sms.emulator.state import EmulatorConfig, EmulatorState, MessageRecord, RequestRecord

__all__ = [
    "DroppedConnection",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorState",
    "Fault",
    "FaultConfig",
    "FaultInjector",
    "MessageRecord",
    "RequestRecord",
    "create_app",
    "parse_fault",
    "serve_forever",
]
