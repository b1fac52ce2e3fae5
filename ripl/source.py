"""Source text and spans: where a thing is in a policy file, and how to show it.

Every position a user sees is 1-based. Rendering expands tabs before counting
columns, so the caret lands under the right character in any terminal.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Span:
    """A region of one source file: offsets are 0-based, lines and columns 1-based."""

    file: str
    start: int
    end: int
    line: int
    column: int
    end_line: int
    end_column: int

    def location(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.column,
            "end_line": self.end_line,
            "end_col": self.end_column,
        }


def span_at(file: str, text: str, offset: int, length: int = 1) -> Span:
    """A span for an offset into text, for errors found outside the parser."""
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    end = min(len(text), offset + max(length, 0))
    end_line = text.count("\n", 0, end) + 1
    end_column = end - (text.rfind("\n", 0, end) + 1) + 1
    return Span(file, offset, end, line, column, end_line, end_column)


def _expand(line: str, column: int) -> tuple[str, int]:
    """Expand tabs and translate a 1-based column into the expanded line."""
    prefix = line[: max(column - 1, 0)].expandtabs(4)
    return line.expandtabs(4), len(prefix) + 1


def render_snippet(span: Span, text: str | None) -> list[str]:
    """The gutter, the source line and carets under the span, as lines."""
    if text is None:
        return []
    lines = text.split("\n")
    if not 1 <= span.line <= len(lines):
        return []
    raw = lines[span.line - 1].rstrip("\r")
    shown, column = _expand(raw, span.column)
    if span.end_line == span.line:
        _, end_column = _expand(raw, span.end_column)
    else:
        end_column = len(shown) + 1
    width = max(1, end_column - column)
    gutter = " " * len(str(span.line))
    # Control characters would move the terminal cursor; show them escaped.
    printable = "".join(ch if ch.isprintable() or ch == " " else "?" for ch in shown)
    return [
        f"{gutter} |",
        f"{span.line} | {printable}",
        f"{gutter} | {' ' * (column - 1)}{'^' * width}",
    ]
