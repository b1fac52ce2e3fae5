"""The columnar batch decides every row as `Engine.decide` does (effect,
listed rules and reason codes), for requests that carry delegation chains,
owners of owners and missing entities, in every column layout it reads.

The hypothesis tests draw policy sets from `test_differential` and requests
whose chains expire, start too late, leave the action out, break, visit an
identity twice, widen, change their purpose or use revoked links; owners
may be missing or not human. Expected answers come from the reference
interpreter.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from ripl import Engine, load_policy
from ripl.batch import (
    Coded,
    Ragged,
    decide_columns,
    request_of_row,
    requests_to_columns,
)
from ripl.runtime.revocation import MemoryRevocationStore
from tests.test_differential import (
    BOT_ATTRS,
    CONTEXT,
    FIXED,
    INVOICE_ATTRS,
    NOW,
    SCHEMA,
    policies,
    record,
    user,
)

ACTIONS = [
    "payments.refund",
    "payments.charge",
    "payments.payout",
    "docs.read",
    "docs.write",
]
SCOPES = ["payments", "payments.refund", "payments.charge", "docs", "docs.read"]
TIMES = {
    "later": "2026-12-04T10:00:00Z",
    "earlier": "2026-12-04T08:00:00Z",
    "now": NOW,  # expired: a link is expired when now >= expires
    "just_before": "2026-12-04T08:59:00Z",  # valid only with clock leeway
    "offset": "2026-12-04T11:00:00+02:00",  # 09:00 UTC: expired
    "fraction": "2026-12-04T09:00:00.500000Z",
}
PARTIES = {
    "alice": {"type": "User", "id": "alice"},
    "bob": {"type": "User", "id": "bob"},
    "rb-7": {"type": "RefundBot", "id": "rb-7"},
    "rb-9": {"type": "RefundBot", "id": "rb-9"},
    "h-1": {"type": "Helper", "id": "h-1"},
}


def _engines(text: str, revoked: frozenset[str], store: bool) -> tuple[Engine, Engine]:
    """The batch's engine (compiled) and the reference, with the same clock
    and revocations; a shared store is asked link by link."""
    policy = load_policy(text)
    options: dict[str, Any] = {"clock": lambda: FIXED}
    if store:
        shared = MemoryRevocationStore()
        for link_id in revoked:
            shared.revoke_link(link_id)
        options["revocations"] = shared
    else:
        options["revoked"] = revoked
    return Engine(policy, **options), Engine(policy, mode="reference", **options)


IDENTITY_HEADS = (
    "entity User: human",
    "entity RefundBot: agent owner User",
    "entity Helper: tool owner RefundBot | User",
)


@st.composite
def ceilings(draw: st.DrawFn, text: str) -> str:
    """The policy set with declared scopes on some identity types (often
    none, often the agent a tool is owned by or a chain passes through)."""
    for head in IDENTITY_HEADS:
        if draw(st.integers(0, 2)) == 0:
            continue
        scopes = draw(st.lists(st.sampled_from(SCOPES), min_size=1, max_size=2))
        listed = ", ".join(sorted(set(scopes)))
        assert head + " {" in text
        text = text.replace(head + " {", f"{head} scopes {listed} {{")
    return text


@st.composite
def links(draw: st.DrawFn, principal: dict[str, Any]) -> list[dict[str, Any]]:
    """A chain ending (mostly) at the principal, each link drawn to pass or
    to fail one of the checks."""
    hops = draw(st.integers(1, 3))
    members = [draw(st.sampled_from(["alice", "alice", "bob", "rb-9"]))]
    for _ in range(hops - 1):
        members.append(draw(st.sampled_from(["rb-9", "rb-9", "alice", "h-1"])))
    end = principal["id"] if draw(st.integers(0, 7)) else "bob"
    members.append(end)
    chain = []
    for i in range(hops):
        source = PARTIES.get(members[i], principal)
        target = PARTIES.get(members[i + 1], principal)
        if members[i + 1] == principal["id"]:
            target = {"type": principal["type"], "id": principal["id"]}
        if i and draw(st.integers(0, 9)) == 0:  # continuity broken
            source = PARTIES["bob"]
        link: dict[str, Any] = {
            "id": draw(st.sampled_from(["d-1", "d-2", "d-3"])),
            "from": dict(source),
            "to": dict(target),
            "scopes": draw(st.lists(st.sampled_from(SCOPES), min_size=0, max_size=2)),
            "expires": TIMES[draw(st.sampled_from(sorted(TIMES)))],
        }
        roll = draw(st.integers(0, 9))
        if roll == 0:
            link["not_before"] = TIMES[draw(st.sampled_from(["later", "earlier"]))]
        if roll == 1:
            link["limits"] = {"spend": draw(st.sampled_from([50, 150]))}
        if roll == 2:
            del link["id"]  # malformed
        if draw(st.booleans()):
            link["purpose"] = draw(st.sampled_from(["refund", "audit", ""]))
        chain.append(link)
    return chain


@st.composite
def chained_requests(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["User", "RefundBot", "RefundBot", "Helper", "Helper"]))
    if kind == "User":
        principal = user(draw, draw(st.sampled_from(["alice", "bob"])))
    elif kind == "RefundBot":
        ident = draw(st.sampled_from(["rb-7", "rb-9"]))
        principal = {"type": kind, "id": ident, "attrs": record(draw, BOT_ATTRS)}
    else:
        principal = {"type": "Helper", "id": "h-1", "attrs": {"vendor": "acme"}}
    entities = []
    if draw(st.integers(0, 3)):
        entities.append(user(draw, "alice"))
    if kind != "User" and draw(st.integers(0, 5)):
        owner = draw(st.sampled_from(["alice", "bob", "rb-9", "rb-9"]))
        principal["owner"] = dict(PARTIES[owner])
        if owner == "rb-9" and draw(st.integers(0, 3)):  # the owner's owner
            bot: dict[str, Any] = {"type": "RefundBot", "id": "rb-9"}
            if draw(st.integers(0, 4)):
                bot["owner"] = dict(PARTIES[draw(st.sampled_from(["alice", "bob"]))])
            entities.append(bot)
    if draw(st.integers(0, 19)) == 0:  # listed twice: a bad request
        entities.append(user(draw, "alice"))
    resource = {"type": "Invoice", "id": "inv-1", "attrs": record(draw, INVOICE_ATTRS)}
    request: dict[str, Any] = {
        "principal": principal,
        "action": draw(st.sampled_from(ACTIONS)),
        "resource": resource,
        "context": record(draw, CONTEXT),
        "entities": entities,
    }
    if draw(st.integers(0, 9)):
        request["now"] = NOW
    if draw(st.integers(0, 4)):
        request["delegation"] = draw(links(principal))
    return request


def _as_objects(columns: dict[str, Any], batch: list[dict[str, Any]]) -> None:
    """The same rows with `delegation` and `entities` as object columns."""
    for name in ("delegation", "entities"):
        lists = np.empty(len(batch), dtype=object)
        lists[:] = [request.get(name) or None for request in batch]
        columns[name] = lists


def _assert_rows_agree(result: Any, reference: Engine, batch: list[Any]) -> None:
    for row, request in enumerate(batch):
        want = reference.decide(request)
        got = (
            result.effect_names()[row],
            result.rules_of(row),
            tuple(result.rules[row]),
            result.reason_codes(row),
        )
        wanted = (want.effect, want.rule_ids, want.rule_ids, want.reason_codes)
        assert got == wanted, f"row {row}: {request!r}"


@given(
    policies().flatmap(ceilings),
    st.lists(chained_requests(), min_size=1, max_size=8),
    st.frozensets(st.sampled_from(["d-1", "d-2", "d-3"]), max_size=2),
    st.sampled_from(["typed", "plain", "objects"]),
    st.booleans(),
    st.booleans(),
)
def test_batch_with_chains_agrees_with_decide_row_by_row(
    text: str,
    batch: list[dict[str, Any]],
    revoked: frozenset[str],
    layout: str,
    leeway: bool,
    store: bool,
) -> None:
    """Declared scopes included: a batch that ignored them would allow what
    `decide` refuses (`scope_not_declared`)."""
    if leeway:
        text = "option clock_leeway = 2m\n" + text
    note(text)
    engine, reference = _engines(text, revoked, store)
    schema = engine.policy.schema if layout == "typed" else None
    columns = requests_to_columns(batch, schema)
    if layout == "objects":
        _as_objects(columns, batch)
    result = decide_columns(engine, columns, min_group=1)
    assert result.vectorized + result.fallback == len(batch)
    _assert_rows_agree(result, reference, batch)


@contextlib.contextmanager
def _table_budget(words: int) -> Iterator[None]:
    """Plans built inside use tables of at most `words` entries per bucket
    and attribute: 0 sends every bucket pair by pair, a few entries make
    most tables keep one entry per interval of the bucket's own tests."""
    import ripl.batch.plan as batch_module

    saved = batch_module.TABLE_WORDS, batch_module._PLANS
    batch_module.TABLE_WORDS = words
    batch_module._PLANS = weakref.WeakKeyDictionary()
    try:
        yield
    finally:
        batch_module.TABLE_WORDS, batch_module._PLANS = saved


