"""The chaos child: run one campaign in this process, to be SIGKILLed at any point.

    PREFECT_API_URL=http://127.0.0.1:PORT/api python -m tests.chaos.runner CAMPAIGN.json

The campaign file is `Campaign.model_dump_json()`. Exit status: 0 the flow completed (every planned batch
has an outcome), 3 `CampaignFailed` (a permanent error or exhausted retries stopped it; the rest is pending
for the next run), 1 anything else. The driver also starts this module's `child_main` through a forkserver
that has imported it once, so that a child starts in milliseconds instead of the ~4 s of importing Prefect.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from flows.send_campaign import send_campaign  # imported here so the forkserver preloads it
from globe_sms.campaign import Campaign
from tasks.send_batches import CampaignFailed

EXIT_COMPLETED, EXIT_CRASHED, EXIT_STOPPED = 0, 1, 3


def run(campaign_file: str | Path) -> int:
    """Run the campaign once; return the exit status."""
    campaign = Campaign.model_validate_json(Path(campaign_file).read_text(encoding="utf-8"))
    try:
        send_campaign(campaign)
    except CampaignFailed as exc:
        print(f"stopped: {exc}", file=sys.stderr)  # noqa: T201 - the child's log file
        return EXIT_STOPPED
    except Exception:  # noqa: BLE001 - reported to the driver as a crash, with the traceback in the log
        traceback.print_exc()
        return EXIT_CRASHED
    return EXIT_COMPLETED


def child_main(campaign_file: str, api_url: str, env: dict[str, str], log_file: str) -> None:
    """The forked child's entry point: own log file, the Prefect API to use, then `run`."""
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(env)
    os.environ["PREFECT_API_URL"] = api_url
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        code = run(campaign_file)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown: nothing of the forkserver's state needs cleaning


if __name__ == "__main__":
    sys.exit(run(sys.argv[1]))
