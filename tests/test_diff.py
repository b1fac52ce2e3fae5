"""`ripl diff`: every class of requests whose decision changed, each with a
witness that both versions decide as claimed."""

from __future__ import annotations

import ripl
from ripl.analyze import diff
from ripl.engine import Engine

HEADER = """
import std.stepup
import std.obligations
entity User: human { age: int }
entity Bot: agent owner User { model: string }
entity Doc { public: bool }
actions docs { read, write }
"""


def load(rules: str) -> ripl.PolicySet:
    return ripl.load_policy(text=HEADER + rules, name="v.ripl")


def confirmed(old: ripl.PolicySet, new: ripl.PolicySet) -> None:
    report = diff(old, new)
    for change in (*report.permissive, *report.stricter):
        before = Engine(old, mode="reference").decide(change.witness)
        after = Engine(new, mode="reference").decide(change.witness)
        assert before.effect == change.old["effect"]
        assert after.effect == change.new["effect"]


def test_deny_to_allow_is_more_permissive() -> None:
    old = load("allow a: principal is User action docs.read when principal.age > 18")
    new = load("allow a: principal is User action docs.read when principal.age > 16")
    report = diff(old, new)
    assert [c.what for c in report.permissive] == ["deny → allow"]
    assert report.stricter == ()
    witness = report.permissive[0].witness
    assert witness["principal"]["attrs"]["age"] in (17, 18)
    confirmed(old, new)


def test_step_up_to_allow_is_more_permissive() -> None:
    old = load(
        "allow a: principal is User action docs.write\n"
        "step_up s requires mfa: principal is User action docs.write"
    )
    new = load("allow a: principal is User action docs.write")
    report = diff(old, new)
    assert [c.what for c in report.permissive] == ["step_up → allow"]
    confirmed(old, new)


def test_restrict_losing_an_obligation_is_more_permissive() -> None:
    old = load(
        'restrict r with redact("email", "phone"): principal is User action docs.read'
    )
    new = load('restrict r with redact("email"): principal is User action docs.read')
    report = diff(old, new)
    assert [c.what for c in report.permissive] == ['restrict loses redact("phone")']
    assert report.permissive[0].old["obligations"]["redact"] == ["email", "phone"]
    confirmed(old, new)


def test_a_lost_step_up_requirement_is_more_permissive() -> None:
    old = load(
        "step_up s requires mfa, human_approval: principal is User action docs.write"
    )
    new = load("step_up s requires mfa: principal is User action docs.write")
    report = diff(old, new)
    assert [c.what for c in report.permissive] == [
        "step_up no longer requires `human_approval`"
    ]


def test_a_new_deny_is_only_stricter() -> None:
    old = load("allow a: principal is User action docs.read")
    new = load(
        "allow a: principal is User action docs.read\n"
        "deny d: principal is User action docs.read when principal.age < 13"
    )
    report = diff(old, new)
    assert report.permissive == ()
    assert [c.what for c in report.stricter] == ["allow → deny"]
    confirmed(old, new)


def test_a_new_agent_grant_is_drift_only_where_its_root_is_granted() -> None:
    """The engine caps the agent by its root, so the witness's root is one
    the old version already allowed."""
    old = load("allow u: principal is User action docs.read when principal.age > 30")
    new = load(
        "allow u: principal is User action docs.read when principal.age > 30\n"
        "allow b: principal is Bot action docs.read"
    )
    report = diff(old, new)
    assert [(c.what, c.principal_type) for c in report.permissive] == [
        ("deny → allow", "Bot")
    ]
    root = report.permissive[0].witness["entities"][0]
    assert root["attrs"]["age"] > 30
    confirmed(old, new)


def test_unchanged_policies_have_no_drift() -> None:
    policy = load("allow a: principal is User action docs.read")
    report = diff(policy, load("allow a: principal is User action docs.read"))
    assert report.permissive == () and report.stricter == ()
    assert report.render() == "no decision changed"


def test_a_declared_ceiling_is_read_on_both_sides() -> None:
    """A grant the new ceiling refuses is no change at all; a ceiling added
    over an old grant is stricter, with a witness both versions confirm."""
    schema = (
        "entity User: human {{}}\nentity Bot: agent owner User{ceiling} {{}}\n"
        "entity Doc {{}}\nactions docs {{ read, write }}\n"
        "allow people: principal is User action docs\n"
    )
    bound = schema.format(ceiling=" scopes docs.read")
    free = schema.format(ceiling="")
    reads = ripl.load_policy(free + "allow bot: principal is Bot action docs.read\n")
    widened = ripl.load_policy(bound + "allow bot: principal is Bot action docs\n")
    unchanged = diff(reads, widened)
    assert unchanged.permissive == () and unchanged.stricter == ()
    everything = ripl.load_policy(free + "allow bot: principal is Bot action docs\n")
    report = diff(everything, widened)
    assert report.permissive == ()
    assert [c.what for c in report.stricter] == ["allow → deny"]
    witness = report.stricter[0].witness
    assert witness["action"] == "docs.write"
    assert Engine(everything).decide(witness).effect == "allow"
    assert Engine(widened).decide(witness).reason_codes == ("scope_not_declared",)
