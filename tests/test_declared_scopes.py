"""Declared scopes: `entity Bot: agent owner User scopes payments.refund`
is a ceiling on what an identity of that type may ever do. A request outside
it is denied before any rule is looked at (`scope_not_declared`), whatever
the rules grant; a root human's declared scopes cap what its agents get."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

import ripl
from ripl import CheckError, Engine, load_policy
from ripl.fmt import format_source

POLICY = """\
entity User: human scopes payments, docs.read { team: string }
entity Bot: agent owner User scopes payments.refund, docs { model: string }
entity Invoice { amount: int }
actions payments { refund, charge }
actions docs { read, write }
allow bot_refund: principal is Bot action payments.refund
allow bot_charge: principal is Bot action payments.charge
allow bot_docs: principal is Bot action docs
allow people: principal is User action payments, docs
"""

CLOCK = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def request(principal: str, action: str, *, chain: bool = False) -> dict[str, Any]:
    who = {"type": principal, "id": "p1"}
    if principal == "Bot":
        who["owner"] = {"type": "User", "id": "u1"}
    out: dict[str, Any] = {
        "principal": who,
        "action": action,
        "resource": {"type": "Invoice", "id": "i1", "attrs": {"amount": 5}},
        "entities": [{"type": "User", "id": "u1", "attrs": {"team": "ops"}}],
        "now": "2026-12-04T09:00:00Z",
    }
    if chain:
        out["delegation"] = [
            {
                "id": "l0",
                "from": {"type": "User", "id": "u1"},
                "to": who,
                "scopes": ["payments"],
                "expires": "2026-12-05T00:00:00Z",
            }
        ]
    return out


@pytest.fixture(params=["compiled", "reference", "cached"])
def engine(request: pytest.FixtureRequest) -> Engine:
    policy = load_policy(POLICY)
    if request.param == "cached":
        return Engine(policy, clock=lambda: CLOCK, decision_cache=64)
    return Engine(policy, mode=request.param, clock=lambda: CLOCK)


def test_within_the_declared_scopes_the_rules_decide(engine: Engine) -> None:
    decision = engine.decide(request("Bot", "payments.refund", chain=True))
    assert decision.effect == "allow"
    assert decision.rule_ids == ("bot_refund",)


def test_a_grant_outside_the_declared_scopes_never_takes_effect(engine: Engine) -> None:
    for _ in range(2):  # the second answer may come from the decision cache
        decision = engine.decide(request("Bot", "payments.charge", chain=True))
        assert decision.effect == "deny"
        assert decision.rule_ids == ()
        assert decision.reasons == (
            "scope_not_declared: `payments.charge` is outside the scopes declared "
            "for `Bot` (`docs`, `payments.refund`)",
        )


def test_every_failed_check_is_its_own_reason(engine: Engine) -> None:
    # The chain delegates only `payments`; `docs.read` is outside it and
    # inside the declared scopes of Bot and of User, `payments.charge` outside
    # Bot's.
    decision = engine.decide(request("Bot", "docs.read", chain=True))
    assert decision.reason_codes == ("scope_not_delegated",)
    decision = engine.decide(request("Bot", "payments.charge", chain=True))
    assert decision.reason_codes == ("scope_not_declared",)
    charge = request("Bot", "payments.charge", chain=True)
    charge["delegation"][0]["scopes"] = ["docs"]
    assert engine.decide(charge).reason_codes == (
        "scope_not_delegated",
        "scope_not_declared",
    )


def test_the_root_humans_declared_scopes_cap_its_agents(engine: Engine) -> None:
    # Bot may act on all of `docs`, its owner's type only on `docs.read`.
    write = request("Bot", "docs.write", chain=True)
    write["delegation"][0]["scopes"] = ["docs"]
    decision = engine.decide(write)
    assert decision.effect == "deny"
    assert decision.reasons == (
        "scope_not_declared: `docs.write` is outside the scopes declared for "
        "`User` (`docs.read`, `payments`)",
    )
    read = request("Bot", "docs.read", chain=True)
    read["delegation"][0]["scopes"] = ["docs"]
    assert engine.decide(read).effect == "allow"


THROUGH = """\
entity User: human {}
entity Bot: agent owner User scopes docs.read {}
entity Service: service owner User {}
entity Helper: tool owner Bot | Service {}
entity Doc {}
actions docs { read, write }
allow all: action docs
"""


def _helper(owner: str, chain: list[tuple[str, str, list[str]]] | None) -> Any:
    ids = {"User": "u1", "Bot": "b1", "Service": "s1", "Helper": "h1"}
    out: dict[str, Any] = {
        "principal": {
            "type": "Helper",
            "id": "h1",
            "owner": {"type": owner, "id": ids[owner]},
        },
        "action": "docs.write",
        "resource": {"type": "Doc", "id": "d1"},
        "entities": [
            {"type": "User", "id": "u1"},
            {"type": "Bot", "id": "b1", "owner": {"type": "User", "id": "u1"}},
            {"type": "Service", "id": "s1", "owner": {"type": "User", "id": "u1"}},
        ],
        "now": "2026-12-04T09:00:00Z",
    }
    if chain is not None:
        out["delegation"] = [
            {
                "id": f"l{i}",
                "from": {"type": src, "id": ids[src]},
                "to": {"type": dst, "id": ids[dst]},
                "scopes": scopes,
                "expires": "2026-12-05T00:00:00Z",
            }
            for i, (src, dst, scopes) in enumerate(chain)
        ]
    return out


@pytest.mark.parametrize("mode", ["compiled", "reference", "cached"])
def test_authority_through_an_identity_never_exceeds_its_ceiling(mode: str) -> None:
    """A tool acting for Bot, by ownership or down a chain through Bot, gets
    no more than Bot's declared scopes; by another way it is not bound."""
    policy = load_policy(THROUGH)
    engine = (
        Engine(policy, clock=lambda: CLOCK, decision_cache=64)
        if mode == "cached"
        else Engine(policy, mode=mode, clock=lambda: CLOCK)  # type: ignore[arg-type]
    )
    refused = (
        "scope_not_declared: `docs.write` is outside the scopes declared for `Bot`"
    )
    for _ in range(2):  # the cache sees both ways for one tool id
        by_bot = engine.decide(_helper("Bot", None))
        assert by_bot.effect == "deny"
        assert by_bot.reasons[0].startswith(refused)
        by_service = engine.decide(_helper("Service", None))
        assert by_service.effect == "allow"
    down = [("User", "Bot", ["docs"]), ("Bot", "Helper", ["docs.write"])]
    assert engine.decide(_helper("Bot", down)).reasons[0].startswith(refused)
    direct = [("User", "Helper", ["docs.write"])]
    assert engine.decide(_helper("Bot", direct)).effect == "allow"


