"""One API request as the emulated gateway reads it: `Call` and `parse_call`.

Parameters may come in the query string (the official SDK), in an `application/x-www-form-urlencoded`
body (our client), or both; the body wins where a name is in both. The signature version is told from the
request alone: an `Authorization` header means V3, a `Signature`, `AccessKeyId` or `SignatureMethod`
parameter means V1, anything else is unsigned. Whether the signature holds is `verify.py`'s business.

The request is read from the raw ASGI scope and body (no Starlette `Request`): this is the path of every
one of 2,000 SendMessageToGlobe calls a second, and the emulator shares its machine with the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from alibaba_sms.emulator.state import EmulatorState

_FORM = "application/x-www-form-urlencoded"


@dataclass(slots=True)
class Call:
    """One API request as parsed, plus what the journal records about it.

    `headers` maps each lowercase header name to its first value (as `starlette.datastructures.Headers.get`
    would); `repeated` names the headers sent more than once, whose values `header_values` gives.
    """

    method: str
    path: str
    query: list[tuple[str, str]]
    form: list[tuple[str, str]]
    body: bytes
    params: dict[str, str]
    headers: dict[str, str]
    repeated: set[str]
    raw_headers: list[tuple[bytes, bytes]]
    version: str  # "v3", "v1" or "" (unsigned)
    fmt: str  # "JSON" or "XML"
    action: str
    request_id: str
    access_key_id: str = ""
    numbers: int = 0
    task_id: str | None = None
    fault: str | None = None

    def header_values(self, name: str) -> list[str]:
        """Every value of the lowercase header `name`, in the order sent."""
        key = name.encode("latin-1")
        return [value.decode("latin-1") for raw, value in self.raw_headers if raw.lower() == key]


def header_dict(raw_headers: list[tuple[bytes, bytes]]) -> tuple[dict[str, str], set[str]]:
    """Lowercase name -> first value, decoded as Latin-1 like Starlette's `Headers`; the names repeated.

    ASGI servers give header names in lowercase, as Starlette's `Headers` expects too.
    """
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(raw_headers)}
    if len(headers) == len(raw_headers):  # the usual case: no name twice
        return headers, set()
    seen: set[bytes] = set()
    repeated = {name.decode("latin-1") for name, _ in raw_headers if name in seen or seen.add(name)}
    return headers, repeated


def parse_form(text: str) -> list[tuple[str, str]]:
    """`urllib.parse.parse_qsl(text, keep_blank_values=True)`, without its generic argument handling.

    The same pairs for every input (tests/unit/test_emulator_call.py compares them): `&`-separated fields,
    empty ones skipped, a field without `=` an empty value, `+` a space, then percent-decoding as UTF-8 with
    replacement characters.
    """
    pairs = []
    for field in text.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        name, value = name.replace("+", " "), value.replace("+", " ")
        if "%" in name:
            name = unquote(name, errors="replace")
        if "%" in value:
            value = unquote(value, errors="replace")
        pairs.append((name, value))
    return pairs


def parse_call(scope: dict, body: bytes, state: EmulatorState) -> Call:
    """Read a request's parameters from its ASGI scope and body, and tell its signature version."""
    raw_headers = scope["headers"]
    headers, repeated = header_dict(raw_headers)
    # The SDK's query uses `+` for spaces while the signature encodes `%20`: decode before canonicalising.
    query_string = scope["query_string"]
    query = parse_form(query_string.decode("utf-8", "replace")) if query_string else []
    form: list[tuple[str, str]] = []
    if headers.get("content-type", "").startswith(_FORM):
        form = parse_form(body.decode("utf-8", "replace"))
    params = dict(query + form) if query else dict(form)
    if "authorization" in headers:
        version = "v3"
    elif "Signature" in params or "AccessKeyId" in params or "SignatureMethod" in params:
        version = "v1"
    else:
        version = ""
    fmt = "XML" if version == "v1" and params.get("Format", "XML").upper() != "JSON" else "JSON"
    header_action = "" if version == "v1" else headers.get("x-acs-action", "")
    action = header_action or params.get("Action", "")
    return Call(
        scope["method"],
        scope["path"],
        query,
        form,
        body,
        params,
        headers,
        repeated,
        raw_headers,
        version,
        fmt,
        action,
        state.new_request_id(),
        task_id=params.get("TaskId") or None,
    )
