"""Stop requests: how a sending run learns, between two batches, that it should stop.

A stop request comes from one of two places, and the send loop (`tasks/send_batches.py`) consults both before
every batch (`StopWatch.reason`):

* **a signal to this process**: SIGINT (Ctrl-C in a terminal) or SIGTERM (`kill`, a service manager, or a
  Prefect worker cancelling the run). While `stop_on_signals()` is active, their handlers only *record* the
  request; no exception interrupts a batch whose request may be on the wire. The exceptions are work that
  sends nothing (`interruptible`): the wait for the account's rate-limit slot, where nothing has been written
  or sent, so a signal ends that wait at once and the batch stays `pending`; and the reading of the
  recipients into the run's spool (`tasks.spool.spool_campaign`), which a signal ends at once too, however
  long the list or slow its source. A second signal is the hard stop: it raises
  `KeyboardInterrupt` wherever the run is (a batch in flight is then recorded `unknown`, never lost).
* **the flow run's own state in Prefect**, read once per batch through the public client: `Cancelling` (Cancel
  in the UI, `prefect flow-run cancel`) and `Paused` (Suspend in the UI, `globe-sms pause`). Prefect turns a
  UI Cancel into a SIGTERM, but a signal that arrives while Python runs a finaliser is swallowed (observed:
  1 cancel in 12 lost, `shared/reference/prefect-notes.md` §10); the flow's own look at its state cannot be.

A stopped run ends as the request asks (`end_stopped_run`): Cancelled (signals, Cancel), or Suspended again
with a timeout that fits campaigns (`SUSPEND_TIMEOUT_SECONDS`, 7 days, instead of the UI dialog's 5 minutes
after which Prefect fails the run). Either way the batch in flight has finished and is recorded, the summary
and batch table are published, and the batches not sent stay `pending`: the next run (or Resume, which runs
the flow again from the start) sends exactly those.

    with stop_on_signals(), StopWatch.for_this_run() as stop:
        for batch in batches:
            if (why := stop.reason()) is not None:
                break
            ...  # send the batch; its pacer wait runs under `interruptible()`
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

logger = logging.getLogger(__name__)

StopKind = Literal["interrupt", "terminate", "cancel", "suspend"]

SUSPEND_TIMEOUT_SECONDS = 7 * 24 * 3600
"""How long a suspended campaign waits for Resume before Prefect fails it ("paused and never resumed").

