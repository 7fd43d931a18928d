"""One chaos scenario: its seed, its recipients, its fault rates and kills, and the campaign it sends."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

import phonenumbers

from alibaba_sms.emulator import FaultConfig
from globe_sms.campaign import Campaign

# Singapore, Hong Kong and UK mobiles; only those phonenumbers calls valid mobiles are kept.
_PREFIXES = (("+659", 7), ("+8529", 7), ("+447", 9))
_MOBILE_TYPES = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
# Rows validation must reject: they must never reach the gateway.
INVALID_ROWS = ("+8613800138000", "hello", "", "4.47911E+11")
# A business fault the campaign reopens on its next run (a top-up), and one that stays failed for good.
REOPENED_CODE = "AMOUNT_NOT_ENOUGH"
FINAL_CODE = "INVALID_PARAMETERS"


@dataclass(frozen=True)
class ChaosSpec:
    """A scenario; every random choice of the driver derives from `seed`.

    Attributes:
        seed: seeds the recipients, the emulator's faults and the kill points.
        recipients: valid recipients (a few invalid rows and a repeat are added).
        batch_size: numbers per call; small, so that a campaign has many batches to be killed between.
        rate: calls per second, at the gateway and in the campaign (the Prefect limit and the pacer).
        kills: SIGKILLs to deliver, one per child run, before runs are left to finish.
        kill_kinds: the kinds of kill point to draw from (see `tests.chaos.driver`).
        error_500_rate, throttle_rate, drop_rate: the emulator's random faults per batch call.
        latency_seconds, latency_jitter_seconds: added to every call.
        business_fault_rate: chance, per child run, of one scripted business error (half reopened on the
            next run, half final).
        slow_accept_rate: chance, per child run, of one scripted `timeout_after_accept` longer than the
            read timeout (accepted, but the client times out: unknown).
        read_timeout_seconds: the campaign's read timeout.
        max_runs: child runs before the driver gives up (the check then reports lost recipients).
        send_via: the campaign's lane(s): `batch`, `single` (SendMessageToGlobe; the emulator's random
            faults then hit single calls too) or `both`.
        single_chunk_size: recipients per single-lane chunk.
        single_rate: SendMessageToGlobe calls per second, at the gateway and in the campaign.
    """

    seed: int
    recipients: int = 40
    batch_size: int = 5
    rate: float = 25.0
    kills: int = 2
    kill_kinds: tuple[str, ...] = ("early", "after_calls", "in_flight")
    error_500_rate: float = 0.04
    throttle_rate: float = 0.04
    drop_rate: float = 0.04
    latency_seconds: float = 0.002
    latency_jitter_seconds: float = 0.02
    business_fault_rate: float = 0.25
    slow_accept_rate: float = 0.25
    read_timeout_seconds: float = 1.0
    max_runs: int = 14
    send_via: str = "batch"
    single_chunk_size: int = 5
    single_rate: float = 200.0

    @property
    def campaign_id(self) -> str:
        return f"chaos-{self.seed}" if self.send_via == "batch" else f"chaos-{self.send_via}-{self.seed}"

    def faults(self) -> FaultConfig:
        """The emulator's random fault configuration."""
        return FaultConfig(
            error_500_rate=self.error_500_rate,
            spurious_throttle_rate=self.throttle_rate,
            drop_after_accept_rate=self.drop_rate,
            latency_seconds=self.latency_seconds,
            latency_jitter_seconds=self.latency_jitter_seconds,
            single_calls=self.send_via != "batch",
        )


def valid_numbers(count: int, seed: int) -> list[str]:
    """`count` distinct valid mobiles in E.164 with `+`, drawn under `seed`."""
    rng = random.Random(f"numbers:{seed}")
    numbers: set[str] = set()
    ordered: list[str] = []
    while len(ordered) < count:
        prefix, width = rng.choice(_PREFIXES)
        number = f"{prefix}{rng.randrange(10**width):0{width}d}"
        parsed = phonenumbers.parse(number)
        mobile = phonenumbers.number_type(parsed) in _MOBILE_TYPES
        if mobile and phonenumbers.is_valid_number(parsed) and number not in numbers:
            numbers.add(number)
            ordered.append(number)
    return ordered


def write_recipients(path: Path, spec: ChaosSpec) -> set[str]:
    """Write the scenario's CSV; return the valid numbers as the ledger keys them (digits, no `+`)."""
    valid = valid_numbers(spec.recipients, spec.seed)
    rows = [*valid, *INVALID_ROWS, valid[0]]  # the repeat is rejected as a duplicate
    random.Random(f"order:{spec.seed}").shuffle(rows)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "first_name"])
        for i, number in enumerate(rows):
            writer.writerow([number, f"Name{i}"])
    return {number.lstrip("+") for number in valid}


def make_campaign(spec: ChaosSpec, source: Path, ledger_url: str, endpoint: str, limit_name: str) -> Campaign:
    """The campaign every child of the scenario runs (the same one each time, as a rerun would)."""
    return Campaign.parse(
        {
            "campaign_id": spec.campaign_id,
            "source": {"path": str(source)},
            "template": "Hi {first_name}, welcome to Globe!",
            "sender_id": "GlobeSMS",
            "batch_size": spec.batch_size,
            "send_via": spec.send_via,
            "single_chunk_size": spec.single_chunk_size,
            "ledger": ledger_url,
            "validation": {"max_reject_share": 0.5},
            "retry_failed_codes": [REOPENED_CODE],
            "gateway": {
                "endpoint": endpoint,
                "calls_per_second": spec.rate,
                # The emulator's jitter comes before its flow-control check: space calls by more than it.
                "pacing_margin_ms": 5 + 1000 * spec.latency_jitter_seconds,
                "rate_limit_name": limit_name,
                "read_timeout_seconds": spec.read_timeout_seconds,
                "max_attempts": 4,
                "rate_limit_timeout_seconds": 60,
                "single_calls_per_second": spec.single_rate,
                "single_concurrency": 20,
            },
        }
    )
