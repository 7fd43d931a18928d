"""The terminal shows data, never interprets it: the CLI's way to put values and messages on a rich console.

Rich reads `[...]` in a printed string as markup and `:name:` as an emoji code. A CSV cell `[/oops]`, a
header `[bold]x[/bold]` or an error message quoting either would then vanish, restyle the line, or raise
`MarkupError` and crash the command. Every value, every sample message and every error message therefore
goes to the console as a `rich.text.Text`, which rich prints exactly as it is; only the CLI's own labels are
styled.

    console.print(problem("error:", exc))        # `error:` in red, the message verbatim
    table.add_row(plain(name), plain(value))     # table cells verbatim
    console.print(plain(f"rejects file {path}")) # a whole line of data
"""

from __future__ import annotations

from rich.text import Text


def plain(value: object, style: str = "") -> Text:
    """`value` as text that rich prints exactly as it is (no markup, no emoji codes), in `style` if given."""
    return Text(str(value), style=style)


def problem(label: str, message: object, style: str = "red") -> Text:
    """`error: <message>`: the label in `style` (red), then the message verbatim."""
    return Text.assemble((label, style), " ", str(message))
