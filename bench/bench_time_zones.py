"""Benchmark: the quiet-hours path (zones of every number, then the window check) on 1M valid numbers.

Usage:
    uv run python bench/bench_time_zones.py [--rows 1000000] [--runs 5] [--baseline REV]

Times `tasks.time_zones.with_time_zones` and `tasks.deferral.WindowCheck.sendable` (zones, schedules, the
split into sendable and deferred) on two lists of valid E.164 numbers, against the `tasks/time_zones.py` of
git revision `--baseline` loaded in the same process, runs interleaved so both see the same machine load:

- `mix`: the valid rows of `bench_validate.py`'s 54-region list (the one its figures are about);
- `multi_zone`: only mobiles of calling codes whose mobiles span several zones (+1, +7, +61, +55, +52, +64,
  +34), so every row needs its number type: the worst case for the type check.

Figures go to `bench/README-time-zones.md`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from datetime import time as clock_time
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import phonenumbers  # noqa: E402
import polars as pl  # noqa: E402

import tasks.deferral as deferral  # noqa: E402
from bench.bench_validate import generate  # noqa: E402
from globe_sms.send_window import SendWindow  # noqa: E402
from globe_sms.validation_rules import ValidationRules  # noqa: E402
from tasks import time_zones  # noqa: E402
from tasks.validate import validate_recipients  # noqa: E402

MULTI_ZONE = ("US", "CA", "RU", "KZ", "AU", "BR", "MX", "NZ", "ES")
WINDOW = SendWindow(start=clock_time(9), end=clock_time(20))
MOMENT = datetime(2026, 6, 14, 23, 30, tzinfo=UTC)  # 09:30 in Sydney, 07:30 in Perth


def _baseline(revision: str) -> ModuleType:
    """`tasks/time_zones.py` as it was at `revision`, as a module of its own."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "show", f"{revision}:tasks/time_zones.py"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(source)
    spec = importlib.util.spec_from_file_location("baseline_time_zones", handle.name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _valid_mix(rows: int) -> pl.Series:
    frame = generate(rows)
    return validate_recipients(frame, "phone", ValidationRules()).valid.get_column("phone")


def _multi_zone(rows: int) -> pl.Series:
    """Mobiles of multi-zone calling codes: example numbers with random last six digits, kept when valid."""
    examples = []
    for region in MULTI_ZONE:
        number = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        assert number is not None
        examples.append(f"{number.country_code}{phonenumbers.national_significant_number(number)}")
    i = pl.int_range(0, rows, dtype=pl.Int64, eager=True)
    base = pl.Series(examples).gather(i % len(examples))
    tail = (i.hash(11) % 1_000_000).cast(pl.String).str.zfill(6)
    phones = base.str.slice(0, base.str.len_chars() - 6) + tail
    return validate_recipients(pl.DataFrame({"phone": "+" + phones}), "phone", ValidationRules()).valid[
        "phone"
    ]


def _sendable(zones: ModuleType, frame: pl.DataFrame) -> int:
    deferral.with_time_zones = zones.with_time_zones  # type: ignore[attr-defined]
    return (
        deferral.WindowCheck(WINDOW, MOMENT, batch_size=1000, calls_per_second=100.0).sendable(frame).height
    )


def _timed(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def run(phones: pl.Series, runs: int, baseline: ModuleType) -> dict[str, object]:
    """Time old and new, interleaved, `runs` times each, on one list."""
    frame = pl.DataFrame({"phone": phones})
    cases: dict[str, Callable[[], object]] = {
        "zones_before": lambda: baseline.with_time_zones(frame),
        "zones_after": lambda: time_zones.with_time_zones(frame),
        "window_check_before": lambda: _sendable(baseline, frame),
        "window_check_after": lambda: _sendable(time_zones, frame),
    }
    for step in cases.values():  # tables and regexes built outside the timing
        step()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, step in cases.items():
            times[name].append(_timed(step))
    medians = {name: statistics.median(values) for name, values in times.items()}
    sent = {"before": _sendable(baseline, frame), "after": _sendable(time_zones, frame)}
    return {
        "rows": frame.height,
        "median_s": {name: round(value, 3) for name, value in medians.items()},
        "ratio_after_over_before": {
            "zones": round(medians["zones_after"] / medians["zones_before"], 2),
            "window_check": round(medians["window_check_after"] / medians["window_check_before"], 2),
        },
        "sendable_at_sydney_0930": sent,
        "runs_s": {name: [round(t, 3) for t in values] for name, values in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", default="cf01be9", help="git revision of the code to compare with")
    args = parser.parse_args()
    baseline = _baseline(args.baseline)
    load_before = os.getloadavg()[0]
    report = {
        "baseline": args.baseline,
        "mix": run(_valid_mix(args.rows), args.runs, baseline),
        "multi_zone": run(_multi_zone(args.rows), args.runs, baseline),
        "polars": pl.__version__,
        "phonenumbers": phonenumbers.__version__,
        "cpus": os.cpu_count(),
        "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(report, indent=2))  # noqa: T201 - a benchmark script reports on stdout


if __name__ == "__main__":
    main()
