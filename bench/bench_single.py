"""Benchmark: the single lane (SendMessageToGlobe) and both lanes together, end to end, against the emulator.

One real Prefect server (the test harness), the emulator in a process of its own (`globe-sms emulator`, at
its default 2,000 SendMessageToGlobe calls per rolling second and 1 BatchSendMessageToGlobe call per second),
a SQLite ledger on disk. Two campaigns:

1. `send_via: single`, 20,000 recipients (target: >= 1,800 recipients/s);
2. `send_via: both`, 30,000 recipients (target: >= 2,500 recipients/s; the batch-only ceiling is 1,000/s).

Recipients per second are accepted recipients over the lanes' sending time (from the moment the lanes are
open to the last chunk or batch committed to the ledger: flow start-up, loading, validation and planning
excluded; the ledger's writes included). At the gateway (the emulator's journal): throttled calls, duplicate
numbers, the most SendMessageToGlobe calls in any rolling second. Client CPU per call: this process's CPU
time over the sending time (the flow, the ledger, the lanes; the emulator and the Prefect server are other
processes), divided by the calls.

    uv run python bench/bench_single.py [--single 20000] [--both 30000]
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="globe-sms-bench-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import polars as pl  # noqa: E402

BATCH_ONLY_CEILING = 1000.0  # recipients/s: 1 BatchSendMessageToGlobe call/s x 1,000 numbers


def make_recipients(count: int, path: Path) -> None:
    """`count` distinct valid Singapore, Hong Kong and UK mobiles."""
    widths = {"+6591": 6, "+85291": 6, "+447911": 6}
    per = count // len(widths) + 1
    phones = []
    for prefix, width in widths.items():
        phones += [f"{prefix}{i:0{width}d}" for i in range(per)]
    pl.DataFrame({"phone": phones[:count], "first_name": ["Ada"] * count}).write_csv(path)


def per_tenth(times: list[float]) -> dict[str, list[int]]:
    """SendMessageToGlobe calls per 0.1 s at the gateway: the first and the last ten tenths, the span, and
    which tenths saw under half the busiest one's calls (stalls)."""
    if not times:
        return {}
    first = min(times)
    tenths = Counter(int((t - first) * 10) for t in times)
    last = max(tenths)
    series = [tenths.get(i, 0) for i in range(last + 1)]
    return {"first": series[:10], "last": series[-10:], "span_tenths": [len(series)],
            "below_half": [i for i, n in enumerate(series) if n < max(series) / 2]}


