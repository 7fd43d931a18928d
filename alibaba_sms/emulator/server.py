"""Run the emulator under uvicorn: in a daemon thread (`EmulatorServer`) or in the foreground.

`EmulatorServer` binds its socket before the server thread starts, so `.url` is known at once and no port
can be taken in between; it returns from `start()` only once uvicorn is serving. Example::

    with EmulatorServer(EmulatorConfig(batch_calls_per_second=None)) as emulator:
        client = SmsClient(AccessKey.of("testid", "testsecret"), endpoint=emulator.url)
        ...
        assert emulator.state.accepted_numbers().most_common(1)[0][1] == 1

The official SDK puts every parameter in the URL, so the HTTP head limit is raised far above h11's
16 KiB default (httptools, used when installed, has no such limit); bodies are not limited at all (a
1,000-number UCS-2 batch is about 1 MB form-encoded).

Loopback only, unless told otherwise: the emulator has no real authentication (it accepts test AccessKeys),
its admin endpoints (`/_emulator/journal`, `/faults`, `/reset`) need no signature, and its journal holds every
message and phone number it was sent. Binding any other address (`0.0.0.0`, a LAN address, a host name)
raises `RemoteBindRefused` unless `allow_remote=True` (`globe-sms emulator --allow-remote`), and then a
warning says what is open.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import socket
import threading
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette

from alibaba_sms.emulator.app import DroppedConnection, create_app
from alibaba_sms.emulator.idle_gc import IdleTimeCollector
from alibaba_sms.emulator.state import EmulatorConfig, EmulatorState
from alibaba_sms.endpoints import is_loopback

logger = logging.getLogger(__name__)

MAX_REQUEST_HEAD_BYTES = 4 * 1024 * 1024
GRACEFUL_SHUTDOWN_SECONDS = 2


class RemoteBindRefused(ValueError):
    """The emulator was asked to listen on an address other machines can reach, without `allow_remote`."""


def remote_warning(host: str, port: int) -> str:
    """What is open when the emulator listens on `host`, a non-loopback address."""
    return (
        f"the emulator listens on {host}:{port}, reachable from the network: its admin endpoints "
        "(/_emulator/journal, /_emulator/faults, /_emulator/reset) need no signature, and its journal (every "
        "message and phone number sent to it) can be read by anyone who reaches it"
    )


def check_bind_address(host: str, *, allow_remote: bool) -> None:
    """Refuse a non-loopback `host` unless `allow_remote`; log a warning when it is allowed.

    Raises:
        RemoteBindRefused: `host` is not 127.0.0.0/8, ::1 or localhost, and `allow_remote` is False.
    """
    if is_loopback(host):
        return
    if not allow_remote:
        raise RemoteBindRefused(
            f"refusing to listen on {host or 'every interface'}: the emulator's admin endpoints and its "
            "journal (every message and phone number sent to it) would be open to the network. Listen on "
            "127.0.0.1, or pass --allow-remote (allow_remote=True) if other machines must reach it"
        )


def fast_http() -> tuple[str | type[asyncio.Protocol], str]:
    """uvicorn's HTTP protocol and event loop: httptools (writing each answer in one system call,
    `one_write.py`) and uvloop where installed, else h11 and asyncio.

    They cut the emulator's CPU per call by about a half (bench/README-single.md, bench/README-emulator.md),
    which is what serving 2,000 SendMessageToGlobe calls a second on a small machine needs. uvloop only runs
    the server's own loop (uvicorn passes a loop factory; no global event loop policy is changed).
    """
    http: str | type[asyncio.Protocol] = "h11"
    if importlib.util.find_spec("httptools") is not None:
        from alibaba_sms.emulator.one_write import OneWriteHttpToolsProtocol

        http = OneWriteHttpToolsProtocol
    loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    return http, loop


def uvicorn_config(app: Starlette, host: str, port: int, *, log_level: str, quiet: bool) -> uvicorn.Config:
    """The uvicorn settings both ways of running share (httptools and uvloop when installed, no lifespan,
    no websockets)."""
    extra = {"log_config": None} if quiet else {}  # in a thread: leave the host process's logging alone
    http, loop = fast_http()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=http,
        loop=loop,
        ws="none",
        lifespan="off",
        log_level=log_level,
        access_log=False,
        proxy_headers=False,  # no proxy in front of it: skip uvicorn's middleware that would read them
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        **extra,  # type: ignore[arg-type]
    )


class _DroppedConnectionFilter(logging.Filter):
    """Turns uvicorn's traceback for an injected `drop_after_accept` into one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, DroppedConnection):
            record.msg, record.args, record.exc_info, record.exc_text = str(exc), (), None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_dropped_connections() -> None:
    """Install the filter on uvicorn's error logger, once."""
    uvicorn_logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DroppedConnectionFilter) for f in uvicorn_logger.filters):
        uvicorn_logger.addFilter(_DroppedConnectionFilter())


