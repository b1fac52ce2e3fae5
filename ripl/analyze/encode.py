"""Typed IR → SMT (z3) formulas over the variables of one request.

Input: a checked `PolicySet`. Output: for each rule and *world*, a pair of
z3 booleans `(matches, errs)` following DESIGN.md's three-valued semantics,
and the effect the combining rules give a set of rules.

A world is one evaluation of the rules: `own` evaluates them for the request's
principal under its delegation chain; `root` evaluates them for the chain
root (or owner) human with no chain, which is what the engine caps by. Both
read the same request variables, so a single model describes both.

The analyzer reasons about requests that fit the schema: required
attributes are present and well typed (optional ones may be absent), entities
the rules refer to (owners, chain roots) are supplied, and chains are valid
(a chain that is not is denied before any rule is read). On that domain the
encoding is exact for equality, order, linear arithmetic over integers,
decimals and durations, labels, literal sets, path patterns, the action
hierarchy and delegation facts. Anything else (a product of two variables,
membership of a computed value in a set attribute, attributes of an entity
held in an attribute …) becomes a fresh variable, which over-approximates;
`Encoder.inexact` then records the rule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

import attrs
import z3

from ripl import ir
from ripl.ast import Duration
from ripl.ir import walk

log = logging.getLogger(__name__)

EFFECT_RANK = ir.EFFECT_ORDER
RANK_EFFECT = {v: k for k, v in EFFECT_RANK.items()}
GRANTS = ("allow", "restrict")
SLOTS = ("p", "r", "o", "root")

TRUE = z3.BoolVal(True)
FALSE = z3.BoolVal(False)
_CTX = TRUE.ctx

# The connectives below build terms through z3's C API and recognise the
# constants by identity (every constant true/false here is TRUE or FALSE):
# z3's Python wrappers check and coerce every argument, which cost more than
# solving on large policy sets.


def _array(items: Sequence[z3.BoolRef]) -> Any:
    arr = (z3.Ast * len(items))()
    for i, item in enumerate(items):
        arr[i] = item.as_ast()
    return arr


def any_of(items: Iterable[z3.BoolRef]) -> z3.BoolRef:
    kept = []
    for item in items:
        if item is TRUE:
            return TRUE
        if item is not FALSE:
            kept.append(item)
    if not kept:
        return FALSE
    if len(kept) == 1:
        return kept[0]
    return z3.BoolRef(z3.Z3_mk_or(_CTX.ref(), len(kept), _array(kept)), _CTX)


def all_of(items: Iterable[z3.BoolRef]) -> z3.BoolRef:
    kept = []
    for item in items:
        if item is FALSE:
            return FALSE
        if item is not TRUE:
            kept.append(item)
    if not kept:
        return TRUE
    if len(kept) == 1:
        return kept[0]
    return z3.BoolRef(z3.Z3_mk_and(_CTX.ref(), len(kept), _array(kept)), _CTX)


def negate(item: z3.BoolRef) -> z3.BoolRef:
    if item is TRUE:
        return FALSE
    if item is FALSE:
        return TRUE
    return z3.BoolRef(z3.Z3_mk_not(_CTX.ref(), item.as_ast()), _CTX)


def boolean_constant(value: bool) -> z3.BoolRef:
    return TRUE if value else FALSE


def covers(scope: str, action: str) -> bool:
    return action == scope or action.startswith(scope + ".")


# ---- the request domain ------------------------------------------------------


MAX_STRING = 256
"""Longest string constant encoded exactly."""


@attrs.frozen
class Domain:
    """The names a request may use, with a stable number for each, shared by
    every version of a policy set that is compared (`ripl diff`)."""

    types: tuple[str, ...]
    actions: tuple[str, ...]
    groups: tuple[str, ...]
    principals: frozenset[str]
    resources: frozenset[str]
    kinds: Mapping[str, str | None]
    owners: Mapping[str, frozenset[str]]
    labels: Mapping[str, int]

    def type_index(self, name: str) -> int:
        return self.types.index(name)

    def action_index(self, name: str) -> int:
        return self.actions.index(name)

    def humans(self) -> frozenset[str]:
        return frozenset(t for t, k in self.kinds.items() if k == "human")


def build_domain(policies: Sequence[ir.PolicySet]) -> Domain:
    """Principals are identity types and resources plain types, plus any type
    a rule names in that role, so a policy that guards users as resources
    is analyzed with users as resources."""
    types: set[str] = set()
    actions: set[str] = set()
    groups: set[str] = set()
    kinds: dict[str, str | None] = {}
    owners: dict[str, frozenset[str]] = {}
    labels: dict[str, int] = {}
    named_principals: set[str] = set()
    named_resources: set[str] = set()
    for policy in policies:
        schema = policy.schema
        types |= set(schema.entities)
        actions |= schema.actions
        groups |= schema.groups
        for order in schema.labels.values():
            labels[order.name] = max(labels.get(order.name, 0), len(order.labels))
        for name, entity in schema.entities.items():
            kinds.setdefault(name, entity.kind)
            owners[name] = owners.get(name, frozenset()) | entity.owners
        for rule in policy.rules:
            named_principals |= rule.principal_types or set()
            named_resources |= rule.resource_types or set()
            if rule.condition is not None:
                for node in walk(rule.condition):
                    if isinstance(node, ir.Is) and isinstance(node.obj, ir.RequestRoot):
                        target = (
                            named_principals
                            if node.obj.name == "principal"
                            else named_resources
                        )
                        target |= node.types
    identities = {t for t in types if kinds.get(t) is not None}
    plain = types - identities
    principals = identities | (named_principals & types)
    resources = (plain or types) | (named_resources & types)
    return Domain(
        tuple(sorted(types)),
        tuple(sorted(actions)),
        tuple(sorted(groups)),
        frozenset(principals or types),
        frozenset(resources),
        kinds,
        owners,
        labels,
    )


# ---- values ---------------------------------------------------------------------


@attrs.frozen
class Val:
    """An encoded value. `kind` is one of bool, int, dec, dur, str, label,
    action, ent, rec, set, opaque. For `ent`, `term` is the type number and
    `extra` is (id term, slot or None); for `rec`, `extra` is (slot, path,
    RecordType); for `set`, `extra` is a tuple of element Vals (a literal set)
    or (slot, path) of a set attribute."""

    kind: str
    term: Any = None
    extra: Any = None


@attrs.frozen
class Dec:
    """A decimal attribute is an integer count of 10**-scale units, so every
    model value is a finite decimal."""

    scale: int


class Vars:
    """The z3 variables of one request, created on first use."""

    def __init__(self, domain: Domain, scale: int = 6) -> None:
        self.names: dict[int, tuple[str, Any]] = {}
        self._type_in: dict[tuple[str, frozenset[str]], z3.BoolRef] = {}
        self._action_in: dict[frozenset[str], z3.BoolRef] = {}
        self.domain = domain
        self.scale = scale
        self.unit = 10**scale
        self.ptype = self._make(z3.Int, "ptype")
        self.rtype = self._make(z3.Int, "rtype")
        self.action = self._make(z3.Int, "action")
        self.slot_types = {
            "p": self.ptype,
            "r": self.rtype,
            "o": self._make(z3.Int, "otype"),
            "root": self._make(z3.Int, "roottype"),
        }
        self.ids = {s: self._make(z3.String, f"{s}.id") for s in SLOTS}
        self.used_ids: set[str] = set()
        self.depth = self._make(z3.Int, "depth")
        self.owner_present = self._make(z3.Bool, "owner?")
        self.root_is_owner = self._make(z3.Bool, "root=owner")
        self.purpose = self._make(z3.String, "purpose")
        self.purpose_present = self._make(z3.Bool, "purpose?")
        self.inscope: dict[str, z3.BoolRef] = {}
        self.mid: dict[str, z3.BoolRef] = {}
        self.values: dict[tuple[str, tuple[str, ...], str], z3.ExprRef] = {}
        self.presence: dict[tuple[str, tuple[str, ...]], z3.BoolRef] = {}
        self.members: dict[tuple[str, tuple[str, ...], str], z3.BoolRef] = {}
        self.member_values: dict[tuple[str, tuple[str, ...], str], object] = {}
        self.limits: dict[str, tuple[z3.BoolRef, z3.ArithRef]] = {}
        self.fresh_count = 0
        self.fresh_vars: list[z3.ExprRef] = []

    def _make(self, maker: Any, name: str) -> Any:
        term = maker(name)
        default = {z3.Bool: False, z3.String: ""}.get(maker, 0)
        self.names[id(term)] = (name, default)
        return term

    def value(self, slot: str, path: tuple[str, ...], typ: ir.Type) -> z3.ExprRef:
        key = (slot, path, str(typ))
        found = self.values.get(key)
        if found is None:
            name = f"{slot}.{'.'.join(path)}:{typ}"
            if typ == ir.BOOL:
                found = self._make(z3.Bool, name)
            elif typ == ir.STRING:
                found = self._make(z3.String, name)
            else:
                found = self._make(z3.Int, name)
            self.values[key] = found
        return found

    def present(self, slot: str, path: tuple[str, ...]) -> z3.BoolRef:
        key = (slot, path)
        found = self.presence.get(key)
        if found is None:
            found = self._make(z3.Bool, f"{slot}.{'.'.join(path)}?")
            self.presence[key] = found
        return found

    def member(self, slot: str, path: tuple[str, ...], element: object) -> z3.BoolRef:
        key = (slot, path, repr(element))
        found = self.members.get(key)
        if found is None:
            found = self._make(z3.Bool, f"{slot}.{'.'.join(path)}∋{element!r}")
            self.members[key] = found
            self.member_values[key] = element
        return found

    def limit(self, name: str) -> tuple[z3.BoolRef, z3.ArithRef]:
        found = self.limits.get(name)
        if found is None:
            found = (
                self._make(z3.Bool, f"limit[{name}]?"),
                self._make(z3.Int, f"limit[{name}]"),
            )
            self.limits[name] = found
        return found

    def fresh(self, sort: str) -> z3.ExprRef:
        self.fresh_count += 1
        name = f"~{self.fresh_count}"
        made: z3.ExprRef
        if sort == "bool":
            made = self._make(z3.Bool, name)
        elif sort == "str":
            made = self._make(z3.String, name)
        elif sort == "dec":
            made = self._make(z3.Real, name)
        else:
            made = self._make(z3.Int, name)
        self.fresh_vars.append(made)
        return made

    def kind_is(self, slot: str, kinds: Iterable[str | None]) -> z3.BoolRef:
        wanted = set(kinds)
        term = self.slot_types[slot]
        return any_of(
            term == self.domain.type_index(t)
            for t, k in self.domain.kinds.items()
            if k in wanted
        )

    def type_in(self, slot: str, names: Iterable[str]) -> z3.BoolRef:
        key = (slot, frozenset(names))
        found = self._type_in.get(key)
        if found is None:
            found = self._type_in[key] = self._type_in_uncached(slot, key[1])
        return found

    def _type_in_uncached(self, slot: str, names: Iterable[str]) -> z3.BoolRef:
        term = self.slot_types[slot]
        return any_of(
            term == self.domain.type_index(t)
            for t in sorted(set(names))
            if t in self.domain.types
        )

    def action_in(self, names: Iterable[str]) -> z3.BoolRef:
        key = frozenset(names)
        found = self._action_in.get(key)
        if found is None:
            found = self._action_in[key] = self._action_in_uncached(key)
        return found

    def _action_in_uncached(self, names: Iterable[str]) -> z3.BoolRef:
        return any_of(
            self.action == self.domain.action_index(a)
            for a in sorted(set(names))
            if a in self.domain.actions
        )

    def intermediate(self, name: str) -> z3.BoolRef:
        """The chain holds an identity of this type between root and principal."""
        found = self.mid.get(name)
        if found is None:
            found = self.mid[name] = self._make(z3.Bool, f"mid[{name}]")
        return found

    def covered(self, scope: str) -> z3.BoolRef:
        """The chain's scopes cover `scope`. In a valid chain every link
        narrows the one before, so the last link's scopes decide; there is a
        variable per scope a rule tests, and `axioms` keeps them consistent
        with the hierarchy and with the requested action (which the chain
        always covers)."""
        found = self.inscope.get(scope)
        if found is None:
            found = self.inscope[scope] = self._make(z3.Bool, f"scope[{scope}]")
        return found

    def has_chain(self) -> z3.BoolRef:
        return self.depth >= 1

    def has_root(self) -> z3.BoolRef:
        return self.kind_is("p", ("agent", "service", "tool", "connector"))

    def core_axioms(self) -> z3.BoolRef:
        """The domains of the principal type, resource type and action. A
        formula that reads nothing of the chain, the owner or the root and is
        satisfiable with these is satisfiable with all of `axioms`: every
        principal type can be given a valid chain or owner."""
        d = self.domain
        parts = [
            self.type_in("p", d.principals),
            self.type_in("r", d.resources),
            self.action_in(d.actions),
        ]
        if not d.humans():
            parts.append(negate(self.has_root()))
        return all_of(parts)

    def axioms(self) -> z3.BoolRef:
        """What every request of the analyzed domain satisfies."""
        d = self.domain
        parts: list[z3.BoolRef] = [
            self.core_axioms(),
            self.type_in("root", d.humans()) if d.humans() else FALSE,
            self.depth >= 0,
        ]
        human_like = self.kind_is("p", ("human", None))
        agent = self.kind_is("p", ("agent",))
        parts.append(z3.Implies(human_like, self.depth == 0))
        parts.append(z3.Implies(agent, self.depth >= 1))
        for name in d.types:
            owners = d.owners.get(name, frozenset())
            if d.kinds.get(name) in (None, "human"):
                continue
            ptype_is = self.ptype == d.type_index(name)
            parts.append(
                z3.Implies(
                    z3.And(ptype_is, self.owner_present), self.type_in("o", owners)
                )
            )
        # Without a chain, a non-human principal reaches its root through
        # owners: its owner, or its owner's owner (two hops are modelled).
        no_chain = self.depth == 0
        owner_human = self.kind_is("o", ("human",))
        parts.append(z3.Implies(z3.And(self.has_root(), no_chain), self.owner_present))
        parts.append(
            z3.Implies(
                z3.And(self.has_root(), no_chain, owner_human), self.root_is_owner
            )
        )
        parts.append(
            z3.Implies(
                self.root_is_owner,
                z3.And(
                    no_chain,
                    self.has_root(),
                    self.owner_present,
                    owner_human,
                    self.slot_types["o"] == self.slot_types["root"],
                ),
            )
        )
        for name in d.types:
            if d.kinds.get(name) in (None, "human"):
                continue
            onward = d.owners.get(name, frozenset()) & d.humans()
            parts.append(
                z3.Implies(
                    z3.And(
                        self.has_root(),
                        no_chain,
                        self.slot_types["o"] == d.type_index(name),
                    ),
                    self.type_in("root", onward) if onward else FALSE,
                )
            )
            if name in d.owners.get(name, frozenset()):
                parts.append(
                    negate(
                        all_of(
                            [
                                self.slot_types["o"] == self.ptype,
                                self.ids["o"] == self.ids["p"],
                            ]
                        )
                    )
                )
        # Coverage is upward closed: covering `a` covers everything under it,
        # and the chain covers the requested action. Intermediate identities:
        # at least one per type the chain is said to hold.
        chain = self.has_chain()
        for scope, held in self.inscope.items():
            for other, also in self.inscope.items():
                if other != scope and covers(other, scope):
                    parts.append(z3.Implies(also, held))
            below = [a for a in d.actions if covers(a, scope)]
            if below:
                parts.append(z3.Implies(self.action_in(below), held))
        mids = list(self.mid.values())
        if mids:
            count = z3.Sum([z3.If(m, 1, 0) for m in mids])
            parts.append(z3.Implies(chain, self.depth >= 1 + count))
            parts.append(z3.Implies(negate(chain), all_of(negate(m) for m in mids)))
        parts.append(self.depth <= 8)
        return all_of(parts)

    def closing_axioms(self) -> z3.BoolRef:
        """Constraints on variables created while encoding: ranges of labels
        and durations, and equal attributes for slots naming one entity."""
        parts: list[z3.BoolRef] = []
        for (slot, path, typ), term in self.values.items():
            del slot, path
            if typ in self.domain.labels:
                parts.append(z3.And(term >= 0, term < self.domain.labels[typ]))
            elif typ == "duration":
                parts.append(term >= 0)
        used = sorted(self.used_ids)
        pairs = [(a, b) for i, a in enumerate(used) for b in used[i + 1 :]]
        if ("o", "root") not in pairs:
            pairs.append(("o", "root"))
        else:
            parts.append(
                z3.Implies(self.root_is_owner, self.ids["o"] == self.ids["root"])
            )
        for a, b in pairs:
            same: z3.BoolRef = FALSE
            if a in self.used_ids and b in self.used_ids:
                same = z3.And(
                    self.slot_types[a] == self.slot_types[b],
                    self.ids[a] == self.ids[b],
                )
            if (a, b) == ("o", "root"):
                same = any_of([self.root_is_owner, same])
            equal: list[z3.BoolRef] = []
            for (slot, path, typ), term in self.values.items():
                if slot == a and (b, path, typ) in self.values:
                    equal.append(term == self.values[(b, path, typ)])
            for (slot, path), term in self.presence.items():
                if slot == a and (b, path) in self.presence:
                    equal.append(term == self.presence[(b, path)])
            for (slot, path, element), term in self.members.items():
                if slot == a and (b, path, element) in self.members:
                    equal.append(term == self.members[(b, path, element)])
            if equal:
                parts.append(z3.Implies(same, z3.And(equal)))
        return all_of(parts)


# ---- expressions ------------------------------------------------------------------


@attrs.frozen
class World:
    """Which slot `principal` names, and whether the chain's facts apply."""

    name: str
    principal: str
    chain: bool


