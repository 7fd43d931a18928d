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

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_layers.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.import_graph import Edge, edges, file_edges, private_owner, within

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("alibaba_sms", "schemas", "globe_sms", "tasks", "flows")
CLI = "cli"  # the layer of globe_sms/cli*.py
# Which layers of ours each layer may import (its own included).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "alibaba_sms": frozenset({"alibaba_sms"}),
    "schemas": frozenset({"schemas", "alibaba_sms"}),
    "globe_sms": frozenset({"globe_sms", "schemas", "alibaba_sms"}),
    "tasks": frozenset({"tasks", "globe_sms", "schemas", "alibaba_sms"}),
    "flows": frozenset({"flows", "tasks", "globe_sms", "schemas", "alibaba_sms"}),
    CLI: frozenset({CLI, "flows", "tasks", "globe_sms", "schemas", "alibaba_sms"}),
}
# Dependencies a layer must never import (the API package stays usable without Prefect).
NEVER: dict[str, tuple[str, ...]] = {"alibaba_sms": ("prefect",)}
_CLI_MODULE = re.compile(r"^globe_sms\.cli[^.]*$")
# Private modules of a dependency used where it has no public API, each with its reason and the test that pins
# the behaviour relied on. Nothing of ours belongs here: make the name public or move it instead.
ALLOWED_PRIVATE: dict[tuple[str, str], str] = {
    ("schemas.digit_languages", "re._parser"): "the standard library has no public regex parser (`sre_parse` "
    "is its deprecated alias); pinned by tests/unit/test_validate_properties.py (contains/overlaps)",
}


def layer(module: str) -> str | None:
    """The layer of a module of ours, None for anything else (a dependency, the standard library)."""
    if _CLI_MODULE.match(module):
        return CLI
    top = module.split(".")[0]
    return top if top in PACKAGES else None


def violations(edge: Edge) -> Iterator[str]:
    """Why `edge` breaks the layering, once per rule it breaks.

    `from m import x` gives two edges, `m` and `m.x`: the layers are judged on `m` (and on `m.x` only where
    that is the CLI, `from globe_sms import cli`), privacy on `m.x` only where `m` itself is public, so each
    statement is named once per rule.
    """
    source = layer(edge.importer)
    assert source is not None, edge
    is_name = edge.target != edge.module
    target = layer(edge.target)
    if target is not None and target not in MAY_IMPORT[source] and (not is_name or target == CLI):
        yield f"{edge}: {source} must not import {target}"
    for banned in NEVER.get(source, ()):
        if not is_name and within(edge.module, banned):
            yield f"{edge}: {source} never imports {banned}"
    owner = private_owner(edge.target)
    if is_name and private_owner(edge.module) is not None:
        return  # named already on the module's edge
    if (
        owner is not None
        and not within(edge.importer, owner)
        and (edge.importer, edge.module) not in ALLOWED_PRIVATE
    ):
        yield f"{edge}: a private module or name of {owner or 'the top level'}"


def our_modules() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_the_checker_finds_each_kind_of_edge() -> None:
    """The checker itself: each bad edge below is named with its line, and the good ones are not."""
    cases = {
        "alibaba_sms.credentials": (
            "from prefect.blocks.system import Secret\n"  # 1: Prefect in the API package
            "import globe_sms.secrets\n"  # 2: up
            "from .signing import sign\n"  # fine: itself
            "def f():\n    from schemas import messages\n",  # 5: up, lazily
            [1, 2, 5],
        ),
        "schemas.messages": ("from alibaba_sms.models import X\nfrom tasks.segments import LIMIT\n", [2]),
        "globe_sms.campaign": (
            "from tasks.render import MessageTemplate\n"  # 1
            "from globe_sms import cli\n"  # 2: the CLI is on top
            "from globe_sms.ledger import _sql\n"  # 3: private module of another package
            "from .sources import SecretRef\n"  # fine: itself, relative
            "from . import _helpers\n"  # fine: a private module of its own package
            "def f():\n    from flows import resend\n",  # 7: up, lazily
            [1, 2, 3, 7],
        ),
        "globe_sms.cli_ledger": ("from flows.send_campaign import send_campaign\nimport tasks.plan\n", []),
        "globe_sms.ledger.store": ("from globe_sms.ledger._sql import x\nfrom ._sql import y\n", []),
        "globe_sms.receipts.store": (
            "from globe_sms.ledger._sql import x\nfrom ..ledger import _sql\n",
            [1, 2],
        ),
        "tasks.send": (
            "from flows.send_campaign import x\n"  # 1
            "from prefect.concurrency._asyncio import E\n"  # 2: a dependency's private module
            "from prefect.concurrency.asyncio import E\n"
            "from pydantic import BaseModel\n",
            [1, 2],
        ),
        "flows.resend": (
            "from flows.send_campaign import _send_all\nfrom tasks.send import send_batch\n",
            [1],
        ),
    }
    for importer, (source, bad_lines) in cases.items():
        found = sorted({e.line for e in edges(source, importer) for _ in violations(e)})
        assert found == bad_lines, (importer, found)


def all_offences() -> dict[tuple[str, str], list[str]]:
    """Every edge of our packages against the rules, by (importer, target), with why."""
    files = list(our_modules())
    assert {path.relative_to(ROOT).parts[0] for path in files} == set(PACKAGES)
    found: dict[tuple[str, str], list[str]] = {}
    for path in files:
        for edge in file_edges(path, ROOT):
            for reason in violations(edge):
                found.setdefault((edge.importer, edge.target), []).append(reason)
    return found


def test_every_import_follows_the_layers() -> None:
    offences = [reason for reasons in all_offences().values() for reason in reasons]
    assert offences == [], "imports against the layering:\n" + "\n".join(offences)


def test_the_ledger_package_offers_each_name_from_its_submodule() -> None:
    """`globe_sms.ledger` loads its names on first use (so `globe_sms.ledger.url` stays light): each is the
    very object of the submodule it lives in, and an unknown name is an AttributeError, as for any module."""
    import importlib

    import globe_sms.ledger as ledger

    assert ledger.__all__ and set(ledger.__all__) <= set(dir(ledger))
    for name in ledger.__all__:
        home = importlib.import_module(ledger._HOME[name])
        assert getattr(ledger, name) is getattr(home, name), name
    with pytest.raises(AttributeError, match="no attribute 'task_id'"):
        ledger.task_id  # noqa: B018 - moved to globe_sms.ids; no re-export left behind
