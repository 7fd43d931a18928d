"""The emulator's hot path, piece by piece, against the generic code it stands in for.

Every SendMessageToGlobe call goes through `parse_form` (not `urllib.parse.parse_qsl`), `header_dict` (not
Starlette's `Headers`), `send_answer` (JSON from a template, not `compact_json`) and, over a socket, the
`GatheringTransport` (one write per answer). Each must give what the generic code gives.
"""

from __future__ import annotations

import asyncio
import random
from urllib.parse import parse_qsl

import pytest
from starlette.datastructures import Headers

from alibaba_sms.emulator.answers import compact_json
from alibaba_sms.emulator.call import header_dict, parse_call, parse_form
from alibaba_sms.emulator.one_write import GatheringTransport
from alibaba_sms.emulator.operations import send_answer
from alibaba_sms.emulator.state import EmulatorConfig, EmulatorState
from alibaba_sms.emulator.verify import signed_values

FORM_PIECES = [
    "a",
    "B",
    "=",
    "&",
    "+",
    "%",
    "%2",
    "%41",
    "%E4%B8%AD",
    "%FF",
    "%zz",
    " ",
    "中",
    "&&",
    "%2B",
    "%26",
]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "&",
        "a",
        "a=",
        "=b",
        "a=1&a=2",
        "To=852&Message=Hello%2C+world%21",
        "x=%E4%B8%AD%FF",
        "a=b=c",
        "+%2B+",
    ],
)
def test_parse_form_gives_what_parse_qsl_gives(text: str) -> None:
    assert parse_form(text) == parse_qsl(text, keep_blank_values=True)


def test_parse_form_matches_parse_qsl_on_random_forms() -> None:
    rng = random.Random(16)
    for _ in range(5000):
        text = "".join(rng.choice(FORM_PIECES) for _ in range(rng.randrange(0, 16)))
        assert parse_form(text) == parse_qsl(text, keep_blank_values=True), text


def test_header_dict_keeps_the_first_value_and_names_the_repeated_headers() -> None:
    rng = random.Random(16)
    for _ in range(2000):
        raw = [
            (rng.choice([b"host", b"x-acs-date", b"x-acs-extra"]), rng.choice([b"1", b" 2 ", b"\xe9"]))
            for _ in range(rng.randrange(0, 6))
        ]
        headers, repeated = header_dict(raw)
        starlette = Headers(raw=raw)
        assert headers == {name: starlette.get(name) for name in starlette.keys()}
        assert repeated == {name for name in starlette.keys() if len(starlette.getlist(name)) > 1}


def test_a_header_sent_twice_is_signed_as_its_sorted_values_joined() -> None:
    state = EmulatorState(EmulatorConfig())
    scope = {
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": [(b"x-acs-extra", b" b "), (b"host", b"h"), (b"x-acs-extra", b"a")],
    }
    call = parse_call(scope, b"", state)
    assert signed_values(call, {"x-acs-extra", "host", "x-acs-absent"}) == {
        "x-acs-extra": "a,b",
        "host": "h",
        "x-acs-absent": "",
    }


@pytest.mark.parametrize(
    ("to", "sender"), [("85291234567", ""), ("6591234567", "Globe2024"), ("4479111222", "")]
)
def test_send_answer_json_is_compact_json_of_its_body(to: str, sender: str) -> None:
    outcome = send_answer("0A1B2C3D-0000-4000-8000-00000000ABCD", "1234567890123456", to, sender, 3)
    assert outcome.json == compact_json(outcome.body)
    assert outcome.body["NumberDetail"]["Country"] != "" and outcome.body["Segments"] == "3"


def test_send_answer_with_a_sender_that_needs_escaping_is_encoded_the_generic_way() -> None:
    outcome = send_answer("0A1B2C3D-0000-4000-8000-00000000ABCD", "1", "85291234567", 'Say "hi"', 1)
    assert outcome.json is None and outcome.body["From"] == 'Say "hi"'


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_writes_of_one_loop_turn_reach_the_transport_as_one() -> None:
    asyncio.run(writes_of_one_turn())


async def writes_of_one_turn() -> None:
    inner = RecordingTransport()
    gathering = GatheringTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    gathering.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    gathering.write(b"{}")
    assert inner.writes == []
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    gathering.write(b"next")
    await asyncio.sleep(0)
    assert inner.writes[1:] == [b"next"]
    assert gathering.get_extra_info("peername") == "info:peername"


def test_close_writes_what_is_pending_first_and_nothing_after() -> None:
    asyncio.run(close_then_write())


async def close_then_write() -> None:
    inner = RecordingTransport()
    gathering = GatheringTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    gathering.write(b"half a body")
    gathering.close()
    assert inner.writes == [b"half a body"] and inner.closed
    gathering.write(b"late")
    await asyncio.sleep(0)
    assert inner.writes == [b"half a body"]
