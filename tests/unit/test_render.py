"""Unit tests for tasks.render: template parsing and compilation, the null policy, per-recipient templates,
smart replacement, the UCS-2 culprit report and the rendered-messages schema.

Segment counting itself is tested in tests/unit/test_segments.py; cost in tests/unit/test_cost.py.
"""

from __future__ import annotations

import pandera.errors
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from globe_sms.template import MessageTemplate, Placeholder, TemplateError, parse_template
from schemas.messages import RenderedMessages
from tasks.render import compile_template, render_messages
from tasks.segments import GSM_ALPHABET, SMART_REPLACEMENTS, culprit_table, describe_text, smart_replace_text


def recipients(**columns: list[str | None]) -> pl.DataFrame:
    """A recipients frame with valid phone/country/source_row and the given data columns."""
    n = len(next(iter(columns.values())))
    base = pl.DataFrame(
        {
            "phone": [f"8521234{i:04d}" for i in range(n)],
            "country": ["HK"] * n,
            "source_row": list(range(n)),
        }
    )
    return base.with_columns(pl.Series(name, values, dtype=pl.String) for name, values in columns.items())


def reasons_by_row(result_rejects: pl.DataFrame) -> dict[int, list[str]]:
    return dict(zip(result_rejects["source_row"].to_list(), result_rejects["reasons"].to_list(), strict=True))


class TestParseTemplate:
    def test_literals_placeholders_defaults_and_escapes(self) -> None:
        """`{col}`, `{col|default}` and `{{`/`}}` are recognised."""
        assert parse_template("Hi {first_name|there}, {{code}}: {code}") == (
            "Hi ",
            Placeholder("first_name", "there"),
            ", {code}: ",
            Placeholder("code"),
        )

    def test_default_keeps_its_text_and_name_is_stripped(self) -> None:
        """Spaces around the name are ignored; the default is taken verbatim."""
        assert parse_template("{ name |dear customer}") == (Placeholder("name", "dear customer"),)

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("Hi {name", "unclosed '{'"),
            ("Hi name}", "stray '}'"),
            ("Hi {}", "empty placeholder name"),
            ("Hi {|x}", "empty placeholder name"),
            ("Hi {name|}", "blank default"),
            ("Hi {name| }", "blank default"),
            ("Hi {a{b}", "inside placeholder"),
        ],
    )
    def test_bad_syntax_is_a_template_error(self, text: str, fragment: str) -> None:
        """Malformed templates raise TemplateError with a pointed message."""
        with pytest.raises(TemplateError, match=fragment):
            parse_template(text)


class TestMessageTemplate:
    def test_plain_string_is_accepted(self) -> None:
        """`model_validate("...")` builds a single-template model with the defaults."""
        template = MessageTemplate.model_validate("Hi {first_name}")
        assert template.text == "Hi {first_name}"
        assert (template.on_missing, template.max_segments, template.smart_replace) == ("reject", 10, False)

    def test_plain_string_is_accepted_when_embedded(self) -> None:
        """A campaign model (or its YAML) can give the template as a bare string."""

        class Campaign(BaseModel):
            template: MessageTemplate

        assert Campaign.model_validate({"template": "Hi {x}"}).template.text == "Hi {x}"

    def test_every_field_has_a_description(self) -> None:
        """The model doubles as the UI form: each field documents itself."""
        assert all(field.description for field in MessageTemplate.model_fields.values())

    @pytest.mark.parametrize(
        ("kwargs", "fragment"),
        [
            ({"text": {"en": "Hi"}}, "select_by"),
            ({"text": {}, "select_by": "lang"}, "empty"),
            ({"text": {"en": "Hi"}, "select_by": "lang", "fallback": "fr"}, "fallback 'fr'"),
            ({"text": "Hi", "select_by": "lang"}, "only apply"),
            ({"text": "   "}, "empty"),
            ({"text": "Hi {x"}, "unclosed"),
            ({"text": "Hi", "max_segments": 0}, "greater than or equal to 1"),
            ({"text": "Hi", "on_missing": "skip"}, "reject"),
        ],
    )
    def test_inconsistent_options_are_refused(self, kwargs: dict[str, object], fragment: str) -> None:
        """Selection options must fit the shape of `text`; templates must parse; bounds hold."""
        with pytest.raises(ValidationError, match=fragment):
            MessageTemplate.model_validate(kwargs)


