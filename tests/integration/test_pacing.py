"""Unit tests for the pacer (injected clock, sleep and acquire), plus one against the real Prefect limit.

The achieved rate of a whole campaign is measured at the gateway by bench/bench_rate.py, not in a timed test.

Here: the part that needs servers or processes; the pure part is in tests/unit/test_pacing.py.
"""

from __future__ import annotations

import pytest

from globe_sms.pacing import ensure_global_limit, prefect_rate_limit

pytestmark = pytest.mark.alone  # measures time: runs with no other test beside it



@pytest.mark.usefixtures("prefect_server")
class TestPrefectLimit:
    def test_missing_limit_is_an_error_not_an_unthrottled_send(self) -> None:
        """strict=True: acquiring a limit that does not exist raises instead of passing silently."""
        from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError

        with pytest.raises(ConcurrencySlotAcquisitionError, match="must be created"):
            prefect_rate_limit("globe-sms-no-such-limit")

    def test_created_limit_is_a_one_slot_leaky_bucket(self) -> None:
        """The flow's bootstrap creates the limit with one slot decaying at the account's rate."""
        from prefect.client.orchestration import get_client

        ensure_global_limit("globe-sms-test-bucket", 2.0)
        ensure_global_limit("globe-sms-test-bucket", 2.0)  # idempotent
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name("globe-sms-test-bucket")
        assert limit.limit == 1 and limit.slot_decay_per_second == 2.0 and limit.active
        prefect_rate_limit("globe-sms-test-bucket")  # and it can be taken
