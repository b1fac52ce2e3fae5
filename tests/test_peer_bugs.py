"""Failure classes from other policy engines (`PEER-BUGS.md`), each made
impossible in ripl by design and pinned here by a test named for the class."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

import ripl
from ripl.engine import Mode, load_or_deny
from ripl.fmt import format_source
from ripl.parse import parse_source
from ripl.request import load_json

MODES = pytest.mark.parametrize("mode", ["reference", "compiled"])
NOW = "2026-12-04T09:00:00Z"


def entity(kind: str, uid: str, **attrs: Any) -> dict[str, Any]:
    return {"type": kind, "id": uid, "attrs": attrs}


def ask(
    engine: ripl.Engine,
    principal: dict[str, Any],
    action: str,
    resource: dict[str, Any],
    **extra: Any,
) -> ripl.Decision:
    data = {"principal": principal, "action": action, "resource": resource}
    data.setdefault("now", NOW)
    data.update(extra)
    return engine.decide(data)


# ---- case 1: path patterns are anchored, never a prefix ----

PATHS = """
entity Ops: human {}
entity Viewer: human {}
entity Endpoint { path: string }
actions api { submit, read }
allow cancel:
    principal is Ops
    action api.submit
    when resource.path matches "/process/cancel"
allow process:
    principal is Ops
    action api.submit
    when resource.path matches "/process"
allow project:
    principal is Viewer
    action api.read
    when resource.path matches "/project/{id}"
allow slash:
    principal is Viewer
    action api.read
    when resource.path matches "/"
"""


@MODES
@pytest.mark.parametrize(
    ("who", "action", "path", "effect"),
    [
        ("Ops", "api.submit", "/process/approve", "deny"),
        ("Ops", "api.submit", "/process", "allow"),
        ("Ops", "api.submit", "/process/cancel", "allow"),
        ("Ops", "api.submit", "/process/", "deny"),
        ("Ops", "api.submit", "/processes", "deny"),
        ("Ops", "api.submit", "/process/cancel/x", "deny"),
        ("Viewer", "api.read", "/project/1", "allow"),
        ("Viewer", "api.read", "/project/1/member", "deny"),
        ("Viewer", "api.read", "/project/", "deny"),
        ("Viewer", "api.read", "/", "allow"),
        ("Viewer", "api.read", "/abc", "deny"),
        ("Viewer", "api.read", "", "deny"),
    ],
)
def test_path_pattern_is_anchored_not_an_unanchored_prefix(
    who: str, action: str, path: str, effect: str, mode: Mode
) -> None:
    engine = ripl.load(text=PATHS, mode=mode)
    decision = ask(engine, entity(who, "p"), action, entity("Endpoint", "e", path=path))
    assert decision.effect == effect


# ---- case 2: odd placeholders are rejected or literal, never a hang ----


@pytest.mark.parametrize(
    ("pattern", "column", "message"),
    [
        ("/{/all", 2, "unclosed placeholder"),
        ("/{}/all", 2, "empty placeholder name"),
        ("/a{b}/all", 2, "a placeholder must be a whole segment, like `{id}`"),
        ("/**/all", 2, "`**` is only allowed as the last segment"),
    ],
)
def test_malformed_placeholder_is_a_check_error_at_the_placeholder(
    pattern: str, column: int, message: str
) -> None:
    text = (
        "entity U: human {}\nentity F { path: string }\naction files.read\n"
        f'allow r:\n    when resource.path matches "{pattern}"\n'
    )
    with pytest.raises(ripl.CheckError) as info:
        ripl.load(text=text)
    (found,) = info.value.diagnostics
    assert found.message == message
    quote = len('    when resource.path matches "')
    assert (found.span.line, found.span.column) == (5, quote + column)


@MODES
@pytest.mark.parametrize(("path", "effect"), [("/:/all", "allow"), ("/x/all", "deny")])
def test_colon_in_a_pattern_is_a_literal_character(
    path: str, effect: str, mode: Mode
) -> None:
    engine = ripl.load(
        text="entity U: human {}\nentity F { path: string }\naction files.read\n"
        'allow r:\n    when resource.path matches "/:/all"\n',
        mode=mode,
    )
    decision = ask(engine, entity("U", "u"), "files.read", entity("F", "f", path=path))
    assert decision.effect == effect


# ---- case 5: exclusion intersected with a concrete set ----

READERS = ["ana", "bo", "cy"]
BLOCKED = ["bo"]
EXCLUSION_ONE_RULE = """
entity User: human {}
entity Report { readers: set<string>, blocked: set<string> }
action reports.read
allow readers_not_blocked:
    principal is User
    resource is Report
    when principal.id in resource.readers
    unless principal.id in resource.blocked
