"""One API request as the emulated gateway reads it: `Call` and `parse_call`.

Parameters may come in the query string (the official SDK), in an `application/x-www-form-urlencoded`
body (our client), or both; the body wins where a name is in both. The signature version is told from the
request alone: an `Authorization` header means V3, a `Signature`, `AccessKeyId` or `SignatureMethod`
parameter means V1, anything else is unsigned. Whether the signature holds is `verify.py`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import Request

from alibaba_sms.emulator.state import EmulatorState


@dataclass
class Call:
    """One API request as parsed, plus what the journal records about it."""

    method: str
    query: list[tuple[str, str]]
    form: list[tuple[str, str]]
    body: bytes
    params: dict[str, str]
    version: str  # "v3", "v1" or "" (unsigned)
    fmt: str  # "JSON" or "XML"
    action: str
    request_id: str
    access_key_id: str = ""
    numbers: int = 0
    task_id: str | None = None
    fault: str | None = None


async def parse_call(request: Request, state: EmulatorState) -> Call:
    """Read a request's parameters from its query and form body, and tell its signature version."""
    body = await request.body()
    # The SDK's query uses `+` for spaces while the signature encodes `%20`: decode before canonicalising.
    query = parse_qsl(request.scope["query_string"].decode("utf-8", "replace"), keep_blank_values=True)
    form: list[tuple[str, str]] = []
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    params = dict(query + form)
    if "authorization" in request.headers:
        version = "v3"
    elif {"Signature", "AccessKeyId", "SignatureMethod"} & params.keys():
        version = "v1"
    else:
        version = ""
    fmt = "XML" if version == "v1" and params.get("Format", "XML").upper() != "JSON" else "JSON"
    header_action = "" if version == "v1" else request.headers.get("x-acs-action", "")
    action = header_action or params.get("Action", "")
    request_id = state.new_request_id()
    task_id = params.get("TaskId") or None
    return Call(request.method, query, form, body, params, version, fmt, action, request_id, task_id=task_id)
