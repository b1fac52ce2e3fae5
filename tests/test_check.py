"""The checker: every kind of mistake in a policy that parses is a `CheckError`
at the offending token, with a hint where one is known; and the golden error
messages of `tests/cases/errors/`, compared as whole rendered blocks.

To regenerate the golden files after an intended change of wording, run

    RIPL_REGENERATE=1 python -m pytest tests/test_check.py -k golden

and review the diff of `tests/cases/errors/*.expected` like any other change.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ripl
from ripl.errors import Diagnostic

CASES = Path(__file__).resolve().parent / "cases" / "errors"

HEADER = """\
import std.sensitivity
import std.stepup
import std.obligations
entity User: human { team: string, age: int, mfa: bool, clearance: sensitivity }
entity Bot: agent owner User { model: string }
entity Invoice { amount: decimal, currency: string, sensitivity: sensitivity }
actions payments { refund, payout }
actions docs { read, write }
context { anomaly: decimal, env: string }
"""


def check_diagnostics(body: str, *, header: str = HEADER) -> list[Diagnostic]:
    with pytest.raises(ripl.CheckError) as info:
        ripl.load_policy(text=header + body, name="policy.ripl")
    return list(info.value.diagnostics)


def line_of(body: str, needle: str, *, header: str = HEADER) -> tuple[int, int]:
    """1-based line and column of `needle` in the header + body text."""
    text = header + body
    offset = text.index(needle)
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


# ---- one table row per check error ----

CHECK_ERRORS = [
    pytest.param(
        "entity Refund { amount: decmial }\n",
        "decmial",
        "unknown-type",
        "unknown type `decmial`",
        "did you mean `decimal`?",
        id="unknown type",
    ),
    pytest.param(
        "entity Refund { amount: float }\n",
        "float",
        "unknown-type",
        "unknown type `float`",
        "types are bool, int, decimal, string, duration, set<T>, label orders and "
        "entity types",
        id="unknown type from another language",
    ),
    pytest.param(
        "allow r:\n    resource is Invoice\n    when resource.amout <= 100\n",
        "amout",
        "unknown-attribute",
        "unknown attribute `amout` on Invoice",
        "did you mean `amount`?",
        id="unknown attribute with did-you-mean",
    ),
    pytest.param(
        "allow r:\n    when context.anomali < 0.5\n",
        "anomali",
        "unknown-attribute",
        "unknown attribute `anomali` on context",
        "did you mean `anomaly`?",
        id="unknown context attribute",
    ),
    pytest.param(
        "allow twice:\n    action docs.read\nallow twice:\n    action docs.write\n",
        "twice:\n    action docs.write",
        "duplicate",
        "rule id `twice` is used twice",
        "rule ids are unique across the policy set",
        id="duplicate rule id",
    ),
    pytest.param(
        "allow r:\n    resource is Invoice\n    when resource.currency < 100\n",
        "resource.currency < 100",
        "type",
        "cannot order `string` and `int` with `<`",
        "strings and numbers never compare; declare the attribute's type to match",
        id="string < int",
    ),
    pytest.param(
        "allow r:\n    principal is User\n    when principal.mfa == 1\n",
        "principal.mfa == 1",
        "type",
        "cannot compare `bool` with `int`",
        "a bool never compares with a number",
        id="bool == int",
    ),
    pytest.param(
        "labels urgency { low < high }\n"
        "entity Ticket { urgency: urgency }\n"
        "allow r:\n    principal is User\n    resource is Ticket\n"
        "    when resource.urgency < principal.clearance\n",
        "resource.urgency < principal.clearance",
        "type",
        "cannot order labels of two different orders `urgency` and `sensitivity`",
        None,
        id="labels of two different orders",
    ),
    pytest.param(
        "allow r:\n    resource is Invoice\n"
        '    when resource.sensitivity == "internal"\n',
        'resource.sensitivity == "internal"',
        "type",
        "cannot compare `sensitivity` with `string`",
        "write the label as a name, without quotes",
        id="label compared with a quoted string",
    ),
    pytest.param(
        "allow r:\n    resource is Invoice\n"
        "    when resource.sensitivity <= sensitivity.secret\n",
        "secret",
        "unknown-label",
        "`sensitivity` has no label `secret`",
        "its labels are public, internal, confidential, restricted",
        id="unknown label of an order",
    ),
    pytest.param(
        "entity Helper: tool { vendor: string }\n",
        "Helper",
        "owner",
        "tool `Helper` has no owner",
        "every non-human identity has one: `entity Helper: tool owner User`",
        id="tool without owner",
    ),
    pytest.param(
        "entity Boss: human owner User {}\n",
        "User {}",
        "owner",
        "human `Boss` cannot have an owner",
        None,
        id="human with an owner",
    ),
    pytest.param(
        "entity Helper: robot owner User {}\n",
        "robot",
        "unknown-kind",
        "unknown identity kind `robot`",
        "kinds are human, agent, service, tool, connector",
        id="unknown identity kind",
    ),
    pytest.param(
        "allow r:\n    action docs.raed\n",
        "docs.raed",
        "unknown-action",
        "unknown action `docs.raed`",
        "did you mean `docs.read`?",
        id="unknown action in a target",
    ),
    pytest.param(
        "allow r:\n    when action == docs.raed\n",
        "docs.raed",
        "unknown-action",
        "unknown action `docs.raed`",
        "did you mean `docs.read`?",
        id="unknown action in a condition",
    ),
    pytest.param(
        "allow r:\n    principal is Usr\n",
        "Usr",
        "unknown-type",
        "unknown entity type `Usr`",
        "did you mean `User`?",
        id="unknown entity type in a target",
    ),
    pytest.param(
        "allow r:\n    principal is User\n    when is_admin\n",
        "is_admin",
        "unknown-name",
        "unknown name `is_admin`",
        None,
        id="undefined name in a rule",
    ),
    pytest.param(
        'restrict r with redcat("email"):\n    action docs.read\n',
        "redcat",
        "unknown-obligation",
        "unknown obligation `redcat`",
        "did you mean `redact`?",
        id="unknown obligation",
    ),
    pytest.param(
        "step_up r requires mfaa:\n    action docs.read\n",
        "mfaa",
        "unknown-requirement",
        "unknown step-up requirement `mfaa`",
        "did you mean `mfa`?",
        id="unknown step-up requirement",
    ),
    pytest.param(
        'restrict r with credential_ttl("5m"):\n    action docs.read\n',
        '"5m"',
        "type",
        "`credential_ttl` takes a `duration`, found `string`",
        None,
        id="obligation of the wrong type",
    ),
    pytest.param(
        "option clock_leeway = 10m\n",
        "10m",
        "option",
        "option `clock_leeway` must lie between 0s and 5m",
        None,
        id="clock leeway above its ceiling",
    ),
    pytest.param(
        "option clock_leewey = 10s\n",
        "clock_leewey",
        "option",
        "unknown option `clock_leewey`",
        "did you mean `clock_leeway`?",
        id="unknown option",
    ),
    pytest.param(
        "allow r:\n    when delegation.grant(docs.read)\n",
        "grant",
        "unknown-function",
        "unknown delegation function `grant`",
        "did you mean `grants`?",
        id="unknown delegation function",
    ),
    pytest.param(
        'allow r:\n    when context.env in "prod"\n',
        '"prod"',
        "type",
        "`in` needs a set on its right, found `string`",
        "`in` looks for an element in a set; ripl has no substring test",
        id="in with a string",
    ),
    pytest.param(
        'test "t":\n    request {"action": "docs.read"}\n    expect alow\n',
        "alow",
        "test",
        "unknown effect `alow`",
        "did you mean `allow`?",
        id="unknown effect in a test",
    ),
    pytest.param(
        'test "t":\n    request {"action": "docs.read"}\n'
        "    expect deny because no_rules\n",
        "no_rules",
        "test",
        "unknown reason code `no_rules`",
        "did you mean `no_rule`?",
        id="unknown reason code in a test",
    ),
]


@pytest.mark.parametrize(("body", "at", "code", "message", "hint"), CHECK_ERRORS)
def test_check_error_points_at_the_offending_token(
    body: str, at: str, code: str, message: str, hint: str | None
) -> None:
    diagnostics = check_diagnostics(body)
    assert [(d.code, d.message) for d in diagnostics] == [(code, message)]
    (found,) = diagnostics
    assert (found.span.line, found.span.column) == line_of(body, at)
    assert found.hint == hint


def test_every_error_is_reported_not_only_the_first() -> None:
    body = (
        "entity A { x: strng }\n"
        "allow r:\n    action docs.raed\n"
        "allow s:\n    resource is Invoice\n    when resource.amout > 1\n"
    )
    codes = [d.code for d in check_diagnostics(body)]
    assert codes == ["unknown-type", "unknown-action", "unknown-attribute"]


def test_undefined_name_is_reported_at_its_own_token_inside_a_longer_condition() -> (
    None
):
    body = (
        'allow r:\n    when context.anomaly < 0.5 and (trusted or context.env == "x")\n'
    )
    (found,) = check_diagnostics(body)
    assert found.message == "unknown name `trusted`"
    assert (found.span.line, found.span.column) == line_of(body, "trusted")
    assert found.span.end_column - found.span.column == len("trusted")


def test_label_not_imported_names_the_module_to_import() -> None:
    header = "entity Doc { level: int }\naction docs.read\n"
    (found,) = check_diagnostics(
        "allow r:\n    when confidential == confidential\n", header=header
    )
    assert found.message == "unknown name `confidential`"
    assert found.hint is None or "import" in found.hint


def test_a_group_named_where_one_action_is_needed_is_an_error() -> None:
    (found,) = check_diagnostics("allow r:\n    when action == docs\n")
    assert found.message == "`docs` is a group of actions, not an action"
    assert found.hint == "to test the group, write `action in docs`"


# ---- modules ----


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_import_cycle_names_every_module_on_it(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "a.ripl": "module a\nimport b\n",
            "b.ripl": "module b\nimport c\n",
            "c.ripl": "module c\nimport a\naction x.y\n",
        },
    )
    with pytest.raises(ripl.CheckError) as info:
        ripl.load_policy(tmp_path)
    (found,) = info.value.diagnostics
    assert found.code == "import-cycle"
    assert found.message == "import cycle: a → b → c → a"


def test_missing_module_is_an_error_at_the_import(tmp_path: Path) -> None:
    write(tmp_path, {"main.ripl": "module main\n\nimport shared.schema\naction x.y\n"})
    with pytest.raises(ripl.CheckError) as info:
        ripl.load_policy(tmp_path / "main.ripl")
    (found,) = info.value.diagnostics
    assert (found.code, found.message) == (
        "unknown-module",
        "module `shared.schema` not found",
    )
    assert (found.span.line, found.span.column) == (3, 8)


def test_module_imported_from_the_policy_folder_is_found(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "schema.ripl": "module schema\nentity U: human {}\naction x.y\n",
            "main.ripl": "module main\nimport schema\nallow r:\n    principal is U\n",
        },
    )
    policy = ripl.load_policy(tmp_path / "main.ripl")
    assert [r.id for r in policy.rules] == ["r"]


def test_importing_a_label_order_by_name_brings_its_labels(tmp_path: Path) -> None:
    levels = "module levels\nlabels tier { gold < platinum }\n"
    main = (
        "module main\nimport levels (tier)\n"
        "entity U: human { t: tier }\naction x.y\n"
        "allow r:\n    principal is U\n    when principal.t == LABEL\n"
    )
    write(
        tmp_path,
        {"levels.ripl": levels, "main.ripl": main.replace("LABEL", "tier.gold")},
    )
    assert [r.id for r in ripl.load_policy(tmp_path).rules] == ["r"]

    write(tmp_path, {"main.ripl": main.replace("LABEL", "gold")})
    assert [r.id for r in ripl.load_policy(tmp_path).rules] == ["r"]

    unimported = main.replace("import levels (tier)", "import levels (tier)\n")
    unimported = unimported.replace("t: tier", "t: string").replace("LABEL", "gold")
    write(tmp_path, {"main.ripl": unimported.replace("import levels (tier)\n", "")})
    with pytest.raises(ripl.CheckError) as info:
        ripl.load_policy(tmp_path)
    (found,) = info.value.diagnostics
    assert found.message == "unknown name `gold`"
    assert (
        found.hint
        == "`gold` is a `tier` label of module `levels`; add `import levels (tier)`"
    )


def test_risk_defined_in_terms_of_itself_is_an_error() -> None:
    body = "risk a = b + 1\nrisk b = a + 1\nallow r:\n    when a > 1\n"
    diagnostics = check_diagnostics(body)
    assert {d.code for d in diagnostics} == {"cycle"}
    assert "risk `a` is defined in terms of itself: a → b → a" in {
        d.message for d in diagnostics
    }


def test_empty_policy_folder_is_an_error_not_an_empty_policy(tmp_path: Path) -> None:
    with pytest.raises(ripl.CheckError) as info:
        ripl.load_policy(tmp_path)
    assert info.value.diagnostics[0].message == "no policy files found"


# ---- golden error messages ----


def _golden_cases() -> list[str]:
    names = [p.name for p in CASES.iterdir() if p.is_dir() or p.suffix == ".ripl"]
    return sorted(names)


@pytest.mark.parametrize("case", _golden_cases())
def test_golden_error_message(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole rendered block: location, message, source line, carets, hint."""
    monkeypatch.chdir(CASES)
    with pytest.raises(ripl.SourceError) as info:
        ripl.load_policy(Path(case))
    rendered = info.value.render() + "\n"
    expected = CASES / (Path(case).stem + ".expected")
    if os.environ.get("RIPL_REGENERATE"):
        expected.write_text(rendered, encoding="utf-8")
    assert rendered == expected.read_text(encoding="utf-8")


def test_every_golden_case_has_its_expected_file() -> None:
    stems = {Path(c).stem for c in _golden_cases()}
    expected = {p.stem for p in CASES.glob("*.expected")}
    assert stems == expected


@pytest.mark.parametrize(
    ("case", "kind"),
    [
        ("unterminated_string.ripl", ripl.ParseError),
        ("stray_characters.ripl", ripl.ParseError),
        ("non_utf8.ripl", ripl.ParseError),
        ("deep_nesting.ripl", ripl.ParseError),
        ("unknown_type.ripl", ripl.CheckError),
        ("duplicate_rule_id.ripl", ripl.CheckError),
        ("string_less_than_int.ripl", ripl.CheckError),
        ("labels_of_two_orders.ripl", ripl.CheckError),
        ("agent_without_owner.ripl", ripl.CheckError),
        ("import_cycle", ripl.CheckError),
    ],
)
def test_golden_case_raises_the_error_of_its_stage(
    case: str, kind: type[ripl.SourceError], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(CASES)
    with pytest.raises(ripl.SourceError) as info:
        ripl.load_policy(Path(case))
    assert type(info.value) is kind
