"""Benchmark: how close to the account's rate does a campaign send, measured at the gateway?

Three runs in one process, against one real Prefect server (the test harness) and the emulator on loopback:

1. baseline: Prefect's `rate_limit(strict=True)` alone before each call (no client pacing);
2. globe-sms: a 60,000-recipient campaign (60 batches of 1,000) at one call per second;
3. limit lifted: the same pipeline with no account limit (no Prefect limit, no pacing, unlimited emulator),
   for end-to-end recipients per second.

For each run it reports the achieved fraction of the allowed rate ((calls - 1) / span between the first and
last call, divided by the rate) and the most calls the gateway saw in any rolling second.

    uv run python bench/bench_rate.py [--recipients 60000] [--baseline-calls 20]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="globe-sms-bench-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import polars as pl  # noqa: E402


def max_calls_in_rolling_second(times: list[float]) -> int:
    """The most calls inside any half-open window [t, t + 1 s)."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + 1.0) - i for i, t in enumerate(ordered)), default=0)


def rate_fraction(times: list[float], rate: float) -> float:
    if len(times) < 2:
        return 0.0
    span = max(times) - min(times)
    return (len(times) - 1) / span / rate


def make_recipients(count: int, path: Path) -> None:
    """`count` distinct valid-looking Singapore, Hong Kong and UK mobiles (cheap to make, valid E.164)."""
    widths = {"+6591": 6, "+85291": 6, "+447911": 6}  # the digits after each prefix
    per = count // len(widths) + 1
    phones = []
    for prefix, width in widths.items():
        phones += [f"{prefix}{i:0{width}d}" for i in range(per)]
    frame = pl.DataFrame({"phone": phones[:count], "first_name": ["Ada"] * count, "code": ["123456"] * count})
    frame.write_csv(path)


def run_campaign(
    recipients: Path,
    ledger_dir: Path,
    rate: float,
    emulator_rate: float | None,
    name: str,
    *,
    lift_limit: bool = False,
) -> dict:
    from alibaba_sms.emulator import EmulatorConfig, EmulatorServer
    from flows.send_campaign import send_campaign
    from globe_sms import pacing
    from globe_sms.campaign import Campaign

    with EmulatorServer(EmulatorConfig(batch_calls_per_second=emulator_rate)) as emulator:
        os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"] = "testid"
        os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] = "testsecret"
        campaign = Campaign.parse(
            {
                "campaign_id": name,
                "source": {"path": str(recipients)},
                "template": "Hi {first_name}, your code is {code}",
                "sender_id": "GlobeSMS",
                "batch_size": 1000,
                "ledger": f"sqlite:///{ledger_dir / (name + '.db')}",
                "gateway": {
                    "endpoint": emulator.url,
                    "calls_per_second": rate,
                    "rate_limit_name": f"bench-{name}",
                },
            }
        )
        if lift_limit:
            # No account limit at all: neither Prefect's limit nor client pacing, to see the pipeline's
            # own pace.
            pacer = pacing.shared_pacer(
                rate, limit_name=campaign.gateway.rate_limit_name, margin_seconds=0.005
            )
            pacer._acquire = lambda name: None
            pacer._injected_acquire = True  # the pacer still runs the write-ahead before "asking"
            pacer.interval = 0.0
        started = time.monotonic()
        summary = send_campaign(campaign)
        elapsed = time.monotonic() - started
        times = emulator.state.batch_call_times()
    return {
        "run": name,
        "calls": len(times),
        "accepted": summary.accepted,
        "rate_fraction": round(rate_fraction(times, rate), 4),
        "max_calls_in_1s": max_calls_in_rolling_second(times),
        "elapsed_s": round(elapsed, 1),
        "recipients_per_s": round(summary.accepted / elapsed, 1),
    }


def run_baseline(calls: int) -> dict:
    """Prefect's rate_limit alone: acquire, then send a one-number batch, `calls` times."""
    from alibaba_sms import AccessKey, SmsClient
    from alibaba_sms.emulator import EmulatorConfig, EmulatorServer
    from globe_sms.pacing import ensure_global_limit, prefect_rate_limit

    ensure_global_limit("bench-baseline", 1.0)
    with EmulatorServer(EmulatorConfig()) as emulator, SmsClient(
        AccessKey.of("testid", "testsecret"), endpoint=emulator.url
    ) as client:
        for i in range(calls):
            prefect_rate_limit("bench-baseline")
            client.send_batch([f"6591{i:06d}"], "baseline")
        times = emulator.state.batch_call_times()
    return {
        "run": "baseline: prefect rate_limit alone",
        "calls": len(times),
        "rate_fraction": round(rate_fraction(times, 1.0), 4),
        "max_calls_in_1s": max_calls_in_rolling_second(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipients", type=int, default=60_000)
    parser.add_argument("--baseline-calls", type=int, default=20)
    parser.add_argument("--unlimited-recipients", type=int, default=60_000)
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    results = []
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=90):
        folder = Path(tmp)
        source = folder / "recipients.csv"
        make_recipients(args.recipients, source)
        results.append(run_baseline(args.baseline_calls))
        results.append(run_campaign(source, folder, 1.0, 1.0, "paced-1-per-s"))
        unlimited = folder / "unlimited.csv"
        make_recipients(args.unlimited_recipients, unlimited)
        results.append(run_campaign(unlimited, folder, 50.0, None, "limit-lifted", lift_limit=True))
    for row in results:
        print(json.dumps(row))  # noqa: T201 - a benchmark's output
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "rate.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
