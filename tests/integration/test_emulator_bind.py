"""The emulator listens on loopback only unless told `--allow-remote` (issue #13, point 12).

`globe-sms emulator` as a real process: a non-loopback `--host` exits 2 before binding; with `--allow-remote`
it serves and warns that its admin endpoints and journal are open. The Python API (`EmulatorServer`,
`serve_forever`) follows the same rule through `allow_remote=`. The emulator itself:
tests/integration/test_emulator.py.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from alibaba_sms.emulator import EmulatorConfig, EmulatorServer
from alibaba_sms.emulator.server import RemoteBindRefused, check_bind_address, serve_forever

COMMAND = str(Path(sys.executable).with_name("globe-sms"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(url: str) -> bool:
    try:
        return httpx.get(url, trust_env=False, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class TestCommand:
    @pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
    def test_a_non_loopback_host_exits_2_without_listening(self, host: str) -> None:
        port = free_port()
        done = subprocess.run(
            [COMMAND, "emulator", "--host", host, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "300"},
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert "refusing to listen on" in done.stdout and "--allow-remote" in done.stdout
        assert not answers(f"http://127.0.0.1:{port}/_emulator/health")

    def test_allow_remote_serves_and_warns_what_is_open(self) -> None:
        port = free_port()
        process = subprocess.Popen(
            [COMMAND, "emulator", "--host", "0.0.0.0", "--port", str(port), "--allow-remote"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not answers(f"http://127.0.0.1:{port}/_emulator/health"):
                assert process.poll() is None and time.monotonic() < deadline, "the emulator did not start"
                time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        assert "reachable from the network" in err and "/_emulator/journal" in err, err
        assert "journal (every message and phone number" in err

    def test_loopback_needs_no_flag(self) -> None:
        port = free_port()
        process = subprocess.Popen(
            [COMMAND, "emulator", "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not answers(f"http://127.0.0.1:{port}/_emulator/health"):
                assert process.poll() is None and time.monotonic() < deadline, "the emulator did not start"
                time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=30)
        assert "reachable from the network" not in err


class TestPythonApi:
    @pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "::1", "localhost"])
    def test_loopback_addresses_pass(self, host: str) -> None:
        check_bind_address(host, allow_remote=False)

    def test_emulator_server_refuses_a_remote_address(self) -> None:
        with pytest.raises(RemoteBindRefused, match="refusing to listen on 0.0.0.0"):
            EmulatorServer(EmulatorConfig(), host="0.0.0.0")

    def test_serve_forever_refuses_before_binding(self) -> None:
        with pytest.raises(RemoteBindRefused):
            serve_forever("0.0.0.0", free_port(), EmulatorConfig())

    def test_allow_remote_serves_and_logs_a_warning(
        self, caplog: pytest.LogCaptureFixture, no_proxy: None
    ) -> None:
        caplog.set_level(logging.WARNING, logger="alibaba_sms.emulator.server")
        with EmulatorServer(EmulatorConfig(), host="0.0.0.0", allow_remote=True) as server:
            assert answers(f"http://127.0.0.1:{server.port}/_emulator/health")
        assert "reachable from the network" in caplog.text
