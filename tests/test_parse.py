"""The parser: literals decode exactly, comments never reach into strings,
and every malformed input is a `ParseError` with a position, never another
exception."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from ripl import ast
from ripl.errors import ParseError
from ripl.parse import MAX_NESTING, decode_source, parse_source


def parse(text: str) -> ast.Module:
    return parse_source(text, "policy.ripl")


def only_rule(text: str) -> ast.Rule:
    rules = [i for i in parse(text).items if isinstance(i, ast.Rule)]
    assert len(rules) == 1
    return rules[0]


def condition(expr: str) -> ast.Expr:
    rule = only_rule(f"allow r:\n    when {expr}\n")
    assert len(rule.when) == 1
    return rule.when[0]


def literal(expr: str) -> object:
    """The value of the right-hand side of `context.x == <expr>`."""
    node = condition(f"context.x == {expr}")
    assert isinstance(node, ast.Compare)
    assert isinstance(node.right, ast.Literal)
    return node.right.value


def parse_error(text: str) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(text)
    return info.value


# ---- literals ----


@pytest.mark.parametrize(
    ("source", "value"),
    [
        (r'"plain"', "plain"),
        (r'"say \"hi\""', 'say "hi"'),
        (r'"back\\slash"', "back\\slash"),
        (r'"two\nlines"', "two\nlines"),
        (r'"tab\there"', "tab\there"),
        (r'"cr\r"', "cr\r"),
        (r'"nul\0"', "nul\0"),
        (r'"\u00e9t\u00e9"', "été"),
        (r'"\u{1F600}"', "\U0001f600"),
        ('"café ✓ 東京"', "café ✓ 東京"),
        ('""', ""),
    ],
)
def test_string_escapes_and_unicode_decode_exactly(source: str, value: str) -> None:
    assert literal(source) == value


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("0", 0),
        ("42", 42),
        ("1_000_000", 1_000_000),
        ("18446744073709551617", 2**64 + 1),
        ("9" * 60, int("9" * 60)),
        ("-5", -5),
    ],
)
def test_integers_are_exact_at_any_size(source: str, value: int) -> None:
    result = literal(source)
    assert type(result) is int
    assert result == value


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("0.1", Decimal("0.1")),
        ("100.00", Decimal("100.00")),
        ("1_000.5", Decimal("1000.5")),
        ("-0.25", Decimal("-0.25")),
        ("0.30000000000000000000000000001", Decimal("0.30000000000000000000000000001")),
    ],
)
def test_decimals_are_decimal_not_binary_floats(source: str, value: Decimal) -> None:
    result = literal(source)
    assert isinstance(result, Decimal)
    assert result == value
    assert str(result) == str(value)


@pytest.mark.parametrize(
    ("source", "seconds"),
    [("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), ("1h30m", 5400)],
)
def test_durations_are_seconds(source: str, seconds: int) -> None:
    assert literal(source) == ast.Duration(seconds)


def test_set_literal_keeps_its_items_in_order() -> None:
    node = condition('context.env in ["prod", "staging", "dev"]')
    assert isinstance(node, ast.In)
    assert isinstance(node.container, ast.SetLit)
    values = [i.value for i in node.container.items if isinstance(i, ast.Literal)]
    assert values == ["prod", "staging", "dev"]


def test_empty_set_literal_parses() -> None:
    node = condition("context.x in []")
    assert isinstance(node, ast.In)
    assert isinstance(node.container, ast.SetLit)
    assert node.container.items == ()


def test_annotations_attach_to_the_rule_with_their_arguments() -> None:
    rule = only_rule(
        '@owner("billing") @ticket("SEC-142") @reviewed\n'
        "allow r:\n    action payments.refund\n"
    )
    found = [(a.name.name, [lit.value for lit in a.args]) for a in rule.annotations]
    assert found == [("owner", ["billing"]), ("ticket", ["SEC-142"]), ("reviewed", [])]


def test_comments_are_dropped_wherever_they_stand() -> None:
    with_comments = (
        "# heading\nallow r: # after the head\n"
        "    action docs.read  # after a clause\n"
        "    # on its own line\n"
        "    when context.x == 1 # trailing\n"
    )
    without = "allow r:\n    action docs.read\n    when context.x == 1\n"
    assert parse(with_comments).items == parse(without).items


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ('"#general"', "#general"),
        (r'"a \"#\" b // not a comment"', 'a "#" b // not a comment'),
        ('"x" # a real comment', "x"),
        ('"#"', "#"),
        ('"# not a comment either"', "# not a comment either"),
    ],
)
def test_hash_inside_a_string_is_part_of_the_string(source: str, value: str) -> None:
    assert literal(source) == value


def test_unterminated_string_with_a_hash_points_at_the_opening_quote() -> None:
    err = parse_error('allow r:\n    when context.x == "abc # xyz\n')
    (found,) = err.diagnostics
    assert found.message == "unterminated string"
    assert (found.span.line, found.span.column) == (2, 23)


def test_two_parses_of_one_policy_are_equal_whatever_the_spacing() -> None:
    a = parse("allow r:\n    action docs.read\n    when context.x == 1\n")
    b = parse("allow r: action docs.read when context.x==1")
    assert a.items == b.items


def test_spans_are_one_based_and_cover_the_token() -> None:
    rule = only_rule("\n\nallow small_refunds:\n    action docs.read\n")
    assert (rule.id.span.line, rule.id.span.column) == (3, 7)
    assert rule.id.span.end_column == 7 + len("small_refunds")


# ---- malformed input ----


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        (
            'allow r:\n    when context.x == "a\\qb"\n',
            2,
            25,
            "unknown escape `\\q` in string",
        ),
        (
            "allow r:\n    when context.x == 1 && true\n",
            2,
            25,
            "unexpected character `&`",
        ),
        ("allow r:\n    when context.x == $\n", 2, 23, "unexpected character `$`"),
        ("allow r:\n    when (context.x == 1\n", 3, 1, "unexpected end of file"),
        ("alow r:\n    action docs.read\n", 1, 1, "unexpected `alow`"),
        ("allow r:\n    principal is\n", 3, 1, "unexpected end of file"),
    ],
)
def test_syntax_error_has_a_position(
    text: str, line: int, column: int, message: str
) -> None:
    (found,) = parse_error(text).diagnostics
    assert found.message == message
    assert (found.span.line, found.span.column) == (line, column)


def test_misspelled_effect_gets_a_did_you_mean() -> None:
    (found,) = parse_error("alow r:\n    action docs.read\n").diagnostics
    assert found.hint == "did you mean `allow`?"


def test_non_utf8_bytes_are_a_parse_error_at_the_byte() -> None:
    with pytest.raises(ParseError) as info:
        decode_source(b'allow r:\n    when context.x == "caf\xe9"\n', "p.ripl")
    (found,) = info.value.diagnostics
    assert found.message == "file is not valid UTF-8 (byte 0xe9)"
    assert (found.span.line, found.span.column) == (2, 27)


@pytest.mark.parametrize(
    "expr",
    [
        "(" * 20_000 + "true" + ")" * 20_000,
        "not " * 10_000 + "true",
        "-" * 10_000 + "1 == 1",
        "[" * 5_000 + "1" + "]" * 5_000 + " == context.x",
    ],
    ids=["parentheses", "not", "negation", "sets"],
)
def test_deep_nesting_is_a_parse_error_not_a_crash(expr: str) -> None:
    (found,) = parse_error(f"allow r:\n    when {expr}\n").diagnostics
    assert found.code == "nesting"
    assert found.message == f"nesting too deep (limit {MAX_NESTING})"


def test_nesting_error_points_where_the_limit_is_passed() -> None:
    text = "allow r:\n    when " + "(" * 20_000 + "true" + ")" * 20_000 + "\n"
    (found,) = parse_error(text).diagnostics
    assert (found.span.line, found.span.column) == (2, 10 + MAX_NESTING)


def test_nesting_of_fifty_parses() -> None:
    node = condition("(" * 50 + "context.x == 1" + ")" * 50)
    assert isinstance(node, ast.Compare)


def test_shallow_input_parses_the_same_on_a_small_thread_stack() -> None:
    text = "allow r:\n    when " + "(" * 50 + "context.x == 1" + ")" * 50 + "\n"
    expected = parse(text).items
    results: list[object] = []
    old = threading.stack_size(256 * 1024)
    try:
        thread = threading.Thread(target=lambda: results.append(parse(text).items))
        thread.start()
        thread.join()
    finally:
        threading.stack_size(old)
    assert results == [expected]


def test_second_target_clause_of_one_kind_is_an_error() -> None:
    text = "allow r:\n    principal is A\n    principal is B\n"
    (found,) = parse_error(text).diagnostics
    assert found.message == "rule `r` has a second `principal` clause"
    assert found.span.line == 3


# ---- which error is reported ----

_N = MAX_NESTING + 1
_TOO_DEEP = f"nesting too deep (limit {MAX_NESTING})"
_ESCAPE = "unknown escape `\\q` in string"


@pytest.mark.parametrize(
    ("text", "message", "start", "end"),
    [
        pytest.param(
            'allow r:\n    when context.x == "a\\qb"\nallow s:\n    when )\n',
            "unexpected `)`",
            (4, 10),
            (4, 11),
            id="a syntax error anywhere comes before a bad escape",
        ),
        pytest.param(
            'allow r:\n    when context.x == "a\\qb"\nallow s:\n    when '
            + "(" * _N
            + "x"
            + ")" * _N
            + "\n",
            _TOO_DEEP,
            (4, 110),
            (4, 113),
            id="nesting comes before a bad escape",
        ),
        pytest.param(
            "allow r:\n    when " + "(" * _N + "x" + ")" * _N + "\nallow s: when ]\n",
            "unexpected `]`",
            (3, 15),
            (3, 16),
            id="a syntax error anywhere comes before nesting",
        ),
        pytest.param(
            'allow r:\n    action a\n    action b\n    when context.x == "a\\qb"\n',
            _ESCAPE,
            (4, 25),
            (4, 27),
            id="a clause's string is read before its rule's clauses are counted",
        ),
        pytest.param(
            'test "a\\q":\n    request "b\\q"\n    expect allow\n',
            _ESCAPE,
            (2, 15),
            (2, 17),
            id="a test's request is read before its name",
        ),
        pytest.param(
            'allow r:\n    when context.x == "a\\qb"\n    when context.y == '
            + "9" * 1001
            + "\n",
            "number literal is longer than 1000 digits",
            (3, 23),
            (3, 1024),
            id="a long number comes before a bad escape",
        ),
        pytest.param(
            "allow r:\n    when "
            + "(" * _N
            + "x"
            + ")" * _N
            + "\nallow s:\n    when "
            + "not " * _N
            + "x\n",
            _TOO_DEEP,
            (4, 410),
            (4, 415),
            id="of two rules nested too deep the last is reported",
        ),
        pytest.param(
            "entity E { a: " + "{ b: " * _N + "int" + " }" * _N + " }\n",
            _TOO_DEEP,
            (1, 515),
            (1, 525),
            id="record types",
        ),
        pytest.param(
            "obligation o: " + "set<" * _N + "int" + ">" * _N + " merge min\n",
            _TOO_DEEP,
            (1, 415),
            (1, 423),
            id="set types",
        ),
        pytest.param(
            "actions g " + "{ a " * _N + "{}" + " }" * _N + "\n",
            _TOO_DEEP,
            (1, 411),
            (1, 419),
            id="action groups",
        ),
        pytest.param(
            'test "t":\n    request '
            + '{"k": ' * _N
            + "1"
            + "}" * _N
            + "\n    expect allow\n",
            _TOO_DEEP,
            (2, 613),
            (2, 621),
            id="inline requests",
        ),
        pytest.param(
            "risk k = " + " + ".join(["a"] * (_N + 1)) + "\n",
            _TOO_DEEP,
            (1, 10),
            (1, 415),
            id="a chain of additions nests one level per operator",
        ),
        pytest.param(
            "restrict q with cap(" + "(" * _N + "1" + ")" * _N + "):\n    when x\n",
            _TOO_DEEP,
            (1, 121),
            (1, 124),
            id="obligation arguments",
        ),
        pytest.param(
            'test "t":\n    request {"a\\q": 1}\n    expect allow\n',
            _ESCAPE,
            (2, 16),
            (2, 18),
            id="keys of an inline request",
        ),
    ],
)
def test_the_error_reported_is_the_one_the_tree_walking_parser_reported(
    text: str, message: str, start: tuple[int, int], end: tuple[int, int]
) -> None:
    """With AST nodes built during the parse, a bad escape or a second clause
    is held back until the whole file has parsed and its nesting is checked."""
    (found,) = parse_error(text).diagnostics
    assert found.message == message
    assert (found.span.line, found.span.column) == start
    assert (found.span.end_line, found.span.end_column) == end


@pytest.mark.parametrize("shape", ["({})", "not {}", "-{}", "[{}]", "{}.f", "f({})"])
def test_nesting_is_counted_exactly_at_the_limit(shape: str) -> None:
    expr = "x"
    for _ in range(MAX_NESTING):
        expr = shape.format(expr)
    assert condition(expr) is not None
    (found,) = parse_error(f"allow r:\n    when {shape.format(expr)}\n").diagnostics
    assert found.message == _TOO_DEEP


def test_an_inline_request_may_not_give_a_key_twice() -> None:
    text = (
        'test "t":\n'
        '    request {"principal": {"type": "U", "id": "u"}, "action": "a",\n'
        '             "principal": {"type": "U", "id": "v"}}\n'
        "    expect allow\n"
    )
    with pytest.raises(ParseError) as raised:
        parse_source(text, "t.ripl")
    (diagnostic,) = raised.value.diagnostics
    assert diagnostic.message == "the key `principal` appears twice in one object"
    assert (diagnostic.span.line, diagnostic.span.column) == (3, 14)
    assert diagnostic.hint == "give each key once"


@pytest.mark.parametrize("number", ["1_", "2__0", "3_.5", "4.5_"])
def test_an_underscore_in_a_number_sits_between_digits(number: str) -> None:
    with pytest.raises(ParseError):
        parse_source(f"option clock_leeway = {number}\n", "n.ripl")


@pytest.mark.parametrize(("number", "value"), [("1_000", 1000), ("1_0.2_5", "10.25")])
def test_digit_groups_read_as_their_number(number: str, value: object) -> None:
    text = f"entity U: human {{ n: decimal }}\nallow r: when principal.n < {number}\n"
    rule = parse_source(text, "n.ripl").items[1]
    assert isinstance(rule, ast.Rule)
    assert str(rule.when[0].right.value) == str(value)  # type: ignore[attr-defined]
