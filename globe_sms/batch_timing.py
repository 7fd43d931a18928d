"""How long one batch may take: its call's timeouts and the retries of a transient failure.

One model read by everyone who needs these numbers, so that none keeps a copy: the send task's Prefect
retries (`tasks.send.send_batch_with_retries`), the gateway's HTTP client (`globe_sms.gateway`) and the check
that a run's lease outlasts the longest wait between two batch attempts
(`GatewaySettings.longest_lease_gap_seconds`). A campaign sets `gateway.max_attempts` and
`gateway.read_timeout_seconds` (`GatewaySettings.batch_timing` passes them on); the rest are fixed here (they
are not campaign settings: the UI form does not show them).

Retry delays grow exponentially, `retry_backoff_seconds * retry_backoff_factor ** n` before retry n + 1
(2, 4, 8 ... s by default), each stretched by Prefect's jitter up to `1 + retry_jitter` times.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BatchTiming"]


class BatchTiming(BaseModel):
    """The timeouts of one BatchSendMessageToGlobe call and the retries of a batch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(ge=1, description="Attempts per batch on transient errors.")
    read_timeout_seconds: float = Field(gt=0, description="Read timeout of one call.")
    connect_timeout_seconds: float = Field(default=5.0, gt=0, description="Connect timeout of one call.")
    retry_backoff_seconds: float = Field(default=2.0, ge=0, description="Delay before the first retry.")
    retry_backoff_factor: float = Field(
        default=2.0, ge=1, description="Each next delay is this many times longer."
    )
    retry_jitter: float = Field(
        default=0.2, ge=0, description="Prefect's retry jitter: a delay may grow up to (1 + this) times."
    )

    @property
    def retries(self) -> int:
        """Retries after the first attempt."""
        return self.max_attempts - 1

    def retry_delays(self) -> list[float]:
        """The delay before each retry, one per retry (Prefect's `retry_delay_seconds`), before jitter."""
        return [self.retry_backoff_seconds * self.retry_backoff_factor**n for n in range(self.retries)]

    @property
    def longest_retry_delay_seconds(self) -> float:
        """The longest a retry can wait, jitter included (0 without retries)."""
        return max(self.retry_delays(), default=0.0) * (1 + self.retry_jitter)

    @property
    def longest_call_seconds(self) -> float:
        """The longest one call can take before it times out: connecting, then waiting for the answer."""
        return self.connect_timeout_seconds + self.read_timeout_seconds
