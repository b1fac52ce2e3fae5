"""Privilege drift: grants to non-human identities that their root human
never gets (`escalation`), that reach beyond the scope their own delegation
test checks (`beyond-scope`), or that cover every action, every resource
type or the top of a label order (`blanket-grant`).

Input: an `Analysis` and one granting rule whose reach includes a non-human
principal. Output: its findings. Where every rule involved is a box the
questions are decided over regions (see `regions.py`), else by the solver;
every witness is confirmed by the reference engine.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import z3

from ripl import ir
from ripl.analyze.boxes import conjuncts
from ripl.analyze.encode import (
    EFFECT_RANK,
    all_of,
    any_of,
    covers,
    effect_of,
    holds,
    max_term,
    negate,
)
from ripl.analyze.findings import Finding
from ripl.analyze.regions import Dim, Finite, Ints, Region

if TYPE_CHECKING:
    from ripl.analyze.run import Analysis

NON_HUMAN = ("agent", "service", "tool", "connector")


def decision_terms(
    analysis: Analysis, rule: ir.Rule
) -> tuple[z3.ArithRef, z3.ArithRef, z3.ArithRef]:
    """(own effect, root effect, final effect) over requests `rule` reaches."""
    mine = [rule, *analysis.overlapping(rule.id)]
    own = effect_of([(r, analysis.own[r.id]) for r in mine])
    roots = [
        r for r in analysis.overlapping(rule.id, root=True) if r.id in analysis.root
    ]
    root = effect_of([(r, analysis.root[r.id]) for r in roots])
    final = z3.If(analysis.v.has_root(), max_term(own, root), own)
    return own, root, final


def drift(analysis: Analysis, rule: ir.Rule) -> list[Finding]:
    out: list[Finding] = []
    found = escalation(analysis, rule)
    if found is not None:
        out.append(found)
    out.extend(beyond_scope(analysis, rule))
    found = blanket(analysis, rule)
    if found is not None:
        out.append(found)
    return out


def escalation(analysis: Analysis, rule: ir.Rule) -> Finding | None:
    rank = EFFECT_RANK[rule.effect]
    decided = escalates(analysis, rule)
    if decided is False:
        return None
    own, root, final = decision_terms(analysis, rule)
    mine = analysis.own[rule.id].matches
    claim = [mine, analysis.v.kind_is("p", NON_HUMAN), own == rank, root > own]
    if decided is None:
        status, _ = analysis.check(*claim, chain=True)
        if status != "sat":
            return None
        # Only a grant the root never has is reported: one capped for
        # some roots only (say, minors) is how conditions on the human
        # work.
        effective, _ = analysis.check(mine, own == rank, final == rank, chain=True)
        if effective != "unsat":
            return None
    witness = analysis.confirm(
        claim,
        lambda o: (
            o.matched(rule.id)
            and o.own_effect == rule.effect
            and o.root_effect is not None
            and EFFECT_RANK[o.root_effect] > rank
            and "escalation" in o.decision.reason_codes
        ),
    )
    if witness is None and analysis.exact(rule):
        return None
    who = witness["principal"]["type"] if witness else "a non-human identity"
    action = witness["action"] if witness else "its actions"
    root_effect = None
    if witness is not None:
        observation = analysis.observe(witness)
        root_effect = observation.root_effect if observation else None
    return analysis.finding(
        "escalation",
        f"rule `{rule.id}` grants `{who}` `{action}`, which no rule grants its "
        f"root human (who gets {root_effect or 'a stronger effect'}); the engine "
        "caps the decision by the root's, so the rule never takes effect",
        [rule],
        witness=witness,
        decision=root_effect,
        hint="grant the root human the same, or narrow the rule to where the "
        "root is granted",
    )


def escalates(analysis: Analysis, rule: ir.Rule) -> bool | None:
    """The two questions of `escalation` over regions, when the rule, the
    rules that can make its own effect stronger or err, and every rule
    the root human meets are boxes: some non-human principal gets the
    rule's effect while its root gets a stronger one, and nowhere does
    the rule's effect survive the cap. A request of a non-human
    principal can have any human as the root of its chain, so the
    principal's and the root's attributes vary independently."""
    mine = analysis.regions.get(rule.id)
    if mine is None or not analysis.humans:
        return None
    rank = EFFECT_RANK[rule.effect]
    others = analysis.overlapping(rule.id)
    if analysis.regions_of(o for o in others if o.effect != "allow") is None:
        return None
    stronger_ = analysis.regions_of(o for o in others if EFFECT_RANK[o.effect] > rank)
    roots = [
        r for r in analysis.overlapping(rule.id, root=True) if r.id in analysis.root
    ]
    root_regions = analysis.regions_of(roots, root=True)
    if stronger_ is None or root_regions is None:
        return None
    ranks = [EFFECT_RANK[r.effect] for r in roots]
    strong_roots = [g for g, k in zip(root_regions, ranks, strict=True) if k > rank]
    weak_roots = [g for g, k in zip(root_regions, ranks, strict=True) if k <= rank]
    universe = analysis.principal_universe
    agents = frozenset(t for t in universe if analysis.domain.kinds.get(t) in NON_HUMAN)
    as_agent = analysis.space.meet(mine, {("type", "p"): Finite(agents)})
    as_human = analysis.space.meet(mine, {("type", "p"): Finite(universe - agents)})
    if analysis.space.empty(as_agent):
        return False
    # claim: own effect is the rule's, and the root's is stronger (a
    # stronger root rule matches, or no root rule matches at all).
    claim = itertools.chain(
        _meeting(analysis, as_agent, strong_roots, stronger_),
        [(as_agent, [*stronger_, *root_regions])],
    )
    found = _any_uncovered(analysis, claim)
    if not found:
        return found
    # effective: the rule's effect is the final one somewhere.
    effective = itertools.chain(
        [(as_human, stronger_)],
        _meeting(analysis, as_agent, weak_roots, [*stronger_, *strong_roots]),
    )
    survives = _any_uncovered(analysis, effective)
    return None if survives is None else not survives


def _meeting(
    analysis: Analysis,
    region: Region,
    parts: Iterable[Region],
    others: Sequence[Region],
) -> Iterator[tuple[Region, Sequence[Region]]]:
    """(region ∩ part, others) for each part that meets the region."""
    for part in parts:
        if analysis.space.meets(region, part):
            yield analysis.space.meet(region, part), others


def _any_uncovered(
    analysis: Analysis, questions: Iterable[tuple[Region, Sequence[Region]]]
) -> bool | None:
    undecided = False
    for region, others in questions:
        found = analysis.uncovered(region, others)
        if found:
            return True
        undecided = undecided or found is None
    return None if undecided else False


def beyond_scope(analysis: Analysis, rule: ir.Rule) -> list[Finding]:
    checked = [p.scope for p in conjuncts(rule.condition) if isinstance(p, ir.Grants)]
    if not checked:
        return []
    outside = all_of(
        negate(
            analysis.v.action_in([a for a in analysis.domain.actions if covers(s, a)])
        )
        for s in checked
    )
    claim = [analysis.own[rule.id].matches, outside]
    status, _ = analysis.check(*claim, chain=True)
    if status != "sat":
        return []
    scopes = ", ".join(f"`{s}`" for s in checked)
    witness = analysis.confirm(
        claim,
        lambda o: (
            o.matched(rule.id) and not any(covers(s, str(o.action)) for s in checked)
        ),
    )
    if witness is None and analysis.exact(rule):
        return []
    action = witness["action"] if witness else "an action"
    return [
        analysis.finding(
            "beyond-scope",
            f"rule `{rule.id}` grants `{action}`, outside the scope {scopes} "
            "that its `delegation.grants` test checks",
            [rule],
            witness=witness,
            hint="test the scope of each action the rule grants, e.g. "
            "`delegation.grants(…)` for the rule's own actions",
        )
    ]


def blanket(analysis: Analysis, rule: ir.Rule) -> Finding | None:
    reach = analysis.reach[rule.id]
    agents = analysis.non_human(reach)
    terms = analysis.own[rule.id]
    base = [terms.matches, analysis.v.type_in("p", agents)]
    chain = terms.chain
    actions = analysis.domain.actions
    resources = sorted(analysis.domain.resources)
    region = analysis.regions.get(rule.id)
    granted = (
        None
        if region is None
        else analysis.space.meet(region, {("type", "p"): Finite(agents)})
    )
    what: str | None = None
    # Every action, whether by naming none or by listing every group.
    if (
        len(actions) > 1
        and reach.actions == frozenset(actions)
        and (
            not analysis.space.empty(granted)
            if granted is not None
            else all(
                analysis.check(*base, analysis.v.action_in([a]), chain=chain)[0]
                == "sat"
                for a in actions
            )
        )
    ):
        what = "every action"
    if (
        what is None
        and len(resources) > 1
        and reach.resources == analysis.domain.resources
        and (
            not analysis.space.empty(granted)
            if granted is not None
            else all(
                analysis.check(*base, analysis.v.type_in("r", [t]), chain=chain)[0]
                == "sat"
                for t in resources
            )
        )
    ):
        what = "every resource type"
    witness = None
    if what is None:
        found = _unbounded_label(analysis, rule, base, chain, granted)
        if found is None:
            return None
        what, witness = found
    who = ", ".join(f"`{t}`" for t in sorted(agents))
    return analysis.finding(
        "blanket-grant",
        f"rule `{rule.id}` ({rule.effect}) grants non-human {who} {what}",
        [rule],
        witness=witness,
        hint="name the actions and resources the identity needs, and bound the "
        "sensitivity it may reach",
    )


def _unbounded_label(
    analysis: Analysis,
    rule: ir.Rule,
    base: list[z3.BoolRef],
    chain: bool,
    granted: Region | None,
) -> tuple[str, dict[str, Any]] | None:
    """Can the rule grant on a resource whose required label attribute is
    at the top of its order? `granted` is the region `base` describes,
    when the rule is a box."""
    options: list[tuple[z3.BoolRef, str, str, ir.LabelOrder, Region]] = []
    for rtype in sorted(analysis.reach[rule.id].resources):
        entity = analysis.policy.schema.entities.get(rtype)
        if entity is None:
            continue
        for name, spec in entity.attrs.fields:
            if not isinstance(spec.type, ir.LabelType) or spec.optional:
                continue
            order = analysis.policy.schema.labels[spec.type.order]
            term = analysis.v.value("r", (name,), spec.type)
            at_top = all_of(
                [analysis.v.type_in("r", [rtype]), term == len(order.labels) - 1]
            )
            top = len(order.labels) - 1
            dim: Dim = ("attr", "r", (name,), f"label:{spec.type.order}")
            region: Region = {
                ("type", "r"): Finite(frozenset([rtype])),
                dim: Ints(((top, top),)),
            }
            options.append((at_top, rtype, name, order, region))
    if not options:
        return None
    feasible = options
    if granted is not None:
        feasible = [
            option
            for option in options
            if not analysis.space.empty(analysis.space.meet(granted, option[4]))
        ]
        if not feasible:
            return None
    if granted is None or len(feasible) > 1:
        # Which option a witness shows is the solver's choice.
        status, model = analysis.check(
            *base, any_of(o[0] for o in options), chain=chain, model=True
        )
        if status != "sat" or model is None:
            return None
        feasible = [o for o in options if holds(model, o[0])]
    for at_top, rtype, name, order, top_region in feasible:
        found = None
        if granted is not None:
            found = analysis.observe_point(
                analysis.space.meet(granted, top_region),
                lambda o: o.matched(rule.id),
            )
        witness = (
            found[0]
            if found is not None
            else analysis.confirm([*base, at_top], lambda o: o.matched(rule.id))
        )
        if witness is None:
            return None
        label = order.labels[-1]
        return (
            f"`{rtype}` resources up to `{name}` `{label}` (no bound on "
            f"`{order.name}`)",
            witness,
        )
    return None