"""
EXCLUSION_TWO_RULES = """
entity User: human {}
entity Report { readers: set<string>, blocked: set<string> }
action reports.read
allow readers:
    principal is User
    when principal.id in resource.readers
deny blocked:
    when principal.id in resource.blocked
"""


@MODES
@pytest.mark.parametrize("policy", [EXCLUSION_ONE_RULE, EXCLUSION_TWO_RULES])
def test_exclusion_keeps_excluding_when_intersected_with_a_concrete_set(
    policy: str, mode: Mode
) -> None:
    engine = ripl.load(text=policy, mode=mode)
    report = entity("Report", "r1", readers=READERS, blocked=BLOCKED)
    allowed = {
        who
        for who in ["ana", "bo", "cy", "dee", "eve"]
        if ask(engine, entity("User", who), "reports.read", report).allowed
    }
    assert allowed == {"ana", "cy"}


# ---- case 6: integers beyond 64 bits ----

BIG = """
entity User: human { limit: int }
entity Account {}
action money.transfer
context { amount: int, fee?: int, rate?: decimal }
allow within_limit:
    action money.transfer
    when context.amount <= principal.limit
deny flagged:
    action money.transfer
    when context.amount == 18446744073709551617
"""


@MODES
@pytest.mark.parametrize(
    ("amount", "limit", "effect", "rules"),
    [
        (2**64 + 1, 2**64 + 2, "deny", ("flagged",)),
        (2**64, 2**64 + 2, "allow", ("within_limit",)),
        (2**64 + 2, 2**64 + 2, "allow", ("within_limit",)),
        (2**64 + 3, 2**64 + 2, "deny", ()),
        (2**63, 2**63 - 1, "deny", ()),
        (2**63 - 1, 2**63, "allow", ("within_limit",)),
        (10**40 + 1, 10**40, "deny", ()),
    ],
)
def test_integer_beyond_64_bits_is_exact(
    amount: int, limit: int, effect: str, rules: tuple[str, ...], mode: Mode
) -> None:
    engine = ripl.load(text=BIG, mode=mode)
    decision = ask(
        engine,
        entity("User", "u", limit=limit),
        "money.transfer",
        entity("Account", "a"),
        context={"amount": amount},
    )
    assert (decision.effect, decision.rule_ids) == (effect, rules)


@MODES
def test_big_integer_from_json_text_is_not_rounded_through_a_float(mode: Mode) -> None:
    engine = ripl.load(text=BIG, mode=mode)
    data = load_json(
        '{"principal": {"type": "User", "id": "u", "attrs": {"limit": 1}},'
        ' "action": "money.transfer", "resource": {"type": "Account", "id": "a"},'
        ' "context": {"amount": 18446744073709551617}}'
    )
    assert engine.decide(data).rule_ids == ("flagged",)
    data["context"]["amount"] = 18446744073709551616  # 2**64: a float would tie
    assert engine.decide(data).rule_ids == ()


@MODES
@pytest.mark.parametrize(
    ("condition", "context", "holds"),
    [
        ("context.amount + context.fee == 18446744073709551617", (2**64, 1), True),
        (
            "context.amount * context.fee == 340282366920938463463374607431768211456",
            (2**64, 2**64),
            True,
        ),
        ("context.amount - context.fee == 1", (2**64 + 1, 2**64), True),
        ("context.amount + context.fee == 18446744073709551616", (2**64, 1), False),
    ],
)
def test_arithmetic_on_big_integers_is_exact(
    condition: str, context: tuple[int, int], holds: bool, mode: Mode
) -> None:
    arith = BIG.split("deny flagged")[0] + f"allow probe:\n    when {condition}\n"
    engine = ripl.load(text=arith, mode=mode)
    decision = ask(
        engine,
        entity("User", "u", limit=0),
        "money.transfer",
        entity("Account", "a"),
        context={"amount": context[0], "fee": context[1]},
    )
    assert ("probe" in decision.rule_ids) is holds


@MODES
def test_decimal_sums_are_decimal_not_binary_floating_point(mode: Mode) -> None:
    engine = ripl.load(
        text=BIG + "allow probe:\n    when context.rate + 0.2 == 0.3\n", mode=mode
    )
    data = load_json(
        '{"principal": {"type": "User", "id": "u", "attrs": {"limit": 0}},'
        ' "action": "money.transfer", "resource": {"type": "Account", "id": "a"},'
        ' "context": {"amount": 1, "rate": 0.1}}'
    )
    assert engine.decide(data).rule_ids == ("probe",)


def test_integer_literal_beyond_64_bits_is_parsed_exactly() -> None:
    module = parse_source(
        "allow r:\n    when context.x == 340282366920938463463374607431768211457\n"
    )
    (rule,) = module.items
    assert rule.when[0].right.value == 2**128 + 1  # type: ignore[union-attr]


# ---- case 10: an error in a deny rule never makes it inert ----

RETENTION = """
entity Staff: human {}
entity Record { retention?: { locked: bool } }
actions records { delete }
allow staff_delete:
    principal is Staff
    action records.delete
