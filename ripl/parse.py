"""Policy text → AST. The only module that imports lark.

Lark's LALR parser runs with an inline transformer, so AST nodes are built
during the parse and no parse tree is ever walked recursively; nesting depth
is then measured with an explicit stack. Every lark error is re-raised as a
`ParseError` with a span, in the words of the language.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
import threading
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import cachetools
import lark
from lark import Token, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)
from lark.tree import Meta
from lark.visitors import Transformer_NonRecursive

from ripl import ast
from ripl.errors import Diagnostic, ParseError
from ripl.source import Span, span_at

log = logging.getLogger(__name__)

MAX_NESTING = 100
"""Deepest expression nesting accepted; realistic policies stay far below."""

KEYWORDS = (
    "module import entity owner set labels actions action context risk "
    "obligation merge requirements option allow deny step_up restrict requires "
    "with principal resource delegation is in has matches and or not true false "
    "when unless test request expect by because null"
).split()


def data_dir(name: str) -> Path:
    """The grammar or stdlib folder, from an installed wheel or a checkout."""
    packaged = resources.files("ripl") / "_data" / name
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / name


@cache
def _grammar_text() -> str:
    return (data_dir("grammar") / "ripl.lark").read_text(encoding="utf-8")


# ---- literals ---------------------------------------------------------------

_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "0": "\0"}
_ESCAPE_RE = re.compile(r"\\(u\{[0-9A-Fa-f]{1,6}\}|u[0-9A-Fa-f]{4}|[\s\S])")
_DURATION_RE = re.compile(r"([0-9]+)([dhms])")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def decode_string(token: Token, file: str) -> str:
    """Decode a string token's escapes; an unknown escape is an error at it."""
    body = str(token)[1:-1]

    def replace(match: re.Match[str]) -> str:
        esc = match.group(1)
        if esc in _ESCAPES:
            return _ESCAPES[esc]
        digits = esc.strip("u{}")
        if esc.startswith("u") and digits and len(digits) <= 6:
            code = int(digits, 16)
            if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
                return chr(code)
        offset = (token.start_pos or 0) + 1 + match.start()
        before = body[: match.start()]
        line = (token.line or 1) + before.count("\n")
        if "\n" in before:
            column = len(before) - before.rfind("\n")
        else:
            column = (token.column or 1) + 1 + match.start()
        span = Span(
            file,
            offset,
            offset + len(match.group(0)),
            line,
            column,
            line,
            column + len(match.group(0)),
        )
        raise _Fail(
            "escape",
            f"unknown escape `\\{esc}` in string",
            span,
            'use one of \\" \\\\ \\n \\t \\r \\0 \\u{XXXX}',
        )

    return _ESCAPE_RE.sub(replace, body)


def parse_duration(text: str) -> ast.Duration:
    return ast.Duration(
        sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_RE.findall(text))
    )


class _Fail(Exception):
    """Raised inside transformer callbacks; turned into a ParseError."""

    def __init__(self, code: str, message: str, span: Span, hint: str | None) -> None:
        super().__init__(message)
        self.diagnostic = Diagnostic(code, message, span, hint=hint)


# ---- the transformer --------------------------------------------------------

_NULL = object()

Children = list[Any]


