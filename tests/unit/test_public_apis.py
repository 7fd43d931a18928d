"""No module of ours (package, flows, tasks, tests, bench, examples) reaches into Prefect's private names.

Private names move between Prefect releases without notice, and requests sent around Prefect's public client
skip the headers it adds (a CSRF-protected server then answers 403: tests/integration/test_prefect_csrf.py).
So every
`.py` file of the repository is parsed (ast, never imported) and the test names each file and line that:

* imports a private Prefect module or name (`prefect.concurrency._asyncio`, `from prefect.x import _y`);
* reads a private attribute off the `prefect` package (`prefect.client._x`);
* touches a client's `_client` (the httpx client inside Prefect's client), directly or through `getattr`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.import_graph import edges, is_private, private_owner, within

ROOT = Path(__file__).resolve().parents[2]
SKIPPED_DIRS = {".venv", ".git", ".ruff_cache", "node_modules", "__pycache__", "build", "dist"}


def is_prefect(module: str | None) -> bool:
    return module is not None and within(module, "prefect")


def dotted(node: ast.expr) -> list[str] | None:
    """`prefect.client._x` as ["prefect", "client", "_x"]; None for anything but a plain chain of names."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def private_uses(source: str, filename: str = "<source>") -> Iterator[tuple[int, str]]:
    """(line, what) for each use of a private Prefect name or of a client's `_client` in `source`.

    The imports are read by `tests.import_graph`, the same reader tests/{unit,integration}/test_layers.py
    uses (which holds our
    packages to the wider rule: no private module or name of any other package).
    """
    for edge in edges(source, "<checked>", filename=filename):
        if is_prefect(edge.target) and private_owner(edge.target) is not None:
            if edge.target == edge.module:
                yield edge.line, f"import {edge.module}"
            elif private_owner(edge.module) is None:  # a private module is named once, on its own edge
                yield edge.line, f"from {edge.module} import {edge.target.rsplit('.', 1)[1]}"
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute):
            if node.attr == "_client":
                yield node.lineno, "attribute ._client"
            else:
                chain = dotted(node)
                if chain and chain[0] == "prefect" and is_private(node.attr):
                    yield node.lineno, ".".join(chain)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "setattr", "hasattr"}
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value == "_client"
        ):
            yield node.lineno, f"{node.func.id}(..., '_client')"


def python_files() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*.py")):
        if not SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts):
            yield path


def test_the_checker_finds_each_kind_of_private_use() -> None:
    """The checker itself: every private use below is found, on its line, and public uses are not."""
    source = "\n".join(
        [
            "from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError",  # 1
            "import prefect.client._internal",  # 2
            "from prefect.settings import _private_helper",  # 3
            "http = client._client",  # 4
            "http = getattr(client, '_client', None)",  # 5
            "prefect.concurrency._sync.acquire()",  # 6
            "from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError",  # public
            "from prefect.client.orchestration import get_client",  # public
            "from prefect import __version__",  # dunder, public
            "from ._helpers import x",  # our own relative import
            "self._client_id = 1",  # another attribute
        ]
    )
    found = sorted(private_uses(source))
    assert [line for line, _ in found] == [1, 2, 3, 4, 5, 6], found


def test_no_module_of_ours_uses_a_private_prefect_name() -> None:
    files = list(python_files())
    assert any(path.name == "pacing.py" for path in files) and any(p.parts[-2] == "bench" for p in files)
    offences = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in files
        for line, what in private_uses(path.read_text(encoding="utf-8"), str(path))
    ]
    assert offences == [], "private Prefect names in use (use the public client):\n" + "\n".join(offences)