deny locked_records:
    action records.delete
    when resource.retention.locked == true
"""


@MODES
@pytest.mark.parametrize(
    ("attrs", "effect", "code"),
    [
        ({"retention": {"locked": True}}, "deny", "matched"),
        ({"retention": {"locked": False}}, "allow", "matched"),
        ({}, "deny", "error_in_rule"),
        ({"retention": {"locked": "yes"}}, "deny", "error_in_rule"),
        ({"retention": "none"}, "deny", "error_in_rule"),
        ({"retention": None}, "deny", "error_in_rule"),
    ],
    ids=["locked", "unlocked", "missing", "wrong type", "not a record", "null"],
)
def test_deny_rule_that_errors_is_never_skipped(
    attrs: dict[str, Any], effect: str, code: str, mode: Mode
) -> None:
    engine = ripl.load(text=RETENTION, mode=mode)
    decision = ask(
        engine, entity("Staff", "s"), "records.delete", entity("Record", "r", **attrs)
    )
    assert decision.effect == effect
    assert decision.reason_codes[0] == code
    if code == "error_in_rule":
        assert "locked_records" in decision.rule_ids
        assert "`resource.retention" in decision.reasons[0]


@MODES
@pytest.mark.parametrize(
    "head",
    ["step_up locked_records requires mfa", 'restrict locked_records with redact("x")'],
)
def test_restrict_or_step_up_rule_that_errors_is_not_a_plain_allow(
    head: str, mode: Mode
) -> None:
    policy = "import std.stepup\nimport std.obligations\n" + RETENTION.replace(
        "deny locked_records", head
    )
    engine = ripl.load(text=policy, mode=mode)
    decision = ask(
        engine, entity("Staff", "s"), "records.delete", entity("Record", "r")
    )
    assert decision.effect == "deny"
    assert decision.reason_codes == ("error_in_rule",)


@MODES
def test_condition_that_errors_under_negation_never_grants(mode: Mode) -> None:
    policy = (
        "entity Staff: human {}\nentity Record { retention?: { locked: bool } }\n"
        "actions records { delete }\n"
        "allow unlocked_only:\n    action records.delete\n"
        "    when not resource.retention.locked\n"
    )
    engine = ripl.load(text=policy, mode=mode)
    staff = entity("Staff", "s")
    missing = ask(engine, staff, "records.delete", entity("Record", "r"))
    assert missing.effect == "deny"
    assert missing.reason_codes == ("no_rule",)
    assert missing.errors
    unlocked = entity("Record", "r", retention={"locked": False})
    assert ask(engine, staff, "records.delete", unlocked).effect == "allow"


# ---- case 11 (adapted): the decision never depends on load order ----


def _write_set(folder: Path, names: list[str]) -> None:
    files = {
        "schema": "module schema\nentity Manager: human { branch: string }\n"
        "entity Tool { approved: bool }\nactions tools { execute }\n",
        "allow": "module allow_rules\nimport schema\nallow branch_managers:\n"
        "    principal is Manager\n    when resource.approved\n",
        "restrict": "module restrict_rules\nimport schema\nimport std.obligations\n"
        'restrict audited with redact("output"), credential_ttl(1m):\n'
        '    when principal.branch == "org.branch-7"\n',
        "deny": "module deny_rules\nimport schema\ndeny unapproved:\n"
        "    unless resource.approved\n",
    }
    for position, name in enumerate(names):
        (folder / f"{position:02d}-{name}.ripl").write_text(files[name], "utf-8")


@MODES
def test_shuffled_file_order_never_changes_a_decision(
    tmp_path: Path, mode: Mode
) -> None:
    rng = random.Random(11)
    requests = [
        {
            "principal": entity("Manager", "m", branch=branch),
            "action": "tools.execute",
            "resource": entity("Tool", "t", approved=approved),
            "now": NOW,
        }
        for branch in ("org.branch-7", "org.branch-1")
        for approved in (True, False)
    ]
    seen: set[tuple[object, ...]] = set()
    for run in range(12):
        names = ["schema", "allow", "restrict", "deny"]
        rng.shuffle(names)
        folder = tmp_path / f"run{run}"
        folder.mkdir()
        _write_set(folder, names)
        engine = ripl.load(
            folder / f"{names.index('schema'):02d}-schema.ripl",
            *sorted(p for p in folder.iterdir() if "schema" not in p.name),
            mode=mode,
        )
        seen.add(
            tuple(
                (d.effect, d.rule_ids, tuple(sorted(d.to_json()["obligations"])))
                for d in map(engine.decide, requests)
            )
        )
    assert len(seen) == 1
    assert [row[0] for row in next(iter(seen))] == ["restrict", "deny", "allow", "deny"]


def test_contradictory_settings_in_two_files_are_a_check_error(tmp_path: Path) -> None:
    (tmp_path / "a.ripl").write_text("module a\noption clock_leeway = 10s\n", "utf-8")
    (tmp_path / "b.ripl").write_text("module b\noption clock_leeway = 0s\n", "utf-8")
    with pytest.raises(ripl.CheckError) as info:
        ripl.load(tmp_path)
    assert [d.message for d in info.value.diagnostics] == [
        "option `clock_leeway` is set twice"
    ]


# ---- case 12: a comment marker inside a string ----

CHANNELS = """
entity Member: human {}
entity Channel { name: string }
actions chat { post }
deny announcements:
    action chat.post
    when resource.name == "#general"
