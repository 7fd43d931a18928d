"""One source for a batch's timings: the send task's retries, the client's timeouts and the lease check.

`globe_sms.batch_timing.BatchTiming` holds them; the send task's Prefect retries (`send_batch_with_retries`),
the client `open_gateway` builds and `GatewaySettings.longest_lease_gap_seconds` all read it, so a campaign's
`max_attempts` or `read_timeout_seconds` changes each of them alike.

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_batch_timing.py.
"""

from __future__ import annotations

import pytest

from globe_sms.batch_timing import BatchTiming
from globe_sms.campaign import GatewaySettings
from tasks.send import send_batch, send_batch_with_retries


def lease_gap_from(task: object, settings: GatewaySettings, connect_seconds: float) -> float:
    """The lease gap computed from what the task and the client really use, not from BatchTiming."""
    delays = task.retry_delay_seconds or [0.0]  # type: ignore[attr-defined]
    backoff = max(delays) * (1 + task.retry_jitter_factor)  # type: ignore[attr-defined]
    return connect_seconds + settings.read_timeout_seconds + backoff + settings.rate_limit_timeout_seconds


@pytest.mark.parametrize("attempts", [1, 2, 4, 6, 10])
def test_the_task_retries_as_the_lease_check_assumes(attempts: int) -> None:
    """With max_attempts=6 the task retries 5 times, one delay per retry (2, 4, 8, 16, 32 s), and the lease
    check's longest back-off is the longest of those delays with the task's jitter."""
    settings = GatewaySettings(max_attempts=attempts)
    task = send_batch_with_retries(settings)
    assert task.retries == attempts - 1
    assert task.retry_delay_seconds == [2.0 * 2**n for n in range(attempts - 1)]
    assert task.retry_jitter_factor == settings.batch_timing.retry_jitter == 0.2
    connect = settings.batch_timing.connect_timeout_seconds
    assert settings.longest_lease_gap_seconds == pytest.approx(lease_gap_from(task, settings, connect))


def test_six_attempts_give_five_delays_the_lease_check_sees() -> None:
    settings = GatewaySettings(max_attempts=6)
    task = send_batch_with_retries(settings)
    assert task.retry_delay_seconds == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert settings.longest_lease_gap_seconds == pytest.approx(5 + 10 + 32 * 1.2 + 300)


def test_the_decorated_task_has_the_default_campaigns_retries() -> None:
    """`send_batch` alone (a caller without settings) retries like a campaign with the defaults."""
    default = send_batch_with_retries(GatewaySettings())
    assert (send_batch.retries, send_batch.retry_delay_seconds, send_batch.retry_jitter_factor) == (
        default.retries,
        default.retry_delay_seconds,
        default.retry_jitter_factor,
    )
    assert send_batch.retries == 3 and send_batch.retry_delay_seconds == [2.0, 4.0, 8.0]


def test_timings_without_retries_have_no_back_off() -> None:
    timing = BatchTiming(max_attempts=1, read_timeout_seconds=10)
    assert timing.retries == 0 and timing.retry_delays() == [] and timing.longest_retry_delay_seconds == 0
    assert GatewaySettings(max_attempts=1).longest_lease_gap_seconds == pytest.approx(5 + 10 + 300)
