"""Properties, searched with hypothesis (profiles in conftest.py): the parser
fails only with `ParseError`; neither rule order nor file order changes any
decision; and an extra allow rule never weakens a deny that a deny rule made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ripl
from ripl.parse import parse_source

# ---- the parser raises only ParseError ----

TOKENS = [
    "allow",
    "deny",
    "step_up",
    "restrict",
    "requires",
    "with",
    "when",
    "unless",
    "principal",
    "resource",
    "action",
    "context",
    "delegation",
    "is",
    "in",
    "has",
    "matches",
    "and",
    "or",
    "not",
    "true",
    "false",
    "entity",
    "actions",
    "labels",
    "import",
    "module",
    "test",
    "request",
    "expect",
    "risk",
    "option",
    "@owner",
    "r",
    "x",
    "User",
    ":",
    ".",
    ",",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "<",
    "<=",
    "==",
    "!=",
    ">",
    "+",
    "-",
    "*",
    "|",
    "?",
    "@",
    '"s"',
    '"#"',
    '"\\q"',
    '"unterminated',
    "1",
    "0.5",
    "5m",
    "99999999999999999999999",
    "#",
    "\n",
    "\t",
    "\u00e9",
    "\x00",
]


@given(st.text())
def test_parser_raises_only_parse_error_on_any_text(text: str) -> None:
    try:
        parse_source(text)
    except ripl.ParseError:
        pass


@given(st.lists(st.sampled_from(TOKENS), max_size=60).map(" ".join))
def test_parser_raises_only_parse_error_on_token_soup(text: str) -> None:
    try:
        parse_source(text)
    except ripl.ParseError:
        pass


@settings(max_examples=25, deadline=None)
@given(
    st.integers(min_value=1, max_value=20_000),
    st.sampled_from(["(", "not ", "-", "["]),
)
def test_deep_nesting_never_raises_recursion_error(depth: int, opener: str) -> None:
    closer = {"(": ")", "[": "]"}.get(opener, "")
    text = f"allow r:\n    when {opener * depth}1{closer * depth}\n"
    try:
        parse_source(text)
    except ripl.ParseError as exc:
        assert exc.diagnostics


@given(data=st.binary(max_size=200))
def test_loading_arbitrary_bytes_raises_only_source_errors(
    data: bytes, tmp_path_factory: Any
) -> None:
    path = Path(tmp_path_factory.mktemp("bytes")) / "p.ripl"
    path.write_bytes(data)
    try:
        ripl.load_policy(path)
    except ripl.SourceError:
        pass


# ---- random policy sets ----

SCHEMA = """\
import std.sensitivity
import std.stepup
import std.obligations
entity User: human { team: string }
entity Bot: agent owner User { team: string }
entity Doc { level: sensitivity, size: int }
actions docs { read, write, share }
context { n: int, flag: bool, missing?: bool }
"""

ATOMS = [
    "context.n > 1",
    "context.n <= 2",
    "context.flag",
    "context.missing",
    'principal.team == "a"',
    "resource.level <= internal",
    "resource.level == restricted",
    "resource.size + context.n > 3",
    "delegation.depth == 0",
]

condition = st.recursive(
    st.sampled_from(ATOMS),
    lambda inner: st.one_of(
        inner.map(lambda c: f"not ({c})"),
        st.tuples(inner, inner).map(lambda p: f"({p[0]}) and ({p[1]})"),
        st.tuples(inner, inner).map(lambda p: f"({p[0]}) or ({p[1]})"),
    ),
    max_leaves=4,
)
heads = st.sampled_from(
    [
        "allow {id}",
        "deny {id}",
        "step_up {id} requires mfa",
        "step_up {id} requires human_approval, mfa",
        'restrict {id} with redact("email")',
        'restrict {id} with redact("phone"), credential_ttl(5m)',
        "restrict {id} with credential_ttl(2m), cap(100)",
    ]
)
targets = st.lists(
    st.sampled_from(
        [
            "principal is User",
            "principal is Bot",
            "principal is agent",
            "action docs.read",
            "action docs.write, docs.share",
            "action docs",
            "resource is Doc",
        ]
    ),
    max_size=2,
    unique_by=lambda t: t.split()[0],
)


@st.composite
def rules(draw: st.DrawFn, prefix: str = "r", min_size: int = 1) -> list[str]:
    count = draw(st.integers(min_value=min_size, max_value=6))
    out = []
    for i in range(count):
        lines = [draw(heads).format(id=f"{prefix}{i}") + ":"]
        lines += [f"    {t}" for t in draw(targets)]
        if draw(st.booleans()):
            lines.append(f"    when {draw(condition)}")
        if draw(st.integers(0, 4)) == 0:
            lines.append(f"    unless {draw(condition)}")
        out.append("\n".join(lines) + "\n")
    return out


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    team = draw(st.sampled_from(["a", "b"]))
    context: dict[str, Any] = {
        "n": draw(st.integers(0, 3)),
        "flag": draw(st.booleans()),
    }
    if draw(st.booleans()):
        context["missing"] = draw(st.booleans())
    data: dict[str, Any] = {
        "action": draw(st.sampled_from(["docs.read", "docs.write", "docs.share"])),
        "resource": {
            "type": "Doc",
            "id": "d1",
            "attrs": {
                "level": draw(
                    st.sampled_from(
                        ["public", "internal", "confidential", "restricted"]
                    )
                ),
                "size": draw(st.integers(0, 4)),
            },
        },
        "context": context,
        "entities": [{"type": "User", "id": "u1", "attrs": {"team": team}}],
        "now": "2026-12-04T09:00:00Z",
    }
    if draw(st.booleans()):
        data["principal"] = {"type": "User", "id": "u1"}
    else:
        data["principal"] = {
            "type": "Bot",
            "id": "b1",
            "attrs": {"team": draw(st.sampled_from(["a", "b"]))},
            "owner": {"type": "User", "id": "u1"},
        }
        data["delegation"] = [
            {
                "from": {"type": "User", "id": "u1"},
                "to": {"type": "Bot", "id": "b1"},
                "scopes": ["docs"],
                "expires": "2026-12-04T10:00:00Z",
            }
        ]
    return data


def answer(decision: ripl.Decision) -> tuple[object, ...]:
    """Everything but where rules sit in the text, the hash and the time."""
    data = decision.to_json()
    return (
        data["effect"],
        decision.rule_ids,
        tuple(data["reasons"]),
        repr(data["obligations"]),
        tuple(data["requirements"]),
        tuple(data["errors"]),
    )


modes = st.sampled_from(["reference", "compiled"])
SLOW = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SLOW
@given(
    rules(), st.randoms(use_true_random=False), st.lists(requests(), max_size=4), modes
)
def test_shuffling_rules_never_changes_a_decision(
    body: list[str], rng: Any, reqs: list[dict[str, Any]], mode: str
) -> None:
    shuffled = list(body)
    rng.shuffle(shuffled)
    first = ripl.load(text=SCHEMA + "".join(body), mode=mode)  # type: ignore[arg-type]
    second = ripl.load(text=SCHEMA + "".join(shuffled), mode=mode)  # type: ignore[arg-type]
    for data in reqs:
        assert answer(first.decide(data)) == answer(second.decide(data))


@SLOW
@given(
    body=rules(),
    rng=st.randoms(use_true_random=False),
    reqs=st.lists(requests(), min_size=1, max_size=3),
)
def test_shuffling_files_never_changes_a_decision(
    body: list[str], rng: Any, reqs: list[dict[str, Any]], tmp_path_factory: Any
) -> None:
    folder = Path(tmp_path_factory.mktemp("policy"))
    (folder / "schema.ripl").write_text("module schema\n" + SCHEMA, "utf-8")
    files = []
    for i, rule in enumerate(body):
        path = folder / f"rule{i}.ripl"
        imports = "import schema\nimport std.sensitivity\nimport std.stepup\n"
        imports += "import std.obligations\n"
        path.write_text(f"module rule{i}\n{imports}{rule}", "utf-8")
        files.append(path)
    order = [folder / "schema.ripl", *files]
    shuffled = list(order)
    rng.shuffle(shuffled)
    first, second = ripl.load(*order), ripl.load(*shuffled)
    assert first.policy_hash == second.policy_hash
    for data in reqs:
        assert first.decide(data).same_answer(second.decide(data))


@SLOW
@given(
    rules(), rules(prefix="extra"), st.lists(requests(), min_size=1, max_size=4), modes
)
def test_adding_an_allow_rule_never_weakens_a_deny_from_a_deny_rule(
    body: list[str], extra: list[str], reqs: list[dict[str, Any]], mode: str
) -> None:
    allows = [r for r in extra if r.startswith("allow ")]
    before = ripl.load(text=SCHEMA + "".join(body), mode=mode)  # type: ignore[arg-type]
    after = ripl.load(text=SCHEMA + "".join(body + allows), mode=mode)  # type: ignore[arg-type]
    for data in reqs:
        old = before.decide(data)
        if old.effect != "deny" or not old.rules:
            continue
        new = after.decide(data)
        assert new.effect == "deny"
        assert new.rule_ids == old.rule_ids
