"""Stop requests (tasks/stop.py): signal handlers that only record, the interruptible rate-limit wait, what a
flow run's state asks for, and the texts a stopped run shows. The runs themselves (Ctrl-C to `globe-sms send`,
Cancel and Suspend of a served deployment) are in tests/integration/test_stop_{requests,deployments}.py.
"""

from __future__ import annotations

import os
import signal
from uuid import uuid4

import pytest
from prefect.states import Cancelled, Cancelling, Completed, Paused, Running, Suspended

from tasks.report import CampaignSummary
from tasks.send import batch_table_description
from tasks.stop import (
    STOP_EXIT_CODES,
    SigtermAfterSending,
    StoppedBeforeSending,
    StopReason,
    StopRequests,
    StopWatch,
    state_stop_reason,
)


def test_a_signal_inside_the_block_is_recorded_not_raised_and_the_handlers_are_put_back() -> None:
    requests = StopRequests()
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with requests.on_signals():
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: no KeyboardInterrupt
        assert requests.requested == StopReason("interrupt", "Ctrl-C (SIGINT)")
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert requests.requested is None  # a later run in this process starts unstopped


def test_sigterm_is_recorded_as_terminate_and_a_second_signal_is_the_hard_stop() -> None:
    requests = StopRequests()
    with requests.on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        assert requests.requested is not None and requests.requested.kind == "terminate"
        with pytest.raises(KeyboardInterrupt, match="hard stop"):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler raises at the next bytecode of this loop
                pass


def test_an_inner_block_keeps_the_outer_request_and_reinstalls_the_handlers() -> None:
    """The CLI's block holds the request across the flow's own block (Prefect replaces SIGTERM's handler
    between the two)."""
    requests = StopRequests()
    with requests.on_signals():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # what a flow engine's own handler stands for
        with requests.on_signals():
            assert signal.getsignal(signal.SIGTERM) == requests.handle
            os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        assert requests.requested is not None and requests.requested.kind == "terminate"


def test_a_signal_during_the_wait_ends_it_at_once_as_stopped_before_sending() -> None:
    requests = StopRequests()
    reached_the_end = False
    with requests.on_signals(), pytest.raises(StoppedBeforeSending, match="while waiting"):
        with requests.interruptible():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler raises at the next bytecode of this loop
                pass
            reached_the_end = True
    assert not reached_the_end


def test_a_request_before_the_wait_holds_the_batch_back_and_outside_the_wait_nothing_is_raised() -> None:
    requests = StopRequests()
    with requests.on_signals():
        with requests.interruptible():
            pass  # no request: the wait completes
        os.kill(os.getpid(), signal.SIGINT)  # between batches: recorded only
        with pytest.raises(StoppedBeforeSending, match="before sending"), requests.interruptible():
            raise AssertionError("the wait must not start")


def test_a_request_the_handler_could_not_raise_still_holds_the_batch_back() -> None:
    """A signal whose handler ran where its exception was swallowed (a finaliser) still stops the batch."""
    requests = StopRequests()
    with pytest.raises(StoppedBeforeSending), requests.interruptible():
        requests._waiting = False  # noqa: SLF001 - the handler then records without raising
        requests.handle(signal.SIGTERM)


@pytest.mark.parametrize(
    ("state", "kind", "detail"),
    [
        (Cancelling(), "cancel", "cancelled in Prefect"),
        (Cancelled(), "cancel", "cancelled in Prefect"),
        (Suspended(timeout_seconds=300), "suspend", "suspended in Prefect"),
        (Paused(timeout_seconds=300), "suspend", "paused in Prefect"),
        (Running(), None, None),
        (Completed(), None, None),
        (None, None, None),
    ],
)
def test_what_a_flow_runs_state_asks_for(state: object, kind: str | None, detail: str | None) -> None:
    reason = state_stop_reason(state)
    assert (reason.kind if reason else None, reason.detail if reason else None) == (kind, detail)


