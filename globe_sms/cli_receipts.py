"""`globe-sms receipts ...`: serve the receipt endpoint, reconcile through QueryMessage, report, retry failed.

Registered on the main command in `globe_sms/cli.py`. Heavy imports happen inside the commands, so that
`globe-sms --help` stays fast.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from globe_sms.terminal import plain, problem

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

receipts_app = typer.Typer(
    help="Delivery receipts: receive Alibaba's push, reconcile via QueryMessage, report, retry failed only.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold the ledger URL or the push token
)
console = Console()

LedgerOption = Annotated[
    str | None,
    typer.Option(
        "--ledger",
        help="The send ledger: a SQLAlchemy URL without a password (a relative SQLite file is taken in the "
        "current directory), or env:NAME / block:NAME naming the environment variable or Prefect Secret "
        "block that holds the whole URL. Default: the default ledger, sqlite:///<data folder>/ledger.db, "
        "the data folder being $GLOBE_SMS_DATA_DIR, else $XDG_DATA_HOME/globe-sms, else "
        "~/.local/share/globe-sms.",
    ),
]


def ledger_location(option: str | None):  # noqa: ANN201 - globe_sms.ledger.LedgerLocation, imported lazily
    """The ledger a `--ledger` option means: the default ledger when absent; a URL without a password (a
    relative SQLite file made absolute against the current directory, as any path given on a command line);
    or `env:NAME` / `block:NAME`, the secret holding the URL. A URL with a password: exit 2."""
    from globe_sms.ledger.url import LedgerUrlError, location_from_text
    from globe_sms.paths import default_ledger_url, resolve_ledger_file

    if option is None:
        return default_ledger_url()
    try:
        location = location_from_text(option, "--ledger")
    except LedgerUrlError as exc:
        console.print(problem("error:", exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    return resolve_ledger_file(location, Path.cwd()) if isinstance(location, str) else location


@receipts_app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 18766,
    ledger: LedgerOption = None,
    token_block: Annotated[
        str | None,
        typer.Option(
            "--token-block",
            envvar="GLOBE_SMS_RECEIPTS_TOKEN_BLOCK",
            help="Prefect Secret block holding the push token (default: GLOBE_SMS_RECEIPTS_TOKEN).",
        ),
    ] = None,
    require_token: Annotated[
        bool,
        typer.Option(
            "--require-token/--no-require-token",
            help="Refuse to start without a token (set GLOBE_SMS_RECEIPTS_TOKEN or --token-block).",
        ),
    ] = False,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            help="The base URL Alibaba reaches (e.g. your HTTPS proxy), for the URL printed at start.",
        ),
    ] = None,
    max_body_bytes: Annotated[
        int,
        typer.Option(
            "--max-body-bytes", min=1, help="The largest push body accepted; larger pushes are answered 413."
        ),
    ] = 4 * 1024 * 1024,
) -> None:
    """Serve the receipt endpoint (POST /receipts/<token> with a JSON array) until interrupted.

    The token is never taken on the command line (it would show in `ps` and shell history): it comes from
    GLOBE_SMS_RECEIPTS_TOKEN or a Prefect Secret block. Without one, any push is accepted, with a warning.
    """
    from globe_sms.ledger.url import masked
    from globe_sms.receipts.auth import TOKEN_ENV, InvalidReceiverToken, masked_push_url, resolve_token
    from globe_sms.receipts.receiver import serve_forever

    location = ledger_location(ledger)
    try:
        token = resolve_token(token_block)
    except InvalidReceiverToken as exc:
        console.print(problem("error:", exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except Exception as exc:  # noqa: BLE001 - a missing or unreadable Secret block, reported plainly
        console.print(problem("error:", f"cannot load Secret block {token_block!r}: {type(exc).__name__}"))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if token is None and require_token:
        console.print(
            f"[red]error:[/red] --require-token, but no token: set {TOKEN_ENV} or name a Secret block "
            "with --token-block"
        )
        raise typer.Exit(EXIT_BAD_INPUT)
    logging.basicConfig(level=logging.INFO)
    shown_host = f"[{host}]" if ":" in host else host
    base = public_url or f"http://{shown_host}:{port}"
    console.print(
        plain(f"receipt endpoint listening on http://{shown_host}:{port}/ (ledger {masked(location)})")
    )
    if token is None:
        console.print(
            "[yellow]warning:[/yellow] no token: anyone who can reach this endpoint can forge delivery "
            f"receipts. Set {TOKEN_ENV} (or --token-block) for anything but local tests."
        )
        console.print(plain(f"push URL: {masked_push_url(base, None)}"))
    else:
        source = f"Secret block {token_block!r}" if token_block else TOKEN_ENV
        console.print(
            plain(
                "push URL to enter in the Alibaba SMS console (HTTP batch push): "
                f"{masked_push_url(base, token)}\n  where **** is the token from {source}"
            )
        )
    serve_forever(host, port, location, token=token, max_body_bytes=max_body_bytes)


@receipts_app.command()
def report(
    campaign_id: Annotated[str, typer.Argument(help="The campaign id.")],
    ledger: LedgerOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Delivered, failed by error code, and pending, each by country (numbers are never shown)."""
    print_delivery_report(campaign_id, ledger_location(ledger), as_json=as_json)


