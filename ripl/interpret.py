"""The reference interpreter: the definition of what a policy means.

It walks the typed IR of every rule for every request, with no indexing and
no caching, in the three-valued logic of DESIGN.md: every expression yields a
value or an error, and `and`/`or` give the same result in any operand order.
The compiled evaluator must agree with it on every input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from ripl import ir, ops
from ripl.ast import Duration
from ripl.decision import Match, Outcome
from ripl.delegation import Facts
from ripl.request import Entity, Err, Parsed

Result: TypeAlias = "ir.Value | Err"


class Scope:
    """What one evaluation reads: the request, and the chain's facts."""

    def __init__(self, request: Parsed, facts: Facts) -> None:
        self.request = request
        self.facts = facts


def evaluate(expr: ir.Expr, scope: Scope) -> Result:
    method: Callable[[ir.Expr, Scope], Result] = _DISPATCH[type(expr)]
    return method(expr, scope)


def _const(expr: ir.Const, scope: Scope) -> Result:
    return expr.value


def _root(expr: ir.RequestRoot, scope: Scope) -> Result:
    request = scope.request
    if expr.name == "principal":
        return request.principal.ref
    if expr.name == "resource":
        return request.resource.ref
    return request.context


def _action(expr: ir.ActionValue, scope: Scope) -> Result:
    return scope.request.action


def _entity(value: Result, scope: Scope) -> Entity | Err:
    if isinstance(value, Err):
        return value
    if not isinstance(value, ir.EntityRef):
        return Err(f"expected an entity, got {ops.describe(value)}")
    found = scope.request.entity(value)
    if found is None:
        return Err(f"entity `{value}` is not among the request's entities")
    return found


def _getattr(expr: ir.GetAttr, scope: Scope) -> Result:
    obj = evaluate(expr.obj, scope)
    if isinstance(obj, Err):
        return obj
    if isinstance(obj, ir.EntityRef):
        entity = _entity(obj, scope)
        if isinstance(entity, Err):
            return entity
        fields: Mapping[str, Result] = entity.attrs
        where = f"`{obj}`"
    elif isinstance(obj, Mapping):
        fields = obj
        where = "a record"
    else:
        return Err(f"{ops.describe(obj)} has no attribute `{expr.name}`")
    if expr.name not in fields:
        return Err(f"`{path_text(expr)}` is missing (on {where})")
    value = fields[expr.name]
    if isinstance(value, Err):
        return Err(f"`{path_text(expr)}`: {value.message}")
    return value


def path_text(expr: ir.Expr) -> str:
    """How the author wrote an attribute path, for messages."""
    if isinstance(expr, ir.GetAttr):
        return f"{path_text(expr.obj)}.{expr.name}"
    if isinstance(expr, ir.Owner):
        return f"{path_text(expr.obj)}.owner"
    if isinstance(expr, ir.RequestRoot):
        return expr.name
    if isinstance(expr, ir.DelegationFact):
        return f"delegation.{expr.fact}"
    return "value"


def _owner(expr: ir.Owner, scope: Scope) -> Result:
    entity = _entity(evaluate(expr.obj, scope), scope)
    if isinstance(entity, Err):
        return entity
    if entity.owner is None:
        return Err(f"`{entity.ref}` has no owner in the request")
    return entity.owner


def _entity_id(expr: ir.EntityId, scope: Scope) -> Result:
    value = evaluate(expr.obj, scope)
    if isinstance(value, Err):
        return value
    if not isinstance(value, ir.EntityRef):
        return Err(f"{ops.describe(value)} has no id")
    return value.id


def _has(expr: ir.Has, scope: Scope) -> Result:
    obj = evaluate(expr.obj, scope)
    if isinstance(obj, Err):
        return obj
    if isinstance(obj, ir.EntityRef):
        entity = _entity(obj, scope)
        if isinstance(entity, Err):
            return entity
        value = entity.attrs.get(expr.name)
    elif isinstance(obj, Mapping):
        value = obj.get(expr.name)
    else:
        return Err(f"{ops.describe(obj)} has no attributes")
    # A present value of the wrong type is still "there"; reading it errs.
    return value is not None


