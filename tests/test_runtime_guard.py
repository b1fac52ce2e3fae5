from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import ripl
from ripl.runtime import (
    AuditLog,
    ChainRejectedError,
    Credential,
    CredentialReusedError,
    Enforcement,
    Guard,
    Identity,
    MemoryCredentialBroker,
    MemoryRevocationStore,
    ObligationRefused,
    StaticKeyResolver,
    StepUpRequiredError,
    ToolCall,
    ToolDeniedError,
    default_request,
    grant,
    redact,
    request_with_chain,
)
from ripl.runtime.guard import CREDENTIAL_REMOVED, ToolFailedError, refuse_over_cap

POLICY = """\
module shop

import std.obligations
import std.stepup

entity Clerk: human { team: string }
entity Bot: agent owner Clerk { model: string }
entity Invoice { amount: decimal }

actions payments { refund }
actions crm { lookup, export, notes }

context { amount?: decimal }

obligation max_lines: int merge min

allow clerks:
    principal is Clerk
    action payments, crm
    resource is Invoice

restrict bot_refunds with cap(100), credential_ttl(2m):
    principal is Bot
    action payments.refund
    resource is Invoice
    when delegation.grants(payments.refund)

step_up big_refunds requires human_approval:
    principal is Bot
    action payments.refund
    when context.amount > 500

restrict bot_lookups with redact("email", "phone"):
    principal is Bot
    action crm.lookup
    resource is Invoice

restrict bot_notes with max_lines(3):
    principal is Bot
    action crm.notes
    resource is Invoice

deny no_exports:
    action crm.export
"""

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
CAROL = Identity("Clerk", "carol")
BOT = Identity("Bot", "b1")
KEYS = {CAROL: Ed25519PrivateKey.generate(), BOT: Ed25519PrivateKey.generate()}
RESOLVER = StaticKeyResolver({who: key.public_key() for who, key in KEYS.items()})
INVOICE_1 = {"type": "Invoice", "id": "inv-1"}
CLERK_ENTITY = {"type": "Clerk", "id": "carol", "attrs": {"team": "billing"}}
BOT_PRINCIPAL = {
    "type": "Bot",
    "id": "b1",
    "attrs": {"model": "m-1"},
    "owner": {"type": "Clerk", "id": "carol"},
}


def invoice(args: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "Invoice",
        "id": args["invoice_id"],
        "attrs": {"amount": args.get("amount", 0)},
    }


def token(scopes: tuple[str, ...] = ("payments", "crm"), link_id: str = "d-1") -> str:
    chain = grant(CAROL, BOT, list(scopes), LATER, key=KEYS[CAROL], link_id=link_id)
    return chain.serialize()


def bot_session(**extra: Any) -> dict[str, Any]:
    session: dict[str, Any] = {
        "principal": BOT_PRINCIPAL,
        "delegation_token": token(),
        "entities": [CLERK_ENTITY],
        "context": {},
        "now": "2026-12-04T09:00:00Z",
    }
    session.update(extra)
    return session


