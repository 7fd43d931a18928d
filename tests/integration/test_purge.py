"""Retention (`globe_sms.ledger.purge`, `globe-sms ledger purge`) on SQLite and PostgreSQL: which campaigns
are purged, that no number of a purged campaign is left in the ledger database, and that frequency caps and
reruns still recognise purged numbers through their keyed hash. The flow-level acceptance (a real send, the
command, then a capped campaign and a rerun) is at the end.
"""

from __future__ import annotations

import csv
import itertools
import random
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import insert, text
from typer.testing import CliRunner

from alibaba_sms.emulator import EmulatorServer
from flows.send_campaign import send_campaign
from globe_sms.campaign import Campaign
from globe_sms.cli import app
from globe_sms.ledger import Ledger, RunOwner
from globe_sms.ledger.backends import make_engine
from globe_sms.ledger.caps import sent_counts
from globe_sms.ledger.purge import has_purged_rows, plan, purge, purge_orphan_receipts, purged_numbers
from globe_sms.receipts.store import delivery_receipts
from globe_sms.retention import KEY_ENV, RetentionKey
from tests.clocks import FakeWallClock
from tests.emulator_fixtures import FLOW_RATE
from tests.ledger_fixtures import numbers as _numbers

KEY = RetentionKey(SecretStr("a-test-retention-key-0123456789"))
_next = itertools.count(random.randrange(10_000) * 10_000)


def numbers(n: int) -> list[str]:
    """Numbers no other test of the session uses (PostgreSQL tests share one schema)."""
    return _numbers(n, 85_290_000_000 + next(_next) * 100)


def send(ledger: Ledger, campaign: str, phones: list[str]) -> None:
    ledger.register(campaign, phones, message_type="MKT")
    ledger.mark_submitting(campaign, 1, phones)
    ledger.record_accepted(campaign, 1, {p: f"msg-{campaign}-{i}" for i, p in enumerate(phones)}, {}, "req")


def add_receipt(url: str, message_id: str, campaign: str | None, phone: str, when: Any) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            insert(delivery_receipts).values(
                message_id=message_id,
                campaign_id=campaign,
                phone=phone,
                matched=campaign is not None,
                delivery_status="delivered",
                source="receipt",
                receipts=1,
                duplicates=0,
                stale=0,
                conflicts=0,
                first_seen=when,
                updated=when,
            )
        )
    engine.dispose()


def every_text(url: str) -> str:
    """Every value of the ledger database's globe-sms tables, as one string."""
    engine = make_engine(url)
    with engine.connect() as conn:
        values = [
            str(row)
            for table in ("send_ledger", "delivery_receipts", "campaign_batches", "account_volume")
            for row in conn.execute(text(f"SELECT * FROM {table}"))
        ]
    engine.dispose()
    return "\n".join(values)


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


def test_purge_replaces_the_numbers_of_finished_old_campaigns_only(
    url: str, ledger: Ledger, clock: FakeWallClock, tag: str
) -> None:
    done, still_pending, recent, leased = (
        f"{name}-{tag}" for name in ("done", "pending", "recent", "leased")
    )
    done_numbers, pending_numbers, recent_numbers, leased_numbers = (numbers(3) for _ in range(4))
    send(ledger, done, done_numbers)
    add_receipt(url, f"msg-{done}-0", done, done_numbers[0], clock.now)
    add_receipt(url, f"orphan-{tag}", None, f"+{done_numbers[1]}", clock.now)
    ledger.register(still_pending, pending_numbers)
    send(ledger, leased, leased_numbers)
    ledger.acquire_run_lease(leased, RunOwner.this_process("test-run", "a test run"), 3600)
    clock.tick(86400 * 100)
    send(ledger, recent, recent_numbers)
    before = ledger.counts(done), ledger.rows(done, columns=["status", "message_id", "batch_no"])

    cutoff = clock.now - timedelta(days=90)
    candidates = [c.campaign_id for c in plan(ledger, cutoff)]
    assert done in candidates and not {still_pending, recent, leased} & set(candidates)
    purged = purge(ledger, cutoff, KEY.phone_keys, campaigns=[done])
    assert [(c.campaign_id, c.numbers) for c in purged] == [(done, 3)]
    assert purge_orphan_receipts(ledger, cutoff, KEY.phone_keys) >= 1

    dump = every_text(url)
    assert not [p for p in done_numbers if p in dump]  # not in rows, receipts (matched or orphan) or batches
    assert all(p in dump for p in pending_numbers + recent_numbers + leased_numbers)
    assert ledger.counts(done) == before[0]
    assert ledger.rows(done, columns=["status", "message_id", "batch_no"]).equals(before[1])
    rows = ledger.rows(done, columns=["phone", "phone_key"])
    assert all(p.startswith("#") and len(p) == 15 for p in rows["phone"])
    assert rows["phone_key"].to_list() == KEY.phone_keys(done_numbers)
    assert has_purged_rows(ledger, done) and not has_purged_rows(ledger, recent)

    # A cap and a rerun's dedupe still see them, through the keyed hash (and only with it).
    since = clock.now - timedelta(days=200)
    assert sent_counts(ledger, "other", done_numbers, since) == {}
    assert sent_counts(ledger, "other", done_numbers, since, phone_keys=KEY.phone_keys) == dict.fromkeys(
        done_numbers, 1
    )
    assert sorted(purged_numbers(ledger, done, done_numbers + recent_numbers, KEY.phone_keys)) == done_numbers
    assert purge(ledger, cutoff, KEY.phone_keys, campaigns=[done]) == []  # nothing left to purge


