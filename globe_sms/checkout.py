"""Where workers find the globe-sms code: `GLOBE_SMS_HOME`, checked when deploying and when a run starts.

The deployments in `prefect.yaml` run the code of a checkout on the worker machine, at the path `prefect
deploy` reads from `GLOBE_SMS_HOME` (`{{ $GLOBE_SMS_HOME }}` in the pull step). Deployed without it, the
deployment keeps the placeholder, and Prefect fills it from the worker's own environment when a run starts
(an empty path if the worker has none either).

* `globe-sms setup` and `globe-sms deploy` refuse a missing, relative or wrong `GLOBE_SMS_HOME`
  (`deploy_time_problem`) when `prefect.yaml`'s pull steps use it, before anything is deployed;
* the deployments' pull step `globe_sms.checkout.enter_checkout` checks the path on the worker, then makes it
  the run's working directory, as Prefect's `set_working_directory` does. A path without the code stops the
  run at once: one line on the worker's terminal, and the flow run `Failed` with that line as its message
  (no traceback: a worker cannot load a flow whose code is missing, and Prefect would print several).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import yaml

HOME_ENV = "GLOBE_SMS_HOME"
MARKER = "prefect.yaml"  # every checkout has it; `prefect deploy` read it
DOCS = "docs/deployments.md"


def home_problem(directory: str | None) -> str | None:
    """Why `directory` cannot be the globe-sms checkout of the deployments, or None when it can."""
    text = (directory or "").strip()
    if not text or "{{" in text:
        return f"{HOME_ENV} is not set"
    path = Path(text).expanduser()
    if not path.is_absolute():
        return f"{HOME_ENV} must be an absolute path, not {text!r}"
    if not path.is_dir():
        return f"{HOME_ENV} is {text}, which is not a directory"
    if not (path / MARKER).is_file():
        return f"{HOME_ENV} is {text}, which is not a globe-sms checkout (no {MARKER} in it)"
    return None


def pulls_from_home(prefect_yaml: Path) -> bool:
    """Whether a pull step of `prefect_yaml` (top-level or a deployment's) names `$GLOBE_SMS_HOME`."""
    data = yaml.safe_load(prefect_yaml.read_text(encoding="utf-8")) or {}
    steps = [data.get("pull")]
    steps += [d.get("pull") for d in data.get("deployments") or [] if isinstance(d, dict)]
    return f"${HOME_ENV}" in json.dumps(steps, default=str)


def deploy_time_problem(
    environ: Mapping[str, str] | None = None, prefect_yaml: Path | None = None
) -> str | None:
    """The one line `globe-sms setup` / `deploy` print when `GLOBE_SMS_HOME` would deploy a path without the
    code; None when it is right, or when `prefect_yaml` (if given, and readable) does not use it."""
    env = os.environ if environ is None else environ
    try:
        if prefect_yaml is not None and not pulls_from_home(prefect_yaml):
            return None
    except (OSError, yaml.YAMLError):
        pass  # the command reports the file itself
    problem = home_problem(env.get(HOME_ENV))
    if problem is None:
        return None
    return (
        f"{problem}: set it to the absolute path of the globe-sms checkout, the same on every worker "
        f"(e.g. {HOME_ENV}=$PWD) before deploying ({DOCS})"
    )


def run_time_problem(directory: str | None) -> str | None:
    """The one line a worker prints when it cannot run the code at `directory`, or None."""
    text = (directory or "").strip()
    if home_problem(text) is None:
        return None
    if not text or "{{" in text:
        return (
            f"the worker cannot find the globe-sms code: {HOME_ENV} was not set when deploying (nor on this "
            f"worker); set {HOME_ENV} when deploying ({DOCS})"
        )
    return f"the worker cannot find the globe-sms code at {text}: set {HOME_ENV} when deploying ({DOCS})"


def enter_checkout(directory: str | None = None) -> dict[str, str]:
    """Pull step: make the checkout at `directory` the working directory; stop the run if it is not one.

    Returns `{"directory": <absolute path>}`, as `prefect.deployments.steps.set_working_directory` does.
    """
    problem = run_time_problem(directory)
    if problem is not None:
        stop_flow_run(problem)
    os.chdir(Path(str(directory).strip()).expanduser())
    return {"directory": os.getcwd()}


def stop_flow_run(message: str) -> NoReturn:
    """End the flow run this process prepares as `Failed(message)` (named after its campaign, as the flow
    would have named it), print `message` once, and exit 1.

    The state is set first, so the worker's own report ("Process exited with status code: 1", which would
    mark the run Crashed) cannot replace the message: Prefect does not move a finished run to Crashed.
    SystemExit rather than an exception, so that Prefect prints no traceback for it.
    """
    print(f"globe-sms: {message}", file=sys.stderr, flush=True)  # noqa: T201 - the worker's terminal
    try:
        from prefect.client.orchestration import get_client
        from prefect.runtime import flow_run
        from prefect.states import Failed

        from globe_sms.scheduled_names import campaign_run_name

        if flow_run.id:
            with get_client(sync_client=True) as client:
                run = client.read_flow_run(flow_run.id)
                name = campaign_run_name(run.parameters or {}, run.expected_start_time)
                if name and name != run.name:  # the flow, which names runs, will not start
                    client.update_flow_run(run.id, name=name)
                client.set_flow_run_state(run.id, Failed(message=message), force=True)
    except Exception as exc:  # noqa: BLE001 - the line above already says what is wrong
        print(f"globe-sms: could not mark the flow run failed: {exc}", file=sys.stderr)  # noqa: T201
    raise SystemExit(1)
