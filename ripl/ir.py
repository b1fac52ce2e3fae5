"""The typed, resolved form of a policy set, which every later stage reads.

Names are bound, types known, targets expanded to concrete sets of entity
types and actions, and constant sub-expressions folded. Runtime values are
defined here too, so the checker, the evaluators and the analyzer agree on
what a value is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, TypeAlias

import attrs

from ripl.ast import Duration
from ripl.source import Span


def _hidden() -> Span:
    """A span kept out of equality, so equal meaning compares equal."""
    return attrs.field(eq=False, repr=False)  # type: ignore[no-any-return]


KINDS = ("human", "agent", "service", "tool", "connector")
NON_HUMAN = frozenset(KINDS[1:])
EFFECT_ORDER = {"allow": 0, "restrict": 1, "step_up": 2, "deny": 3}

# ---- runtime values ---------------------------------------------------------


@attrs.frozen(cache_hash=True)
class Label:
    """A value of a declared label order; only comparable within its order."""

    order: str
    rank: int
    name: str

    def __str__(self) -> str:
        return self.name


@attrs.frozen(cache_hash=True)  # a key of many sets and dicts per decision
class EntityRef:
    type: str
    id: str

    def __str__(self) -> str:
        return f"{self.type}::{self.id}"


Value: TypeAlias = (
    "bool | int | Decimal | str | Duration | Label | EntityRef"
    " | frozenset[Value] | Mapping[str, Any]"
)

# ---- types ------------------------------------------------------------------


@attrs.frozen(cache_hash=True)
class Prim:
    name: str  # bool, int, decimal, string, duration

    def __str__(self) -> str:
        return self.name


@attrs.frozen(cache_hash=True)
class LabelType:
    order: str

    def __str__(self) -> str:
        return self.order


@attrs.frozen(cache_hash=True)
class SetType:
    element: Type | None  # None: the empty set literal, a set of anything

    def __str__(self) -> str:
        return f"set<{self.element or 'any'}>"


@attrs.frozen(cache_hash=True)
class AttrSpec:
    type: Type
    optional: bool


@attrs.frozen(cache_hash=True)
class RecordType:
    fields: tuple[tuple[str, AttrSpec], ...]

    def get(self, name: str) -> AttrSpec | None:
        return dict(self.fields).get(name)

    def __str__(self) -> str:
        return "{" + ", ".join(f"{n}: {s.type}" for n, s in self.fields) + "}"


@attrs.frozen(cache_hash=True)
class EntityType:
    """One or more entity types, as the static type of an entity reference."""

    names: frozenset[str]

    def __str__(self) -> str:
        return " | ".join(sorted(self.names))


@attrs.frozen(cache_hash=True)
class ActionType:
    def __str__(self) -> str:
        return "action"


Type: TypeAlias = Prim | LabelType | SetType | RecordType | EntityType | ActionType

BOOL = Prim("bool")
INT = Prim("int")
DECIMAL = Prim("decimal")
STRING = Prim("string")
DURATION = Prim("duration")
ACTION = ActionType()
PRIMS = {p.name: p for p in (BOOL, INT, DECIMAL, STRING, DURATION)}


def is_numeric(t: Type) -> bool:
    return t in (INT, DECIMAL)


# ---- schema -----------------------------------------------------------------


@attrs.frozen(cache_hash=True)
class EntityDef:
    name: str
    kind: str | None  # None for a plain resource type
    owners: frozenset[str]
    attrs: RecordType
    # The declared ceiling: actions and groups this identity may act within
    # (each covers the actions under it); None when none is declared.
    scopes: frozenset[str] | None
    span: Span = _hidden()

    def may_act(self, action: str) -> bool:
        """Whether `action` lies within the declared scopes (or none are)."""
        scopes = self.scopes
        if scopes is None:
            return True
        if action in scopes:
            return True
        return any(action.startswith(scope + ".") for scope in scopes)


@attrs.frozen(cache_hash=True)
class LabelOrder:
    name: str
    labels: tuple[str, ...]
    span: Span = _hidden()

    def label(self, name: str) -> Label | None:
        if name in self.labels:
            return Label(self.name, self.labels.index(name), name)
        return None


@attrs.frozen(cache_hash=True)
class ObligationDef:
    name: str
    type: Type
    merge: str  # "union" or "min"
    span: Span = _hidden()


# ---- expressions --------------------------------------------------------------


@attrs.frozen(cache_hash=True)
class Const:
    value: Value
    type: Type


@attrs.frozen(cache_hash=True)
class RequestRoot:
    """`principal`, `resource` or `context`."""

    name: str
    type: Type


@attrs.frozen(cache_hash=True)
class ActionValue:
    """The requested action."""

    type: Type = ACTION


@attrs.frozen(cache_hash=True)
class GetAttr:
    obj: Expr
    name: str
    type: Type


@attrs.frozen(cache_hash=True)
class Owner:
    """`x.owner` of a non-human entity."""

    obj: Expr
    type: Type


@attrs.frozen(cache_hash=True)
class EntityId:
    obj: Expr
    type: Type = STRING


@attrs.frozen(cache_hash=True)
class Has:
    obj: Expr
    name: str
    type: Type = BOOL


@attrs.frozen(cache_hash=True)
class Is:
    obj: Expr
    types: frozenset[str]
    type: Type = BOOL


@attrs.frozen(cache_hash=True)
class Compare:
    op: str
    left: Expr
    right: Expr
    type: Type = BOOL


@attrs.frozen(cache_hash=True)
class In:
    element: Expr
    container: Expr
    type: Type = BOOL


@attrs.frozen(cache_hash=True)
class ActionIn:
    """The requested action lies under (or is) one of these declared names."""

    actions: frozenset[str]
    type: Type = BOOL


@attrs.frozen(cache_hash=True)
class SetLit:
    items: tuple[Expr, ...]
    type: Type


@attrs.frozen(cache_hash=True)
class Arith:
    op: str
    left: Expr
    right: Expr
    type: Type


@attrs.frozen(cache_hash=True)
class Neg:
    operand: Expr
    type: Type


@attrs.frozen(cache_hash=True)
class Not:
    operand: Expr
    type: Type = BOOL


@attrs.frozen(cache_hash=True)
class And:
    operands: tuple[Expr, ...]
    type: Type = BOOL


@attrs.frozen(cache_hash=True)
class Or:
    operands: tuple[Expr, ...]
    type: Type = BOOL


@attrs.frozen(cache_hash=True)
class PathPattern:
    """A `matches` pattern: `/`-separated segments; `*` and `{name}` match one
    segment, a final `**` any number. Always anchored at both ends."""

    source: str
    segments: tuple[str, ...]

    def match(self, path: str) -> bool:
        parts = path.split("/")
        pattern = self.segments
        if pattern and pattern[-1] == "**":
            head = pattern[:-1]
            if len(parts) < len(head):
                return False
            return all(_segment(p, s) for p, s in zip(head, parts, strict=False))
        if len(parts) != len(pattern):
            return False
        return all(_segment(p, s) for p, s in zip(pattern, parts, strict=True))


def _segment(pattern: str, part: str) -> bool:
    if pattern == "*" or (pattern.startswith("{") and pattern.endswith("}")):
        return part != ""
    return pattern == part


PLACEHOLDER_RE = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_]*\}$")


@attrs.frozen(cache_hash=True)
class Matches:
    subject: Expr
    pattern: PathPattern
    type: Type = BOOL


@attrs.frozen(cache_hash=True)
class Grants:
    """`delegation.grants(scope)`: every link of the chain covers the scope."""

    scope: str
    type: Type = BOOL


@attrs.frozen(cache_hash=True)
class Via:
    """`delegation.via(T)`: some identity on the chain is of one of the types."""

    types: frozenset[str]
    type: Type = BOOL


@attrs.frozen(cache_hash=True)
class DelegationFact:
    """`delegation.depth`, `.purpose`, `.root`, or `.limit(name)`."""

    fact: str
    type: Type
    arg: str | None = None


@attrs.frozen(cache_hash=True)
class RiskRef:
    name: str
    expr: Expr
    type: Type


Expr: TypeAlias = (
    Const
    | RequestRoot
    | ActionValue
    | GetAttr
    | Owner
    | EntityId
    | Has
    | Is
    | Compare
    | In
    | ActionIn
    | SetLit
    | Arith
    | Neg
    | Not
    | And
    | Or
    | Matches
    | Grants
    | Via
    | DelegationFact
    | RiskRef
)


def children(node: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of a node, a risk's expression included."""
    if isinstance(node, GetAttr | Owner | EntityId | Has | Is):
        return (node.obj,)
    if isinstance(node, Compare | Arith):
        return (node.left, node.right)
    if isinstance(node, In):
        return (node.element, node.container)
    if isinstance(node, SetLit):
        return node.items
    if isinstance(node, Neg | Not):
        return (node.operand,)
    if isinstance(node, And | Or):
        return node.operands
    if isinstance(node, Matches):
        return (node.subject,)
    if isinstance(node, RiskRef):
        return (node.expr,)
    return ()


