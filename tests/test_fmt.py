"""`ripl fmt`: idempotent, meaning-preserving, never damaging a file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import ripl
from ripl.cli import main
from ripl.fmt import FormatError, format_source, is_formatted
from ripl.parse import parse_source

EXAMPLES = sorted(Path(__file__).parent.parent.joinpath("examples").rglob("*.ripl"))


@pytest.mark.parametrize(
    "path", EXAMPLES, ids=lambda p: str(p.relative_to(p.parents[2]))
)
def test_examples_are_formatted_and_formatting_is_idempotent(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    formatted = format_source(text, str(path))
    assert format_source(formatted, str(path)) == formatted
    assert parse_source(formatted).items == parse_source(text).items


MULTILINE = """\
import std.obligations
entity User: human { name: string }
actions chat { post_message }
context { body: string }

deny odd_body:   # the body is a three-line constant
    action chat.post_message
    when context.body == "line-A

line-B" or context.body == "tab\there # not a comment   "

allow anyone_posts: action chat.post_message
"""


def _post(body: str) -> dict[str, object]:
    return {
        "principal": {"type": "User", "id": "u", "attrs": {"name": "u"}},
        "action": "chat.post_message",
        "resource": {"type": "User", "id": "u"},
        "context": {"body": body},
    }


def test_formatting_keeps_multiline_string_constants_exact() -> None:
    formatted = format_source(MULTILINE)
    before = ripl.load(MULTILINE, mode="reference")
    after = ripl.load(formatted + "\n", mode="reference")
    for body, effect in [
        ("line-A\n\nline-B", "deny"),
        ("line-A\nline-B", "allow"),
        ("tab\there # not a comment   ", "deny"),
        ("tab\there # not a comment", "allow"),
    ]:
        assert before.decide(_post(body)).effect == effect
        assert after.decide(_post(body)).effect == effect
    assert "# the body is a three-line constant" in formatted
    assert format_source(formatted) == formatted


def test_comments_survive_in_place() -> None:
    text = (
        "# head\n\nentity User: human {\n    name: string,  # who\n    age: int,\n}\n"
        "# before the rule\nallow r: # after the head\n    when principal.age > 3\n"
        "# at the end\n"
    )
    formatted = format_source(text)
    assert formatted.splitlines() == [
        "# head",
        "",
        "entity User: human {",
        "    name: string,  # who",
        "    age: int,",
        "}",
        "# before the rule",
        "allow r:  # after the head",
        "    when principal.age > 3",
        "# at the end",
    ]


def test_long_conditions_break_at_top_level_and() -> None:
    cond = " and ".join(f"principal.attribute_number_{i} > {i}" for i in range(6))
    formatted = format_source(f"allow r: when {cond}\n")
    lines = formatted.splitlines()
    assert lines[1] == "    when principal.attribute_number_0 > 0"
    assert lines[2] == "         and principal.attribute_number_1 > 1"
    assert all(len(line) <= 88 for line in lines)


@pytest.mark.parametrize("ending", ["", "\n", "\n\n"])
def test_check_accepts_a_formatted_file_with_or_without_final_newline(
    tmp_path: Path, ending: str
) -> None:
    path = tmp_path / "p.ripl"
    path.write_text("allow r:\n    when true" + ending, encoding="utf-8")
    result = CliRunner().invoke(main, ["fmt", "--check", str(path)])
    assert result.exit_code == 0, result.output
    assert is_formatted("allow r:\n    when true" + ending, "allow r:\n    when true\n")


def test_check_reports_and_leaves_unformatted_file(tmp_path: Path) -> None:
    path = tmp_path / "p.ripl"
    path.write_text("allow   r :when true", encoding="utf-8")
    result = CliRunner().invoke(main, ["fmt", "--check", str(path)])
    assert result.exit_code == 1
    assert "would reformat" in result.output
    assert path.read_text(encoding="utf-8") == "allow   r :when true"


def test_fmt_rewrites_in_place_keeping_permissions(tmp_path: Path) -> None:
    path = tmp_path / "p.ripl"
    path.write_text("allow   r :when true", encoding="utf-8")
    os.chmod(path, 0o640)
    result = CliRunner().invoke(main, ["fmt", str(path)])
    assert result.exit_code == 0, result.output
    assert path.read_text(encoding="utf-8") == "allow r:\n    when true\n"
    assert (path.stat().st_mode & 0o777) == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_fmt_leaves_a_file_that_does_not_parse_untouched(tmp_path: Path) -> None:
    path = tmp_path / "p.ripl"
    path.write_text('allow r: when "open', encoding="utf-8")
    result = CliRunner().invoke(main, ["fmt", str(path)])
    assert result.exit_code == 2
    assert "unterminated string" in result.output
    assert "Traceback" not in result.output
    assert path.read_text(encoding="utf-8") == 'allow r: when "open'


def test_format_error_is_raised_rather_than_changing_meaning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ripl.fmt as fmt

    monkeypatch.setattr(fmt, "literal", lambda value: "0")
    with pytest.raises(FormatError):
        fmt.format_source("allow r: when principal.age > 3\n")


# ---- properties ---------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c", "score", "public", "payments.refund"])
LEAVES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(
        lambda d: format(d, "f")
    ),
    st.text(max_size=6).map(
        lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    ),
    st.sampled_from(["true", "false", "principal.age", "resource.tags", "context.x"]),
    NAMES,
)


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(
        children,
        st.sampled_from(
            [" and ", " or ", " == ", " < ", " >= ", " + ", " - ", " * ", " in "]
        ),
        children,
    ).map(lambda t: f"({t[0]}{t[1]}{t[2]})")
    unary = st.tuples(st.sampled_from(["not ", "-"]), children).map(
        lambda t: f"{t[0]}({t[1]})"
    )
    sets = st.lists(children, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]")
    return st.one_of(binary, unary, sets)


EXPRESSIONS = st.recursive(LEAVES, _combine, max_leaves=12)


@given(EXPRESSIONS, st.sampled_from(["when", "unless"]))
def test_formatting_any_condition_is_idempotent_and_keeps_the_ast(
    expr: str, keyword: str
) -> None:
    text = f"allow r:\n  {keyword}   {expr}\n"
    original = parse_source(text)
    formatted = format_source(text)
    assert parse_source(formatted).items == original.items
    assert format_source(formatted) == formatted


@pytest.mark.parametrize(
    "head",
    [
        "entity Bot: agent owner User | Ops scopes\n"
        "   docs.read   # c1\n   , docs.write {}",
        "entity Bot: agent owner User  # c1\n  | Ops {}",
        "entity Bot: agent # c1\n owner User {}",
        "entity Bot: agent owner User scopes docs # c1\n {}",
    ],
)
def test_a_comment_inside_an_entity_head_is_kept_and_formatting_is_stable(
    head: str,
) -> None:
    text = (
        "entity User: human {}\nentity Ops: human {}\n"
        f"{head}\nactions docs {{ read, write }}\n"
    )
    once = format_source(text, "t.ripl")
    assert "# c1" in once
    assert format_source(once, "t.ripl") == once
