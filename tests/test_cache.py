"""Stale caches (PEER-BUGS case 7): after any change, the decision equals that
of a fresh engine built from the changed policy, with the decision cache and
the compiled-set cache both warm."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ripl import Engine, load_policy
from ripl.cache import CompiledSetCache, chain_window
from ripl.compile import COMPILED, Core, compile_policy
from ripl.ir import PolicySet
from ripl.request import parse_request

SCHEMA = """\
entity User: human { role: string }
entity Bot: agent owner User { model: string }
entity Doc { }
actions docs { read, write }
"""
V1 = SCHEMA + (
    "allow r1: principal is User action docs.write resource is Doc "
    'when principal.role == "editor" and resource.id == "d1"\n'
)
WITH_USER_DENY = V1 + (
    'deny r2: principal is User action docs.write when principal.id == "al"\n'
)
UPDATED_IN_PLACE = SCHEMA + (
    "allow r1: principal is User action docs.read resource is Doc "
    'when principal.role == "editor" and resource.id == "d1"\n'
)
WITH_ROLE_DENY = UPDATED_IN_PLACE + (
    "deny r3: action docs resource is Doc "
    'when principal is User and principal.role == "editor" and resource.id == "d1"\n'
)
EMPTY = SCHEMA

FIXED = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def request(action: str, who: str = "al") -> dict[str, Any]:
    return {
        "principal": {"type": "User", "id": who, "attrs": {"role": "editor"}},
        "action": action,
        "resource": {"type": "Doc", "id": "d1"},
    }


def engine(text: str, **options: Any) -> Engine:
    return Engine(load_policy(text), clock=lambda: FIXED, **options)


def fresh(text: str, req: dict[str, Any]) -> str:
    return engine(text, mode="reference").decide(req).effect


def test_cached_allow_does_not_survive_any_policy_change() -> None:
    cached = engine(V1, decision_cache=128)
    steps = [
        (V1, "docs.write", "allow"),
        (WITH_USER_DENY, "docs.write", "deny"),
        (UPDATED_IN_PLACE, "docs.write", "deny"),
        (UPDATED_IN_PLACE, "docs.read", "allow"),
        (WITH_ROLE_DENY, "docs.read", "deny"),
        (EMPTY, "docs.read", "deny"),
        (EMPTY, "docs.write", "deny"),
    ]
    for text, action, effect in steps:
        cached.replace(load_policy(text))
        for _ in range(3):  # the first fills the cache, the others hit it
            decision = cached.decide(request(action))
            assert decision.effect == effect == fresh(text, request(action))
    stats = cached.cache_stats()
    assert stats is not None and stats.hits > 0


def test_engine_sharing_the_compiled_set_cache_sees_the_new_policy() -> None:
    a = engine(V1, decision_cache=16)
    b = engine(V1, decision_cache=16)
    for e in (a, b):
        assert e.decide(request("docs.write")).effect == "allow"
    a.replace(load_policy(WITH_USER_DENY))
    assert a.decide(request("docs.write")).effect == "deny"
    # b still serves v1 until it is given the new set; then at once
    assert b.decide(request("docs.write")).effect == "allow"
    b.replace(load_policy(WITH_USER_DENY))
    assert b.decide(request("docs.write")).effect == "deny"
    # and an engine built from v1 again gets v1's tree, not v2's
    assert engine(V1).decide(request("docs.write")).effect == "allow"


def test_compiled_set_cache_reuses_an_unchanged_policy() -> None:
    store: CompiledSetCache[Core] = CompiledSetCache(maxsize=4)
    first = compile_policy(load_policy(V1), store)
    again = compile_policy(load_policy(V1), store)
    assert again.core is first.core
    assert store.hits == 1
    changed = compile_policy(load_policy(WITH_USER_DENY), store)
    assert changed.core is not first.core


def test_reused_tree_names_the_rules_of_the_new_load() -> None:
    """The tree is shared by content hash, but each load binds its own rules,
    so decisions point at the sources of the policy set actually served."""
    one = load_policy(text=V1, name="one.ripl")
    two = load_policy(text=V1, name="two.ripl")
    decisions = [
        Engine(p, clock=lambda: FIXED).decide(request("docs.write")) for p in (one, two)
    ]
    files = [d.rules[0].file for d in decisions]
    assert files == [one.rules[0].span.file, two.rules[0].span.file]


def test_global_compiled_cache_holds_loaded_policies() -> None:
    policy = load_policy(V1)
    compile_policy(policy)
    assert policy.policy_hash in COMPILED


CHAINED = SCHEMA + (
    "allow humans: principal is User action docs.read\n"
    "allow bots: principal is Bot action docs.read when delegation.grants(docs.read)\n"
)


def chained(now: str = "2026-12-04T09:00:00Z") -> dict[str, Any]:
    return {
        "principal": {
            "type": "Bot",
            "id": "b1",
            "attrs": {"model": "m"},
            "owner": {"type": "User", "id": "al"},
        },
        "action": "docs.read",
        "resource": {"type": "Doc", "id": "d1"},
        "delegation": [
            {
                "from": {"type": "User", "id": "al"},
                "to": {"type": "Bot", "id": "b1"},
                "scopes": ["docs"],
                "expires": "2026-12-04T10:00:00Z",
                "id": "link-1",
            }
        ],
        "entities": [{"type": "User", "id": "al", "attrs": {"role": "editor"}}],
        "now": now,
    }


def test_revocation_clears_cached_allows() -> None:
    e = engine(CHAINED, decision_cache=16)
    assert e.decide(chained()).effect == "allow"
    assert e.decide(chained()).effect == "allow"
    e.revoke("link-1")
    decision = e.decide(chained())
    assert decision.effect == "deny"
    assert decision.reason_codes == ("revoked_link",)


def test_cached_decision_is_not_reused_after_the_link_expires() -> None:
    e = engine(CHAINED, decision_cache=16)
    assert e.decide(chained()).effect == "allow"
    late = e.decide(chained("2026-12-04T10:00:00Z"))
    assert late.effect == "deny"
    assert late.reason_codes == ("expired_link",)
    assert late == engine(CHAINED, mode="reference").decide(
        chained("2026-12-04T10:00:00Z")
    )


def test_cache_hit_carries_this_requests_time() -> None:
    e = engine(CHAINED, decision_cache=16)
    first = e.decide(chained("2026-12-04T09:00:00Z"))
    second = e.decide(chained("2026-12-04T09:30:00Z"))
    assert e.cache_stats() is not None
    assert e.cache_stats().hits == 1  # type: ignore[union-attr]
    assert second.evaluated_at != first.evaluated_at
    assert second.same_answer(first)


@pytest.mark.parametrize(("value", "other"), [(True, 1), (1, 1.0), ("1", 1)])
def test_values_equal_in_python_do_not_share_a_key(value: Any, other: Any) -> None:
    text = (
        "entity User: human { flag: bool }\nentity Doc { }\nactions docs { read }\n"
        "allow r: action docs.read when principal.flag == true\n"
    )
    e = engine(text, decision_cache=16)
    ref = engine(text, mode="reference")
    for flag in (value, other, value):
        req = {
            "principal": {"type": "User", "id": "u", "attrs": {"flag": flag}},
            "action": "docs.read",
            "resource": {"type": "Doc", "id": "d"},
        }
        assert e.decide(req) == ref.decide(req)


def test_chain_window_is_bounded_by_the_next_expiry() -> None:
    policy: PolicySet = load_policy(CHAINED)
    parsed = parse_request(chained(), policy.schema, FIXED)
    from datetime import timedelta

    window = chain_window(parsed.chain, parsed.now, timedelta(0))
    assert window.start is None
    assert window.end == datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


def test_an_edited_decision_never_edits_the_next_one() -> None:
    """Decisions may share a verdict (a cache hit, a kept verdict), so what an
    application is handed cannot be edited: a restrict decision's obligations
    stay what the policy says on every later answer."""
    import json
    from pathlib import Path

    import ripl

    folder = Path(__file__).resolve().parent.parent / "examples" / "refunds"
    request = json.loads((folder / "requests" / "read-invoice.json").read_text())
    fresh = ripl.load(folder).decide(request)
    assert fresh.effect == "restrict" and "redact" in fresh.obligations
    for options in ({"decision_cache": 64}, {}, {"mode": "reference"}):
        engine = ripl.load(folder, **options)
        first = engine.decide(request)
        with pytest.raises((TypeError, AttributeError)):
            first.obligations.clear()  # type: ignore[attr-defined]
        with pytest.raises(TypeError):
            first.obligations["redact"] = frozenset()  # type: ignore[index]
        again = engine.decide(request)
        assert again.obligations == fresh.obligations
        assert dict(again.obligations) == dict(fresh.obligations)