OWN = World("own", "p", True)
ROOT = World("root", "root", False)


@attrs.frozen
class RuleTerms:
    """A rule in one world: its target, and when it matches or errs."""

    target: z3.BoolRef
    matches: z3.BoolRef
    errs: z3.BoolRef
    exact: bool
    chain: bool  # reads the chain, the owner or the root: needs every axiom


class UnsupportedError(Exception):
    """An expression the encoding does not model; becomes a fresh variable."""


class Encoder:
    """Encodes the rules of one policy set over shared request variables."""

    def __init__(self, policy: ir.PolicySet, variables: Vars) -> None:
        self.policy = policy
        self.schema = policy.schema
        self.v = variables
        self.inexact: set[str] = set()
        self._cache: dict[tuple[str, ir.Expr], tuple[Val, z3.BoolRef]] = {}
        self._rules: dict[tuple[str, str, int], RuleTerms] = {}
        self._approximated = False
        self._approximate_keys: set[tuple[str, ir.Expr]] = set()
        self._touched = False
        self._touching_keys: set[tuple[str, ir.Expr]] = set()

    # ---- rules ----------------------------------------------------------------

    def target(self, rule: ir.Rule, world: World) -> z3.BoolRef:
        v = self.v
        parts = []
        if rule.actions is not None:
            parts.append(v.action_in(rule.actions))
        if rule.principal_types is not None:
            parts.append(v.type_in(world.principal, rule.principal_types))
        if rule.resource_types is not None:
            parts.append(v.type_in("r", rule.resource_types))
        return all_of(parts)

    def rule(self, rule: ir.Rule, world: World) -> RuleTerms:
        key = (world.name, rule.id, id(rule))
        found = self._rules.get(key)
        if found is not None:
            return found
        self._approximated = False
        self._touched = not world.chain
        target = self.target(rule, world)
        if rule.condition is None:
            holds, err = TRUE, FALSE
        else:
            holds, err = self.boolean(rule.condition, world)
        for use in rule.obligations:
            for arg in use.args:
                _, arg_err = self.expr(arg, world)
                err = any_of([err, all_of([holds, arg_err])])
                holds = all_of([holds, negate(arg_err)])
        exact = not self._approximated
        if not exact:
            self.inexact.add(rule.id)
        found = RuleTerms(
            target, all_of([target, holds]), all_of([target, err]), exact, self._touched
        )
        self._rules[key] = found
        return found

    # ---- three-valued booleans ------------------------------------------------

    def boolean(self, expr: ir.Expr, world: World) -> tuple[z3.BoolRef, z3.BoolRef]:
        """(true, error) of a condition; it is false when neither holds."""
        if isinstance(expr, ir.And):
            parts = [self.boolean(o, world) for o in expr.operands]
            some_false = any_of(all_of([negate(t), negate(e)]) for t, e in parts)
            return (
                all_of(t for t, _ in parts),
                all_of([negate(some_false), any_of(e for _, e in parts)]),
            )
        if isinstance(expr, ir.Or):
            parts = [self.boolean(o, world) for o in expr.operands]
            some_true = any_of(t for t, _ in parts)
            return some_true, all_of([negate(some_true), any_of(e for _, e in parts)])
        if isinstance(expr, ir.Not):
            t, e = self.boolean(expr.operand, world)
            return all_of([negate(t), negate(e)]), e
        val, err = self.expr(expr, world)
        if val.kind != "bool":
            return FALSE, TRUE
        return all_of([negate(err), val.term]), err

    # ---- values -----------------------------------------------------------------

    def expr(self, expr: ir.Expr, world: World) -> tuple[Val, z3.BoolRef]:
        key = (world.name, expr)
        found = self._cache.get(key)
        if found is not None:
            if key in self._approximate_keys:
                self._approximated = True
            if key in self._touching_keys:
                self._touched = True
            return found
        outer, self._approximated = self._approximated, False
        outer_touch, self._touched = self._touched, False
        try:
            found = self._expr(expr, world)
        except UnsupportedError as exc:
            log.debug("approximating %s: %s", type(expr).__name__, exc)
            self._approximated = True
            found = self._fresh_of(expr.type)
        if self._approximated:
            self._approximate_keys.add(key)
        if self._touched:
            self._touching_keys.add(key)
        self._approximated = self._approximated or outer
        self._touched = self._touched or outer_touch
        self._cache[key] = found
        return found

    def _fresh_of(self, typ: ir.Type) -> tuple[Val, z3.BoolRef]:
        v = self.v
        err = v.fresh("bool")
        if typ == ir.BOOL:
            return Val("bool", v.fresh("bool"), "fresh"), err
        if typ == ir.INT:
            return Val("int", v.fresh("int"), "fresh"), err
        if typ == ir.DECIMAL:
            return Val("dec", v.fresh("dec"), "fresh"), err
        if typ == ir.DURATION:
            return Val("dur", v.fresh("int"), "fresh"), err
        if typ == ir.STRING:
            return Val("str", v.fresh("str"), "fresh"), err
        if isinstance(typ, ir.LabelType):
            return Val("label", v.fresh("int"), "fresh"), err
        if isinstance(typ, ir.EntityType):
            return Val("ent", v.fresh("int"), (v.fresh("str"), None)), err
        return Val("opaque", None, "fresh"), err

    def _approx(self, why: str) -> None:
        raise UnsupportedError(why)

    def _expr(self, expr: ir.Expr, world: World) -> tuple[Val, z3.BoolRef]:
        method = getattr(self, "_" + type(expr).__name__)
        result: tuple[Val, z3.BoolRef] = method(expr, world)
        return result

    def const(self, value: ir.Value, typ: ir.Type) -> Val:
        if isinstance(value, bool):
            return Val("bool", boolean_constant(value))
        if isinstance(value, int) and typ != ir.ACTION:
            return Val("int", z3.IntVal(value))
        if isinstance(value, Decimal):
            return Val("dec", z3.RealVal(str(Fraction(value))))
        if isinstance(value, Duration):
            return Val("dur", z3.IntVal(value.seconds))
        if isinstance(value, ir.Label):
            return Val("label", z3.IntVal(value.rank), value.order)
        if isinstance(value, str) and typ == ir.ACTION:
            if value not in self.v.domain.actions:
                self._approx("a group used as an action value")
            return Val("action", z3.IntVal(self.v.domain.action_index(value)))
        if isinstance(value, str):
            if len(value) > MAX_STRING:
                # z3's string theory grows with a literal's length; a huge one
                # would exhaust memory, so the rule is approximated instead.
                self._approx(f"a string constant longer than {MAX_STRING} characters")
            return Val("str", z3.StringVal(value))
        if isinstance(value, frozenset):
            element = typ.element if isinstance(typ, ir.SetType) else None
            items = tuple(
                self.const(x, element or ir.STRING) for x in sorted(value, key=repr)
            )
            return Val("set", None, items)
        self._approx("a constant of an unmodelled type")
        raise AssertionError

    def _Const(self, expr: ir.Const, world: World) -> tuple[Val, z3.BoolRef]:
        return self.const(expr.value, expr.type), FALSE

    def _RequestRoot(
        self, expr: ir.RequestRoot, world: World
    ) -> tuple[Val, z3.BoolRef]:
        if expr.name == "context":
            return Val("rec", None, ("ctx", (), self.schema.context)), FALSE
        slot = world.principal if expr.name == "principal" else "r"
        return self._slot(slot), FALSE

    def _slot(self, slot: str) -> Val:
        if slot in ("o", "root"):
            self._touched = True
        return Val("ent", self.v.slot_types[slot], (self.v.ids[slot], slot))

    def _ActionValue(
        self, expr: ir.ActionValue, world: World
    ) -> tuple[Val, z3.BoolRef]:
        return Val("action", self.v.action), FALSE

    def _slot_names(self, slot: str) -> Iterable[str]:
        if slot == "p":
            return self.v.domain.principals
        if slot == "r":
            return self.v.domain.resources
        if slot == "root":
            return self.v.domain.humans()
        return self.schema.entities

    def _GetAttr(self, expr: ir.GetAttr, world: World) -> tuple[Val, z3.BoolRef]:
        obj, err = self.expr(expr.obj, world)
        v = self.v
        if obj.kind == "ent":
            _, slot = obj.extra
            if slot is None:
                self._approx("an attribute of an entity held in an attribute")
            specs: list[tuple[str, ir.AttrSpec]] = []
            for name in sorted(self._slot_names(slot)):
                entity = self.schema.entities.get(name)
                spec = entity.attrs.get(expr.name) if entity else None
                if spec is not None and spec.type == expr.type:
                    specs.append((name, spec))
            path = (expr.name,)
            presence = any_of(
                all_of(
                    [
                        v.slot_types[slot] == v.domain.type_index(name),
                        v.present(slot, path) if spec.optional else TRUE,
                    ]
                )
                for name, spec in specs
            )
            return self._leaf(slot, path, expr.type), any_of([err, negate(presence)])
        if obj.kind == "rec":
            slot, path, record = obj.extra
            spec = record.get(expr.name)
            if spec is None:
                return Val("opaque"), TRUE
            path = (*path, expr.name)
            presence = v.present(slot, path) if spec.optional else TRUE
            return self._leaf(slot, path, expr.type), any_of([err, negate(presence)])
        self._approx("an attribute of a computed value")
        raise AssertionError

    def _leaf(self, slot: str, path: tuple[str, ...], typ: ir.Type) -> Val:
        v = self.v
        if isinstance(typ, ir.RecordType):
            return Val("rec", None, (slot, path, typ))
        if isinstance(typ, ir.SetType):
            return Val("set", None, (slot, path))
        if isinstance(typ, ir.EntityType):
            type_term = v.value(slot, (*path, "#type"), ir.INT)
            id_term = v.value(slot, (*path, "#id"), ir.STRING)
            return Val("ent", type_term, (id_term, None))
        term = v.value(slot, path, typ)
        if typ == ir.BOOL:
            return Val("bool", term)
        if typ == ir.INT:
            return Val("int", term)
        if typ == ir.DECIMAL:
            return Val("dec", z3.ToReal(term) / v.unit)
        if typ == ir.DURATION:
            return Val("dur", term)
        if typ == ir.STRING:
            return Val("str", term)
        if isinstance(typ, ir.LabelType):
            return Val("label", term, typ.order)
        self._approx(f"an attribute of type {typ}")
        raise AssertionError

    def _Owner(self, expr: ir.Owner, world: World) -> tuple[Val, z3.BoolRef]:
        self._touched = True
        obj, err = self.expr(expr.obj, world)
        v = self.v
        if obj.kind == "ent" and obj.extra[1] == "p":
            present = all_of([v.has_root(), v.owner_present])
            return self._slot("o"), any_of([err, negate(present)])
        if obj.kind == "ent" and obj.extra[1] == "root":
            return Val("opaque"), TRUE  # humans have no owner
        self._approx("the owner of an entity other than the principal")
        raise AssertionError

    def _EntityId(self, expr: ir.EntityId, world: World) -> tuple[Val, z3.BoolRef]:
        obj, err = self.expr(expr.obj, world)
        if obj.kind != "ent":
            return Val("opaque"), TRUE
        id_term, slot = obj.extra
        if slot is not None:
            self.v.used_ids.add(slot)
        return Val("str", id_term), err

    def _Has(self, expr: ir.Has, world: World) -> tuple[Val, z3.BoolRef]:
        obj, err = self.expr(expr.obj, world)
        v = self.v
        if obj.kind == "ent":
            _, slot = obj.extra
            if slot is None:
                self._approx("`has` on an entity held in an attribute")
            options = []
            for name in sorted(self._slot_names(slot)):
                entity = self.schema.entities.get(name)
                spec = entity.attrs.get(expr.name) if entity else None
                if spec is None:
                    continue
                options.append(
                    all_of(
                        [
                            v.slot_types[slot] == v.domain.type_index(name),
                            v.present(slot, (expr.name,)) if spec.optional else TRUE,
                        ]
                    )
                )
            return Val("bool", any_of(options)), err
        if obj.kind == "rec":
            slot, path, record = obj.extra
            spec = record.get(expr.name)
            if spec is None:
                return Val("bool", FALSE), err
            held = v.present(slot, (*path, expr.name)) if spec.optional else TRUE
            return Val("bool", held), err
        self._approx("`has` on a computed value")
        raise AssertionError

    def _Is(self, expr: ir.Is, world: World) -> tuple[Val, z3.BoolRef]:
        obj, err = self.expr(expr.obj, world)
        if obj.kind != "ent":
            return Val("opaque"), TRUE
        return Val(
            "bool",
            any_of(
                obj.term == self.v.domain.type_index(t)
                for t in sorted(expr.types)
                if t in self.v.domain.types
            ),
        ), err

    def _Compare(self, expr: ir.Compare, world: World) -> tuple[Val, z3.BoolRef]:
        left, lerr = self.expr(expr.left, world)
        right, rerr = self.expr(expr.right, world)
        err = any_of([lerr, rerr])
        if expr.op in ("==", "!="):
            same = self.equal(left, right)
            return Val("bool", same if expr.op == "==" else negate(same)), err
        a, b = self.ordered(left), self.ordered(right)
        ops = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}
        return Val("bool", ops[expr.op]), err

    def ordered(self, val: Val) -> z3.ArithRef:
        if val.kind in ("int", "dec", "dur", "label"):
            term: z3.ArithRef = val.term
            return term
        self._approx(f"ordering a {val.kind}")
        raise AssertionError

    def equal(self, a: Val, b: Val) -> z3.BoolRef:
        if a.kind == "ent" and b.kind == "ent":
            for val in (a, b):
                if val.extra[1] is not None:
                    self.v.used_ids.add(val.extra[1])
            return all_of([a.term == b.term, a.extra[0] == b.extra[0]])
        if a.kind in ("int", "dec") and b.kind in ("int", "dec"):
            return self.arith_eq(a, b)
        if a.kind == b.kind and a.kind in ("bool", "str", "dur", "label", "action"):
            same: z3.BoolRef = a.term == b.term
            return same
        if (
            a.kind == b.kind == "set"
            and isinstance(a.extra, tuple)
            and all(isinstance(x, Val) for x in (*a.extra, *b.extra))
        ):
            return all_of(
                [self._in_literal(x, b.extra) for x in a.extra]
                + [self._in_literal(x, a.extra) for x in b.extra]
            )
        self._approx(f"comparing {a.kind} with {b.kind}")
        raise AssertionError

    def arith_eq(self, a: Val, b: Val) -> z3.BoolRef:
        x, y = a.term, b.term
        if a.kind != b.kind:
            x = z3.ToReal(x) if a.kind == "int" else x
            y = z3.ToReal(y) if b.kind == "int" else y
        same: z3.BoolRef = x == y
        return same

    def _in_literal(self, element: Val, items: Sequence[Val]) -> z3.BoolRef:
        return any_of(self.equal(element, item) for item in items)

    def _In(self, expr: ir.In, world: World) -> tuple[Val, z3.BoolRef]:
        element, eerr = self.expr(expr.element, world)
        container, cerr = self.expr(expr.container, world)
        err = any_of([eerr, cerr])
        if container.kind != "set":
            self._approx("`in` on a computed container")
        items = container.extra
        if items and isinstance(items[0], Val) or items == ():
            return Val("bool", self._in_literal(element, items)), err
        slot, path = items
        if isinstance(expr.element, ir.Const) and isinstance(
            expr.element.value, str | int | bool
        ):
            member = self.v.member(slot, path, expr.element.value)
            return Val("bool", member), err
        self._approx("membership of a computed value in a set attribute")
        raise AssertionError

    def _SetLit(self, expr: ir.SetLit, world: World) -> tuple[Val, z3.BoolRef]:
        items = [self.expr(i, world) for i in expr.items]
        return Val("set", None, tuple(v for v, _ in items)), any_of(e for _, e in items)

    def _ActionIn(self, expr: ir.ActionIn, world: World) -> tuple[Val, z3.BoolRef]:
        names = [
            a for a in self.v.domain.actions if any(covers(g, a) for g in expr.actions)
        ]
        return Val("bool", self.v.action_in(names)), FALSE

    def _Arith(self, expr: ir.Arith, world: World) -> tuple[Val, z3.BoolRef]:
        left, lerr = self.expr(expr.left, world)
        right, rerr = self.expr(expr.right, world)
        err = any_of([lerr, rerr])
        numeric = ("int", "dec", "dur")
        if left.kind not in numeric or right.kind not in numeric:
            self._approx("arithmetic on non-numbers")
        if expr.op == "*" and not (_is_constant(left.term) or _is_constant(right.term)):
            self._approx("a product of two variables")
        x, y = left.term, right.term
        kind = "int" if left.kind == right.kind == "int" else "dec"
        if left.kind == "dur" or right.kind == "dur":
            kind = "dur"
        elif kind == "dec":
            x = z3.ToReal(x) if left.kind == "int" else x
            y = z3.ToReal(y) if right.kind == "int" else y
        result = x + y if expr.op == "+" else x - y if expr.op == "-" else x * y
        return Val(kind, result), err

    def _Neg(self, expr: ir.Neg, world: World) -> tuple[Val, z3.BoolRef]:
        inner, err = self.expr(expr.operand, world)
        if inner.kind not in ("int", "dec", "dur"):
            self._approx("negating a non-number")
        return Val(inner.kind, -inner.term), err

    def _Not(self, expr: ir.Not, world: World) -> tuple[Val, z3.BoolRef]:
        t, e = self.boolean(expr, world)
        return Val("bool", t), e

    def _And(self, expr: ir.And, world: World) -> tuple[Val, z3.BoolRef]:
        t, e = self.boolean(expr, world)
        return Val("bool", t), e

    _Or = _And

    def _Matches(self, expr: ir.Matches, world: World) -> tuple[Val, z3.BoolRef]:
        subject, err = self.expr(expr.subject, world)
        if subject.kind != "str":
            self._approx("`matches` on a non-string")
        return Val("bool", z3.InRe(subject.term, pattern_regex(expr.pattern))), err

    def _Grants(self, expr: ir.Grants, world: World) -> tuple[Val, z3.BoolRef]:
        self._touched = True
        if not world.chain:
            return Val("bool", FALSE), FALSE
        return Val(
            "bool", all_of([self.v.has_chain(), self.v.covered(expr.scope)])
        ), FALSE

    def _Via(self, expr: ir.Via, world: World) -> tuple[Val, z3.BoolRef]:
        self._touched = True
        if not world.chain:
            return Val("bool", FALSE), FALSE
        v = self.v
        on_chain = any_of(
            any_of(
                [
                    v.ptype == v.domain.type_index(t),
                    v.slot_types["root"] == v.domain.type_index(t),
                    v.intermediate(t),
                ]
            )
            for t in sorted(expr.types)
            if t in v.domain.types
        )
        return Val("bool", all_of([v.has_chain(), on_chain])), FALSE

    def _DelegationFact(
        self, expr: ir.DelegationFact, world: World
    ) -> tuple[Val, z3.BoolRef]:
        self._touched = True
        v = self.v
        if expr.fact == "depth":
            return Val("int", v.depth if world.chain else z3.IntVal(0)), FALSE
        if not world.chain:
            return Val("opaque"), TRUE
        chain = v.has_chain()
        if expr.fact == "root":
            return self._slot("root"), negate(chain)
        if expr.fact == "purpose":
            return Val("str", v.purpose), negate(all_of([chain, v.purpose_present]))
        assert expr.arg is not None
        present, value = v.limit(expr.arg)
        return Val("dec", z3.ToReal(value) / v.unit), negate(all_of([chain, present]))

    def _RiskRef(self, expr: ir.RiskRef, world: World) -> tuple[Val, z3.BoolRef]:
        return self.expr(expr.expr, world)


