"""Canonical JSON and RFC 3339 time, shared by tokens and the audit log.

Signatures and hash chains are only as good as the bytes they cover, so every
value that is signed or hashed goes through `canonical_json`: keys sorted,
no whitespace, ASCII only, numbers in one spelling. Two values that are equal
as JSON data give the same text, and the text parses back to an equal value
(`int` stays `int`, decimals come back as `Decimal`, never as binary floats).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})?"
)


def canonical_json(value: object) -> str:
    """Encode `value` as canonical JSON text.

    Accepts mappings with string keys, lists and tuples, strings, booleans,
    `None`, integers, finite floats, finite decimals and datetimes (written
    as RFC 3339 in UTC). Anything else raises `TypeError`, never a guess.
    """
    parts: list[str] = []
    _encode(value, parts)
    return "".join(parts)


def _encode(value: object, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError("non-finite number has no JSON form")
        out.append(_decimal_text(Decimal(repr(value))))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError("non-finite number has no JSON form")
        out.append(_decimal_text(value))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=True))
    elif isinstance(value, datetime):
        out.append(json.dumps(format_time(value)))
    elif isinstance(value, Mapping):
        _encode_mapping(value, out)
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode a {type(value).__name__} as JSON")


def _encode_mapping(value: Mapping[Any, Any], out: list[str]) -> None:
    keys = list(value)
    for key in keys:
        if not isinstance(key, str):
            raise TypeError("JSON object keys must be strings")
    out.append("{")
    for index, key in enumerate(sorted(keys)):
        if index:
            out.append(",")
        out.append(json.dumps(key, ensure_ascii=True))
        out.append(":")
        _encode(value[key], out)
    out.append("}")


def _decimal_text(value: Decimal) -> str:
    """One spelling per number: integral values print as integers, others in
    plain positional form with no trailing zeros (`1.50` and `1.5` agree)."""
    if value == value.to_integral_value():
        return str(int(value))
    # Trailing zeros are dropped by hand: `normalize()` would round to the
    # context's 28 digits, and two different numbers would share a spelling.
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def parse_json(text: str | bytes) -> Any:
    """Parse JSON keeping numbers exact: decimals become `Decimal`."""
    return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"`{name}` is not a JSON number")


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`; fractional seconds only when present.
    A naive datetime is taken as UTC, as the request contract says."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def format_time_fixed(moment: datetime) -> str:
    """Like `format_time` but always with six fractional digits, so that
    stored times sort as text in time order."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime.

    Raises `ValueError` for anything else (a bare date, a week date, ...).
    A timestamp without an offset is UTC. Digits past microseconds are cut.
    """
    if not isinstance(text, str) or not _RFC3339.fullmatch(text):
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    text = text.replace("t", "T").replace(" ", "T").replace("z", "Z")
    fraction = re.search(r"\.(\d+)", text)
    if fraction and len(fraction.group(1)) > 6:
        text = text[: fraction.start(1) + 6] + text[fraction.end(1) :]
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def as_utc(moment: datetime) -> datetime:
    """Aware UTC datetime; naive input is taken as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