def test_outside_a_flow_run_the_watch_reads_no_state() -> None:
    watch = StopWatch(None, None)
    assert watch.state_reason() is None and watch.reason() is None


def test_exit_statuses_are_128_plus_the_signal() -> None:
    assert STOP_EXIT_CODES["interrupt"] == 128 + signal.SIGINT
    assert STOP_EXIT_CODES["terminate"] == 128 + signal.SIGTERM


def test_the_summary_says_where_the_run_stopped_and_what_is_pending() -> None:
    summary = CampaignSummary(campaign_id="c", dry_run=False, pending=40)
    assert summary.stop_text() is None
    assert "Stopped on request" not in summary.to_markdown()
    summary.stopped, summary.stopped_after_batch = "Ctrl-C (SIGINT)", 5
    assert summary.stop_text() == "stopped after batch 5 (Ctrl-C (SIGINT)); 40 pending"
    assert summary.stop_text(pending=1234) == "stopped after batch 5 (Ctrl-C (SIGINT)); 1,234 pending"
    stopped = "**Stopped on request:** stopped after batch 5 (Ctrl-C (SIGINT)); 40 pending"
    assert stopped in summary.to_markdown()
    summary.stopped_after_batch = None
    assert summary.stop_text() == "stopped before its first batch (Ctrl-C (SIGINT)); 40 pending"
    summary.stopped_after_batch = 7  # the lanes number chunks and batches from one sequence
    summary.send_via = "single"
    assert summary.stop_text() == "stopped after chunk 7 (Ctrl-C (SIGINT)); 40 pending"
    summary.send_via = "both"
    assert summary.stop_text() == "stopped after chunk or batch 7 (Ctrl-C (SIGINT)); 40 pending"


def test_a_run_stopped_while_reading_says_nothing_was_sent_and_counts_nothing() -> None:
    summary = CampaignSummary.stopped_reading("c", False, "SIGTERM")
    assert summary.stop_text() == "stopped while reading its recipients (SIGTERM); nothing was sent"
    assert summary.stopped_while_reading and summary.planned == summary.pending == 0


def test_the_interruptible_work_is_named_in_the_stop() -> None:
    requests = StopRequests()
    with requests.on_signals():
        with pytest.raises(StoppedBeforeSending, match=r"^stop requested \(SIGTERM\) while reading it$"):
            with requests.interruptible("reading it", "reading"):
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):
                    pass
        with pytest.raises(StoppedBeforeSending, match=r"^stop requested \(SIGTERM\) before reading$"):
            with requests.interruptible("reading it", "reading"):
                raise AssertionError("the work must not start")


def test_a_stopped_runs_batch_table_says_so() -> None:
    plain = "Batches of this run: 15 of 15 planned; failed numbers masked"
    assert batch_table_description(15, 15, 15) == plain
    assert batch_table_description(0, 0, 15, "stopped before its first batch (SIGTERM); 60 pending") == (
        "Stopped before its first batch (SIGTERM); 60 pending. Batches of this run: 0 of 15 planned; "
        "failed numbers masked"
    )


def test_after_the_sending_block_a_sigterm_of_another_flow_run_goes_to_the_handler_it_replaced() -> None:
    """Outside the flow run whose sending ended (here: no flow run), the handler steps aside for good."""
    seen: list[int] = []
    before = signal.getsignal(signal.SIGTERM)
    try:
        handler = SigtermAfterSending(uuid4(), lambda signum, frame: seen.append(signum))
        signal.signal(signal.SIGTERM, handler)
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM] and handler.received == 0
        assert signal.getsignal(signal.SIGTERM) is handler.previous  # put back: the next one goes there too
    finally:
        signal.signal(signal.SIGTERM, before)


def test_outside_a_flow_run_the_outermost_block_puts_the_previous_sigterm_handler_back() -> None:
    requests = StopRequests()
    with requests.on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
    assert not isinstance(signal.getsignal(signal.SIGTERM), SigtermAfterSending)
