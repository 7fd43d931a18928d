"""Flow runs that get a SIGTERM late: after their sending block has ended (tasks/stop.py,
`SigtermAfterSending`; tests/integration/test_late_sigterm.py). Each runs in its own process, because
without that handler Prefect's engine ends the process on such a signal.

    PREFECT_API_URL=... python -m tests.chaos.late_sigterm campaign FLOW_RUN_ID
        the deployment run FLOW_RUN_ID of `send_campaign`, executed here the way a worker's child process does
        (`prefect.flow_engine.run_flow`); once the run has stopped and before it sets its own Cancelled
        state, this process receives the SIGTERM a worker sends for a UI Cancel
    PREFECT_API_URL=... python -m tests.chaos.late_sigterm alone
        a flow whose sending block has ended gets a SIGTERM; prints how it ended
    PREFECT_API_URL=... python -m tests.chaos.late_sigterm parent
        a parent flow gets a SIGTERM after its subflow's sending block has ended (the parent is stopped)
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any
from uuid import UUID

from prefect import flow

from tasks.stop import stop_on_signals


def _sigterm_to_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.3)  # the handler runs here, in the main thread


@flow
def sending_block_then_sigterm() -> str:
    with stop_on_signals():
        pass
    _sigterm_to_self()
    return "ended as it was going to"


@flow
def parent_of_a_sending_flow() -> str:
    sending_block_then_sigterm()
    _sigterm_to_self()
    time.sleep(5)
    return "the parent was not stopped"


def run_campaign(flow_run_id: UUID) -> None:
    """Execute a deployment run of `send_campaign`, with a SIGTERM just before the run ends itself."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    import flows.send_campaign as module

    end_stopped_run = module.end_stopped_run

    def end_with_a_late_sigterm(reason: Any, summary: Any) -> Any:
        _sigterm_to_self()
        return end_stopped_run(reason, summary)

    module.end_stopped_run = end_with_a_late_sigterm
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
    run_flow(module.send_campaign, flow_run=flow_run)


if __name__ == "__main__":
    if sys.argv[1] == "campaign":
        from prefect.exceptions import Abort

        try:
            run_campaign(UUID(sys.argv[2]))
        except Abort as ended:  # as a worker's child process does: the run set its own final state
            sys.stdout.write(f"aborted by orchestrator: {ended}\n")
    elif sys.argv[1] == "alone":
        state = sending_block_then_sigterm(return_state=True)
        sys.stdout.write(f"{state.type.value} {state.result(raise_on_failure=False)}\n")
        after = signal.getsignal(signal.SIGTERM)  # once the flow run has ended: Prefect put its original back
        name = after.name if isinstance(after, signal.Handlers) else type(after).__name__
        sys.stdout.write(f"SIGTERM handler after the run: {name}\n")
    else:
        sys.stdout.write(f"{parent_of_a_sending_flow()}\n")
