"""Benchmark: the emulator's CPU per signed V3 SendMessageToGlobe call, this tree against a baseline.

Usage:
    uv run python bench/bench_emulator.py [--baseline main] [--calls 20000] [--rounds 3]
        [--json bench/results/emulator.json]

Each round starts the baseline emulator (`git archive <baseline> alibaba_sms`, unpacked into a temporary
folder and put first on `sys.path`) and this tree's, one after the other, each in a process of its own under
uvicorn with the settings `globe-sms emulator` uses (`uvicorn_config`), with no rate limit. A load process
signs `--calls` SendMessageToGlobe requests beforehand with `AsyncSmsClient.prepare_send` (real V3
signatures, distinct nonces and numbers) and then writes them, 32 connections in flight, over raw keep-alive
sockets: the load costs little CPU, so the two cores go mostly to the emulator, as they would if the client
were fast. The emulator's CPU is read from `/proc/<pid>/stat` just before the first request and after the
last answer. Every answer must be HTTP 200 with `ResponseCode` OK.

The figure is the emulator's CPU per call; calls/s is what it served with the load process beside it. The
machine is shared: the load average (`/proc/loadavg`) is recorded with every figure, and the ratio of the
two trees within a round is the figure to trust.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
TEXT = "Hello, your appointment is confirmed for tomorrow at 10:00."
CONCURRENCY = 32


def say(text: str) -> None:
    print(text, flush=True)  # noqa: T201 - the benchmark reports on stdout


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- serve: the emulator of one source tree ----------------------------------------------------------------


def serve(source: Path, port: int) -> None:
    """Run the emulator found under `source` (its `alibaba_sms` package) as `globe-sms emulator` would."""
    sys.path.insert(0, str(source))
    import uvicorn

    from alibaba_sms.emulator import EmulatorConfig, create_app
    from alibaba_sms.emulator.server import uvicorn_config

    assert Path(sys.modules["alibaba_sms"].__file__ or "").is_relative_to(source), (
        "wrong alibaba_sms imported"
    )
    app = create_app(EmulatorConfig(batch_calls_per_second=None, single_calls_per_second=None))
    uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, log_level="warning", quiet=True)).run()


# --- load: pre-signed requests over raw sockets ------------------------------------------------------------


def presign(url: str, calls: int, first: int) -> list[bytes]:
    """`calls` signed SendMessageToGlobe requests, as the bytes an HTTP/1.1 client writes."""
    sys.path.insert(0, str(ROOT))
    from alibaba_sms import AccessKey
    from alibaba_sms.async_client import AsyncSmsClient

    client = AsyncSmsClient(AccessKey.of("testid", "testsecret"), endpoint=url)
    wire = []
    for index in range(first, first + calls):
        request = client.prepare_send(str(85200000000 + index), TEXT).request
        head = f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n"
        headers = "".join(f"{name}: {value}\r\n" for name, value in request.headers.multi_items())
        wire.append((head + headers + "\r\n").encode("latin-1") + request.content)
    return wire


async def exchange_all(port: int, wire: list[bytes]) -> dict[str, int]:
    """Send every request, `CONCURRENCY` connections each one request at a time; count the answers."""
    outcomes: dict[str, int] = {}
    pending = iter(wire)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for request in pending:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            ok = head.startswith(b"HTTP/1.1 200") and b'"ResponseCode":"OK"' in body
            name = "ok" if ok else head.split(b"\r\n", 1)[0].decode() + " " + body[:80].decode()
            outcomes[name] = outcomes.get(name, 0) + 1
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(connection() for _ in range(CONCURRENCY)))
    return outcomes


def load_mode(url: str, port: int, calls: int, first: int) -> None:
    """Sign, say `ready`, wait for a line on stdin, send, print the outcome as JSON."""
    wire = presign(url, calls, first)
    say("ready")
    sys.stdin.readline()
    started = time.perf_counter()
    outcomes = asyncio.run(exchange_all(port, wire))
    say(json.dumps({"outcomes": outcomes, "elapsed": time.perf_counter() - started}))


# --- the measurement ---------------------------------------------------------------------------------------


class Emulator:
    """An emulator process serving the `alibaba_sms` under `source`."""

    def __init__(self, source: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, __file__, "serve", "--source", str(source), "--port", str(self.port)]
        self.process = subprocess.Popen(command, cwd=ROOT)
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.url}/_emulator/health", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the emulator did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def measure(source: Path, calls: int, first: int) -> dict[str, Any]:
    """One emulator of `source`, a warm-up of 500 calls, then `calls` calls: CPU per call and calls/s."""
    emulator = Emulator(source)
    try:
        for count, start in ((500, first), (calls, first + 500)):
            command = [sys.executable, __file__, "load", "--url", emulator.url, "--port", str(emulator.port)]
            command += ["--calls", str(count), "--first", str(start)]
            loader = subprocess.Popen(
                command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            assert loader.stdin is not None and loader.stdout is not None
            assert loader.stdout.readline().strip() == "ready"
            cpu0 = cpu_seconds(emulator.process.pid)
            loader.stdin.write("go\n")
            loader.stdin.flush()
            report = json.loads(loader.stdout.readline())
            cpu = cpu_seconds(emulator.process.pid) - cpu0
            loader.wait(30)
        if set(report["outcomes"]) != {"ok"}:
            raise RuntimeError(f"unexpected answers: {report['outcomes']}")
        return {
            "calls": calls,
            "emulator_cpu_ms_per_call": round(cpu / calls * 1000, 4),
            "calls_per_s": round(calls / report["elapsed"], 1),
            "load": load(),
        }
    finally:
        emulator.stop()


def export(ref: str, folder: Path) -> Path:
    """The `alibaba_sms` package of git `ref`, unpacked under `folder`."""
    archive = subprocess.run(
        ["git", "archive", ref, "alibaba_sms"], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "serve", "load"])
    parser.add_argument("--baseline", default="main", help="git ref of the baseline emulator")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--source", type=Path, default=ROOT)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--url", default="")
    parser.add_argument("--first", type=int, default=0)
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args.source, args.port)
        return
    if args.mode == "load":
        load_mode(args.url, args.port, args.calls, args.first)
        return
    commit = subprocess.run(
        ["git", "rev-parse", "--short", args.baseline], cwd=ROOT, capture_output=True, text=True
    )
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_before": load()},
        "baseline": f"{args.baseline} ({commit.stdout.strip()})",
        "rounds": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        baseline = export(args.baseline, Path(folder))
        for index in range(args.rounds):
            first = index * 2 * (args.calls + 1000)
            before = measure(baseline, args.calls, first)
            after = measure(ROOT, args.calls, first + args.calls + 1000)
            ratio = round(before["emulator_cpu_ms_per_call"] / after["emulator_cpu_ms_per_call"], 2)
            results["rounds"].append({"baseline": before, "this_tree": after, "cpu_ratio": ratio})
            say(f"round {index + 1}: baseline {before}  this tree {after}  baseline/this CPU {ratio}")
    rounds = results["rounds"]
    results["median"] = {
        "baseline_cpu_ms_per_call": statistics.median(
            r["baseline"]["emulator_cpu_ms_per_call"] for r in rounds
        ),
        "this_tree_cpu_ms_per_call": statistics.median(
            r["this_tree"]["emulator_cpu_ms_per_call"] for r in rounds
        ),
        "cpu_ratio": statistics.median(r["cpu_ratio"] for r in rounds),
    }
    results["machine"]["load_after"] = load()
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    say(text)


if __name__ == "__main__":
    main()
