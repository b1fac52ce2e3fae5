"""The embedding API: loading a policy set every way the API offers, and
`decide` never raising, whatever it is handed."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest

import ripl

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCHEMA = (
    "module schema\n"
    "entity User: human { team: string, limit: int }\n"
    "entity Doc { size: decimal }\n"
    "actions docs { read, write }\n"
    "context { amount?: decimal, n?: int }\n"
)
RULES = "module rules\nimport schema\nallow readers:\n    action docs.read\n"
PLAIN = SCHEMA.replace("module schema\n", "")  # the schema as loose text
TEXT = PLAIN + "allow readers:\n    action docs.read\n"


def good_request(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "principal": {"type": "User", "id": "u1", "attrs": {"team": "a", "limit": 5}},
        "action": "docs.read",
        "resource": {"type": "Doc", "id": "d1", "attrs": {"size": 1}},
        "context": {},
        "now": "2026-12-04T09:00:00Z",
    }
    data.update(changes)
    return data


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "schema.ripl").write_text(SCHEMA, encoding="utf-8")
    (tmp_path / "rules.ripl").write_text(RULES, encoding="utf-8")
    return tmp_path


# ---- loading ----


def test_load_a_folder(folder: Path) -> None:
    engine = ripl.load(folder)
    assert engine.decide(good_request()).effect == "allow"
    assert sorted(Path(f).name for f in engine.policy.sources) == [
        "rules.ripl",
        "schema.ripl",
    ]


def test_load_one_file_finds_its_imports_beside_it(folder: Path) -> None:
    engine = ripl.load(folder / "rules.ripl")
    assert engine.decide(good_request()).rule_ids == ("readers",)


def test_load_several_paths(folder: Path) -> None:
    engine = ripl.load(folder / "schema.ripl", folder / "rules.ripl")
    assert engine.decide(good_request()).effect == "allow"


def test_load_text() -> None:
    engine = ripl.load(text=TEXT)
    assert engine.decide(good_request()).effect == "allow"


def test_load_string_with_newlines_is_policy_text() -> None:
    engine = ripl.load(TEXT)
    assert engine.decide(good_request()).effect == "allow"


def test_the_same_policy_has_the_same_hash_however_it_is_loaded(folder: Path) -> None:
    by_folder = ripl.load(folder).policy_hash
    by_files = ripl.load(folder / "rules.ripl", folder / "schema.ripl").policy_hash
    assert by_folder == by_files


def test_hash_changes_when_a_rule_changes(folder: Path) -> None:
    before = ripl.load(folder).policy_hash
    (folder / "rules.ripl").write_text(RULES.replace("read", "write"), "utf-8")
    assert ripl.load(folder).policy_hash != before


def test_loading_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        ripl.load()


def test_missing_path_is_a_check_error_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(ripl.CheckError) as info:
        ripl.load(tmp_path / "nope.ripl")
    assert info.value.diagnostics[0].message == "policy path not found"


def test_malformed_policy_fails_at_load_with_spans_not_at_decide() -> None:
    with pytest.raises(ripl.SourceError) as info:
        ripl.load(text="allow r:\n    when context.nope\n")
    assert info.value.span.line == 2


def test_unknown_mode_is_refused(folder: Path) -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        ripl.load(folder, mode="fast")  # type: ignore[arg-type]


def test_replace_swaps_the_policy_set(folder: Path) -> None:
    engine = ripl.load(folder)
    engine.replace(ripl.load_policy(text=PLAIN))
    assert engine.decide(good_request()).reason_codes == ("no_rule",)


def test_example_folders_load() -> None:
    for name in ("refunds", "assistant", "mcp-filesystem"):
        assert ripl.load(EXAMPLES / name).policy.rules


# ---- requests of every shape ----


@attrs.frozen
class TypedRequest:
    principal: dict[str, Any]
    action: str
    resource: dict[str, Any]


class ToDict:
    def to_dict(self) -> dict[str, Any]:
        return good_request()


def test_decide_takes_a_typed_object(folder: Path) -> None:
    base = good_request()
    typed = TypedRequest(base["principal"], base["action"], base["resource"])
    assert ripl.load(folder).decide(typed).effect == "allow"
    assert ripl.load(folder).decide(ToDict()).effect == "allow"


GARBAGE = [
    pytest.param(None, id="None"),
    pytest.param([], id="empty list"),
    pytest.param("docs.read", id="a string"),
    pytest.param(42, id="an int"),
    pytest.param({}, id="empty object"),
    pytest.param({"principal": 3}, id="principal is a number"),
    pytest.param(good_request(principal=None), id="principal is null"),
    pytest.param(good_request(principal={"type": "User"}), id="principal has no id"),
    pytest.param(good_request(principal={"type": "User", "id": 7}), id="int id"),
    pytest.param(
        good_request(principal={"type": "User", "id": "x" * 1_000_000}),
        id="huge id",
    ),
    pytest.param(good_request(principal={"type": "Ghost", "id": "g"}), id="bad type"),
    pytest.param(good_request(action="docs.delete"), id="unknown action"),
    pytest.param(good_request(action="docs"), id="a group as the action"),
    pytest.param(good_request(action=["docs.read"]), id="action is a list"),
    pytest.param(good_request(resource="d1"), id="resource is a string"),
    pytest.param(good_request(context=[1, 2]), id="context is a list"),
    pytest.param(good_request(now="yesterday"), id="bad timestamp"),
    pytest.param(good_request(now=1.5), id="float timestamp"),
    pytest.param(good_request(entities={"a": 1}), id="entities is an object"),
    pytest.param(good_request(entities=[None, 3]), id="entities of garbage"),
    pytest.param(good_request(delegation="alice"), id="delegation is a string"),
    pytest.param(good_request(delegation=[None, {}]), id="delegation of garbage"),
]


@pytest.mark.parametrize("data", GARBAGE)
@pytest.mark.parametrize("mode", ["reference", "compiled"])
def test_decide_never_raises_on_garbage(data: Any, mode: str, folder: Path) -> None:
    decision = ripl.load(folder, mode=mode).decide(data)  # type: ignore[arg-type]
    assert decision.effect == "deny"
    assert decision.reasons
    assert decision.reason_codes[0] in {"bad_request", "malformed_link"}


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        1e308,
        "1e999",
        "NaN",
        True,
        None,
        [1],
        {"x": 1},
        10**400,
    ],
    ids=repr,
)
@pytest.mark.parametrize("mode", ["reference", "compiled"])
def test_odd_numbers_in_attributes_fail_closed(value: Any, mode: str) -> None:
    engine = ripl.load(
        text=PLAIN
        + "allow small:\n    when context.amount < 100\n"
        + "deny huge:\n    when context.amount > 1000000\n",
        mode=mode,  # type: ignore[arg-type]
    )
    decision = engine.decide(good_request(context={"amount": value}))
    if value == 1e308 or value == 10**400:
        assert decision.rule_ids == ("huge",)
    else:
        assert decision.effect == "deny"
        assert decision.reason_codes in {("no_rule",), ("error_in_rule",)}


def test_float_amount_is_compared_as_its_decimal_value() -> None:
    engine = ripl.load(text=PLAIN + "allow small:\n    when context.amount <= 0.3\n")
    assert engine.decide(good_request(context={"amount": 0.3})).effect == "allow"
    assert (
        engine.decide(good_request(context={"amount": Decimal("0.30000000000001")}))
    ).effect == "deny"


def test_nan_never_equals_anything() -> None:
    engine = ripl.load(
        text=PLAIN
        + "deny blocked:\n    unless context.amount == context.amount\n"
        + "allow any:\n    action docs.read\n"
    )
    decision = engine.decide(good_request(context={"amount": math.nan}))
    assert decision.effect == "deny"


def test_batch_gives_one_decision_per_request_in_order(folder: Path) -> None:
    engine = ripl.load(folder)
    decisions = engine.decide_batch([good_request(), None, good_request()])
    assert [d.effect for d in decisions] == ["allow", "deny", "allow"]


def test_decision_json_has_every_contract_field(folder: Path) -> None:
    data = ripl.load(folder).decide(good_request()).to_json()
    assert set(data) == {
        "effect",
        "rules",
        "reasons",
        "obligations",
        "requirements",
        "errors",
        "policy_hash",
        "evaluated_at",
    }
    assert data["evaluated_at"] == "2026-12-04T09:00:00Z"
    assert data["rules"][0]["id"] == "readers"
    assert set(data["rules"][0]) == {"id", "file", "line", "col"}


def test_loading_pauses_the_collector_and_restores_it_as_it_was() -> None:
    import gc

    from ripl.engine import collection_paused

    text = "entity User: human {}\nactions docs { read }\nallow r: action docs.read\n"
    was = gc.isenabled()
    try:
        gc.enable()
        with collection_paused():
            assert not gc.isenabled()
            with collection_paused():  # nested (two loads at once): still paused
                assert not gc.isenabled()
            assert not gc.isenabled()
        assert gc.isenabled()
        ripl.load(text=text)
        assert gc.isenabled()
        with pytest.raises(ripl.ParseError):
            ripl.load(text="allow (")
        assert gc.isenabled()  # a failed load resumes it too
        gc.disable()
        ripl.load(text=text)
        assert not gc.isenabled()  # off before, off after
    finally:
        if was:
            gc.enable()
        else:
            gc.disable()


def test_the_engine_shows_its_revoked_ids_and_its_clock() -> None:
    from datetime import UTC, datetime

    from ripl.runtime.revocation import MemoryRevocationStore

    text = "entity User: human {}\nactions docs { read }\nallow r: action docs.read\n"
    moment = datetime(2026, 12, 4, 9, tzinfo=UTC)
    engine = ripl.load(text=text, revoked=["a"], clock=lambda: moment)
    assert engine.revoked_ids() == frozenset({"a"})
    engine.revoke("b")
    assert engine.revoked_ids() == frozenset({"a", "b"})
    assert engine.now() == moment
    shared = ripl.load(text=text, revocations=MemoryRevocationStore())
    assert shared.revoked_ids() is None  # the store must be asked link by link
