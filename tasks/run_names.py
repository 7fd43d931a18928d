"""The names of a campaign's flow runs, and the moment a run is for.

A scheduled campaign id may hold `{date}` (`weekly-news-{date}`): each occurrence is a campaign of its own,
named after the date the run was scheduled for (kept by a UI Retry), not the date it happens to start.
"""

from __future__ import annotations

from datetime import datetime

from globe_sms.campaign import Campaign


def scheduled_start() -> datetime:
    """The flow run's scheduled start (kept by UI retries), or now outside a run."""
    from prefect.runtime import flow_run

    return datetime.fromisoformat(flow_run.scheduled_start_time.isoformat())


def campaign_run_name() -> str:
    """The flow run's name: the campaign id, with `{date}` resolved (see `Campaign.for_run`)."""
    from prefect.runtime import flow_run

    campaign = flow_run.parameters.get("campaign")
    if isinstance(campaign, Campaign):
        campaign_id = campaign.campaign_id
    else:
        campaign_id = dict(campaign or {}).get("campaign_id")
    try:
        return Campaign.model_construct(campaign_id=str(campaign_id)).for_run(scheduled_start()).campaign_id
    except ValueError:
        return str(campaign_id)
