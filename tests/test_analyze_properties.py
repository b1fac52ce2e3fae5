"""Property tests: every witness the analyzer reports reproduces in the
reference engine, and a policy set built to be clean reports nothing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import ripl
from ripl.analyze import Analysis
from ripl.analyze.witness import Observer

HEADER = """
import std.sensitivity
import std.stepup
entity User: human { age: int, team: string }
entity Bot: agent owner User { model: string }
entity Doc { level: sensitivity, size: int, note?: { flagged: bool } }
actions docs { read, write, share }
context { anomaly: decimal }
"""

ATOMS = [
    "principal.age > {n}",
    "principal.age <= {n}",
    "resource.size < {n}",
    "resource.size >= {n}",
    'principal.team == "t{k}"',
    "resource.level <= {label}",
    "resource.level > {label}",
    "context.anomaly < 0.{k}",
    "resource.note.flagged",
    "resource has note",
    "delegation.grants(docs.{action})",
    "delegation.depth > {k}",
]
LABELS = ["public", "internal", "confidential", "restricted"]


@st.composite
def rules(draw: st.DrawFn) -> str:
    out = []
    for i in range(draw(st.integers(1, 5))):
        effect = draw(st.sampled_from(["allow", "allow", "deny", "step_up"]))
        head = f"{effect} r{i}" + (" requires mfa" if effect == "step_up" else "")
        principal = draw(st.sampled_from(["User", "Bot", "User | Bot"]))
        action = draw(st.sampled_from(["read", "write", "share"]))
        pool = [a for a in ATOMS if principal != "Bot" or "principal" not in a]
        atoms = draw(st.lists(st.sampled_from(pool), min_size=0, max_size=3))
        parts = [
            a.format(
                n=draw(st.integers(0, 40)),
                k=draw(st.integers(1, 3)),
                label=draw(st.sampled_from(LABELS)),
                action=draw(st.sampled_from(["read", "write"])),
            )
            for a in atoms
        ]
        when = f" when {' and '.join(parts)}" if parts else ""
        out.append(f"{head}: principal is {principal} action docs.{action}{when}")
    return "\n".join(out)


@settings(max_examples=40, deadline=None)
@given(rules())
def test_every_reported_witness_reproduces(text: str) -> None:
    policy = ripl.load_policy(text=HEADER + text, name="h.ripl")
    analysis = Analysis(policy)
    findings = analysis.run()
    assert analysis.unconfirmed == 0
    observer = Observer(policy)
    for finding in findings:
        if finding.witness is not None:
            observed = observer.observe(finding.witness)
            assert observed is not None and observed.chain_ok
            assert finding.rule.id in observed.own or finding.code == "escalation"


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.integers(1, 30)),
        min_size=1,
        max_size=6,
        unique_by=lambda t: t[0],
    )
)
def test_a_policy_built_clean_reports_nothing(bands: list[tuple[int, int]]) -> None:
    """One allow per action and age band, bands disjoint, no denies, humans only:
    nothing conflicts, covers, contradicts or escalates."""
    rules = []
    actions = [f"a{i}" for i in range(len(bands))]
    for i, (low, width) in enumerate(bands):
        rules.append(
            f"allow r{i}: principal is User action acts.{actions[i]} "
            f"when principal.age >= {low} and principal.age < {low + width}"
        )
    text = (
        "entity User: human { age: int }\nentity Doc { size: int }\n"
        f"actions acts {{ {', '.join(actions)} }}\n" + "\n".join(rules)
    )
    policy = ripl.load_policy(text=text, name="clean.ripl")
    assert Analysis(policy).run() == []


BOX_ATOMS = [
    "principal.age {op} {n}",
    "resource.size {op} {n}",
    'principal.team {eq} "t{k}"',
    "resource.level {op} {label}",
    "context.anomaly {op} 0.{k}",
]


@st.composite
def box_rule(draw: st.DrawFn, name: str) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        template = draw(st.sampled_from(BOX_ATOMS))
        parts.append(
            template.format(
                op=draw(st.sampled_from(["<", "<=", ">", ">=", "==", "!="])),
                eq=draw(st.sampled_from(["==", "!="])),
                n=draw(st.integers(0, 4)),
                k=draw(st.integers(1, 3)),
                label=draw(st.sampled_from(LABELS)),
            )
        )
    action = draw(st.sampled_from(["docs", "docs.read"]))
    effect = draw(st.sampled_from(["allow", "deny"]))
    when = f" when {' and '.join(parts)}" if parts else ""
    return f"{effect} {name}: principal is User action {action}{when}"


@settings(max_examples=60, deadline=None)
@given(box_rule("a"), box_rule("b"))
def test_boxes_decide_meeting_and_covering_as_the_solver_does(
    first: str, second: str
) -> None:
    """The shortcut that skips the solver for rules made of comparisons with
    constants must give the solver's answers, both ways."""
    from ripl.analyze.encode import negate

    policy = ripl.load_policy(text=HEADER + first + "\n" + second, name="box.ripl")
    analysis = Analysis(policy)
    assert set(analysis.boxes.boxes) == {"a", "b"}
    a, b = analysis.own["a"].matches, analysis.own["b"].matches
    meets, _ = analysis.check(a, b, chain=False)
    assert analysis.boxes.meet("a", "b") == (meets == "sat")
    if analysis.check(a, chain=False)[0] == "sat":
        escapes, _ = analysis.check(a, negate(b), chain=False)
        assert analysis.boxes.covers("b", "a") == (escapes == "unsat")
    if meets == "sat":
        assert analysis.boxes.may_meet("a", "b")