class ThreadedUvicorn:
    """Any ASGI app served by uvicorn from a daemon thread, on a socket bound before the thread starts.

    Binding first gives the caller the port at once (0 picks a free one). The socket names TCP as its
    protocol: asyncio only disables Nagle (TCP_NODELAY) on sockets that do, and without it every keep-alive
    response waits ~40 ms for the client's delayed ACK.
    """

    def __init__(self, app: Any, *, host: str, port: int, startup_timeout: float, name: str) -> None:
        self.app, self.host, self.name = app, host, name
        self._requested_port = port
        self._startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> int:
        """Bind, start uvicorn, wait until it serves, and return the port.

        Raises:
            RuntimeError: uvicorn did not come up within `startup_timeout`.
        """
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        config = uvicorn_config(self.app, self.host, self.port, log_level="warning", quiet=True)
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"{self.name}-{self.port}", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop(timeout=5)
                sock.close()
                raise RuntimeError(f"the {self.name} did not start on {self.host}:{self.port}")
            time.sleep(0.005)
        return self.port

    def stop(self, *, timeout: float) -> None:
        """Ask uvicorn to exit and wait for the thread; safe to call twice."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=timeout)
            if self._thread.is_alive():
                logger.warning("%s thread %s did not stop in time", self.name, self._thread.name)
        self._server = self._thread = None


class EmulatorServer:
    """The emulator served by uvicorn from a daemon thread, on a free loopback port by default.

    Args:
        config: the emulator's configuration (default: `EmulatorConfig()`).
        host: the address to bind.
        port: 0 picks a free port.
        startup_timeout: seconds to wait for uvicorn to start serving.
        allow_remote: allow a `host` other than loopback (see the module docstring); it logs a warning.

    Raises:
        RemoteBindRefused: `host` is not loopback and `allow_remote` is False.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 10.0,
        allow_remote: bool = False,
    ) -> None:
        check_bind_address(host, allow_remote=allow_remote)
        self.app = create_app(config or EmulatorConfig())
        self.host = host
        self._runner = ThreadedUvicorn(
            self.app, host=host, port=port, startup_timeout=startup_timeout, name="emulator"
        )

    @property
    def port(self) -> int:
        """The port it listens on (0 before `start`)."""
        return self._runner.port

    @property
    def state(self) -> EmulatorState:
        """The emulator's state: journal, messages, faults."""
        state: EmulatorState = self.app.state.emulator
        return state

    @property
    def url(self) -> str:
        """The base URL, e.g. `http://127.0.0.1:54321`."""
        if not self.port:
            raise RuntimeError("the emulator server is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __repr__(self) -> str:
        where = self.url if self.port else "not started"
        return f"EmulatorServer({where})"

    def start(self) -> EmulatorServer:
        """Bind, start uvicorn in a daemon thread, and wait until it serves.

        Raises:
            RuntimeError: uvicorn did not come up within `startup_timeout`.
        """
        if self._runner.running:
            return self
        quiet_dropped_connections()
        self._runner.start()
        logger.info("emulator serving at %s", self.url)
        if not is_loopback(self.host):
            logger.warning(remote_warning(self.host, self.port))
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit, wait for the thread, close the journal; safe to call twice."""
        self._runner.stop(timeout=GRACEFUL_SHUTDOWN_SECONDS + 5)
        self.state.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_forever(host: str, port: int, config: EmulatorConfig, *, allow_remote: bool = False) -> None:
    """Serve the emulator in the foreground until interrupted (the `globe-sms emulator` command).

    Args:
        host: the address to bind, e.g. `127.0.0.1`.
        port: the port to listen on.
        config: the emulator's configuration, e.g. `EmulatorConfig.from_env()`.
        allow_remote: allow a `host` other than loopback; it logs a warning saying what is open.

    Raises:
        RemoteBindRefused: `host` is not loopback and `allow_remote` is False.
    """
    check_bind_address(host, allow_remote=allow_remote)
    if not is_loopback(host):
        logger.warning(remote_warning(host, port))
    app = create_app(config)
    quiet_dropped_connections()
    logger.info("emulator accepting AccessKeyIds %s", ", ".join(sorted(config.credentials)))
    state = app.state.emulator
    collector = IdleTimeCollector(lambda: state.request_count).start()  # this process is the emulator's
    try:
        uvicorn.Server(uvicorn_config(app, host, port, log_level="info", quiet=False)).run()
    finally:
        collector.stop()
        state.close()
