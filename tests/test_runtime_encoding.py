from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ripl.runtime import (
    canonical_json,
    escape_text,
    format_time,
    parse_json,
    parse_time,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.decimals(allow_nan=False, allow_infinity=False, places=4)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_canonical_json_parses_back_to_an_equal_value(value: Any) -> None:
    assert parse_json(canonical_json(value)) == value


@given(st.dictionaries(st.text(max_size=6), st.integers(), max_size=6))
def test_canonical_json_ignores_key_insertion_order(value: dict[str, int]) -> None:
    reversed_order = dict(reversed(list(value.items())))

    assert canonical_json(reversed_order) == canonical_json(value)


@given(json_values)
def test_canonical_json_is_ascii_and_has_no_line_breaks(value: Any) -> None:
    text = canonical_json(value)

    assert text.isascii()
    assert "\n" not in text and "\r" not in text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("1.50"), "1.5"),
        (Decimal("100.00"), "100"),
        (Decimal("1E+2"), "100"),
        (0.1, "0.1"),
        (2.0, "2"),
        (10**30, "1" + "0" * 30),
        ({"b": 1, "a": [True, None]}, '{"a":[true,null],"b":1}'),
        ('\u2028\n"', '"\\u2028\\n\\""'),
        (datetime(2026, 12, 4, 10, tzinfo=UTC), '"2026-12-04T10:00:00Z"'),
    ],
)
def test_each_number_and_value_has_one_spelling(value: Any, text: str) -> None:
    assert canonical_json(value) == text


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), Decimal("NaN"), {1: 2}, {1}]
)
def test_values_without_a_json_form_are_refused(value: Any) -> None:
    with pytest.raises(TypeError):
        canonical_json(value)


def test_decimals_parse_exactly_not_as_binary_floats() -> None:
    assert parse_json("0.1") == Decimal("0.1")
    assert isinstance(parse_json("10"), int)
    with pytest.raises(ValueError):
        parse_json("NaN")


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2026-12-04T10:00:00Z", datetime(2026, 12, 4, 10, tzinfo=UTC)),
        ("2026-12-04T12:00:00+02:00", datetime(2026, 12, 4, 10, tzinfo=UTC)),
        ("2026-12-04T10:00:00", datetime(2026, 12, 4, 10, tzinfo=UTC)),
        ("2026-12-04t10:00:00.5z", datetime(2026, 12, 4, 10, 0, 0, 500000, tzinfo=UTC)),
        (
            "2026-12-04T10:00:00.123456789Z",
            datetime(2026, 12, 4, 10, 0, 0, 123456, tzinfo=UTC),
        ),
    ],
)
def test_rfc3339_times_parse_to_utc(text: str, moment: datetime) -> None:
    assert parse_time(text) == moment


@pytest.mark.parametrize(
    "text", ["2026-12-04", "2026-W49-5", "tomorrow", "2026-12-04T10:00Z"]
)
def test_non_rfc3339_times_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


def test_format_time_writes_utc_with_z() -> None:
    plus_two = timezone(timedelta(hours=2))

    assert (
        format_time(datetime(2026, 12, 4, 12, tzinfo=plus_two))
        == "2026-12-04T10:00:00Z"
    )
    assert (
        format_time(datetime(2026, 12, 4, 10, 0, 0, 250000))
        == "2026-12-04T10:00:00.25Z"
    )


@given(st.text())
def test_escaped_text_is_printable_ascii_and_one_line(text: str) -> None:
    escaped = escape_text(text)

    assert all(0x20 <= ord(char) < 0x7F for char in escaped)
