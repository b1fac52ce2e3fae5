"""Policy text → AST. The only module that imports lark.

Lark's LALR parser runs with an inline transformer: AST nodes are built by
callbacks as rules are reduced, so no parse tree is built or walked, and deep
input cannot overflow the Python stack. Nesting depth is counted by the same
callbacks. Every lark error is re-raised as a `ParseError` with a span, in the
words of the language.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
import threading
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn, Protocol, cast

import cachetools
import lark
from lark import Token
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
)

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
    if "\\" not in body:
        return body

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
    """Raised by `decode_string` and the lexer; turned into a ParseError."""

    def __init__(self, code: str, message: str, span: Span, hint: str | None) -> None:
        super().__init__(message)
        self.diagnostic = Diagnostic(code, message, span, hint=hint)


# ---- the inline transformer ------------------------------------------------
#
# Lark calls these callbacks while it parses (bottom-up, in source order), so
# no parse tree is built. `keep_all_tokens` hands every callback all of its
# rule's tokens, keywords and brackets included; a node's span runs from the
# start of its first child to the end of its last, as lark's
# `propagate_positions` would place it. Two things a child cannot carry on
# its own are kept beside the nodes, keyed by `id` (the node is kept alive
# with its entry, so an id is never reused while it is a key):
#
# - the extent of a parenthesised expression: `(a)` is the node of `a`, but a
#   parent's span starts at the `(`;
# - nesting height, the most nesting levels below and at a node, counted as
#   `check_nesting` counts them on a tree.

_NULL = object()
_NO_HEIGHT = (0, None)

Children = list[Any]


class _Tok(Protocol):
    """A token as the lexer hands it over: lark types every position as
    optional, but the lexer always sets them."""

    @property
    def type(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def start_pos(self) -> int: ...
    @property
    def end_pos(self) -> int: ...
    @property
    def line(self) -> int: ...
    @property
    def column(self) -> int: ...
    @property
    def end_line(self) -> int: ...
    @property
    def end_column(self) -> int: ...


Head = tuple[str, ast.Ident, tuple[Any, ...], _Tok]
Clause = tuple[str, Any, Span]
Block = tuple[tuple[Any, ...], Span, int]  # items, extent with braces, height


class _Builder:
    """Grammar rule name → AST node. One instance serves the cached parser;
    `begin` resets it for each parse (parses are serialised by `_lock`)."""

    def __init__(self) -> None:
        self.begin("<text>")

    def begin(self, file: str) -> None:
        self.file = file
        self.failure: Diagnostic | None = None
        self.comments: list[_Tok] = []
        self.extents: dict[int, tuple[Span, object]] = {}
        self.heights: dict[int, tuple[int, object]] = {}
        self.keys: dict[int, tuple[_Tok, object]] = {}  # JSON pair → its key
        self.deepest_at = -1  # start of the last node found too deep, if any

    # -- spans
    def _tok(self, tok: _Tok) -> Span:
        return Span(
            self.file,
            tok.start_pos,
            tok.end_pos,
            tok.line,
            tok.column,
            tok.end_line,
            tok.end_column,
        )

    def _ident(self, tok: _Tok) -> ast.Ident:
        return ast.Ident(tok.value, self._tok(tok))

    def _extent(self, node: Any) -> Span:
        """The span `node` takes up in its parent: its own, or its brackets'."""
        if self.extents:
            found = self.extents.get(id(node))
            if found is not None:
                return found[0]
        span: Span = node.span
        return span

    def _join(self, first: Span, last: Span) -> Span:
        return Span(
            self.file,
            first.start,
            last.end,
            first.line,
            first.column,
            last.end_line,
            last.end_column,
        )

    def _tok_to(self, tok: _Tok, last: Span) -> Span:
        return Span(
            self.file,
            tok.start_pos,
            last.end,
            tok.line,
            tok.column,
            last.end_line,
            last.end_column,
        )

    def _to_tok(self, first: Span, tok: _Tok) -> Span:
        return Span(
            self.file,
            first.start,
            tok.end_pos,
            first.line,
            first.column,
            tok.end_line,
            tok.end_column,
        )

    def _tok_tok(self, first: _Tok, last: _Tok) -> Span:
        return Span(
            self.file,
            first.start_pos,
            last.end_pos,
            first.line,
            first.column,
            last.end_line,
            last.end_column,
        )

    # -- deferred errors and nesting
    def _defer(self, diagnostic: Diagnostic) -> None:
        """Keep the first error found in a callback and go on parsing: a
        syntax error anywhere in the file, then nesting, are reported first."""
        if self.failure is None:
            self.failure = diagnostic

    def _decode(self, tok: Any) -> str:
        try:
            return decode_string(tok, self.file)
        except _Fail as exc:
            self._defer(exc.diagnostic)
            return ""

    def _height(self, node: object) -> int:
        return self.heights.get(id(node), _NO_HEIGHT)[0]

    def _nest(self, node: object, height: int, start: int) -> None:
        """Record the height of a node of a nesting rule."""
        self.heights[id(node)] = (height, node)
        if height > MAX_NESTING and start > self.deepest_at:
            self.deepest_at = start

    def _carry(self, node: object, height: int) -> None:
        """Record the height of a node between two nesting levels."""
        if height:
            self.heights[id(node)] = (height, node)

    # -- lexer callbacks
    def comment(self, tok: _Tok) -> _Tok:
        self.comments.append(tok)
        return tok

    def number(self, tok: _Tok) -> _Tok:
        if len(tok.value) > MAX_DIGITS:
            raise _Fail(
                "literal",
                f"number literal is longer than {MAX_DIGITS} digits",
                self._tok(tok),
                "numbers are exact; a literal this long is almost certainly a mistake",
            )
        return tok

    # -- names
    def dotted(self, c: Children) -> ast.Dotted:
        if len(c) == 1:
            tok = c[0]
            return ast.Dotted((tok.value,), self._tok(tok))
        parts = tuple(t.value for t in c[::2])
        return ast.Dotted(parts, self._tok_tok(c[0], c[-1]))

    def type_alts(self, c: Children) -> tuple[ast.Ident, ...]:
        return tuple(self._ident(t) for t in c[::2])

    # -- literals
    def int(self, c: Children) -> ast.Literal:
        tok = c[0]
        return ast.Literal(int(tok.value.replace("_", "")), self._tok(tok))

    def decimal(self, c: Children) -> ast.Literal:
        tok = c[0]
        return ast.Literal(Decimal(tok.value.replace("_", "")), self._tok(tok))

    def duration(self, c: Children) -> ast.Literal:
        tok = c[0]
        return ast.Literal(parse_duration(tok.value), self._tok(tok))

    def string(self, c: Children) -> ast.Literal:
        tok = c[0]
        return ast.Literal(self._decode(tok), self._tok(tok))

    def true(self, c: Children) -> ast.Literal:
        return ast.Literal(True, self._tok(c[0]))

    def false(self, c: Children) -> ast.Literal:
        return ast.Literal(False, self._tok(c[0]))

    # -- expressions
    def _root(self, c: Children) -> ast.Root:
        tok = c[0]
        return ast.Root(tok.value, self._tok(tok))

    principal = resource = context = delegation = action = _root

    def var(self, c: Children) -> ast.Var:
        tok = c[0]
        return ast.Var(tok.value, self._tok(tok))

    def paren(self, c: Children) -> ast.Expr:
        inner: ast.Expr = c[1]
        span = self._tok_tok(c[0], c[2])
        self.extents[id(inner)] = (span, inner)
        self._nest(inner, self._height(inner) + 1, span.start)
        return inner

    def set_lit(self, c: Children) -> ast.SetLit:
        items = tuple(x for x in c[1:-1] if x is not None and type(x) is not Token)
        node = ast.SetLit(items, span := self._tok_tok(c[0], c[-1]))
        self._nest(node, 1 + max(map(self._height, items), default=0), span.start)
        return node

    def getattr(self, c: Children) -> ast.GetAttr:
        obj = c[0]
        span = self._to_tok(self._extent(obj), c[2])
        node = ast.GetAttr(obj, self._ident(c[2]), span)
        self._nest(node, 1 + self._height(obj), span.start)
        return node

    def call(self, c: Children) -> ast.Call:
        func = c[0]
        args = tuple(x for x in c[2:-1] if x is not None and type(x) is not Token)
        span = self._to_tok(self._extent(func), c[-1])
        node = ast.Call(func, args, span)
        height = max(self._height(func), max(map(self._height, args), default=0))
        self._nest(node, 1 + height, span.start)
        return node

    def neg(self, c: Children) -> ast.Expr:
        inner = c[1]
        span = self._tok_to(c[0], self._extent(inner))
        node: ast.Expr
        if (
            type(inner) is ast.Literal
            and isinstance(inner.value, int | Decimal)
            and not isinstance(inner.value, bool)
        ):
            node = ast.Literal(-inner.value, span)
        else:
            node = ast.Neg(inner, span)
        self._nest(node, 1 + self._height(inner), span.start)
        return node

    def not_(self, c: Children) -> ast.Not:
        inner = c[1]
        node = ast.Not(inner, span := self._tok_to(c[0], self._extent(inner)))
        self._nest(node, 1 + self._height(inner), span.start)
        return node

    def and_expr(self, c: Children) -> ast.And:
        ops: list[ast.Expr] = []
        for x in c[::2]:
            if type(x) is ast.And:
                ops.extend(x.operands)
            else:
                ops.append(x)
        span = self._join(self._extent(c[0]), self._extent(c[-1]))
        node = ast.And(tuple(ops), span)
        self._nest(node, 1 + max(map(self._height, c[::2])), span.start)
        return node

    def or_expr(self, c: Children) -> ast.Or:
        ops: list[ast.Expr] = []
        for x in c[::2]:
            if type(x) is ast.Or:
                ops.extend(x.operands)
            else:
                ops.append(x)
        span = self._join(self._extent(c[0]), self._extent(c[-1]))
        node = ast.Or(tuple(ops), span)
        self._nest(node, 1 + max(map(self._height, c[::2])), span.start)
        return node

    def compare_op(self, c: Children) -> str:
        return c[0].value  # type: ignore[no-any-return]

    def compare(self, c: Children) -> ast.Compare:
        left, op, right = c
        span = self._join(self._extent(left), self._extent(right))
        node = ast.Compare(op, left, right, span)
        height = max(self._height(left), self._height(right))
        self._nest(node, 1 + height, span.start)
        return node

    def in_(self, c: Children) -> ast.In:
        left, _, right = c
        span = self._join(self._extent(left), self._extent(right))
        node = ast.In(left, right, span)
        height = max(self._height(left), self._height(right))
        self._nest(node, 1 + height, span.start)
        return node

    def matches(self, c: Children) -> ast.Matches:
        subject, _, tok = c
        pattern = ast.Literal(self._decode(tok), self._tok(tok))
        span = self._join(self._extent(subject), pattern.span)
        node = ast.Matches(subject, pattern, span)
        self._nest(node, 1 + self._height(subject), span.start)
        return node

    def is_(self, c: Children) -> ast.Is:
        subject, _, types = c
        span = self._join(self._extent(subject), types[-1].span)
        node = ast.Is(subject, types, span)
        self._nest(node, 1 + self._height(subject), span.start)
        return node

    def has(self, c: Children) -> ast.Has:
        subject, _, tok = c
        node = ast.Has(
            subject, self._ident(tok), self._to_tok(self._extent(subject), tok)
        )
        self._nest(node, 1 + self._height(subject), node.span.start)
        return node

    def sum(self, c: Children) -> ast.Expr:
        """`a - b + c` is `(a - b) + c`. An operation's span runs from its
        left operand to its right one, brackets around them not included;
        the whole chain still takes up its brackets in its parent."""
        # TODO: so `(a) + b` spans `a) + b`, and a caret under it starts inside
        # the bracket; kept because every span had to stay as it was when
        # parsing got faster. See the first row of EXPRESSIONS in
        # tests/test_parse_spans.py.
        left: ast.Expr = c[0]
        height = self._height(left)
        for i in range(1, len(c), 2):
            right = c[i + 1]
            height = max(height, self._height(right))
            left = ast.Arith(c[i].value, left, right, self._join(left.span, right.span))
        extents = self.extents
        if extents and (id(c[0]) in extents or id(c[-1]) in extents):
            outer = self._join(self._extent(c[0]), self._extent(c[-1]))
            extents[id(left)] = (outer, left)
        self._nest(left, height + len(c) // 2, left.span.start)
        return left

    product = sum

    # -- types
    def named_type(self, c: Children) -> ast.NamedType:
        name: ast.Dotted = c[0]
        return ast.NamedType(name, name.span)

    def set_type(self, c: Children) -> ast.SetType:
        element = c[2]
        node = ast.SetType(element, span := self._tok_tok(c[0], c[3]))
        self._nest(node, 1 + self._height(element), span.start)
        return node

    def record_type(self, c: Children) -> ast.RecordType:
        attrs_, span, height = c[0]
        node = ast.RecordType(attrs_, span)
        self._nest(node, 1 + height, span.start)
        return node

    def attr_block(self, c: Children) -> Block:
        items = tuple(x for x in c[1:-1] if x is not None and type(x) is not Token)
        height = max(map(self._height, items), default=0)
        return items, self._tok_tok(c[0], c[-1]), height

    def attr(self, c: Children) -> ast.AttrDecl:
        name, qmark, _, type_ = c
        span = self._tok_to(name, type_.span)
        node = ast.AttrDecl(self._ident(name), qmark is not None, type_, span)
        self._carry(node, self._height(type_))
        return node

    # -- declarations
    def module_decl(self, c: Children) -> ast.ModuleDecl:
        return ast.ModuleDecl(c[1], self._tok_to(c[0], c[1].span))

    def import_decl(self, c: Children) -> ast.Import:
        keyword, module, names = c
        if names is None:
            return ast.Import(module, None, self._tok_to(keyword, module.span))
        return ast.Import(module, names[0], self._tok_to(keyword, names[1]))

    def import_names(self, c: Children) -> tuple[tuple[ast.Ident, ...], Span]:
        names = tuple(
            self._ident(t) for t in c[1:-1] if t is not None and t.type == "NAME"
        )
        return names, self._tok_tok(c[0], c[-1])

    def entity_decl(self, c: Children) -> ast.EntityDecl:
        annotations, keyword, name, kind_clause, block = c
        first = annotations[0].span if annotations else self._tok(keyword)
        ident = self._ident(name)
        kind, owners, scopes, last = None, (), None, ident.span
        if kind_clause is not None:
            kind, owners, scopes, last = kind_clause
        attrs_: tuple[ast.AttrDecl, ...] = ()
        if block is not None:
            attrs_, last, _ = block
        return ast.EntityDecl(
            ident,
            kind,
            owners,
            attrs_,
            annotations,
            scopes,
            self._join(first, last),
        )

    def entity_kind(
        self, c: Children
    ) -> tuple[ast.Ident, tuple[ast.Ident, ...], tuple[ast.Dotted, ...] | None, Span]:
        kind = self._ident(c[1])
        owners: tuple[ast.Ident, ...] = c[2] or ()
        scopes: tuple[ast.Dotted, ...] | None = c[3]
        last = owners[-1].span if owners else kind.span
        if scopes:
            last = scopes[-1].span
        return kind, owners, scopes, last

    def scopes_clause(self, c: Children) -> tuple[ast.Dotted, ...]:
        return tuple(c[1::2])

    def owner_clause(self, c: Children) -> tuple[ast.Ident, ...]:
        return tuple(self._ident(t) for t in c[1::2])

    def labels_decl(self, c: Children) -> ast.LabelsDecl:
        labels = tuple(self._ident(t) for t in c[3:-1:2])
        return ast.LabelsDecl(self._ident(c[1]), labels, self._tok_tok(c[0], c[-1]))

    def actions_decl(self, c: Children) -> ast.ActionsDecl:
        items, last, _ = c[2]
        return ast.ActionsDecl(c[1], items, self._tok_to(c[0], last))

    def action_block(self, c: Children) -> Block:
        items = tuple(x for x in c[1:-1] if x is not None and type(x) is not Token)
        span = self._tok_tok(c[0], c[-1])
        height = 1 + max(map(self._height, items), default=0)
        if height > MAX_NESTING and span.start > self.deepest_at:
            self.deepest_at = span.start
        return items, span, height

    def action_item(self, c: Children) -> ast.ActionItem:
        name, block = c
        if block is None:
            return ast.ActionItem(self._ident(name), (), self._tok(name))
        items, last, height = block
        node = ast.ActionItem(self._ident(name), items, self._tok_to(name, last))
        self._carry(node, height)
        return node

    def action_decl(self, c: Children) -> ast.ActionDecl:
        return ast.ActionDecl(tuple(c[1::2]), self._tok_to(c[0], c[-1].span))

    def context_decl(self, c: Children) -> ast.ContextDecl:
        attrs_, last, _ = c[1]
        return ast.ContextDecl(attrs_, self._tok_to(c[0], last))

    def risk_decl(self, c: Children) -> ast.RiskDecl:
        annotations, keyword, name, _, expr = c
        first = annotations[0].span if annotations else self._tok(keyword)
        span = self._join(first, self._extent(expr))
        return ast.RiskDecl(self._ident(name), expr, annotations, span)

    def obligation_decl(self, c: Children) -> ast.ObligationDecl:
        return ast.ObligationDecl(
            self._ident(c[1]), c[3], self._ident(c[5]), self._tok_tok(c[0], c[5])
        )

    def requirements_decl(self, c: Children) -> ast.RequirementsDecl:
        names = tuple(
            self._ident(t) for t in c[2:-1] if t is not None and t.type == "NAME"
        )
        return ast.RequirementsDecl(names, self._tok_tok(c[0], c[-1]))

    def option_decl(self, c: Children) -> ast.OptionDecl:
        span = self._tok_to(c[0], self._extent(c[3]))
        return ast.OptionDecl(self._ident(c[1]), c[3], span)

    def annotations(self, c: Children) -> tuple[ast.Annotation, ...]:
        return tuple(c)

    def annotation(self, c: Children) -> ast.Annotation:
        args = tuple(x for x in c[2:] if type(x) is ast.Literal)
        last = c[-1] if c[-1] is not None else c[1]
        return ast.Annotation(self._ident(c[1]), args, self._tok_tok(c[0], last))

    # -- rules
    def allow_head(self, c: Children) -> Head:
        return "allow", self._ident(c[1]), (), c[0]

    def deny_head(self, c: Children) -> Head:
        return "deny", self._ident(c[1]), (), c[0]

    def step_up_head(self, c: Children) -> Head:
        requirements = tuple(self._ident(t) for t in c[3::2])
        return "step_up", self._ident(c[1]), requirements, c[0]

    def restrict_head(self, c: Children) -> Head:
        return "restrict", self._ident(c[1]), tuple(c[3::2]), c[0]

    def obligation_use(self, c: Children) -> ast.ObligationUse:
        args = tuple(x for x in c[2:-1] if x is not None and type(x) is not Token)
        span = self._tok_tok(c[0], c[-1])
        return ast.ObligationUse(self._ident(c[0]), args, span)

    def principal_clause(self, c: Children) -> Clause:
        types = c[2]
        return "principal", types, self._tok_to(c[0], types[-1].span)

    def resource_clause(self, c: Children) -> Clause:
        types = c[2]
        return "resource", types, self._tok_to(c[0], types[-1].span)

    def action_clause(self, c: Children) -> Clause:
        return "action", tuple(c[1::2]), self._tok_to(c[0], c[-1].span)

    def when_clause(self, c: Children) -> Clause:
        return "when", c[1], self._tok_to(c[0], self._extent(c[1]))

    def unless_clause(self, c: Children) -> Clause:
        return "unless", c[1], self._tok_to(c[0], self._extent(c[1]))

    def rule(self, c: Children) -> ast.Rule:
        annotations, (effect, rule_id, extra, keyword), colon, *clauses = c
        first = annotations[0].span if annotations else self._tok(keyword)
        span = self._join(first, clauses[-1][2]) if clauses else None
        targets: dict[str, Any] = {}
        when: list[ast.Expr] = []
        unless: list[ast.Expr] = []
        for kind, value, clause_span in clauses:
            if kind == "when":
                when.append(value)
            elif kind == "unless":
                unless.append(value)
            elif kind in targets:
                self._defer(_second_clause(rule_id, kind, clause_span))
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
            span=span or self._to_tok(first, colon),
        )

    # -- tests
    def test_decl(self, c: Children) -> ast.Test:
        keyword, name, _, (file_lit, request), expectation = c
        span = self._tok_to(keyword, expectation.span)
        return ast.Test(self._decode(name), file_lit, request, expectation, span)

    def request_file(self, c: Children) -> tuple[ast.Literal, None]:
        tok = c[1]
        return ast.Literal(self._decode(tok), self._tok(tok)), None

    def request_inline(self, c: Children) -> tuple[None, Any]:
        return None, c[1]

    def expectation(self, c: Children) -> ast.Expectation:
        details: dict[str, tuple[Any, ...]] = {}
        for kind, values in c[2:]:
            details[kind] = details.get(kind, ()) + values
        last = c[-1][1][-1].span if len(c) > 2 else self._tok(c[1])
        return ast.Expectation(
            self._ident(c[1]),
            details.get("by"),
            details.get("requires"),
            details.get("because"),
            details.get("with"),
            self._tok_to(c[0], last),
        )

    def expect_by(self, c: Children) -> tuple[str, tuple[Any, ...]]:
        return "by", tuple(self._ident(t) for t in c[1::2])

    def expect_requires(self, c: Children) -> tuple[str, tuple[Any, ...]]:
        return "requires", tuple(self._ident(t) for t in c[1::2])

    def expect_because(self, c: Children) -> tuple[str, tuple[Any, ...]]:
        return "because", tuple(self._ident(t) for t in c[1::2])

    def expect_with(self, c: Children) -> tuple[str, tuple[Any, ...]]:
        return "with", tuple(c[1::2])

    def json_object(self, c: Children) -> dict[str, Any]:
        pairs = [x for x in c[1:-1] if type(x) is tuple]
        node: dict[str, Any] = {}
        for pair in pairs:
            if pair[0] in node:
                # As for request files: two readers must never see two values.
                key = self.keys[id(pair)][0]
                self._defer(
                    Diagnostic(
                        "duplicate",
                        f"the key `{pair[0]}` appears twice in one object",
                        self._tok(key),
                        hint="give each key once",
                    )
                )
            node[pair[0]] = pair[1]
        height = 1 + max(map(self._height, pairs), default=0)
        self._nest(node, height, c[0].start_pos)
        return node

    def json_pair(self, c: Children) -> tuple[str, Any]:
        key, _, value = c
        pair = (self._decode(key), None if value is _NULL else value)
        self._carry(pair, self._height(value))
        self.keys[id(pair)] = (key, pair)
        return pair

    def json_array(self, c: Children) -> list[Any]:
        # Absent optional parts arrive as None; a JSON null arrives as _NULL.
        values = [x for x in c[1:-1] if x is not None and type(x) is not Token]
        node = [None if x is _NULL else x for x in values]
        height = 1 + max(map(self._height, values), default=0)
        self._nest(node, height, c[0].start_pos)
        return node

    def json_string(self, c: Children) -> str:
        return self._decode(c[0])

    def json_int(self, c: Children) -> object:
        return int(c[0].value.replace("_", ""))

    def json_decimal(self, c: Children) -> object:
        return Decimal(c[0].value.replace("_", ""))

    def json_neg_int(self, c: Children) -> object:
        return -int(c[1].value.replace("_", ""))

    def json_neg_decimal(self, c: Children) -> object:
        return -Decimal(c[1].value.replace("_", ""))

    def json_true(self, c: Children) -> bool:
        return True

    def json_false(self, c: Children) -> bool:
        return False

    def json_null(self, c: Children) -> object:
        return _NULL

    def start(self, c: Children) -> tuple[Any, ...]:
        return tuple(c)