class TestCompileTemplate:
    def test_unknown_placeholder_is_named_with_available_columns(self) -> None:
        """The error names the unknown placeholder and lists the columns that exist."""
        with pytest.raises(TemplateError) as excinfo:
            compile_template(MessageTemplate(text="Hi {firstname}"), ["phone", "first_name"])
        message = str(excinfo.value)
        assert "{firstname}" in message
        assert "available columns: phone, first_name" in message

    def test_unknown_placeholder_in_any_template_of_a_mapping(self) -> None:
        """Every template of a mapping is checked, not only the ones used."""
        template = MessageTemplate(text={"en": "Hi {name}", "zh": "你好 {nom}"}, select_by="lang")
        with pytest.raises(TemplateError, match=r"\{nom\}"):
            compile_template(template, ["name", "lang"])

    def test_unknown_select_by_column(self) -> None:
        """A `select_by` column that does not exist is reported as such."""
        template = MessageTemplate(text={"en": "Hi"}, select_by="language")
        with pytest.raises(TemplateError, match="`select_by` column 'language'"):
            compile_template(template, ["lang"])

    def test_render_checks_before_running(self) -> None:
        """render_messages raises TemplateError up front, naming the placeholder."""
        with pytest.raises(TemplateError, match=r"\{code\}"):
            render_messages(recipients(first_name=["A"]), "Hi {first_name}, {code}")

    def test_columns_used(self) -> None:
        """The compiled template knows which columns it reads."""
        template = MessageTemplate(text={"en": "{a} {b}", "fr": "{b} {c}"}, select_by="lang")
        assert compile_template(template, ["a", "b", "c", "lang"]).columns == ("a", "b", "c", "lang")


class TestRenderBasics:
    def test_renders_each_row_and_keeps_input_columns_and_order(self) -> None:
        """Every input column survives; messages follow the input order."""
        frame = recipients(first_name=["Ann", "Bob", "Cy"], code=["1", "2", "3"])
        result = render_messages(frame, "Hi {first_name}, your code is {code}")
        assert result.messages.columns == [
            *frame.columns,
            "message",
            "encoding",
            "segments",
            "chars",
            "ucs2_chars",
        ]
        assert result.messages["message"].to_list() == [
            "Hi Ann, your code is 1",
            "Hi Bob, your code is 2",
            "Hi Cy, your code is 3",
        ]
        assert result.rejects.height == 0
        assert result.rejects.columns == [*frame.columns, "reasons", "reason_text"]

    def test_input_frame_is_not_modified(self) -> None:
        """Rendering returns new frames and leaves the input as it was."""
        frame = recipients(first_name=["Ann", None])
        before = frame.clone()
        render_messages(frame, "Hi {first_name}")
        assert frame.equals(before)

    def test_escaped_braces_and_non_string_columns(self) -> None:
        """`{{`/`}}` render as braces (GSM extension chars: 2 septets each); integers are cast to text."""
        frame = recipients(first_name=["Ann"]).with_columns(amount=pl.lit(42))
        result = render_messages(frame, "{{{first_name}}} owes {amount}")
        assert result.messages.row(0, named=True)["message"] == "{Ann} owes 42"
        assert result.messages["chars"].to_list() == [len("{Ann} owes 42") + 2]

    def test_values_are_stripped(self) -> None:
        """Surrounding whitespace in a value does not leak into the message."""
        result = render_messages(recipients(first_name=["  Ann \t"]), "Hi {first_name}!")
        assert result.messages["message"].to_list() == ["Hi Ann!"]

    def test_output_validates_against_the_schema(self) -> None:
        """The messages frame passes RenderedMessages with lazy=True."""
        frame = recipients(first_name=["Ann", "Zoë", None], code=["1", "2", "3"])
        result = render_messages(
            frame, MessageTemplate(text="Hi {first_name|there} {code}", on_missing="default")
        )
        validated = RenderedMessages.validate(result.messages, lazy=True)
        assert validated.height == 3

    def test_schema_catches_inconsistent_rows(self) -> None:
        """A UCS-2 row without culprits and an impossible segment count fail the schema."""
        result = render_messages(recipients(first_name=["Zoë"]), "Hi {first_name}")
        broken = result.messages.with_columns(ucs2_chars=pl.lit(""), segments=pl.lit(4, dtype=pl.Int64))
        with pytest.raises(pandera.errors.SchemaErrors) as excinfo:
            RenderedMessages.validate(broken, lazy=True)
        assert set(excinfo.value.failure_cases["check"].to_list()) == {
            "ucs2_chars_iff_ucs2",
            "segments_fit_chars",
        }