def test_a_sqlite_file_keeps_no_old_copy_of_a_purged_number(tmp_path: Path, clock: FakeWallClock) -> None:
    """secure_delete and the WAL checkpoint: the numbers are not in the file's bytes, free pages included."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    phones = numbers(500)
    with Ledger.open(url, clock=clock) as ledger:
        send(ledger, "old", phones)
        clock.tick(86400 * 91)
        purge(ledger, clock.now - timedelta(days=90), KEY.phone_keys)
        files = [path.read_bytes() for path in tmp_path.iterdir()]
    assert not [p for p in phones if any(p.encode() in data for data in files)]


# -- the command and the flows, end to end ------------------------------------------------------------


def write_csv(path: Path, phones: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone"])
        writer.writerows([f"+{phone}"] for phone in phones)
    return path


@pytest.mark.usefixtures("prefect_server")
def test_caps_and_reruns_still_apply_to_purged_numbers(
    tmp_path: Path, gateway: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY.secret.get_secret_value())
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    a_numbers, others = _numbers(100, 6_596_000_000), _numbers(50, 6_597_000_000)

    def campaign(campaign_id: str, phones: list[str], **extra: Any) -> Campaign:
        return Campaign.parse(
            {
                "campaign_id": campaign_id,
                "source": {"path": str(write_csv(tmp_path / f"{campaign_id}.csv", phones))},
                "template": "Our sale starts today!",
                "message_type": "MKT",
                "sender_id": "GlobeSMS",
                "batch_size": 50,
                "ledger": ledger_url,
                "gateway": {"endpoint": gateway.url, "calls_per_second": FLOW_RATE, "account": "purge-test"},
                **extra,
            }
        )

    a = campaign("purge-a", a_numbers)
    assert send_campaign(a).accepted == 100
    runner = CliRunner()
    dry = runner.invoke(app, ["ledger", "purge", ledger_url, "--older-than", "0h", "--dry-run"])
    assert (
        dry.exit_code == 0
        and "would purge 1 finished campaign" in dry.output
        and "purge-a: 100" in dry.output
    )
    done = runner.invoke(app, ["ledger", "purge", ledger_url, "--older-than", "0h"])
    assert done.exit_code == 0 and "purged 1 finished campaign" in done.output, done.output
    assert KEY.secret.get_secret_value() not in done.output + dry.output
    files = b"".join(path.read_bytes() for path in tmp_path.glob("ledger.db*"))
    assert not [p for p in a_numbers if p.encode() in files]

    cap = {"max_messages": 1, "per": "24h", "message_types": ["MKT"]}
    b = send_campaign(campaign("purge-b", a_numbers + others, frequency_cap=cap))
    assert b.accepted == 50 and b.skipped_frequency_cap == 100
    again = send_campaign(a)  # the purged campaign's rerun: its numbers are known by their keyed hash
    assert again.accepted == 0 and again.planned == 0
    assert max(gateway.state.accepted_numbers().values()) == 1

    monkeypatch.delenv(KEY_ENV)  # without the key a purged campaign cannot be checked: it refuses to run
    with pytest.raises(Exception, match="retention key"):
        send_campaign(a)


def test_the_command_refuses_a_bad_age_or_a_missing_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv("GLOBE_SMS_RETENTION_KEY_BLOCK", raising=False)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    runner = CliRunner()
    bad_age = runner.invoke(app, ["ledger", "purge", url, "--older-than", "3w"])
    assert bad_age.exit_code == 2 and "days or hours" in bad_age.output
    no_key = runner.invoke(app, ["ledger", "purge", url])
    assert no_key.exit_code == 2 and KEY_ENV in " ".join(no_key.output.split())
    dry = runner.invoke(app, ["ledger", "purge", url, "--dry-run"])  # a dry run needs no key
    assert dry.exit_code == 0 and "would purge 0 finished campaign(s)" in " ".join(dry.output.split())


@pytest.mark.usefixtures("prefect_server")
def test_the_purge_flow_lists_then_purges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """flows/purge_ledger.py (the nightly deployment's flow) on a real Prefect server: counts only."""
    from flows.purge_ledger import purge_ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    phones = numbers(4)
    with Ledger.open(url) as ledger:
        send(ledger, "finished", phones)
    monkeypatch.delenv(KEY_ENV, raising=False)
    listed = purge_ledger(ledger=url, older_than="0h", dry_run=True)  # no key needed
    assert [(c.campaign_id, c.numbers) for c in listed.campaigns] == [("finished", 4)]
    assert phones[0] in every_text(url)
    monkeypatch.setenv(KEY_ENV, KEY.secret.get_secret_value())
    done = purge_ledger(ledger=url, older_than="0h")
    assert done.numbers == 4 and not done.dry_run and phones[0] not in done.to_markdown()
    assert not [p for p in phones if p in every_text(url)]
    assert purge_ledger(ledger=url, older_than="0h").campaigns == []
