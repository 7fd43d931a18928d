"""The limits across campaigns, as a run plans them: frequency caps, daily and monthly account volume.

Planning (`tasks/plan.py`) calls these after it registered the run's numbers and before it cuts batches:

1. (Registration keeps the campaign's type, NOTIFY / MKT, on its new rows, for later campaigns' caps.)
2. `cap_pending` (with a `frequency_cap`): the pending numbers that other campaigns already messaged
   `max_messages` times within `per` become `skipped` (error code `frequency_cap`), final for this campaign.
   `capped_numbers` counts the same read-only for a dry run. Purged rows count through their keyed hash,
   with the retention key (`globe_sms.retention`), only when some lie within the window.
   A campaign whose rows a retention purge replaced recognises its numbers by keyed hash
   (`without_purged`): a rerun never messages them again.
3. `reserve_volume`: the planned rows are reserved in the account's day and month counters
   (`globe_sms.ledger.volume`); with `gateway.daily_limit` / `monthly_limit` only what is left is planned,
   the rest stays `pending`, deferred until the limit's period ends. A dry run only peeks.

After sending, `give_back_unsent` returns the reservation the run did not use, and `emit_deferrals` emits
`globe-sms.campaign.deferred` for each limit that held rows back (send window, daily or monthly limit).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from globe_sms.campaign import Campaign, GatewaySettings
from globe_sms.frequency import FREQUENCY_CAP_REASON
from globe_sms.gateway import credentials_for
from globe_sms.ledger import Ledger, caps, purge
from globe_sms.ledger.caps import purged_in_window, sent_counts
from globe_sms.ledger.volume import Reservation, give_back, peek, reserve
from globe_sms.retention import retention_key

DEFERRED_EVENT = "globe-sms.campaign.deferred"


def account_key(gateway: GatewaySettings) -> str:
    """Whose volume counters a campaign uses: its `account`, else its AccessKeyId (Alibaba counts per
    account)."""
    if gateway.account:
        return f"account:{gateway.account.lower()}"
    return f"key:{credentials_for(gateway).access_key_id}"


def capped_numbers(ledger: Ledger, campaign: Campaign, phones: Sequence[str]) -> list[str]:
    """The numbers the campaign's frequency cap holds back (read-only; none without a cap).

    Raises:
        RetentionKeyMissing: purged rows lie within the cap's window and no retention key is configured.
    """
    cap = campaign.frequency_cap
    if cap is None or not phones:
        return []
    since = ledger.now() - cap.window
    keys = retention_key().phone_keys if purged_in_window(ledger, since) else None  # type: ignore[union-attr]
    counts = sent_counts(ledger, campaign.campaign_id, phones, since, cap.message_types, keys)
    return [phone for phone in phones if counts.get(phone, 0) >= cap.max_messages]


def cap_pending(ledger: Ledger, campaign: Campaign) -> int:
    """Claim the campaign's registered rows for this run and, with a frequency cap, skip its pending numbers
    the cap holds back (counting earlier campaigns' messages and the runs that claimed before this one); how
    many were skipped. Every run claims, capped or not, so that capped runs started beside it see it."""
    claimed_at = caps.claim(ledger, campaign.campaign_id)
    cap = campaign.frequency_cap
    if cap is None:
        return 0
    counted_since = ledger.now()
    since = counted_since - cap.window
    phones = ledger.pending(campaign.campaign_id)
    if not phones:
        return 0
    keys = retention_key().phone_keys if caps.purged_in_window(ledger, since) else None  # type: ignore[union-attr]
    counts = caps.sent_counts(ledger, campaign.campaign_id, phones, since, cap.message_types, keys)
    return caps.skip_claimed(
        ledger,
        campaign.campaign_id,
        phones,
        counts,
        cap.max_messages,
        claimed_at,
        counted_since,
        cap.message_types,
        FREQUENCY_CAP_REASON,
    )


def has_purged_rows(ledger: Ledger, campaign_id: str) -> bool:
    """Whether a retention purge replaced some of the campaign's numbers."""
    return purge.has_purged_rows(ledger, campaign_id)


def purged_of(ledger: Ledger, campaign_id: str, phones: Sequence[str] | pl.Series) -> list[str]:
    """The numbers the campaign had before a retention purge replaced them (found by keyed hash).

    Raises:
        RetentionKeyMissing: no retention key is configured (the purged rows cannot be recognised without it).
    """
    key = retention_key()
    assert key is not None  # required: it raises instead
    return purge.purged_numbers(ledger, campaign_id, list(phones), key.phone_keys)


def without_purged(ledger: Ledger, campaign_id: str, chunk: pl.DataFrame) -> pl.DataFrame:
    """`chunk` without the numbers `purged_of` finds: a rerun of a purged campaign never sends them again."""
    had = purged_of(ledger, campaign_id, chunk["phone"])
    if not had:
        return chunk
    drop = pl.DataFrame({"phone": had}, schema={"phone": pl.String})
    return chunk.join(drop, on="phone", how="anti", maintain_order="left")


def _part_rows(part: pl.DataFrame | Path) -> int:
    if isinstance(part, pl.DataFrame):
        return part.height
    return int(pl.scan_parquet(part).select(pl.len()).collect().item())


def first_rows(parts: Sequence[pl.DataFrame | Path], keep: int) -> list[pl.DataFrame | Path]:
    """The plan parts cut to their first `keep` rows (a Parquet part cut short is rewritten in place)."""
    out: list[pl.DataFrame | Path] = []
    left = keep
    for part in parts:
        if left <= 0:
            break
        rows = _part_rows(part)
        if rows <= left:
            out.append(part)
        elif isinstance(part, pl.DataFrame):
            out.append(part.head(left))
        else:
            pl.read_parquet(part).head(left).write_parquet(part, compression="lz4")
            out.append(part)
        left -= min(rows, left)
    return out


def volume_limited(campaign: Campaign) -> bool:
    gateway = campaign.gateway
    return gateway.daily_limit is not None or gateway.monthly_limit is not None


def reserve_volume(ledger: Ledger, campaign: Campaign, wanted: int) -> Reservation | None:
    """Reserve the run's messages in the account's counters (a dry run only peeks; without a limit it has
    nothing to show, and needs no credentials); see the module."""
    gateway = campaign.gateway
    if campaign.dry_run and not volume_limited(campaign):
        return None
    how = peek if campaign.dry_run else reserve
    return how(
        ledger,
        account_key(gateway),
        wanted,
        gateway.limit_time_zone,
        gateway.daily_limit,
        gateway.monthly_limit,
    )


def give_back_unsent(ledger: Ledger, reservation: Reservation | None, sent: int, dry_run: bool) -> int:
    """Return what a run reserved but did not send (accepted and unknown count as sent); how many."""
    if reservation is None or dry_run:
        return 0
    return give_back(ledger, reservation, reservation.granted - sent)


def deferral_events(summary: Any) -> list[dict[str, Any]]:
    """The payloads of the `globe-sms.campaign.deferred` events a run's summary calls for, one per limit."""
    events = []
    if summary.deferred:
        events.append(
            {"limit": "send_window", "count": summary.deferred, "until": summary.next_window_opening}
        )
    if summary.volume_deferred:
        events.append(
            {
                "limit": summary.volume_held_back_by,
                "count": summary.volume_deferred,
                "until": summary.volume_until,
            }
        )
    return events


def emit_deferrals(summary: Any) -> list[dict[str, Any]]:
    """Emit `globe-sms.campaign.deferred` (limit, count, until) for each limit that held the run back."""
    from prefect.events import emit_event

    payloads = deferral_events(summary)
    for payload in payloads:
        until: datetime | None = payload["until"]
        emit_event(
            event=DEFERRED_EVENT,
            resource={
                "prefect.resource.id": f"globe-sms.campaign.{summary.campaign_id}",
                "prefect.resource.name": summary.campaign_id,
            },
            payload={**payload, "until": until.isoformat() if until else None},
        )
    return payloads


def settle_limits(ledger: Ledger, campaign: Campaign, plan: Any, summary: Any) -> None:
    """After a run's batches: give back the unsent reservation, emit the deferral events, and write the skips
    report when the frequency cap skipped numbers (not for a dry run: it skipped nothing)."""
    if campaign.dry_run:
        return
    give_back_unsent(ledger, plan.volume, summary.accepted + summary.unknown, campaign.dry_run)
    emit_deferrals(summary)
    if getattr(plan, "frequency_capped", 0):
        path = write_skips(
            ledger, campaign.campaign_id, skips_file(campaign.data_folder, campaign.campaign_id)
        )
        summary.skips_file = str(path) if path else None


def skips_file(data_folder: Path, campaign_id: str) -> Path:
    """Where a run writes the campaign's skipped numbers: `<data folder>/<campaign>-skipped.csv`."""
    return data_folder / f"{campaign_id}-skipped.csv"


def write_skips(ledger: Ledger, campaign_id: str, path: Path) -> Path | None:
    """The campaign's `skipped` rows (all runs) as CSV (`phone`, `reason`), and a masked table artifact of
    the first ones (`<campaign>-skipped`); None when there is none. Like the rejects file, the CSV holds the
    numbers (for the user's own records) and is neutralised for spreadsheets."""
    from prefect.artifacts import create_table_artifact

    from globe_sms.masking import mask_number_expr
    from globe_sms.spreadsheets import neutralise_for_spreadsheets
    from tasks.report import ARTIFACT_TABLE_ROWS

    rows = ledger.rows(campaign_id, statuses=["skipped"], columns=["phone", "error_code"])
    if not rows.height:
        return None
    rows = rows.rename({"error_code": "reason"})
    path.parent.mkdir(parents=True, exist_ok=True)
    neutralise_for_spreadsheets(rows.lazy()).sink_csv(path)
    shown = rows.head(ARTIFACT_TABLE_ROWS).with_columns(mask_number_expr("phone").alias("phone"))
    create_table_artifact(
        shown.to_dicts(),
        key=f"{campaign_id}-skipped",
        description=f"Skipped numbers ({shown.height} of {rows.height:,}, masked): final for the campaign",
    )
    return path