deny quoted:
    action chat.post
    when resource.name == "a \\"#\\" b // not a comment"
deny trailing:
    action chat.post
    when resource.name == "x" # a real comment
allow members:
    principal is Member
    action chat.post
"""


@MODES
@pytest.mark.parametrize(
    ("name", "effect"),
    [
        ("#general", "deny"),
        ("random", "allow"),
        ('a "#" b // not a comment', "deny"),
        ("a ", "allow"),
        ("x", "deny"),
    ],
)
def test_hash_inside_a_string_literal_is_not_a_comment(
    name: str, effect: str, mode: Mode
) -> None:
    engine = ripl.load(text=CHANNELS, mode=mode)
    decision = ask(
        engine, entity("Member", "m"), "chat.post", entity("Channel", "c", name=name)
    )
    assert decision.effect == effect


def test_unterminated_string_error_points_at_the_opening_quote() -> None:
    with pytest.raises(ripl.ParseError) as info:
        parse_source('allow r:\n    when resource.name == "abc # xyz\n')
    (found,) = info.value.diagnostics
    assert found.message == "unterminated string"
    assert (found.span.line, found.span.column) == (2, 27)


def test_formatting_keeps_strings_with_comment_markers_whole() -> None:
    formatted = format_source(CHANNELS)
    assert parse_source(formatted).items == parse_source(CHANNELS).items
    assert format_source(formatted) == formatted


# ---- case 14: deep nesting and cycles ----


@pytest.mark.parametrize(
    "expr", ["(" * 10_000 + "true" + ")" * 10_000, "not " * 10_000 + "true"]
)
def test_deep_nesting_is_a_clear_parse_error_not_a_stack_overflow(expr: str) -> None:
    with pytest.raises(ripl.ParseError) as info:
        ripl.load(text=f"entity U: human {{}}\naction a.b\nallow r:\n    when {expr}\n")
    assert info.value.diagnostics[0].message.startswith("nesting too deep (limit ")


@MODES
def test_fifty_levels_of_nesting_evaluate_normally(mode: Mode) -> None:
    expr = "(" * 25 + "not " * 24 + "not false" + ")" * 25
    engine = ripl.load(
        text=f"entity U: human {{}}\naction a.b\nallow r:\n    when {expr}\n", mode=mode
    )
    assert ask(engine, entity("U", "u"), "a.b", entity("U", "u")).effect == "allow"


def test_ownership_cycle_in_the_schema_is_a_check_error() -> None:
    with pytest.raises(ripl.CheckError) as info:
        ripl.load(
            text="entity G1: service owner G2 {}\nentity G2: service owner G1 {}\n"
        )
    messages = [d.message for d in info.value.diagnostics]
    assert any(m.startswith("ownership cycle: ") for m in messages)


OWNERS = (
    "entity Person: human { team: string }\n"
    "entity Svc: service owner Person {}\n"
    "entity Feed: connector owner Svc {}\n"
    "action data.read\n"
    'allow people:\n    principal is Person\n    when principal.team == "data"\n'
    "allow feeds:\n    principal is Feed | Hop0\n"
)
# Twenty service types, each owned by the next, the last by a person.
HOPS = (
    "".join(f"entity Hop{i}: service owner Hop{i + 1} {{}}\n" for i in range(20))
    + "entity Hop20: service owner Person {}\n"
)


@MODES
def test_owner_cycle_in_request_data_denies_with_a_reason(mode: Mode) -> None:
    engine = ripl.load(text=OWNERS + HOPS, mode=mode)
    feed = {"type": "Feed", "id": "f", "owner": {"type": "Svc", "id": "s1"}}
    loop = [
        {"type": "Svc", "id": "s1", "owner": {"type": "Svc", "id": "s2"}},
        {"type": "Svc", "id": "s2", "owner": {"type": "Svc", "id": "s1"}},
    ]
    decision = ask(engine, feed, "data.read", entity("Person", "p"), entities=loop)
    assert decision.effect == "deny"
    assert decision.reason_codes == ("root_not_found",)


@MODES
def test_long_owner_chain_reaches_its_human_without_a_silent_cap(mode: Mode) -> None:
    engine = ripl.load(text=OWNERS + HOPS, mode=mode)
    hops = [
        {
            "type": f"Hop{i}",
            "id": f"h{i}",
            "owner": {"type": f"Hop{i + 1}", "id": f"h{i + 1}"},
        }
        for i in range(1, 20)
    ]
    hops.append({"type": "Hop20", "id": "h20", "owner": {"type": "Person", "id": "p"}})
    start = {"type": "Hop0", "id": "h0", "owner": {"type": "Hop1", "id": "h1"}}
    for team, effect in (("data", "allow"), ("sales", "deny")):
        people = [entity("Person", "p", team=team)]
        decision = ask(
            engine, start, "data.read", entity("Person", "p"), entities=hops + people
        )
        assert decision.effect == effect


# ---- case 15: a constant in a rule's target constrains the match ----

CONSTANTS = (
    "entity User: human {}\nentity Doc {}\nactions Action { READ, WRITE, DELETE }\n"
)
IN_TARGET = CONSTANTS + "allow h:\n    principal is User\n    action Action.READ\n"
IN_CONDITION = (
    CONSTANTS + "allow b:\n    principal is User\n    when action == Action.READ\n"
)


@MODES
@pytest.mark.parametrize(
    "policy", [IN_TARGET, IN_CONDITION], ids=["target", "condition"]
)
@pytest.mark.parametrize(
    ("action", "effect", "code"),
    [
        ("Action.READ", "allow", "matched"),
        ("Action.WRITE", "deny", "no_rule"),
        ("Action.DELETE", "deny", "no_rule"),
        ("READ", "deny", "bad_request"),
        ("Action.ADMIN", "deny", "bad_request"),
        ("Action", "deny", "bad_request"),
    ],
)
def test_action_constant_in_a_target_is_not_a_wildcard(
    policy: str, action: str, effect: str, code: str, mode: Mode
) -> None:
    engine = ripl.load(text=policy, mode=mode)
    decision = ask(engine, entity("User", "u"), action, entity("Doc", "r1"))
    assert (decision.effect, decision.reason_codes[0]) == (effect, code)


@pytest.mark.parametrize(
    "rule",
    [
        "allow h:\n    action Action.RAED\n",
        "allow b:\n    when action == Action.RAED\n",
        "allow i:\n    when action in [Action.READ, Action.RAED]\n",
    ],
    ids=["target", "comparison", "set"],
)
def test_undefined_name_in_rule_is_check_error_not_wildcard(rule: str) -> None:
    text = CONSTANTS + rule
    with pytest.raises(ripl.CheckError) as info:
        ripl.load(text=text)
    (found,) = info.value.diagnostics
    assert found.message == "unknown action `Action.RAED`"
    assert found.hint == "did you mean `Action.READ`?"
    offset = text.index("Action.RAED")
    assert found.span.start == offset
    assert found.span.end == offset + len("Action.RAED")


def test_undefined_bare_name_in_a_condition_is_a_check_error() -> None:
    with pytest.raises(ripl.CheckError) as info:
        ripl.load(text=CONSTANTS + "allow r:\n    when READ\n")
    assert info.value.diagnostics[0].message == "unknown name `READ`"


# ---- case R1: a child link never gets more than its parent ----

REPO = """
entity Human: human {}
entity Agent: agent owner Human {}
entity Tool: tool owner Agent {}
entity Repo {}
actions repo { read, write }
allow humans:
    principal is Human