class _Builder(Transformer_NonRecursive):  # type: ignore[type-arg]
    """Grammar rule name → AST node; walks the parse tree with its own stack."""

    def __init__(self, file: str) -> None:
        super().__init__()
        self.file = file

    def span(self, meta: Meta) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.file, 0, 0, 1, 1, 1, 1)
        return Span(
            self.file,
            meta.start_pos,
            meta.end_pos,
            meta.line,
            meta.column,
            meta.end_line,
            meta.end_column,
        )

    def tspan(self, tok: Token) -> Span:
        return Span(
            self.file,
            tok.start_pos or 0,
            tok.end_pos or 0,
            tok.line or 1,
            tok.column or 1,
            tok.end_line or 1,
            tok.end_column or 1,
        )

    def fail(self, message: str, span: Span, hint: str | None = None) -> NoReturn:
        raise _Fail("syntax", message, span, hint)

    # -- names
    def NAME(self, tok: Token) -> ast.Ident:  # noqa: N802 (a terminal callback)
        return ast.Ident(str(tok), self.tspan(tok))

    @v_args(meta=True)
    def dotted(self, meta: Meta, c: Children) -> ast.Dotted:
        return ast.Dotted(tuple(i.name for i in c), self.span(meta))

    # -- literals
    @v_args(meta=True)
    def int(self, meta: Meta, c: Children) -> ast.Literal:
        return ast.Literal(int(str(c[0]).replace("_", "")), self.span(meta))

    @v_args(meta=True)
    def decimal(self, meta: Meta, c: Children) -> ast.Literal:
        return ast.Literal(Decimal(str(c[0]).replace("_", "")), self.span(meta))

    @v_args(meta=True)
    def duration(self, meta: Meta, c: Children) -> ast.Literal:
        return ast.Literal(parse_duration(str(c[0])), self.span(meta))

    @v_args(meta=True)
    def string(self, meta: Meta, c: Children) -> ast.Literal:
        return ast.Literal(decode_string(c[0], self.file), self.span(meta))

    @v_args(meta=True)
    def true(self, meta: Meta, c: Children) -> ast.Literal:
        return ast.Literal(True, self.span(meta))

    @v_args(meta=True)
    def false(self, meta: Meta, c: Children) -> ast.Literal:
        return ast.Literal(False, self.span(meta))

    # -- expressions
    def _root(name: str) -> Callable[[_Builder, Meta, Children], ast.Root]:  # type: ignore[misc]
        @v_args(meta=True)
        def build(self: _Builder, meta: Meta, c: Children) -> ast.Root:
            return ast.Root(name, self.span(meta))

        return build

    principal = _root("principal")
    resource = _root("resource")
    context = _root("context")
    delegation = _root("delegation")
    action = _root("action")

    @v_args(meta=True)
    def var(self, meta: Meta, c: Children) -> ast.Var:
        return ast.Var(c[0].name, self.span(meta))

    def paren(self, c: Children) -> ast.Expr:
        return c[0]  # type: ignore[no-any-return]

    @v_args(meta=True)
    def set_lit(self, meta: Meta, c: Children) -> ast.SetLit:
        return ast.SetLit(tuple(x for x in c if x is not None), self.span(meta))

    @v_args(meta=True)
    def getattr(self, meta: Meta, c: Children) -> ast.GetAttr:
        return ast.GetAttr(c[0], c[1], self.span(meta))

    @v_args(meta=True)
    def call(self, meta: Meta, c: Children) -> ast.Call:
        return ast.Call(c[0], tuple(x for x in c[1:] if x is not None), self.span(meta))

    @v_args(meta=True)
    def neg(self, meta: Meta, c: Children) -> ast.Expr:
        inner = c[0]
        if isinstance(inner, ast.Literal) and isinstance(inner.value, int | Decimal):
            if not isinstance(inner.value, bool):
                return ast.Literal(-inner.value, self.span(meta))
        return ast.Neg(inner, self.span(meta))

    @v_args(meta=True)
    def not_(self, meta: Meta, c: Children) -> ast.Not:
        return ast.Not(c[0], self.span(meta))

    @v_args(meta=True)
    def and_expr(self, meta: Meta, c: Children) -> ast.And:
        ops: list[ast.Expr] = []
        for x in c:
            ops.extend(x.operands if isinstance(x, ast.And) else (x,))
        return ast.And(tuple(ops), self.span(meta))

    @v_args(meta=True)
    def or_expr(self, meta: Meta, c: Children) -> ast.Or:
        ops: list[ast.Expr] = []
        for x in c:
            ops.extend(x.operands if isinstance(x, ast.Or) else (x,))
        return ast.Or(tuple(ops), self.span(meta))

    @v_args(meta=True)
    def compare(self, meta: Meta, c: Children) -> ast.Compare:
        return ast.Compare(c[1], c[0], c[2], self.span(meta))

    def compare_op(self, c: Children) -> str:
        return str(c[0])

    def _fold_binary(self, meta: Meta, c: Children) -> ast.Expr:
        left: ast.Expr = c[0]
        for i in range(1, len(c), 2):
            right = c[i + 1]
            span = Span(
                self.file,
                left.span.start,
                right.span.end,
                left.span.line,
                left.span.column,
                right.span.end_line,
                right.span.end_column,
            )
            left = ast.Arith(str(c[i]), left, right, span)
        return left

    sum = v_args(meta=True)(_fold_binary)
    product = v_args(meta=True)(_fold_binary)

    @v_args(meta=True)
    def in_(self, meta: Meta, c: Children) -> ast.In:
        return ast.In(c[0], c[1], self.span(meta))

    @v_args(meta=True)
    def matches(self, meta: Meta, c: Children) -> ast.Matches:
        pattern = ast.Literal(decode_string(c[1], self.file), self.tspan(c[1]))
        return ast.Matches(c[0], pattern, self.span(meta))

    @v_args(meta=True)
    def is_(self, meta: Meta, c: Children) -> ast.Is:
        return ast.Is(c[0], c[1], self.span(meta))

    @v_args(meta=True)
    def has(self, meta: Meta, c: Children) -> ast.Has:
        return ast.Has(c[0], c[1], self.span(meta))

    def type_alts(self, c: Children) -> tuple[ast.Ident, ...]:
        return tuple(c)

    # -- types
    @v_args(meta=True)
    def named_type(self, meta: Meta, c: Children) -> ast.NamedType:
        return ast.NamedType(c[0], self.span(meta))

    @v_args(meta=True)
    def set_type(self, meta: Meta, c: Children) -> ast.SetType:
        return ast.SetType(c[0], self.span(meta))

    @v_args(meta=True)
    def record_type(self, meta: Meta, c: Children) -> ast.RecordType:
        return ast.RecordType(c[0], self.span(meta))

    def attr_block(self, c: Children) -> tuple[ast.AttrDecl, ...]:
        return tuple(x for x in c if x is not None)

    @v_args(meta=True)
    def attr(self, meta: Meta, c: Children) -> ast.AttrDecl:
        return ast.AttrDecl(c[0], c[1] is not None, c[2], self.span(meta))

    # -- declarations
    @v_args(meta=True)
    def module_decl(self, meta: Meta, c: Children) -> ast.ModuleDecl:
        return ast.ModuleDecl(c[0], self.span(meta))

    @v_args(meta=True)
    def import_decl(self, meta: Meta, c: Children) -> ast.Import:
        return ast.Import(c[0], c[1], self.span(meta))

    def import_names(self, c: Children) -> tuple[ast.Ident, ...]:
        return tuple(x for x in c if x is not None)

    @v_args(meta=True)
    def entity_decl(self, meta: Meta, c: Children) -> ast.EntityDecl:
        annotations, name, kind_clause, attrs_ = c
        kind, owners = kind_clause if kind_clause else (None, ())
        return ast.EntityDecl(
            name, kind, owners, attrs_ or (), annotations, self.span(meta)
        )

    def entity_kind(self, c: Children) -> tuple[ast.Ident, tuple[ast.Ident, ...]]:
        return c[0], c[1] or ()

    def owner_clause(self, c: Children) -> tuple[ast.Ident, ...]:
        return tuple(c)

    @v_args(meta=True)
    def labels_decl(self, meta: Meta, c: Children) -> ast.LabelsDecl:
        return ast.LabelsDecl(c[0], tuple(c[1:]), self.span(meta))

    @v_args(meta=True)
    def actions_decl(self, meta: Meta, c: Children) -> ast.ActionsDecl:
        return ast.ActionsDecl(c[0], c[1], self.span(meta))

    def action_block(self, c: Children) -> tuple[ast.ActionItem, ...]:
        return tuple(x for x in c if x is not None)

    @v_args(meta=True)
    def action_item(self, meta: Meta, c: Children) -> ast.ActionItem:
        return ast.ActionItem(c[0], c[1] or (), self.span(meta))

    @v_args(meta=True)
    def action_decl(self, meta: Meta, c: Children) -> ast.ActionDecl:
        return ast.ActionDecl(tuple(c), self.span(meta))

    @v_args(meta=True)
    def context_decl(self, meta: Meta, c: Children) -> ast.ContextDecl:
        return ast.ContextDecl(c[0], self.span(meta))

    @v_args(meta=True)
    def risk_decl(self, meta: Meta, c: Children) -> ast.RiskDecl:
        return ast.RiskDecl(c[1], c[2], c[0], self.span(meta))

    @v_args(meta=True)
    def obligation_decl(self, meta: Meta, c: Children) -> ast.ObligationDecl:
        return ast.ObligationDecl(c[0], c[1], c[2], self.span(meta))

    @v_args(meta=True)
    def requirements_decl(self, meta: Meta, c: Children) -> ast.RequirementsDecl:
        return ast.RequirementsDecl(
            tuple(x for x in c if x is not None), self.span(meta)
        )

    @v_args(meta=True)
    def option_decl(self, meta: Meta, c: Children) -> ast.OptionDecl:
        return ast.OptionDecl(c[0], c[1], self.span(meta))

    def annotations(self, c: Children) -> tuple[ast.Annotation, ...]:
        return tuple(c)

    @v_args(meta=True)
    def annotation(self, meta: Meta, c: Children) -> ast.Annotation:
        return ast.Annotation(
            c[0], tuple(x for x in c[1:] if x is not None), self.span(meta)
        )

    # -- rules
    def allow_head(self, c: Children) -> tuple[str, ast.Ident, tuple[Any, ...]]:
        return "allow", c[0], ()

    def deny_head(self, c: Children) -> tuple[str, ast.Ident, tuple[Any, ...]]:
        return "deny", c[0], ()

    def step_up_head(self, c: Children) -> tuple[str, ast.Ident, tuple[Any, ...]]:
        return "step_up", c[0], tuple(c[1:])

    def restrict_head(self, c: Children) -> tuple[str, ast.Ident, tuple[Any, ...]]:
        return "restrict", c[0], tuple(c[1:])

    @v_args(meta=True)
    def obligation_use(self, meta: Meta, c: Children) -> ast.ObligationUse:
        return ast.ObligationUse(
            c[0], tuple(x for x in c[1:] if x is not None), self.span(meta)
        )

    @v_args(meta=True)
    def principal_clause(self, meta: Meta, c: Children) -> tuple[str, Any, Span]:
        return "principal", c[0], self.span(meta)

    @v_args(meta=True)
    def resource_clause(self, meta: Meta, c: Children) -> tuple[str, Any, Span]:
        return "resource", c[0], self.span(meta)

    @v_args(meta=True)
    def action_clause(self, meta: Meta, c: Children) -> tuple[str, Any, Span]:
        return "action", tuple(c), self.span(meta)

    @v_args(meta=True)
    def when_clause(self, meta: Meta, c: Children) -> tuple[str, Any, Span]:
        return "when", c[0], self.span(meta)

    @v_args(meta=True)
    def unless_clause(self, meta: Meta, c: Children) -> tuple[str, Any, Span]:
        return "unless", c[0], self.span(meta)

    @v_args(meta=True)
    def rule(self, meta: Meta, c: Children) -> ast.Rule:
        annotations, (effect, rule_id, extra), *clauses = c
        targets: dict[str, Any] = {}
        when: list[ast.Expr] = []
        unless: list[ast.Expr] = []
        for kind, value, span in clauses:
            if kind == "when":
                when.append(value)
            elif kind == "unless":
                unless.append(value)
            elif kind in targets:
                self.fail(
                    f"rule `{rule_id.name}` has a second `{kind}` clause",
                    span,
                    f"list every alternative in one clause, e.g. `{kind} "
                    + ("is A | B`" if kind != "action" else "a.b, a.c`"),
                )
            else:
                targets[kind] = value
        return ast.Rule(
            id=rule_id,
            effect=effect,
            requirements=extra if effect == "step_up" else (),
            obligations=extra if effect == "restrict" else (),
            principal=targets.get("principal"),
            actions=targets.get("action"),
            resource=targets.get("resource"),
            when=tuple(when),
            unless=tuple(unless),
            annotations=annotations,
            span=self.span(meta),
        )

    # -- tests
    @v_args(meta=True)
    def test_decl(self, meta: Meta, c: Children) -> ast.Test:
        name = decode_string(c[0], self.file)
        file_lit, request = c[1]
        return ast.Test(name, file_lit, request, c[2], self.span(meta))

    def request_file(self, c: Children) -> tuple[ast.Literal, None]:
        return ast.Literal(decode_string(c[0], self.file), self.tspan(c[0])), None

    def request_inline(self, c: Children) -> tuple[None, Any]:
        return None, c[0]

    @v_args(meta=True)
    def expectation(self, meta: Meta, c: Children) -> ast.Expectation:
        details: dict[str, tuple[Any, ...]] = {}
        for kind, values in c[1:]:
            details[kind] = details.get(kind, ()) + values
        return ast.Expectation(
            c[0],
            details.get("by"),
            details.get("requires"),
            details.get("because"),
            details.get("with"),
            self.span(meta),
        )

    def expect_by(self, c: Children) -> tuple[str, tuple[Any, ...]]:
        return "by", tuple(c)

    def expect_requires(self, c: Children) -> tuple[str, tuple[Any, ...]]:
        return "requires", tuple(c)

    def expect_because(self, c: Children) -> tuple[str, tuple[Any, ...]]:
        return "because", tuple(c)

    def expect_with(self, c: Children) -> tuple[str, tuple[Any, ...]]:
        return "with", tuple(c)

    def json_object(self, c: Children) -> dict[str, Any]:
        return dict(x for x in c if x is not None)

    def json_pair(self, c: Children) -> tuple[str, Any]:
        return decode_string(c[0], self.file), None if c[1] is _NULL else c[1]

    def json_array(self, c: Children) -> list[Any]:
        # Absent optional parts arrive as None; a JSON null arrives as _NULL.
        return [None if x is _NULL else x for x in c if x is not None]

    def json_string(self, c: Children) -> str:
        return decode_string(c[0], self.file)

    def json_int(self, c: Children) -> object:
        return int(str(c[0]).replace("_", ""))

    def json_decimal(self, c: Children) -> object:
        return Decimal(str(c[0]).replace("_", ""))

    def json_neg_int(self, c: Children) -> object:
        return -int(str(c[0]).replace("_", ""))

    def json_neg_decimal(self, c: Children) -> object:
        return -Decimal(str(c[0]).replace("_", ""))

    def json_true(self, c: Children) -> bool:
        return True

    def json_false(self, c: Children) -> bool:
        return False

    def json_null(self, c: Children) -> object:
        return _NULL

    @v_args(meta=True)
    def start(self, meta: Meta, c: Children) -> tuple[Any, ...]:
        return tuple(c)


