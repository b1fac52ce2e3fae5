"""The MCP example: a gateway made with the `mcp` SDK, exercised in-process."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest

mcp = pytest.importorskip("mcp.server.mcpserver", reason="needs the mcp SDK, 2.x")
from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: E402
    Ed25519PrivateKey,
)
from mcp import Client  # noqa: E402

import ripl  # noqa: E402
from ripl.runtime import (  # noqa: E402
    AuditLog,
    Guard,
    Identity,
    MemoryCredentialBroker,
    StaticKeyResolver,
    grant,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mcp-guard"
NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
OLGA = Identity("Operator", "olga")
BOT = Identity("Assistant", "as-1")
KEY = Ed25519PrivateKey.generate()
T = TypeVar("T")


def load_gateway() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "mcp_guard_gateway", EXAMPLE / "gateway.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gateway = load_gateway()


def session() -> dict[str, Any]:
    chain = grant(
        OLGA, BOT, ["mcp.call"], NOW + timedelta(hours=1), key=KEY, link_id="s-1"
    )
    return {
        "principal": {
            "type": "Assistant",
            "id": "as-1",
            "attrs": {"model": "m-3"},
            "owner": {"type": "Operator", "id": "olga"},
        },
        "delegation_token": chain.serialize(),
        "entities": [{"type": "Operator", "id": "olga", "attrs": {"team": "support"}}],
        "now": "2026-12-04T09:00:00Z",
    }


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit.db")


@pytest.fixture
def broker() -> MemoryCredentialBroker:
    return MemoryCredentialBroker()


@pytest.fixture
def server(audit: AuditLog, broker: MemoryCredentialBroker) -> Any:
    guard = Guard(
        ripl.load(EXAMPLE),
        audit=audit,
        session=session(),
        broker=broker,
        keys=StaticKeyResolver({OLGA: KEY.public_key()}),
    )
    return gateway.build_gateway(gateway.demo_backends(broker, lambda: NOW), guard)


def run(body: Callable[[Any], Awaitable[T]], server: Any) -> T:
    async def session_with(client_server: Any) -> T:
        async with Client(client_server) as client:
            return await body(client)

    return asyncio.run(session_with(server))


async def names(client: Any) -> list[str]:
    listed = await client.list_tools()
    return sorted(tool.name for tool in listed.tools)


def call(name: str, arguments: dict[str, Any]) -> Callable[[Any], Awaitable[Any]]:
    async def body(client: Any) -> Any:
        return await client.call_tool(name, arguments)

    return body


def payload(result: Any) -> Any:
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)


def error_text(result: Any) -> str:
    assert result.is_error
    return str(result.content[0].text)


def test_listing_hides_exactly_the_denied_tool(server: Any) -> None:
    assert run(names, server) == [
        "3c6f-aa-bb-ask_question",
        "billing-refund",
        "docs-lookup_customer",
        "docs-read_wiki",
    ]


def test_the_hidden_tool_is_refused_when_called_by_name(
    server: Any, audit: AuditLog
) -> None:
    result = run(call("3c6f-aa-bb-read_wiki", {"page": "deploy"}), server)
    assert "refused by policy" in error_text(result)
    assert "no_raw_wiki" in error_text(result)
    (record,) = audit.query()
    assert (record.effect, record.rules) == ("deny", ("no_raw_wiki",))


def test_the_allowed_tool_of_the_alias_less_server_runs(server: Any) -> None:
    result = run(call("3c6f-aa-bb-ask_question", {"question": "where?"}), server)
    assert payload(result) == {"question": "where?", "answer": "see the docs server"}


@pytest.mark.parametrize("name", ["3c6f-read_wiki", "aa-bb-read_wiki", "read_wiki"])
def test_wrong_splits_of_a_compound_name_are_unknown_tools(
    server: Any, audit: AuditLog, name: str
) -> None:
    result = run(call(name, {"page": "deploy"}), server)
    assert f"unknown tool `{name}`" in error_text(result)
    assert len(audit) == 0


def test_listed_if_and_only_if_a_call_is_not_denied(server: Any) -> None:
    arguments = {
        "read_wiki": {"page": "p"},
        "ask_question": {"question": "q"},
        "lookup_customer": {"customer_id": "c-1"},
        "refund": {"invoice_id": "inv-1", "amount": 10},
    }

    async def body(client: Any) -> list[tuple[str, bool, bool]]:
        listed = set(await names(client))
        out = []
        for entry in server.table:
            result = await client.call_tool(entry.published, arguments[entry.tool])
            out.append((entry.published, entry.published in listed, result.is_error))
        return out

    outcomes = run(body, server)
    assert len(outcomes) == 5
    for published, listed, refused in outcomes:
        assert listed == (not refused), published


def test_customer_lookup_is_redacted(server: Any) -> None:
    result = run(call("docs-lookup_customer", {"customer_id": "c-1"}), server)
    assert payload(result) == {
        "id": "c-1",
        "name": "Ada Lovelace",
        "orders": [{"id": "o-1", "total": 120}, {"id": "o-2", "total": 40}],
    }


def test_refund_is_capped_and_its_credential_never_reaches_the_agent(
    server: Any, broker: MemoryCredentialBroker, audit: AuditLog
) -> None:
    result = run(call("billing-refund", {"invoice_id": "inv-1", "amount": 300}), server)
    body = payload(result)
    assert body == {
        "invoice": "inv-1",
        "refunded": 100,
        "debug": "paid with [credential removed]",
    }
    assert "rcred_" not in json.dumps([c.model_dump() for c in result.content])
    assert len(broker) == 1  # issued once, for this call
    assert audit.query()[0].effect == "restrict"


def test_the_credential_argument_is_not_offered_to_the_agent(server: Any) -> None:
    async def body(client: Any) -> dict[str, Any]:
        listed = await client.list_tools()
        (refund,) = [t for t in listed.tools if t.name == "billing-refund"]
        return dict(refund.input_schema)

    schema = run(body, server)
    assert sorted(schema["properties"]) == ["amount", "invoice_id"]


def test_a_large_refund_needs_approval_and_does_not_run(
    server: Any, broker: MemoryCredentialBroker
) -> None:
    result = run(call("billing-refund", {"invoice_id": "inv-1", "amount": 900}), server)
    assert "needs human_approval" in error_text(result)
    assert len(broker) == 0


def test_publishing_two_pairs_under_one_name_is_refused() -> None:
    def tool() -> None:
        return None

    with pytest.raises(ValueError, match="would both be published as `a-b-c`"):
        gateway.ToolTable({"a-b": {"c": tool}, "a": {"b-c": tool}})