allow machines:
    principal is Agent | Tool
"""


def hop(
    src: str,
    dst: str,
    scopes: list[str],
    expires: str = "2026-12-04T10:00:00Z",
    **kw: Any,
) -> dict[str, Any]:
    kinds = {"H": "Human", "A": "Agent", "B": "Agent", "T": "Tool"}
    return {
        "id": f"{src}->{dst}",
        "from": {"type": kinds[src], "id": src},
        "to": {"type": kinds[dst], "id": dst},
        "scopes": scopes,
        "expires": expires,
        **kw,
    }


def repo_decision(
    chain: list[dict[str, Any]],
    action: str,
    principal: str = "T",
    mode: Mode = "reference",
    **options: Any,
) -> ripl.Decision:
    engine = ripl.load(text=REPO, mode=mode, **options)
    kinds = {"A": "Agent", "B": "Agent", "T": "Tool"}
    return ask(
        engine,
        {"type": kinds[principal], "id": principal},
        action,
        {"type": "Repo", "id": "alpha"},
        delegation=chain,
    )


@MODES
@pytest.mark.parametrize("action", ["repo.write", "repo.read"])
def test_child_link_claiming_more_than_its_parent_invalidates_the_chain(
    action: str, mode: Mode
) -> None:
    chain = [hop("H", "A", ["repo.read"]), hop("A", "T", ["repo.read", "repo.write"])]
    decision = repo_decision(chain, action, mode=mode)
    assert decision.effect == "deny"  # never trimmed to the intersection
    assert "chain_widens" in decision.reason_codes
    assert "link 1" in decision.reasons[decision.reason_codes.index("chain_widens")]


@MODES
def test_revoked_ancestor_invalidates_every_descendant(mode: Mode) -> None:
    chain = [hop("H", "A", ["repo"], id="h-a"), hop("A", "T", ["repo.read"], id="a-t")]
    decision = repo_decision(chain, "repo.read", mode=mode, revoked=["h-a"])
    assert decision.reason_codes == ("revoked_link",)


@MODES
def test_expired_ancestor_denies_even_when_the_last_link_is_valid(mode: Mode) -> None:
    chain = [
        hop("H", "A", ["repo"], expires="2026-12-04T08:59:59Z"),
        hop("A", "T", ["repo.read"], expires="2026-12-05T00:00:00Z"),
    ]
    decision = repo_decision(chain, "repo.read", mode=mode)
    assert decision.reason_codes == ("expired_link",)
    assert "link 0" in decision.reasons[0]


@MODES
def test_looped_chain_terminates_and_denies(mode: Mode) -> None:
    chain = [hop("H", "A", ["repo"]), hop("A", "B", ["repo"]), hop("B", "A", ["repo"])]
    decision = repo_decision(chain, "repo.read", principal="A", mode=mode)
    assert decision.effect == "deny"
    assert "broken_chain" in decision.reason_codes


@MODES
def test_valid_three_hop_chain_allows(mode: Mode) -> None:
    chain = [hop("H", "A", ["repo"]), hop("A", "T", ["repo.read"])]
    decision = repo_decision(chain, "repo.read", mode=mode)
    assert decision.effect == "allow"


# ---- case R2: holding the human's chain is not a delegation to you ----

CALENDAR = """
entity Person: human {}
entity Assistant: agent owner Person {}
actions calendar { create, read }
actions mail { send }
allow people:
    principal is Person