def _is(expr: ir.Is, scope: Scope) -> Result:
    value = evaluate(expr.obj, scope)
    if isinstance(value, Err):
        return value
    if not isinstance(value, ir.EntityRef):
        return Err(f"`is` needs an entity, got {ops.describe(value)}")
    return value.type in expr.types


def _binary(op: str, left: Result, right: Result) -> Result:
    if isinstance(left, Err):
        return left
    if isinstance(right, Err):
        return right
    try:
        return ops.compare(op, left, right)
    except ops.OpError as exc:
        return Err(str(exc))


def _compare(expr: ir.Compare, scope: Scope) -> Result:
    return _binary(expr.op, evaluate(expr.left, scope), evaluate(expr.right, scope))


def _in(expr: ir.In, scope: Scope) -> Result:
    element = evaluate(expr.element, scope)
    container = evaluate(expr.container, scope)
    if isinstance(element, Err):
        return element
    if isinstance(container, Err):
        return container
    try:
        return ops.contains(container, element)
    except ops.OpError as exc:
        return Err(str(exc))


def _action_in(expr: ir.ActionIn, scope: Scope) -> Result:
    action = scope.request.action
    return any(action == a or action.startswith(a + ".") for a in expr.actions)


def _set(expr: ir.SetLit, scope: Scope) -> Result:
    values = []
    for item in expr.items:
        value = evaluate(item, scope)
        if isinstance(value, Err):
            return value
        values.append(value)
    return frozenset(values)


def _arith(expr: ir.Arith, scope: Scope) -> Result:
    left = evaluate(expr.left, scope)
    right = evaluate(expr.right, scope)
    if isinstance(left, Err):
        return left
    if isinstance(right, Err):
        return right
    try:
        return ops.arith(expr.op, left, right)
    except ops.OpError as exc:
        return Err(str(exc))


def _neg(expr: ir.Neg, scope: Scope) -> Result:
    value = evaluate(expr.operand, scope)
    if isinstance(value, Err):
        return value
    try:
        return ops.negate(value)
    except ops.OpError as exc:
        return Err(str(exc))


def truth(value: Result) -> bool | Err:
    if isinstance(value, Err):
        return value
    if not isinstance(value, bool):
        return Err(f"expected a bool, got {ops.describe(value)}")
    return value


def _not(expr: ir.Not, scope: Scope) -> Result:
    value = truth(evaluate(expr.operand, scope))
    return value if isinstance(value, Err) else not value


def _and(expr: ir.And, scope: Scope) -> Result:
    error: Err | None = None
    for operand in expr.operands:
        value = truth(evaluate(operand, scope))
        if value is False:
            return False
        if isinstance(value, Err) and error is None:
            error = value
    return error if error is not None else True


def _or(expr: ir.Or, scope: Scope) -> Result:
    error: Err | None = None
    for operand in expr.operands:
        value = truth(evaluate(operand, scope))
        if value is True:
            return True
        if isinstance(value, Err) and error is None:
            error = value
    return error if error is not None else False


def _matches(expr: ir.Matches, scope: Scope) -> Result:
    value = evaluate(expr.subject, scope)
    if isinstance(value, Err):
        return value
    if not isinstance(value, str):
        return Err(f"`matches` needs a string, got {ops.describe(value)}")
    if _DOT_SEGMENT.search(value):
        # `/workspace/../etc` is not under `/workspace`, but no pattern can see
        # that; a path that is not resolved is an error, which fails closed
        # under `not` and in deny rules alike.
        return Err(f"path `{value}` has `.` or `..` segments; resolve it first")
    return expr.pattern.match(value)


_DOT_SEGMENT = re.compile(r"(?:^|/)\.\.?(?:/|$)")


def _grants(expr: ir.Grants, scope: Scope) -> Result:
    return scope.facts.grants(expr.scope)


def _via(expr: ir.Via, scope: Scope) -> Result:
    return scope.facts.via(expr.types)