def test_a_human_outside_its_declared_scopes_is_denied(engine: Engine) -> None:
    assert engine.decide(request("User", "docs.read")).effect == "allow"
    decision = engine.decide(request("User", "docs.write"))
    assert decision.reason_codes == ("scope_not_declared",)


def test_types_without_declared_scopes_have_no_ceiling() -> None:
    text = POLICY.replace(" scopes payments, docs.read", "").replace(
        " scopes payments.refund, docs", ""
    )
    engine = Engine(load_policy(text), clock=lambda: CLOCK)
    assert engine.decide(request("Bot", "payments.charge", chain=True)).effect == (
        "allow"
    )


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (
            ("scopes payments.refund, docs", "scopes payments.refnd"),
            "unknown-action",
            "unknown action or group `payments.refnd` in the scopes of `Bot`",
        ),
        (
            ("scopes payments.refund, docs", "scopes docs, docs"),
            "duplicate",
            "scope `docs` is listed twice for `Bot`",
        ),
    ],
)
def test_declared_scopes_name_declared_actions_or_groups(
    change: tuple[str, str], code: str, message: str
) -> None:
    with pytest.raises(CheckError) as raised:
        load_policy(POLICY.replace(*change))
    assert [(d.code, d.message) for d in raised.value.diagnostics] == [(code, message)]


def test_scopes_are_part_of_the_syntax_of_identities_only() -> None:
    with pytest.raises(ripl.ParseError):
        load_policy("entity Invoice scopes payments { amount: int }\n")


def test_scopes_stays_usable_as_a_name() -> None:
    text = (
        "entity User: human { scopes: set<string> }\n"
        "actions docs { read }\n"
        'allow r: action docs.read when "x" in principal.scopes\n'
    )
    assert load_policy(text).rules[0].id == "r"


def test_the_formatter_keeps_declared_scopes() -> None:
    once = format_source(POLICY, "<text>")
    assert "entity Bot: agent owner User scopes payments.refund, docs {" in once
    assert format_source(once, "<text>") == once
    before = load_policy(POLICY).schema.entities["Bot"].scopes
    assert load_policy(once).schema.entities["Bot"].scopes == before
    assert before == frozenset({"payments.refund", "docs"})
