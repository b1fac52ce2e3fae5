"""Drift between two versions of a policy set (`ripl diff OLD NEW`).

Both versions are encoded over the same request variables, so one model is
one request decided by both. A *class* of changed requests is an action, a
principal type and a transition (old effect → new effect, or the loss or
gain of an obligation or step-up requirement); each class found carries a
witness that the reference engine decides as claimed under both versions.
Only actions that a changed rule can reach are examined (all of them when
the schema changed).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import attrs
import z3

from ripl import ir
from ripl.analyze.cache import canonical, content_hash
from ripl.analyze.ceilings import clip_to_ceilings
from ripl.analyze.encode import (
    EFFECT_RANK,
    OWN,
    RANK_EFFECT,
    ROOT,
    Encoder,
    RuleTerms,
    Vars,
    all_of,
    any_of,
    build_domain,
    effect_of,
    max_term,
    scale_for,
)
from ripl.analyze.findings import json_ready
from ripl.analyze.run import reach_of
from ripl.analyze.witness import Observer, WitnessBuilder
from ripl.decision import Decision
from ripl.engine import Engine

log = logging.getLogger(__name__)

CLASS_LIMIT = 64  # classes reported per transition, after which the diff says so


@attrs.frozen
class Change:
    """One class of requests whose decision changed."""

    direction: str  # "more-permissive" or "stricter"
    what: str  # e.g. "deny → allow", "restrict loses redact(\"email\")"
    action: str
    principal_type: str
    witness: dict[str, Any]
    old: dict[str, Any]
    new: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "change": self.what,
            "action": self.action,
            "principal_type": self.principal_type,
            "witness": json_ready(self.witness),
            "old": self.old,
            "new": self.new,
        }


@attrs.frozen
class DiffReport:
    permissive: tuple[Change, ...]
    stricter: tuple[Change, ...]
    exact: bool
    truncated: bool = False

    @property
    def more_permissive(self) -> bool:
        return bool(self.permissive)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "more_permissive": [c.to_json() for c in self.permissive],
            "stricter": [c.to_json() for c in self.stricter],
            "exact": self.exact,
            "truncated": self.truncated,
        }

    def render(self) -> str:
        lines: list[str] = []
        for title, changes in (
            ("more permissive", self.permissive),
            ("stricter", self.stricter),
        ):
            for change in changes:
                rules = ", ".join(f"`{r['id']}`" for r in change.new["rules"]) or (
                    "no rule"
                )
                lines.append(
                    f"{title}: {change.what} for `{change.principal_type}` "
                    f"`{change.action}` (now decided by {rules})"
                )
                lines.append(f"   = witness: {_compact(change.witness)}")
        if not lines:
            lines.append("no decision changed")
        if not self.exact:
            lines.append(
                "note: part of the policy was approximated; the diff may miss changes"
            )
        if self.truncated:
            lines.append(
                f"note: only the first {CLASS_LIMIT} classes of each change are listed"
            )
        return "\n".join(lines)


def _compact(witness: dict[str, Any]) -> str:
    import json

    return json.dumps(json_ready(witness), sort_keys=True, separators=(",", ":"))


class _Version:
    def __init__(self, policy: ir.PolicySet, v: Vars, actions: frozenset[str]) -> None:
        self.policy = policy
        self.v = v
        self.encoder = Encoder(policy, v)
        domain = v.domain
        humans = domain.humans()
        self.own: list[tuple[ir.Rule, RuleTerms]] = []
        self.root: list[tuple[ir.Rule, RuleTerms]] = []
        for rule in policy.rules:
            if not reach_of(rule, domain, domain.principals).actions & actions:
                continue
            self.own.append((rule, self.encoder.rule(rule, OWN)))
            if reach_of(rule, domain, humans).principals:
                self.root.append((rule, self.encoder.rule(rule, ROOT)))
        schema = policy.schema
        valid = all_of(
            [
                v.type_in("p", schema.entities),
                v.type_in("r", schema.entities),
                v.action_in(schema.actions),
            ]
        )
        self.own_effect = effect_of(self.own)
        self.root_effect = effect_of(self.root)
        final = z3.If(
            v.has_root(), max_term(self.own_effect, self.root_effect), self.own_effect
        )
        self.final = z3.If(valid, final, 3)
        self.observer = Observer(policy)
        self.engine = Engine(policy, mode="reference")

    @property
    def exact(self) -> bool:
        return all(t.exact for _, t in self.own)

    def contributes(self, effect: str, has: Callable[[ir.Rule], bool]) -> z3.BoolRef:
        """Some rule of the final decision's effect gives this obligation or
        requirement: the principal's own rules, or its root's when capped."""
        rank = EFFECT_RANK[effect]
        own = any_of(t.matches for r, t in self.own if r.effect == effect and has(r))
        root = any_of(t.matches for r, t in self.root if r.effect == effect and has(r))
        return all_of(
            [
                self.final == rank,
                any_of(
                    [
                        all_of([self.own_effect == rank, own]),
                        all_of([self.v.has_root(), self.root_effect == rank, root]),
                    ]
                ),
            ]
        )

    def decide(self, request: dict[str, Any]) -> Decision:
        observation = self.observer.observe(request)
        if observation is not None:
            return observation.decision
        return self.engine.decide(request)


def _changed_actions(old: ir.PolicySet, new: ir.PolicySet) -> frozenset[str]:
    domain = build_domain([old, new])
    if _schema_hash(old) != _schema_hash(new):
        return frozenset(domain.actions)
    before = {(r.id, content_hash(r)) for r in old.rules}
    after = {(r.id, content_hash(r)) for r in new.rules}
    changed = [r for r in old.rules if (r.id, content_hash(r)) not in after]
    changed += [r for r in new.rules if (r.id, content_hash(r)) not in before]
    actions: set[str] = set()
    for rule in changed:
        actions |= reach_of(rule, domain, domain.principals).actions
    return frozenset(actions)


def _schema_hash(policy: ir.PolicySet) -> str:
    return hashlib.sha256(repr(canonical(policy.schema)).encode()).hexdigest()


def _union_values(rule: ir.Rule, name: str) -> set[Any]:
    out: set[Any] = set()
    for use in rule.obligations:
        if use.obligation.name != name:
            continue
        for arg in use.args:
            if isinstance(arg, ir.Const):
                value = arg.value
                out |= set(value) if isinstance(value, frozenset) else {value}
    return out


def _min_values(rule: ir.Rule, name: str) -> list[Any]:
    return [
        arg.value
        for use in rule.obligations
        if use.obligation.name == name
        for arg in use.args
        if isinstance(arg, ir.Const)
    ]


def _key(value: Any) -> Any:
    return getattr(value, "seconds", value)


class Differ:
    def __init__(self, old: ir.PolicySet, new: ir.PolicySet) -> None:
        self.actions = _changed_actions(old, new)
        domain = build_domain([old, new])
        self.v = Vars(domain, scale_for([old, new]))
        self.old = _Version(old, self.v, self.actions)
        self.new = _Version(new, self.v, self.actions)
        self.solver = z3.Solver()
        self.solver.set("timeout", 10000)
        self.solver.add(self.v.axioms(), self.v.action_in(self.actions))
        self.solver.add(self.v.closing_axioms())
        self.builder = WitnessBuilder(self.v, (new.schema, old.schema))
        self.truncated = False

    def run(self) -> DiffReport:
        permissive: list[Change] = []
        stricter: list[Change] = []
        if not self.actions:
            return DiffReport((), (), True)
        for o in range(4):
            for n in range(4):
                if o == n:
                    continue
                what = f"{RANK_EFFECT[o]} → {RANK_EFFECT[n]}"
                found = self.classes(
                    [self.old.final == o, self.new.final == n], what, _moves(o, n)
                )
                (permissive if n < o else stricter).extend(found)
        for change, direction in self.detail_changes():
            (permissive if direction else stricter).extend(change)
        return DiffReport(
            tuple(permissive),
            tuple(stricter),
            self.old.exact and self.new.exact,
            self.truncated,
        )

    def detail_changes(self) -> list[tuple[list[Change], bool]]:
        """Same effect, weaker or stronger obligations and requirements."""
        out: list[tuple[list[Change], bool]] = []
        definitions = {
            **self.old.policy.schema.obligations,
            **self.new.policy.schema.obligations,
        }
        for name, definition in sorted(definitions.items()):
            rules = [
                r for r, _ in self.old.own + self.new.own if r.effect == "restrict"
            ]
            if definition.merge == "union":
                elements = sorted(
                    {e for r in rules for e in _union_values(r, name)}, key=repr
                )
                for element in elements:
                    out.extend(self._detail("restrict", name, element, True))
            else:
                values = sorted(
                    {_key(x) for r in rules for x in _min_values(r, name)}, key=repr
                )
                for value in values:
                    out.extend(self._detail("restrict", name, value, False))
        requirements = sorted(
            {
                q
                for r, _ in self.old.own + self.new.own
                if r.effect == "step_up"
                for q in r.requirements
            }
        )
        for requirement in requirements:
            out.extend(self._detail("step_up", requirement, None, True))
        return out

    def _detail(
        self, effect: str, name: str, value: Any, union: bool
    ) -> list[tuple[list[Change], bool]]:
        def has(rule: ir.Rule) -> bool:
            if effect == "step_up":
                return name in rule.requirements
            if union:
                return value in _union_values(rule, name)
            return any(_key(x) <= value for x in _min_values(rule, name))

        old_has = self.old.contributes(effect, has)
        new_has = self.new.contributes(effect, has)
        rank = EFFECT_RANK[effect]
        if effect == "step_up":
            label = f"step_up no longer requires `{name}`"
            gain = f"step_up now requires `{name}`"
        elif union:
            label = f"restrict loses {name}({_show(value)})"
            gain = f"restrict adds {name}({_show(value)})"
        else:
            label = f"restrict loosens {name} beyond {_show(value)}"
            gain = f"restrict tightens {name} to {_show(value)} or less"
        both = [self.old.final == rank, self.new.final == rank]
        lost = self.classes(
            [*both, old_has, z3.Not(new_has)], label, _same_effect(effect)
        )
        gained = self.classes(
            [*both, z3.Not(old_has), new_has], gain, _same_effect(effect)
        )
        return [(lost, True), (gained, False)]

    def classes(
        self,
        formulas: Sequence[z3.BoolRef],
        what: str,
        claim: Callable[[Decision, Decision], bool],
    ) -> list[Change]:
        out: list[Change] = []
        blocked: list[z3.BoolRef] = []
        v = self.v
        while True:
            if len(out) >= CLASS_LIMIT:
                self.truncated = True
                break
            self.solver.push()
            self.solver.add(*formulas, *blocked)
            result = self.solver.check()
            model = self.solver.model() if result == z3.sat else None
            self.solver.pop()
            if model is None:
                break
            request = self.builder.build(model)
            action = request["action"]
            ptype = request["principal"]["type"]
            blocked.append(
                z3.Not(
                    z3.And(
                        v.action == v.domain.action_index(action),
                        v.ptype == v.domain.type_index(ptype),
                    )
                )
            )
            before, after = self.old.decide(request), self.new.decide(request)
            if not claim(before, after):
                log.warning("a diff witness did not reproduce: %s", request)
                continue
            direction = (
                "more-permissive" if _weaker(before, after, what) else "stricter"
            )
            out.append(
                Change(
                    direction,
                    what,
                    action,
                    ptype,
                    request,
                    _summary(before),
                    _summary(after),
                )
            )
        return out


def _weaker(before: Decision, after: Decision, what: str) -> bool:
    a, b = EFFECT_RANK[before.effect], EFFECT_RANK[after.effect]
    if a != b:
        return b < a
    return "loses" in what or "no longer" in what or "loosens" in what


def _moves(old: int, new: int) -> Callable[[Decision, Decision], bool]:
    return lambda a, b: EFFECT_RANK[a.effect] == old and EFFECT_RANK[b.effect] == new


def _same_effect(effect: str) -> Callable[[Decision, Decision], bool]:
    return lambda a, b: a.effect == effect and b.effect == effect


def _summary(decision: Decision) -> dict[str, Any]:
    data = decision.to_json()
    return {
        "effect": data["effect"],
        "rules": data["rules"],
        "reasons": data["reasons"],
        "obligations": data["obligations"],
        "requirements": data["requirements"],
    }


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def diff_policies(old: ir.PolicySet, new: ir.PolicySet) -> DiffReport:
    # Each version with its rules cut to its declared scopes: the same
    # decisions, and no class of requests its ceiling refuses to compare.
    return Differ(clip_to_ceilings(old)[0], clip_to_ceilings(new)[0]).run()
