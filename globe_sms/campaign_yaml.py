"""Reading a campaign file's YAML strictly: duplicate keys are refused, and errors point at lines.

PyYAML keeps the last of two equal keys without a word, so a file with two `batch_size:` lines or two
`source:` blocks would run with whichever came last. `StrictLoader` refuses it, naming the key and both
lines. YAML 1.1 also reads some unquoted text as something else: `12345` and `0x1A` as numbers, `NO`, `yes`
and `off` as booleans, `2026-11-05` as a date. Where the campaign wants text, `YamlDocument.hint` says what
YAML read and how to quote it (`sender_id: '12345'`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice; YAML would silently keep only the last value."""

    def __init__(self, key: Any, line: int, first_line: int) -> None:
        self.key, self.line, self.first_line = key, line, first_line
        super().__init__(
            f"line {line}: duplicate key {key!r} (first on line {first_line}); YAML would silently keep only "
            "the last one, so remove or rename one of them"
        )


class StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` refusing a key repeated in a mapping (a key merged in by `<<` may be overridden)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # SafeLoader's own error says so
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKeyError(key, line, seen[key])
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _what_yaml_read(value: Any) -> str | None:
    """How YAML typed a plain scalar that is not text, for the hint; None if it is text."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, date):
        return "a date"
    if value is None:
        return "null"
    return None


@dataclass(frozen=True)
class YamlDocument:
    """A loaded campaign file: its data, and its node tree for pointing errors at lines."""

    data: Any
    root: yaml.Node | None

    @classmethod
    def load(cls, text: str) -> YamlDocument:
        """Parse one YAML document.

        Raises:
            DuplicateKeyError: a key is repeated in one mapping.
            yaml.YAMLError: not YAML.
        """
        loader = StrictLoader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
        return cls(data, root)

    def _find(self, loc: Sequence[int | str]) -> tuple[yaml.Node | None, str | None]:
        """The node a pydantic error location points at, and the mapping key it is the value of (if so).

        Parts that match nothing (the names of union members, such as `csv` in `source.csv.path`, or a field
        below a value written as a bare scalar) are skipped.
        """
        node, key = self.root, None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                matches = [value for k, value in node.value if getattr(k, "value", None) == str(part)]
                if matches:
                    node, key = matches[-1], str(part)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    return None, None
                node, key = node.value[part], None
        return (None, None) if node is self.root else (node, key)

    def node_at(self, loc: Sequence[int | str]) -> yaml.Node | None:
        """The node a pydantic error location points at, or None."""
        return self._find(loc)[0]

    def line(self, loc: Sequence[int | str]) -> int | None:
        """The 1-based line of the value at `loc`, if the file has it."""
        node = self.node_at(loc)
        return None if node is None else node.start_mark.line + 1

    def hint(self, loc: Sequence[int | str], value: Any) -> str | None:
        """For text that YAML read as a number, boolean, date or null: what it read, and how to quote it."""
        node, key = self._find(loc)
        what = _what_yaml_read(value)
        if not isinstance(node, yaml.ScalarNode) or node.style is not None or what is None:
            return None
        quoted = "'" + node.value.replace("'", "''") + "'"
        example = f"{key}: {quoted}" if key else quoted
        return f"YAML reads the unquoted {node.value} as {what}: quote it, {example}"
