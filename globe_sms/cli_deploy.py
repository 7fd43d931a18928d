"""`globe-sms deploy`: `prefect deploy` of `prefect.yaml`, with the checks and the finish it cannot do itself.

1. Refuses (exit 2, one line) a missing or wrong `GLOBE_SMS_HOME` when the pull steps use it: `prefect
   deploy` would store the literal `{{ $GLOBE_SMS_HOME }}`, and every run would then fail on the worker.
2. Runs `prefect --no-prompt deploy --all` (or `--name` for each name given), in the folder of `prefect.yaml`,
   its output shown as it comes.
3. Names the scheduled runs the server creates for the deployments after their campaign
   (`globe_sms.scheduled_names`), waiting up to `--wait` seconds for Prefect's scheduler to create them.

`prefect deploy` itself still works; its runs then fail at once on a worker without the code
(`globe_sms.checkout`), and scheduled runs get their names when a run of the deployment starts.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from globe_sms.terminal import plain, problem

console = Console()
EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


def deployment_names(prefect_yaml: Path, chosen: list[str] | None = None) -> list[str]:
    """The names of the deployments in `prefect_yaml` (those in `chosen` only, if given)."""
    data = yaml.safe_load(prefect_yaml.read_text(encoding="utf-8")) or {}
    names = [d.get("name") for d in data.get("deployments") or [] if isinstance(d, dict)]
    return [n for n in names if isinstance(n, str) and (not chosen or n in chosen)]


def scheduled_deployment_ids(client: Any, names: list[str]) -> tuple[list[Any], list[Any]]:
    """The ids of the deployments called `names`, and of those among them with an active schedule."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    deployments = client.read_deployments(deployment_filter=DeploymentFilter(name=DeploymentFilterName(
        any_=names
    )))
    scheduled = [d.id for d in deployments if any(s.active for s in d.schedules or [])]
    return [d.id for d in deployments], scheduled


def name_runs_after_deploy(names: list[str], wait_seconds: float) -> int:
    """Wait (up to `wait_seconds`) until each scheduled deployment has runs, then name them all."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from globe_sms.scheduled_names import name_scheduled_runs

    with get_client(sync_client=True) as client:
        ids, scheduled = scheduled_deployment_ids(client, names)
        deadline = time.monotonic() + wait_seconds
        for deployment_id in scheduled:
            while time.monotonic() < deadline:
                found = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])), limit=1
                )
                if found:
                    break
                time.sleep(1.0)
        return name_scheduled_runs(client, ids)


def deploy(
    prefect_yaml: Annotated[
        Path, typer.Option("--prefect-yaml", help="The deployments to apply.")
    ] = Path("prefect.yaml"),
    name: Annotated[
        list[str] | None, typer.Option("--name", "-n", help="Only this deployment (repeatable); default all.")
    ] = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the scheduler's first runs, to name them.")
    ] = 30.0,
) -> None:
    """Check GLOBE_SMS_HOME, run `prefect deploy`, and name the scheduled runs after their campaign."""
    import httpx

    from globe_sms.checkout import deploy_time_problem

    prefect_yaml = prefect_yaml.absolute()
    home = deploy_time_problem(prefect_yaml=prefect_yaml)
    if home is not None:
        console.print(problem("error:", home), soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        names = deployment_names(prefect_yaml, name)
    except (OSError, yaml.YAMLError) as exc:
        console.print(problem("error:", exc), soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if not names:
        console.print(problem("error:", f"no deployment {name or ''} in {prefect_yaml}"), soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    selection = [arg for n in name for arg in ("--name", n)] if name else ["--all"]
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", str(prefect_yaml)]
    done = subprocess.run([*command, *selection], cwd=prefect_yaml.parent, check=False)
    if done.returncode != 0:
        console.print(problem("failed:", f"prefect deploy exited with status {done.returncode}"))
        raise typer.Exit(EXIT_FAILED)
    try:
        renamed = name_runs_after_deploy(names, wait)
    except (httpx.HTTPError, RuntimeError) as exc:  # the deployments are there; only names are missing
        console.print(problem("warning:", f"scheduled runs not named: {exc}", style="yellow"), soft_wrap=True)
        return
    console.print(plain(f"globe-sms deploy: {len(names)} deployment(s); {renamed} scheduled run(s) named"))