@contextlib.contextmanager
def prefect_server(postgres_admin_url: str | None) -> Iterator[None]:
    """The Prefect server the campaigns use: the test harness (SQLite), or `prefect server start` on
    loopback over a throwaway PostgreSQL database (the production setup: no "database is locked" 503s)."""
    if postgres_admin_url is None:
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            yield
        return
    import psycopg
    from prefect.settings import PREFECT_API_URL, temporary_settings

    database = f"globe_sms_bench_prefect_{os.getpid()}"
    host = postgres_admin_url.split("@", 1)[-1].rsplit("/", 1)[0]
    user = postgres_admin_url.split("://", 1)[-1].split("@", 1)[0]
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{database}"')
    api_port = free_port()
    env = {
        **os.environ,
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{user}@{host}/{database}",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    }
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(api_port),
         "--no-ui"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    api = f"http://127.0.0.1:{api_port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the Prefect server did not start") from None
                time.sleep(0.5)
        with temporary_settings({PREFECT_API_URL: api}):
            yield
    finally:
        server.terminate()
        server.wait(30)
        with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_emulator(port: int, priority: int = 0) -> subprocess.Popen:
    """`globe-sms emulator` in a process of its own; `priority` > 0 runs it that much ahead of the others
    (a lower nice value; root only)."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", "from globe_sms.cli import app; app()", "emulator", "--port", str(port)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if priority:
        os.setpriority(os.PRIO_PROCESS, proc.pid, -priority)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_emulator/health", timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the emulator did not start")


def journal(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_emulator/journal", timeout=60) as response:
        return json.loads(response.read())


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def max_in_rolling_second(times: list[float]) -> int:
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + 1.0) - i for i, t in enumerate(ordered)), default=0)


def run(
    send_via: str, count: int, folder: Path, port: int, emulator_pid: int, chunk_size: int | None = None
) -> dict:
    from flows.send_campaign import send_campaign
    from globe_sms.campaign import Campaign

    source = folder / f"{send_via}.csv"
    make_recipients(count, source)
    name = f"bench-{send_via}-{int(time.time())}"
    campaign = Campaign.parse(
        {
            "campaign_id": name,
            "source": {"path": str(source)},
            "template": "Hi {first_name}, the water supply is back at 18:00",
            "sender_id": "GlobeSMS",
            "send_via": send_via,
            "ledger": f"sqlite:///{folder / (name + '.db')}",
            **({"single_chunk_size": chunk_size} if chunk_size else {}),
            "gateway": {
                "endpoint": f"http://127.0.0.1:{port}",
                "rate_limit_name": f"bench-{send_via}",
                # On a loaded machine a batch call's arrival at the emulator jitters by tens of ms (the single
                # lane's calls share its event loop): space batch calls by 50 ms more than a second.
                "pacing_margin_ms": 50.0,
            },
        }
    )
    before = journal(port)
    seen_requests, seen_messages = len(before["requests"]), len(before["messages"])
    cpu = time.process_time()
    emulator_cpu = process_cpu_seconds(emulator_pid)
    started = time.monotonic()
    summary = send_campaign(campaign)
    assert summary.valid == count, f"{count - summary.valid} generated recipients were rejected"
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu
    emulator_cpu = process_cpu_seconds(emulator_pid) - emulator_cpu
    after = journal(port)
    requests = after["requests"][seen_requests:]
    messages = after["messages"][seen_messages:]
    single_calls = [r for r in requests if r.get("action") == "SendMessageToGlobe"]
    throttled = [r for r in requests if str(r.get("code") or "").startswith("Throttling")]
    counts = Counter(m["to"] for m in messages)
    times = [r["time"] for r in single_calls if "time" in r]
    lanes = {lane.lane: lane for lane in summary.lanes}
    sending = summary.sending_seconds
    return {
        "send_via": send_via,
        "recipients": count,
        "accepted": summary.accepted,
        "failed": summary.failed,
        "pending": summary.pending,
        "unknown": summary.unknown,
        "ledger": summary.ledger_counts,
        "error": summary.error,
        "sending_s": round(sending, 2),
        "recipients_per_s": round(summary.accepted / sending, 1) if sending else 0.0,
        "ratio_to_batch_only_ceiling": (
            round(summary.accepted / sending / BATCH_ONLY_CEILING, 3) if sending else 0
        ),
        "flow_s": round(elapsed, 1),
        "lanes": {
            lane: {"recipients": s.recipients, "seconds": round(s.seconds, 2), "calls": s.calls,
                   "throttled": s.throttled, "requeued": s.requeued,
                   "prefect_limit_requests": s.limit_requests, "prefect_limit_grants": s.limit_grants}
            for lane, s in lanes.items()
        },
        "gateway_single_calls": len(single_calls),
        "gateway_batch_calls": sum(1 for r in requests if r.get("action") == "BatchSendMessageToGlobe"),
        "gateway_throttled": len(throttled),
        "gateway_duplicates": sum(1 for n in counts.values() if n > 1),
        "gateway_max_single_calls_in_1s": max_in_rolling_second(times),
        # calls per tenth of a second at the gateway: the first and last second show the ramp and the tail
        "gateway_single_per_tenth": per_tenth(times),
        "client_cpu_ms_per_call": round(1000 * cpu / max(len(single_calls), 1), 3),
        "client_cpu_s": round(cpu, 1),
        "emulator_cpu_s": round(emulator_cpu, 1),
        "emulator_cpu_ms_per_call": round(1000 * emulator_cpu / max(len(requests), 1), 3),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--single", type=int, default=20_000)
    parser.add_argument("--both", type=int, default=30_000)
    parser.add_argument("--chunk-size", type=int, default=None, help="single_chunk_size")
    parser.add_argument(
        "--chunks-in-flight", type=int, default=None, help="tasks.send_lanes.CHUNKS_IN_FLIGHT"
    )
    parser.add_argument(
        "--prefect-postgres",
        default=None,
        metavar="ADMIN_URL",
        help="run `prefect server start` on a throwaway PostgreSQL database (created and dropped through "
        "ADMIN_URL, e.g. postgresql://postgres@127.0.0.1:5432/postgres) instead of the SQLite test harness",
    )
    parser.add_argument(
        "--gateway-priority",
        type=int,
        default=0,
        metavar="N",
        help="run the emulator N nice levels ahead (root only): the real gateway does not share this "
        "machine's cores, and an emulator the scheduler holds back for tens of ms stamps the calls that "
        "queued meanwhile together, which its rolling-second limit then counts as a burst",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "single-lane.json")
    args = parser.parse_args()
    if args.chunks_in_flight:
        import tasks.send_lanes

        tasks.send_lanes.CHUNKS_IN_FLIGHT = args.chunks_in_flight
    os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"] = "testid"
    os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] = "testsecret"

    port = free_port()
    emulator = start_emulator(port, args.gateway_priority)
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp, prefect_server(args.prefect_postgres):
            folder = Path(tmp)
            if args.single:
                results.append(run("single", args.single, folder, port, emulator.pid, args.chunk_size))
                print(json.dumps(results[-1]), flush=True)  # noqa: T201 - a benchmark's output
            if args.both:
                results.append(run("both", args.both, folder, port, emulator.pid, args.chunk_size))
                print(json.dumps(results[-1]), flush=True)  # noqa: T201
    finally:
        emulator.terminate()
        emulator.wait(10)
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
