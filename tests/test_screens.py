"""Screens rule out a bucket's rules by one attribute read each, and take
rules made only of screened tests as matched without evaluating them. They
must change nothing: with screens on every bucket (not only the large ones),
the compiled engine still gives exactly the reference interpreter's answer."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from ripl import Engine, load_policy
from ripl import compile as compile_module
from ripl.compile import compile_policy
from ripl.delegation import check_chain
from ripl.interpret import Interpreter
from ripl.request import BadRequest, parse_request
from tests.test_differential import FIXED, policies, requests


@pytest.fixture(autouse=True)
def screen_every_bucket() -> Iterator[None]:
    with mock.patch.object(compile_module, "MIN_SCREENED", 1):
        yield


@given(policies(), st.lists(requests(), min_size=1, max_size=6))
def test_screened_buckets_agree_with_the_interpreter(
    text: str, batch: list[dict[str, Any]]
) -> None:
    note(text)
    policy = load_policy(text)
    clock = lambda: FIXED  # noqa: E731
    reference = Engine(policy, mode="reference", clock=clock)
    compiled = Engine(policy, mode="compiled", clock=clock)
    tree = compile_policy(policy)
    interpreter = Interpreter(policy)
    for request in batch:
        note(repr(request))
        assert compiled.decide(request) == reference.decide(request)
        try:
            parsed = parse_request(request, policy.schema, FIXED)
        except BadRequest:
            continue
        _, facts = check_chain(parsed, policy.schema)
        assert tree.outcome(parsed, facts) == interpreter.outcome(parsed, facts)


POLICY = """\
entity User: human { level: int, team: string }
entity Doc { size: int }
actions docs { read }
allow both_bounds: action docs.read when principal.level <= 5 and principal.level <= 7
allow low: action docs.read when principal.level < 3
allow not_ops: action docs.read when principal.team != "ops" and principal.team != "hr"
allow ops: action docs.read when principal.team == "ops"
deny huge: action docs.read when resource.size > 100
"""


def _decide(engine: Engine, attrs: dict[str, Any], size: Any) -> Any:
    return engine.decide(
        {
            "principal": {"type": "User", "id": "u", "attrs": attrs},
            "action": "docs.read",
            "resource": {"type": "Doc", "id": "d", "attrs": {"size": size}},
            "now": "2026-12-04T09:00:00Z",
        }
    )


@pytest.mark.parametrize(
    ("attrs", "size"),
    [
        ({"level": 6, "team": "dev"}, 1),  # one bound of two holds: no match
        ({"level": 5, "team": "ops"}, 1),
        ({"level": 2, "team": "hr"}, 1),
        ({"level": 9, "team": "dev"}, 101),
        ({"team": "dev"}, 1),  # a missing level errs the rules that read it
        ({"level": "high", "team": 3}, "big"),  # wrong types: no fast answer
        ({"level": 4}, None),
    ],
)
def test_screens_match_the_interpreter_on_tests_sharing_an_attribute(
    attrs: dict[str, Any], size: Any
) -> None:
    policy = load_policy(POLICY)
    clock = lambda: datetime(2026, 12, 4, 9, tzinfo=UTC)  # noqa: E731
    compiled = Engine(policy, clock=clock)
    reference = Engine(policy, mode="reference", clock=clock)
    assert _decide(compiled, attrs, size) == _decide(reference, attrs, size)


def test_a_verdict_written_once_is_shared_and_cannot_be_edited() -> None:
    """Rules without obligations win the same way on every request, so a
    bucket keeps the verdict a set of them wins with; the next request with
    the same winners gets the same answer, and nobody can edit it."""
    policy = load_policy(POLICY)
    clock = lambda: datetime(2026, 12, 4, 9, tzinfo=UTC)  # noqa: E731
    compiled = Engine(policy, clock=clock)
    reference = Engine(policy, mode="reference", clock=clock)
    first = _decide(compiled, {"level": 2, "team": "dev"}, 1)
    again = _decide(compiled, {"level": 1, "team": "qa"}, 7)
    assert first == again == _decide(reference, {"level": 1, "team": "qa"}, 7)
    assert first.rule_ids == ("both_bounds", "low", "not_ops")
    assert first.obligations is again.obligations  # the kept verdict's
    with pytest.raises(TypeError):
        first.obligations["cap"] = 1  # type: ignore[index]
    other = _decide(compiled, {"level": 5, "team": "ops"}, 1)
    assert other.rule_ids == ("both_bounds", "ops")
    assert other == _decide(reference, {"level": 5, "team": "ops"}, 1)