class TestNullPolicy:
    @pytest.mark.parametrize("missing", [None, "", "   "])
    def test_reject_policy_rejects_with_reason(self, missing: str | None) -> None:
        """Null, empty and blank values reject the row as `missing_value:<column>`."""
        frame = recipients(first_name=["Ann", missing], code=["1", "2"])
        result = render_messages(frame, "Hi {first_name}, code {code}")
        assert result.messages["source_row"].to_list() == [0]
        assert reasons_by_row(result.rejects) == {1: ["missing_value:first_name"]}
        assert result.rejects["reason_text"].to_list() == ["missing value for first_name"]

    def test_reject_policy_ignores_defaults(self) -> None:
        """With on_missing="reject", a placeholder default does not rescue the row."""
        result = render_messages(recipients(first_name=[None]), "Hi {first_name|there}")
        assert reasons_by_row(result.rejects) == {0: ["missing_value:first_name"]}

    @pytest.mark.parametrize("missing", [None, "", "  "])
    def test_default_policy_uses_the_default(self, missing: str | None) -> None:
        """With on_missing="default", a missing value takes the placeholder's default."""
        template = MessageTemplate(text="Hi {first_name|there}, code {code}", on_missing="default")
        result = render_messages(recipients(first_name=["Ann", missing], code=["1", "2"]), template)
        assert result.messages["message"].to_list() == ["Hi Ann, code 1", "Hi there, code 2"]
        assert result.rejects.height == 0

    def test_default_policy_still_rejects_placeholders_without_default(self) -> None:
        """A missing value for a placeholder with no default is rejected even under "default"."""
        template = MessageTemplate(text="Hi {first_name|there}, code {code}", on_missing="default")
        result = render_messages(recipients(first_name=[None], code=[None]), template)
        assert reasons_by_row(result.rejects) == {0: ["missing_value:code"]}

    def test_every_missing_column_is_a_reason(self) -> None:
        """Several missing values give several reasons, once per column even if used twice."""
        result = render_messages(recipients(a=[None], b=[""]), "{a} {b} {a}")
        assert reasons_by_row(result.rejects) == {0: ["missing_value:a", "missing_value:b"]}
        assert result.rejects["reason_text"].to_list() == ["missing value for a; missing value for b"]

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.one_of(st.none(), st.sampled_from(["", " ", "\t", "null", "Ann", " Zoë ", "李"])),
                st.one_of(st.none(), st.sampled_from(["", "7", " 8 "])),
            ),
            min_size=1,
            max_size=20,
        ),
        st.sampled_from(["reject", "default"]),
    )
    def test_matches_a_python_reference_and_never_leaves_a_gap(
        self, rows: list[tuple[str | None, str | None]], on_missing: str
    ) -> None:
        """Vectorised rendering equals a per-row Python reference; no message has "None" or an empty gap."""
        names, codes = [r[0] for r in rows], [r[1] for r in rows]
        template = MessageTemplate(text="Hi {name|friend}, code {code}.", on_missing=on_missing)  # type: ignore[arg-type]
        result = render_messages(recipients(name=names, code=codes), template)

        expected_messages, expected_rejects = {}, {}
        for row, (name, code) in enumerate(zip(names, codes, strict=True)):
            name_v = (name or "").strip() or None
            code_v = (code or "").strip() or None
            reasons = []
            if name_v is None and on_missing == "default":
                name_v = "friend"
            if name_v is None:
                reasons.append("missing_value:name")
            if code_v is None:
                reasons.append("missing_value:code")
            if reasons:
                expected_rejects[row] = reasons
            else:
                expected_messages[row] = f"Hi {name_v}, code {code_v}."

        got = dict(zip(result.messages["source_row"], result.messages["message"], strict=True))
        assert got == expected_messages
        assert reasons_by_row(result.rejects) == expected_rejects
        for message in got.values():
            assert "None" not in message and "Hi ," not in message and "code ." not in message