def _is_constant(term: Any) -> bool:
    return bool(
        z3.is_rational_value(term)
        or z3.is_int_value(term)
        or z3.is_algebraic_value(term)
    )


def pattern_regex(pattern: ir.PathPattern) -> z3.ReRef:
    """The strings `PathPattern.match` accepts, as a z3 regular expression."""
    any_char = z3.AllChar(z3.ReSort(z3.StringSort()))
    segment_char = z3.Intersect(any_char, z3.Complement(z3.Re("/")))
    one_segment = z3.Plus(segment_char)

    def seg(text: str) -> z3.ReRef:
        if text == "*" or (text.startswith("{") and text.endswith("}")):
            return one_segment
        return z3.Re(text)

    segments = list(pattern.segments)
    tail: z3.ReRef | None = None
    if segments and segments[-1] == "**":
        segments = segments[:-1]
        tail = z3.Union(z3.Re(""), z3.Concat(z3.Re("/"), z3.Star(any_char)))
    parts: list[z3.ReRef] = []
    for i, text in enumerate(segments):
        if i:
            parts.append(z3.Re("/"))
        parts.append(seg(text))
    if tail is not None:
        if not segments:
            # `**` alone: any string at all (every split has ≥ 0 parts).
            return z3.Star(any_char)
        parts.append(tail)
    if not parts:
        return z3.Re("")
    return parts[0] if len(parts) == 1 else z3.Concat(*parts)


