from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import ripl
from ripl.runtime import AuditLog, Guard, ShadowEngine, ToolDeniedError

SCHEMA = """\
module shop

import std.obligations

entity Clerk: human { team: string }
entity Doc { sensitivity: string }

actions docs { read, share }
"""

ENFORCING = (
    SCHEMA
    + """
allow clerks_read:
    principal is Clerk
    action docs
    resource is Doc
"""
)

# Stricter: sharing is blocked, and reading secret docs is redacted.
CANDIDATE = (
    SCHEMA
    + """
allow clerks_read:
    principal is Clerk
    action docs.read
    resource is Doc

restrict secret_reads with redact("body"):
    principal is Clerk
    action docs.read
    resource is Doc
    when resource.sensitivity == "secret"

deny no_sharing:
    action docs.share
"""
)


def request(action: str, sensitivity: str = "public") -> dict[str, Any]:
    return {
        "principal": {"type": "Clerk", "id": "carol", "attrs": {"team": "ops"}},
        "action": action,
        "resource": {"type": "Doc", "id": "d1", "attrs": {"sensitivity": sensitivity}},
        "now": "2026-12-04T09:00:00Z",
    }


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit.db")


@pytest.fixture
def shadow(audit: AuditLog) -> ShadowEngine:
    return ShadowEngine(
        ripl.load(text=ENFORCING), ripl.load(text=CANDIDATE), audit=audit
    )


def test_only_the_enforcing_set_decides(shadow: ShadowEngine) -> None:
    decision = shadow.decide(request("docs.share"))
    assert (decision.effect, decision.rule_ids) == ("allow", ("clerks_read",))
    assert decision.policy_hash == shadow.enforcing.policy_hash
    assert shadow.policy_hash == shadow.enforcing.policy_hash


def test_a_difference_is_recorded_with_both_decisions(
    shadow: ShadowEngine, audit: AuditLog
) -> None:
    shadow.decide(request("docs.share"))
    (record,) = audit.query(tag="shadow")
    assert record.effect == "allow"
    assert record.policy_hash == shadow.enforcing.policy_hash
    stored = record.decision
    assert stored["rules"][0]["id"] == "clerks_read"
    assert stored["shadow"]["effect"] == "deny"
    assert stored["shadow"]["rules"][0]["id"] == "no_sharing"
    assert stored["shadow"]["policy_hash"] == shadow.candidate.policy_hash


def test_equal_answers_are_not_recorded(shadow: ShadowEngine, audit: AuditLog) -> None:
    shadow.decide(request("docs.read"))
    shadow.decide(request("docs.read", "internal"))
    assert len(audit) == 0
    assert shadow.stats.same == 2


def test_an_obligation_is_a_difference_even_with_the_same_rules_allowing(
    shadow: ShadowEngine, audit: AuditLog
) -> None:
    shadow.decide(request("docs.read", "secret"))
    (record,) = audit.query(tag="shadow")
    assert record.decision["shadow"]["effect"] == "restrict"
    assert record.decision["shadow"]["obligations"] == {"redact": ["body"]}


def test_counters_track_transitions(shadow: ShadowEngine) -> None:
    for action, sensitivity in [
        ("docs.share", "public"),
        ("docs.share", "secret"),
        ("docs.read", "secret"),
        ("docs.read", "public"),
    ]:
        shadow.decide(request(action, sensitivity))
    stats = shadow.stats
    assert (stats.decided, stats.same, stats.different) == (4, 1, 3)
    assert stats.transitions == {"allow->deny": 2, "allow->restrict": 1}
    assert stats.candidate_failures == 0


class Exploding:
    policy_hash = "sha256:candidate"

    def decide(self, request: Any) -> ripl.Decision:
        raise RuntimeError("candidate bug")


class BrokenAudit:
    def append(self, *args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")


def test_a_failing_candidate_never_changes_what_is_enforced() -> None:
    shadow = ShadowEngine(ripl.load(text=ENFORCING), Exploding(), audit=None)
    assert shadow.decide(request("docs.share")).effect == "allow"
    assert shadow.stats.candidate_failures == 1


def test_a_failing_shadow_audit_never_changes_what_is_enforced() -> None:
    shadow = ShadowEngine(
        ripl.load(text=ENFORCING), ripl.load(text=CANDIDATE), audit=BrokenAudit()
    )
    assert shadow.decide(request("docs.share")).effect == "allow"
    assert shadow.stats.audit_failures == 1


def test_a_guard_can_enforce_through_a_shadow_engine(
    shadow: ShadowEngine, audit: AuditLog
) -> None:
    session = {
        "principal": {"type": "Clerk", "id": "carol", "attrs": {"team": "ops"}},
        "now": "2026-12-04T09:00:00Z",
    }
    guard = Guard(shadow, audit=audit, session=session)
    doc = {"type": "Doc", "id": "d1", "attrs": {"sensitivity": "public"}}

    def share(to: str) -> str:
        return f"shared with {to}"

    guarded = guard.tool(share, action="docs.share", resource=doc)
    assert guarded("bob") == "shared with bob"
    assert [r.tag for r in audit.query()] == ["shadow", "guard"]

    promoted = Guard(shadow.candidate, audit=audit, session=session)
    with pytest.raises(ToolDeniedError):
        promoted.tool(share, action="docs.share", resource=doc)("eve")


class ReturnsNothing:
    policy_hash = "sha256:candidate"

    def decide(self, request: Any) -> Any:
        return None


def test_a_candidate_that_returns_no_decision_is_a_counted_failure() -> None:
    shadow = ShadowEngine(ripl.load(text=ENFORCING), ReturnsNothing(), audit=None)
    assert shadow.decide(request("docs.share")).effect == "allow"
    assert shadow.stats.candidate_failures == 1
