"""Benchmark: the async client's transport, the emulator's SendMessageToGlobe throughput and flow control,
and QueryMessage reconciliation of 20,000 messages.

Usage:
    uv run python bench/bench_single_client.py [all|client|emulator|bookkeeping|reconcile]
        [--calls 6000] [--messages 20000] [--json bench/results/single.json]
    uv run python bench/bench_single_client.py compare --old-tree DIR [--calls 5000]

The emulator runs in a process of its own (this script's `serve` mode: the emulator app under uvicorn, as
`globe-sms emulator` runs it), so that its CPU is not the client's; its CPU time is read from
`/proc/<pid>/stat` around each phase. The client's CPU is this process's (`time.process_time`). Every call
is a signed SendMessageToGlobe (V3) over loopback.

1. **client**: the same calls, `--calls` of them 32 in flight, through `AsyncSmsClient` with its default
   `WireTransport` on a uvloop loop (as the single lane runs it), the same on asyncio's loop, with the
   `AiohttpTransport` (the default before; asyncio and uvloop loops), and with httpx's default
   `AsyncHTTPTransport` (the baseline); twice each, alternating. Calls/s, client and emulator CPU per call
   (the client's includes building and signing each request). Then, in-process, what building and signing
   one call costs: `prepare_send` now, and the way it was built before (`httpx.Request(data=...)` signed
   through the `httpx.Auth` flow, uuid4 nonce).
   **compare** (not in `all`): the whole client path of an older tree (`git archive <rev> | tar -x -C DIR`)
   against this one, each in a process of its own, alternating three times against one emulator.
2. **emulator**: two load processes (aiohttp transport, uvloop) against an unlimited emulator: the calls/s
   it serves and its CPU per call; then against the default limit (2,000 calls per rolling second) for 4 s:
   what it admitted per rolling second (never above 2,000) and how many it throttled.
3. **bookkeeping**: in-process, what the state costs per accepted call over 20,000 calls (request id,
   nonce, rolling window, `accept_messages`, `record_request`): memory only, with a journal file, with
   receipts decided.
4. **reconcile**: 20,000 accepted messages (20 batches, recorded in a SQLite ledger as the send task
   does), the emulator answering after 100 ms and enforcing QueryMessage's 300 calls per rolling second;
   `reconcile` with `AsyncSmsClient` (64 in flight, 300/s pacer), against the old way (a sync `SmsClient`,
   four threads) on 1,000 of them.

The machine is shared: the load average (`/proc/loadavg`) is recorded with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alibaba_sms import AccessKey, SmsClient  # noqa: E402
from alibaba_sms.async_client import AsyncSmsClient  # noqa: E402
from alibaba_sms.errors import SmsApiError  # noqa: E402
from alibaba_sms.signing import utc_now  # noqa: E402
from alibaba_sms.transport import AiohttpTransport  # noqa: E402
from alibaba_sms.wire import WireTransport  # noqa: E402

KEY = AccessKey.of("testid", "testsecret")
TEXT = "Hello, your appointment is confirmed for tomorrow at 10:00."
TICKS = os.sysconf("SC_CLK_TCK")


def say(text: str) -> None:
    print(text)  # noqa: T201 - the benchmark reports on stdout


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def per_call_ms(seconds: float, calls: int) -> float:
    return round(seconds / max(1, calls) * 1000, 3)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the emulator in a process of its own ----------------------------------------------------------------


def serve(port: int, single_rate: float, query_rate: float, latency: float) -> None:
    import uvicorn

    from alibaba_sms.emulator import EmulatorConfig, create_app
    from alibaba_sms.emulator.faults import FaultConfig
    from alibaba_sms.emulator.server import uvicorn_config

    config = EmulatorConfig(
        batch_calls_per_second=None,
        single_calls_per_second=single_rate or None,
        query_calls_per_second=query_rate or None,
        faults=FaultConfig(latency_seconds=latency),
    )
    app = create_app(config)
    uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, log_level="warning", quiet=True)).run()


class Emulator:
    def __init__(self, *, single_rate: float = 0, query_rate: float = 0, latency: float = 0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, __file__, "serve", "--port", str(self.port)]
        command += ["--single-rate", str(single_rate), "--query-rate", str(query_rate)]
        command += ["--latency", str(latency)]
        self.process = subprocess.Popen(command, cwd=ROOT)
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.url}/_emulator/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the emulator did not start") from None
                time.sleep(0.1)

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def journal(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_emulator/journal", timeout=60).json()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_emulator/reset", timeout=10)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@contextmanager
def emulator(**options: Any) -> Iterator[Emulator]:
    server = Emulator(**options)
    try:
        yield server
    finally:
        server.stop()


# --- client phase ----------------------------------------------------------------------------------------


async def send_calls(
    url: str, calls: int, concurrency: int, transport: httpx.AsyncBaseTransport | None, first: int = 0
) -> dict[str, int]:
    """`calls` SendMessageToGlobe calls, `concurrency` in flight; outcome counts by error class."""
    outcomes: dict[str, int] = {}
    numbers = iter(range(first, first + calls))
    async with AsyncSmsClient(KEY, endpoint=url, transport=transport, max_connections=concurrency) as client:

        async def worker() -> None:
            for index in numbers:
                try:
                    await client.send(str(85290000000 + index), TEXT)
                    name = "ok"
                except SmsApiError as exc:
                    name = type(exc).__name__
                outcomes[name] = outcomes.get(name, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


def run_loop(coroutine: Any, loop: str) -> Any:
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coroutine)
    return asyncio.run(coroutine)


VARIANTS: dict[str, tuple[Callable[[], httpx.AsyncBaseTransport], str]] = {
    "wire transport + uvloop (default)": (lambda: WireTransport(max_connections=32), "uvloop"),
    "wire transport": (lambda: WireTransport(max_connections=32), "asyncio"),
    "aiohttp transport": (lambda: AiohttpTransport(max_connections=32), "asyncio"),
    "aiohttp transport + uvloop": (lambda: AiohttpTransport(max_connections=32), "uvloop"),
    "httpx AsyncHTTPTransport (baseline)": (
        lambda: httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=32)),
        "asyncio",
    ),
}


def measure(
    server: Emulator, calls: int, make: Callable[[], httpx.AsyncBaseTransport], loop: str
) -> dict[str, Any]:
    run_loop(send_calls(server.url, 200, 32, make()), loop)  # warm up: connections, imports
    server.reset()
    started, client0, server0 = time.perf_counter(), time.process_time(), server.cpu()
    outcomes = run_loop(send_calls(server.url, calls, 32, make()), loop)
    elapsed = time.perf_counter() - started
    return {
        "calls": calls,
        "outcomes": outcomes,
        "calls_per_s": round(calls / elapsed, 1),
        "client_cpu_ms_per_call": round((time.process_time() - client0) / calls * 1000, 3),
        "emulator_cpu_ms_per_call": round((server.cpu() - server0) / calls * 1000, 3),
        "load": load(),
    }


def client_phase(calls: int) -> dict[str, Any]:
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    with emulator() as server:
        for _ in range(2):
            for name, (make, loop) in VARIANTS.items():
                result = measure(server, calls, make, loop)
                rounds[name].append(result)
                say(f"  {name}: {result}")
    summary = {}
    for name, results in rounds.items():
        summary[name] = {
            "calls_per_s": round(statistics.median(r["calls_per_s"] for r in results), 1),
            "client_cpu_ms_per_call": round(
                statistics.median(r["client_cpu_ms_per_call"] for r in results), 3
            ),
            "emulator_cpu_ms_per_call": round(
                statistics.median(r["emulator_cpu_ms_per_call"] for r in results), 3
            ),
            "runs": results,
        }
    fast = summary["wire transport + uvloop (default)"]
    aiohttp, base = summary["aiohttp transport"], summary["httpx AsyncHTTPTransport (baseline)"]
    summary["ratios"] = {
        "client_cpu_per_call_vs_aiohttp": round(
            aiohttp["client_cpu_ms_per_call"] / fast["client_cpu_ms_per_call"], 2
        ),
        "client_cpu_per_call_vs_httpx": round(
            base["client_cpu_ms_per_call"] / fast["client_cpu_ms_per_call"], 2
        ),
        "calls_per_s_vs_aiohttp": round(fast["calls_per_s"] / aiohttp["calls_per_s"], 2),
        "calls_per_s_vs_httpx": round(fast["calls_per_s"] / base["calls_per_s"], 2),
    }
    summary["prepare"] = prepare_cost()
    say(f"  prepare: {summary['prepare']}")
    return summary


def prepare_cost(calls: int = 20000) -> dict[str, Any]:
    """CPU per built and signed SendMessageToGlobe request, now and the way it was built before."""
    import uuid

    from alibaba_sms.protocol import USER_AGENT, action_headers, auth_for, sign

    client = AsyncSmsClient(KEY, endpoint="http://127.0.0.1:9")
    old_auth = auth_for("v3", KEY, clock=utc_now, nonce=lambda: uuid.uuid4().hex)
    extensions = {"timeout": client.timeout.as_dict()}

    def before(to: str) -> httpx.Request:
        request = httpx.Request(
            "POST",
            client.base_url,
            data={"To": to, "Message": TEXT},
            headers={
                "accept": "application/json",
                "user-agent": USER_AGENT,
                **action_headers("SendMessageToGlobe"),
            },
            extensions=extensions,
        )
        return sign(old_auth, request)

    def now(to: str) -> Any:
        return client.prepare_send(to, TEXT)

    result: dict[str, Any] = {}
    for _ in range(2):
        for name, build in (("prepare_send (now)", now), ("httpx data= + Auth flow (before)", before)):
            started = time.process_time()
            for index in range(calls):
                build(str(85290000000 + index))
            result.setdefault(name, []).append(round((time.process_time() - started) / calls * 1e6, 1))
    summary = {f"{name}_us_per_call": min(figures) for name, figures in result.items()}
    summary["load"] = load()
    return summary


# --- before/after phase ---------------------------------------------------------------------------------

COMPARE_CHILD = r"""
import json, sys, time
root, url, calls, loop = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sys.path[:0] = [root, root + "/bench"]
import bench_single_client as b
b.run_loop(b.send_calls(url, 300, 32, None), loop)
cpu, wall = time.process_time(), time.perf_counter()
outcomes = b.run_loop(b.send_calls(url, calls, 32, None), loop)
print(json.dumps({"client_cpu_ms_per_call": round((time.process_time() - cpu) / calls * 1000, 3),
                  "calls_per_s": round(calls / (time.perf_counter() - wall), 1), "outcomes": outcomes}))
