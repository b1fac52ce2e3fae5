"""Spans are what error messages, carets, the formatter and SARIF regions
stand on: every node's span must cover its text, and stay what it was when
the parser built a lark tree with `propagate_positions` and walked it.

The digests below were taken from that tree-walking parser (ripl/parse.py as
of commit 541d5e5) over the shipped examples and stdlib, the kitchen-sink
policy `SINK`, and every broken variant of `SINK` that `broken_variants`
makes; the tables spell out what the digests pin, node by node.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ripl import ast
from ripl.errors import ParseError
from ripl.parse import _parse_uncached, parse_source
from ripl.source import Span, span_at

ROOT = Path(__file__).resolve().parent.parent

# Every production of the grammar at least once.
SINK = r"""# every production of the grammar, once or more
module acme.billing.core

import std.sensitivity
import schema (User, Agent,)
import other (Solo)

@description("a person") @level(3, 2.5, 10m, "x")
entity User: human { team: string, mfa: bool, tags?: set<string>, }
entity Bot: agent owner User | Team {
    model: string,
    limits: { daily: decimal, nested: { deep: set<set<int>> } },
}
entity Invoice
entity Blank {}
entity Kind: tool

labels tier { low < mid < high }

actions payments { refund, charge { small, large { huge } }, payout, }
actions api.v2 { }
actions test { test, owner }
action payments.refund, docs.read
context { anomaly: decimal, env: string, owner: string }

@weight(2)
risk fraud = 0.7 * context.anomaly + 0.3 * context.geo - 1 * 2 * 3
risk plain = -context.anomaly

obligation redact: set<string> merge union
obligation cap: decimal merge min
requirements { mfa, human_approval, }
requirements { }
option default_effect = "deny"
option limit = -2.50

@owner("billing")
allow small_refunds:
    principal is User | Bot
    action payments.refund, docs
    resource is Invoice
    when resource.amount <= 100 and not resource.refunded
         or context.env in ["prod", "staging"] and principal.team matches "^b.*"
    unless principal is Bot or resource has owner
    when (((context.anomaly)) < 0.5) == true
    when delegation.grants(payments.refund) and delegation.limit("spend", 3) >= -5
    when f() != false and [] == [1, 2.0, 3s, 1h30m, "a\tb\u{1F600}\u00e9"]
    when - - context.x > -(1 + 2) * 3 and context.a - context.b * context.c + 4 > 0
    when action == docs.read and principal.owner.team == resource.owner

deny blocked:
    when fraud >= 0.8
step_up big requires mfa, human_approval:
    action payments
restrict capped with cap(500), redact("email", "card"), ttl():
    resource is Invoice
deny empty:

test "a small refund":
    request "requests/small.json"
    expect allow by small_refunds, other requires mfa because fraud, x with cap(5) by y
test "inline \"request\"":
    request {
        "principal": {"type": "User", "id": "alice", "attrs": {"n": -1, "d": -2.5}},
        "list": [1, 2.5, "s", true, false, null, [], {}, [null],],
        "empty": {},
    }
    expect deny
