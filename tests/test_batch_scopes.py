"""Declared scopes in the columnar batch: every identity type a row acts
through (its principal's, and its chain's members or, with no chain, its
owners' up to the first human) caps the action, one `scope_not_declared`
each after the chain's own reasons, decided by the vectorized path exactly
as `Engine.decide` decides them; and rows without `now` are decided at one
reading of the engine's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ripl import Engine, load_policy
from ripl.batch import decide_columns, requests_to_columns

POLICY = """\
entity User: human scopes payments, docs.read {}
entity Bot: agent owner User scopes payments.refund, docs.read {}
entity Service: service owner User {}
entity Helper: tool owner Bot | Service | User scopes payments, docs {}
entity Doc {}
actions payments { refund, charge }
actions docs { read, write }
allow all: action payments, docs
"""

CLOCK = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
NOW = "2026-12-04T09:00:00Z"
LATER = "2026-12-05T00:00:00Z"
EARLIER = "2026-12-04T08:00:00Z"
IDS = {"User": "u1", "Bot": "b1", "Service": "s1", "Helper": "h1"}
LISTED = [
    {"type": "User", "id": "u1"},
    {"type": "Bot", "id": "b1", "owner": {"type": "User", "id": "u1"}},
    {"type": "Service", "id": "s1", "owner": {"type": "User", "id": "u1"}},
]


def _ref(name: str) -> dict[str, str]:
    return {"type": name, "id": IDS[name]}


def _request(
    principal: str,
    action: str,
    *,
    owner: str | None = None,
    chain: list[tuple[str, str, list[str]]] | None = None,
    entities: list[dict[str, Any]] | None = None,
    expires: str = LATER,
) -> dict[str, Any]:
    who: dict[str, Any] = _ref(principal)
    if owner is not None:
        who["owner"] = _ref(owner)
    out: dict[str, Any] = {
        "principal": who,
        "action": action,
        "resource": {"type": "Doc", "id": "d1"},
        "entities": LISTED if entities is None else entities,
        "now": NOW,
    }
    if chain is not None:
        out["delegation"] = [
            {
                "id": f"l{i}",
                "from": _ref(source),
                "to": _ref(target),
                "scopes": scopes,
                "expires": expires,
            }
            for i, (source, target, scopes) in enumerate(chain)
        ]
    return out


THROUGH_BOT = [("User", "Bot", ["docs"]), ("Bot", "Helper", ["docs"])]
CASES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "human_within_its_scopes": (
        _request("User", "docs.read", entities=[]),
        ("matched",),
    ),
    "human_outside_its_scopes": (
        _request("User", "docs.write", entities=[]),
        ("scope_not_declared",),
    ),
    "tool_owned_by_a_bot_within_the_bots_scopes": (
        _request("Helper", "docs.read", owner="Bot"),
        ("matched",),
    ),
    "tool_owned_by_a_bot_outside_the_bots_scopes": (
        _request("Helper", "payments.charge", owner="Bot"),
        ("scope_not_declared",),
    ),
    "tool_owned_by_a_bot_outside_the_bots_and_the_humans_scopes": (
        _request("Helper", "docs.write", owner="Bot"),
        ("scope_not_declared", "scope_not_declared"),
    ),
    "tool_owned_by_a_service_is_bound_by_the_human_only": (
        _request("Helper", "payments.charge", owner="Service"),
        ("matched",),
    ),
    "tool_owned_by_a_service_outside_the_humans_scopes": (
        _request("Helper", "docs.write", owner="Service"),
        ("scope_not_declared",),
    ),
    "ceiling_before_the_missing_root": (
        _request("Helper", "payments.charge", owner="Bot", entities=[]),
        ("scope_not_declared",),
    ),
    "unlisted_owner_still_binds_within_its_scopes": (
        _request("Helper", "docs.read", owner="Bot", entities=[]),
        ("root_not_found",),
    ),
    "agent_without_delegation_outside_its_scopes": (
        _request("Bot", "payments.charge", owner="User", entities=LISTED[:1]),
        ("agent_without_delegation", "scope_not_declared"),
    ),
    "agent_without_delegation_within_its_scopes": (
        _request("Bot", "docs.read", owner="User", entities=LISTED[:1]),
        ("agent_without_delegation",),
    ),
    "chain_through_the_bot_within_every_ceiling": (
        _request("Helper", "docs.read", owner="Bot", chain=THROUGH_BOT),
        ("matched",),
    ),
    "chain_through_the_bot_outside_the_bots_scopes": (
        _request(
            "Helper",
            "payments.charge",
            chain=[("User", "Bot", ["payments"]), ("Bot", "Helper", ["payments"])],
        ),
        ("scope_not_declared",),
    ),
    "chain_through_the_bot_outside_two_ceilings": (
        _request("Helper", "docs.write", chain=THROUGH_BOT),
        ("scope_not_declared", "scope_not_declared"),
    ),
    "chain_past_the_bot_overrides_the_owner": (
        _request(
            "Helper",
            "payments.charge",
            owner="Bot",
            chain=[("User", "Helper", ["payments"])],
        ),
        ("matched",),
    ),
    "failed_chain_reasons_come_first": (
        _request(
            "Helper",
            "docs.write",
            chain=[("User", "Bot", ["docs.read"]), ("Bot", "Helper", ["docs.read"])],
            expires=EARLIER,
        ),
        (
            "expired_link",
            "expired_link",
            "scope_not_delegated",
            "scope_not_declared",
            "scope_not_declared",
        ),
    ),
    "chain_to_the_bot_outside_its_scopes": (
        _request(
            "Bot",
            "payments.charge",
            chain=[("User", "Bot", ["payments"])],
            entities=LISTED[:1],
        ),
        ("scope_not_declared",),
    ),
}


def _engine(**options: Any) -> Engine:
    options.setdefault("clock", lambda: CLOCK)
    return Engine(load_policy(POLICY), **options)


@pytest.mark.parametrize("case", sorted(CASES))
def test_declared_scopes_give_the_reasons_decide_gives(case: str) -> None:
    request, codes = CASES[case]
    engine = _engine()
    reference = Engine(load_policy(POLICY), mode="reference", clock=lambda: CLOCK)
    want = reference.decide(request)
    assert want.reason_codes == codes
    result = decide_columns(engine, requests_to_columns([request] * 8))
    assert result.fallback == 0  # decided by the vectorized path
    for row in range(8):
        assert result.reason_codes(row) == codes
        assert result.effect_names()[row] == want.effect
        assert result.rules_of(row) == want.rule_ids


def test_every_case_in_one_batch_keeps_its_own_reasons() -> None:
    engine = _engine()
    batch = [request for request, _ in CASES.values()] * 2
    result = decide_columns(engine, requests_to_columns(batch))
    assert result.fallback == 0
    for row, request in enumerate(batch):
        want = engine.decide(request)
        assert result.reason_codes(row) == want.reason_codes, row
        assert result.effect_names()[row] == want.effect
        assert result.rules_of(row) == want.rule_ids


def _without_now(request: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in request.items() if key != "now"}


def test_chains_without_now_are_decided_by_the_vectorized_path() -> None:
    engine = _engine()
    batch = [_without_now(request) for request, _ in CASES.values()]
    result = decide_columns(engine, requests_to_columns(batch), min_group=1)
    assert result.fallback == 0
    for row, request in enumerate(batch):
        want = engine.decide(request)
        assert result.reason_codes(row) == want.reason_codes, row
        assert result.effect_names()[row] == want.effect


def test_rows_without_now_share_one_reading_of_the_clock() -> None:
    """A single `decide` reads the clock once per call; a batch once for all
    of its rows, so a link that expires while the batch runs is valid for
    every row or for none."""
    readings: list[datetime] = []

    def ticking() -> datetime:
        readings.append(CLOCK + timedelta(days=len(readings)))
        return readings[-1]

    engine = _engine(clock=ticking)
    request = _without_now(_request("Helper", "docs.read", chain=THROUGH_BOT))
    result = decide_columns(engine, requests_to_columns([request] * 8))
    assert len(readings) == 1
    assert result.fallback == 0
    assert list(result.effect_names()) == ["allow"] * 8
    assert engine.decide(request).reason_codes == ("expired_link", "expired_link")


def test_a_row_with_its_own_now_is_decided_at_it() -> None:
    engine = _engine(clock=lambda: CLOCK + timedelta(days=2))
    dated = _request("Helper", "docs.read", chain=THROUGH_BOT)
    batch = [dated, _without_now(dated)] * 4
    result = decide_columns(engine, requests_to_columns(batch))
    assert result.fallback == 0
    assert result.reason_codes(0) == ("matched",)
    assert result.reason_codes(1) == ("expired_link", "expired_link")
