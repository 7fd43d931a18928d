"""Shared fixtures and helpers for the tests that run the emulator.

`tests/conftest.py` imports the fixtures (`emulator`, `shared_emulator`, `start_emulator`, `no_proxy`,
`gateway`), so every test module can ask for them by name; modules import only the helpers and types from
here. Every server runs on a free loopback port in a daemon thread and is stopped after the test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx
import pytest

from alibaba_sms.credentials import AccessKey
from alibaba_sms.emulator import EmulatorConfig, EmulatorServer
from alibaba_sms.signing import API_VERSION, AcsV1Auth, AcsV3Auth, Clock, Nonce

KEY = AccessKey.of("testid", "testsecret")
BATCH = "BatchSendMessageToGlobe"
FLOW_RATE = 20.0
"""Calls per second of the `gateway` fixture: fast enough that a flow test never waits long."""
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")

StartEmulator = Callable[..., EmulatorServer]


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep loopback traffic away from any proxy in the environment (the SDK honours them)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def start_emulator(no_proxy: None) -> Iterator[StartEmulator]:
    """A factory: `start_emulator(**EmulatorConfig fields)` gives a started server, stopped after the test."""
    servers: list[EmulatorServer] = []

    def start(**config: Any) -> EmulatorServer:
        server = EmulatorServer(EmulatorConfig(**config)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def shared_emulator() -> Iterator[EmulatorServer]:
    """One server per test module (stopping uvicorn takes ~0.2 s, so tests share it and reset it)."""
    with EmulatorServer(EmulatorConfig(batch_calls_per_second=None)) as server:
        yield server


@pytest.fixture
def emulator(shared_emulator: EmulatorServer, no_proxy: None) -> EmulatorServer:
    """An emulator without flow control, freshly reset, for tests that send several batches quickly."""
    shared_emulator.state.reset()
    return shared_emulator


def signed_client(
    server: EmulatorServer,
    version: str = "v3",
    key: AccessKey = KEY,
    *,
    clock: Clock | None = None,
    nonce: Nonce | None = None,
) -> httpx.Client:
    """A plain httpx client signing with our own Auth classes (no `SmsClient` involved)."""
    options: dict[str, Any] = {"clock": clock, "nonce": nonce}
    auth_class = {"v3": AcsV3Auth, "v1": AcsV1Auth}[version]
    auth = auth_class(key, **{name: value for name, value in options.items() if value is not None})
    return httpx.Client(base_url=server.url, auth=auth, trust_env=False, timeout=10)


def call(
    client: httpx.Client,
    action: str,
    params: Mapping[str, str],
    *,
    where: str = "body",
    query: Mapping[str, str] | None = None,
) -> httpx.Response:
    """POST one action with its parameters in a form body (our client's way) or the query (the SDK's)."""
    headers = {"x-acs-action": action, "x-acs-version": API_VERSION}
    if where == "query":
        return client.post("/", params={**(query or {}), **params}, headers=headers)
    return client.post("/", params=query, data=dict(params), headers=headers)


def batch_params(
    numbers: Sequence[str], messages: Sequence[str] | str = "Hello", **extra: str
) -> dict[str, str]:
    """BatchSendMessageToGlobe parameters: JSON-array `To` and `Message` (or one plain text)."""
    text = messages if isinstance(messages, str) else json.dumps(list(messages), ensure_ascii=False)
    return {"To": json.dumps(list(numbers)), "Message": text, **extra}


def send_batch(
    client: httpx.Client, numbers: Sequence[str], messages: Sequence[str] | str = "Hello"
) -> httpx.Response:
    """Send one batch with a form body."""
    return call(client, BATCH, batch_params(numbers, messages))


@pytest.fixture
def gateway(start_emulator: StartEmulator, monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    """An emulator at `FLOW_RATE` for flow tests, with the environment credentials a real endpoint needs."""
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret")
    return start_emulator(batch_calls_per_second=FLOW_RATE)
