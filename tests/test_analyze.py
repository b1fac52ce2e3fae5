"""The analyzer's findings: each kind with positive, negative and near-miss
cases, the PEER-BUGS analyzer cases (1, 10, 13, 15), suppressions, and the
rule that every witness reproduces in the reference engine."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

import ripl
from ripl.analyze import Analysis, Finding, analyze
from ripl.analyze.suppress import apply_suppressions
from ripl.analyze.witness import Observer

HEADER = """
import std.sensitivity
import std.stepup
import std.obligations

entity User: human { team: string, age: int }
entity Bot: agent owner User { model: string }
entity Photo {
    public: bool, sensitivity: sensitivity, path: string,
    retention?: { locked: bool },
}
actions photos { view, delete, share }
context { anomaly: decimal }
risk score = 0.7 * context.anomaly
"""


def load(rules: str, header: str = HEADER) -> ripl.PolicySet:
    return ripl.load_policy(text=header + "\n" + rules, name="t.ripl")


def run(rules: str, header: str = HEADER) -> list[Finding]:
    policy = load(rules, header)
    analysis = Analysis(policy)
    findings = apply_suppressions(policy, analysis.run())
    assert analysis.unconfirmed == 0, "a witness did not reproduce"
    for finding in findings:
        if finding.witness is not None:
            observed = Observer(policy).observe(finding.witness)
            assert observed is not None and observed.chain_ok
    return findings


def codes(findings: Sequence[Finding]) -> list[tuple[str, tuple[str, ...]]]:
    return sorted((f.code, tuple(r.id for r in f.rules)) for f in findings)


def of(findings: Sequence[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code and f.suppressed is None]


# ---- unsatisfiable (PEER case 13: 1, 2 and the negative control) -------------


def test_unequal_constants_make_a_rule_unsatisfiable() -> None:
    found = run("allow a: principal is User action photos.view when 1 == 2")
    assert codes(found) == [("unsatisfiable", ("a",))]
    assert found[0].severity == "error"


def test_contradictory_ranges_make_a_rule_unsatisfiable() -> None:
    found = run(
        "allow a: principal is User action photos.view "
        "when principal.age > 30 and principal.age < 18"
    )
    assert codes(found) == [("unsatisfiable", ("a",))]
    assert "condition never holds" in found[0].message


def test_a_satisfiable_range_is_not_reported() -> None:
    found = run(
        "allow a: principal is User action photos.view "
        "when principal.age > 18 and principal.age < 65"
    )
    assert found == []


def test_a_range_of_one_integer_is_satisfiable() -> None:
    found = run(
        "allow a: principal is User action photos.view "
        "when principal.age > 17 and principal.age < 19"
    )
    assert found == []


def test_a_decimal_range_between_integers_is_satisfiable() -> None:
    found = run(
        "allow a: principal is User action photos.view "
        "when context.anomaly > 0.1 and context.anomaly < 0.1001"
    )
    assert found == []


# ---- always-true (PEER case 13: 3, 4, 5, 6) ------------------------------------


def test_a_tautology_is_always_true() -> None:
    found = run(
        "allow a: principal is User action photos.view "
        "when principal.age > 30 or principal.age <= 30"
    )
    assert codes(found) == [("always-true", ("a",))]


def test_a_type_test_on_the_only_resource_type_is_always_true() -> None:
    found = run("deny d: action photos.delete when resource is Photo")
    assert codes(found) == [("always-true", ("d",))]
    assert found[0].severity == "warning"


def test_an_unconstrained_allow_always_applies() -> None:
    header = (
        "entity User: human { age: int }\nentity Photo { public: bool }\n"
        "actions photos { view, delete }\n"
    )
    found = run("allow everything:", header)
    assert codes(found) == [("always-true", ("everything",))]


def test_two_rules_that_jointly_cover_a_boolean_are_each_not_always_true() -> None:
    """Joint coverage by several rules is a documented limitation."""
    found = run(
        "allow pub: principal is User action photos.view when resource.public\n"
        "allow priv: principal is User action photos.view when not resource.public"
    )
    assert of(found, "always-true") == []


# ---- conflict, with near misses ----------


def test_allow_and_deny_on_overlapping_ranges_conflict() -> None:
    found = run(
        "allow a: principal is User action photos.view when principal.age >= 30\n"
        "deny d: principal is User action photos.view when principal.age <= 30"
    )
    assert codes(found) == [("conflict", ("a", "d"))]
    witness = found[0].witness
    assert witness is not None and witness["principal"]["attrs"]["age"] == 30


def test_adjacent_ranges_that_do_not_overlap_do_not_conflict() -> None:
    found = run(
        "allow a: principal is User action photos.view when principal.age > 30\n"
        "deny d: principal is User action photos.view when principal.age <= 30"
    )
    assert found == []


def test_labels_one_level_apart_do_not_conflict() -> None:
    found = run(
        "allow a: principal is User action photos.view "
        "when resource.sensitivity <= internal\n"
        "deny d: principal is User action photos.view "
        "when resource.sensitivity >= confidential"
    )
    assert found == []


def test_labels_sharing_one_level_conflict() -> None:
    found = run(
        "allow a: principal is User action photos.view "
        "when resource.sensitivity <= internal\n"
        "deny d: principal is User action photos.view "
        "when resource.sensitivity >= internal"
    )
    assert codes(found) == [("conflict", ("a", "d"))]
    assert found[0].witness is not None
    assert found[0].witness["resource"]["attrs"]["sensitivity"] == "internal"


def test_step_up_conflicts_with_allow() -> None:
    found = run(
        "allow a: principal is User action photos.view when principal.age > 10\n"
        "step_up s requires mfa: principal is User action photos.view "
        "when principal.age > 60"
    )
    assert codes(found) == [("conflict", ("a", "s"))]
    assert found[0].decision == "step_up"


def test_rules_on_different_actions_are_not_compared() -> None:
    found = run(
        "allow a: principal is User action photos.view\n"
        "deny d: principal is User action photos.delete"
    )
    assert found == []


# ---- shadowed ----------


def test_an_allow_inside_a_deny_is_shadowed() -> None:
    found = run(
        "allow a: principal is User action photos.view when principal.age > 40\n"
        "deny d: principal is User action photos.view when principal.age > 30"
    )
    assert codes(found) == [("shadowed", ("a", "d"))]
    assert found[0].witness is not None


def test_an_erring_deny_counts_as_overriding() -> None:
    found = run(
        "allow a: principal is User action photos.view resource is Photo "
        "when not (resource has retention)\n"
        "deny d: principal is User action photos.view "
        "when resource.retention.locked"
    )
    assert ("shadowed", ("a", "d")) in codes(found)


def _three_resources(deny_types: str) -> list[Finding]:
    header = HEADER.replace(
        "actions photos",
        "entity Album { public: bool }\nentity Clip { public: bool }\nactions photos",
    )
    return run(
        "allow a: principal is User action photos.view\n"
        f"deny d: principal is User action photos.view resource is {deny_types}",
        header,
    )


def test_a_deny_covering_all_but_one_resource_type_does_not_shadow() -> None:
    found = _three_resources("Photo | Album")
    assert codes(found) == [("conflict", ("a", "d"))]


def test_a_deny_covering_every_resource_type_shadows() -> None:
    found = _three_resources("Photo | Album | Clip")
    assert codes(found) == [("shadowed", ("a", "d"))]


def test_restrict_is_shadowed_by_step_up() -> None:
    found = run(
        'restrict r with redact("email"): principal is User action photos.view '
        "when principal.age > 40\n"
        "step_up s requires mfa: principal is User action photos.view"
    )
    assert codes(found) == [("shadowed", ("r", "s"))]


# ---- redundant (PEER case 15) ----------


def test_a_narrower_allow_is_redundant() -> None:
    found = run(
        "allow narrow: principal is User action photos.view when principal.age > 40\n"
        "allow wide: principal is User action photos.view when principal.age > 30"
    )
    assert codes(found) == [("redundant", ("narrow", "wide"))]
    assert found[0].severity == "info"


def test_allows_on_disjoint_ranges_are_not_redundant() -> None:
    found = run(
        "allow low: principal is User action photos.view when principal.age < 30\n"
        "allow high: principal is User action photos.view when principal.age >= 30"
    )
    assert found == []


def test_head_constant_and_condition_constant_are_duplicates() -> None:
    found = run(
        "allow head: principal is User action photos.view\n"
        "allow body: principal is User when action == photos.view"
    )
    assert len(of(found, "redundant")) == 1
    finding = of(found, "redundant")[0]
    assert {r.id for r in finding.rules} == {"head", "body"}
    assert "exactly the same requests" in finding.message


def test_restrict_with_other_obligations_is_not_redundant() -> None:
    found = run(
        'restrict r1 with redact("email"): principal is User action photos.view\n'
        'restrict r2 with redact("phone"): principal is User action photos.view '
        "when principal.age > 3"
    )
    assert of(found, "redundant") == []


# ---- path patterns (PEER case 1) ----------


def test_disjoint_exact_paths_are_not_shadowing_or_redundant() -> None:
    found = run(
        "allow a: principal is User action photos.view "
        'when resource.path == "/process/cancel"\n'
        "allow b: principal is User action photos.view "
        'when resource.path == "/process"\n'
        "allow c: principal is User action photos.view "
        'when resource.path matches "/project/{id}"\n'
        "allow root: principal is User action photos.view "
        'when resource.path == "/"'
    )
    assert found == []


def test_an_exact_path_under_a_placeholder_pattern_is_redundant() -> None:
    found = run(
        "allow one: principal is User action photos.view "
        'when resource.path == "/project/1"\n'
        "allow any: principal is User action photos.view "
        'when resource.path matches "/project/{id}"'
    )
    assert codes(found) == [("redundant", ("one", "any"))]


def test_a_deeper_path_is_not_under_a_one_segment_placeholder() -> None:
    found = run(
        "allow one: principal is User action photos.view "
        'when resource.path == "/project/1/member"\n'
        "deny any: principal is User action photos.view "
        'when resource.path matches "/project/{id}"'
    )
    assert found == []


def test_a_path_under_a_double_star_pattern_conflicts() -> None:
    found = run(
        "allow one: principal is User action photos.view "
        'when resource.path matches "/tmp/**"\n'
        "deny secret: principal is User action photos.view "
        'when resource.path matches "/tmp/secrets/**"'
    )
    assert codes(found) == [("conflict", ("one", "secret"))]
    witness = found[0].witness
    assert witness is not None
    assert witness["resource"]["attrs"]["path"].startswith("/tmp/secrets")


# ---- unguarded optional reads (PEER case 10) ----------


def test_a_deny_reading_an_optional_attribute_without_a_guard_warns() -> None:
    found = run(
        "allow a: principal is User action photos.delete\n"
        "deny d: principal is User action photos.delete "
        "when resource.retention.locked == true"
    )
    warned = of(found, "unguarded-optional")
    assert [f.rule.id for f in warned] == ["d"]
    assert warned[0].decision == "deny"
    assert "retention" in warned[0].message


@pytest.mark.parametrize(
    "head", ["step_up d requires mfa", 'restrict d with redact("email")']
)
def test_step_up_and_restrict_reading_optional_attributes_warn(head: str) -> None:
    found = run(
        f"{head}: principal is User action photos.delete when resource.retention.locked"
    )
    assert [f.rule.id for f in of(found, "unguarded-optional")] == ["d"]


def test_a_guarded_read_does_not_warn() -> None:
    found = run(
        "deny d: principal is User action photos.delete "
        "when resource has retention and resource.retention.locked"
    )
    assert of(found, "unguarded-optional") == []


def test_an_allow_reading_an_optional_attribute_does_not_warn() -> None:
    found = run(
        "allow a: principal is User action photos.delete "
        "when resource.retention.locked == false"
    )
    assert of(found, "unguarded-optional") == []


# ---- privilege drift ----------


def test_an_agent_grant_its_root_never_has_is_escalation() -> None:
    found = run(
        "allow bot: principal is Bot action photos.delete "
        "when resource.sensitivity <= internal"
    )
    assert codes(found) == [("escalation", ("bot",))]
    witness = found[0].witness
    assert witness is not None and witness["delegation"][0]["from"]["type"] == "User"


def test_an_agent_grant_its_root_also_has_is_not_escalation() -> None:
    found = run(
        "allow users: principal is User action photos.delete\n"
        "allow bot: principal is Bot action photos.delete "
        "when resource.sensitivity <= internal"
    )
    assert found == []


def test_an_agent_grant_checking_another_scope_is_beyond_scope() -> None:
    found = run(
        "allow users: principal is User action photos\n"
        "allow bot: principal is Bot action photos.view, photos.delete "
        "when delegation.grants(photos.view) and resource.sensitivity <= internal"
    )
    assert codes(found) == [("beyond-scope", ("bot",))]
    assert found[0].witness is not None
    assert found[0].witness["action"] == "photos.delete"


def test_an_agent_grant_checking_its_own_scope_is_not_beyond_scope() -> None:
    found = run(
        "allow users: principal is User action photos\n"
        "allow bot: principal is Bot action photos.view "
        "when delegation.grants(photos.view) and resource.sensitivity <= internal"
    )
    assert found == []


def test_an_agent_allowed_every_action_is_a_blanket_grant() -> None:
    found = run(
        "allow users: principal is User\n"
        "allow bot: principal is Bot when resource.sensitivity <= internal"
    )
    blanket = of(found, "blanket-grant")
    assert [f.rule.id for f in blanket] == ["bot"]
    assert "every action" in blanket[0].message


def test_an_agent_grant_without_a_sensitivity_bound_is_a_blanket_grant() -> None:
    found = run(
        "allow users: principal is User action photos.view\n"
        "allow bot: principal is Bot action photos.view"
    )
    blanket = of(found, "blanket-grant")
    assert [f.rule.id for f in blanket] == ["bot"]
    witness = blanket[0].witness
    assert witness is not None and witness["resource"]["attrs"]["sensitivity"] == (
        "restricted"
    )


def test_a_human_allowed_everything_is_not_a_blanket_grant() -> None:
    found = run("allow users: principal is User")
    assert of(found, "blanket-grant") == []


# ---- suppressions ----------


def test_a_suppression_with_a_reason_is_listed_not_reported() -> None:
    found = run(
        '@suppress("shadowed", "kept for audit clarity")\n'
        "allow a: principal is User action photos.view when principal.age > 40\n"
        "deny d: principal is User action photos.view when principal.age > 30"
    )
    assert [(f.code, f.suppressed) for f in found] == [
        ("shadowed", "kept for audit clarity")
    ]


def test_a_suppression_without_a_reason_does_not_suppress() -> None:
    found = run(
        '@suppress("shadowed")\n'
        "allow a: principal is User action photos.view when principal.age > 40\n"
        "deny d: principal is User action photos.view when principal.age > 30"
    )
    assert sorted(f.code for f in found) == ["bad-suppression", "shadowed"]
    assert all(f.suppressed is None for f in found)


def test_a_suppression_that_matches_nothing_is_reported() -> None:
    found = run(
        '@suppress("conflict", "old")\nallow a: principal is User action photos.view'
    )
    assert codes(found) == [("unused-suppression", ("a",))]


# ---- the public entry point and caching ----------


def test_analyze_applies_suppressions_and_sorts_by_location() -> None:
    policy = load(
        "allow z: principal is User action photos.view when 1 == 2\n"
        "allow a: principal is User action photos.view when 2 == 3"
    )
    found = analyze(policy)
    assert [f.rule.id for f in found] == ["z", "a"]


def test_a_second_run_with_the_same_cache_asks_the_solver_nothing_new() -> None:
    from ripl.analyze import SolverCache

    cache = SolverCache()
    policy = load(
        "allow a: principal is User action photos.view when principal.age > 3\n"
        "allow b: principal is User action photos.delete when principal.age > 3"
    )
    analyze(policy, cache=cache)
    first = cache.misses
    analyze(policy, cache=cache)
    assert cache.misses == first
    assert cache.hits > 0
