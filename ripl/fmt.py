"""AST → canonical policy text (`ripl fmt`).

The output parses back to an equal AST; `format_source` proves that on every
call and refuses (raising `FormatError`, file untouched) rather than return
text that means something else. Strings are re-escaped, never re-flowed, so a
literal's value is kept exactly. Comments are kept: a comment on its own line
stays before the line it preceded; a comment after code stays at the end of
that line. Blank lines between top-level declarations are kept as one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from ripl import ast
from ripl.errors import RiplError
from ripl.parse import parse_source
from ripl.source import Span

WIDTH = 88
INDENT = "    "
CONT = "        "


class FormatError(RiplError):
    """The formatter could not prove its output means the same; nothing was
    written."""


# ---- literals ------------------------------------------------------------------


def quote(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif not ch.isprintable() and ch != " ":
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def literal(value: ast.LiteralValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, Decimal):
        text = format(value, "f")
        return text if "." in text else text + ".0"
    return str(value)


def json_text(value: Any, indent: str) -> str:
    inner = indent + INDENT
    if isinstance(value, dict):
        if not value:
            return "{}"
        pairs = [f"{quote(k)}: {json_text(v, inner)}" for k, v in value.items()]
        flat = "{" + ", ".join(pairs) + "}"
        if "\n" not in flat and len(flat) + len(indent) + 12 < WIDTH:
            return flat
        return "{\n" + ",\n".join(inner + p for p in pairs) + "\n" + indent + "}"
    if isinstance(value, list):
        items = [json_text(v, inner) for v in value]
        flat = "[" + ", ".join(items) + "]"
        if "\n" not in flat and len(flat) + len(indent) < WIDTH:
            return flat
        return "[\n" + ",\n".join(inner + i for i in items) + "\n" + indent + "]"
    if value is None:
        return "null"
    return literal(value)


# ---- expressions ------------------------------------------------------------------

_LEVEL = {
    ast.Or: 1,
    ast.And: 2,
    ast.Not: 3,
    ast.Compare: 4,
    ast.In: 4,
    ast.Matches: 4,
    ast.Is: 4,
    ast.Has: 4,
    ast.Neg: 7,
    ast.GetAttr: 8,
    ast.Call: 8,
}


def _level(expr: ast.Expr) -> int:
    if isinstance(expr, ast.Arith):
        return 6 if expr.op == "*" else 5
    if isinstance(expr, ast.Literal) and isinstance(expr.value, int | Decimal):
        if not isinstance(expr.value, bool) and expr.value < 0:
            return 7
    return _LEVEL.get(type(expr), 9)


def expr_text(expr: ast.Expr, min_level: int = 0) -> str:
    text = _expr(expr)
    return f"({text})" if _level(expr) < min_level else text


def _expr(e: ast.Expr) -> str:
    if isinstance(e, ast.Literal):
        return literal(e.value)
    if isinstance(e, ast.Var | ast.Root):
        return e.name
    if isinstance(e, ast.Or):
        return " or ".join(expr_text(o, 2) for o in e.operands)
    if isinstance(e, ast.And):
        return " and ".join(expr_text(o, 3) for o in e.operands)
    if isinstance(e, ast.Not):
        return "not " + expr_text(e.operand, 3)
    if isinstance(e, ast.Neg):
        return "-" + expr_text(e.operand, 7)
    if isinstance(e, ast.Compare):
        return f"{expr_text(e.left, 5)} {e.op} {expr_text(e.right, 5)}"
    if isinstance(e, ast.In):
        return f"{expr_text(e.element, 5)} in {expr_text(e.container, 5)}"
    if isinstance(e, ast.Matches):
        return f"{expr_text(e.subject, 5)} matches {literal(e.pattern.value)}"
    if isinstance(e, ast.Is):
        return f"{expr_text(e.subject, 5)} is " + " | ".join(t.name for t in e.types)
    if isinstance(e, ast.Has):
        return f"{expr_text(e.subject, 5)} has {e.attr.name}"
    if isinstance(e, ast.Arith):
        level = _level(e)
        return f"{expr_text(e.left, level)} {e.op} {expr_text(e.right, level + 1)}"
    if isinstance(e, ast.GetAttr):
        return f"{expr_text(e.obj, 8)}.{e.attr.name}"
    if isinstance(e, ast.Call):
        return f"{expr_text(e.func, 8)}(" + ", ".join(_expr(a) for a in e.args) + ")"
    assert isinstance(e, ast.SetLit)
    return "[" + ", ".join(_expr(i) for i in e.items) + "]"


def condition_lines(keyword: str, expr: ast.Expr) -> list[str]:
    """One line if it fits, else one line per top-level `and`/`or` operand."""
    line = f"{INDENT}{keyword} {_expr(expr)}"
    if len(line) <= WIDTH or not isinstance(expr, ast.And | ast.Or):
        return [line]
    word = "and" if isinstance(expr, ast.And) else "or"
    level = 3 if isinstance(expr, ast.And) else 2
    parts = [expr_text(o, level) for o in expr.operands]
    return [f"{INDENT}{keyword} {parts[0]}"] + [f"{CONT} {word} {p}" for p in parts[1:]]


# ---- declarations ---------------------------------------------------------------


def type_text(t: ast.TypeExpr) -> str:
    if isinstance(t, ast.NamedType):
        return t.name.text
    if isinstance(t, ast.SetType):
        return f"set<{type_text(t.element)}>"
    return "{ " + ", ".join(attr_text(a) for a in t.attrs) + " }" if t.attrs else "{}"


def attr_text(a: ast.AttrDecl) -> str:
    return f"{a.name.name}{'?' if a.optional else ''}: {type_text(a.type)}"


def annotations_text(annotations: Sequence[ast.Annotation]) -> str:
    parts = []
    for a in annotations:
        args = "(" + ", ".join(literal(x.value) for x in a.args) + ")" if a.args else ""
        parts.append(f"@{a.name.name}{args}")
    line = " ".join(parts)
    return line if len(line) <= WIDTH else "\n".join(parts)


def action_item_text(item: ast.ActionItem) -> str:
    if not item.children:
        return item.name.name
    inner = ", ".join(action_item_text(c) for c in item.children)
    return f"{item.name.name} {{ {inner} }}"


def obligation_text(use: ast.ObligationUse) -> str:
    return f"{use.name.name}(" + ", ".join(_expr(a) for a in use.args) + ")"


Unit = tuple[Span | None, str]  # a line of output and the source it came from


def _block(head: str, rows: Sequence[Unit], tail: str, span: Span) -> list[Unit]:
    return [(span, head), *((s, INDENT + text + ",") for s, text in rows), (None, tail)]


def item_units(item: ast.Item, has_inner_comments: bool) -> list[Unit]:
    span = item.span
    if isinstance(item, ast.ModuleDecl):
        return [(span, f"module {item.name.text}")]
    if isinstance(item, ast.Import):
        names = f" ({', '.join(i.name for i in item.names)})" if item.names else ""
        return [(span, f"import {item.module.text}{names}")]
    if isinstance(item, ast.EntityDecl | ast.ContextDecl):
        return _entity_units(item, has_inner_comments)
    if isinstance(item, ast.LabelsDecl):
        labels = " < ".join(i.name for i in item.labels)
        return [(span, f"labels {item.name.name} {{ {labels} }}")]
    if isinstance(item, ast.ActionsDecl):
        rows = [action_item_text(i) for i in item.items]
        line = f"actions {item.group.text} {{ {', '.join(rows)} }}"
        if len(line) <= WIDTH and not has_inner_comments:
            return [(span, line)]
        return _block(
            f"actions {item.group.text} {{",
            [(i.span, text) for i, text in zip(item.items, rows, strict=True)],
            "}",
            span,
        )
    if isinstance(item, ast.ActionDecl):
        return [(span, "action " + ", ".join(d.text for d in item.names))]
    if isinstance(item, ast.RiskDecl):
        head = annotations_text(item.annotations)
        units: list[Unit] = [(item.annotations[0].span, head)] if head else []
        return [*units, (item.name.span, f"risk {item.name.name} = {_expr(item.expr)}")]
    if isinstance(item, ast.ObligationDecl):
        return [
            (
                span,
                f"obligation {item.name.name}: {type_text(item.type)} merge "
                f"{item.merge.name}",
            )
        ]
    if isinstance(item, ast.RequirementsDecl):
        return [
            (span, "requirements { " + ", ".join(i.name for i in item.names) + " }")
        ]
    if isinstance(item, ast.OptionDecl):
        return [(span, f"option {item.name.name} = {_expr(item.value)}")]
    if isinstance(item, ast.Rule):
        return _rule_units(item)
    assert isinstance(item, ast.Test)
    return _test_units(item)


def _entity_units(item: ast.EntityDecl | ast.ContextDecl, inner: bool) -> list[Unit]:
    if isinstance(item, ast.ContextDecl):
        head, units = "context", []
    else:
        head = f"entity {item.name.name}"
        if item.kind:
            head += f": {item.kind.name}"
        if item.owners:
            head += " owner " + " | ".join(o.name for o in item.owners)
        if item.scopes is not None:
            head += " scopes " + ", ".join(d.text for d in item.scopes)
        notes = annotations_text(item.annotations)
        units = [(item.annotations[0].span, notes)] if notes else []
    if not item.attrs:
        return [
            *units,
            (item.span, head + (" {}" if isinstance(item, ast.ContextDecl) else "")),
        ]
    line = head + " { " + ", ".join(attr_text(a) for a in item.attrs) + " }"
    if len(line) <= WIDTH and not inner:
        return [*units, (item.span, line)]
    rows = [(a.span, attr_text(a)) for a in item.attrs]
    return [*units, *_block(head + " {", rows, "}", item.span)]


def _rule_units(rule: ast.Rule) -> list[Unit]:
    units: list[Unit] = []
    notes = annotations_text(rule.annotations)
    if notes:
        units.append((rule.annotations[0].span, notes))
    head = f"{rule.effect} {rule.id.name}"
    if rule.requirements:
        head += " requires " + ", ".join(i.name for i in rule.requirements)
    if rule.obligations:
        head += " with " + ", ".join(obligation_text(o) for o in rule.obligations)
    units.append((rule.id.span, head + ":"))
    if rule.principal is not None:
        units.append(
            (
                rule.principal[0].span,
                f"{INDENT}principal is " + " | ".join(i.name for i in rule.principal),
            )
        )
    if rule.actions is not None:
        units.append(
            (
                rule.actions[0].span,
                f"{INDENT}action " + ", ".join(d.text for d in rule.actions),
            )
        )
    if rule.resource is not None:
        units.append(
            (
                rule.resource[0].span,
                f"{INDENT}resource is " + " | ".join(i.name for i in rule.resource),
            )
        )
    for keyword, exprs in (("when", rule.when), ("unless", rule.unless)):
        for expr in exprs:
            lines = condition_lines(keyword, expr)
            units.append((expr.span, lines[0]))
            units.extend((None, line) for line in lines[1:])
    return units


def _test_units(test: ast.Test) -> list[Unit]:
    units: list[Unit] = [(test.span, f"test {quote(test.name)}:")]
    if test.request_file is not None:
        units.append(
            (
                test.request_file.span,
                f"{INDENT}request {quote(str(test.request_file.value))}",
            )
        )
    else:
        units.append((None, f"{INDENT}request {json_text(test.request, INDENT)}"))
    exp = test.expect
    line = f"{INDENT}expect {exp.effect.name}"
    for word, values in (
        ("by", exp.rules),
        ("requires", exp.requirements),
        ("because", exp.reasons),
    ):
        if values is not None:
            line += f" {word} " + ", ".join(i.name for i in values)
    if exp.obligations is not None:
        line += " with " + ", ".join(obligation_text(o) for o in exp.obligations)
    units.append((exp.span, line))
    return units


# ---- the whole file ---------------------------------------------------------------


def _blank_between(text: str, end: int, start: int) -> bool:
    between = text[end:start].split("\n")
    return any(not line.strip() for line in between[1:-1])


def format_module(module: ast.Module, text: str) -> str:
    comments = sorted(module.comments, key=lambda c: c.span.start)
    pending = list(comments)
    out: list[str] = []

    def flush_before(offset: int, indent: str) -> None:
        while pending and pending[0].span.start < offset:
            comment = pending.pop(0)
            out.append(indent + comment.text.rstrip())
            following = pending[0].span.start if pending else offset
            following = min(following, offset)
            if _blank_between(text, comment.span.end, following):
                out.append("")

    def trailing(source: Span | None) -> str:
        if source is None or not pending:
            return ""
        first = pending[0]
        line_end = text.find("\n", source.start)
        line_end = len(text) if line_end < 0 else line_end
        if first.span.start < line_end and first.span.start >= source.start:
            return "  " + pending.pop(0).text.rstrip()
        return ""

    prev_end: int | None = None
    for item in module.items:
        first_comment = pending[0].span.start if pending else item.span.start
        start = min(first_comment, item.span.start)
        if prev_end is not None and _blank_between(text, prev_end, start):
            out.append("")
        inner = any(item.span.start <= c.span.start < item.span.end for c in pending)
        for source, line in item_units(item, inner):
            indent = line[: len(line) - len(line.lstrip(" "))]
            if source is not None:
                flush_before(source.start, indent)
            out.append(line + trailing(source))
        # Comments inside the item that no line claimed follow it, where the
        # next run reads them as comments between items: the same again.
        while pending and pending[0].span.start < item.span.end:
            out.append(pending.pop(0).text.rstrip())
        prev_end = item.span.end
    if pending and out:
        first = pending[0].span.start
        if prev_end is not None and _blank_between(text, prev_end, first):
            out.append("")
    out.extend(c.text.rstrip() for c in pending)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n" if out else ""


def format_source(text: str, file: str = "<text>") -> str:
    """Format one file's text. Raises `ParseError` for a file that does not
    parse and `FormatError` if the result would not mean the same."""
    module = parse_source(text, file)
    result = format_module(module, text)
    again = parse_source(result, file)
    if again.items != module.items:
        raise FormatError(f"{file}: formatting would change the policy; left as is")
    if [c.text.rstrip() for c in again.comments] != [
        c.text.rstrip() for c in module.comments
    ]:
        raise FormatError(f"{file}: formatting would lose a comment; left as is")
    return result


def is_formatted(text: str, formatted: str) -> bool:
    """A missing or doubled final newline alone does not count as a change."""
    return text.replace("\r\n", "\n").rstrip("\n") == formatted.rstrip("\n")


def write_atomic(path: Path, text: str) -> None:
    """Replace a file's content all at once: a crash leaves old or new, never
    a torn file. Keeps the file's permissions; a symbolic link stays a link
    and its target is rewritten."""
    path = path.resolve()
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def policy_files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(path.rglob("*.ripl"))
        else:
            yield path
