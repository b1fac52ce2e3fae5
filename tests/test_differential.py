"""The compiled tree, the decision cache and the columnar batch agree with the
reference interpreter on random policy sets and random requests.

Policies are drawn from a fixed schema with every effect, delegation facts,
sensitivity labels, risk expressions, owners and records; requests leave
attributes out, give them the wrong type, carry valid, expired, widening or
out-of-scope chains, and name owners that may be missing.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from ripl import CheckError, Engine, load_policy
from ripl.batch import decide_columns, requests_to_columns
from ripl.compile import compile_policy
from ripl.delegation import check_chain
from ripl.interpret import Interpreter
from ripl.request import BadRequest, parse_request

SCHEMA = """\
import std.sensitivity
import std.stepup
import std.obligations
entity User: human { team: string, mfa: bool, level: int }
entity RefundBot: agent owner User { model: string, budget: decimal }
entity Helper: tool owner RefundBot | User { vendor: string }
entity Invoice {
    amount: decimal, sensitivity: sensitivity, project: string, count: int
}
actions payments { refund, charge, payout }
actions docs { read, write }
context { anomaly: decimal, geo_velocity: decimal, env: string }
risk score = 0.7 * context.anomaly + 0.3 * context.geo_velocity
"""

ATOMS = (
    "resource.amount <= 100",
    "resource.amount > 100",
    "resource.amount >= 18446744073709551616",
    "resource.count == 3",
    "resource.count < 5",
    "resource.count * 2 > 5",
    "resource.sensitivity >= confidential",
    "resource.sensitivity < internal",
    "resource.sensitivity == public",
    'resource.project == "eu"',
    'resource.project != "us"',
    'resource.project in ["eu", "apac"]',
    "resource has project",
    "principal is User",
    'principal.team == "billing"',
    "principal.mfa == true",
    "principal.level >= 2",
    'principal.model == "m-2"',
    "principal.budget >= resource.amount",
    'principal.owner.team == "billing"',
    "score < 0.5",
    "score >= 0.8",
    "context.anomaly > 0.3",
    "context.anomaly + context.geo_velocity < 1",
    'context.env == "prod"',
    "delegation.grants(payments.refund)",
    "delegation.grants(payments)",
    "delegation.depth >= 1",
    "delegation.depth == 0",
    'delegation.purpose == "refund"',
    'delegation.limit("spend") >= resource.amount',
    "delegation.via(RefundBot)",
    'delegation.root.team == "billing"',
    "action in [payments.refund, docs.read]",
)

EFFECT_HEADS = (
    "allow {id}",
    "deny {id}",
    "step_up {id} requires mfa",
    "step_up {id} requires human_approval, mfa",
    'restrict {id} with redact("email")',
    'restrict {id} with redact("phone"), credential_ttl(5m)',
    "restrict {id} with cap(50), credential_ttl(10m)",
    "restrict {id} with cap(resource.amount)",
)

PRINCIPALS = (
    "",
    "principal is User",
    "principal is RefundBot",
    "principal is Helper",
    "principal is User | RefundBot",
)
ACTIONS = (
    "",
    "action payments.refund",
    "action payments",
    "action payments.charge",
    "action docs",
    "action docs.read, payments.payout",
)
RESOURCES = ("", "resource is Invoice", "resource is Invoice", "resource is User")


@st.composite
def conditions(draw: st.DrawFn, depth: int = 0) -> str:
    if depth >= 2 or draw(st.booleans()):
        return draw(st.sampled_from(ATOMS))
    kind = draw(st.sampled_from(("and", "or", "not")))
    if kind == "not":
        return f"not ({draw(conditions(depth + 1))})"
    parts = draw(st.lists(conditions(depth + 1), min_size=2, max_size=3))
    return "(" + f" {kind} ".join(parts) + ")"


@st.composite
def rules(draw: st.DrawFn, index: int) -> str:
    head = draw(st.sampled_from(EFFECT_HEADS)).format(id=f"r{index}")
    clauses = [
        draw(st.sampled_from(PRINCIPALS)),
        draw(st.sampled_from(ACTIONS)),
        draw(st.sampled_from(RESOURCES)),
    ]
    if draw(st.booleans()):
        clauses.append(f"when {draw(conditions())}")
    if draw(st.integers(0, 4)) == 0:
        clauses.append(f"unless {draw(conditions())}")
    return f"{head}: " + " ".join(c for c in clauses if c)


@functools.lru_cache(maxsize=4096)
def _checks(rule: str) -> bool:
    try:
        load_policy(SCHEMA + rule + "\n")
    except CheckError:
        return False
    return True


@st.composite
def policies(draw: st.DrawFn) -> str:
    """Rules that do not type-check in the schema are replaced by their
    condition-free form, so every drawn policy set loads."""
    count = draw(st.integers(1, 7))
    kept = []
    for i in range(count):
        rule = draw(rules(i))
        if not _checks(rule):
            rule = rule.split(":", 1)[0] + ": action docs.read"
            if not _checks(rule):
                rule = f"deny r{i}: action docs.write"
        kept.append(rule)
    return SCHEMA + "\n".join(kept) + "\n"


# ---- requests -----------------------------------------------------------------

NUMBERS = st.one_of(
    st.integers(-5, 300),
    st.sampled_from([100, 2**64, 2**64 + 1, 0.1, 0.5, 0.8, 99.99, "12.5"]),
    st.decimals(min_value=-10, max_value=400, places=2, allow_nan=False),
)
WRONG = st.sampled_from(["oops", True, [1], {"a": 1}, None, 7])


def maybe(draw: st.DrawFn, value: st.SearchStrategy[Any], wrong: bool = True) -> Any:
    roll = draw(st.integers(0, 9))
    if roll == 0:
        return _OMIT
    if roll == 1 and wrong:
        return draw(WRONG)
    return draw(value)


_OMIT = object()


def record(
    draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]
) -> dict[str, Any]:
    out = {}
    for name, strategy in fields.items():
        value = maybe(draw, strategy)
        if value is not _OMIT:
            out[name] = value
    return out


USER_ATTRS = {
    "team": st.sampled_from(["billing", "support"]),
    "mfa": st.booleans(),
    "level": st.integers(0, 4),
}
BOT_ATTRS = {"model": st.sampled_from(["m-1", "m-2"]), "budget": NUMBERS}
INVOICE_ATTRS = {
    "amount": NUMBERS,
    "project": st.sampled_from(["eu", "us", "apac"]),
    "count": st.integers(0, 6),
    "sensitivity": st.sampled_from(
        ["public", "internal", "confidential", "restricted", "secret"]
    ),
}
CONTEXT = {
    "anomaly": NUMBERS,
    "geo_velocity": NUMBERS,
    "env": st.sampled_from(["prod", "dev"]),
}
NOW = "2026-12-04T09:00:00Z"
SCOPES = st.lists(
    st.sampled_from(
        ["payments", "payments.refund", "payments.charge", "docs", "docs.read"]
    ),
    min_size=1,
    max_size=2,
)


def user(draw: st.DrawFn, ident: str) -> dict[str, Any]:
    return {"type": "User", "id": ident, "attrs": record(draw, USER_ATTRS)}


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["User", "RefundBot", "Helper"]))
    entities = []
    if draw(st.integers(0, 4)) > 0:
        entities.append(user(draw, "alice"))
    principal: dict[str, Any]
    if kind == "User":
        principal = user(draw, draw(st.sampled_from(["alice", "bob"])))
    elif kind == "RefundBot":
        principal = {
            "type": "RefundBot",
            "id": "rb-7",
            "attrs": record(draw, BOT_ATTRS),
        }
    else:
        principal = {"type": "Helper", "id": "h-1", "attrs": {"vendor": "acme"}}
    if kind != "User" and draw(st.integers(0, 5)) > 0:
        owner = draw(st.sampled_from(["alice", "bob"]))
        principal["owner"] = {"type": "User", "id": owner}
    resource: dict[str, Any]
    if draw(st.integers(0, 9)) == 0:
        resource = {
            "type": "User",
            "id": draw(st.sampled_from(["alice", "carol"])),
            "attrs": record(draw, USER_ATTRS),
        }
    else:
        resource = {
            "type": "Invoice",
            "id": "inv-1",
            "attrs": record(draw, INVOICE_ATTRS),
        }
    request: dict[str, Any] = {
        "principal": principal,
        "action": draw(
            st.sampled_from(
                [
                    "payments.refund",
                    "payments.charge",
                    "payments.payout",
                    "docs.read",
                    "docs.write",
                ]
            )
        ),
        "resource": resource,
        "context": record(draw, CONTEXT),
        "entities": entities,
        "now": NOW,
    }
    if kind != "User" and draw(st.integers(0, 3)) > 0:
        request["delegation"] = chain(draw, principal)
    return request


def chain(draw: st.DrawFn, principal: dict[str, Any]) -> list[dict[str, Any]]:
    root = {"type": "User", "id": draw(st.sampled_from(["alice", "bob"]))}
    target = {"type": principal["type"], "id": principal["id"]}
    scopes = draw(SCOPES)
    link: dict[str, Any] = {
        "from": root,
        "to": target,
        "scopes": scopes,
        "id": "d-1",
        "expires": draw(
            st.sampled_from(["2026-12-04T10:00:00Z", "2026-12-04T08:00:00Z"])
        ),
    }
    if draw(st.booleans()):
        link["purpose"] = draw(st.sampled_from(["refund", "audit"]))
    if draw(st.booleans()):
        link["limits"] = {"spend": draw(st.sampled_from([50, 150, 10**30]))}
    links = [link]
    if draw(st.integers(0, 3)) == 0:
        # a second hop that narrows or widens
        links[0] = dict(link, to={"type": "RefundBot", "id": "rb-9"})
        links.append(
            {
                "from": {"type": "RefundBot", "id": "rb-9"},
                "to": target,
                "scopes": draw(SCOPES),
                "id": "d-2",
                "expires": "2026-12-04T12:00:00Z",
            }
        )
    return links


FIXED = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def _engines(text: str) -> tuple[Engine, Engine, Engine]:
    policy = load_policy(text)
    clock = lambda: FIXED  # noqa: E731
    return (
        Engine(policy, mode="reference", clock=clock),
        Engine(policy, mode="compiled", clock=clock),
        Engine(policy, mode="compiled", clock=clock, decision_cache=64),
    )


@given(policies(), st.lists(requests(), min_size=1, max_size=6))
def test_compiled_cached_and_batch_agree_with_the_interpreter(
    text: str, batch: list[dict[str, Any]]
) -> None:
    note(text)
    reference, compiled, cached = _engines(text)
    policy = reference.policy
    tree = compile_policy(policy)
    interpreter = Interpreter(policy)
    expected = []
    for request in batch:
        note(repr(request))
        want = reference.decide(request)
        expected.append(want)
        assert compiled.decide(request) == want
        assert cached.decide(request) == want
        assert cached.decide(request) == want  # a hit, if cacheable
        try:
            parsed = parse_request(request, policy.schema, FIXED)
        except BadRequest:
            continue
        _, facts = check_chain(parsed, policy.schema)
        assert tree.outcome(parsed, facts) == interpreter.outcome(parsed, facts)
    assert compiled.decide_batch(batch) == expected
    result = decide_columns(compiled, requests_to_columns(batch), min_group=1)
    assert list(result.effect_names()) == [d.effect for d in expected]
    assert [tuple(r) for r in result.rules] == [d.rule_ids for d in expected]


@pytest.mark.parametrize(
    ("amount", "effect"),
    [(2**64 + 1, "deny"), (2**64, "allow"), (2**63, "allow")],
)
def test_big_integers_stay_exact_in_the_compiled_tree(amount: int, effect: str) -> None:
    """PEER-BUGS case 6: integers beyond 64 bits are neither rounded nor wrapped."""
    text = (
        "entity Acct: human { limit: int }\n"
        "entity Thing { }\n"
        "action transfer\n"
        "context { amount: int }\n"
        "allow q: action transfer when context.amount <= principal.limit "
        "and context.amount > 1\n"
        "deny d: action transfer when context.amount == 18446744073709551617\n"
    )
    request = {
        "principal": {"type": "Acct", "id": "acct-1", "attrs": {"limit": 2**64}},
        "action": "transfer",
        "resource": {"type": "Thing", "id": "t"},
        "context": {"amount": amount},
    }
    reference, compiled, cached = _engines(text)
    want = reference.decide(request)
    assert want.effect == effect
    assert compiled.decide(request) == want
    assert cached.decide(request) == cached.decide(request) == want
    result = decide_columns(compiled, requests_to_columns([request]), min_group=1)
    assert list(result.effect_names()) == [effect]


# ---- rows the columnar path vectorizes -------------------------------------------

TYPED = {
    "principal.attrs.team": st.sampled_from(["billing", "support", None]),
    "principal.attrs.mfa": st.sampled_from([True, False]),
    "principal.attrs.level": st.integers(-3, 5),
    "resource.attrs.amount": st.sampled_from(
        [0.1, 0.5, 99.99, 100.0, 100.5, 250.0, float("nan")]
    ),
    "resource.attrs.count": st.integers(0, 6),
    "resource.attrs.sensitivity": st.sampled_from(
        ["public", "internal", "confidential", "restricted", "secret", None]
    ),
    "resource.attrs.project": st.sampled_from(["eu", "us", "apac", None]),
    "context.anomaly": st.sampled_from([0.0, 0.3, 0.31, 0.5, 0.8, 0.95]),
    "context.env": st.sampled_from(["prod", "dev"]),
    "owner.attrs.team": st.sampled_from(["billing", "support"]),
    "owner.attrs.level": st.integers(0, 4),
}


@st.composite
def column_batches(draw: st.DrawFn) -> dict[str, Any]:
    """Typed columns with no chains: humans, agents (denied: no chain), and
    tools owned by a human, so most rows take the vectorized path."""
    import numpy as np

    n = draw(st.integers(1, 12))
    kinds = draw(
        st.lists(
            st.sampled_from(["User", "User", "Helper", "RefundBot"]),
            min_size=n,
            max_size=n,
        )
    )
    columns: dict[str, Any] = {
        "principal.type": np.array(kinds),
        "principal.id": np.array([f"p{i % 3}" for i in range(n)]),
        "action": np.array(
            draw(
                st.lists(
                    st.sampled_from(
                        ["payments.refund", "payments.charge", "docs.read"]
                    ),
                    min_size=n,
                    max_size=n,
                )
            )
        ),
        "resource.type": np.array(["Invoice"] * n),
        "resource.id": np.array(["inv-1"] * n),
        "owner.type": np.array(
            ["User" if k == "Helper" else None for k in kinds], dtype=object
        ),
        "owner.id": np.array(
            ["alice" if k == "Helper" else None for k in kinds], dtype=object
        ),
        "owner.present": np.array([k == "Helper" for k in kinds]),
    }
    for name, strategy in TYPED.items():
        if draw(st.integers(0, 5)) == 0:
            continue  # the whole column absent
        values = draw(st.lists(strategy, min_size=n, max_size=n))
        if any(v is None for v in values):
            columns[name] = np.array(values, dtype=object)
        else:
            columns[name] = np.array(values)
    return columns


@given(policies(), column_batches())
def test_columnar_batch_agrees_with_decide_row_by_row(
    text: str, columns: dict[str, Any]
) -> None:
    from ripl.batch import request_of_row

    note(text)
    reference, compiled, _ = _engines(text)
    result = decide_columns(compiled, columns, min_group=1)
    for row in range(len(result)):
        request = request_of_row(columns, row)
        note(repr(request))
        want = reference.decide(request)
        assert EFFECT_NAMES[result.effects[row]] == want.effect
        assert tuple(result.rules[row]) == want.rule_ids


EFFECT_NAMES = ("allow", "restrict", "step_up", "deny")
