"""The `{"type", "id"}` pair that names a principal in every runtime record.

Ids are kept exactly as given: a newline, a quote, NUL or an escape sequence in
an id is data, not something to strip. Only `show` escapes, for messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs


@attrs.frozen
class Identity:
    """An entity named by type and id, e.g. `User::alice`."""

    type: str
    id: str

    @classmethod
    def of(cls, value: Identity | Mapping[str, Any]) -> Identity:
        """Accept an `Identity` or a `{"type", "id"}` mapping, as requests carry.

        Raises `ValueError` when the type or id is missing, empty or not a string.
        """
        if isinstance(value, Identity):
            return value
        if not isinstance(value, Mapping):
            raise ValueError("an identity must be an object with `type` and `id`")
        kind = value.get("type")
        ident = value.get("id")
        if not isinstance(kind, str) or not kind:
            raise ValueError("an identity needs a non-empty string `type`")
        if not isinstance(ident, str) or not ident:
            raise ValueError("an identity needs a non-empty string `id`")
        return cls(kind, ident)

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type, "id": self.id}

    def show(self) -> str:
        """`Type::id` in backticks, escaped so that it is always one safe line."""
        return f"`{escape_text(self.type)}::{escape_text(self.id)}`"


IdentityLike = Identity | Mapping[str, Any]


def escape_text(text: str) -> str:
    """Escape everything outside printable ASCII, plus backslash, quote and
    backtick, so the result can never end a line, a quoted field or a code span,
    nor drive a terminal. The escaping is reversible: nothing is dropped."""
    out: list[str] = []
    for char in text:
        code = ord(char)
        if char in '\\"`':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)
