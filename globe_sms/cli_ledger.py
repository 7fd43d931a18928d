"""`globe-sms ledger ...`: the ledger database's schema version (`status`) and its migration (`upgrade`).

Registered on the main command in `globe_sms/cli.py`. A SQLite ledger is upgraded when globe-sms opens it; a
PostgreSQL ledger only by `globe-sms ledger upgrade`, after a backup (docs/ledger-migrations.md says why).
URLs are printed with their password masked; keep the password out of the command line: `env:NAME` or
`block:NAME` names where the whole URL is kept, or let psycopg read `PGPASSWORD` or `~/.pgpass`.

Exit status: 0 the ledger is at this globe-sms's revision (or `status` found no ledger yet: it is created at
the head revision on first use); 1 `status` found an upgrade to run, or the schema is one this globe-sms will
not touch (a newer globe-sms migrated it, or unrecognised tables); 2 the URL is malformed or unreachable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from globe_sms.cli_receipts import ledger_location

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
T = TypeVar("T")

ledger_app = typer.Typer(
    help="The ledger database's schema: show its revision, upgrade it after installing a newer globe-sms.",
    no_args_is_help=True,
)
console = Console(highlight=False)

UrlArgument = Annotated[
    str | None,
    typer.Argument(
        help="The ledger: a SQLAlchemy URL without a password, or env:NAME / block:NAME naming where the "
        "whole URL is kept (default: the campaigns' default ledger). psycopg also reads PGPASSWORD or "
        "~/.pgpass."
    ),
]


def _run(what: Callable[[str], T], option: str | None) -> tuple[str, T]:
    """Call `what(url)` on the ledger `option` names; a malformed or unreachable URL (or a missing secret) is
    exit 2, a schema refusal exit 1."""
    from sqlalchemy.exc import OperationalError

    from globe_sms.ledger import LedgerSchemaError
    from globe_sms.ledger.url import LedgerUrlError, masked_error, render_masked, resolve_ledger_url

    try:
        resolved = resolve_ledger_url(ledger_location(option))  # exit 2 for a URL with a password
    except LedgerUrlError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    masked = render_masked(resolved)
    try:
        return masked, what(resolved.render_as_string(hide_password=False))
    except LedgerSchemaError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILED) from None
    except OperationalError as exc:
        reason = masked_error(exc, resolved)
        console.print(f"[red]error:[/red] cannot open the ledger at {escape(masked)}: {escape(reason)}")
        raise typer.Exit(EXIT_BAD_INPUT) from None


@ledger_app.command()
def status(url: UrlArgument = None) -> None:
    """Show the ledger's schema revision, this globe-sms's, and the migrations an upgrade would apply.

    Changes nothing (and creates no SQLite file).
    """
    from globe_sms.ledger.migration import SchemaState, ledger_status

    masked, found = _run(ledger_status, url)
    console.print(f"ledger:   {escape(masked)}")
    console.print(f"revision: {', '.join(found.current) or '(none)'}")
    console.print(f"head:     {found.head} (this globe-sms)")
    messages = {
        SchemaState.NEW: "no globe-sms tables yet: they are created at the head revision on first use",
        SchemaState.CURRENT: "up to date",
        SchemaState.UNVERSIONED: "made before migrations: opening it stamps it 0001, then as behind",
        SchemaState.BEHIND: "behind: run `globe-sms ledger upgrade` (SQLite: upgraded on first use)",
        SchemaState.AHEAD: "ahead: a newer globe-sms migrated it; this one will not use it",
        SchemaState.UNRECOGNISED: "unrecognised: globe-sms tables without a revision, unlike any it created",
    }
    console.print(f"state:    {found.state} ({messages[found.state]})")
    for line in found.differences:
        console.print(f"  differs: {escape(line)}")
    if found.state in (SchemaState.BEHIND, SchemaState.UNVERSIONED):
        for revision in found.pending:
            console.print(f"  pending: {escape(revision)}")
    raise typer.Exit(EXIT_OK if found.state in (SchemaState.NEW, SchemaState.CURRENT) else EXIT_FAILED)


@ledger_app.command()
def upgrade(url: UrlArgument = None) -> None:
    """Migrate the ledger to this globe-sms's schema revision, in one transaction (all or nothing).

    Creates a new ledger; stamps one made before globe-sms had migrations. Back a server database up first,
    and stop the runs that use it: an older globe-sms refuses a ledger migrated past what it knows.
    """
    from globe_sms.ledger.migration import SchemaState, upgrade_ledger

    masked, (before, after) = _run(upgrade_ledger, url)
    if before.state is SchemaState.CURRENT:
        console.print(f"{escape(masked)}: already at revision {after.head}, nothing to do")
        return
    start = {SchemaState.NEW: "created", SchemaState.UNVERSIONED: "stamped a pre-migration ledger as 0001"}
    done = start.get(before.state, f"upgraded from {', '.join(before.current)}")
    console.print(f"{escape(masked)}: {done}, now at revision {', '.join(after.current)}")
    for revision in before.pending:
        console.print(f"  applied: {escape(revision)}")


@ledger_app.command()
def purge(
    url: UrlArgument = None,
    older_than: Annotated[
        str,
        typer.Option("--older-than", help="Purge finished campaigns with no change for this long: 90d, 36h."),
    ] = "90d",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be purged; change nothing.")
    ] = False,
) -> None:
    """Replace the phone numbers of finished campaigns with a keyed hash, keeping counts and statuses.

    A finished campaign has no pending or submitting row, no run in progress, and no row changed for
    --older-than. Frequency caps and reruns still recognise purged numbers through the keyed hash, made with
    the retention key: GLOBE_SMS_RETENTION_KEY, or the Secret block GLOBE_SMS_RETENTION_KEY_BLOCK names
    (docs/retention.md). Exit status: 0 done (or nothing to purge); 2 a bad age, no key, or no ledger.
    """
    from globe_sms.ledger import Ledger, LedgerError
    from globe_sms.ledger import purge as purging
    from globe_sms.ledger.url import render_masked, resolve_ledger_url
    from globe_sms.retention import RetentionKeyMissing, parse_age, retention_key

    try:
        age = parse_age(older_than)
    except ValueError as exc:
        console.print(f"[red]error:[/red] --older-than: {escape(str(exc))}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    location = ledger_location(url)
    try:
        key = None if dry_run else retention_key()
        ledger = Ledger.open(location)
    except (RetentionKeyMissing, LedgerError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    with ledger:
        cutoff = ledger.now() - age
        masked = escape(render_masked(resolve_ledger_url(location)))
        found = purging.plan(ledger, cutoff)
        if dry_run:
            console.print(
                f"{masked}: would purge {len(found)} finished campaign(s) unchanged since "
                f"{cutoff:%Y-%m-%d %H:%M} UTC (dry run: nothing changed)"
            )
        else:
            assert key is not None
            found = purging.purge(ledger, cutoff, key.phone_keys)
            orphans = purging.purge_orphan_receipts(ledger, cutoff, key.phone_keys)
            console.print(
                f"{masked}: purged {len(found)} finished campaign(s) unchanged since "
                f"{cutoff:%Y-%m-%d %H:%M} UTC"
                + (f", and {orphans:,} unmatched receipt(s)" if orphans else "")
            )
        for candidate in found:
            console.print(
                f"  {escape(candidate.campaign_id)}: {candidate.numbers:,} number(s) in "
                f"{candidate.rows:,} row(s), last change {candidate.last_change:%Y-%m-%d %H:%M} UTC"
            )
