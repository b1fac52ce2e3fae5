"""The syntax tree of a policy file, as the parser builds it.

Nodes are frozen attrs classes with their children in tuples. The last field
of each is its `span`, kept out of equality, so two parses of the same policy
compare equal wherever the text sits in the file.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TypeAlias

import attrs

from ripl.source import Span

_span = attrs.field(eq=False, repr=False)


@attrs.frozen(order=True)
class Duration:
    """A length of time in whole seconds; never compared with a bare number."""

    seconds: int

    def __str__(self) -> str:
        rest = self.seconds
        parts = []
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            if rest >= size:
                parts.append(f"{rest // size}{unit}")
                rest %= size
        return "".join(parts) or "0s"


LiteralValue: TypeAlias = int | Decimal | str | bool | Duration


@attrs.frozen
class Ident:
    name: str
    span: Span = _span


@attrs.frozen
class Dotted:
    parts: tuple[str, ...]
    span: Span = _span

    @property
    def text(self) -> str:
        return ".".join(self.parts)


# ---- expressions -----------------------------------------------------------


@attrs.frozen
class Literal:
    value: LiteralValue
    span: Span = _span


@attrs.frozen
class Var:
    """A bare name: a label, a risk expression or (as a call target) a function."""

    name: str
    span: Span = _span


@attrs.frozen
class Root:
    """One of the request roots: principal, resource, context, delegation, action."""

    name: str
    span: Span = _span


@attrs.frozen
class GetAttr:
    obj: Expr
    attr: Ident
    span: Span = _span


@attrs.frozen
class Call:
    func: Expr
    args: tuple[Expr, ...]
    span: Span = _span


@attrs.frozen
class Not:
    operand: Expr
    span: Span = _span


@attrs.frozen
class Neg:
    operand: Expr
    span: Span = _span


@attrs.frozen
class And:
    operands: tuple[Expr, ...]
    span: Span = _span


@attrs.frozen
class Or:
    operands: tuple[Expr, ...]
    span: Span = _span


@attrs.frozen
class Compare:
    op: str
    left: Expr
    right: Expr
    span: Span = _span


@attrs.frozen
class Arith:
    op: str
    left: Expr
    right: Expr
    span: Span = _span


@attrs.frozen
class In:
    element: Expr
    container: Expr
    span: Span = _span


@attrs.frozen
class Matches:
    subject: Expr
    pattern: Literal
    span: Span = _span


@attrs.frozen
class Is:
    subject: Expr
    types: tuple[Ident, ...]
    span: Span = _span


@attrs.frozen
class Has:
    subject: Expr
    attr: Ident
    span: Span = _span


@attrs.frozen
class SetLit:
    items: tuple[Expr, ...]
    span: Span = _span


Expr: TypeAlias = (
    Literal
    | Var
    | Root
    | GetAttr
    | Call
    | Not
    | Neg
    | And
    | Or
    | Compare
    | Arith
    | In
    | Matches
    | Is
    | Has
    | SetLit
)

# ---- types and declarations ------------------------------------------------


@attrs.frozen
class NamedType:
    name: Dotted
    span: Span = _span


@attrs.frozen
class SetType:
    element: TypeExpr
    span: Span = _span


@attrs.frozen
class RecordType:
    attrs: tuple[AttrDecl, ...]
    span: Span = _span


TypeExpr: TypeAlias = NamedType | SetType | RecordType


@attrs.frozen
class AttrDecl:
    name: Ident
    optional: bool
    type: TypeExpr
    span: Span = _span


@attrs.frozen
class Annotation:
    name: Ident
    args: tuple[Literal, ...]
    span: Span = _span


@attrs.frozen
class ModuleDecl:
    name: Dotted
    span: Span = _span


@attrs.frozen
class Import:
    module: Dotted
    names: tuple[Ident, ...] | None
    span: Span = _span


@attrs.frozen
class EntityDecl:
    name: Ident
    kind: Ident | None
    owners: tuple[Ident, ...]
    attrs: tuple[AttrDecl, ...]
    annotations: tuple[Annotation, ...]
    # `scopes a, b`: the actions and groups an identity of this type may ever
    # act within; None when the declaration states none.
    scopes: tuple[Dotted, ...] | None
    span: Span = _span


@attrs.frozen
class LabelsDecl:
    name: Ident
    labels: tuple[Ident, ...]
    span: Span = _span


@attrs.frozen
class ActionItem:
    name: Ident
    children: tuple[ActionItem, ...]
    span: Span = _span


@attrs.frozen
class ActionsDecl:
    """`actions payments { refund, charge }`: the leaves are actions, the
    group name is only a group unless also declared with `action`."""

    group: Dotted
    items: tuple[ActionItem, ...]
    span: Span = _span


@attrs.frozen
class ActionDecl:
    names: tuple[Dotted, ...]
    span: Span = _span


@attrs.frozen
class ContextDecl:
    attrs: tuple[AttrDecl, ...]
    span: Span = _span


@attrs.frozen
class RiskDecl:
    name: Ident
    expr: Expr
    annotations: tuple[Annotation, ...]
    span: Span = _span


@attrs.frozen
class ObligationDecl:
    name: Ident
    type: TypeExpr
    merge: Ident
    span: Span = _span


@attrs.frozen
class RequirementsDecl:
    names: tuple[Ident, ...]
    span: Span = _span


@attrs.frozen
class OptionDecl:
    name: Ident
    value: Expr
    span: Span = _span


@attrs.frozen
class ObligationUse:
    name: Ident
    args: tuple[Expr, ...]
    span: Span = _span


EFFECTS = ("allow", "restrict", "step_up", "deny")


@attrs.frozen
class Rule:
    id: Ident
    effect: str
    requirements: tuple[Ident, ...]
    obligations: tuple[ObligationUse, ...]
    principal: tuple[Ident, ...] | None
    actions: tuple[Dotted, ...] | None
    resource: tuple[Ident, ...] | None
    when: tuple[Expr, ...]
    unless: tuple[Expr, ...]
    annotations: tuple[Annotation, ...]
    span: Span = _span


JsonValue: TypeAlias = (
    "dict[str, JsonValue] | list[JsonValue] | str | int | Decimal | bool | None"
)


@attrs.frozen
class Expectation:
    effect: Ident
    rules: tuple[Ident, ...] | None
    requirements: tuple[Ident, ...] | None
    reasons: tuple[Ident, ...] | None
    obligations: tuple[ObligationUse, ...] | None
    span: Span = _span


@attrs.frozen
class Test:
    name: str
    request_file: Literal | None
    request: JsonValue
    expect: Expectation
    span: Span = _span


Item: TypeAlias = (
    ModuleDecl
    | Import
    | EntityDecl
    | LabelsDecl
    | ActionsDecl
    | ActionDecl
    | ContextDecl
    | RiskDecl
    | ObligationDecl
    | RequirementsDecl
    | OptionDecl
    | Rule
    | Test
)


@attrs.frozen
class Comment:
    """A `#` comment; kept for the formatter, never part of the meaning."""

    text: str
    span: Span = _span


@attrs.frozen
class Module:
    """One parsed file."""

    file: str
    items: tuple[Item, ...]
    span: Span = _span
    comments: tuple[Comment, ...] = attrs.field(default=(), eq=False, repr=False)