# ---- combining ----------------------------------------------------------------


def effect_of(terms: Sequence[tuple[ir.Rule, RuleTerms]]) -> z3.ArithRef:
    """The effect (as its rank) the combining rules give these rules."""
    blocking = any_of(t.errs for r, t in terms if r.effect != "allow")
    by_effect = {
        e: any_of(t.matches for r, t in terms if r.effect == e) for e in EFFECT_RANK
    }
    result: z3.ArithRef = z3.IntVal(3)
    for effect in ("allow", "restrict", "step_up"):
        result = z3.If(by_effect[effect], EFFECT_RANK[effect], result)
    return z3.If(any_of([blocking, by_effect["deny"]]), 3, result)


def max_term(a: z3.ArithRef, b: z3.ArithRef) -> z3.ArithRef:
    return z3.If(a >= b, a, b)


class ModelValues:
    """A model's values by variable name, read once: asking z3 for each
    variable separately costs more than the rest of building a witness."""

    def __init__(
        self, model: z3.ModelRef, names: Mapping[int, tuple[str, Any]]
    ) -> None:
        self.model = model
        self.names = names
        self.values: dict[str, Any] = {}
        for decl in model.decls():
            if decl.arity() == 0:
                self.values[decl.name()] = _python(model[decl])

    def get(self, term: Any) -> Any:
        found = self.names.get(id(term))
        if found is None:
            return literal_value(term, self.model)
        name, default = found
        return self.values.get(name, default)