class TestPerRecipientTemplates:
    template = MessageTemplate(
        text={"en": "Hi {name|there}", "zh": "你好 {name|朋友}", "fr": "Bonjour {name}"},
        select_by="lang",
        on_missing="default",
    )

    def test_template_chosen_per_row(self) -> None:
        """Each row gets the template of its language."""
        frame = recipients(name=["Ann", "李伟", "Zoé", None], lang=["en", "zh", "fr", "zh"])
        result = render_messages(frame, self.template)
        assert result.messages["message"].to_list() == ["Hi Ann", "你好 李伟", "Bonjour Zoé", "你好 朋友"]
        assert result.messages["encoding"].to_list() == ["GSM7", "UCS2", "GSM7", "UCS2"]

    def test_unknown_key_without_fallback_is_rejected(self) -> None:
        """A language with no template is rejected as `no_template:<value>`; a null one as missing."""
        frame = recipients(name=["Ann", "Ana", "X"], lang=["en", "es", None])
        result = render_messages(frame, self.template)
        assert result.messages["source_row"].to_list() == [0]
        assert reasons_by_row(result.rejects) == {1: ["no_template:es"], 2: ["missing_value:lang"]}
        assert result.rejects["reason_text"].to_list() == [
            "no template for lang 'es'",
            "missing value for lang",
        ]

    def test_fallback_covers_unknown_and_null_keys(self) -> None:
        """With a fallback, unknown and null keys use the fallback template."""
        template = self.template.model_copy(update={"fallback": "en"})
        frame = recipients(name=["Ana", "X"], lang=["es", None])
        result = render_messages(frame, template)
        assert result.messages["message"].to_list() == ["Hi Ana", "Hi X"]

    def test_missing_value_reason_comes_from_the_selected_template(self) -> None:
        """Only the placeholders of the row's own template decide its rejection."""
        frame = recipients(name=[None, None], lang=["fr", "en"])
        result = render_messages(frame, self.template)
        assert result.messages["message"].to_list() == ["Hi there"]
        assert reasons_by_row(result.rejects) == {0: ["missing_value:name"]}


