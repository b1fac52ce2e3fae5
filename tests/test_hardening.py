"""Inputs a careless or hostile caller can send, each with the answer ripl
must give: a decision that fails closed, or a clear error with a position,
never a rounded number, a silent substitution or a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import ripl
from ripl.batch import decide_columns
from ripl.cli import main
from ripl.runtime.audit import AuditLog

CAP = """
import std.obligations
entity User: human { lim: decimal }
entity Doc { x: int }
action pay
restrict capped with cap(199.999999999999999999999999999999):
    principal is User
    action pay
"""
PAY = {
    "principal": {"type": "User", "id": "u", "attrs": {"lim": 1}},
    "action": "pay",
    "resource": {"type": "Doc", "id": "d", "attrs": {"x": 1}},
}


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ripl", *args],
        input=stdin.decode("utf-8", "replace") if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
    )


# ---- numbers stay exact on the way out ----


def test_a_decimal_cap_is_written_exactly_in_decision_json(tmp_path: Path) -> None:
    decision = ripl.load(CAP).decide(PAY)
    assert decision.obligations["cap"] == Decimal("199.999999999999999999999999999999")
    text = decision.to_json_text()
    assert '"cap": 199.999999999999999999999999999999' in text
    assert json.loads(text, parse_float=Decimal)["obligations"]["cap"] == Decimal(
        "199.999999999999999999999999999999"
    )
    policy = tmp_path / "cap.ripl"
    policy.write_text(CAP, encoding="utf-8")
    request = tmp_path / "pay.json"
    request.write_text(json.dumps(PAY), encoding="utf-8")
    out = CliRunner().invoke(
        main, ["eval", str(policy), "-r", str(request), "--format", "json"]
    )
    assert '"cap": 199.999999999999999999999999999999' in out.output


def test_audit_digests_tell_apart_decimals_beyond_28_digits(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db")
    digests = set()
    for lim in (
        "199.999999999999999999999999999999",
        "200.000000000000000000000000000001",
    ):
        request = {
            **PAY,
            "principal": {**PAY["principal"], "attrs": {"lim": Decimal(lim)}},
        }
        record = log.append(request, {"effect": "allow", "policy_hash": "sha256:x"})
        digests.add(record.request_digest)
    assert len(digests) == 2
    assert log.verify().ok


def test_batch_keeps_integers_beyond_int64_exact() -> None:
    engine = ripl.load(
        "entity User: human { amount: int }\nentity Doc { x: int }\naction pay\n"
        "allow anyone: principal is User action pay\n"
        "deny too_much: action pay when principal.amount > 100\n"
    )
    n = 16
    columns = {
        "principal.type": np.array(["User"] * n, dtype=object),
        "principal.id": np.array([f"u{i}" for i in range(n)], dtype=object),
        "action": np.array(["pay"] * n, dtype=object),
        "resource.type": np.array(["Doc"] * n, dtype=object),
        "resource.id": np.array(["d"] * n, dtype=object),
        "principal.attrs.amount": np.array([2**63 + 5] * n, dtype=np.uint64),
    }
    result = decide_columns(engine, columns)
    assert list(result.effect_names()) == ["deny"] * n
    single = {
        **PAY,
        "principal": {"type": "User", "id": "u", "attrs": {"amount": 2**63 + 5}},
    }
    assert engine.decide(single).effect == "deny"


# ---- the policy set cannot be quietly replaced or widened ----


def test_a_policy_folder_cannot_replace_a_standard_module(tmp_path: Path) -> None:
    (tmp_path / "zz.ripl").write_text(
        "module std.sensitivity\nlabels sensitivity { restricted < public }\n",
        encoding="utf-8",
    )
    (tmp_path / "main.ripl").write_text(
        "import std.sensitivity\nentity U: human {}\n", encoding="utf-8"
    )
    with pytest.raises(ripl.CheckError) as info:
        ripl.load(tmp_path)
    assert [d.message for d in info.value.diagnostics] == [
        "module name `std.sensitivity` is reserved for the standard library"
    ]


RESOURCE_AS_PRINCIPAL = """
entity User: human { admin: bool }
entity Doc { x: int }
actions docs { read, write }
allow anyone_reads: action docs.read
"""


def test_a_plain_resource_type_is_never_a_principal() -> None:
    engine = ripl.load(RESOURCE_AS_PRINCIPAL)
    decision = engine.decide(
        {
            "principal": {"type": "Doc", "id": "d0"},
            "action": "docs.read",
            "resource": {"type": "Doc", "id": "d1"},
        }
    )
    assert decision.effect == "deny"
    assert decision.reason_codes == ("bad_request",)
    with pytest.raises(ripl.CheckError) as info:
        ripl.load(RESOURCE_AS_PRINCIPAL + "allow docs_write: principal is Doc\n")
    assert info.value.diagnostics[0].message == (
        "`Doc` is not an identity, so it is never a principal"
    )


ROOT_POWER = """
entity User: human { admin: bool }
entity Bot: agent owner User {}
actions docs { write }
allow bot_any: principal is Bot when delegation.grants(docs)
allow human_admin: principal is User when principal.admin
"""


def _bot_write(resource: dict[str, Any]) -> ripl.Decision:
    return ripl.load(ROOT_POWER).decide(
        {
            "principal": {"type": "Bot", "id": "b1"},
            "action": "docs.write",
            "resource": resource,
            "delegation": [
                {
                    "id": "alice-b1",
                    "from": {"type": "User", "id": "alice"},
                    "to": {"type": "Bot", "id": "b1"},
                    "scopes": ["docs"],
                    "expires": "2030-01-01T00:00:00Z",
                }
            ],
            "entities": [{"type": "User", "id": "alice", "attrs": {"admin": False}}],
            "now": "2026-12-04T09:00:00Z",
        }
    )


def test_inline_attributes_of_the_resource_never_empower_the_root() -> None:
    as_resource = {"type": "User", "id": "alice", "attrs": {"admin": True}}
    decision = _bot_write(as_resource)
    assert decision.effect == "deny"
    assert decision.reason_codes == ("escalation",)


def test_an_entity_listed_twice_is_a_bad_request() -> None:
    request = {
        **PAY,
        "entities": [
            {"type": "User", "id": "v", "attrs": {"lim": 1}},
            {"type": "User", "id": "v", "attrs": {"lim": 2}},
        ],
    }
    decision = ripl.load(CAP).decide(request)
    assert decision.reason_codes == ("bad_request",)
    assert "listed twice" in decision.reasons[0]


# ---- delegation links ----


def _link(**changes: Any) -> dict[str, Any]:
    link = {
        "id": "alice-b1",
        "from": {"type": "User", "id": "alice"},
        "to": {"type": "Bot", "id": "b1"},
        "scopes": ["docs"],
        "expires": "2030-01-01T00:00:00Z",
    }
    link.update(changes)
    return {k: v for k, v in link.items() if v is not None}


@pytest.mark.parametrize(
    "changes",
    [
        {"id": None},
        {"id": ""},
        {"limits": [["spend", 1000]]},
        {"limits": "abc"},
        {"limits": {"spend": Decimal("NaN")}},
        {"expires": "2030-01-01"},
    ],
    ids=[
        "no-id",
        "empty-id",
        "limits-as-pairs",
        "limits-as-text",
        "nan-limit",
        "date-only",
    ],
)
def test_a_malformed_link_is_refused_with_its_reason(changes: dict[str, Any]) -> None:
    engine = ripl.load(ROOT_POWER)
    decision = engine.decide(
        {
            "principal": {"type": "Bot", "id": "b1"},
            "action": "docs.write",
            "resource": {"type": "User", "id": "x"},
            "delegation": [_link(**changes)],
            "entities": [{"type": "User", "id": "alice", "attrs": {"admin": True}}],
            "now": "2026-12-04T09:00:00Z",
        }
    )
    assert decision.effect == "deny"
    assert decision.reason_codes == ("malformed_link",)


# ---- malformed request text ----


def _eval_text(tmp_path: Path, text: str) -> tuple[Path, Any]:
    """`ripl eval` of the capped policy on a request file holding `text`."""
    policy = tmp_path / "cap.ripl"
    policy.write_text(CAP, encoding="utf-8")
    request = tmp_path / "r.json"
    request.write_text(text, encoding="utf-8")
    return request, run("eval", str(policy), "-r", str(request))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"principal": NaN}', "invalid JSON: `NaN` is not a JSON number"),
        ('{"action": "a", "action": "b"}', "the key `action` appears twice"),
        ("[" * 50_000 + "]" * 50_000, "nested too deeply"),
        ('{"n": 1' + "0" * 5000 + "}", "longer than 1000 digits"),
    ],
    ids=["nan", "repeated-key", "deep", "huge-number"],
)
def test_malformed_request_text_exits_2_with_a_message(
    tmp_path: Path, text: str, message: str
) -> None:
    request, result = _eval_text(tmp_path, text)
    assert result.returncode == 2
    assert message in result.stderr
    assert f"{request}:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_request_bytes_that_are_not_utf8_exit_2(tmp_path: Path) -> None:
    policy = tmp_path / "cap.ripl"
    policy.write_text(CAP, encoding="utf-8")
    request = tmp_path / "r.json"
    request.write_bytes(b'{"principal": "\xff"}')
    result = run("eval", str(policy), "-r", str(request))
    assert result.returncode == 2
    assert "request is not UTF-8 text" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_non_finite_decimal_from_the_api_fails_closed_without_a_traceback(
    capfd: pytest.CaptureFixture[str],
) -> None:
    engine = ripl.load(
        "entity User: human { lim: decimal }\nentity Doc {}\naction pay\n"
        "allow small: principal is User action pay when principal.lim < 5\n"
    )
    request = {
        **PAY,
        "principal": {"type": "User", "id": "u", "attrs": {"lim": Decimal("NaN")}},
    }
    decision = engine.decide(request)
    assert decision.effect == "deny"
    assert "not a finite number" in decision.errors[0]
    assert "Traceback" not in capfd.readouterr().err


# ---- malformed policy text ----


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("allow r: when " + " + ".join(["1"] * 600) + " == 1", "nesting too deep", 15),
        ("actions a " + "{ b " * 1200 + "}" * 1200, "nesting too deep", None),
        ("allow r: when 1" + "0" * 5000 + " > 1", "longer than 1000 digits", 15),
        ('allow r: when "\\u00" == "a"', "unknown escape `\\u`", 16),
        ('allow r: when "\\u{}" == "a"', "unknown escape `\\u`", 16),
        ('allow r: when "\\u{FFFFFFFFFFFFFFFFFFFF}" == "a"', "unknown escape", 16),
    ],
    ids=["long-sum", "deep-actions", "huge-literal", "short-u", "empty-u", "huge-u"],
)
def test_malformed_policy_text_is_a_parse_error_at_the_spot(
    text: str, message: str, column: int | None
) -> None:
    with pytest.raises(ripl.ParseError) as info:
        ripl.load_policy(text=text)
    diagnostic = info.value.diagnostics[0]
    assert message in diagnostic.message
    if column is not None:
        assert (diagnostic.span.line, diagnostic.span.column) == (1, column)


def test_two_tests_with_one_name_are_a_check_error() -> None:
    test = 'test "same":\n    request {"principal": 1}\n    expect deny\n'
    with pytest.raises(ripl.CheckError) as info:
        ripl.load_policy(text="entity U: human {}\n" + test + test)
    assert info.value.diagnostics[0].message == "test `same` is defined twice"


def test_a_huge_string_constant_is_analyzed_without_exhausting_memory(
    tmp_path: Path,
) -> None:
    policy = tmp_path / "long.ripl"
    policy.write_text(
        "entity U: human {}\nentity R { n: string }\naction x\n"
        f'allow r: action x when resource.n == "{"y" * 200_000}"\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["check", str(policy)])
    assert result.exit_code == 0, result.output


def test_fmt_through_a_symbolic_link_keeps_the_link(tmp_path: Path) -> None:
    target = tmp_path / "real.ripl"
    target.write_text("allow   r :when true", encoding="utf-8")
    link = tmp_path / "link.ripl"
    link.symlink_to(target)
    result = CliRunner().invoke(main, ["fmt", str(link)])
    assert result.exit_code == 0, result.output
    assert link.is_symlink()
    assert target.read_text(encoding="utf-8") == "allow r:\n    when true\n"


def test_a_byte_order_mark_is_not_an_error(tmp_path: Path) -> None:
    policy = tmp_path / "bom.ripl"
    policy.write_bytes(b"\xef\xbb\xbf" + CAP.encode())
    request = tmp_path / "pay.json"
    request.write_bytes(b"\xef\xbb\xbf" + json.dumps(PAY).encode())
    result = CliRunner().invoke(main, ["eval", str(policy), "-r", str(request)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("effect: restrict")


# ---- second outside review -----------------------------------------------------


def test_policies_differing_only_inside_a_string_never_share_a_hash() -> None:
    base = (
        "entity User: human { name: string }\nentity Doc {}\nactions docs { read }\n"
        'allow a:\n    principal is User\n    when principal.name == "x%s\n"\n'
    )
    first = ripl.load_policy(text=base % "")
    second = ripl.load_policy(text=base % "   ")
    assert first.policy_hash != second.policy_hash
    request = {
        "principal": {"type": "User", "id": "u", "attrs": {"name": "x   \n"}},
        "action": "docs.read",
        "resource": {"type": "Doc", "id": "d"},
    }
    assert ripl.Engine(first).decide(request).effect == "deny"
    for mode in ("compiled", "reference"):
        assert ripl.Engine(second, mode=mode).decide(request).effect == "allow"


PURPOSE = """
entity User: human { team: string }
entity Bot: agent owner User { model: string }
entity Doc { sens: int }
actions docs { read, write }
allow users: principal is User
allow bots: principal is Bot when delegation.purpose == "a"
"""


def _purpose_chain(*purposes: str | None) -> dict[str, Any]:
    names = ["alice", *(f"b{i + 1}" for i in range(len(purposes)))]
    links = []
    for i, purpose in enumerate(purposes):
        link: dict[str, Any] = {
            "id": f"l{i}",
            "from": {"type": "User" if i == 0 else "Bot", "id": names[i]},
            "to": {"type": "Bot", "id": names[i + 1]},
            "scopes": ["docs"],
            "expires": "2027-01-01T00:00:00Z",
        }
        if purpose is not None:
            link["purpose"] = purpose
        links.append(link)
    return {
        "principal": {"type": "Bot", "id": names[-1], "attrs": {"model": "m"}},
        "action": "docs.read",
        "resource": {"type": "Doc", "id": "d", "attrs": {"sens": 1}},
        "delegation": links,
        "entities": [{"type": "User", "id": "alice", "attrs": {"team": "t"}}],
        "now": "2026-01-01T00:00:00Z",
    }


@pytest.mark.parametrize(
    ("purposes", "effect", "codes"),
    [
        ((None, "a", "b"), "deny", ("chain_widens",)),
        (("a", "b"), "deny", ("chain_widens",)),
        ((None, "a", "a"), "allow", ("matched",)),
        (("a", None), "allow", ("matched",)),
    ],
)
def test_a_later_link_may_state_a_purpose_but_never_change_it(
    purposes: tuple[str | None, ...], effect: str, codes: tuple[str, ...]
) -> None:
    for mode in ("compiled", "reference"):
        decision = ripl.load(PURPOSE, mode=mode).decide(_purpose_chain(*purposes))
        assert decision.effect == effect
        assert decision.reason_codes == codes


def test_a_versionless_revocation_store_turns_the_decision_cache_off() -> None:
    class Store:
        ids: set[str] = set()

        def is_revoked(self, link: Any) -> bool:
            return link["id"] in self.ids

    store = Store()
    engine = ripl.Engine(
        ripl.load_policy(PURPOSE), revocations=store, decision_cache=100
    )
    request = _purpose_chain("a")
    assert engine.decide(request).effect == "allow"
    store.ids.add("l0")
    decision = engine.decide(request)
    assert decision.effect == "deny"
    assert decision.reason_codes == ("revoked_link",)


def test_owner_attribute_columns_reach_the_root_in_row_by_row_batches() -> None:
    engine = ripl.load(
        "import std.obligations\nentity User: human { team: string }\n"
        "entity Tool: tool owner User { v: int }\nentity Doc { amt: int }\n"
        "actions docs { read }\n"
        'allow u: principal is User when principal.team == "ok"\n'
        "allow t: principal is Tool when principal.v > 0\n"
    )
    n = 4
    columns = {
        "principal.type": np.array(["Tool"] * n, dtype=object),
        "principal.id": np.array(["t"] * n, dtype=object),
        "principal.attrs.v": np.array([1] * n),
        "owner.type": np.array(["User"] * n, dtype=object),
        "owner.id": np.array(["al"] * n, dtype=object),
        "owner.attrs.team": np.array(["ok", "no", "ok", "no"], dtype=object),
        "action": np.array(["docs.read"] * n, dtype=object),
        "resource.type": np.array(["Doc"] * n, dtype=object),
        "resource.id": np.array(["d"] * n, dtype=object),
        "now": np.array(["2026-01-01T00:00:00Z"] * n, dtype=object),
    }
    result = decide_columns(engine, columns, min_group=99)  # every row one by one
    assert list(result.effect_names()) == ["allow", "deny", "allow", "deny"]
    vectorized = decide_columns(engine, columns, min_group=1)
    assert list(vectorized.effect_names()) == ["allow", "deny", "allow", "deny"]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"a": 1,\n "b": {"a": 2,\n   "a": 3}}', ":3:4:"),
        ('{"x": "NaN",\n  "y": NaN}', ":2:8:"),
        ('[{"a": 1}, {"a": 2,\n "z": "\\"a\\": 1", "a": 5}]', ":2:19:"),
    ],
    ids=["repeated-inner-key", "nan-after-a-string-saying-nan", "key-text-in-a-string"],
)
def test_refused_request_text_is_pointed_at_where_it_is(
    tmp_path: Path, text: str, where: str
) -> None:
    request, result = _eval_text(tmp_path, text)
    assert result.returncode == 2
    assert f"{request}{where}" in result.stderr