_lock = threading.Lock()
_comments: list[Token] = []


def _collect_comment(token: Token) -> Token:
    _comments.append(token)
    return token


MAX_DIGITS = 1000
"""Longest number literal: exact, never rounded, but not unbounded work."""


def _check_number(token: Token) -> Token:
    if len(token) > MAX_DIGITS:
        span = Span(
            _current_file[0],
            token.start_pos or 0,
            token.end_pos or 0,
            token.line or 1,
            token.column or 1,
            token.end_line or 1,
            token.end_column or 1,
        )
        raise _Fail(
            "literal",
            f"number literal is longer than {MAX_DIGITS} digits",
            span,
            "numbers are exact; a literal this long is almost certainly a mistake",
        )
    return token


_current_file = ["<text>"]  # the file being lexed, for spans in lexer callbacks


@cache
def _parser() -> lark.Lark:
    return lark.Lark(
        _grammar_text(),
        parser="lalr",
        lexer="contextual",
        lexer_callbacks={
            "COMMENT": _collect_comment,
            "INT": _check_number,
            "DECIMAL": _check_number,
            "DURATION": _check_number,
        },
        propagate_positions=True,
        maybe_placeholders=True,
    )


# ---- errors in the words of the language ------------------------------------

_TOKEN_WORDS = {
    "NAME": "a name",
    "STRING": "a string",
    "INT": "a number",
    "DECIMAL": "a decimal",
    "DURATION": "a duration",
    "ADD_OP": "`+` or `-`",
    "MUL_OP": "`*`",
    "QMARK": "`?`",
    "$END": "end of file",
}


