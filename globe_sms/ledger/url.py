"""Where the ledger is: a URL without a password, or a secret naming where the whole URL is kept.

A campaign's `ledger` is a flow parameter, stored by Prefect and shown in its UI, so it never holds a
password. It is one of:

    ledger: sqlite:///data/ledger.db                       # SQLite: no password to hide
    ledger: postgresql+psycopg://globe@db-host/globe_sms   # libpq finds the password (PGPASSWORD, ~/.pgpass)
    ledger: {env: LEDGER_URL}                              # the whole URL, password included, in a variable
    ledger: {block: ledger-url}                            # ... or in a Prefect Secret block

A URL with a literal password is refused at load (`check_plain_url`), and `hide_password` masks it before
pydantic can quote it in an error. The secret is read, and the URL with its password exists, only where the
engine is created (`resolve_ledger_url`, called by `LedgerDatabase`); every URL that is shown is masked
(`masked`: `postgresql+psycopg://user:***@host/db`).
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from globe_sms.ledger.errors import LedgerUnreachable, LedgerUrlError
from globe_sms.paths import sqlite_file
from globe_sms.secrets import SecretNotFound, resolve_secret
from globe_sms.sources import SecretRef

if TYPE_CHECKING:
    from sqlalchemy import URL

# SQLAlchemy is imported in the functions that parse or connect, not here: the campaign model checks its
# `ledger` with `check_plain_url`, and importing the model must not load SQLAlchemy.

LedgerLocation = str | SecretRef
"""A ledger URL without a password, or where the whole URL is kept (`SecretRef`)."""

MASK = "***"
DRIVERS = ("sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg")
EXAMPLES = "e.g. sqlite:///data/ledger.db or postgresql+psycopg://user@host:5432/db"
HOW_TO_NAME_THE_SECRET = (
    "keep the whole URL in an environment variable or a Prefect Secret block and name it: "
    "`ledger: {env: LEDGER_URL}` or `ledger: {block: ledger-url}` (or leave the password out of the URL "
    "and let PostgreSQL's client find it: PGPASSWORD or ~/.pgpass)"
)
# SQLAlchemy's own URL pattern (`sqlalchemy.engine.url._parse_url`): the password is everything between the
# first `:` of the user part and the `@`, so this masks exactly what SQLAlchemy would read as the password.
_USERINFO_PASSWORD = re.compile(r"^(?P<head>[\w+]+://[^:/]*:)(?P<password>[^@]*)@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<password>[^&]*)", re.IGNORECASE)
_OPTION = re.compile(r"^(?P<kind>env|block):(?P<name>.+)$")


def hide_password(url: str) -> str:
    """`url` with any password (in the user part or a `password=` query parameter) replaced by `***`."""
    url = _USERINFO_PASSWORD.sub(lambda m: f"{m['head']}{MASK if m['password'] else ''}@", url, count=1)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", url)


def _parse(url: str, where: str) -> URL:
    """`url` parsed, of a supported driver; the error quotes `where`, never the URL (it may hold a secret)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise LedgerUrlError(
            f"{where} is not a SQLAlchemy URL ({EXAMPLES}; to name a secret: {{env: NAME}}, {{block: NAME}})"
        ) from None
    if parsed.drivername not in DRIVERS:
        raise LedgerUrlError(
            f"{where} is a {parsed.drivername!r} URL; the ledger is SQLite or PostgreSQL through psycopg "
            f"({EXAMPLES})"
        )
    return parsed


def check_plain_url(url: str, where: str = "the ledger URL") -> str:
    """`url` if it is a usable ledger URL that holds no password.

    Raises:
        LedgerUrlError: malformed, another database, or a password in it (the message says how to name a
            secret instead, and never shows the password).
    """
    parsed = _parse(url, where)
    if parsed.password or any(key.lower() == "password" for key in parsed.query):
        raise LedgerUrlError(
            f"{where} holds a password, which would be stored and shown as a flow parameter; "
            + HOW_TO_NAME_THE_SECRET
        )
    return url