@given(
    policies().flatmap(ceilings),
    st.lists(chained_requests(), min_size=1, max_size=8),
    st.sampled_from([0, 2, 3, 4, 5, 8]),
)
def test_tables_per_interval_and_pairs_agree_with_decide(
    text: str, batch: list[dict[str, Any]], words: int
) -> None:
    engine, reference = _engines(text, frozenset(), False)
    columns = requests_to_columns(batch, engine.policy.schema)
    with _table_budget(words):
        result = decide_columns(engine, columns, min_group=1)
    _assert_rows_agree(result, reference, batch)


@given(policies(), st.lists(chained_requests(), min_size=1, max_size=8))
def test_rows_rebuilt_from_columns_decide_as_the_requests(
    text: str, batch: list[dict[str, Any]]
) -> None:
    engine, _ = _engines(text, frozenset(), False)
    columns = requests_to_columns(batch, engine.policy.schema)
    for row, request in enumerate(batch):
        rebuilt = engine.decide(request_of_row(columns, row))
        assert rebuilt.same_answer(engine.decide(request))


# ---- each reason a chain can fail with -----------------------------------------

POLICY = SCHEMA + (
    "allow bots: principal is RefundBot | Helper action payments\n"
    "allow people: principal is User action payments.refund, payments.charge\n"
    "deny big: action payments when resource.amount > 1000\n"
)
BOT = {"type": "RefundBot", "id": "rb-7"}


