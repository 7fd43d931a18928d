"""One source for a batch's timings: the send task's retries, the client's timeouts and the lease check.

`globe_sms.batch_timing.BatchTiming` holds them; the send task's Prefect retries (`send_batch_with_retries`),
the client `open_gateway` builds and `GatewaySettings.longest_lease_gap_seconds` all read it, so a campaign's
`max_attempts` or `read_timeout_seconds` changes each of them alike.

Here: the part that needs servers or processes; the pure part is in tests/unit/test_batch_timing.py.
"""

from __future__ import annotations

import httpx

from globe_sms.campaign import GatewaySettings
from globe_sms.gateway import open_gateway


def test_the_gateway_client_times_out_as_the_lease_check_assumes() -> None:
    """The client `open_gateway` builds has the read timeout of the settings and BatchTiming's connect
    timeout: the same numbers the lease check adds up."""
    settings = GatewaySettings(read_timeout_seconds=7.5)
    timing = settings.batch_timing
    with open_gateway(settings, use_prefect_limit=False) as gateway:
        timeout = gateway.client.timeout
    assert timeout == httpx.Timeout(7.5, connect=timing.connect_timeout_seconds)
    assert timeout.connect + timeout.read == timing.longest_call_seconds