class TestSegmentsInRendering:
    def test_too_many_segments_is_rejected(self) -> None:
        """Messages longer than `max_segments` are rejected with `too_many_segments`."""
        frame = recipients(body=["x" * 150, "x" * 200, "x" * 400])
        result = render_messages(frame, MessageTemplate(text="{body}", max_segments=2))
        assert result.messages["segments"].to_list() == [1, 2]
        assert reasons_by_row(result.rejects) == {2: ["too_many_segments"]}
        assert result.rejects["reason_text"].to_list() == ["message longer than max_segments=2"]

    def test_columns_match_the_scalar_rules(self) -> None:
        """encoding/segments/chars/ucs2_chars agree with describe_text for each message."""
        frame = recipients(name=["Ann", "Zoë", "😀" * 40, "€" * 90])
        result = render_messages(frame, "Hi {name}")
        for row in result.messages.iter_rows(named=True):
            info = describe_text(row["message"])
            assert (row["encoding"], row["segments"], row["chars"], row["ucs2_chars"]) == (
                info.encoding,
                info.segments,
                info.chars,
                info.ucs2_chars,
            )


class TestUcs2Culprits:
    def test_culprits_counted_per_message(self) -> None:
        """Each character is counted once per message it forces into UCS-2, most frequent first."""
        frame = recipients(name=["Ann", "Zoë", "Zoë", "Łukasz"])
        result = render_messages(frame, "It’s {name}’s turn")
        assert result.ucs2_culprits == {"’": 4, "ë": 2, "Ł": 1}
        assert result.messages["ucs2_chars"].to_list() == ["’", "’ë", "’ë", "’Ł"]

    def test_rejected_rows_do_not_count(self) -> None:
        """Only messages that will be sent count toward the culprit report."""
        result = render_messages(recipients(name=["Zoë", None]), "Hi {name}")
        assert result.ucs2_culprits == {"ë": 1}

    def test_gsm_campaign_has_no_culprits(self) -> None:
        """A GSM-7 campaign reports none."""
        assert render_messages(recipients(name=["Ann"]), "Hi {name} 5€").ucs2_culprits == {}

    def test_culprit_table_shows_which_char_alone_forces_ucs2(self) -> None:
        """`only_culprit` counts messages that would be GSM-7 without that character."""
        result = render_messages(recipients(name=["Ann", "Zoë"]), "It’s {name}")
        table = culprit_table(result.messages)
        assert table.rows() == [
            ("’", "U+2019", "RIGHT SINGLE QUOTATION MARK", 2, 1),
            ("ë", "U+00EB", "LATIN SMALL LETTER E WITH DIAERESIS", 1, 0),
        ]
        assert table.columns == ["char", "codepoint", "name", "messages", "only_culprit"]


class TestSmartReplace:
    def test_off_by_default_keeps_typography(self) -> None:
        """Without opting in, a curly apostrophe stays and forces UCS-2."""
        result = render_messages(recipients(name=["Ann"]), "It’s {name}")
        assert result.messages.row(0, named=True)["encoding"] == "UCS2"

    def test_quotes_dashes_ellipsis_become_gsm(self) -> None:
        """Typographic quotes, dashes, ellipsis and special spaces in template and values become GSM-7."""
        template = MessageTemplate(text="It’s “{name}” – see you…", smart_replace=True)
        result = render_messages(recipients(name=["O’Brien\u00a0Jr"]), template)
        row = result.messages.row(0, named=True)
        assert row["message"] == "It's \"O'Brien Jr\" - see you..."
        assert (row["encoding"], row["ucs2_chars"]) == ("GSM7", "")
        assert result.ucs2_culprits == {}

    def test_other_characters_are_left_alone(self) -> None:
        """Letters are never transliterated: ë still forces UCS-2 and is reported."""
        template = MessageTemplate(text="Hi {name}’", smart_replace=True)
        result = render_messages(recipients(name=["Zoë"]), template)
        assert result.messages["message"].to_list() == ["Hi Zoë'"]
        assert result.ucs2_culprits == {"ë": 1}

    def test_every_replacement_target_is_gsm(self) -> None:
        """The replacement table only ever produces GSM basic characters."""
        for source, target in SMART_REPLACEMENTS.items():
            assert source not in GSM_ALPHABET, repr(source)
            assert set(target) <= GSM_ALPHABET, repr(target)
        assert smart_replace_text("‘a’ “b” — …") == "'a' \"b\" - ..."

    def test_default_value_is_replaced_too(self) -> None:
        """Defaults go through the same replacement as values."""
        template = MessageTemplate(text="Hi {name|“friend”}", smart_replace=True, on_missing="default")
        result = render_messages(recipients(name=[None]), template)
        assert result.messages["message"].to_list() == ['Hi "friend"']