class PointValues:
    """Chosen values by variable name, read like a model: what a point of a
    region (see `regions.py`) fixes, every other variable at its default."""

    def __init__(
        self, values: Mapping[str, Any], names: Mapping[int, tuple[str, Any]]
    ) -> None:
        self.values = values
        self.names = names

    def get(self, term: Any) -> Any:
        name, default = self.names[id(term)]
        return self.values.get(name, default)


Readable = ModelValues | PointValues


def _python(value: Any) -> Any:
    if z3.is_true(value):
        return True
    if z3.is_false(value):
        return False
    if z3.is_int_value(value):
        return value.as_long()
    if z3.is_rational_value(value):
        return Fraction(value.numerator_as_long(), value.denominator_as_long())
    if z3.is_string_value(value):
        return value.as_string()
    return None


def literal_value(val: Any, model: z3.ModelRef) -> Any:
    """A z3 model value as a Python value (int, Fraction, str or bool)."""
    if val.ctx is not model.ctx:
        val = val.translate(model.ctx)
    value = model.eval(val, model_completion=True)
    if z3.is_true(value):
        return True
    if z3.is_false(value):
        return False
    if z3.is_int_value(value):
        return value.as_long()
    if z3.is_rational_value(value):
        return Fraction(value.numerator_as_long(), value.denominator_as_long())
    if z3.is_string_value(value):
        return value.as_string()
    return None