"""


def nodes(node: object, path: str = "module") -> Iterator[tuple[str, object, Span]]:
    """Every node below `node` that has a span, in source order, with a path
    naming it; walked with a stack, as deep trees are legal up to the limit."""
    stack: list[tuple[str, object]] = [(path, node)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, tuple):
            stack.extend(
                (f"{path}[{i}]", v) for i, v in reversed(list(enumerate(value)))
            )
        elif attrs.has(type(value)) and not isinstance(value, Span):
            span = getattr(value, "span", None)
            if span is not None:
                yield path, value, span
            for field in reversed(attrs.fields(type(value))):
                if field.name != "span":
                    stack.append((f"{path}.{field.name}", getattr(value, field.name)))


def span_dump(module: ast.Module) -> str:
    lines = [
        f"{path} {type(node).__name__} {s.file} {s.start} {s.end} "
        f"{s.line} {s.column} {s.end_line} {s.end_column}"
        for path, node, s in nodes(module)
    ]
    for c in module.comments:
        s = c.span
        lines.append(
            f"comment {c.text!r} {s.start} {s.end} "
            f"{s.line} {s.column} {s.end_line} {s.end_column}"
        )
    return "\n".join(lines)


def error_dump(exc: ParseError) -> str:
    return "\n".join(
        f"{d.code}|{d.message}|{d.hint}|{d.span.file} {d.span.start} {d.span.end} "
        f"{d.span.line} {d.span.column} {d.span.end_line} {d.span.end_column}"
        for d in exc.diagnostics
    )


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def texts(source: str, node: object) -> list[tuple[str, str]]:
    return [(type(n).__name__, source[s.start : s.end]) for _, n, s in nodes(node)]


# ---- node by node ------------------------------------------------------------

EXPRESSIONS = [
    (
        # An operation's span starts at its left operand, inside a bracket
        # around it; the parser has always placed it there.
        "(a) + b == c",
        [
            ("Compare", "(a) + b == c"),
            ("Arith", "a) + b"),
            ("Var", "a"),
            ("Var", "b"),
            ("Var", "c"),
        ],
    ),
    (
        "-(1 + 2) * 3",
        [
            ("Arith", "-(1 + 2) * 3"),
            ("Neg", "-(1 + 2)"),
            ("Arith", "1 + 2"),
            ("Literal", "1"),
            ("Literal", "2"),
            ("Literal", "3"),
        ],
    ),
    ("- 5", [("Literal", "- 5")]),
    ("-x.y", [("Neg", "-x.y"), ("GetAttr", "x.y"), ("Var", "x"), ("Ident", "y")]),
    (
        "not (a and b) or c",
        [
            ("Or", "not (a and b) or c"),
            ("Not", "not (a and b)"),
            ("And", "a and b"),
            ("Var", "a"),
            ("Var", "b"),
            ("Var", "c"),
        ],
    ),
    (
        "(a and b) and (c)",
        [("And", "(a and b) and (c)"), ("Var", "a"), ("Var", "b"), ("Var", "c")],
    ),
    (
        "a - b + c * d",
        [
            ("Arith", "a - b + c * d"),
            ("Arith", "a - b"),
            ("Var", "a"),
            ("Var", "b"),
            ("Arith", "c * d"),
            ("Var", "c"),
            ("Var", "d"),
        ],
    ),
    (
        "f(x, (y))",
        [("Call", "f(x, (y))"), ("Var", "f"), ("Var", "x"), ("Var", "y")],
    ),
    (
        "(f).g(1)",
        [
            ("Call", "(f).g(1)"),
            ("GetAttr", "(f).g"),
            ("Var", "f"),
            ("Ident", "g"),
            ("Literal", "1"),
        ],
    ),
    (
        '[1, "s", 2.5, 3s] == []',
        [
            ("Compare", '[1, "s", 2.5, 3s] == []'),
            ("SetLit", '[1, "s", 2.5, 3s]'),
            ("Literal", "1"),
            ("Literal", '"s"'),
            ("Literal", "2.5"),
            ("Literal", "3s"),
            ("SetLit", "[]"),
        ],
    ),
    (
        'context.x matches "^a" and principal is A | B',
        [
            ("And", 'context.x matches "^a" and principal is A | B'),
            ("Matches", 'context.x matches "^a"'),
            ("GetAttr", "context.x"),
            ("Root", "context"),
            ("Ident", "x"),
            ("Literal", '"^a"'),
            ("Is", "principal is A | B"),
            ("Root", "principal"),
            ("Ident", "A"),
            ("Ident", "B"),
        ],
    ),
    (
        "resource has owner",
        [("Has", "resource has owner"), ("Root", "resource"), ("Ident", "owner")],
    ),
    (
        "((x)) in ([1])",
        [("In", "((x)) in ([1])"), ("Var", "x"), ("SetLit", "[1]"), ("Literal", "1")],
    ),
    (
        "principal.owner.team == resource.owner",
        [
            ("Compare", "principal.owner.team == resource.owner"),
            ("GetAttr", "principal.owner.team"),
            ("GetAttr", "principal.owner"),
            ("Root", "principal"),
            ("Ident", "owner"),
            ("Ident", "team"),
            ("GetAttr", "resource.owner"),
            ("Root", "resource"),
            ("Ident", "owner"),
        ],
    ),
    (
        'delegation.limit("spend", 3) >= -5',
        [
            ("Compare", 'delegation.limit("spend", 3) >= -5'),
            ("Call", 'delegation.limit("spend", 3)'),
            ("GetAttr", "delegation.limit"),
            ("Root", "delegation"),
            ("Ident", "limit"),
            ("Literal", '"spend"'),
            ("Literal", "3"),
            ("Literal", "-5"),
        ],
    ),
    (
        "true != false",
        [("Compare", "true != false"), ("Literal", "true"), ("Literal", "false")],
    ),
]


@pytest.mark.parametrize(("expr", "expected"), EXPRESSIONS)
def test_span_of_each_expression_node_covers_its_text(
    expr: str, expected: list[tuple[str, str]]
) -> None:
    source = f"allow r:\n    when {expr}\n"
    (rule,) = parse_source(source, "p.ripl").items
    assert isinstance(rule, ast.Rule)
    assert texts(source, rule.when[0]) == expected


ENTITY = (
    '@doc("p") @level(3, 2.5, 10m)\n'
    "entity User: human owner A | B "
    "{ team: string, tags?: set<string>, r: { d: decimal }, }"
)
RULE = (
    '@owner("b")\nallow r:\n    principal is User | Bot\n'
    "    action payments.refund, docs\n    resource is Invoice\n"
    "    when (x)\n    unless y"
)
ITEMS = [
    ("module a.b.c", [("ModuleDecl", "module a.b.c"), ("Dotted", "a.b.c")]),
    (
        "import std.sensitivity",
        [("Import", "import std.sensitivity"), ("Dotted", "std.sensitivity")],
    ),
    (
        "import schema (User, Agent,)",
        [
            ("Import", "import schema (User, Agent,)"),
            ("Dotted", "schema"),
            ("Ident", "User"),
            ("Ident", "Agent"),
        ],
    ),
    (
        ENTITY,
        [
            ("EntityDecl", ENTITY),
            ("Ident", "User"),
            ("Ident", "human"),
            ("Ident", "A"),
            ("Ident", "B"),
            ("AttrDecl", "team: string"),
            ("Ident", "team"),
            ("NamedType", "string"),
            ("Dotted", "string"),
            ("AttrDecl", "tags?: set<string>"),
            ("Ident", "tags"),
            ("SetType", "set<string>"),
            ("NamedType", "string"),
            ("Dotted", "string"),
            ("AttrDecl", "r: { d: decimal }"),
            ("Ident", "r"),
            ("RecordType", "{ d: decimal }"),
            ("AttrDecl", "d: decimal"),
            ("Ident", "d"),
            ("NamedType", "decimal"),
            ("Dotted", "decimal"),
            ("Annotation", '@doc("p")'),
            ("Ident", "doc"),
            ("Literal", '"p"'),
            ("Annotation", "@level(3, 2.5, 10m)"),
            ("Ident", "level"),
            ("Literal", "3"),
            ("Literal", "2.5"),
            ("Literal", "10m"),
        ],
    ),
    ("entity Invoice", [("EntityDecl", "entity Invoice"), ("Ident", "Invoice")]),
    (
        "entity Kind: tool",
        [("EntityDecl", "entity Kind: tool"), ("Ident", "Kind"), ("Ident", "tool")],
    ),
    (
        "labels tier { low < mid < high }",
        [
            ("LabelsDecl", "labels tier { low < mid < high }"),
            ("Ident", "tier"),
            ("Ident", "low"),
            ("Ident", "mid"),
            ("Ident", "high"),
        ],
    ),
    (
        "actions payments { refund, charge { small, large {} }, }",
        [
            ("ActionsDecl", "actions payments { refund, charge { small, large {} }, }"),
            ("Dotted", "payments"),
            ("ActionItem", "refund"),
            ("Ident", "refund"),
            ("ActionItem", "charge { small, large {} }"),
            ("Ident", "charge"),
            ("ActionItem", "small"),
            ("Ident", "small"),
            ("ActionItem", "large {}"),
            ("Ident", "large"),
        ],
    ),
    (
        "action payments.refund, docs.read",
        [
            ("ActionDecl", "action payments.refund, docs.read"),
            ("Dotted", "payments.refund"),
            ("Dotted", "docs.read"),
        ],
    ),
    (
        "context { anomaly: decimal }",
        [
            ("ContextDecl", "context { anomaly: decimal }"),
            ("AttrDecl", "anomaly: decimal"),
            ("Ident", "anomaly"),
            ("NamedType", "decimal"),
            ("Dotted", "decimal"),
        ],
    ),
    (
        "@w(2)\nrisk fraud = 0.7 * (context.a)",
        [
            ("RiskDecl", "@w(2)\nrisk fraud = 0.7 * (context.a)"),
            ("Ident", "fraud"),
            ("Arith", "0.7 * (context.a"),
            ("Literal", "0.7"),
            ("GetAttr", "context.a"),
            ("Root", "context"),
            ("Ident", "a"),
            ("Annotation", "@w(2)"),
            ("Ident", "w"),
            ("Literal", "2"),
        ],
    ),
    (
        "obligation redact: set<string> merge union",
        [
            ("ObligationDecl", "obligation redact: set<string> merge union"),
            ("Ident", "redact"),
            ("SetType", "set<string>"),
            ("NamedType", "string"),
            ("Dotted", "string"),
            ("Ident", "union"),
        ],
    ),
    (
        "requirements { mfa, human_approval, }",
        [
            ("RequirementsDecl", "requirements { mfa, human_approval, }"),
            ("Ident", "mfa"),
            ("Ident", "human_approval"),
        ],
    ),
    (
        "option limit = -2.50",
        [
            ("OptionDecl", "option limit = -2.50"),
            ("Ident", "limit"),
            ("Literal", "-2.50"),
        ],
    ),
    (
        RULE,
        [
            ("Rule", RULE),
            ("Ident", "r"),
            ("Ident", "User"),
            ("Ident", "Bot"),
            ("Dotted", "payments.refund"),
            ("Dotted", "docs"),
            ("Ident", "Invoice"),
            ("Var", "x"),
            ("Var", "y"),
            ("Annotation", '@owner("b")'),
            ("Ident", "owner"),
            ("Literal", '"b"'),
        ],
    ),
    ("deny empty:", [("Rule", "deny empty:"), ("Ident", "empty")]),
    (
        "step_up big requires mfa, human_approval:\n    action payments",
        [
            ("Rule", "step_up big requires mfa, human_approval:\n    action payments"),
            ("Ident", "big"),
            ("Ident", "mfa"),
            ("Ident", "human_approval"),
            ("Dotted", "payments"),
        ],
    ),
    (
        'restrict capped with cap(500), redact("email"), ttl():',
        [
            ("Rule", 'restrict capped with cap(500), redact("email"), ttl():'),
            ("Ident", "capped"),
            ("ObligationUse", "cap(500)"),
            ("Ident", "cap"),
            ("Literal", "500"),
            ("ObligationUse", 'redact("email")'),
            ("Ident", "redact"),
            ("Literal", '"email"'),
            ("ObligationUse", "ttl()"),
            ("Ident", "ttl"),
        ],
    ),
    (
        'test "a":\n    request "r.json"\n'
        "    expect allow by r, s requires mfa because f with cap(5)",
        [
            (
                "Test",
                'test "a":\n    request "r.json"\n'
                "    expect allow by r, s requires mfa because f with cap(5)",
            ),
            ("Literal", '"r.json"'),
            ("Expectation", "expect allow by r, s requires mfa because f with cap(5)"),
            ("Ident", "allow"),
            ("Ident", "r"),
            ("Ident", "s"),
            ("Ident", "mfa"),
            ("Ident", "f"),
            ("ObligationUse", "cap(5)"),
            ("Ident", "cap"),
            ("Literal", "5"),
        ],
    ),
    (
        'test "b":\n    request {"k": [1, null], "n": -2.5}\n    expect deny',
        [
            (
                "Test",
                'test "b":\n    request {"k": [1, null], "n": -2.5}\n    expect deny',
            ),
            ("Expectation", "expect deny"),
            ("Ident", "deny"),
        ],
    ),
]


@pytest.mark.parametrize(("item", "expected"), ITEMS)
def test_span_of_each_declaration_node_covers_its_text(
    item: str, expected: list[tuple[str, str]]
) -> None:
    source = item + "\n"
    (found,) = parse_source(source, "p.ripl").items
    assert texts(source, found) == expected


# ---- the same spans as the tree-walking parser ---------------------------------

# path → (digest of the file's text, digest of `span_dump` of its parse). The
# two assistant files and the findings example were recorded again, with this
# parser, when they gained declared scopes (syntax the tree-walking parser
# never had).
SHIPPED = {
    "examples/assistant/assistant.ripl": ("71d0a08cad7359db", "78f0a115147b1984"),
    "examples/assistant/schema.ripl": ("7d24c5096d720a38", "819a9671d99b0319"),
    "examples/findings/photos.ripl": ("d647d816bfab9688", "1252beed9e46bd38"),
    "examples/mcp-filesystem/filesystem.ripl": ("3816beb35a3bee0c", "8a5a9aa5c94ce930"),
    "examples/mcp-filesystem/schema.ripl": ("639e97dde0c44a77", "0d4b8049468fc46d"),
    "examples/mcp-guard/gateway.ripl": ("e7e42bd1a318ba50", "d425eee8e3c67b80"),
    "examples/mcp-guard/schema.ripl": ("e7851abe2a48b09c", "e20b16bc027c5d81"),
    "examples/refunds/refunds.ripl": ("441e40722b188d4b", "94a9bff5178ca68e"),
    "examples/refunds/schema.ripl": ("98c60fca6b5247ea", "e88b58d4956b5db6"),
    "stdlib/std/obligations.ripl": ("91449432a09611be", "bda5c5922c45528f"),
    "stdlib/std/sensitivity.ripl": ("f5b043e759052a70", "fc633ad08500c41f"),
    "stdlib/std/stepup.ripl": ("9e37349310f054dc", "a9fe35d99dbf3f7f"),
}


@pytest.mark.parametrize("path", sorted(SHIPPED))
def test_spans_of_shipped_policies_are_those_of_the_tree_walking_parser(
    path: str,
) -> None:
    text = (ROOT / path).read_text(encoding="utf-8")
    text_digest, spans_digest = SHIPPED[path]
    if digest(text) != text_digest:
        pytest.skip(f"{path} was edited after its spans were recorded; record again")
    assert digest(span_dump(parse_source(text, path))) == spans_digest


def test_spans_of_the_kitchen_sink_are_those_of_the_tree_walking_parser() -> None:
    assert digest(span_dump(parse_source(SINK, "sink.ripl"))) == "547d20cc295125dc"


_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|[A-Za-z0-9_]+|\S')


def broken_variants(text: str) -> Iterator[str]:
    """At every token: the text cut before it, without it, and with it twice."""
    for match in _TOKEN.finditer(text):
        a, b = match.span()
        yield text[:a]
        yield text[:a] + text[b:]
        yield text[:b] + " " + text[a:]


def outcome(text: str) -> str:
    try:
        module = parse_source(text, "broken.ripl")
    except ParseError as exc:
        return error_dump(exc)
    return "OK " + hashlib.sha256(span_dump(module).encode()).hexdigest()


def test_errors_on_broken_policies_are_those_of_the_tree_walking_parser() -> None:
    """About 1700 variants, each a parse error (message, hint and span) or a
    parse, compared as one digest."""
    outcomes = [outcome(t) for t in broken_variants(SINK)]
    assert len(outcomes) == 1686
    assert sum(o.startswith("OK ") for o in outcomes) == 229
    assert digest("\n".join(outcomes)) == "703bac04fb6354a6"


# ---- properties ------------------------------------------------------------------


def shipped_sources() -> list[tuple[str, str]]:
    paths = sorted(ROOT.glob("examples/**/*.ripl")) + sorted(
        ROOT.glob("stdlib/**/*.ripl")
    )
    found = [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8")) for p in paths]
    return found + [("sink.ripl", SINK)]


def assert_spans_are_sound(module: ast.Module, text: str) -> None:
    """Lines and columns agree with the offsets; a span neither starts nor ends
    in blank space; a node lies within its parent; a name spans the name."""
    parents: list[tuple[str, Span]] = [("module", module.span)]
    for path, node, span in nodes(module.items, "module.items"):
        covered = text[span.start : span.end]
        assert span == span_at(module.file, text, span.start, span.end - span.start)
        assert covered and covered == covered.strip(), (path, covered)
        while parents and not path.startswith(parents[-1][0] + "."):
            parents.pop()
        if parents:
            outer = parents[-1][1]
            assert outer.start <= span.start <= span.end <= outer.end, path
        parents.append((path, span))
        if isinstance(node, ast.Ident | ast.Var | ast.Root):
            assert covered == node.name
    for comment in module.comments:
        assert text[comment.span.start : comment.span.end] == comment.text


SOURCES = shipped_sources()


@pytest.mark.parametrize(("path", "text"), SOURCES, ids=[p for p, _ in SOURCES])
def test_spans_of_shipped_policies_are_sound(path: str, text: str) -> None:
    assert_spans_are_sound(parse_source(text, path), text)


@given(st.integers(min_value=1, max_value=5), st.integers(min_value=0, max_value=8))
def test_spans_move_with_the_text_around_them(lines: int, spaces: int) -> None:
    """Blank lines and indentation before a policy shift every span by
    exactly their size, and nothing else."""
    moved_text = "\n" * lines + SINK.replace("\n", "\n" + " " * spaces)
    plain = parse_source(SINK, "sink.ripl")
    moved = parse_source(moved_text, "sink.ripl")
    assert_spans_are_sound(moved, moved_text)
    assert plain.items == moved.items
    pairs = zip(nodes(plain.items), nodes(moved.items), strict=True)
    for (_, _, a), (_, _, b) in pairs:
        assert (b.line, b.end_line) == (a.line + lines, a.end_line + lines)
        assert b.column == a.column + (spaces if a.line > 1 else 0)
        assert b.end_column == a.end_column + (spaces if a.end_line > 1 else 0)


# ---- the parser keeps no state between parses ---------------------------------


def test_a_failed_parse_leaves_nothing_behind_for_the_next() -> None:
    for broken in ['allow r: when x == "a\\q"\n', "# a comment\nallow r: when )\n"]:
        with pytest.raises(ParseError):
            parse_source(broken, "broken.ripl")
    module = parse_source("allow r:\n    when x  # only this one\n", "fine.ripl")
    assert [c.text for c in module.comments] == ["# only this one"]
    assert {s.file for _, _, s in nodes(module)} == {"fine.ripl"}


def test_parses_in_threads_keep_their_own_file_names_and_spans() -> None:
    """One set of callbacks serves every parse; parses take turns with it."""
    sources = {f"t{i}.ripl": "\n" * i + SINK for i in range(6)}
    expected = {
        name: span_dump(_parse_uncached(t, name)) for name, t in sources.items()
    }
    found: dict[str, list[str]] = {name: [] for name in sources}

    def work(name: str) -> None:
        for _ in range(3):
            found[name].append(span_dump(_parse_uncached(sources[name], name)))

    threads = [threading.Thread(target=work, args=(name,)) for name in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found == {name: [dump] * 3 for name, dump in expected.items()}
