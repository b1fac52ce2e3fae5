"""Owners: the schema says who may own whom, and requests are held to it."""

from __future__ import annotations

import pytest

import ripl
from ripl.parse import parse_source

SCHEMA = """
entity Person: human { team: string }
entity Svc: service owner Person | Svc {}
entity Bot: agent owner Person {}
entity Doc {}
actions docs { read }
allow people_read: action docs.read
"""


def _svc_read(
    owner: dict[str, str], entities: list[dict[str, object]]
) -> ripl.Decision:
    engine = ripl.load(SCHEMA)
    return engine.decide(
        {
            "principal": {"type": "Svc", "id": "s1", "owner": owner},
            "action": "docs.read",
            "resource": {"type": "Doc", "id": "d"},
            "entities": entities,
        }
    )


def test_a_type_may_list_itself_among_owners_when_a_human_is_reachable() -> None:
    decision = _svc_read(
        {"type": "Svc", "id": "s0"},
        [{"type": "Svc", "id": "s0", "owner": {"type": "Person", "id": "p"}}],
    )
    assert decision.effect == "allow"


def test_an_owner_of_an_undeclared_owner_type_finds_no_root() -> None:
    decision = _svc_read({"type": "Bot", "id": "b"}, [])
    assert decision.effect == "deny"
    assert decision.reason_codes == ("root_not_found",)
    assert "cannot own a `Svc`" in decision.reasons[0]


def test_owners_that_go_around_in_a_circle_find_no_root() -> None:
    decision = _svc_read(
        {"type": "Svc", "id": "s0"},
        [{"type": "Svc", "id": "s0", "owner": {"type": "Svc", "id": "s1"}}],
    )
    assert decision.reason_codes == ("root_not_found",)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (
            "entity A: service owner B {}\nentity B: service owner A {}\n",
            "ownership cycle: A → B → A",
        ),
        (
            "entity P: human {}\nentity A: agent owner B {}\n"
            "entity B: tool owner C {}\nentity C: tool owner B {}\n",
            "ownership cycle: B → C → B",
        ),
    ],
)
def test_owner_types_that_never_reach_a_human_are_a_check_error(
    schema: str, message: str
) -> None:
    with pytest.raises(ripl.CheckError) as info:
        ripl.load(text=schema)
    assert [d.message for d in info.value.diagnostics] == [message]


@pytest.mark.parametrize(
    ("condition", "hint"),
    [
        ("a && b", "ripl writes `and` (not `&&`)"),
        ("!a", "ripl writes `not` (and `!=` to compare)"),
        ("a || b", "ripl writes `or` (not `||`); `|` only separates types after `is`"),
    ],
)
def test_operators_of_other_languages_get_a_hint(condition: str, hint: str) -> None:
    with pytest.raises(ripl.ParseError) as info:
        parse_source(f"allow r: when {condition}\n", "p.ripl")
    assert info.value.diagnostics[0].hint == hint
