"""Serve the `send_campaign` flow as a deployment, the way an operator runs it
(tests/integration/test_ui_retry.py).

    PREFECT_API_URL=... PREFECT_RUNNER_POLL_FREQUENCY=1 python -m tests.chaos.serve_campaign DEPLOYMENT_NAME

`prefect.serve` registers `send-campaign/DEPLOYMENT_NAME` and polls for its scheduled runs, each executed in
its own subprocess; a run set back to `Scheduled`/`AwaitingRetry` (the UI's Retry) is picked up the same way.
It runs until killed.
"""

from __future__ import annotations

import sys

from prefect import serve

from flows.send_campaign import send_campaign

if __name__ == "__main__":
    serve(send_campaign.to_deployment(name=sys.argv[1]), print_starting_message=False)