The UI's Suspend dialog proposes 5 minutes, shorter than any operator's coffee break; a campaign suspended for
a sender-ID question or a balance top-up waits a week, then fails (Retry, or a new run, still sends what is
pending)."""

STOP_EXIT_CODES: dict[StopKind, int] = {"interrupt": 130, "terminate": 143, "cancel": 130, "suspend": 130}
"""The CLI's exit status for a run that stopped on request (128 + the signal's number, as shells report)."""

_SIGNALS: dict[int, tuple[StopKind, str]] = {
    signal.SIGINT: ("interrupt", "Ctrl-C (SIGINT)"),
    signal.SIGTERM: ("terminate", "SIGTERM"),
}


@dataclass(frozen=True)
class StopReason:
    """Why a run stops: `kind` decides how the run ends, `detail` is what the summary says."""

    kind: StopKind
    detail: str

    def __str__(self) -> str:
        return self.detail


class StoppedBeforeSending(Exception):  # noqa: N818 - not an error: the batch was held back on request
    """A stop request arrived during work that sends nothing (`interruptible`): while a batch waited for its
    rate-limit slot (nothing was sent or written, the batch's rows stay `pending`), or while the recipients
    were read. Not retried (`tasks.send.is_transient`)."""


class _WaitInterrupted(BaseException):
    """Raised by the signal handler inside `interruptible()` only; turned into `StoppedBeforeSending`.

    A BaseException, so that no `except Exception` in the wait (the pacer's best-effort calls) swallows it.
    """


class StopRequests:
    """This process's stop requests by signal (signals are per process, so there is one: `STOP_REQUESTS`)."""

    def __init__(self) -> None:
        self._reason: StopReason | None = None
        self._signals = 0
        self._waiting = False
        self._depth = 0
        self._lock = threading.Lock()

    @property
    def requested(self) -> StopReason | None:
        """The first signal's stop request, if any arrived while handlers were installed."""
        return self._reason

    def handle(self, signum: int, frame: Any = None) -> None:
        """The signal handler: record the first signal; a second one is the hard stop."""
        self._signals += 1
        if self._signals > 1:
            raise KeyboardInterrupt(f"second stop request ({signal.Signals(signum).name}): hard stop")
        kind, detail = _SIGNALS.get(signum, ("terminate", signal.Signals(signum).name))
        self._reason = StopReason(kind, detail)
        if self._waiting:
            self._waiting = False
            raise _WaitInterrupted

    @contextmanager
    def on_signals(self) -> Iterator[StopRequests]:
        """Record SIGINT and SIGTERM as stop requests for the block (then put the previous handlers back).

        The outermost block starts a fresh request (a new run in the same process starts unstopped); an inner
        block re-installs the handlers, as Prefect's flow engine replaces SIGTERM's with its own when a flow
        run starts. Outside the main thread (signals cannot be handled there) it installs nothing: the flow
        run's state is still watched.
        """
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        with self._lock:
            if self._depth == 0:
                self._reason, self._signals, self._waiting = None, 0, False
            self._depth += 1
        previous = {signum: signal.signal(signum, self.handle) for signum in _SIGNALS}
        try:
            yield self
        finally:
            with self._lock:
                outermost = self._depth == 1
            flow_run_id = _current_flow_run_id() if outermost else None
            if flow_run_id is not None:  # the flow run's last steps: see `SigtermAfterSending`
                previous[signal.SIGTERM] = SigtermAfterSending(flow_run_id, previous[signal.SIGTERM])
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            with self._lock:
                self._depth -= 1
                if self._depth == 0:  # a later run in this process starts unstopped
                    self._reason, self._signals, self._waiting = None, 0, False

    @contextmanager
    def interruptible(self, doing: str = "waiting to send", before: str = "sending") -> Iterator[None]:
        """Run work that a stop request may end at once, wherever it is: work that sends nothing and
        leaves nothing half-written when an exception ends it (the wait for the rate-limit slot; reading
        the recipients into the run's spool, which is removed then).

        Args:
            doing, before: what the work is, for the exception's text: "stop requested (SIGTERM) while
                {doing}", or "... before {before}" for a request that came before the work began.

        Raises:
            StoppedBeforeSending: a stop was requested before or during the work; nothing was sent.
        """
        if self._reason is not None:
            raise StoppedBeforeSending(f"stop requested ({self._reason}) before {before}")
        self._waiting = True
        try:
            yield
        except _WaitInterrupted:
            raise StoppedBeforeSending(f"stop requested ({self._reason}) while {doing}") from None
        finally:
            self._waiting = False
        if self._reason is not None:  # a request the handler could not raise (e.g. during a finaliser)
            raise StoppedBeforeSending(f"stop requested ({self._reason}) while {doing}")


class SigtermAfterSending:
    """SIGTERM's handler from the end of a flow run's sending block to the end of that flow run.

    A Cancel in the Prefect UI reaches a deployment's run twice: as its state (`Cancelling`, which the run
    reads before every batch) and as the worker's SIGTERM, which can come later, while the run publishes its
    report and sets its own Cancelled state. Outside the sending block, Prefect's handler would turn that
    SIGTERM into `TerminationSignal`, and its engine would then force the run to Crashed, over the Cancelled
    state the flow set (seen once in CI: "Crashed" after a UI Cancel). Nothing is left to stop then: every
    batch has been sent or left `pending`, and the run ends in a moment. So within that flow run the signal is
    only counted; the engine puts its own original handler back when it leaves the run (Prefect's
    `capture_sigterm` does; no public API says so: pinned by tests/integration/test_late_sigterm.py, which
    also checks that the run ends well). In any other flow run (a parent flow that called this one as a
    subflow and goes on) the signal is handed to the handler this one replaced, as if it had never been
    installed.
    """

    def __init__(self, flow_run_id: UUID, previous: Any) -> None:
        self.flow_run_id = flow_run_id
        self.previous = previous
        self.received = 0

    def __call__(self, signum: int, frame: Any = None) -> None:
        if _current_flow_run_id() == self.flow_run_id:
            self.received += 1  # no logging here: a handler may run inside a logging call of the main thread
            return
        signal.signal(signum, self.previous)
        if callable(self.previous):
            self.previous(signum, frame)
        elif self.previous == signal.SIG_DFL:
            os.kill(os.getpid(), signum)  # the default action: end the process


def _current_flow_run_id() -> UUID | None:
    """The id of the flow run this code runs in (its `FlowRunContext`), or None outside a flow run."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return context.flow_run.id if context is not None and context.flow_run is not None else None


STOP_REQUESTS = StopRequests()
"""The process's stop requests; `stop_on_signals()` installs its handlers."""


def stop_if_requested(doing: str) -> None:
    """Between two steps of work that sends nothing (a chunk of recipients registered in the ledger): end it
    if a signal asked the run to stop.

    Raises:
        StoppedBeforeSending: "stop requested (SIGTERM) while {doing}".
    """
    if (reason := STOP_REQUESTS.requested) is not None:
        raise StoppedBeforeSending(f"stop requested ({reason}) while {doing}")


def stop_on_signals() -> Any:
    """`STOP_REQUESTS.on_signals()`: record SIGINT/SIGTERM as stop requests for the block."""
    return STOP_REQUESTS.on_signals()


def interruptible(doing: str = "waiting to send", before: str = "sending") -> Any:
    """`STOP_REQUESTS.interruptible()`: work that a stop request ends at once (`StoppedBeforeSending`)."""
    return STOP_REQUESTS.interruptible(doing, before)


def state_stop_reason(state: Any) -> StopReason | None:
    """The stop a flow run's state asks for: Cancelling/Cancelled -> cancel, Paused/Suspended -> suspend."""
    if state is None:
        return None
    if state.is_cancelling() or state.is_cancelled():
        return StopReason("cancel", "cancelled in Prefect")
    if state.is_paused():
        return StopReason("suspend", f"{(state.name or 'paused').lower()} in Prefect")
    return None


class StopWatch:
    """Signals and this flow run's state, asked once per batch (`reason`); see the module docstring."""

    def __init__(self, flow_run_id: UUID | None, client: Any | None) -> None:
        self.flow_run_id = flow_run_id
        self.client = client
        self.requests = STOP_REQUESTS

    @classmethod
    @contextmanager
    def for_this_run(cls) -> Iterator[StopWatch]:
        """A watch on the current flow run (none outside a flow run: signals only), with its own client."""
        from prefect.runtime import flow_run

        run_id = flow_run.id
        if not run_id:
            yield cls(None, None)
            return
        from globe_sms.pacing import open_pacing_client

        with ExitStack() as stack:
            try:
                # A busy server (503) answers at once instead of after the client's 2-s retry sleep: the read
                # is then skipped for this batch (`state_reason`), not waited for between two batches.
                client = stack.enter_context(open_pacing_client())
            except Exception as exc:  # noqa: BLE001 - without a client, signals still stop the run
                logger.warning("cannot watch the flow run's state for stop requests: %s", exc)
                client = None
            yield cls(UUID(str(run_id)), client)

    def state_reason(self) -> StopReason | None:
        """A stop asked through the flow run's state (one read); None if none, or the server is silent."""
        if self.client is None or self.flow_run_id is None:
            return None
        try:
            run = self.client.read_flow_run(self.flow_run_id)
        except Exception as exc:  # noqa: BLE001 - a batch's own calls will meet a lasting outage
            logger.debug("cannot read flow run %s: %s", self.flow_run_id, exc)
            return None
        return state_stop_reason(run.state)

    def reason(self) -> StopReason | None:
        """Why to stop before the next batch, or None to send it: a Prefect state first (it says how to
        end: cancel or suspend), then a signal."""
        return self.state_reason() or self.requests.requested

    def reason_work_stopped(self) -> StopReason:
        """Why work that a stop request cut short (`interruptible`, `stop_if_requested`) stopped: the run's
        state if it asks for a stop, else the signal that ended the work."""
        return self.reason() or StopReason("cancel", "stop requested")


def end_stopped_run(reason: StopReason, summary: Any) -> Any:
    """How a flow run that stopped on request ends, once its summary (a `CampaignSummary`) is published.

    Returns:
        For a run outside a deployment (`globe-sms send`, a script): a Cancelled state, its message
        `stopped after batch N (why); M pending` and its data the summary, for the flow to return (Prefect
        makes a returned state the run's final state; `return_state=True` callers read the summary with
        `state.result(raise_on_failure=False)`).

    Raises:
        prefect.exceptions.Pause: for a suspended deployment run, once its Suspended state carries a timeout
            of `SUSPEND_TIMEOUT_SECONDS`: the flow engine ends the process and Resume reruns the flow.
        prefect.exceptions.Abort: for a deployment run, once its state is Cancelled (with that message).
            A deployment's run is executed by Prefect's engine, which reads the returned state's result and
            logs a returned Cancelled state as "Engine execution exited with unexpected exception" with a
            traceback; `Abort` is how Prefect itself leaves a run whose state the orchestrator decided: the
            process exits 0 and the worker records nothing more (tests/integration/test_stop_deployments.py).
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import Abort
    from prefect.runtime import flow_run
    from prefect.states import Cancelled

    message = summary.stop_text() or f"stopped ({reason})"
    if reason.kind == "suspend":
        suspend_again(message)  # raises Pause, unless Prefect could not resume this run
        message += (
            "; it was suspended, but it runs outside a deployment (e.g. `globe-sms send`), which Prefect "
            "cannot resume: cancelled instead, run it again to send the rest"
        )
    if flow_run.id:
        with get_client(sync_client=True) as client:
            run_id = UUID(str(flow_run.id))
            if client.read_flow_run(run_id).deployment_id is not None:
                client.set_flow_run_state(run_id, Cancelled(message=message))
                raise Abort(message)
    return Cancelled(message=message, data=summary)


def end_run_stopped_while_reading(stop: StopWatch, campaign_id: str, dry_run: bool) -> Any:
    """`end_stopped_run` for a run whose reading of its recipients a stop request cut short (the
    `spool-campaign` task run ended Cancelled): nothing was registered or sent."""
    from tasks.report import CampaignSummary

    why = stop.reason_work_stopped()
    return end_stopped_run(why, CampaignSummary.stopped_reading(campaign_id, dry_run, str(why)))


def suspend_again(message: str) -> None:
    """Re-enter Suspended with the campaign's timeout, then leave the flow run the way Prefect's own
    `suspend_flow_run` does (raise `Pause`): the process ends, the worker is free, Resume reschedules it.
    Returns (without suspending) only for a run of no deployment, which Prefect cannot resume.

    The UI's Suspend sets `Paused`/`Suspended` with `pause_reschedule` and a 5-minute `pause_timeout`, after
    which Prefect's pause-expiration service fails the run. No public call extends a timeout, and a run that
    is no longer Running cannot propose a new pause (`HandlePausingFlows`), so the state is written with
    `force=True` (public `set_flow_run_state`), keeping it Suspended with a reschedule and a longer timeout.
    The gap between reading Paused and this write is one batch boundary; a Resume in it is undone (the run
    stays Suspended, and Resume works again). Pinned by tests/integration/test_stop_requests.py.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import Pause
    from prefect.runtime import flow_run
    from prefect.states import Cancelling, Suspended

    run_id = UUID(str(flow_run.id))
    until = datetime.now(UTC) + timedelta(seconds=SUSPEND_TIMEOUT_SECONDS)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        state = run.state
        if run.deployment_id is None:
            # The default UI forces its Suspend, even on a run of no deployment, which Prefect then refuses
            # to resume or end ("Cannot reschedule a suspended flow run without a deployment"): undo it as
            # a cancel, so that the flow's Cancelled state is accepted.
            if state is not None and state.is_paused():
                client.set_flow_run_state(run_id, Cancelling(message=message), force=True)
            return
        if state is not None and state.is_paused():
            suspended = Suspended(pause_expiration_time=until, message=message)
            suspended.state_details.pause_key = state.state_details.pause_key
            client.set_flow_run_state(run_id, suspended, force=True)
            state = client.read_flow_run(run_id).state
        # else resumed (Scheduled) or cancelled meanwhile: leave that state as it is, and end this process.
    raise Pause(message, state=state)
