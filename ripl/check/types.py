"""Type relations, path patterns and constant folding: pure functions of the
IR that the checker and later stages share.
"""

from __future__ import annotations

from ripl import ast, ir, ops
from ripl.check.base import abandon
from ripl.source import Span

# ---- type relations -------------------------------------------------------------


def comparable(a: ir.Type, b: ir.Type) -> bool:
    if ir.is_numeric(a) and ir.is_numeric(b):
        return True
    if isinstance(a, ir.EntityType) and isinstance(b, ir.EntityType):
        return True
    if isinstance(a, ir.SetType) and isinstance(b, ir.SetType):
        if a.element is None or b.element is None:
            return True
        return comparable(a.element, b.element)
    return a == b


def mismatch_hint(a: ir.Type, b: ir.Type) -> str | None:
    pair = {type(a), type(b)}
    if ir.LabelType in pair and ir.STRING in (a, b):
        return "write the label as a name, without quotes"
    if ir.ActionType in pair and ir.STRING in (a, b):
        return "write the action as a name, without quotes"
    if ir.BOOL in (a, b) and (ir.is_numeric(a) or ir.is_numeric(b)):
        return "a bool never compares with a number"
    if ir.STRING in (a, b) and (ir.is_numeric(a) or ir.is_numeric(b)):
        return (
            "strings and numbers never compare; declare the attribute's type to match"
        )
    return None


def path_pattern(lit: ast.Literal) -> ir.PathPattern:
    text = str(lit.value)
    segments = tuple(text.split("/"))
    offset = 1
    for i, seg in enumerate(segments):
        col = lit.span.column + offset
        span = Span(
            lit.span.file,
            lit.span.start + offset,
            lit.span.start + offset + len(seg),
            lit.span.line,
            col,
            lit.span.line,
            col + len(seg),
        )
        if "{" in seg or "}" in seg:
            if seg == "{}":
                abandon(
                    "empty placeholder name",
                    span,
                    "name the segment, like `{id}`",
                    "pattern",
                )
            if not ir.PLACEHOLDER_RE.match(seg):
                where = seg.find("{")
                if where >= 0 and "}" not in seg[where:]:
                    abandon(
                        "unclosed placeholder",
                        span,
                        "close it with `}`; a placeholder is a whole segment, "
                        "like `{id}`",
                        "pattern",
                    )
                abandon(
                    "a placeholder must be a whole segment, like `{id}`",
                    span,
                    code="pattern",
                )
        if "**" in seg and (seg != "**" or i != len(segments) - 1):
            abandon("`**` is only allowed as the last segment", span, code="pattern")
        if "*" in seg and seg not in ("*", "**"):
            abandon(
                "`*` must be a whole segment",
                span,
                "`*` matches exactly one segment",
                "pattern",
            )
        offset += len(seg) + 1
    return ir.PathPattern(text, segments)


# ---- constant folding -------------------------------------------------------------


def fold(expr: ir.Expr) -> ir.Expr:
    """Fold what is constant, following the three-valued rules exactly: a
    sub-expression that would err at run time is left alone."""
    if isinstance(expr, ir.And | ir.Or):
        absorbing = isinstance(expr, ir.Or)
        kept: list[ir.Expr] = []
        for op in expr.operands:
            inner = op.operands if isinstance(op, type(expr)) else (op,)
            for x in inner:
                if isinstance(x, ir.Const):
                    if x.value is absorbing:
                        return ir.Const(absorbing, ir.BOOL)
                    continue
                kept.append(x)
        if not kept:
            return ir.Const(not absorbing, ir.BOOL)
        if len(kept) == 1:
            return kept[0]
        return type(expr)(tuple(kept))
    if isinstance(expr, ir.Not) and isinstance(expr.operand, ir.Const):
        return ir.Const(not expr.operand.value, ir.BOOL)
    try:
        if (
            isinstance(expr, ir.Compare)
            and isinstance(expr.left, ir.Const)
            and (isinstance(expr.right, ir.Const))
        ):
            return ir.Const(
                ops.compare(expr.op, expr.left.value, expr.right.value), ir.BOOL
            )
        if (
            isinstance(expr, ir.Arith)
            and isinstance(expr.left, ir.Const)
            and (isinstance(expr.right, ir.Const))
        ):
            return ir.Const(
                ops.arith(expr.op, expr.left.value, expr.right.value), expr.type
            )
        if isinstance(expr, ir.Neg) and isinstance(expr.operand, ir.Const):
            return ir.Const(ops.negate(expr.operand.value), expr.type)
        if isinstance(expr, ir.SetLit) and all(
            isinstance(i, ir.Const) for i in expr.items
        ):
            values = frozenset(i.value for i in expr.items)  # type: ignore[union-attr]
            return ir.Const(values, expr.type)
        if (
            isinstance(expr, ir.In)
            and isinstance(expr.element, ir.Const)
            and (isinstance(expr.container, ir.Const))
        ):
            return ir.Const(
                ops.contains(expr.container.value, expr.element.value), ir.BOOL
            )
    except ops.OpError:
        return expr
    return expr