def scale_for(policies: Sequence[ir.PolicySet]) -> int:
    """Decimal places for decimal attributes: enough for every constant, and
    for products of constants with attributes compared against them."""
    digits = 0
    for policy in policies:
        for rule in policy.rules:
            if rule.condition is None:
                continue
            for node in walk(rule.condition):
                if isinstance(node, ir.Const) and isinstance(node.value, Decimal):
                    exponent = node.value.as_tuple().exponent
                    if isinstance(exponent, int):
                        digits = max(digits, -exponent)
        for risk in policy.risks.values():
            for node in walk(risk.expr):
                if isinstance(node, ir.Const) and isinstance(node.value, Decimal):
                    exponent = node.value.as_tuple().exponent
                    if isinstance(exponent, int):
                        digits = max(digits, -exponent)
    return max(4, 2 * digits + 2)


def holds(model: z3.ModelRef, term: z3.BoolRef) -> bool:
    if term.ctx is not model.ctx:
        term = term.translate(model.ctx)
    return bool(z3.is_true(model.eval(term, model_completion=True)))


def holding(
    model: z3.ModelRef,
    rules: Sequence[ir.Rule],
    term: Callable[[ir.Rule], z3.BoolRef],
) -> list[ir.Rule]:
    """The rules whose term holds in the model."""
    return [r for r in rules if holds(model, term(r))]