# Pieces for random templates: GSM text, extension chars, typographic chars, CJK, emoji; values likewise.
_LITERAL = st.text(alphabet=st.sampled_from("Hi, code ~€{}’“”–…ëç你好😀"), max_size=12).map(
    lambda s: s.replace("{", "{{").replace("}", "}}")
)
_VALUE = st.one_of(st.none(), st.text(alphabet=st.sampled_from(" aZ~€’ëç李伟你😀\u00a0"), max_size=8))


@st.composite
def random_templates(draw: st.DrawFn) -> str:
    pieces = draw(
        st.lists(st.one_of(_LITERAL, st.sampled_from(["{a}", "{b}", "{a|你~}", "{b|’x}"])), max_size=6)
    )
    text = "".join(pieces)
    return text if text.strip() else text + "x"


class TestRenderMatchesScalarRules:
    @settings(max_examples=150, deadline=None)
    @given(
        random_templates(),
        st.lists(st.tuples(_VALUE, _VALUE), min_size=1, max_size=12),
        st.sampled_from(["reject", "default"]),
        st.booleans(),
    )
    def test_random_templates_and_values(
        self, text: str, rows: list[tuple[str | None, str | None]], on_missing: str, smart: bool
    ) -> None:
        """Message, encoding, segments, chars and the per-piece UCS-2 culprits equal a per-row reference."""
        template = MessageTemplate(text=text, on_missing=on_missing, smart_replace=smart, max_segments=255)  # type: ignore[arg-type]
        frame = recipients(a=[r[0] for r in rows], b=[r[1] for r in rows])
        result = render_messages(frame, template)

        def prepared(value: str | None) -> str | None:
            if value is None:
                return None
            value = (smart_replace_text(value) if smart else value).strip()
            return value or None

        expected: dict[int, str] = {}
        for index, (a, b) in enumerate(rows):
            values = {"a": prepared(a), "b": prepared(b)}
            out: list[str] = []
            for piece in parse_template(text):
                if isinstance(piece, str):
                    out.append(smart_replace_text(piece) if smart else piece)
                    continue
                value = values[piece.name]
                if value is None and on_missing == "default" and piece.default is not None:
                    value = smart_replace_text(piece.default) if smart else piece.default
                if value is None:
                    break
                out.append(value)
            else:
                expected[index] = "".join(out)

        got = result.messages
        assert dict(zip(got["source_row"], got["message"], strict=True)) == expected
        for row in got.iter_rows(named=True):
            info = describe_text(row["message"])
            assert (row["encoding"], row["segments"], row["chars"], row["ucs2_chars"]) == (
                info.encoding,
                info.segments,
                info.chars,
                info.ucs2_chars,
            ), row["message"]
        assert set(result.rejects["source_row"]) == set(range(len(rows))) - set(expected)

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.tuples(_VALUE, st.sampled_from(["en", "zh", "xx", None])), min_size=1, max_size=12))
    def test_selected_templates_culprits(self, rows: list[tuple[str | None, str | None]]) -> None:
        """With per-row templates, the culprits still equal those of each rendered message."""
        template = MessageTemplate(
            text={"en": "Hi {a|there}’s", "zh": "你好 {a|朋友}，你好"},
            select_by="lang",
            fallback="en",
            on_missing="default",
        )
        result = render_messages(recipients(a=[r[0] for r in rows], lang=[r[1] for r in rows]), template)
        assert result.messages.height == len(rows)
        for row in result.messages.iter_rows(named=True):
            assert row["ucs2_chars"] == describe_text(row["message"]).ucs2_chars