allow assistants:
    principal is Assistant
"""


def calendar_decision(
    actor: str, action: str, chain_to: str | None, mode: Mode
) -> ripl.Decision:
    engine = ripl.load(text=CALENDAR, mode=mode)
    extra: dict[str, Any] = {}
    if chain_to is not None:
        extra["delegation"] = [
            {
                "id": "alice-grant",
                "from": {"type": "Person", "id": "alice"},
                "to": {"type": "Assistant", "id": chain_to},
                "scopes": ["calendar"],
                "expires": "2026-12-04T10:00:00Z",
            }
        ]
    return ask(
        engine,
        {"type": "Assistant", "id": actor, "owner": {"type": "Person", "id": "alice"}},
        action,
        {"type": "Person", "id": "alice"},
        **extra,
    )


@MODES
@pytest.mark.parametrize(
    ("actor", "action", "chain_to", "code"),
    [
        ("planner", "calendar.create", "planner", "matched"),
        ("mailer", "calendar.create", "planner", "broken_chain"),
        ("mailer", "calendar.create", None, "agent_without_delegation"),
        ("planner", "mail.send", "planner", "scope_not_delegated"),
    ],
)
def test_agent_needs_its_own_delegation_edge_from_the_human(
    actor: str, action: str, chain_to: str | None, code: str, mode: Mode
) -> None:
    decision = calendar_decision(actor, action, chain_to, mode)
    assert decision.reason_codes[0] == code
    assert decision.effect == ("allow" if code == "matched" else "deny")


# ---- case R12: leeway widens expiry, never switches it off ----

LEEWAY = REPO


def leeway_decision(now: str, leeway: str | None, mode: Mode) -> str:
    text = LEEWAY + (f"option clock_leeway = {leeway}\n" if leeway else "")
    engine = ripl.load(text=text, mode=mode)
    chain = [
        hop(
            "H",
            "A",
            ["repo"],
            expires="2026-12-04T10:00:00Z",
            not_before="2026-12-04T08:00:00Z",
        )
    ]
    decision = ask(
        engine,
        {"type": "Agent", "id": "A"},
        "repo.read",
        {"type": "Repo", "id": "r"},
        delegation=chain,
        now=now,
    )
    return decision.effect


@MODES
@pytest.mark.parametrize(
    ("now", "without", "with_30s"),
    [
        ("2026-12-04T09:59:59Z", "allow", "allow"),
        ("2026-12-04T10:00:00Z", "deny", "allow"),  # expiry is exclusive
        ("2026-12-04T10:00:10Z", "deny", "allow"),
        ("2026-12-04T10:00:30Z", "deny", "deny"),
        ("2026-12-04T10:00:31Z", "deny", "deny"),
        ("2026-12-04T07:59:50Z", "deny", "allow"),
        ("2026-12-04T07:59:29Z", "deny", "deny"),
    ],
)
def test_clock_leeway_never_disables_the_expiry_check(
    now: str, without: str, with_30s: str, mode: Mode
) -> None:
    assert leeway_decision(now, None, mode) == without
    assert leeway_decision(now, "30s", mode) == with_30s


@pytest.mark.parametrize("value", ["-10s", "6m", "1d"])
def test_leeway_outside_its_bounds_refuses_to_load(value: str) -> None:
    with pytest.raises(ripl.CheckError) as info:
        ripl.load(text=LEEWAY + f"option clock_leeway = {value}\n")
    assert info.value.diagnostics[0].message == (
        "option `clock_leeway` must lie between 0s and 5m"
    )


@MODES
def test_effective_expiry_of_a_chain_is_its_earliest_link(mode: Mode) -> None:
    engine = ripl.load(text=LEEWAY + "option clock_leeway = 30s\n", mode=mode)
    chain = [
        hop("H", "A", ["repo"], expires="2026-12-04T10:00:00Z"),
        hop("A", "T", ["repo.read"], expires="2026-12-04T12:00:00Z"),
    ]
    decision = ask(
        engine,
        {"type": "Tool", "id": "T"},
        "repo.read",
        {"type": "Repo", "id": "r"},
        delegation=chain,
        now="2026-12-04T10:00:31Z",
    )
    assert decision.reason_codes == ("expired_link",)


# ---- case R13: a policy file that fails to load is never "no policy" ----

BASE = (
    "module base\nentity Agent: agent owner Human {}\nentity Human: human {}\n"
    "entity File { path: string }\naction fs.write\n"
    "allow tmp_writes:\n    principal is Agent\n"
    '    when resource.path matches "/tmp/**"\n'
)
GUARD = (
    "module guard\nimport base\n"
    'deny secrets:\n    when resource.path matches "/tmp/secrets/**"\n'
)


def fs_write(engine: ripl.Engine, path: str) -> str:
    return ask(
        engine,
        {"type": "Agent", "id": "a"},
        "fs.write",
        entity("File", "f", path=path),
        delegation=[
            {
                "id": "h-grant",
                "from": {"type": "Human", "id": "h"},
                "to": {"type": "Agent", "id": "a"},
                "scopes": ["fs"],
                "expires": "2026-12-04T10:00:00Z",
            }
        ],
    ).effect


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    (tmp_path / "base.ripl").write_text(
        BASE.replace("owner Human", "owner Human"), "utf-8"
    )
    (tmp_path / "guard.ripl").write_text(GUARD, "utf-8")
    return tmp_path


def test_both_files_valid_enforce_the_deny(policy_dir: Path) -> None:
    # The human needs the same grant, or the agent's allow is capped.
    base = policy_dir / "base.ripl"
    base.write_text(BASE + "allow humans:\n    principal is Human\n", "utf-8")
    engine = ripl.load(policy_dir)
    assert fs_write(engine, "/tmp/secrets/k") == "deny"
    assert fs_write(engine, "/tmp/x") == "allow"


@pytest.mark.parametrize(
    "breakage",
    ["type error", "unknown effect", "a folder in its place", "a dangling link"],
)
def test_policy_file_that_fails_to_load_never_means_no_policy(
    policy_dir: Path, breakage: str
) -> None:
    guard = policy_dir / "guard.ripl"
    if breakage == "type error":
        guard.write_text(GUARD.replace('matches "/tmp/secrets/**"', "< 3"), "utf-8")
    elif breakage == "unknown effect":
        guard.write_text(GUARD.replace("deny secrets", "forbid secrets"), "utf-8")
    elif breakage == "a folder in its place":
        guard.unlink()
        guard.mkdir()
    else:
        guard.unlink()
        guard.symlink_to(policy_dir / "missing.ripl")
    with pytest.raises(ripl.SourceError) as info:
        ripl.load(policy_dir)
    assert any("guard.ripl" in d.span.file for d in info.value.diagnostics)
    engine = load_or_deny(policy_dir)
    for path in ("/tmp/secrets/k", "/tmp/x"):
        decision = ask(
            engine,
            {"type": "Agent", "id": "a"},
            "fs.write",
            entity("File", "f", path=path),
        )
        assert decision.effect == "deny"
        assert decision.reason_codes == ("policy_not_loaded",)


def test_empty_policy_folder_loads_nothing_and_denies_everything(
    tmp_path: Path,
) -> None:
    with pytest.raises(ripl.CheckError):
        ripl.load(tmp_path)
    engine = load_or_deny(tmp_path)
    decision = engine.decide({"principal": {"type": "X", "id": "x"}})
    assert (decision.effect, decision.reason_codes) == ("deny", ("policy_not_loaded",))


def test_no_policy_path_at_all_is_an_error_not_allow_all() -> None:
    with pytest.raises(ValueError):
        ripl.load()
