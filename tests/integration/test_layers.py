"""One import direction: models at the bottom, stages above them, flows on top, the CLI over everything.

| layer | what it holds | may import (of ours) |
|---|---|---|
| the CLI, `globe_sms/cli*.py` | `globe-sms ...` commands | everything |
| `flows` | `@flow` bodies | tasks, globe_sms, schemas, alibaba_sms |
| `tasks` | what a run does: stage functions and their `@task`s | globe_sms, schemas, alibaba_sms |
| `globe_sms` | what a campaign is and stores: models, ids, ledger, receipts, gateway | schemas, alibaba_sms |
| `schemas` | pandera models, tables from phonenumbers metadata, segment limits | alibaba_sms |
| `alibaba_sms` | the API client, signing, errors, the emulator; never Prefect | nothing |

And no module imports a private module or name (`_x`) of another package, ours or a dependency's: a private
module belongs to its package (`globe_sms.ledger._sql` is for `globe_sms.ledger.*`), a private name to its
module. Every import counts, lazy ones inside functions too (files are parsed with `ast`, never imported); the
test names each offending edge as `importer:line imports target`.

Here: the part that needs servers or processes; the pure part is in tests/unit/test_layers.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("alibaba_sms", "schemas", "globe_sms", "tasks", "flows")
CLI = "cli"  # the layer of globe_sms/cli*.py
_CLI_MODULE = re.compile(r"^globe_sms\.cli[^.]*$")


def layer(module: str) -> str | None:
    """The layer of a module of ours, None for anything else (a dependency, the standard library)."""
    if _CLI_MODULE.match(module):
        return CLI
    top = module.split(".")[0]
    return top if top in PACKAGES else None


def loaded_packages(statement: str) -> set[str]:
    """The top-level packages `python -X importtime -c statement` loads, in a fresh interpreter."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    # Lines look like `import time:       123 |        456 |     package.module`.
    names = [
        line.rsplit("|", 1)[1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")
    ]
    return {name.split(".")[0] for name in names[1:]}  # the first line is the header


def test_importing_the_campaign_model_loads_no_heavy_package() -> None:
    """Reading a campaign file needs pydantic and YAML, not the ledger's database, the phone number tables,
    data frames, Prefect or the HTTP client (each is imported where a value needs it: a ledger URL, a region,
    an endpoint)."""
    loaded = loaded_packages("import globe_sms.campaign")
    assert "globe_sms" in loaded and "pydantic" in loaded  # the measure works
    assert {"sqlalchemy", "phonenumbers", "polars", "prefect", "httpx"} & loaded == set()


def test_the_api_package_runs_without_prefect() -> None:
    """A plain script can import the client, the signer and the emulator without Prefect being loaded."""
    loaded = loaded_packages("import alibaba_sms, alibaba_sms.emulator, alibaba_sms.credentials")
    assert "alibaba_sms" in loaded and "httpx" in loaded
    assert "prefect" not in loaded and not {"globe_sms", "tasks", "flows", "schemas"} & loaded