def _link(source: str, target: dict[str, str], **fields: Any) -> dict[str, Any]:
    link = {
        "id": "d-1",
        "from": dict(PARTIES[source]),
        "to": dict(target),
        "scopes": ["payments"],
        "expires": TIMES["later"],
    }
    link.update(fields)
    return link


def _bot_request(chain: list[dict[str, Any]] | None, **fields: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "principal": {"type": "RefundBot", "id": "rb-7", "attrs": {}},
        "action": "payments.refund",
        "resource": {"type": "Invoice", "id": "inv-1", "attrs": {"amount": 10}},
        "entities": [{"type": "User", "id": "alice", "attrs": {"team": "billing"}}],
        "now": NOW,
    }
    if chain is not None:
        request["delegation"] = chain
    request.update(fields)
    return request


TO_BOT = _link("alice", BOT)
CASES = {
    "valid": (_bot_request([TO_BOT]), ("matched",)),
    "expired": (
        _bot_request([_link("alice", BOT, expires=TIMES["earlier"])]),
        ("expired_link",),
    ),
    "expires_exactly_now": (
        _bot_request([_link("alice", BOT, expires=NOW)]),
        ("expired_link",),
    ),
    "not_yet_valid": (
        _bot_request([_link("alice", BOT, not_before=TIMES["later"])]),
        ("expired_link",),
    ),
    "revoked": (_bot_request([_link("alice", BOT, id="gone")]), ("revoked_link",)),
    "outside_the_scopes": (
        _bot_request([_link("alice", BOT, scopes=["docs"])]),
        ("scope_not_delegated",),
    ),
    "no_scopes_at_all": (
        _bot_request([_link("alice", BOT, scopes=[])]),
        ("scope_not_delegated",),
    ),
    "second_link_widens": (
        _bot_request(
            [
                _link("alice", PARTIES["rb-9"], scopes=["payments.refund"]),
                _link("rb-9", BOT, id="d-2", scopes=["payments"]),
            ]
        ),
        ("chain_widens",),
    ),
    "second_link_narrows": (
        _bot_request(
            [
                _link("alice", PARTIES["rb-9"], scopes=["payments", "docs"]),
                _link("rb-9", BOT, id="d-2", scopes=["payments.refund"]),
            ]
        ),
        ("matched",),
    ),
    "continuity_broken": (
        _bot_request([_link("alice", PARTIES["rb-9"]), _link("bob", BOT, id="d-2")]),
        ("broken_chain",),
    ),
    "visits_twice": (
        _bot_request(
            [
                _link("alice", PARTIES["rb-9"]),
                _link("rb-9", PARTIES["alice"], id="d-2"),
                _link("alice", BOT, id="d-3"),
            ]
        ),
        ("broken_chain",),
    ),
    "ends_elsewhere": (
        _bot_request([_link("alice", PARTIES["rb-9"])]),
        ("broken_chain",),
    ),
    "root_not_human": (_bot_request([_link("rb-9", BOT)]), ("root_not_human",)),
    "purpose_changes": (
        _bot_request(
            [
                _link("alice", PARTIES["rb-9"], purpose="refund"),
                _link("rb-9", BOT, id="d-2", purpose="audit"),
            ]
        ),
        ("chain_widens",),
    ),
    "every_failure_listed_in_order": (
        _bot_request(
            [_link("rb-9", BOT, id="gone", expires=TIMES["earlier"], scopes=["docs"])]
        ),
        ("root_not_human", "expired_link", "revoked_link", "scope_not_delegated"),
    ),
    "agent_without_delegation": (_bot_request(None), ("agent_without_delegation",)),
    "root_not_allowed": (
        _bot_request([_link("alice", BOT)], action="payments.payout"),
        ("escalation",),
    ),
    "tool_owned_by_a_bot_nobody_lists": (
        {
            **_bot_request(None),
            "principal": {"type": "Helper", "id": "h-1", "owner": PARTIES["rb-9"]},
        },
        ("root_not_found",),
    ),
    "tool_owned_by_a_bot_owned_by_alice": (
        {
            **_bot_request(None),
            "principal": {"type": "Helper", "id": "h-1", "owner": PARTIES["rb-9"]},
            "entities": [
                {"type": "RefundBot", "id": "rb-9", "owner": PARTIES["alice"]},
                {"type": "User", "id": "alice"},
            ],
        },
        ("matched",),
    ),
    "owners_lead_around_in_a_circle": (
        {
            **_bot_request(None),
            "principal": {"type": "Helper", "id": "h-1", "owner": PARTIES["rb-9"]},
            "entities": [{"type": "RefundBot", "id": "rb-9", "owner": PARTIES["h-1"]}],
        },
        ("root_not_found",),
    ),
    "denied_by_a_rule_before_the_root_is_looked_for": (
        {
            **_bot_request(None),
            "principal": {"type": "Helper", "id": "h-1", "owner": PARTIES["rb-9"]},
            "resource": {"type": "Invoice", "id": "inv-1", "attrs": {"amount": 5000}},
        },
        ("matched",),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("layout", ["typed", "objects"])
def test_chain_reasons_match_decide(case: str, layout: str) -> None:
    request, codes = CASES[case]
    engine = Engine(load_policy(POLICY), clock=lambda: FIXED, revoked={"gone"})
    columns = requests_to_columns([request] * 8, engine.policy.schema)
    if layout == "objects":
        _as_objects(columns, [request] * 8)
    result = decide_columns(engine, columns)
    want = engine.decide(request)
    assert want.reason_codes == codes
    assert result.fallback == 0  # decided by the vectorized path
    for row in range(8):
        assert result.reason_codes(row) == codes
        assert result.effect_names()[row] == want.effect
        assert result.rules_of(row) == want.rule_ids


def test_clock_leeway_keeps_a_link_just_expired_valid() -> None:
    text = "option clock_leeway = 2m\n" + POLICY
    engine = Engine(load_policy(text), clock=lambda: FIXED)
    request = _bot_request([_link("alice", BOT, expires=TIMES["just_before"])])
    result = decide_columns(engine, requests_to_columns([request] * 8))
    assert engine.decide(request).effect == "allow"
    assert list(result.effect_names()) == ["allow"] * 8
    assert result.fallback == 0


def test_a_revocation_after_a_batch_reaches_the_next_batch() -> None:
    engine = Engine(load_policy(POLICY), clock=lambda: FIXED)
    columns = requests_to_columns([_bot_request([TO_BOT])] * 8)
    assert list(decide_columns(engine, columns).effect_names()) == ["allow"] * 8
    engine.revoke("d-1")
    result = decide_columns(engine, columns)
    assert list(result.effect_names()) == ["deny"] * 8
    assert result.reason_codes(0) == ("revoked_link",)


def test_a_shared_store_is_asked_for_every_link() -> None:
    store = MemoryRevocationStore()
    store.revoke_principal({"type": "RefundBot", "id": "rb-9"})
    engine = Engine(load_policy(POLICY), clock=lambda: FIXED, revocations=store)
    chained = _bot_request([_link("alice", PARTIES["rb-9"]), _link("rb-9", BOT)])
    batch = [chained, _bot_request([TO_BOT])] * 4
    result = decide_columns(engine, requests_to_columns(batch))
    assert list(result.effect_names()) == ["deny", "allow"] * 4
    assert result.reason_codes(0) == ("revoked_link", "revoked_link")


def test_a_replaced_policy_set_decides_the_next_batch() -> None:
    engine = Engine(load_policy(POLICY), clock=lambda: FIXED)
    columns = requests_to_columns([_bot_request([TO_BOT])] * 8)
    assert decide_columns(engine, columns).rules_of(0) == ("bots",)
    engine.replace(load_policy(POLICY.replace("allow bots:", "deny bots:")))
    result = decide_columns(engine, columns)
    assert result.rules_of(0) == ("bots",)
    assert list(result.effect_names()) == ["deny"] * 8


# ---- the column layouts ----------------------------------------------------------


def _layout_batch() -> list[dict[str, Any]]:
    return [
        _bot_request([TO_BOT]),
        _bot_request([_link("alice", BOT, scopes=["docs"])]),
        _bot_request(None, principal={"type": "User", "id": "alice"}, entities=[]),
        _bot_request(
            [TO_BOT],
            resource={"type": "Invoice", "id": "inv-2", "attrs": {"amount": 5000}},
        ),
    ] * 6


def test_rules_are_compressed_rows_of_rule_indices() -> None:
    engine = Engine(load_policy(POLICY), clock=lambda: FIXED)
    batch = _layout_batch()
    result = decide_columns(engine, requests_to_columns(batch))
    assert result.rule_ids == ("big", "bots", "people")
    assert result.rule_offsets.tolist()[:5] == [0, 1, 1, 2, 3]
    assert [result.rule_ids[k] for k in result.rule_index[:3]] == [
        "bots",
        "people",
        "big",
    ]
    assert [result.rules_of(row) for row in range(4)] == [
        ("bots",),
        (),
        ("people",),
        ("big",),
    ]


def test_columns_as_a_decision_log_holds_them() -> None:
    """Dictionary-encoded strings, masked numbers, `datetime64` times and
    ragged chains: the layout `requests_to_columns` writes."""
    engine = Engine(load_policy(POLICY), clock=lambda: FIXED)
    batch = _layout_batch()
    columns = requests_to_columns(batch, engine.policy.schema)
    assert isinstance(columns["action"], Coded)
    assert isinstance(columns["delegation"], Ragged)
    assert isinstance(columns["entities"], Ragged)
    assert columns["now"].dtype == np.dtype("datetime64[us]")
    assert isinstance(columns["resource.attrs.amount"], np.ndarray)
    result = decide_columns(engine, columns)
    assert result.fallback == 0
    assert [result.effect_names()[row] for row in range(4)] == [
        "allow",
        "deny",
        "allow",
        "deny",
    ]


class _Categorical:
    """What decide_columns reads of a pandas `Categorical`."""

    def __init__(self, values: list[str | None]) -> None:
        self.categories = sorted({v for v in values if v is not None})
        self.codes = [-1 if v is None else self.categories.index(v) for v in values]

    def __len__(self) -> int:
        return len(self.codes)


def test_plain_and_categorical_columns_decide_alike() -> None:
    engine = Engine(load_policy(POLICY), clock=lambda: FIXED)
    batch = _layout_batch()
    columns = requests_to_columns(batch, engine.policy.schema)
    want = decide_columns(engine, columns)
    plain = dict(columns)
    for name, data in columns.items():
        if isinstance(data, Coded):
            plain[name] = data.decode()
    plain["now"] = np.array([NOW] * len(batch))
    categorical = dict(plain, action=_Categorical([r["action"] for r in batch]))
    for variant in (plain, categorical):
        got = decide_columns(engine, variant)
        assert got.effects.tolist() == want.effects.tolist()
        assert got.rules.tolist() == want.rules.tolist()
        assert got.fallback == 0


def test_ragged_rows_can_be_selected_like_arrays() -> None:
    batch = _layout_batch()
    columns = requests_to_columns(batch)
    chains = columns["delegation"]
    picked = chains[np.array([1, 2, 0])]
    assert len(picked) == 3
    assert picked.row(0) == batch[1]["delegation"]
    assert picked.row(1) is None
    assert picked.row(2) == batch[0]["delegation"]


def test_ids_that_hash_alike_send_every_row_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ids compare by hash only when no two different ids share one."""
    import ripl.batch.replay as batch_module

    hashed = batch_module._text_hashes

    def colliding(text: Any) -> Any:
        each, unique, hashes = hashed(text)
        return np.zeros_like(each), unique, np.zeros_like(hashes)

    monkeypatch.setattr(batch_module, "_text_hashes", colliding)
    engine = Engine(load_policy(POLICY), clock=lambda: FIXED)
    batch = _layout_batch()
    result = decide_columns(engine, requests_to_columns(batch))
    assert result.fallback == len(batch)
    for row, request in enumerate(batch):
        want = engine.decide(request)
        assert result.effect_names()[row] == want.effect
        assert result.rules_of(row) == want.rule_ids


@pytest.mark.parametrize("words", [0, 64, 4096])
def test_the_benchmark_workload_agrees_with_decide_row_by_row(words: int) -> None:
    """The benchmark's agents, tools, owners of owners and chains, at every
    table budget (0: pair by pair; 64: tables per interval)."""
    from benchmarks.ripl_peer import ripl_request, ripl_source
    from benchmarks.workload import generate_workload

    workload = generate_workload(300, 400, seed=11)
    engine = Engine(load_policy(text=ripl_source(workload)))
    batch = [ripl_request(r, workload.entities) for r in workload.requests]
    columns = requests_to_columns(batch, engine.policy.schema)
    with _table_budget(words):
        result = decide_columns(engine, columns)
    assert result.fallback == 0
    _assert_rows_agree(result, engine, batch)
