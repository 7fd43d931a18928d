"""Deployments that explain themselves, against a real `prefect server start` and a real process worker.

* `globe-sms setup` and `globe-sms deploy` refuse a missing, relative or wrong GLOBE_SMS_HOME with one line;
* deployed without it anyway (`prefect deploy`, as a user may), a run on a worker that has no GLOBE_SMS_HOME
  either fails at once: one line on the worker's terminal, no traceback, the flow run `Failed` with that line
  as its message (Prefect does not turn it into `Crashed` afterwards) and named after its campaign;
* `globe-sms deploy` names the weekly schedule's upcoming runs after their dated campaign;
* the command `prefect deploy` suggests for `on-request` works: a dry run of the example, Completed.

The harness is tests/integration/test_workers.py's `PrefectStack` (own server, home and worker processes);
the pieces
(`globe_sms.checkout`, `globe_sms.scheduled_names`) are unit-tested in tests/unit/test_deploy_checks.py.

Here: the part that needs servers or processes; the pure part is in tests/unit/test_deploy_checks.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.integration.test_workers import ROOT, PrefectStack

pytestmark = pytest.mark.timeout(420)


def run(stack: PrefectStack, *args: str, home: str | None) -> subprocess.CompletedProcess[str]:
    """A command in the stack's environment, with GLOBE_SMS_HOME set to `home` (None: unset)."""
    env = dict(stack.env)
    env.pop("GLOBE_SMS_HOME", None)
    if home is not None:
        env["GLOBE_SMS_HOME"] = home
    return subprocess.run(list(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def wait_final(api_url: str, flow_run_id: Any, timeout: float = 150) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + timeout
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state is not None and flow_run.state.is_final():
                return flow_run
            time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} not finished after {timeout} s")


@pytest.mark.parametrize("command", ["setup", "deploy"])
@pytest.mark.parametrize("home", [None, "", "relative/path", "nowhere", "elsewhere"])
def test_the_commands_refuse_a_home_without_the_code(
    command: str, home: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing, empty, relative, absent, or a folder without the code: one line, exit 2, before any server."""
    from typer.testing import CliRunner

    from globe_sms.cli import app

    monkeypatch.delenv("GLOBE_SMS_HOME", raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # no server: refused before it is asked
    paths = {"nowhere": str(tmp_path / "nowhere"), "elsewhere": str(tmp_path)}
    env = {} if home is None else {"GLOBE_SMS_HOME": paths.get(home, home)}
    done = CliRunner().invoke(app, [command], env=env)
    assert done.exit_code == 2, (done.output, done.exception)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: GLOBE_SMS_HOME"), done.stdout
    assert "docs/deployments.md" in lines[0]


def test_deployments_explain_themselves(tmp_path: Path) -> None:
    """From a missing GLOBE_SMS_HOME to named scheduled runs and a working suggested command."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    globe_sms = (sys.executable, "-m", "globe_sms.cli")
    stack = PrefectStack(tmp_path / "prefect")
    try:
        stack.start_server()
        # 1. setup and deploy refuse what would deploy a path without the code: one line, exit 2 (every case
        # in-process: test_the_commands_refuse_a_home_without_the_code; one on a real terminal here).
        done = run(stack, *globe_sms, "deploy", home="relative/path")
        assert done.returncode == 2, (done.stdout, done.stderr)
        lines = done.stdout.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: GLOBE_SMS_HOME"), done.stdout
        assert "docs/deployments.md" in lines[0] and "Traceback" not in done.stderr
        assert run(stack, *globe_sms, "setup", home=str(ROOT)).returncode == 0

        # 2. `prefect deploy` without it stores the placeholder; a worker without it fails the run at once.
        done = run(stack, sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", home=None)
        assert done.returncode == 0, done.stdout + done.stderr
        with temporary_settings({PREFECT_API_URL: stack.api_url}), get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("send-campaign/send-campaign")
            assert deployment.pull_steps == [
                {"globe_sms.checkout.enter_checkout": {"directory": "{{ $GLOBE_SMS_HOME }}"}}
            ]
            lost = client.create_flow_run_from_deployment(deployment.id)
        worker_env = {k: v for k, v in stack.env.items() if k != "GLOBE_SMS_HOME"}
        log = (stack.home / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "globe-sms", "--type", "process",
             "--name", "worker", "--limit", "1"],
            cwd=tmp_path, env=worker_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        stack.processes.append(("worker", worker))
        failed = wait_final(stack.api_url, lost.id)
        assert failed.state.is_failed(), failed.state
        assert failed.state.message.startswith(
            "the worker cannot find the globe-sms code: GLOBE_SMS_HOME was not set when deploying"
        )
        assert failed.name == "welcome-2026-11"  # named after its campaign, though the flow never started
        time.sleep(3)  # the worker's own report of the exit comes after the state was set
        assert wait_final(stack.api_url, lost.id).state.is_failed(), "Prefect kept the message"
        worker_log = stack.log("worker", tail=None)
        assert "Traceback" not in worker_log, worker_log
        said = [line for line in worker_log.splitlines() if "cannot find the globe-sms code" in line]
        assert len(said) == 1 and "set GLOBE_SMS_HOME when deploying" in said[0], worker_log

        # 3. `globe-sms deploy` with it: the deployments, and the weekly runs named after their campaign.
        done = run(stack, *globe_sms, "deploy", home=str(ROOT))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "scheduled run(s) named" in done.stdout
        with temporary_settings({PREFECT_API_URL: stack.api_url}), get_client(sync_client=True) as client:
            weekly = client.read_deployment_by_name("send-campaign/weekly-news")
            assert weekly.pull_steps == [{"globe_sms.checkout.enter_checkout": {"directory": str(ROOT)}}]
            from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

            upcoming = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[weekly.id]))
            )
        assert upcoming, "the scheduler created the weekly runs"
        for flow_run in upcoming:
            monday = flow_run.expected_start_time.astimezone(ZoneInfo("Asia/Singapore")).date()
            assert flow_run.name == f"weekly-news-{monday.isoformat()}", flow_run.name

        # 4. The command `prefect deploy` suggests for on-request: a dry run of the example, on the worker.
        suggested = "prefect deployment run 'send-campaign/on-request'"
        assert suggested in done.stdout + done.stderr  # still suggested, so it must work
        started = run(stack, sys.executable, "-m", "prefect", "deployment", "run", "send-campaign/on-request",
                      home=None)
        assert started.returncode == 0, started.stdout + started.stderr
        with temporary_settings({PREFECT_API_URL: stack.api_url}), get_client(sync_client=True) as client:
            on_request = client.read_deployment_by_name("send-campaign/on-request")
            [by_hand] = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[on_request.id]))
            )
        finished = wait_final(stack.api_url, by_hand.id)
        assert finished.state.is_completed(), f"{finished.state}\n{stack.log('worker')}"
        assert finished.name == "welcome-2026-11" and finished.parameters["campaign"]["dry_run"] is True
    finally:
        stack.stop()