def walk(expr: Expr | None) -> Iterator[Expr]:
    """Every node of an expression, risks inlined; with an explicit stack."""
    if expr is None:
        return
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(children(node))


# ---- rules and the policy set -----------------------------------------------


@attrs.frozen(cache_hash=True)
class ObligationArg:
    obligation: ObligationDef
    args: tuple[Expr, ...]


@attrs.frozen(cache_hash=True)
class Rule:
    """A checked rule. `None` targets match anything; a missing condition is
    true. The condition already folds `when` and `not unless` together."""

    id: str
    effect: str
    principal_types: frozenset[str] | None
    actions: frozenset[str] | None
    resource_types: frozenset[str] | None
    condition: Expr | None
    obligations: tuple[ObligationArg, ...]
    requirements: tuple[str, ...]
    annotations: tuple[tuple[str, tuple[object, ...]], ...]
    module: str
    span: Span = _hidden()


@attrs.frozen(cache_hash=True)
class Expect:
    effect: str
    rules: frozenset[str] | None
    requirements: frozenset[str] | None
    reasons: frozenset[str] | None
    obligations: tuple[tuple[str, tuple[Expr, ...]], ...] | None


@attrs.frozen(cache_hash=True)
class InlineTest:
    name: str
    request: object  # the request mapping, or None when read from a file
    request_file: str | None
    expect: Expect
    span: Span = _hidden()


@attrs.frozen(cache_hash=True)
class Schema:
    entities: Mapping[str, EntityDef]
    actions: frozenset[str]  # every declared action
    groups: frozenset[str]  # every declared action and every prefix of one
    labels: Mapping[str, LabelOrder]
    context: RecordType
    obligations: Mapping[str, ObligationDef]
    requirements: frozenset[str]
    # The types that declare scopes (derived, so a decision asks one question
    # when none does).
    ceilings: frozenset[str] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        declared = frozenset(
            name for name, entity in self.entities.items() if entity.scopes is not None
        )
        object.__setattr__(self, "ceilings", declared)


@attrs.frozen(cache_hash=True)
class PolicySet:
    schema: Schema
    rules: tuple[Rule, ...]
    risks: Mapping[str, RiskRef]
    tests: tuple[InlineTest, ...]
    options: Mapping[str, Value]
    sources: Mapping[str, str] = attrs.field(eq=False, repr=False)
    policy_hash: str = ""

    def rule(self, rule_id: str) -> Rule | None:
        for r in self.rules:
            if r.id == rule_id:
                return r
        return None