def _second_clause(rule_id: ast.Ident, kind: str, span: Span) -> Diagnostic:
    example = "is A | B`" if kind != "action" else "a.b, a.c`"
    return Diagnostic(
        "syntax",
        f"rule `{rule_id.name}` has a second `{kind}` clause",
        span,
        hint=f"list every alternative in one clause, e.g. `{kind} " + example,
    )


MAX_DIGITS = 1000
"""Longest number literal: exact, never rounded, but not unbounded work."""

_lock = threading.Lock()
_builder = _Builder()


def _lark(**options: Any) -> lark.Lark:
    return lark.Lark(
        _grammar_text(),
        parser="lalr",
        lexer="contextual",
        maybe_placeholders=True,
        **options,
    )


@cache
def _parser() -> lark.Lark:
    """The parser that builds the AST; its tables are those of `_tree_parser`,
    `keep_all_tokens` only changes what the callbacks are handed."""
    number = _builder.number
    return _lark(
        transformer=_builder,
        keep_all_tokens=True,
        lexer_callbacks={
            "COMMENT": _builder.comment,
            "INT": number,
            "DECIMAL": number,
            "DURATION": number,
        },
    )


@cache
def _tree_parser() -> lark.Lark:
    """Builds a parse tree, only to locate a nesting error exactly."""
    return _lark(propagate_positions=True)


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
            _builder.begin(file)
            try:
                # The inline transformer's `start` returns the items.
                items = cast("tuple[ast.Item, ...]", _parser().parse(text))
                comments = tuple(
                    ast.Comment(t.value, _builder._tok(t)) for t in _builder.comments
                )
                failure, deepest_at = _builder.failure, _builder.deepest_at
            finally:
                _builder.begin("<text>")  # let go of this parse's nodes
        if deepest_at >= 0:
            _raise_nesting(text, file, items, deepest_at)
        if failure is not None:
            raise ParseError([failure], {file: text})
    except _Fail as exc:
        raise ParseError([exc.diagnostic], {file: text}) from None
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
    except Exception as exc:  # a bug in a callback: still only a ParseError
        raise ParseError(
            [Diagnostic("syntax", "malformed policy", span_at(file, text, 0))],
            {file: text},
        ) from exc
    log.debug("parsed %s: %d items", file, len(items))
    return ast.Module(file, items, span_at(file, text, 0, len(text)), comments)


def _raise_nesting(
    text: str, file: str, items: tuple[ast.Item, ...], deepest_at: int
) -> NoReturn:
    """Report a nesting error where `check_nesting` finds it on the parse
    tree: in the last item that nests too deep, so only that item is parsed
    again (into a tree, the rest of the text blanked out, lines kept)."""
    item = next(i for i in reversed(items) if i.span.start <= deepest_at)
    start, end = item.span.start, item.span.end
    before = re.sub(r"[^\n]+", lambda m: " " * len(m.group()), text[:start])
    check_nesting(_tree_parser().parse(before + text[start:end]), file)
    raise ParseError(  # not reached: check_nesting finds what the callbacks did
        [Diagnostic("nesting", f"nesting too deep (limit {MAX_NESTING})", item.span)]
    )


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
