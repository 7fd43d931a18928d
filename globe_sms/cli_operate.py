"""Operating running campaigns from a terminal: `globe-sms pause` / `globe-sms resume`, and what
`globe-sms send` needs so that Ctrl-C stops it cleanly (`shield_temporary_server`).

**Pause and resume** act on a campaign's flow run on the configured Prefect server (`PREFECT_API_URL`),
found by its name (a campaign's runs are named after it: `welcome-2026-11`, `resend-welcome-2026-11`):

* `pause` suspends the running flow run as the UI's Suspend does (`prefect.flow_runs.suspend_flow_run`), with
  the campaign timeout `tasks.stop.SUSPEND_TIMEOUT_SECONDS` (7 days) instead of the UI's 5 minutes. The run
  stops after the batch in flight, publishes its summary so far, and its process ends, freeing the worker.
  Prefect suspends only runs of a deployment: a `globe-sms send` in another terminal is stopped with Ctrl-C
  there, and running it again sends what is pending.
* `resume` resumes it (`prefect.flow_runs.resume_flow_run`, the UI's Resume): Prefect schedules the run again,
  a worker runs the flow from the start, and the ledger sends only the recipients still pending.

**The temporary server and Ctrl-C.** Without `PREFECT_API_URL`, Prefect starts a temporary server as a child
process of `globe-sms send`, in the same process group: a Ctrl-C in the terminal reaches it too, and it shuts
down while the run still has a batch to record and a summary to publish. `shield_temporary_server` starts it
before the run with SIGINT blocked, a mask the child inherits, so that Ctrl-C reaches only `globe-sms send`
(which stops between batches, `tasks/stop.py`); Prefect still stops the server (SIGTERM) when the command
ends.
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Any

import typer
from rich.console import Console

from globe_sms.terminal import plain, problem

console = Console()

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def shield_temporary_server() -> None:
    """Start Prefect's temporary server now (if no `PREFECT_API_URL` is set), out of reach of Ctrl-C.

    Prefect keeps one temporary server per process and starts it on the first client, so the flow run that
    follows uses this one. SIGINT is blocked in this thread while the server's process is created (the
    child inherits the mask, and uvicorn's handler never sees the signal) and unblocked right after: a
    Ctrl-C pressed meanwhile is delivered then, to this process's stop handler.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value() or threading.current_thread() is not threading.main_thread():
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        with get_client(sync_client=True):
            pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def campaign_runs(client: Any, campaign_id: str, state_type: str) -> list[Any]:
    """The flow runs of a campaign (`<id>`, `resend-<id>`) in a state of `state_type` (RUNNING, PAUSED)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    wanted = FlowRunFilter(
        name=FlowRunFilterName(any_=[campaign_id, f"resend-{campaign_id}"]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(state_type)])),
    )
    return list(client.read_flow_runs(flow_run_filter=wanted))


def _configured_server() -> None:
    """Exit 2 with one line unless a Prefect server is configured."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        console.print(
            problem(
                "error:",
                "no Prefect server configured (PREFECT_API_URL). A `globe-sms send` on Prefect's temporary "
                "server is stopped with Ctrl-C in its terminal; running it again sends what is pending.",
            ),
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_BAD_INPUT)


def pause(
    campaign_id: Annotated[str, typer.Argument(help="The campaign id (its flow run's name).")],
) -> None:
    """Suspend a campaign's running deployment run after the batch in flight (resume with `globe-sms resume`).

    It waits up to 7 days for the resume, then Prefect fails it (a new run then sends what is pending).
    """
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import suspend_flow_run

    from tasks.stop import SUSPEND_TIMEOUT_SECONDS

    _configured_server()
    with get_client(sync_client=True) as client:
        runs = campaign_runs(client, campaign_id, "RUNNING")
    if not runs:
        console.print(problem("error:", f"no running flow run of campaign {campaign_id}"), soft_wrap=True)
        raise typer.Exit(EXIT_FAILED)
    status = EXIT_OK
    for run in runs:
        if run.deployment_id is None:
            console.print(
                problem(
                    "error:",
                    f"flow run {run.name} ({run.id}) was started from a terminal, not a deployment, and "
                    "Prefect suspends deployment runs only: stop it with Ctrl-C there; running it again "
                    "sends what is pending.",
                ),
                soft_wrap=True,
            )
            status = EXIT_BAD_INPUT
            continue
        try:
            suspend_flow_run(flow_run_id=run.id, timeout=SUSPEND_TIMEOUT_SECONDS)
        except RuntimeError as exc:  # no longer running, or refused by the server
            console.print(problem("error:", f"flow run {run.name} ({run.id}): {exc}"), soft_wrap=True)
            status = EXIT_FAILED
            continue
        console.print(
            plain(
                f"suspending flow run {run.name} ({run.id}): it stops after the batch in flight and waits "
                f"up to 7 days; `globe-sms resume {campaign_id}` sends what is pending"
            ),
            soft_wrap=True,
        )
    raise typer.Exit(status)


def resume(
    campaign_id: Annotated[str, typer.Argument(help="The campaign id (its flow run's name).")],
) -> None:
    """Resume a suspended campaign run: it runs again from the start and sends only what is pending."""
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    _configured_server()
    with get_client(sync_client=True) as client:
        runs = campaign_runs(client, campaign_id, "PAUSED")
    if not runs:
        console.print(problem("error:", f"no suspended flow run of campaign {campaign_id}"), soft_wrap=True)
        raise typer.Exit(EXIT_FAILED)
    status = EXIT_OK
    for run in runs:
        try:
            resume_flow_run(run.id)
        except Exception as exc:  # noqa: BLE001 - Prefect's refusals (timed out, not paused) in one line
            console.print(problem("error:", f"flow run {run.name} ({run.id}): {exc}"), soft_wrap=True)
            status = EXIT_FAILED
            continue
        console.print(
            plain(f"resumed flow run {run.name} ({run.id}): it sends the recipients still pending"),
            soft_wrap=True,
        )
    raise typer.Exit(status)