def print_delivery_report(campaign_id: str, ledger, *, as_json: bool = False) -> None:  # noqa: ANN001
    """Build the campaign's delivery report from the ledger (a `LedgerLocation`) and print it."""
    from globe_sms.ledger import LedgerError
    from globe_sms.ledger.url import masked
    from globe_sms.receipts.report import build_report
    from globe_sms.receipts.store import ReceiptStore

    try:
        with ReceiptStore(ledger) as store:
            delivery = build_report(store, campaign_id)
    except LedgerError as exc:  # a malformed URL, its secret missing, the database unreachable
        console.print(problem("error:", exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if as_json:
        typer.echo(json.dumps(delivery.model_dump(), indent=2))
        return
    totals = Table(title=plain(f"delivery of {campaign_id}"), show_header=False)
    share = f" ({delivery.delivered / delivery.accepted:.1%})" if delivery.accepted else ""
    for key, value in (
        ("accepted by the gateway", f"{delivery.accepted:,}"),
        ("delivered", f"{delivery.delivered:,}{share}"),
        ("failed", f"{delivery.failed:,} ({delivery.retryable_failed:,} retryable)"),
        ("pending (no final receipt yet)", f"{delivery.pending:,}"),
        ("unknown (no final receipt in time)", f"{delivery.unknown:,}"),
        *(
            (f"not accepted: {status}", f"{count:,}")
            for status, count in sorted(delivery.not_accepted.items())
        ),
        (
            "receipts",
            f"{delivery.duplicates:,} duplicates, {delivery.stale:,} out of order, "
            f"{delivery.conflicts:,} conflicting, {delivery.orphans:,} orphans",
        ),
    ):
        totals.add_row(plain(key), plain(value))  # statuses come from the ledger and receipts: data
    console.print(totals)
    if delivery.by_country:
        countries = Table(title="by country")
        for column in ("country", "accepted", "delivered", "failed", "pending", "unknown"):
            countries.add_column(column, justify="right")
        for row in delivery.by_country:
            countries.add_row(
                plain(row.country),
                *(
                    f"{getattr(row, name):,}"
                    for name in ("accepted", "delivered", "failed", "pending", "unknown")
                ),
            )
        console.print(countries)
    if delivery.failures:
        failures = Table(title="failed by error code")
        for column in ("error code", "status", "recipients", "retry"):
            failures.add_column(column, no_wrap=True)
        failures.add_column("by country")
        for group in delivery.failures_by_code():
            failures.add_row(  # error codes come from Alibaba's receipts: data
                *(
                    plain(text)
                    for text in (
                        group.error_code, group.status, f"{group.recipients:,}", group.retry,
                        group.countries_text(),
                    )
                )
            )
        console.print(failures)
    if delivery.accepted == 0:
        console.print(plain(f"no accepted message in campaign {campaign_id!r} of ledger {masked(ledger)}"))


def _campaign(campaign_file: Path):  # noqa: ANN202 - globe_sms.campaign.Campaign, imported lazily
    from globe_sms.campaign import Campaign, CampaignFileError

    try:
        return Campaign.from_yaml(campaign_file)
    except CampaignFileError as exc:
        console.print(problem("error:", exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None


@receipts_app.command()
def reconcile(
    campaign_file: Annotated[
        Path, typer.Argument(help="The campaign YAML file (its ledger and gateway are used).")
    ],
    older_than_minutes: Annotated[
        float, typer.Option(help="Query messages with no final receipt after this.")
    ] = 30.0,
    unknown_after_hours: Annotated[
        float, typer.Option(help="Still unsettled after this: final unknown.")
    ] = 72.0,
    qps: Annotated[float, typer.Option(help="QueryMessage calls per second (the API allows 300).")] = 300.0,
) -> None:
    """Ask QueryMessage about overdue messages, settle them, and print the delivery report."""
    campaign = _campaign(campaign_file)
    from flows.reconcile_receipts import reconcile_receipts

    try:
        summary = reconcile_receipts(
            campaign.campaign_id,
            campaign.ledger_location,
            campaign.gateway,
            older_than_minutes=older_than_minutes,
            unknown_after_hours=unknown_after_hours,
            queries_per_second=qps,
        )
    except ValueError as exc:
        console.print(problem("error:", exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except Exception as exc:  # noqa: BLE001 - a failed run, reported plainly
        console.print(problem("failed:", f"{type(exc).__name__}: {exc}"))
        raise typer.Exit(EXIT_FAILED) from None
    console.print(
        plain(
            f"{summary.candidates:,} overdue, {summary.queried:,} queried "
            f"({summary.queries_per_second:,.0f}/s), settled {summary.settled}, "
            f"{summary.still_sending:,} still sending, {summary.timed_out:,} now unknown"
            + (f", errors {summary.errors}" if summary.errors else "")
        )
    )
    print_delivery_report(campaign.campaign_id, campaign.ledger_location)


@receipts_app.command()
def retry(
    campaign_file: Annotated[Path, typer.Argument(help="The campaign YAML file, as sent before.")],
    code: Annotated[
        list[str] | None,
        typer.Option(
            "--code", help="A receipt error code to retry (repeatable); default: the built-in list."
        ),
    ] = None,
    expired: Annotated[
        bool, typer.Option("--expired/--no-expired", help="Also resend expired messages.")
    ] = True,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say who would be resent; change nothing.")
    ] = False,
) -> None:
    """Resend only to recipients whose receipts say they failed with a retryable code."""
    campaign = _campaign(campaign_file)
    if dry_run:
        campaign = campaign.model_copy(update={"dry_run": True})
    from flows.retry_failed_deliveries import retry_failed_deliveries
    from globe_sms.ledger import CampaignBusy

    try:
        summary = retry_failed_deliveries(campaign, code or None, include_expired=expired)
    except CampaignBusy as exc:  # another run of the campaign is sending: nothing was touched
        console.print(problem("error:", exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except Exception as exc:  # noqa: BLE001 - a failed run, reported plainly
        console.print(problem("failed:", f"{type(exc).__name__}: {exc}"))
        raise typer.Exit(EXIT_FAILED) from None
    verb = "would be resent" if summary.dry_run else "reopened and sent again"
    console.print(f"{summary.failed:,} failed deliveries; {summary.reopened:,} {verb}")
    for error_code, count in sorted(summary.not_retried.items()):
        console.print(plain(f"  not retried: {error_code}: {count:,}"))
    if summary.send is not None:
        console.print(
            f"resend: {summary.send.accepted:,} accepted, {summary.send.failed:,} failed, "
            f"{summary.send.unknown:,} unknown"
        )
