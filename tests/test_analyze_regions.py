"""The questions decided over regions, without the solver, give the solver's
answers: the set algebra against brute force, and every single-rule,
shadowing, escalation and blanket-grant question against z3 on random
policy sets made of comparisons with constants."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

import ripl
from ripl.analyze import Analysis
from ripl.analyze.drift import NON_HUMAN, decision_terms, escalates
from ripl.analyze.encode import EFFECT_RANK, negate
from ripl.analyze.regions import (
    Finite,
    Ints,
    Space,
    Strings,
    Values,
    atom_values,
)

# ---- the set algebra --------------------------------------------------------------

SPAN = range(-6, 7)
"""Small integers: every interval endpoint below lies inside, so a set's
members in SPAN, plus whether it runs off either end, say what it is."""


@st.composite
def int_sets(draw: st.DrawFn) -> Ints:
    atoms = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
                st.fractions(min_value=-4, max_value=4, max_denominator=2),
            ),
            max_size=3,
        )
    )
    values: Ints = Ints(((None, None),))
    for op, value in atoms:
        found = atom_values("int", op, value)
        assert isinstance(found, Ints)
        values = values & found
    if draw(st.booleans()):
        other = draw(int_sets()) if draw(st.booleans()) else Ints(((-1, 2),))
        values = values - other
    return values


def members(values: Ints) -> tuple[frozenset[int], bool, bool]:
    inside = frozenset(x for x in SPAN if _holds(values, x))
    return inside, _holds(values, -100), _holds(values, 100)


def _holds(values: Ints, x: int) -> bool:
    return any(
        (lo is None or lo <= x) and (hi is None or x <= hi)
        for lo, hi in values.intervals
    )


def _atom_holds(op: str, x: int, value: Fraction) -> bool:
    return {
        "<": x < value,
        "<=": x <= value,
        ">": x > value,
        ">=": x >= value,
        "==": x == value,
        "!=": x != value,
    }[op]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
    st.fractions(min_value=-4, max_value=4, max_denominator=3),
)
def test_an_integer_comparison_admits_exactly_the_integers_it_holds_for(
    op: str, value: Fraction
) -> None:
    found = atom_values("int", op, value)
    assert isinstance(found, Ints)
    for x in (*SPAN, -100, 100):
        assert _holds(found, x) == _atom_holds(op, x, value)


@settings(max_examples=300, deadline=None)
@given(int_sets(), int_sets())
def test_integer_sets_meet_subtract_and_complement_like_sets(a: Ints, b: Ints) -> None:
    sa, sb = members(a), members(b)
    meet, minus, rest = members(a & b), members(a - b), members(a.complement())
    assert meet[0] == sa[0] & sb[0]
    assert meet[1:] == (sa[1] and sb[1], sa[2] and sb[2])
    assert minus[0] == sa[0] - sb[0]
    assert minus[1:] == (sa[1] and not sb[1], sa[2] and not sb[2])
    assert rest[0] == frozenset(SPAN) - sa[0]
    assert bool(a) == (bool(sa[0]) or sa[1] or sa[2])
    # normal form: sorted, disjoint, not touching
    for (_, hi), (lo, _) in zip(a.intervals, a.intervals[1:], strict=False):
        assert hi is not None and lo is not None and lo > hi + 1


@st.composite
def string_sets(draw: st.DrawFn) -> Strings:
    return Strings(
        draw(st.booleans()),
        frozenset(draw(st.lists(st.sampled_from("abc"), max_size=3))),
    )


def _string_members(values: Strings) -> frozenset[str]:
    """Members among a, b, c and one string no set names."""
    return frozenset(
        x for x in ("a", "b", "c", "zz") if (x in values.values) == values.positive
    )


@settings(max_examples=200, deadline=None)
@given(string_sets(), string_sets())
def test_string_sets_meet_and_subtract_like_sets(a: Strings, b: Strings) -> None:
    sa, sb = _string_members(a), _string_members(b)
    assert _string_members(a & b) == sa & sb
    assert _string_members(a - b) == sa - sb
    assert bool(a) == bool(sa)


def _points(space: Space, dims: list[tuple[str, ...]]) -> list[dict[object, object]]:
    """Every point of a small space: two finite dimensions and one integer
    dimension read on SPAN."""
    out: list[dict[object, object]] = [{}]
    for dim in dims:
        universe = space.universe(dim)
        values: list[object] = (
            sorted(universe.values, key=repr)
            if isinstance(universe, Finite)
            else list(SPAN)
        )
        out = [{**p, dim: v} for p in out for v in values]
    return out


def _in(region: dict[tuple[str, ...], Values], point: dict[object, object]) -> bool:
    for dim, values in region.items():
        value = point[dim]
        if isinstance(values, Finite):
            if value not in values.values:
                return False
        elif isinstance(values, Ints):
            assert isinstance(value, int)
            if not _holds(values, value):
                return False
    return True


@st.composite
def small_regions(draw: st.DrawFn) -> dict[tuple[str, ...], Values]:
    region: dict[tuple[str, ...], Values] = {}
    if draw(st.booleans()):
        region[("action",)] = Finite(
            frozenset(draw(st.lists(st.sampled_from("xyz"), max_size=3)))
        )
    if draw(st.booleans()):
        region[("type", "p")] = Finite(frozenset(draw(st.sets(st.sampled_from("UB")))))
    if draw(st.booleans()):
        lo = draw(st.integers(-6, 6))
        region[("attr", "r", ("n",), "int")] = Ints(
            ((lo, lo + draw(st.integers(0, 5))),)
        )
    return region


@settings(max_examples=300, deadline=None)
@given(small_regions(), st.lists(small_regions(), max_size=5))
def test_uncovered_finds_a_point_outside_every_other_region_exactly_when_one_exists(
    region: dict[tuple[str, ...], Values],
    others: list[dict[tuple[str, ...], Values]],
) -> None:
    space = Space({("action",): frozenset("xyz"), ("type", "p"): frozenset("UB")}, {})
    # Bound the integer dimension to SPAN so brute force sees all of it.
    dim = ("attr", "r", ("n",), "int")
    region = space.meet(region, {dim: Ints(((SPAN[0], SPAN[-1]),))})
    points = _points(space, [("action",), ("type", "p"), dim])
    outside = [
        p for p in points if _in(region, p) and not any(_in(o, p) for o in others)
    ]
    found = space.uncovered(region, others)
    assert (found is not None) == bool(outside)
    if found is not None:
        assert not space.empty(found)
        for point in points:
            if _in(found, point):
                assert _in(region, point)
                assert not any(_in(o, point) for o in others)


# ---- the analyzer's questions against z3 ------------------------------------------

HEADER = """
import std.sensitivity
import std.stepup
entity User: human { age: int, team: string }
entity Bot: agent owner User { age: int, model: string }
entity Tool: tool owner Bot { vendor: string }
entity Doc { level: sensitivity, size: int }
entity Sheet { level: sensitivity, rows: int }
actions docs { read, write, share }
context { anomaly: decimal, env: string, calm: bool }
"""

LABELS = ["public", "internal", "confidential", "restricted"]
OPS = ["<", "<=", ">", ">=", "==", "!="]
ATOMS = [
    "principal.age {op} {n}",
    'principal.team {eq} "t{k}"',
    'principal.model {eq} "m{k}"',
    "resource.level {op} {label}",
    "resource.size {op} {n}",
    "resource.rows {op} {n}",
    "context.anomaly {op} 0.{k}",
    'context.env {eq} "e{k}"',
    "context.calm == {flag}",
    "principal is {ptype}",
]


@st.composite
def box_rules(draw: st.DrawFn) -> str:
    out = []
    for i in range(draw(st.integers(1, 5))):
        effect = draw(st.sampled_from(["allow", "allow", "deny", "step_up"]))
        head = f"{effect} r{i}" + (" requires mfa" if effect == "step_up" else "")
        target = []
        principal = draw(st.sampled_from([None, "User", "Bot", "Tool", "User | Bot"]))
        if principal:
            target.append(f"principal is {principal}")
        target.append(f"action {draw(st.sampled_from(['docs', 'docs.read']))}")
        resource = draw(st.sampled_from([None, "Doc", "Sheet"]))
        if resource:
            target.append(f"resource is {resource}")
        parts = [
            draw(st.sampled_from(ATOMS)).format(
                op=draw(st.sampled_from(OPS)),
                eq=draw(st.sampled_from(["==", "!="])),
                n=draw(st.integers(0, 3)),
                k=draw(st.integers(1, 2)),
                label=draw(st.sampled_from(LABELS)),
                flag=draw(st.sampled_from(["true", "false"])),
                ptype=draw(st.sampled_from(["User", "Bot"])),
            )
            for _ in range(draw(st.integers(0, 3)))
        ]
        when = f" when {' and '.join(parts)}" if parts else ""
        out.append(f"{head}: {' '.join(target)}{when}")
    return "\n".join(out)


def _load(text: str) -> Analysis | None:
    try:
        policy = ripl.load_policy(text=HEADER + text, name="regions.ripl")
    except ripl.RiplError:
        return None  # an atom on an attribute the target's types lack
    return Analysis(policy)


@settings(max_examples=150, deadline=None)
@given(box_rules())
def test_single_rule_questions_over_regions_match_the_solver(text: str) -> None:
    analysis = _load(text)
    if analysis is None:
        return
    for rule in analysis.rules:
        terms = analysis.own[rule.id]
        target, _ = analysis.check(terms.target, chain=False)
        assert analysis.space.empty(analysis.target_region(rule)) == (target == "unsat")
        region = analysis.regions.get(rule.id)
        if region is None:
            continue
        sat, _ = analysis.check(terms.matches, chain=False)
        assert analysis.space.empty(region) == (sat == "unsat"), rule.id
        assert analysis.check(terms.errs, chain=False)[0] == "unsat"
        if sat == "sat":
            always, _ = analysis.check(terms.target, negate(terms.matches), chain=False)
            assert analysis.always_by_regions(rule) == always


@settings(max_examples=150, deadline=None)
@given(box_rules())
def test_shadowing_over_regions_matches_the_solver(text: str) -> None:
    from ripl.analyze.encode import any_of
    from ripl.analyze.run import stronger

    analysis = _load(text)
    if analysis is None:
        return
    for rule in analysis.rules:
        if rule.id not in analysis.regions:
            continue
        others = analysis.overlapping(rule.id)
        over = [o for o in others if stronger(o, rule)]
        blockers = [o for o in others if o.effect != "allow"]
        decided = analysis.shadow_by_regions(rule, over, blockers)
        if decided is None:
            continue
        overridden = any_of(
            [
                *(analysis.own[o.id].matches for o in over),
                *(analysis.own[o.id].errs for o in blockers),
            ]
        )
        answer, _ = analysis.check(
            analysis.own[rule.id].matches, negate(overridden), chain=False
        )
        assert decided == answer, rule.id


@settings(max_examples=150, deadline=None)
@given(box_rules())
def test_escalation_over_regions_matches_the_solver(text: str) -> None:
    analysis = _load(text)
    if analysis is None:
        return
    for rule in analysis.rules:
        if rule.effect not in ("allow", "restrict"):
            continue
        decided = escalates(analysis, rule)
        if decided is None:
            continue
        rank = EFFECT_RANK[rule.effect]
        own, root, final = decision_terms(analysis, rule)
        mine = analysis.own[rule.id].matches
        non_human = analysis.v.kind_is("p", NON_HUMAN)
        claim, _ = analysis.check(mine, non_human, own == rank, root > own, chain=True)
        effective, _ = analysis.check(mine, own == rank, final == rank, chain=True)
        assert decided == (claim == "sat" and effective == "unsat"), rule.id


@settings(max_examples=100, deadline=None)
@given(box_rules())
def test_blanket_grant_regions_match_the_solver(text: str) -> None:
    from ripl.analyze.encode import all_of

    analysis = _load(text)
    if analysis is None:
        return
    for rule in analysis.rules:
        region = analysis.regions.get(rule.id)
        agents = analysis.non_human(analysis.reach[rule.id])
        if region is None or not agents:
            continue
        granted = analysis.space.meet(region, {("type", "p"): Finite(agents)})
        base = [analysis.own[rule.id].matches, analysis.v.type_in("p", agents)]
        sat, _ = analysis.check(*base, chain=False)
        assert analysis.space.empty(granted) == (sat == "unsat")
        for rtype in ("Doc", "Sheet"):
            level = analysis.v.value("r", ("level",), ripl.ir.LabelType("sensitivity"))
            at_top = all_of([analysis.v.type_in("r", [rtype]), level == 3])
            top = {
                ("type", "r"): Finite(frozenset([rtype])),
                ("attr", "r", ("level",), "label:sensitivity"): Ints(((3, 3),)),
            }
            answer, _ = analysis.check(*base, at_top, chain=False)
            empty = analysis.space.empty(analysis.space.meet(granted, top))
            assert empty == (answer == "unsat")


@settings(max_examples=60, deadline=None)
@given(box_rules())
def test_requests_built_at_region_points_show_what_their_finding_claims(
    text: str,
) -> None:
    """Witnesses of box rules come from a point of a region, not from a
    model; each must reproduce in the engine without falling back."""
    from ripl.analyze.witness import Observer

    analysis = _load(text)
    if analysis is None:
        return
    findings = analysis.run()
    assert analysis.point_misses == 0
    assert analysis.unconfirmed == 0
    observer = Observer(analysis.policy)
    for finding in findings:
        if finding.witness is not None:
            observed = observer.observe(finding.witness)
            assert observed is not None and observed.chain_ok
            assert finding.rule.id in observed.own or finding.code == "escalation"
