"""Upcoming scheduled runs named after their campaign (`weekly-news-2026-05-04`), not `quixotic-jerboa`.

Prefect's scheduler creates a deployment's upcoming runs with random names, and a flow's `flow_run_name` only
names a run when it starts: Prefect has no public name template for scheduled runs (a schedule carries
`parameters`, `slug` and `active`, no name). So globe-sms renames them through Prefect's public client
(`update_flow_run(name=...)`): each campaign's id with `{date}` resolved from the run's scheduled start, the
same name the flow gives the run when it starts (`Campaign.for_run`). This runs

* in `globe-sms deploy`, right after `prefect deploy` (the scheduler's first runs), and
* at the start of every run of a deployment, for its sibling runs the scheduler added since.

Renaming is cosmetic: a failure is logged and never stops a deploy or a run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from globe_sms.campaign import resolve_campaign_id


def campaign_run_name(parameters: Mapping[str, Any], scheduled: datetime | None) -> str | None:
    """The name of a run with these parameters, scheduled at `scheduled`; None without a campaign id."""
    campaign = parameters.get("campaign")
    campaign_id = campaign.get("campaign_id") if isinstance(campaign, Mapping) else None
    if not isinstance(campaign_id, str) or not campaign_id:
        return None
    if scheduled is None:
        return campaign_id
    try:
        return resolve_campaign_id(campaign_id, scheduled)
    except ValueError:  # the flow refuses it when the run starts; its name can stay as it is
        return None


def name_scheduled_runs(client: Any, deployment_ids: Iterable[UUID], limit: int = 200) -> int:
    """Rename the SCHEDULED runs of these deployments after their campaign; how many were renamed.

    `client` is a sync `PrefectClient` (`get_client(sync_client=True)`).
    """
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    ids = list(deployment_ids)
    if not ids:
        return 0
    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=ids)),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
        ),
        limit=limit,
    )
    renamed = 0
    for run in runs:
        scheduled = run.expected_start_time or run.next_scheduled_start_time
        name = campaign_run_name(run.parameters or {}, scheduled)
        if name and name != run.name:
            client.update_flow_run(run.id, name=name)
            renamed += 1
    return renamed


def name_this_deployments_runs() -> int:
    """From inside a flow run of a deployment: rename its deployment's scheduled runs; never raises."""
    from prefect.client.orchestration import get_client
    from prefect.logging import get_logger
    from prefect.runtime import deployment

    if not deployment.id:
        return 0
    try:
        with get_client(sync_client=True) as client:
            return name_scheduled_runs(client, [UUID(str(deployment.id))])
    except Exception as exc:  # noqa: BLE001 - names are cosmetic; the campaign must go on
        get_logger("globe_sms.scheduled_names").warning("could not name the scheduled runs: %s", exc)
        return 0