class Ran:
    """Records what a tool was called with."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []


@pytest.fixture
def engine() -> ripl.Engine:
    return ripl.load(text=POLICY)


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit.db")


@pytest.fixture
def broker() -> MemoryCredentialBroker:
    return MemoryCredentialBroker()


def make_guard(
    engine: ripl.Engine,
    audit: AuditLog | None,
    broker: MemoryCredentialBroker | None = None,
    **options: Any,
) -> Guard:
    options.setdefault("session", bot_session())
    return Guard(engine, audit=audit, broker=broker, keys=RESOLVER, **options)


# -- chains into requests ----------------------------------------------------


def test_request_with_chain_puts_the_verified_links_in_the_request() -> None:
    request = {"principal": BOT_PRINCIPAL, "action": "payments.refund"}
    out = request_with_chain(request, token(), RESOLVER, NOW)
    assert out["delegation"] == [
        {
            "from": {"type": "Clerk", "id": "carol"},
            "to": {"type": "Bot", "id": "b1"},
            "scopes": ["payments", "crm"],
            "expires": "2026-12-04T10:00:00Z",
            "id": "d-1",
        }
    ]
    assert "delegation" not in request


def test_request_with_chain_refuses_a_token_signed_by_someone_else() -> None:
    forged = grant(CAROL, BOT, ["payments"], LATER, key=KEYS[BOT], link_id="d-9")
    with pytest.raises(ChainRejectedError) as err:
        request_with_chain(
            {"principal": BOT_PRINCIPAL}, forged.serialize(), RESOLVER, NOW
        )
    assert err.value.code == "invalid_signature"


def test_request_with_chain_refuses_a_chain_for_another_principal() -> None:
    other = {"type": "Bot", "id": "b2", "owner": {"type": "Clerk", "id": "carol"}}
    with pytest.raises(ChainRejectedError) as err:
        request_with_chain({"principal": other}, token(), RESOLVER, NOW)
    assert err.value.code == "broken_chain"


def test_request_with_chain_refuses_a_revoked_link() -> None:
    store = MemoryRevocationStore()
    store.revoke_link("d-1")
    with pytest.raises(ChainRejectedError) as err:
        request_with_chain(
            {"principal": BOT_PRINCIPAL}, token(), RESOLVER, NOW, revoked=store
        )
    assert err.value.failures == ("revoked_link: link at position 0 is revoked",)


# -- the engine's shared revocation store -----------------------------------


def test_engine_denies_a_link_revoked_in_a_shared_store_at_once() -> None:
    store = MemoryRevocationStore()
    engine = ripl.Engine(ripl.load_policy(text=POLICY), revocations=store)
    request = request_with_chain(
        {
            "principal": BOT_PRINCIPAL,
            "action": "payments.refund",
            "resource": {"type": "Invoice", "id": "inv-1", "attrs": {"amount": 5}},
            "context": {"amount": 5},
            "entities": [CLERK_ENTITY],
            "now": "2026-12-04T09:00:00Z",
        },
        token(),
        RESOLVER,
        NOW,
    )
    assert engine.decide(request).effect == "restrict"
    store.revoke_principal({"type": "Clerk", "id": "carol"})
    decision = engine.decide(request)
    assert decision.effect == "deny"
    assert decision.reason_codes == ("revoked_link",)


# -- allow, restrict, step_up, deny ------------------------------------------


def test_allowed_call_runs_and_is_audited(engine: ripl.Engine, audit: AuditLog) -> None:
    clerk = {"principal": CLERK_ENTITY, "now": "2026-12-04T09:00:00Z"}
    guard = make_guard(engine, audit, session=clerk)

    @guard.tool(action="crm.lookup", resource=invoice)
    def lookup(invoice_id: str) -> dict[str, Any]:
        return {"id": invoice_id, "email": "x@example.com"}

    assert lookup("inv-1") == {"id": "inv-1", "email": "x@example.com"}
    (record,) = audit.query()
    assert (record.tag, record.effect, record.rules) == ("guard", "allow", ("clerks",))
    assert record.principal == CAROL
    assert record.decision["policy_hash"] == engine.policy_hash


def test_redaction_removes_fields_at_every_depth(
    engine: ripl.Engine, audit: AuditLog
) -> None:
    guard = make_guard(engine, audit)

    @guard.tool(action="crm.lookup", resource=invoice)
    def lookup(invoice_id: str) -> dict[str, Any]:
        return {
            "name": "Ada",
            "email": "ada@example.com",
            "contacts": [
                {"email": "b@example.com", "phone": "1", "note": "keep"},
                {"nested": {"phone": "2", "city": "Paris"}},
            ],
            "pair": ({"phone": "3"}, "x"),
        }

    assert lookup("inv-1") == {
        "name": "Ada",
        "contacts": [{"note": "keep"}, {"nested": {"city": "Paris"}}],
        "pair": ({}, "x"),
    }
    assert audit.query()[0].effect == "restrict"


def test_redaction_of_a_list_of_records() -> None:
    rows = [{"id": 1, "email": "a"}, {"id": 2, "email": "b", "phone": "c"}]
    assert redact(rows, frozenset({"email", "phone"})) == [{"id": 1}, {"id": 2}]


def test_a_result_the_guard_cannot_look_inside_is_withheld(
    engine: ripl.Engine, audit: AuditLog
) -> None:
    guard = make_guard(engine, audit)

    class Opaque:
        email = "ada@example.com"

    @guard.tool(action="crm.lookup", resource=invoice)
    def lookup(invoice_id: str) -> Opaque:
        return Opaque()

    with pytest.raises(ToolDeniedError) as err:
        lookup("inv-1")
    assert err.value.decision.reason_codes == ("obligation_unenforceable",)
    assert [r.effect for r in audit.query()] == ["restrict", "deny"]


def test_cap_lowers_the_amount_the_tool_receives(
    engine: ripl.Engine, audit: AuditLog, broker: MemoryCredentialBroker
) -> None:
    guard = make_guard(engine, audit, broker)
    seen: list[Any] = []

    @guard.tool(action="payments.refund", resource=invoice)
    def refund(invoice_id: str, amount: int, credential: Credential) -> str:
        seen.append(amount)
        return "ok"

    assert refund("inv-1", 80) == "ok"
    assert refund("inv-2", amount=300) == "ok"
    assert seen == [80, 100]
    assert type(seen[1]) is int


def test_cap_can_refuse_instead_of_lowering(
    engine: ripl.Engine, audit: AuditLog, broker: MemoryCredentialBroker
) -> None:
    guard = make_guard(engine, audit, broker, obligations={"cap": refuse_over_cap})
    ran = Ran()

    @guard.tool(action="payments.refund", resource=invoice)
    def refund(invoice_id: str, amount: Decimal, credential: Credential) -> str:
        ran.calls.append({"amount": amount})
        return "ok"

    with pytest.raises(ToolDeniedError) as err:
        refund("inv-1", Decimal("100.01"))
    assert ran.calls == []
    assert err.value.decision.reason_codes == ("obligation_unenforceable",)
    assert audit.query()[0].effect == "deny"


def test_cap_without_an_amount_argument_denies(
    engine: ripl.Engine, audit: AuditLog, broker: MemoryCredentialBroker
) -> None:
    session = bot_session(context={"amount": 5})
    guard = make_guard(engine, audit, broker, session=session)
    ran = Ran()

    @guard.tool(action="payments.refund", resource=invoice)
    def refund(invoice_id: str, credential: Credential) -> str:
        ran.calls.append({})
        return "ok"

    with pytest.raises(ToolDeniedError, match="no amount argument"):
        refund("inv-1")
    assert ran.calls == []


def test_the_tool_gets_a_one_call_credential_that_never_reaches_the_caller(
    engine: ripl.Engine, audit: AuditLog, broker: MemoryCredentialBroker
) -> None:
    guard = make_guard(engine, audit, broker)
    given: list[Credential] = []

    @guard.tool(action="payments.refund", resource=invoice)
    def refund(invoice_id: str, amount: int, credential: Credential) -> dict[str, Any]:
        given.append(credential)
        target = {"type": "Invoice", "id": invoice_id}
        broker.redeem(credential, "payments.refund", target, NOW)
        return {
            "status": "refunded",
            "used": credential,
            "echo": f"token={credential.secret}",
            "items": [credential, {"k": credential.secret}],
        }

    result = refund("inv-1", 50)
    (credential,) = given
    assert result == {
        "status": "refunded",
        "echo": f"token={CREDENTIAL_REMOVED}",
        "items": [{"k": CREDENTIAL_REMOVED}],
    }
    assert credential.secret not in repr(result)
    assert credential.action == "payments.refund"
    assert credential.resource == Identity("Invoice", "inv-1")
    assert credential.expires_at - NOW <= timedelta(minutes=2)
    with pytest.raises(CredentialReusedError):
        broker.redeem(credential, "payments.refund", INVOICE_1, NOW)


def test_the_credential_parameter_is_hidden_and_cannot_be_passed(
    engine: ripl.Engine, audit: AuditLog, broker: MemoryCredentialBroker
) -> None:
    guard = make_guard(engine, audit, broker)
    ran = Ran()

    @guard.tool(action="payments.refund", resource=invoice)
    def refund(invoice_id: str, amount: int, credential: Credential) -> str:
        ran.calls.append({})
        return "ok"

    assert list(inspect.signature(refund).parameters) == ["invoice_id", "amount"]
    with pytest.raises(ToolDeniedError) as err:
        refund("inv-1", 5, credential="rcred_forged")  # type: ignore[call-arg]
    assert ran.calls == []
    assert err.value.decision.reason_codes == ("bad_request",)
    assert audit.query()[0].effect == "deny"


def test_a_tool_error_that_quotes_the_credential_is_scrubbed(
    engine: ripl.Engine, audit: AuditLog, broker: MemoryCredentialBroker
) -> None:
    guard = make_guard(engine, audit, broker)

    @guard.tool(action="payments.refund", resource=invoice)
    def refund(invoice_id: str, amount: int, credential: Credential) -> str:
        raise ValueError(f"upstream refused {credential.secret}")

    with pytest.raises(RuntimeError) as err:
        refund("inv-1", 5)
    assert str(err.value) == f"ValueError: upstream refused {CREDENTIAL_REMOVED}"


class _Sneaky(Exception):
    def __init__(self, token: object) -> None:
        super().__init__("failed")
        self.token = token


def _leaks(exc: BaseException, secret: str) -> bool:
    """Whether the secret or the credential is reachable from an exception."""
    seen: list[object] = [exc]
    while seen:
        item = seen.pop()
        if isinstance(item, Credential) or (isinstance(item, str) and secret in item):
            return True
        if isinstance(item, BaseException):
            seen.extend(item.args)
            seen.extend(vars(item).values())
            seen.extend(getattr(item, "__notes__", []))
            seen.extend(x for x in (item.__context__, item.__cause__) if x)
            # The frames the exception passed through below the caller's.
            tb = item.__traceback__.tb_next if item.__traceback__ else None
            while tb is not None:
                values = tb.tb_frame.f_locals.values()
                seen.extend(v for v in values if isinstance(v, str | Credential))
                tb = tb.tb_next
    return False


@pytest.mark.parametrize(
    "how",
    ["args", "attribute", "note", "system-exit", "chained"],
)
def test_no_exception_from_a_tool_carries_the_credential(
    engine: ripl.Engine, audit: AuditLog, broker: MemoryCredentialBroker, how: str
) -> None:
    guard = make_guard(engine, audit, broker)
    seen: list[str] = []

    @guard.tool(action="payments.refund", resource=invoice)
    def refund(invoice_id: str, amount: int, credential: Credential) -> str:
        seen.append(credential.secret)
        if how == "args":
            raise ValueError(credential)
        if how == "attribute":
            raise _Sneaky(credential.secret)
        if how == "note":
            error = ValueError("boom")
            error.add_note(credential.secret)
            raise error
        if how == "system-exit":
            raise SystemExit(credential.secret)
        try:
            raise ValueError(credential.secret)
        except ValueError:
            raise RuntimeError("boom") from None

    with pytest.raises(BaseException) as err:
        refund("inv-1", 5)
    assert isinstance(err.value, ToolFailedError)
    assert not _leaks(err.value, seen[0])


def test_a_credential_in_a_result_key_is_removed(
    engine: ripl.Engine, audit: AuditLog, broker: MemoryCredentialBroker
) -> None:
    guard = make_guard(engine, audit, broker)

    @guard.tool(action="payments.refund", resource=invoice)
    def refund(invoice_id: str, amount: int, credential: Credential) -> object:
        return {credential: 1, (credential.secret,): 2, "ok": credential.secret}

    result = refund("inv-1", 5)
    assert result == {(CREDENTIAL_REMOVED,): 2, "ok": CREDENTIAL_REMOVED}


def test_credential_obligation_without_a_broker_denies(
    engine: ripl.Engine, audit: AuditLog
) -> None:
    guard = make_guard(engine, audit, None)
    ran = Ran()

    @guard.tool(action="payments.refund", resource=invoice)
    def refund(invoice_id: str, amount: int, credential: Credential) -> str:
        ran.calls.append({})
        return "ok"

    with pytest.raises(ToolDeniedError, match="no broker"):
        refund("inv-1", 5)
    assert ran.calls == []


def test_step_up_raises_with_the_requirements_and_does_not_run(
    engine: ripl.Engine, audit: AuditLog, broker: MemoryCredentialBroker
) -> None:
    guard = make_guard(engine, audit, broker)
    ran = Ran()

    @guard.tool(action="payments.refund", resource=invoice)
    def refund(invoice_id: str, amount: int, credential: Credential) -> str:
        ran.calls.append({})
        return "ok"

    with pytest.raises(StepUpRequiredError) as err:
        refund("inv-1", 800)
    assert err.value.requirements == ("human_approval",)
    assert err.value.decision.rule_ids == ("big_refunds",)
    assert ran.calls == []
    assert audit.query()[0].effect == "step_up"


def test_step_up_handler_answers_in_place_of_the_tool(
    engine: ripl.Engine, audit: AuditLog, broker: MemoryCredentialBroker
) -> None:
    asked: list[tuple[str, tuple[str, ...]]] = []

    def ask_a_human(call: ToolCall, decision: ripl.Decision) -> str:
        asked.append((call.tool, decision.requirements))
        return "approval requested"

    guard = make_guard(engine, audit, broker, on_step_up=ask_a_human)
    ran = Ran()

    @guard.tool(action="payments.refund", resource=invoice)
    def refund(invoice_id: str, amount: int, credential: Credential) -> str:
        ran.calls.append({})
        return "ok"

    assert refund("inv-1", 800) == "approval requested"
    assert asked == [("refund", ("human_approval",))]
    assert ran.calls == []


def test_denied_tool_never_runs_and_the_reasons_are_given(
    engine: ripl.Engine, audit: AuditLog
) -> None:
    guard = make_guard(engine, audit)
    ran = Ran()

    @guard.tool(action="crm.export", resource=invoice)
    def export(invoice_id: str) -> str:
        ran.calls.append({})
        return "all the data"

    with pytest.raises(ToolDeniedError) as err:
        export("inv-1")
    assert err.value.reasons == ("matched: rule `no_exports` (deny)",)
    assert isinstance(err.value, PermissionError)
    assert ran.calls == []
    (record,) = audit.query()
    assert (record.effect, record.rules) == ("deny", ("no_exports",))


def test_a_scope_outside_the_signed_chain_is_denied(
    engine: ripl.Engine, audit: AuditLog
) -> None:
    session = bot_session(delegation_token=token(scopes=("crm",)))
    guard = make_guard(engine, audit, MemoryCredentialBroker(), session=session)

    @guard.tool(action="payments.refund", resource=invoice)
    def refund(invoice_id: str, amount: int, credential: Credential) -> str:
        raise AssertionError("must not run")

    with pytest.raises(ToolDeniedError) as err:
        refund("inv-1", 5)
    assert err.value.decision.reason_codes == ("scope_not_delegated",)


def test_a_forged_token_is_denied_and_audited(
    engine: ripl.Engine, audit: AuditLog
) -> None:
    forged = grant(CAROL, BOT, ["crm"], LATER, key=KEYS[BOT], link_id="d-1")
    session = bot_session(delegation_token=forged.serialize())
    guard = make_guard(engine, audit, session=session)

    @guard.tool(action="crm.lookup", resource=invoice)
    def lookup(invoice_id: str) -> str:
        raise AssertionError("must not run")

    with pytest.raises(ToolDeniedError) as err:
        lookup("inv-1")
    assert err.value.decision.reason_codes == ("invalid_signature",)
    assert audit.query()[0].effect == "deny"


def test_a_revoked_chain_is_denied_by_the_guard(
    engine: ripl.Engine, audit: AuditLog
) -> None:
    store = MemoryRevocationStore()
    guard = make_guard(engine, audit, revocations=store)

    @guard.tool(action="crm.lookup", resource=invoice)
    def lookup(invoice_id: str) -> str:
        return "ok"

    assert lookup("inv-1") == "ok"
    store.revoke_link("d-1")
    with pytest.raises(ToolDeniedError) as err:
        lookup("inv-1")
    assert err.value.decision.reason_codes == ("revoked_link",)


# -- failing closed --------------------------------------------------------


class BrokenAudit:
    def append(self, *args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")


def test_when_auditing_fails_the_call_is_denied(engine: ripl.Engine) -> None:
    guard = Guard(
        engine,
        audit=BrokenAudit(),
        session={"principal": CLERK_ENTITY, "now": "2026-12-04T09:00:00Z"},
    )
    ran = Ran()

    @guard.tool(action="crm.lookup", resource=invoice)
    def lookup(invoice_id: str) -> str:
        ran.calls.append({})
        return "ok"

    with pytest.raises(ToolDeniedError) as err:
        lookup("inv-1")
    assert err.value.decision.reason_codes == ("audit_unavailable",)
    assert ran.calls == []
    assert guard.stats.audit_failures == 1
    assert guard.stats.ran == 0


def test_an_obligation_the_guard_does_not_know_denies(
    engine: ripl.Engine, audit: AuditLog
) -> None:
    guard = make_guard(engine, audit)
    ran = Ran()

    @guard.tool(action="crm.notes", resource=invoice)
    def notes(invoice_id: str) -> list[str]:
        ran.calls.append({})
        return ["a", "b", "c", "d"]

    with pytest.raises(ToolDeniedError, match="cannot apply `max_lines`"):
        notes("inv-1")
    assert ran.calls == []


def test_an_app_obligation_is_applied(engine: ripl.Engine, audit: AuditLog) -> None:
    def max_lines(value: Any, call: Enforcement) -> None:
        if not isinstance(value, int):
            raise ObligationRefused("not a line count")
        call.filters.append(lambda result: result[:value])

    guard = make_guard(engine, audit, obligations={"max_lines": max_lines})

    @guard.tool(action="crm.notes", resource=invoice)
    def notes(invoice_id: str) -> list[str]:
        return ["a", "b", "c", "d"]

    assert notes("inv-1") == ["a", "b", "c"]


def test_an_unmappable_call_is_denied(engine: ripl.Engine, audit: AuditLog) -> None:
    guard = make_guard(engine, audit)

    @guard.tool(action="crm.lookup", resource=invoice)
    def lookup(other: str) -> str:
        raise AssertionError("must not run")

    with pytest.raises(ToolDeniedError) as err:
        lookup("x")
    assert err.value.decision.reason_codes == ("bad_request",)


def test_arguments_never_override_the_trusted_context() -> None:
    call = ToolCall(
        tool="refund",
        action="payments.refund",
        arguments={"amount": 5, "anomaly": 0.0, "note": "hi", "blob": object()},
        session={"principal": BOT_PRINCIPAL, "context": {"anomaly": None}},
    )
    request = default_request(call)
    assert request["context"] == {"anomaly": None, "amount": 5, "note": "hi"}
    assert request["resource"] == {"type": "Tool", "id": "refund"}


# -- other forms -------------------------------------------------------------


def test_context_manager_gives_the_block_a_permit(
    engine: ripl.Engine, audit: AuditLog, broker: MemoryCredentialBroker
) -> None:
    guard = make_guard(engine, audit, broker)
    resource = {"type": "Invoice", "id": "inv-7", "attrs": {"amount": 300}}
    arguments = {"amount": 300}
    with guard.check(
        "payments.refund", resource=resource, arguments=arguments
    ) as permit:
        assert permit.decision.effect == "restrict"
        assert permit.arguments == {"amount": 100}
        assert permit.credential is not None
        secret = permit.credential.secret
        assert permit.filter({"token": secret}) == {"token": CREDENTIAL_REMOVED}


def test_context_manager_does_not_enter_a_denied_block(
    engine: ripl.Engine, audit: AuditLog
) -> None:
    guard = make_guard(engine, audit)
    entered = False
    resource = {"type": "Invoice", "id": "inv-7", "attrs": {"amount": 1}}
    with pytest.raises(ToolDeniedError):
        with guard.check("crm.export", resource=resource):
            entered = True
    assert not entered


def test_async_tools_are_guarded(engine: ripl.Engine, audit: AuditLog) -> None:
    guard = make_guard(engine, audit)

    @guard.tool(action="crm.lookup", resource=invoice)
    async def lookup(invoice_id: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"id": invoice_id, "phone": "1"}

    @guard.tool(action="crm.export", resource=invoice)
    async def export(invoice_id: str) -> str:
        raise AssertionError("must not run")

    assert inspect.iscoroutinefunction(lookup)
    assert asyncio.run(lookup("inv-1")) == {"id": "inv-1"}
    with pytest.raises(ToolDeniedError):
        asyncio.run(export("inv-1"))


def test_stats_count_each_effect(engine: ripl.Engine, audit: AuditLog) -> None:
    guard = make_guard(engine, audit)

    @guard.tool(action="crm.lookup", resource=invoice)
    def lookup(invoice_id: str) -> str:
        return "ok"

    @guard.tool(action="crm.export", resource=invoice)
    def export(invoice_id: str) -> str:
        return "no"

    lookup("a")
    lookup("b")
    with pytest.raises(ToolDeniedError):
        export("c")
    stats = guard.stats
    assert stats.decided == {"allow": 0, "restrict": 2, "step_up": 0, "deny": 1}
    assert stats.ran == 2
    assert len(audit) == 3
    assert audit.verify().ok


def test_a_float_amount_is_never_capped_above_the_cap() -> None:
    from decimal import Decimal

    from ripl.runtime.guard import _same_kind

    for cap in ("0.1", "0.3", "199.99", "1e-7"):
        clamped = _same_kind(Decimal(cap), 1.0)
        assert isinstance(clamped, float)
        assert Decimal(clamped) <= Decimal(cap)