def _fact(expr: ir.DelegationFact, scope: Scope) -> Result:
    facts = scope.facts
    if expr.fact == "depth":
        return facts.depth
    if expr.fact == "root":
        return (
            facts.root
            if facts.root is not None
            else Err("the request has no delegation chain, so it has no root")
        )
    if expr.fact == "purpose":
        return (
            facts.purpose
            if facts.purpose is not None
            else Err("the delegation chain states no purpose")
        )
    assert expr.arg is not None
    if expr.arg not in facts.limits:
        return Err(f"the delegation chain sets no limit `{expr.arg}`")
    return facts.limits[expr.arg]


def _risk(expr: ir.RiskRef, scope: Scope) -> Result:
    return evaluate(expr.expr, scope)


_DISPATCH: dict[type, Callable[[Any, Scope], Result]] = {
    ir.Const: _const,
    ir.RequestRoot: _root,
    ir.ActionValue: _action,
    ir.GetAttr: _getattr,
    ir.Owner: _owner,
    ir.EntityId: _entity_id,
    ir.Has: _has,
    ir.Is: _is,
    ir.Compare: _compare,
    ir.In: _in,
    ir.ActionIn: _action_in,
    ir.SetLit: _set,
    ir.Arith: _arith,
    ir.Neg: _neg,
    ir.Not: _not,
    ir.And: _and,
    ir.Or: _or,
    ir.Matches: _matches,
    ir.Grants: _grants,
    ir.Via: _via,
    ir.DelegationFact: _fact,
    ir.RiskRef: _risk,
}


def target_holds(rule: ir.Rule, request: Parsed) -> bool:
    if rule.actions is not None and request.action not in rule.actions:
        return False
    if rule.principal_types is not None and (
        request.principal.type not in rule.principal_types
    ):
        return False
    return rule.resource_types is None or request.resource.type in rule.resource_types


def obligation_values(rule: ir.Rule, scope: Scope) -> dict[str, ir.Value] | Err:
    """The obligations one matching restrict rule asks for, merged within it."""
    out: dict[str, ir.Value] = {}
    for use in rule.obligations:
        values = []
        for arg in use.args:
            value = evaluate(arg, scope)
            if isinstance(value, Err):
                return Err(f"obligation `{use.obligation.name}`: {value.message}")
            values.append(value)
        merged = merge_obligation(use.obligation, values)
        name = use.obligation.name
        out[name] = (
            merged
            if name not in out
            else merge_obligation(use.obligation, [out[name], merged])
        )
    return out


def merge_obligation(
    definition: ir.ObligationDef, values: Sequence[ir.Value]
) -> ir.Value:
    if definition.merge == "union":
        items: set[ir.Value] = set()
        for value in values:
            items |= value if isinstance(value, frozenset) else {value}
        return frozenset(items)
    return min(values, key=_min_key)


def _min_key(value: ir.Value) -> Any:
    return value.seconds if isinstance(value, Duration) else value


def evaluate_rule(rule: ir.Rule, scope: Scope) -> Match | Err | None:
    """A match, an error, or None when the rule does not apply."""
    if rule.condition is not None:
        value = truth(evaluate(rule.condition, scope))
        if isinstance(value, Err):
            return value
        if not value:
            return None
    obligations: dict[str, ir.Value] = {}
    if rule.obligations:
        found = obligation_values(rule, scope)
        if isinstance(found, Err):
            return found
        obligations = found
    return Match(rule, obligations)


class Interpreter:
    """Evaluates every rule against every request, in no particular order."""

    def __init__(self, policy: ir.PolicySet) -> None:
        self.policy = policy

    def outcome(self, request: Parsed, facts: Facts) -> Outcome:
        scope = Scope(request, facts)
        matches: list[Match] = []
        errors: list[tuple[ir.Rule, str]] = []
        for rule in self.policy.rules:
            if not target_holds(rule, request):
                continue
            result = evaluate_rule(rule, scope)
            if isinstance(result, Err):
                errors.append((rule, result.message))
            elif result is not None:
                matches.append(result)
        return Outcome(tuple(matches), tuple(errors))
