"""Declared scopes in the analyzer: rules are cut to what their principal
types may do before anything is compared (so no finding rests on a request
the ceiling refuses), grants past a ceiling are `beyond-scope`, and where
the cut cannot be exact the findings say so."""

from __future__ import annotations

from datetime import UTC, datetime

import ripl
from ripl.analyze import analyze
from ripl.analyze.ceilings import clip_to_ceilings

SCHEMA = """\
entity User: human {}
entity Bot: agent owner User scopes docs.read {}
entity Other: agent owner User {}
entity Doc {}
actions docs { read, write }
"""


def findings(rules: str) -> set[tuple[str, str, bool]]:
    policy = ripl.load_policy(SCHEMA + rules)
    return {(f.code, f.rule.id, f.exact) for f in analyze(policy)}


def test_a_grant_past_a_ceiling_is_beyond_scope_with_a_witness_the_engine_denies() -> (
    None
):
    policy = ripl.load_policy(
        SCHEMA
        + "allow bot_write: principal is Bot action docs.write\n"
        + "allow bot_docs: principal is Bot action docs\n"
        + "allow bot_read: principal is Bot action docs.read\n"
        + "allow people: principal is User action docs\n"
    )
    found = [f for f in analyze(policy) if f.code == "beyond-scope"]
    assert sorted(f.rule.id for f in found) == ["bot_docs", "bot_write"]
    engine = ripl.Engine(policy, clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    for finding in found:
        assert finding.severity == "error" and finding.exact
        assert "`docs.write` to `Bot`" in finding.message
        assert finding.witness is not None
        decision = engine.decide(finding.witness)
        assert decision.effect == "deny"
        assert "scope_not_declared" in decision.reason_codes


def test_nothing_is_reported_where_the_ceiling_refuses_first() -> None:
    """`bot_write` and `no_writes` meet only on `docs.write`, which Bot may
    never do: with the ceiling the grant is beyond-scope and nothing else;
    without it the deny shadows the grant."""
    rules = (
        "allow bot_docs: principal is Bot action docs.read\n"
        "allow bot_write: principal is Bot action docs.write\n"
        "deny no_writes: principal is Bot action docs.write\n"
        "allow people: principal is User action docs\n"
    )
    about = {"bot_write", "no_writes"}
    with_ceiling = {(c, r) for c, r, _ in findings(rules) if r in about}
    assert with_ceiling == {("beyond-scope", "bot_write")}
    without = ripl.load_policy(SCHEMA.replace(" scopes docs.read", "") + rules)
    found = {(f.code, f.rule.id) for f in analyze(without) if f.rule.id in about}
    assert found == {("shadowed", "bot_write")}


def test_a_rule_the_ceiling_cuts_unevenly_is_analyzed_as_an_approximation() -> None:
    rules = (
        "allow both: principal is Bot | Other action docs\n"
        "deny no_writes: principal is Other action docs.write\n"
        "allow people: principal is User action docs\n"
    )
    found = findings(rules)
    assert ("beyond-scope", "both", True) in found
    conflicts = {f for f in found if f[0] == "conflict"}
    assert conflicts == {("conflict", "both", False)}


def test_rules_are_cut_to_what_their_types_may_do() -> None:
    policy = ripl.load_policy(
        SCHEMA
        + "allow one: principal is Bot action docs\n"
        + "allow inside: principal is Bot action docs.read\n"
        + "allow outside: principal is Bot action docs.write\n"
        + "allow mixed: principal is Bot | Other action docs\n"
        + "allow free: principal is Other action docs\n"
    )
    clipped, inexact = clip_to_ceilings(policy)
    by_id = {r.id: r for r in clipped.rules}
    before = {r.id: r for r in policy.rules}
    assert by_id["one"].actions == frozenset({"docs.read"})
    assert by_id["inside"] is before["inside"]
    assert "outside" not in by_id  # it never applies
    assert by_id["mixed"].actions == frozenset({"docs.read", "docs.write"})
    assert by_id["free"] is before["free"]
    assert inexact == frozenset({"mixed"})
    plain, none = clip_to_ceilings(
        ripl.load_policy(SCHEMA.replace(" scopes docs.read", ""))
    )
    assert none == frozenset()


def test_listing_every_group_is_a_blanket_grant_like_naming_none() -> None:
    text = (
        "entity User: human {}\nentity Bot: agent owner User {}\nentity Doc {}\n"
        "entity Pic {}\nactions docs { read, write }\nactions admin { wipe }\n"
        "allow listed: principal is Bot action docs, admin\n"
        "allow every: principal is Bot resource is Doc | Pic action docs.read\n"
        "allow people: principal is User\n"
    )
    found = {(f.code, f.rule.id) for f in analyze(ripl.load_policy(text))}
    assert ("blanket-grant", "listed") in found
    assert ("blanket-grant", "every") in found
