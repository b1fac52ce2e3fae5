"""The decision tree: dispatch, shared tests, cost order, and its listing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ripl import Engine, load_policy
from ripl.cli import main
from ripl.compile import compile_policy, describe_tree, render_tree
from ripl.delegation import NO_CHAIN, check_chain
from ripl.interpret import Interpreter
from ripl.request import parse_request

POLICY = """\
import std.sensitivity
import std.stepup
import std.obligations
entity User: human { team: string, mfa: bool }
entity RefundBot: agent owner User { model: string }
entity Invoice { amount: decimal, sensitivity: sensitivity, project: string }
actions payments { refund, charge, payout }
context { anomaly: decimal, geo_velocity: decimal }
risk score = 0.7 * context.anomaly + 0.3 * context.geo_velocity
allow humans_refund: principal is User action payments.refund when principal.team == "billing"
allow small_refunds: principal is RefundBot action payments.refund resource is Invoice
    when resource.amount <= 100 and score < 0.5 and delegation.grants(payments.refund)
step_up large_refunds requires human_approval: principal is RefundBot action payments.refund when resource.amount > 100
restrict redacted with redact("email"), credential_ttl(5m): action payments.charge when resource.sensitivity >= confidential
deny risky: when score >= 0.8
"""  # noqa: E501

FIXED = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def bot_request(**context: Any) -> dict[str, Any]:
    return {
        "principal": {
            "type": "RefundBot",
            "id": "rb-7",
            "attrs": {"model": "m-2"},
            "owner": {"type": "User", "id": "alice"},
        },
        "action": "payments.refund",
        "resource": {
            "type": "Invoice",
            "id": "inv-42",
            "attrs": {"amount": 80, "sensitivity": "internal"},
        },
        "context": context,
        "delegation": [
            {
                "from": {"type": "User", "id": "alice"},
                "to": {"type": "RefundBot", "id": "rb-7"},
                "scopes": ["payments.refund"],
                "expires": "2026-12-04T10:00:00Z",
                "id": "d-1",
            }
        ],
        "entities": [
            {"type": "User", "id": "alice", "attrs": {"team": "billing", "mfa": True}}
        ],
        "now": "2026-12-04T09:00:00Z",
    }


@pytest.mark.parametrize(
    "context",
    [
        {"anomaly": 0.1, "geo_velocity": 0.2},
        {"anomaly": 0.9, "geo_velocity": 0.9},
        {"anomaly": 0.1},
        {"anomaly": "high", "geo_velocity": 0.1},
        {},
    ],
)
def test_compiled_outcome_equals_the_interpreters(context: dict[str, Any]) -> None:
    policy = load_policy(POLICY)
    parsed = parse_request(bot_request(**context), policy.schema, FIXED)
    _, facts = check_chain(parsed, policy.schema)
    assert compile_policy(policy).outcome(parsed, facts) == Interpreter(policy).outcome(
        parsed, facts
    )
    reference = Engine(policy, mode="reference").decide(bot_request(**context))
    assert Engine(policy).decide(bot_request(**context)) == reference


def test_a_bucket_holds_only_rules_whose_target_holds() -> None:
    tree = compile_policy(load_policy(POLICY))
    bucket = tree.bucket(("payments.refund", "RefundBot", "Invoice"))
    assert sorted(r.id for r in bucket.rules) == [
        "large_refunds",
        "risky",
        "small_refunds",
    ]
    order = [r.id for r in tree.policy.rules]
    assert [r.id for r in bucket.rules] == [
        i for i in order if i in ("large_refunds", "risky", "small_refunds")
    ]
    payout = tree.bucket(("payments.payout", "User", "Invoice"))
    assert [r.id for r in payout.rules] == ["risky"]


def test_a_shared_risk_score_is_computed_once_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ripl import ops

    calls = []
    original = ops._EXACT.multiply

    def multiply(a: Any, b: Any) -> Any:
        calls.append((a, b))
        return original(a, b)

    import ripl.compile as compiled_module

    monkeypatch.setitem(compiled_module._EXACT_OPS, "*", multiply)  # type: ignore[index]
    policy = load_policy(POLICY)
    tree = compiled_module.build_core(policy)
    parsed = parse_request(
        bot_request(anomaly=0.1, geo_velocity=0.2), policy.schema, FIXED
    )
    compiled_module.CompiledPolicy(policy, tree).outcome(parsed, NO_CHAIN)
    assert len(calls) == 2  # 0.7 * anomaly and 0.3 * geo_velocity, once each


def test_and_reports_the_first_error_in_source_order_whatever_the_cost_order() -> None:
    text = (
        "entity User: human { a: int, b: int }\nentity Doc { }\nactions docs { read }\n"
        "context { x: int }\n"
        "deny r: action docs.read when (context.x * 2 > 1) and principal.a > 1 "
        "and principal.b > 1\n"
    )
    request = {
        "principal": {"type": "User", "id": "u", "attrs": {}},
        "action": "docs.read",
        "resource": {"type": "Doc", "id": "d"},
    }
    policy = load_policy(text)
    want = Engine(policy, mode="reference").decide(request)
    assert Engine(policy).decide(request).same_answer(want)
    assert "context.x" in want.errors[0]


def test_a_false_operand_beats_an_error_in_any_position() -> None:
    text = (
        "entity User: human { a: int }\nentity Doc { }\nactions docs { read }\n"
        "deny r: action docs.read when principal.a > 1 and 1 > 2 + 0\n"
    )
    request = {
        "principal": {"type": "User", "id": "u", "attrs": {}},
        "action": "docs.read",
        "resource": {"type": "Doc", "id": "d"},
    }
    policy = load_policy(text)
    want = Engine(policy, mode="reference").decide(request)
    assert Engine(policy).decide(request).same_answer(want)


def test_tree_listing_names_buckets_tests_and_leaves() -> None:
    tree = describe_tree(compile_policy(load_policy(POLICY)))
    refund = next(
        b
        for b in tree["buckets"]
        if (b["action"], b["principal"], b["resource"])
        == ("payments.refund", "RefundBot", "Invoice")
    )
    assert [leaf["rule"] for leaf in refund["leaves"]] == [
        "risky",
        "large_refunds",
        "small_refunds",
    ]
    assert [t["test"] for t in refund["tests"]] == ["score"]
    assert sorted(refund["tests"][0]["rules"]) == ["risky", "small_refunds"]
    text = render_tree(tree)
    assert "bucket action payments.refund / principal RefundBot / resource Invoice" in (
        text
    )
    assert "  leaf allow small_refunds" in text


def test_ripl_compile_prints_text_and_json(tmp_path: Path) -> None:
    path = tmp_path / "payments.ripl"
    path.write_text(POLICY)
    runner = CliRunner()
    text = runner.invoke(main, ["compile", str(path)])
    assert text.exit_code == 0
    assert text.output.startswith("policy sha256:")
    as_json = runner.invoke(main, ["compile", "--format", "json", str(path)])
    assert as_json.exit_code == 0
    data = json.loads(as_json.output)
    assert data["rules"] == 5
    assert {"action", "principal", "resource", "tests", "leaves"} <= set(
        data["buckets"][0]
    )


def test_ripl_compile_exits_2_on_a_broken_policy(tmp_path: Path) -> None:
    path = tmp_path / "broken.ripl"
    path.write_text("alow x: action a\n")
    result = CliRunner().invoke(main, ["compile", str(path)])
    assert result.exit_code == 2
