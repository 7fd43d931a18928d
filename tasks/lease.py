"""A campaign's run lease, held by the flow run that sends it.

One run at a time sends a campaign: `send_campaign`, `resend_campaign` and `retry_failed_deliveries` hold the
campaign's run lease in the ledger (`Ledger.run_lease_held`) from before they read anything until they end, so
a second run of the same campaign stops at once with `CampaignBusy`. The holder is the flow run (a UI Retry
keeps the flow run's id, so it gets its own lease back); outside a flow run, this process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from globe_sms.campaign import Campaign
from globe_sms.ledger import Ledger, RunOwner


def run_owner() -> RunOwner:
    """This flow run as the holder of a campaign's run lease (a UI Retry keeps its id, so gets it back)."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    label = f"flow run {flow_run.name!r} ({run_id}) of {flow_run.flow_name}" if run_id else None
    return RunOwner.this_process(run_id, label)


@contextmanager
def campaign_lease(ledger: Ledger, campaign: Campaign) -> Iterator[None]:
    """Hold the campaign's run lease for the block; a dry run changes no ledger row and needs none.

    Raises:
        CampaignBusy: another run of the campaign holds it; nothing was read, sent or changed.
    """
    if campaign.dry_run:
        yield
        return
    with ledger.run_lease_held(campaign.campaign_id, run_owner(), campaign.gateway.run_lease_seconds):
        yield
