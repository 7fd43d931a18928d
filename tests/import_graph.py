"""The imports of a Python file, read with `ast` (never imported), for the tests that keep import rules.

Every `import` statement counts, wherever it is: at the top of a module, inside a function (a lazy import is
still an edge), under `if TYPE_CHECKING:`. Relative imports are resolved against the importing module.

For `from package.module import name` both `package.module` and `package.module.name` are reported as
targets: the name may be a submodule (`from globe_sms.ledger import _sql`) or an attribute, and a rule about
private names treats the two alike.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Edge:
    """One imported target of one module, where the statement is."""

    importer: str  # dotted name of the importing module, e.g. globe_sms.receipts.store
    line: int
    target: str  # dotted name of the imported module, or module.name for `from module import name`
    module: str  # the module part alone (== target for `import x.y`)

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} imports {self.target}"


def is_private(part: str) -> bool:
    """`_x` is private; `__init__`, `__version__` and other dunders are not."""
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def module_name(path: Path, root: Path) -> str:
    """`globe_sms/receipts/store.py` -> `globe_sms.receipts.store`; an `__init__.py` -> its package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute module of `from <level dots><module> import ...` written in `importer`."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]  # a module's relative imports start from its package
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, module] if module else base)


def edges(source: str, importer: str, is_package: bool = False, filename: str = "<source>") -> Iterator[Edge]:
    """Every import target of `source`, the code of module `importer` (`is_package` for an `__init__.py`)."""
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Edge(importer, node.lineno, alias.name, alias.name)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(importer, is_package, node.level, node.module)
            yield Edge(importer, node.lineno, module, module)
            for alias in node.names:
                if alias.name != "*":
                    yield Edge(importer, node.lineno, f"{module}.{alias.name}", module)


def file_edges(path: Path, root: Path) -> Iterator[Edge]:
    """`edges` of the file at `path`, a module under `root`."""
    yield from edges(
        path.read_text(encoding="utf-8"), module_name(path, root), path.name == "__init__.py", str(path)
    )


def within(module: str, package: str) -> bool:
    """Whether `module` is `package` itself or inside it."""
    return module == package or module.startswith(package + ".")


def private_owner(target: str) -> str | None:
    """The module or package a private target belongs to: what comes before its first private part.

    `globe_sms.ledger._sql` belongs to `globe_sms.ledger` (a private module is its package's);
    `flows.send_campaign._send_all` to `flows.send_campaign` (a private name is its module's). None when no
    part of `target` is private.
    """
    parts = target.split(".")
    for index, part in enumerate(parts):
        if is_private(part):
            return ".".join(parts[:index])
    return None
