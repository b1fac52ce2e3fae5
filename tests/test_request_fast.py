"""The one-pass reader of plain requests (`_parse_plain`) gives exactly what
the general reader gives, and steps aside (None) for everything the general
reader refuses or reads another way: odd types, missing or undeclared names,
repeated entities, bad times, malformed links."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st

from ripl import load_policy
from ripl.request import (
    BadRequest,
    Entity,
    Parsed,
    _parse_general,
    _parse_plain,
    parse_request,
)

POLICY = load_policy(
    text="""\
import std.sensitivity
entity User: human { team: string, mfa: bool }
entity Bot: agent owner User { model: string }
entity Doc { pages: int, sensitivity: sensitivity }
actions docs { read, write }
context { anomaly: decimal }
allow read: action docs.read
"""
)
SCHEMA = POLICY.schema
CLOCK = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


class Text(str):
    """A string that is not plainly a `str`: the general path must read it."""


def _entity_shape(entity: Entity | None) -> Any:
    if entity is None:
        return None
    return (entity.type, entity.id, entity.ref, entity.owner, dict(entity.attrs))


def shape(parsed: Parsed) -> Any:
    entities = parsed.entities
    index = {
        key: _entity_shape(entities.get(parsed.principal.ref.__class__(*key)))
        for key in entities._raw
    }
    return (
        _entity_shape(parsed.principal),
        parsed.action,
        _entity_shape(parsed.resource),
        dict(parsed.context),
        parsed.chain,
        parsed.link_errors,
        index,
        parsed.now,
    )


# Valid parts most of the time, then a few random edits anywhere in the tree.
good_refs = st.sampled_from(  # copied: the edits below must not reach them
    [
        {"type": "User", "id": "u1"},
        {"type": "User", "id": "u2"},
        {"type": "Bot", "id": "b1"},
    ]
).map(copy.deepcopy)
odd = st.sampled_from(
    [
        None,
        0,
        3,
        "",
        "x",
        "User",
        "Nope",
        Text("u1"),
        [],
        ["docs"],
        {},
        (),
        "2026-12-04",
        "2026-12-04T09:30:00Z",
        {"type": "User"},
        {"type": "Doc", "id": "d1"},
        True,
        1.5,
    ]
).map(copy.deepcopy)
attr_maps = st.dictionaries(
    st.sampled_from(["team", "mfa", "model", "pages", "sensitivity", "other"]),
    st.one_of(
        st.booleans(),
        st.integers(-5, 5),
        st.sampled_from(["eng", "public", "restricted", "0.5", "x"]),
        st.none(),
    ),
    max_size=3,
)


@st.composite
def entities(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    if kind == "resource":
        out: dict[str, Any] = {"type": "Doc", "id": draw(st.sampled_from(["d1", "d2"]))}
    else:
        out = dict(draw(good_refs))
    if draw(st.booleans()):
        out["attrs"] = draw(attr_maps)
    if out["type"] == "Bot" and draw(st.booleans()):
        out["owner"] = draw(good_refs)
    return out


link_base = st.builds(
    lambda i, f, t, s, e: {"id": i, "from": f, "to": t, "scopes": s, "expires": e},
    st.sampled_from(["l0", "l1"]),
    good_refs,
    good_refs,
    st.sampled_from([["docs"], ["docs.read"], ["docs.write", "docs.read"]]),
    st.sampled_from(["2026-12-05T00:00:00Z", "2026-12-04T09:00:00+01:00"]),
)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            out.extend(_paths(value, (*prefix, i)))
    return out


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {
        "principal": draw(entities("principal")),
        "action": draw(st.sampled_from(["docs.read", "docs.write"])),
        "resource": draw(entities("resource")),
    }
    if draw(st.booleans()):
        out["entities"] = draw(st.lists(entities("entity"), max_size=3))
    if draw(st.booleans()):
        out["context"] = {"anomaly": draw(st.sampled_from(["0.5", 1, "high"]))}
    if draw(st.booleans()):
        out["now"] = "2026-12-04T09:30:00Z"
    if draw(st.booleans()):
        out["delegation"] = draw(st.lists(link_base, max_size=3))
    for _ in range(draw(st.integers(0, 2))):
        paths = _paths(out)
        path = draw(st.sampled_from(paths))
        parent = out
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(odd)
    return out


def general(data: dict[str, Any]) -> Any:
    try:
        return shape(_parse_general(data, SCHEMA, CLOCK))
    except BadRequest as exc:
        return ("bad", exc.message)


@given(requests())
def test_the_fast_reader_agrees_with_the_general_one(data: dict[str, Any]) -> None:
    note(repr(data))
    fast = _parse_plain(data, SCHEMA, CLOCK)
    slow = general(data)
    refused = slow[0] == "bad"
    event("fast reader" if fast is not None else f"general reader, refused={refused}")
    if fast is not None:
        assert shape(fast) == slow
    if not refused:
        assert shape(parse_request(data, SCHEMA, CLOCK)) == slow


PLAIN = {
    "principal": {
        "type": "Bot",
        "id": "b1",
        "attrs": {"model": "m"},
        "owner": {"type": "User", "id": "u1"},
    },
    "action": "docs.read",
    "resource": {"type": "Doc", "id": "d1", "attrs": {"pages": 3}},
    "context": {"anomaly": "0.25"},
    "entities": [{"type": "User", "id": "u1", "attrs": {"team": "eng"}}],
    "now": "2026-12-04T09:30:00Z",
    "delegation": [
        {
            "id": "l0",
            "from": {"type": "User", "id": "u1"},
            "to": {"type": "Bot", "id": "b1"},
            "scopes": ["docs"],
            "expires": "2026-12-05T00:00:00Z",
        }
    ],
}


def test_a_plain_request_takes_the_fast_reader() -> None:
    fast = _parse_plain(PLAIN, SCHEMA, CLOCK)
    assert fast is not None
    assert shape(fast) == general(PLAIN)
    assert fast.principal.owner is not None and fast.principal.owner.id == "u1"
    assert fast.chain is not None and fast.chain[0].id == "l0"
    assert str(fast.resource.attrs["pages"]) == "3"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"action": "docs"}, "unknown action `docs`"),
        ({"principal": {"type": "Doc", "id": "d1"}}, "`Doc` is not an identity"),
        ({"entities": [PLAIN["entities"][0]] * 2}, "is listed twice"),
        ({"now": "2026-12-04"}, "is not an RFC 3339 timestamp"),
        ({"context": ["a"]}, "`context` must be an object"),
        ({"resource": {"type": "Doc", "id": "d" * 5000}}, "longer than 4096"),
    ],
)
def test_the_fast_reader_leaves_bad_requests_to_the_general_one(
    change: dict[str, Any], message: str
) -> None:
    data = {**PLAIN, **change}
    assert _parse_plain(data, SCHEMA, CLOCK) is None
    with pytest.raises(BadRequest, match=message.replace("`", ".")):
        parse_request(data, SCHEMA, CLOCK)


def test_string_and_integer_subclasses_read_as_their_plain_values() -> None:
    """`StrEnum` / `IntEnum` values (and any `str` subclass) are the same
    strings and numbers to a rule, in every engine, and a cached answer for
    a plain value is the right answer for the subclass too."""
    import enum

    import ripl

    class Tag(enum.StrEnum):
        OK = "ok"

    class Level(enum.IntEnum):
        HIGH = 3

    text = (
        "entity User: human { tag: string, level: int }\n"
        "entity Bot: agent owner User {}\n"
        "entity Doc {}\n"
        "actions docs { read }\n"
        "allow tagged: action docs.read\n"
        '    when principal.tag == "ok" and principal.level >= 3\n'
        "allow bot: principal is Bot action docs.read\n"
        'deny evil: principal is Bot when delegation.purpose == "evil"\n'
    )

    def ask(tag: Any, level: Any, purpose: Any) -> dict[str, Any]:
        return {
            "principal": {
                "type": Text("Bot"),
                "id": Text("b1"),
                "owner": {"type": "User", "id": "u1"},
            },
            "action": Text("docs.read"),
            "resource": {"type": "Doc", "id": "d1"},
            "entities": [
                {"type": "User", "id": "u1", "attrs": {"tag": tag, "level": level}}
            ],
            "now": "2026-12-04T09:00:00Z",
            "delegation": [
                {
                    "id": Text("l0"),
                    "from": {"type": "User", "id": Text("u1")},
                    "to": {"type": "Bot", "id": "b1"},
                    "scopes": (Text("docs"),),
                    "expires": "2026-12-05T00:00:00Z",
                    "purpose": purpose,
                }
            ],
        }

    for options in ({}, {"mode": "reference"}, {"decision_cache": 64}):
        engine = ripl.load(text=text, **options)
        plain = engine.decide(ask("ok", 3, "evil"))
        assert plain.effect == "deny" and plain.rule_ids == ("evil",)
        assert engine.decide(ask(Tag.OK, Level.HIGH, Text("evil"))) == plain
        fine = engine.decide(ask(Tag.OK, Level.HIGH, Text("triage")))
        assert fine.effect == "allow" and fine.rule_ids == ("bot",)
        assert fine == engine.decide(ask("ok", 3, "triage"))