def location_from_text(text: str, where: str = "--ledger") -> LedgerLocation:
    """A location given on a command line: `env:NAME`, `block:NAME`, or a URL without a password.

    Raises:
        LedgerUrlError: a malformed URL or one holding a password (the message shows neither).
    """
    option = _OPTION.match(text.strip())
    if option is not None:
        try:
            return SecretRef.model_validate({option["kind"]: option["name"]})
        except ValueError:
            raise LedgerUrlError(f"{where}: {option['kind']}:NAME needs a valid name") from None
    try:
        return check_plain_url(text, where)
    except LedgerUrlError as exc:
        if "password" not in str(exc):
            raise
        raise LedgerUrlError(
            f"{where} holds a password, which would show in `ps` and shell history; keep the URL in an "
            f"environment variable or a Prefect Secret block and give {where} env:NAME or block:NAME"
        ) from None


def resolve_ledger_url(location: LedgerLocation, environ: Mapping[str, str] | None = None) -> URL:
    """The URL to create an engine with, password included: for `LedgerDatabase` and `globe-sms ledger` only.

    Raises:
        LedgerUrlError: the secret is not where the location says, or it is not a usable URL.
    """
    if isinstance(location, SecretRef):
        try:
            secret = resolve_secret(location, "ledger", environ)
        except SecretNotFound as exc:
            raise LedgerUrlError(str(exc)) from None
        return _parse(secret.get_secret_value(), f"ledger: the URL in {location.describe()}")
    return _parse(location, "ledger: the URL")


def render_masked(url: URL) -> str:
    """`url` as text with its password (and a `password=` query parameter) shown as `***`."""
    return hide_password(url.render_as_string(hide_password=True))


def masked(location: LedgerLocation) -> str:
    """The location for messages: a plain URL (masked all the same), or where the URL is kept."""
    if isinstance(location, SecretRef):
        return f"(the URL in {location.describe()})"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return render_masked(make_url(location))
    except (ArgumentError, ValueError):
        return hide_password(location)


def masked_error(exc: BaseException, url: URL) -> str:
    """The driver's message of `exc` (not SQLAlchemy's wrapping), with `url`'s password masked out."""
    orig = getattr(exc, "orig", None)
    message = " ".join(str(orig if orig is not None else exc).split()) or type(exc).__name__
    for secret in {url.password, unquote(url.password or "")} - {None, ""}:
        message = message.replace(str(secret), MASK)
    return message


def check_reachable(location: LedgerLocation, timeout_seconds: float = 5.0) -> None:
    """Connect to the ledger's database once, giving up after `timeout_seconds` (PostgreSQL) or at once.

    SQLite: an existing file is opened read-only and must be a database; for a file not created yet, its
    nearest existing folder must be writable (the run creates the rest). Nothing is written.

    Raises:
        LedgerUrlError: the URL or its secret cannot be used.
        LedgerUnreachable: the database did not answer or refused (the message shows the URL masked).
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    from globe_sms.ledger.backends import make_engine

    url = resolve_ledger_url(location)
    file = sqlite_file(url.render_as_string(hide_password=False))
    if file is not None:
        _check_sqlite_file(file, url)
        return
    try:
        if url.get_backend_name() == "postgresql":
            engine = create_engine(
                url.set(drivername="postgresql+psycopg"),
                poolclass=NullPool,
                connect_args={"connect_timeout": max(1, round(timeout_seconds))},
            )
        else:
            engine = make_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except (SQLAlchemyError, OSError) as exc:
        raise LedgerUnreachable(
            f"cannot open the ledger {render_masked(url)}"
            + (f" {masked(location)}" if isinstance(location, SecretRef) else "")
            + f": {masked_error(exc, url)}"
        ) from None


def _check_sqlite_file(file: Path, url: URL) -> None:
    """`file` is a SQLite database, or could be created: its nearest existing folder is writable.

    Raises:
        LedgerUnreachable: the file is not a database or cannot be read, or its folder cannot be written.
    """
    if file.exists():
        try:
            with closing(sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)) as conn:
                conn.execute("PRAGMA schema_version").fetchone()  # reads the header: "not a database"
        except sqlite3.Error as exc:
            raise LedgerUnreachable(f"cannot open the ledger {render_masked(url)}: {exc}") from None
        return
    folder = file.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise LedgerUnreachable(
            f"cannot open the ledger {render_masked(url)}: {folder} is not a folder this user can write"
        )
