"""The `globe-sms` command: send a campaign, run the emulator, set up a Prefect server for the deployments.

Exit status of `send`: 0 when every recipient reached a final state (rejected, failed and unknown recipients
are in the summary, not errors), and also when the only rows left pending are deferred ones, outside
their send window (nothing failed: the summary says `deferred N until <time> UTC`, when to run again);
1 when the run failed; 2 when it stopped before sending anything: a bad
campaign file or bad input, too many rejects, over budget, or another run of the campaign still sending;
130 when it stopped on request (Ctrl-C, or Cancel in Prefect) and 143 on SIGTERM: the batch in flight was
recorded, the rest stays pending for the next run (`tasks/stop.py`). A second Ctrl-C stops at once (130).
The file is loaded and `tasks.preflight.preflight` run (ledger reachable, source files present) before the
flow starts, so what they refuse creates no flow run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from globe_sms.cli_deploy import deploy
from globe_sms.cli_ledger import ledger_app
from globe_sms.cli_operate import pause, resume, shield_temporary_server
from globe_sms.cli_receipts import receipts_app
from globe_sms.cli_run_log import RunLog, run_log, temporary_server_settings
from globe_sms.progress import SendProgress
from globe_sms.terminal import plain, problem

app = typer.Typer(
    help="SMS campaigns through Alibaba Cloud's BatchSendMessageToGlobe, orchestrated with Prefect.",
    # Typer's pretty tracebacks print every local variable by default: a campaign, a resolved ledger URL
    # or a credential would reach the terminal. A crash prints the traceback without them.
    pretty_exceptions_show_locals=False,
)
app.add_typer(receipts_app, name="receipts")  # serve, report, reconcile, retry: globe_sms/cli_receipts.py
app.add_typer(ledger_app, name="ledger")  # status, upgrade: globe_sms/cli_ledger.py
console = Console()

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


def _before_sending_errors() -> tuple[type[BaseException], ...]:
    """The errors that stop `send` before anything is sent (exit status 2)."""
    from globe_sms.campaign import CampaignFileError
    from globe_sms.ledger import CampaignBusy, LedgerSchemaError, LedgerUnreachable, LedgerUrlError
    from globe_sms.template import TemplateError
    from globe_sms.validation_rules import RecipientSchemaError, TooManyRejects
    from tasks.preflight import PreflightError
    from tasks.sources import SourceError
    from tasks.suppression import SuppressionError

    errors: list[type[BaseException]] = [
        CampaignFileError, SourceError, TemplateError, RecipientSchemaError, TooManyRejects, SuppressionError
    ]
    errors.append(CampaignBusy)  # another run of the campaign holds its run lease: nothing was touched
    errors += [PreflightError, LedgerUrlError, LedgerUnreachable]  # the ledger is opened before anything
    errors.append(LedgerSchemaError)  # the ledger needs `globe-sms ledger upgrade`, or is a newer one's
    try:
        from tasks.cost import BudgetExceeded

        errors.append(BudgetExceeded)
    except ImportError:  # pragma: no cover - cost estimation is optional
        pass
    return tuple(errors)


@app.command()
def send(
    campaign_file: Annotated[Path, typer.Argument(help="The campaign YAML file.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate, render and plan; send nothing.")
    ] = False,
    resend_unknown: Annotated[
        bool, typer.Option("--resend-unknown", help="Also resend recipients whose outcome is unknown.")
    ] = False,
) -> None:
    """Run a campaign end to end and print its summary."""
    from globe_sms.campaign import Campaign
    from globe_sms.progress import listening
    from tasks.preflight import preflight

    before_sending = _before_sending_errors()
    try:
        campaign = Campaign.from_yaml(campaign_file)
        if dry_run or resend_unknown:
            campaign = campaign.model_copy(
                update={
                    "dry_run": dry_run or campaign.dry_run,
                    "resend_unknown": resend_unknown or campaign.resend_unknown,
                }
            )
        preflight(campaign)  # everything refusable is refused here, before a Prefect flow run exists
    except before_sending as exc:
        console.print(problem("error:", exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:  # Ctrl-C while the file is read and checked: no run exists, nothing was sent
        console.print(problem("stopped:", "Ctrl-C before the run started; nothing was sent"), soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None

    from flows.send_campaign import send_campaign
    from tasks.send_batches import CampaignFailed
    from tasks.stop import STOP_EXIT_CODES, STOP_REQUESTS, stop_on_signals

    stop_status = None
    with temporary_server_settings(), stop_on_signals(), run_log(
        campaign.data_folder, campaign.campaign_id
    ) as log, Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[recipients]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task_id = bar.add_task(
            "batches" if campaign.send_via == "batch" else "recipients", total=None, recipients=""
        )

        def show(progress: SendProgress) -> None:
            bar.update(task_id, **progress_fields(progress))

        try:
            shield_temporary_server()  # Ctrl-C stops the run between batches, not Prefect's temporary server
            with listening(show):
                state = send_campaign(campaign, return_state=True)
            # A run stopped on request ends Cancelled, with its summary as the state's data.
            summary = state.result(raise_on_failure=not state.is_cancelled())
            if state.is_cancelled():
                requested = STOP_REQUESTS.requested
                stop_status = STOP_EXIT_CODES[requested.kind if requested else "cancel"]
        except KeyboardInterrupt as exc:  # the second Ctrl-C: the hard stop
            _report(
                log, exc, "stopped:",
                "hard stop (second Ctrl-C): a batch in flight is recorded unknown (it may have been sent); "
                f"running `globe-sms send {campaign_file}` again sends what is pending",
            )
            raise typer.Exit(STOP_EXIT_CODES["interrupt"]) from None
        except before_sending as exc:
            _report(log, exc, "error:", str(exc))
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except CampaignFailed as exc:
            _report(log, exc, "failed:", str(exc))
            raise typer.Exit(EXIT_FAILED) from None
        except Exception as exc:  # noqa: BLE001 - any other failure is a failed run, reported plainly
            _report(log, exc, "failed:", f"{type(exc).__name__}: {exc}")
            raise typer.Exit(EXIT_FAILED) from None
    if summary.preview is not None and (summary.dry_run or summary.preview.cost_total is not None):
        _print_preview(summary.preview, full=summary.dry_run)
    if not summary.stopped_while_reading:  # else nothing was counted yet: the stop line says it all
        _print_summary(summary)
    if stop_status is not None:
        then = "starts it over" if summary.stopped_while_reading else "again sends them"
        console.print(
            problem(
                "stopped:", f"{summary.stop_text()}; running `globe-sms send {campaign_file}` {then}",
                style="yellow",
            ),
            soft_wrap=True,
        )
        raise typer.Exit(stop_status)
    if campaign.gateway.is_emulator and campaign.gateway.emulator_receipts and not summary.dry_run:
        from globe_sms.cli_receipts import print_delivery_report

        # the embedded receiver stored them
        print_delivery_report(campaign.campaign_id, campaign.ledger_location)


def progress_fields(progress: SendProgress) -> dict[str, object]:
    """The progress bar's fields for a `SendProgress`: labelled with what it counts (batches or recipients),
    the recipients beside it only when the bar counts batches."""
    recipients = (
        f"{progress.recipients_done:,}/{progress.recipients_total:,} recipients"
        if progress.unit == "batches"
        else ""
    )
    return {
        "description": progress.unit,
        "total": progress.batches_total,
        "completed": progress.batches_done,
        "recipients": recipients,
    }


def _report(log: RunLog, exc: BaseException, label: str, message: str) -> None:
    """`<label> <message> (details: <log file>)` on the terminal, unwrapped; the traceback to the file."""
    log.record(exc)
    text = f"{message.strip() or type(exc).__name__} (details: {log.path})"
    console.print(problem(label, text), soft_wrap=True)


def _print_preview(preview, *, full: bool) -> None:  # noqa: ANN001 - tasks.preview.Preview, imported lazily
    """Encodings, segments, UCS-2 culprits, cost by country, masked samples and ETA."""
    if full:
        console.print(
            f"[bold]preview[/bold]: {preview.messages:,} messages, {preview.segments:,} segments, "
            f"{preview.batches} batches, ETA {preview.eta_seconds:,.0f} s at the account's rate"
        )
        if preview.send_via != "batch":
            for lane in preview.lanes:
                cost = "" if lane.cost is None else f", est. {lane.cost:,.4f} {preview.currency}"
                console.print(
                    plain(
                        f"  {lane.lane} lane: {lane.recipients:,} recipients in {lane.calls:,} calls at "
                        f"{lane.rate:,.0f}/s, ETA {lane.eta_seconds:,.1f} s{cost}"
                    )
                )
        encodings = ", ".join(f"{name} {count:,}" for name, count in preview.encodings.items())
        segments = ", ".join(
            f"{n} segment(s): {count:,}" for n, count in preview.segment_distribution.items()
        )
        console.print(plain(f"  encodings: {encodings}"))
        console.print(plain(f"  segments per message: {segments}"))
        for line in preview.culprit_lines():
            console.print(plain(f"  {line}", style="yellow"))
        samples = Table(title="sample messages (numbers masked)")
        for column in ("to", "country", "encoding", "segments", "message"):
            samples.add_column(column)
        for sample in preview.samples:
            samples.add_row(
                *(plain(sample[key]) for key in ("to", "country", "encoding", "segments", "message"))
            )
        console.print(samples)
    if preview.cost_by_country:
        costs = Table(title=plain(f"estimated cost: {preview.cost_total:,.4f} {preview.currency}"))
        for column in ("country", "messages", "segments", "price/segment", "cost"):
            costs.add_column(column, justify="right")
        for row in preview.cost_by_country:
            costs.add_row(
                plain(row.country), f"{row.messages:,}", f"{row.segments:,}",
                "-" if row.price_per_segment is None else f"{row.price_per_segment:g}",
                "unpriced" if row.cost is None else f"{row.cost:,.4f}",
            )
        console.print(costs)


def _print_summary(summary) -> None:  # noqa: ANN001 - CampaignSummary, imported lazily
    title = f"campaign {summary.campaign_id}{' (dry run)' if summary.dry_run else ''}"
    table = Table(title=plain(title), show_header=False)
    rows = [
        ("source rows", f"{summary.source_rows:,}"),
        ("valid", f"{summary.valid:,}"),
        ("rejected", f"{summary.rejected:,}"),
        ("planned", f"{summary.planned:,} in {summary.batches} batches"),
        ("accepted", f"{summary.accepted:,}"),
        ("failed", f"{summary.failed:,}"),
        ("unknown", f"{summary.unknown:,}"),
        *(
            [("left unknown by an interrupted run", f"{summary.recovered_as_unknown:,}")]
            if summary.recovered_as_unknown
            else []
        ),
        ("unknown in the ledger (all runs)", f"{summary.ledger_counts.get('unknown', 0):,}"),
        ("already sent earlier", f"{summary.already_sent:,}"),
        *([("deferred (send window)", summary.deferral_text)] if summary.deferral_text else []),
        *([("deferred (volume limit)", summary.volume_deferral_text)] if summary.volume_deferred else []),
        *(
            [("skipped (frequency cap)", f"{summary.skipped_frequency_cap:,}")]
            if summary.skipped_frequency_cap
            else []
        ),
        ("elapsed", f"{summary.elapsed_seconds:.1f} s"),
        (
            "calls per second",
            f"{summary.calls_per_second:.3f} (allowed {summary.allowed_calls_per_second:g})",
        ),
    ]
    if summary.send_via != "batch":
        for lane in summary.lanes:
            rows.append((
                f"{lane.lane} lane",
                f"{lane.recipients:,} recipients in {lane.seconds:.1f} s "
                f"({lane.recipients_per_second:,.0f}/s, {lane.throttled:,} throttled)",
            ))
    for reason, count in sorted(summary.rejected_by_reason.items()):
        rows.append((f"  rejected: {reason}", f"{count:,}"))
    if summary.opt_outs_ignored:
        rows.append(("opt-out entries unreadable, ignored", f"{summary.opt_outs_ignored:,}"))
    if summary.rejects_file:
        rows.append(("rejects file", summary.rejects_file))
    if summary.skips_file:
        rows.append(("skipped numbers file", summary.skips_file))
    for key, value in rows:
        table.add_row(plain(key), plain(value))  # reasons and paths are data
    console.print(table)
    if summary.plan_table is not None:
        _print_plan_table(summary.plan_table)


def _print_plan_table(plan) -> None:  # noqa: ANN001 - tasks.plan_table.PlanTable, imported lazily
    """What each limit does to this run, the ETA, and the days when a daily limit spreads the campaign."""
    table = Table(title=plain("plan across all limits"))
    for column in ("limit", "setting", "effect"):
        table.add_column(column)
    for row in plan.rows:
        table.add_row(plain(row.limit), plain(row.setting), plain(row.effect))
    console.print(table)
    console.print(plain(f"ETA of this run: {plan.eta_seconds:,.0f} s"))
    if len(plan.days) > 1:
        days = ", ".join(f"{d.day.isoformat()}: {d.messages:,}" for d in plan.days)
        console.print(plain(f"by day ({plan.time_zone}): {days}"), soft_wrap=True)


# The help is given here, not as the docstring, so that it stays one line in `globe-sms --help`.
@app.command(
    help="Serve the Alibaba SMS API emulator until interrupted (credentials from the environment, else "
    "testid/testsecret)."
)
def emulator(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 18765,
    rate: Annotated[
        float, typer.Option(help="BatchSendMessageToGlobe calls per second per AccessKeyId (0 = unlimited).")
    ] = 1.0,
    single_rate: Annotated[
        float,
        typer.Option(help="SendMessageToGlobe calls per rolling second per AccessKeyId (0 = unlimited)."),
    ] = 2000.0,
    journal: Annotated[
        Path | None, typer.Option(help="Append every request and message to this JSON-lines file.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for deterministic fault injection.")] = None,
    receipt_callback: Annotated[
        str | None, typer.Option(help="POST delivery receipts here, e.g. a `globe-sms receipts serve` URL.")
    ] = None,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="Allow a --host other than loopback. Its admin endpoints and journal (every number sent to "
            "it) are then open to anyone who reaches it.",
        ),
    ] = False,
) -> None:
    from alibaba_sms.emulator import EmulatorConfig
    from alibaba_sms.emulator.server import RemoteBindRefused, check_bind_address, serve_forever

    try:
        check_bind_address(host, allow_remote=allow_remote)  # serve_forever logs what is open if allowed
    except RemoteBindRefused as exc:
        console.print(problem("error:", exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    logging.basicConfig(level=logging.INFO)
    config = EmulatorConfig.from_env().model_copy(
        update={"batch_calls_per_second": rate or None, "single_calls_per_second": single_rate or None,
                "journal_path": journal, "seed": seed,
                "receipt_callback_url": receipt_callback}
    )
    console.print(plain(f"emulator listening on http://{host}:{port}/"))
    serve_forever(host, port, config, allow_remote=allow_remote)


@app.command()
def setup(
    prefect_yaml: Annotated[
        Path, typer.Option("--prefect-yaml", help="The deployments whose pools, blocks and limits to create.")
    ] = Path("prefect.yaml"),
) -> None:
    """Create the work pools, Secret blocks and account rate limits the deployments need (idempotent).

    Refuses (exit 2) when GLOBE_SMS_HOME, the checkout the deployments' workers run, is unset or wrong
    (if prefect.yaml's pull steps use it).
    """
    import httpx

    from globe_sms.checkout import deploy_time_problem
    from globe_sms.setup import run_setup, targets_from_prefect_yaml

    home = deploy_time_problem(prefect_yaml=prefect_yaml)
    if home is not None:
        console.print(problem("error:", home), soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        targets = targets_from_prefect_yaml(prefect_yaml)
        steps = run_setup(targets)
    except (OSError, ValueError, RuntimeError, httpx.HTTPError) as exc:
        console.print(problem("error:", exc))
        raise typer.Exit(EXIT_FAILED) from None
    table = Table(title=plain(f"globe-sms setup ({prefect_yaml})"))
    for column in ("kind", "name", "outcome", "detail"):
        table.add_column(column)
    for step in steps:
        table.add_row(*(plain(text) for text in (step.kind, step.name, step.outcome, step.detail)))
    console.print(table)


app.command(name="deploy")(deploy)  # prefect deploy, checked and finished: globe_sms/cli_deploy.py
app.command(name="pause")(pause)  # suspend a campaign's deployment run: globe_sms/cli_operate.py
app.command(name="resume")(resume)


if __name__ == "__main__":
    app()
