"""The decision semantics of DESIGN.md, through the reference interpreter
(and the compiled evaluator, which must agree): three-valued conditions,
fail closed, combining, delegation and no escalation through agents."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest

import ripl
from ripl.engine import Mode

MODES = pytest.mark.parametrize("mode", ["reference", "compiled"])
NOW = "2026-12-04T09:00:00Z"


def engine(body: str, mode: Mode = "reference", **options: Any) -> ripl.Engine:
    header = (
        "import std.stepup\nimport std.obligations\n"
        "entity User: human { team: string }\n"
        "entity Bot: agent owner User {}\n"
        "entity Helper: tool owner Bot | User {}\n"
        "entity Robot: agent owner User {}\n"
        "entity Svc: service owner User {}\n"
        "entity Feed: connector owner Svc {}\n"
        "entity Doc { level: int }\n"
        "actions docs { read, write }\n"
        "context { t?: bool, f?: bool, missing?: bool, n?: int, score?: decimal }\n"
    )
    return ripl.load(text=header + body, mode=mode, **options)


def user(uid: str = "alice", team: str = "eng") -> dict[str, Any]:
    return {"type": "User", "id": uid, "attrs": {"team": team}}


def ref(kind: str, uid: str) -> dict[str, str]:
    return {"type": kind, "id": uid}


def link(
    src: tuple[str, str],
    dst: tuple[str, str],
    scopes: list[str],
    expires: str = "2026-12-04T10:00:00Z",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": f"{src[1]}->{dst[1]}",
        "from": ref(*src),
        "to": ref(*dst),
        "scopes": scopes,
        "expires": expires,
        **extra,
    }


def request(
    principal: dict[str, Any] | None = None,
    action: str = "docs.read",
    *,
    level: int = 1,
    context: dict[str, Any] | None = None,
    delegation: list[dict[str, Any]] | None = None,
    entities: list[dict[str, Any]] | None = None,
    now: str = NOW,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "principal": principal or user(),
        "action": action,
        "resource": {"type": "Doc", "id": "d1", "attrs": {"level": level}},
        "context": {"t": True, "f": False} if context is None else context,
        "entities": entities if entities is not None else [user()],
        "now": now,
    }
    if delegation is not None:
        data["delegation"] = delegation
    return data


BOT = {"type": "Bot", "id": "b1", "owner": ref("User", "alice")}
CHAIN = [link(("User", "alice"), ("Bot", "b1"), ["docs"], id="d-1")]


# ---- three-valued logic ----

TRUTH = {"T": "context.t", "F": "context.f", "E": "context.missing"}


def truth_of(expr: str, mode: Mode) -> str:
    """`T`, `F` or `E` (error) for a condition, read off the decision."""
    decision = engine(f"allow probe:\n    when {expr}\n", mode).decide(request())
    if decision.effect == "allow":
        return "T"
    return "E" if decision.errors else "F"


def _and(*xs: str) -> str:
    return "F" if "F" in xs else "E" if "E" in xs else "T"


def _or(*xs: str) -> str:
    return "T" if "T" in xs else "E" if "E" in xs else "F"


@MODES
@pytest.mark.parametrize(("a", "b"), list(itertools.product("TFE", repeat=2)))
def test_and_or_follow_the_three_valued_table(a: str, b: str, mode: Mode) -> None:
    assert truth_of(f"{TRUTH[a]} and {TRUTH[b]}", mode) == _and(a, b)
    assert truth_of(f"{TRUTH[a]} or {TRUTH[b]}", mode) == _or(a, b)


@MODES
@pytest.mark.parametrize(("value", "negated"), [("T", "F"), ("F", "T"), ("E", "E")])
def test_not_of_error_is_error(value: str, negated: str, mode: Mode) -> None:
    assert truth_of(f"not {TRUTH[value]}", mode) == negated


@MODES
@pytest.mark.parametrize("order", list(itertools.permutations("TFE")))
def test_result_does_not_depend_on_operand_order(
    order: tuple[str, ...], mode: Mode
) -> None:
    ops = [TRUTH[x] for x in order]
    assert truth_of(" and ".join(ops), mode) == "F"
    assert truth_of(" or ".join(ops), mode) == "T"


@MODES
def test_type_error_at_run_time_is_error_not_false(mode: Mode) -> None:
    # The schema says decimal; the request sends a string.
    decision = engine("allow probe:\n    when context.score < 1\n", mode).decide(
        request(context={"score": "low"})
    )
    assert decision.effect == "deny"
    assert decision.reason_codes == ("no_rule",)
    assert len(decision.errors) == 1


# ---- fail closed ----


@MODES
def test_erring_allow_grants_nothing_and_is_listed(mode: Mode) -> None:
    decision = engine("allow a:\n    when context.missing\n", mode).decide(request())
    assert decision.effect == "deny"
    assert decision.reason_codes == ("no_rule",)
    assert decision.errors == ("rule `a`: `context.missing` is missing (on a record)",)


@MODES
@pytest.mark.parametrize(
    "head",
    ["deny d", "step_up d requires mfa", 'restrict d with redact("x")'],
    ids=["deny", "step_up", "restrict"],
)
def test_erring_stricter_rule_denies_even_when_an_allow_matches(
    head: str, mode: Mode
) -> None:
    policy = engine(
        f"allow a:\n    action docs\n{head}:\n    when context.missing\n", mode
    )
    decision = policy.decide(request())
    assert decision.effect == "deny"
    assert decision.reason_codes == ("error_in_rule",)
    assert decision.rule_ids == ("d",)


@MODES
def test_condition_that_errs_inside_unless_never_grants(mode: Mode) -> None:
    decision = engine("allow a:\n    unless context.missing\n", mode).decide(request())
    assert decision.effect == "deny"


@MODES
def test_error_in_rule_decision_lists_matching_deny_rules_too(mode: Mode) -> None:
    policy = engine(
        "deny hard:\n    action docs.read\nstep_up soft requires mfa:\n"
        "    when context.missing\n",
        mode,
    )
    decision = policy.decide(request())
    assert decision.reason_codes == ("error_in_rule",)
    assert decision.rule_ids == ("hard", "soft")


# ---- combining ----

FOUR = (
    "allow a:\n    when context.n >= 1\n"
    'restrict r with redact("x"):\n    when context.n >= 2\n'
    "step_up s requires mfa:\n    when context.n >= 3\n"
    "deny d:\n    when context.n >= 4\n"
)


@MODES
@pytest.mark.parametrize(
    ("n", "effect"),
    [(0, "deny"), (1, "allow"), (2, "restrict"), (3, "step_up"), (4, "deny")],
)
def test_strongest_effect_of_the_matching_rules_wins(
    n: int, effect: str, mode: Mode
) -> None:
    decision = engine(FOUR, mode).decide(request(context={"n": n}))
    assert decision.effect == effect


@MODES
def test_restrict_obligations_merge_to_the_strictest(mode: Mode) -> None:
    policy = engine(
        'restrict r1 with redact("email", "phone"), credential_ttl(10m), cap(500):\n'
        "    action docs.read\n"
        'restrict r2 with redact("iban"), credential_ttl(2m), cap(80.5):\n'
        "    action docs.read\n"
        "allow a:\n    action docs.read\n",
        mode,
    )
    decision = policy.decide(request())
    assert decision.effect == "restrict"
    assert decision.rule_ids == ("r1", "r2")
    assert decision.to_json()["obligations"] == {
        "cap": 80.5,
        "credential_ttl_s": 120,
        "redact": ["email", "iban", "phone"],
    }


@MODES
def test_step_up_requirements_are_unioned(mode: Mode) -> None:
    policy = engine(
        "step_up s1 requires mfa:\n    action docs.read\n"
        "step_up s2 requires human_approval, mfa:\n    action docs.read\n",
        mode,
    )
    decision = policy.decide(request())
    assert decision.effect == "step_up"
    assert decision.requirements == ("human_approval", "mfa")
    assert decision.rule_ids == ("s1", "s2")


@MODES
def test_no_matching_rule_is_deny_no_rule(mode: Mode) -> None:
    decision = engine("allow a:\n    action docs.write\n", mode).decide(request())
    assert decision.effect == "deny"
    assert decision.reasons == ("no_rule: no rule matched; the default is deny",)
    assert decision.rules == ()


@MODES
def test_decision_carries_rule_locations_hash_and_time(mode: Mode) -> None:
    policy = engine("allow a:\n    action docs.read\n", mode)
    decision = policy.decide(request())
    (rule,) = decision.rules
    assert (rule.id, rule.file, rule.line, rule.col) == ("a", "<text>", 12, 1)
    assert decision.policy_hash == policy.policy_hash
    assert decision.policy_hash.startswith("sha256:")
    assert decision.evaluated_at == datetime(2026, 12, 4, 9, tzinfo=UTC)


# ---- delegation ----

DELEGATION = (
    "allow users:\n    principal is User\nallow bots:\n    principal is Bot | Helper\n"
)


def decide(
    data: dict[str, Any], mode: Mode = "reference", **options: Any
) -> ripl.Decision:
    return engine(DELEGATION, mode, **options).decide(data)


@MODES
def test_valid_chain_allows(mode: Mode) -> None:
    decision = decide(request(BOT, delegation=CHAIN), mode)
    assert decision.effect == "allow"
    assert decision.rule_ids == ("bots",)


@MODES
def test_agent_without_delegation_is_denied_before_rules(mode: Mode) -> None:
    decision = decide(request(BOT), mode)
    assert decision.effect == "deny"
    assert decision.reason_codes == ("agent_without_delegation",)


@MODES
def test_action_outside_the_delegated_scopes_is_denied(mode: Mode) -> None:
    chain = [link(("User", "alice"), ("Bot", "b1"), ["docs.write"])]
    decision = decide(request(BOT, delegation=chain), mode)
    assert decision.reason_codes == ("scope_not_delegated",)


@MODES
def test_scope_must_lie_in_every_link_not_only_the_last(mode: Mode) -> None:
    helper = {"type": "Helper", "id": "h1", "owner": ref("Bot", "b1")}
    chain = [
        link(("User", "alice"), ("Bot", "b1"), ["docs.write"]),
        link(("Bot", "b1"), ("Helper", "h1"), ["docs.read"]),
    ]
    decision = decide(request(helper, delegation=chain), mode)
    assert set(decision.reason_codes) == {"scope_not_delegated", "chain_widens"}


@MODES
def test_widening_link_invalidates_the_whole_chain(mode: Mode) -> None:
    helper = {"type": "Helper", "id": "h1", "owner": ref("Bot", "b1")}
    chain = [
        link(("User", "alice"), ("Bot", "b1"), ["docs.read"]),
        link(("Bot", "b1"), ("Helper", "h1"), ["docs"]),
    ]
    decision = decide(request(helper, delegation=chain), mode)
    assert decision.effect == "deny"
    assert decision.reason_codes == ("chain_widens",)


@MODES
def test_narrowing_link_keeps_the_chain_valid(mode: Mode) -> None:
    helper = {"type": "Helper", "id": "h1", "owner": ref("Bot", "b1")}
    chain = [
        link(("User", "alice"), ("Bot", "b1"), ["docs"]),
        link(("Bot", "b1"), ("Helper", "h1"), ["docs.read"]),
    ]
    assert decide(request(helper, delegation=chain), mode).effect == "allow"


@MODES
def test_chain_with_a_gap_is_broken(mode: Mode) -> None:
    helper = {"type": "Helper", "id": "h1", "owner": ref("Bot", "b1")}
    chain = [
        link(("User", "alice"), ("Bot", "b1"), ["docs"]),
        link(("Bot", "b2"), ("Helper", "h1"), ["docs"]),
    ]
    decision = decide(request(helper, delegation=chain), mode)
    assert decision.reason_codes == ("broken_chain",)


@MODES
def test_chain_that_ends_elsewhere_than_the_principal_is_broken(mode: Mode) -> None:
    chain = [link(("User", "alice"), ("Bot", "b9"), ["docs"])]
    decision = decide(request(BOT, delegation=chain), mode)
    assert decision.reason_codes == ("broken_chain",)


@MODES
def test_looping_chain_is_broken_and_terminates(mode: Mode) -> None:
    chain = [
        link(("User", "alice"), ("Bot", "b1"), ["docs"]),
        link(("Bot", "b1"), ("Robot", "r1"), ["docs"]),
        link(("Robot", "r1"), ("Bot", "b1"), ["docs"]),
    ]
    decision = decide(request(BOT, delegation=chain), mode)
    assert decision.effect == "deny"
    assert "broken_chain" in decision.reason_codes


@MODES
def test_chain_rooted_at_a_non_human_is_refused(mode: Mode) -> None:
    chain = [link(("Svc", "s1"), ("Bot", "b1"), ["docs"])]
    decision = decide(request(BOT, delegation=chain), mode)
    assert decision.reason_codes == ("root_not_human",)


@MODES
@pytest.mark.parametrize(
    ("now", "effect"),
    [
        ("2026-12-04T09:59:59Z", "allow"),
        ("2026-12-04T10:00:00Z", "deny"),  # now == expires is expired
        ("2026-12-04T10:00:01Z", "deny"),
        ("2026-12-04T11:00:00+01:00", "deny"),  # the same instant in another zone
        ("2026-12-04T10:59:59+01:00", "allow"),
    ],
)
def test_link_expires_at_its_expiry_instant(now: str, effect: str, mode: Mode) -> None:
    decision = decide(request(BOT, delegation=CHAIN, now=now), mode)
    assert decision.effect == effect
    if effect == "deny":
        assert decision.reason_codes == ("expired_link",)


@MODES
def test_every_failed_link_check_is_its_own_reason(mode: Mode) -> None:
    chain = [link(("Svc", "s1"), ("Bot", "b1"), ["docs.write"], "2026-12-01T00:00:00Z")]
    decision = decide(request(BOT, delegation=chain), mode)
    assert set(decision.reason_codes) == {
        "root_not_human",
        "expired_link",
        "scope_not_delegated",
    }


@MODES
def test_link_revoked_when_the_engine_is_built_is_refused(mode: Mode) -> None:
    decision = decide(request(BOT, delegation=CHAIN), mode, revoked=["d-1"])
    assert decision.reason_codes == ("revoked_link",)


@MODES
def test_revoking_a_link_later_refuses_its_next_use(mode: Mode) -> None:
    policy = engine(DELEGATION, mode)
    assert policy.decide(request(BOT, delegation=CHAIN)).effect == "allow"
    policy.revoke("d-1")
    decision = policy.decide(request(BOT, delegation=CHAIN))
    assert decision.reason_codes == ("revoked_link",)


@MODES
def test_revoking_an_ancestor_refuses_every_descendant(mode: Mode) -> None:
    helper = {"type": "Helper", "id": "h1", "owner": ref("Bot", "b1")}
    chain = [*CHAIN, link(("Bot", "b1"), ("Helper", "h1"), ["docs"], id="d-2")]
    decision = decide(request(helper, delegation=chain), mode, revoked=["d-1"])
    assert decision.reason_codes == ("revoked_link",)


@MODES
def test_malformed_link_is_refused(mode: Mode) -> None:
    chain = [{"from": ref("User", "alice"), "to": ref("Bot", "b1"), "scopes": ["docs"]}]
    decision = decide(request(BOT, delegation=chain), mode)
    assert decision.reason_codes == ("malformed_link",)


# ---- no escalation ----

ESCALATION = (
    'allow engineers:\n    principal is User\n    when principal.team == "eng"\n'
    "allow bots:\n    principal is Bot | Helper | Feed\n"
)


@MODES
def test_agent_never_gets_more_than_its_root_human(mode: Mode) -> None:
    policy = engine(ESCALATION, mode)
    data = request(BOT, delegation=CHAIN, entities=[user(team="sales")])
    decision = policy.decide(data)
    assert decision.effect == "deny"
    assert decision.reason_codes == ("escalation",)
    assert decision.reasons[0].startswith(
        "escalation: root `User::alice` is not allowed this"
    )


@MODES
def test_root_weaker_effect_caps_the_agent(mode: Mode) -> None:
    policy = engine(
        ESCALATION + "step_up careful requires mfa:\n    principal is User\n", mode
    )
    decision = policy.decide(request(BOT, delegation=CHAIN))
    assert decision.effect == "step_up"
    assert decision.requirements == ("mfa",)
    assert decision.reason_codes == ("escalation",)


@MODES
def test_connector_without_chain_is_capped_by_the_human_its_owners_lead_to(
    mode: Mode,
) -> None:
    policy = engine(ESCALATION, mode)
    feed = {"type": "Feed", "id": "f1", "owner": ref("Svc", "s1")}
    svc = {"type": "Svc", "id": "s1", "owner": ref("User", "alice")}
    allowed = policy.decide(request(feed, entities=[user(), svc]))
    assert allowed.effect == "allow"
    refused = policy.decide(request(feed, entities=[user(team="sales"), svc]))
    assert refused.reason_codes == ("escalation",)


@MODES
def test_owner_missing_from_the_request_is_root_not_found(mode: Mode) -> None:
    policy = engine(ESCALATION, mode)
    feed = {"type": "Feed", "id": "f1", "owner": ref("Svc", "s1")}
    decision = policy.decide(request(feed, entities=[user()]))
    assert decision.effect == "deny"
    assert decision.reason_codes == ("root_not_found",)


@MODES
def test_tool_with_no_owner_given_is_root_not_found(mode: Mode) -> None:
    decision = engine(ESCALATION, mode).decide(request({"type": "Feed", "id": "f1"}))
    assert decision.reason_codes == ("root_not_found",)


@MODES
def test_human_acting_alone_is_not_compared_with_anyone(mode: Mode) -> None:
    decision = engine(ESCALATION, mode).decide(request())
    assert decision.effect == "allow"
    assert decision.reason_codes == ("matched",)


# ---- delegation facts in rules ----


@MODES
@pytest.mark.parametrize(
    ("condition", "effect"),
    [
        ("delegation.depth == 1", "allow"),
        ('delegation.purpose == "triage"', "allow"),
        ("delegation.grants(docs.read)", "allow"),
        ("delegation.grants(docs.write)", "deny"),
        ("delegation.via(Bot)", "allow"),
        ('delegation.limit("spend") <= 100', "allow"),
        ('delegation.limit("other") <= 100', "deny"),  # unset limit is error
    ],
)
def test_rules_read_facts_of_the_chain(condition: str, effect: str, mode: Mode) -> None:
    policy = engine(
        f"allow users:\n    principal is User\nallow bots:\n    principal is Bot\n"
        f"    when {condition}\n",
        mode,
    )
    chain = [
        link(
            ("User", "alice"),
            ("Bot", "b1"),
            ["docs.read"],
            purpose="triage",
            limits={"spend": 80},
        )
    ]
    assert policy.decide(request(BOT, delegation=chain)).effect == effect


@MODES
def test_without_chain_depth_is_zero_and_grants_is_false(mode: Mode) -> None:
    policy = engine(
        "allow users:\n    principal is User\n"
        "    when delegation.depth == 0 and not delegation.grants(docs.read)\n",
        mode,
    )
    assert policy.decide(request()).effect == "allow"