def _describe(terminal: str) -> str:
    if terminal in _TOKEN_WORDS:
        return _TOKEN_WORDS[terminal]
    try:
        pattern = _parser().get_terminal(terminal).pattern
    except KeyError:
        return terminal.lower()
    if isinstance(pattern, lark.lexer.PatternStr):
        return f"`{pattern.value}`"
    return terminal.lower()


def _expected(names: set[str] | frozenset[str]) -> str:
    words = sorted({_describe(n) for n in names})
    if len(words) > 8:
        words = [w for w in words if w.startswith("`")][:8] + ["…"]
    return ", ".join(words)


def _token_text(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    text = str(tok)
    return f"`{text}`" if len(text) <= 40 else f"`{text[:37]}…`"


_FOREIGN_OPERATORS = {
    "&": "ripl writes `and` (not `&&`)",
    "!": "ripl writes `not` (and `!=` to compare)",
}


def _lark_diagnostic(exc: UnexpectedInput, text: str, file: str) -> Diagnostic:
    if isinstance(exc, UnexpectedCharacters):
        pos = exc.pos_in_stream or 0
        span = span_at(file, text, pos, 1)
        char = text[pos] if pos < len(text) else ""
        if char == '"':
            return Diagnostic(
                "syntax",
                "unterminated string",
                span,
                hint='close the string with `"` on the same or a later line',
            )
        if char in _FOREIGN_OPERATORS:
            return Diagnostic(
                "syntax",
                f"unexpected character `{char}`",
                span,
                hint=_FOREIGN_OPERATORS[char],
            )
        shown = repr(char)[1:-1] if not char.isprintable() else char
        return Diagnostic(
            "syntax",
            f"unexpected character `{shown}`",
            span,
            hint=f"expected {_expected(exc.allowed or set())}",
        )
    if isinstance(exc, UnexpectedEOF):
        span = span_at(file, text, len(text), 0)
        return Diagnostic(
            "syntax",
            "unexpected end of file",
            span,
            hint=f"expected {_expected(set(exc.expected))}",
        )
    assert isinstance(exc, UnexpectedToken)
    tok = exc.token
    if tok.type == "$END":
        span = span_at(file, text, len(text), 0)
    else:
        span = span_at(file, text, tok.start_pos or 0, len(str(tok)))
    expected = set(exc.expected)
    hint = f"expected {_expected(expected)}"
    word = str(tok)
    if tok.type in ("NAME", "$END") or word in KEYWORDS:
        keywords = [_describe(n).strip("`") for n in expected]
        close = difflib.get_close_matches(word, keywords, n=1, cutoff=0.7)
        if close:
            hint = f"did you mean `{close[0]}`?"
    if word == "|" and "NAME" not in expected:
        hint = "ripl writes `or` (not `||`); `|` only separates types after `is`"
    if word in KEYWORDS and "NAME" in expected:
        hint = f"`{word}` is a keyword and cannot be used as a name here"
    return Diagnostic("syntax", f"unexpected {_token_text(tok)}", span, hint=hint)


# ---- nesting ----------------------------------------------------------------

_NESTING_RULES = frozenset(
    "paren not_ neg and_expr or_expr compare in_ matches is_ has sum product "
    "getattr call set_lit json_object json_array record_type set_type "
    "action_block".split()
)
_CHAINS = frozenset({"sum", "product"})  # `a + b + c` nests one level per `+`


def check_nesting(tree: lark.Tree[Token], file: str, limit: int = MAX_NESTING) -> None:
    """Reject expressions nested deeper than `limit`, at the outermost place
    that goes too deep, so every later stage may recurse safely."""
    stack: list[tuple[lark.Tree[Token], int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if node.data in _NESTING_RULES:
            depth += (
                max(1, (len(node.children) - 1) // 2) if (node.data in _CHAINS) else 1
            )
            if depth > limit:
                meta = node.meta
                span = Span(
                    file,
                    meta.start_pos,
                    meta.end_pos,
                    meta.line,
                    meta.column,
                    meta.end_line,
                    meta.end_column,
                )
                raise ParseError(
                    [
                        Diagnostic(
                            "nesting",
                            f"nesting too deep (limit {limit})",
                            span,
                            hint="split it up: named `risk` expressions and "
                            "several rules keep conditions shallow",
                        )
                    ]
                )
        stack.extend((c, depth) for c in node.children if isinstance(c, lark.Tree))


# ---- entry point -------------------------------------------------------------


_parsed: cachetools.LRUCache[tuple[str, str], ast.Module] = cachetools.LRUCache(256)
_parsed_lock = threading.Lock()


def parse_source(text: str, file: str = "<text>") -> ast.Module:
    """Parse one policy file. Raises `ParseError` and nothing else.

    The AST is immutable, so an unchanged file (same name, same text) is
    parsed once and then served from a bounded cache."""
    key = (file, hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest())
    with _parsed_lock:
        found = _parsed.get(key)
    if found is not None:
        return found
    module = _parse_uncached(text, file)
    with _parsed_lock:
        _parsed[key] = module
    return module


def _parse_uncached(text: str, file: str) -> ast.Module:
    try:
        with _lock:
            _comments.clear()
            _current_file[0] = file
            tree = _parser().parse(text)
            comments = tuple(
                ast.Comment(str(t), _Builder(file).tspan(t)) for t in _comments
            )
        check_nesting(tree, file)
        items = _Builder(file).transform(tree)
    except _Fail as exc:
        raise ParseError([exc.diagnostic], {file: text}) from None
    except VisitError as exc:
        if isinstance(exc.orig_exc, _Fail):
            raise ParseError([exc.orig_exc.diagnostic], {file: text}) from None
        raise ParseError(
            [Diagnostic("syntax", "malformed policy", span_at(file, text, 0))],
            {file: text},
        ) from exc
    except UnexpectedInput as exc:
        raise ParseError([_lark_diagnostic(exc, text, file)], {file: text}) from None
    except RecursionError:
        raise ParseError(
            [Diagnostic("nesting", "nesting too deep", span_at(file, text, 0))],
            {file: text},
        ) from None
    except ParseError as exc:
        exc.sources[file] = text
        raise
    log.debug("parsed %s: %d items", file, len(items))
    return ast.Module(file, items, span_at(file, text, 0, len(text)), comments)


def decode_source(data: bytes, file: str) -> str:
    """Bytes of a policy file → text; bad UTF-8 is a ParseError at the byte.
    A byte-order mark, which some editors write, is dropped."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = data[: exc.start].decode("utf-8", errors="replace")
        span = span_at(file, good + "?", len(good), 1)
        raise ParseError(
            [
                Diagnostic(
                    "encoding",
                    f"file is not valid UTF-8 (byte 0x{data[exc.start]:02x})",
                    span,
                    hint="save the file as UTF-8",
                )
            ],
            {file: good},
        ) from None
