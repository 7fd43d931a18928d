"""The reconciliation stages: settle overdue messages through QueryMessage, and publish the delivery report.

Thin `@task` wrappers over `globe_sms.receipts.reconcile` and `globe_sms.receipts.report`; the client comes
from the gateway module (`globe_sms.gateway.query_client`: the asyncio client, `workers` queries in flight),
with the same timeouts as sending.
"""

from __future__ import annotations

from datetime import timedelta

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from globe_sms.campaign import GatewaySettings
from globe_sms.gateway import query_client
from globe_sms.ledger import LedgerLocation
from globe_sms.receipts.reconcile import ReconcileResult, query_pacer, reconcile
from globe_sms.receipts.report import DeliveryReport, build_report
from globe_sms.receipts.store import ReceiptStore


@task(name="query-unsettled-messages", cache_policy=NO_CACHE)
def query_unsettled_messages(
    ledger: LedgerLocation,
    gateway: GatewaySettings,
    campaign_id: str | None,
    older_than_minutes: float,
    unknown_after_hours: float,
    queries_per_second: float,
    workers: int,
    limit: int | None,
) -> ReconcileResult:
    """Ask QueryMessage about every overdue message and store the answers (see `reconcile`).

    Raises:
        ValueError: the gateway is the embedded emulator, which cannot be queried after its run.
    """
    client = query_client(gateway, max_connections=max(1, workers))  # opened, and closed, by `reconcile`
    with ReceiptStore(ledger) as store:
        return reconcile(
            store,
            client,
            campaign_id=campaign_id,
            older_than=timedelta(minutes=older_than_minutes),
            unknown_after=timedelta(hours=unknown_after_hours),
            pacer=query_pacer(queries_per_second),
            workers=workers,
            limit=limit,
        )


@task(name="publish-delivery-report", cache_policy=NO_CACHE)
def publish_delivery_report(ledger: LedgerLocation, campaign_id: str) -> DeliveryReport:
    """Build the campaign's delivery report and publish it as markdown and table artifacts."""
    with ReceiptStore(ledger) as store:
        report = build_report(store, campaign_id)
    create_markdown_artifact(
        report.to_markdown(),
        key=f"{campaign_id}-delivery",
        description="Delivery outcomes (numbers never shown)",
    )
    if report.by_country:
        create_table_artifact(
            [row.model_dump() for row in report.by_country],
            key=f"{campaign_id}-delivery-by-country",
            description="Accepted recipients by country: delivered, failed, pending, unknown",
        )
    return report
