"""Where a campaign's files live, and how a relative path in a campaign is made absolute.

A relative path means the same thing wherever globe-sms runs: `Campaign.resolve_paths(base)` makes every path
of a campaign absolute against one base, the campaign file's folder (`Campaign.from_yaml`) or, for a campaign
that comes without a file (the Prefect UI form, a deployment's parameters, `send_campaign(campaign)` from
Python), the flow run's working directory when the flow starts (a deployment's `pull` step sets it to
`$GLOBE_SMS_HOME`).

What does not come from the campaign never depends on the current directory either:

- the default data folder: `$GLOBE_SMS_DATA_DIR`, else `$XDG_DATA_HOME/globe-sms`, else
  `~/.local/share/globe-sms`;
- the default ledger (a campaign without `ledger`): `sqlite:///<default data folder>/ledger.db`;
- a campaign's data folder (its rejects file, its spools): `data_dir`, else the folder of its SQLite ledger
  file, else the default data folder.

Example::

    >>> resolve_ledger_file("sqlite:///ledger.db", Path("/srv/campaigns"))
    'sqlite:////srv/campaigns/ledger.db'
    >>> resolve_ledger_file("postgresql://app@db/sms", Path("/srv/campaigns"))
    'postgresql://app@db/sms'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

Model = TypeVar("Model", bound=BaseModel)
DATA_DIR_ENV = "GLOBE_SMS_DATA_DIR"
LEDGER_FILE = "ledger.db"


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The data folder of campaigns that name none: `$GLOBE_SMS_DATA_DIR`, else XDG's data home.

    `$XDG_DATA_HOME` counts only when it is absolute (as the XDG spec says); a relative `$GLOBE_SMS_DATA_DIR`
    is taken against the current directory once, here, and returned absolute.
    """
    env = os.environ if environ is None else environ
    chosen = env.get(DATA_DIR_ENV, "").strip()
    if chosen:
        return Path(chosen).expanduser().absolute()
    xdg = env.get("XDG_DATA_HOME", "").strip()
    home = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return home / "globe-sms"


def default_ledger_url(environ: Mapping[str, str] | None = None) -> str:
    """`sqlite:///<default data folder>/ledger.db`: the ledger of campaigns that name none."""
    return f"sqlite:///{default_data_dir(environ) / LEDGER_FILE}"


def resolve_path(value: str, base: Path) -> str:
    """`value` made absolute against `base` (`~` expanded); an absolute path is returned as it is.

    Works on globs too (`exports/*.csv`): only the part before the pattern has to exist to be resolved.
    """
    path = Path(value).expanduser()
    if path.is_absolute():
        return value if not value.startswith("~") else str(path)
    return str((base.expanduser().absolute() / path).resolve())


def sqlite_file(url: str) -> Path | None:
    """The file of a file-backed SQLite URL (`sqlite:///x/ledger.db` -> `x/ledger.db`); None for the rest.

    In-memory databases (`sqlite://`, `:memory:`, `mode=memory`), `file:` URIs, server databases and
    unreadable URLs have no such file.
    """
    from sqlalchemy.engine import make_url  # here: importing the campaign model must not load SQLAlchemy
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return None
    if "mode=memory" in database or parsed.query.get("mode") == "memory":
        return None
    return Path(database).expanduser()


def resolve_ledger_file(url: str, base: Path) -> str:
    """A ledger URL whose SQLite file is absolute against `base`; every other URL is returned unchanged.

    `sqlite:///ledger.db` becomes `sqlite:////<base>/ledger.db`; `sqlite://`, `:memory:`, an absolute file and
    server URLs (`postgresql://...`) stay as they are (so a password in one is never re-rendered).
    """
    from sqlalchemy.engine import make_url

    file = sqlite_file(url)
    if file is None or file.is_absolute():
        return url
    return make_url(url).set(database=resolve_path(str(file), base)).render_as_string(hide_password=False)


def data_folder(ledger_url: str | None, data_dir: str | None = None) -> Path:
    """A campaign's data folder (rejects file, spools): `data_dir`, else beside its SQLite ledger file, else
    the default data folder (a server database, an in-memory ledger, a URL kept in a secret: None)."""
    if data_dir is not None:
        return Path(data_dir).expanduser().absolute()
    file = sqlite_file(ledger_url) if ledger_url is not None else None
    if file is not None:
        return file.absolute().parent
    return default_data_dir()


def with_paths_resolved(model: Model, fields: tuple[tuple[str, ...], ...], base: Path) -> Model:
    """`model` with the string at each attribute path in `fields` made absolute against
    `base`; nested models are copied, never changed in place, and a missing or None attribute is skipped."""
    updates: dict[str, Any] = {}
    nested: dict[str, list[tuple[str, ...]]] = {}
    for field_path in fields:
        head, *rest = field_path
        if rest:
            nested.setdefault(head, []).append(tuple(rest))
            continue
        value = getattr(model, head, None)
        if isinstance(value, str):
            resolved = resolve_path(value, base)
            if resolved != value:
                updates[head] = resolved
    for head, inner in nested.items():
        child = getattr(model, head, None)
        if isinstance(child, BaseModel):
            copied = with_paths_resolved(child, tuple(inner), base)
            if copied is not child:
                updates[head] = copied
    return model.model_copy(update=updates) if updates else model


__all__ = [
    "DATA_DIR_ENV",
    "LEDGER_FILE",
    "data_folder",
    "default_data_dir",
    "default_ledger_url",
    "resolve_ledger_file",
    "resolve_path",
    "sqlite_file",
    "with_paths_resolved",
]
