"""Benchmark: rendering plus segment counting (`tasks.render.render_messages`) on a synthetic campaign.

Usage:
    uv run python bench/bench_render.py [--rows 1000000] [--repeat 5] [--baseline-rows 20000] [--seed 7]

For each scenario it times `render_messages` end to end (compile, render, select, encode, count segments,
split accepted/rejected, culprit report) and, in the same run, a per-row Python baseline (`str.format` plus
`smsutil.split`, the library the tests use as an oracle) on a sample, then prints a markdown table with
rows/s, the ratio, and how often the vectorised segment counts agree with smsutil on the sample.

Goal (issue 5): >= 2M rows/s on 1M rows on the 2-core test machine. The machine is shared and noisy: the
table reports the median and the best of `--repeat` runs, and the load average at the start and end.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import smsutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from globe_sms.template import MessageTemplate  # noqa: E402
from tasks.render import render_messages  # noqa: E402
from tasks.segments import encoding_and_segments  # noqa: E402

FIRST_NAMES = {
    "latin": [
        "Anna",
        "John",
        "Maria",
        "Peter",
        "Sofia",
        "Ahmed",
        "Ravi",
        "Emma",
        "Lucas",
        "Noah",
        "Kim",
        "Ali",
    ],
    "accented": ["Zoë", "Łukasz", "José", "Nguyễn", "Çelik", "François", "Søren", "Müller", "Renée"],
    "cjk": ["陳大文", "李小明", "王美玲", "張偉", "黃志強", "林嘉欣", "佐藤", "김민준"],
    "cyrillic": ["Ольга", "Иван", "Дмитрий"],
}
COUNTRIES = [
    "HK",
    "MO",
    "TW",
    "SG",
    "MY",
    "TH",
    "ID",
    "PH",
    "VN",
    "GB",
    "US",
    "DE",
    "FR",
    "AU",
    "IN",
    "JP",
    "KR",
]

SCENARIOS: dict[str, MessageTemplate] = {
    "single template, en, default for null names": MessageTemplate(
        text="Hi {first_name|there}, your code is {code}. Reply STOP to opt out ~",
        on_missing="default",
    ),
    "single template, reject null names": MessageTemplate(
        text="Hi {first_name}, your code is {code}. Reply STOP to opt out ~",
    ),
    "3 templates by language (en/zh/fr)": MessageTemplate(
        text={
            "en": "Hi {first_name|there}, your code is {code}. Reply STOP to opt out.",
            "zh": "{first_name|你好}，你的驗證碼是 {code}，請於十分鐘內使用。回覆 STOP 取消訂閱。",
            "fr": "Bonjour {first_name|à vous}, votre code est {code}. STOP pour vous désabonner.",
        },
        select_by="language",
        fallback="en",
        on_missing="default",
    ),
    "Traditional Chinese (all UCS-2)": MessageTemplate(
        text="{first_name|你好}，你的驗證碼是 {code}，請於十分鐘內使用。回覆 STOP 取消訂閱。",
        on_missing="default",
    ),
    "smart replace, 2 segments": MessageTemplate(
        text=(
            "Hi {first_name|there} – it’s your week! Use code {code} for 20% off everything in store and "
            "online… "
            "Offer ends Sunday; see “terms” at example.com/t. Reply STOP to opt out."
        ),
        on_missing="default",
        smart_replace=True,
    ),
}


def synthetic_recipients(rows: int, seed: int) -> pl.DataFrame:
    """Recipients: 5% null first names, 70% Latin, 12% accented, 10% CJK, 3% Cyrillic; 6-digit codes."""
    rng = random.Random(seed)
    pools = [FIRST_NAMES["latin"]] * 70 + [FIRST_NAMES["accented"]] * 12 + [FIRST_NAMES["cjk"]] * 10
    pools += [FIRST_NAMES["cyrillic"]] * 3
    names = [None if rng.random() < 0.05 else rng.choice(rng.choice(pools)) for _ in range(rows)]
    return pl.DataFrame(
        {
            "source_row": range(1, rows + 1),
            "phone": [f"852{rng.randrange(50_000_000, 99_999_999)}" for _ in range(rows)],
            "country": [rng.choice(COUNTRIES) for _ in range(rows)],
            "first_name": names,
            "code": [f"{rng.randrange(1_000_000):06d}" for _ in range(rows)],
            "language": [rng.choice(["en", "en", "zh", "fr"]) for _ in range(rows)],
        },
        schema={
            "source_row": pl.Int64,
            "phone": pl.String,
            "country": pl.String,
            "first_name": pl.String,
            "code": pl.String,
            "language": pl.String,
        },
    )


def python_baseline(frame: pl.DataFrame, template: MessageTemplate) -> list[tuple[str, int] | None]:
    """Per-row Python: pick the template, fill placeholders with str.format, count with smsutil."""
    import re

    texts = template.text if isinstance(template.text, dict) else {"": template.text}
    compiled: dict[str, tuple[str, dict[str, str]]] = {}
    for key, text in texts.items():
        defaults = dict(re.findall(r"\{(\w+)\|([^}]*)\}", text))
        compiled[key] = (re.sub(r"\{(\w+)\|[^}]*\}", r"{\1}", text), defaults)
    out: list[tuple[str, int] | None] = []
    for row in frame.iter_rows(named=True):
        key = row[template.select_by] if template.select_by else ""
        if key not in compiled:
            key = template.fallback or ""
        fmt, defaults = compiled[key]
        values = {}
        for name, value in row.items():
            value = value.strip() if isinstance(value, str) else value
            if not value and template.on_missing == "default":
                value = defaults.get(name, value)
            values[name] = value
        if any(values.get(name) in (None, "") for name in re.findall(r"\{(\w+)\}", fmt)):
            out.append(None)
            continue
        message = fmt.format_map(values)
        if template.smart_replace:
            from tasks.segments import smart_replace_text

            message = smart_replace_text(message)
        split = smsutil.split(message)
        out.append(("GSM7" if split.encoding == "gsm0338" else "UCS2", len(split.parts)))
    return out


@dataclass
class Timing:
    median: float  # wall-clock seconds
    best: float
    cpu: float  # median process CPU seconds (both cores): what the work costs, whatever else runs


def timed(function: Callable[[], object], repeat: int) -> Timing:
    runs, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        runs.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return Timing(statistics.median(runs), min(runs), statistics.median(cpu))


def emit(line: str = "") -> None:
    print(line)  # noqa: T201 - a benchmark script reports on stdout


def load() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline-rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    emit(
        f"# render benchmark: {args.rows:,} rows, median/best of {args.repeat}; "
        f"python {platform.python_version()}, polars {pl.__version__}, {os.cpu_count()} CPUs, "
        f"polars threads {pl.thread_pool_size()}; load average at start {load()}"
    )
    frame = synthetic_recipients(args.rows, args.seed)
    sample = frame.head(args.baseline_rows)
    emit()
    emit(
        "| scenario | accepted | UCS-2 | segments | wall s (median) | CPU s | rows/s (median) "
        "| rows/s (best) | Python baseline rows/s | ratio (median) | agrees with smsutil |"
    )
    emit("|---|---|---|---|---|---|---|---|---|---|---|")

    for name, template in SCENARIOS.items():
        render_messages(frame.head(1000), template)  # warm-up: regex compilation, imports
        timing = timed(functools.partial(render_messages, frame, template), args.repeat)
        result = render_messages(frame, template)
        messages = result.messages
        ucs2 = messages.filter(pl.col("encoding") == "UCS2").height / max(messages.height, 1)

        start = time.perf_counter()
        expected = python_baseline(sample, template)
        baseline_rate = len(expected) / (time.perf_counter() - start)

        got = render_messages(sample, template).messages
        by_row = dict(zip(got["source_row"], zip(got["encoding"], got["segments"], strict=True), strict=True))
        agree = sum(by_row.get(row) == want for row, want in zip(sample["source_row"], expected, strict=True))

        rate, best = args.rows / timing.median, args.rows / timing.best
        emit(
            f"| {name} | {messages.height:,} | {ucs2:.0%} | {int(messages['segments'].sum()):,} "
            f"| {timing.median:.3f} | {timing.cpu:.3f} | {rate / 1e6:.2f} M | {best / 1e6:.2f} M "
            f"| {baseline_rate / 1e3:.0f} k "
            f"| {rate / baseline_rate:.0f}x | {agree:,}/{len(expected):,} |"
        )

    messages = render_messages(frame, next(iter(SCENARIOS.values()))).messages.select("message")
    scan = timed(lambda: encoding_and_segments(messages.lazy(), "message").collect(), args.repeat)
    emit()
    emit(
        f"`encoding_and_segments` alone, scanning {messages.height:,} rendered messages: median "
        f"{scan.median:.3f} s ({messages.height / scan.median / 1e6:.2f} M rows/s)."
    )
    emit(f"Load average at end: {load()}")


if __name__ == "__main__":
    main()