"""


def compare_phase(calls: int, old_tree: Path, old_loop: str = "asyncio", rounds: int = 3) -> dict[str, Any]:
    """The whole client path of an older tree (`git archive <rev> | tar -x -C DIR`: its default transport
    and its prepare/sign) against this one, each in a process of its own, alternating, one emulator."""
    variants = {
        f"before ({old_tree.name}, {old_loop})": (old_tree, old_loop),
        "after (uvloop)": (ROOT, "uvloop"),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    with emulator() as server:
        for _ in range(rounds):
            for name, (root, loop) in variants.items():
                server.reset()
                emulator0 = server.cpu()
                command = [sys.executable, "-c", COMPARE_CHILD, str(root), server.url, str(calls), loop]
                result = json.loads(subprocess.run(command, cwd=root, capture_output=True, check=True).stdout)
                result["emulator_cpu_ms_per_call"] = round(
                    (server.cpu() - emulator0) / (calls + 300) * 1000, 3
                )
                result["load"] = load()
                runs[name].append(result)
                say(f"  {name}: {result}")
    return {
        name: {
            "client_cpu_ms_per_call": statistics.median(r["client_cpu_ms_per_call"] for r in results),
            "calls_per_s": statistics.median(r["calls_per_s"] for r in results),
            "runs": results,
        }
        for name, results in runs.items()
    }


# --- emulator phase --------------------------------------------------------------------------------------


def load_process(url: str, calls: int, first: int, seconds: float) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, "load", "--url", url, "--calls", str(calls), "--first", str(first)]
    command += ["--seconds", str(seconds)]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def blast(url: str, calls: int, first: int, seconds: float) -> None:
    """The `load` mode: send until `calls` are made or `seconds` have passed; print counts as JSON."""

    async def main() -> dict[str, Any]:
        deadline = time.monotonic() + seconds if seconds else None
        outcomes: dict[str, int] = {}
        numbers = iter(range(first, first + calls))
        started = time.perf_counter()
        async with AsyncSmsClient(KEY, endpoint=url, max_connections=32) as client:

            async def worker() -> None:
                for index in numbers:
                    if deadline and time.monotonic() > deadline:
                        return
                    try:
                        await client.send(str(85200000000 + index), TEXT)
                        name = "ok"
                    except SmsApiError as exc:
                        name = exc.code or type(exc).__name__
                    outcomes[name] = outcomes.get(name, 0) + 1

            await asyncio.gather(*(worker() for _ in range(32)))
        return {"outcomes": outcomes, "elapsed": time.perf_counter() - started, "cpu": time.process_time()}

    say(json.dumps(run_loop(main(), "uvloop")))


def emulator_phase(calls: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with emulator() as server:
        run_loop(send_calls(server.url, 200, 32, None), "uvloop")
        server.reset()
        server0, started = server.cpu(), time.perf_counter()
        loaders = [load_process(server.url, calls, i * calls, 0) for i in range(2)]
        reports = [json.loads(p.communicate()[0]) for p in loaders]
        elapsed = time.perf_counter() - started
        served = sum(sum(r["outcomes"].values()) for r in reports)
        result["unlimited"] = {
            "calls": served,
            "outcomes": [r["outcomes"] for r in reports],
            "calls_per_s": round(served / max(r["elapsed"] for r in reports), 1),
            "emulator_cpu_ms_per_call": round((server.cpu() - server0) / served * 1000, 3),
            "wall_s_incl_process_start": round(elapsed, 2),
            "load": load(),
        }
        say(f"  unlimited: {result['unlimited']}")
    with emulator(single_rate=2000) as server:
        run_loop(send_calls(server.url, 50, 8, None), "uvloop")
        time.sleep(1.1)
        server.reset()
        loaders = [load_process(server.url, 10**6, i * 10**6, 4.0) for i in range(2)]
        reports = [json.loads(p.communicate()[0]) for p in loaders]
        requests = [r for r in server.journal()["requests"] if r["action"] == "SendMessageToGlobe"]
        admitted = sorted(r["time"] for r in requests if r["code"] == "OK")
        throttled = sum(1 for r in requests if r["code"] == "Throttling.User")
        worst, j = 0, 0
        for i, moment in enumerate(admitted):  # most admitted calls in any rolling second
            while admitted[j] <= moment - 1.0:
                j += 1
            worst = max(worst, i - j + 1)
        span = admitted[-1] - admitted[0] if len(admitted) > 1 else 0
        result["limited_2000"] = {
            "calls": len(requests),
            "admitted": len(admitted),
            "throttled": throttled,
            "admitted_per_s": round(len(admitted) / span, 1) if span else None,
            "offered_per_s": round(len(requests) / max(r["elapsed"] for r in reports), 1),
            "max_admitted_in_rolling_1s": worst,
            "load": load(),
        }
        say(f"  limited: {result['limited_2000']}")
    return result


# --- bookkeeping phase -----------------------------------------------------------------------------------


def bookkeeping_phase(calls: int = 20000) -> dict[str, Any]:
    from alibaba_sms.emulator import EmulatorConfig, EmulatorState, RequestRecord
    from alibaba_sms.emulator.receipts import ReceiptSettings

    def per_call(config: EmulatorConfig) -> float:
        state = EmulatorState(config)
        started = time.perf_counter()
        for i in range(calls):
            rid = state.new_request_id()
            state.use_nonce("testid", f"nonce-{i}")
            state.admit_call("SendMessageToGlobe", "testid")
            number = str(85290000000 + i)
            state.accept_messages(
                "SendMessageToGlobe", rid, [(number, TEXT, 1)], task_id="c-s1", sender=None, message_type=None
            )
            state.record_request(
                RequestRecord(state.now(), "SendMessageToGlobe", "testid", 200, "OK", 1, "c-s1", rid, "v3")
            )
        elapsed = time.perf_counter() - started
        state.close()
        return round(elapsed / calls * 1e6, 1)

    with tempfile.TemporaryDirectory() as folder:
        result = {
            "memory_only_us_per_call": per_call(EmulatorConfig()),
            "journal_file_us_per_call": per_call(EmulatorConfig(journal_path=Path(folder) / "journal.jsonl")),
            "receipts_decided_us_per_call": per_call(EmulatorConfig(receipts=ReceiptSettings(simulate=True))),
            "load": load(),
        }
    say(f"  bookkeeping: {result}")
    return result


# --- reconcile phase -------------------------------------------------------------------------------------


def record_messages(url: str, ledger_url: str, campaign: str, count: int) -> None:
    from globe_sms.ids import task_id
    from globe_sms.ledger import Ledger

    phones = [str(85260000000 + i) for i in range(count)]
    with Ledger(ledger_url) as ledger, SmsClient(KEY, endpoint=url, timeout=60) as client:
        ledger.register(campaign, phones, ["HK"] * count)
        for batch_no, start in enumerate(range(0, count, 1000), 1):
            chunk = phones[start : start + 1000]
            ledger.mark_submitting(campaign, batch_no, chunk)
            result = client.send_batch(chunk, "Hello", task_id=task_id(campaign, batch_no))
            ledger.record_accepted(campaign, batch_no, result.accepted, {}, result.request_id)


def reconcile_phase(messages: int) -> dict[str, Any]:
    from globe_sms.receipts.reconcile import query_pacer, reconcile
    from globe_sms.receipts.store import ReceiptStore

    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder, emulator(single_rate=0, query_rate=300) as server:
        ledger_url = f"sqlite:///{Path(folder) / 'ledger.db'}"
        record_messages(server.url, ledger_url, "bench-async", messages)
        record_messages(server.url, ledger_url, "bench-sync", 1000)
        httpx.post(f"{server.url}/_emulator/faults", json={"latency_seconds": 0.1}, timeout=10)
        for name, campaign, client, workers in (
            ("async client, 64 in flight", "bench-async", AsyncSmsClient(KEY, endpoint=server.url), 64),
            ("sync client, 4 threads (before)", "bench-sync", SmsClient(KEY, endpoint=server.url), 4),
        ):
            time.sleep(1.1)  # an empty QueryMessage window
            client0 = time.process_time()
            with ReceiptStore(ledger_url) as store:
                outcome = reconcile(
                    store,
                    client,
                    campaign_id=campaign,
                    older_than=timedelta(0),
                    pacer=query_pacer(300),
                    workers=workers,
                )
            if isinstance(client, SmsClient):
                client.close()
            result[name] = {
                "candidates": outcome.candidates,
                "queried": outcome.queried,
                "errors": outcome.errors,
                "query_seconds": round(outcome.query_seconds, 2),
                "calls_per_s": round(outcome.queries_per_second, 1),
                "client_cpu_ms_per_call": per_call_ms(time.process_time() - client0, outcome.candidates),
                "load": load(),
            }
            say(f"  {name}: {result[name]}")
        requests = [r for r in server.journal()["requests"] if r["action"] == "QueryMessage"]
        result["throttled_queries"] = sum(1 for r in requests if r["code"] == "Throttling.User")
    fast, slow = result["async client, 64 in flight"], result["sync client, 4 threads (before)"]
    result["ratio_calls_per_s"] = round(fast["calls_per_s"] / slow["calls_per_s"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("phase", nargs="?", default="all")
    parser.add_argument("--calls", type=int, default=6000)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--single-rate", type=float, default=0)
    parser.add_argument("--query-rate", type=float, default=0)
    parser.add_argument("--latency", type=float, default=0)
    parser.add_argument("--url", default="")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=0)
    parser.add_argument("--old-tree", type=Path, default=None, help="compare: an exported older tree")
    args = parser.parse_args()
    if args.phase == "serve":
        serve(args.port, args.single_rate, args.query_rate, args.latency)
        return
    if args.phase == "load":
        blast(args.url, args.calls, args.first, args.seconds)
        return
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load_before": load()}}
    phases = ["client", "emulator", "bookkeeping", "reconcile"] if args.phase == "all" else [args.phase]
    for phase in phases:
        say(f"{phase}:")
        if phase == "client":
            results["client"] = client_phase(args.calls)
        elif phase == "compare":
            if args.old_tree is None:
                parser.error("compare needs --old-tree DIR (git archive <rev> | tar -x -C DIR)")
            results["compare"] = compare_phase(args.calls, args.old_tree.resolve())
        elif phase == "emulator":
            results["emulator"] = emulator_phase(args.calls)
        elif phase == "bookkeeping":
            results["bookkeeping"] = bookkeeping_phase()
        elif phase == "reconcile":
            results["reconcile"] = reconcile_phase(args.messages)
    results["machine"]["load_after"] = load()
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    say(text)


if __name__ == "__main__":
    main()
