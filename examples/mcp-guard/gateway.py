"""An MCP gateway whose tools are guarded by ripl, built with the `mcp` SDK.

Backend tool servers are plain Python functions grouped by server id. The
gateway publishes each as `<server id>-<tool>` on one `MCPServer`, and every
call goes through a `ripl.runtime.Guard`: deny and step_up never reach the
tool, restrict caps the refund amount, hands the refund tool a one-call
credential and redacts customer contact fields.

Compound names are derived once, in `ToolTable`, from the (server, tool)
pairs; listing, calling and the policy all use the pair from that table and
never split a name at a separator. A server id may itself contain the
separator (`3c6f-aa-bb`), so splitting would route `3c6f-aa-bb-read_wiki` to
server `3c6f`; a name two pairs would share is refused when the table is
built. A tool is listed exactly when a call of it, as the agent would make it
with no arguments yet, is not denied.

Run the tests in `tests/test_mcp_guard.py` for an in-process session.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

import attrs
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from ripl.runtime import Credential, CredentialBroker, Guard, GuardError

SEPARATOR = "-"
BILLING_REFUND = {"type": "McpTool", "id": "billing-refund"}


@attrs.frozen
class Entry:
    published: str
    server: str
    tool: str
    function: Callable[..., Any]

    @property
    def resource(self) -> dict[str, Any]:
        return {
            "type": "McpTool",
            "id": self.published,
            "attrs": {"server": self.server, "tool": self.tool},
        }


class ToolTable:
    """Every published tool name, derived from its (server, tool) pair once."""

    def __init__(self, backends: Mapping[str, Mapping[str, Callable[..., Any]]]):
        self._entries: dict[str, Entry] = {}
        for server, tools in backends.items():
            for tool, function in tools.items():
                published = f"{server}{SEPARATOR}{tool}"
                if published in self._entries:
                    other = self._entries[published]
                    raise ValueError(
                        f"`{server}`/`{tool}` and `{other.server}`/`{other.tool}`"
                        f" would both be published as `{published}`"
                    )
                self._entries[published] = Entry(published, server, tool, function)

    def resolve(self, published: str) -> Entry | None:
        """The pair behind a published name: an exact lookup, never a split."""
        return self._entries.get(published)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())


class GuardedGateway(MCPServer[Any]):
    """An `MCPServer` that lists only tools the guard would not deny."""

    def __init__(self, table: ToolTable, guard: Guard, name: str = "ripl-gateway"):
        super().__init__(name=name)
        self.table = table
        self.guard = guard
        for entry in table:
            self.add_tool(_published(entry, guard), name=entry.published)

    def listable(self, entry: Entry) -> bool:
        decision = self.guard.preview(
            "mcp.call", resource=entry.resource, name=entry.published
        )
        return decision.effect != "deny"

    async def list_tools(self) -> list[Any]:
        tools = await super().list_tools()
        return [
            tool
            for tool in tools
            if (entry := self.table.resolve(tool.name)) is not None
            and self.listable(entry)
        ]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Any = None
    ) -> Any:
        if self.table.resolve(name) is None:
            raise ToolError(f"unknown tool `{name}`")
        return await super().call_tool(name, arguments, context)


def _published(entry: Entry, guard: Guard) -> Callable[..., Any]:
    """The backend function, guarded, with guard refusals as MCP tool errors."""
    guarded = guard.tool(
        entry.function,
        name=entry.published,
        action="mcp.call",
        resource=entry.resource,
    )

    @functools.wraps(guarded)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return guarded(*args, **kwargs)
        except GuardError as exc:
            raise ToolError(f"refused by policy: {exc}") from None

    call.__signature__ = inspect.signature(guarded)  # type: ignore[attr-defined]
    return call


# -- the demo backends ------------------------------------------------------


def demo_backends(
    broker: CredentialBroker, clock: Callable[[], datetime]
) -> dict[str, dict[str, Any]]:
    """Three servers; `3c6f-aa-bb` has no alias, so its id names it."""

    def read_wiki(page: str) -> dict[str, Any]:
        return {"page": page, "text": f"raw runbook for {page}"}

    def ask_question(question: str) -> dict[str, Any]:
        return {"question": question, "answer": "see the docs server"}

    def read_docs_wiki(page: str) -> dict[str, Any]:
        return {"page": page, "text": f"public guide for {page}"}

    def lookup_customer(customer_id: str) -> dict[str, Any]:
        return {
            "id": customer_id,
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "phone": "+44 20 7946 0000",
            "orders": [
                {"id": "o-1", "email": "ada@example.com", "total": 120},
                {"id": "o-2", "total": 40},
            ],
        }

    def refund(invoice_id: str, amount: int, credential: Credential) -> dict[str, Any]:
        # The payment API redeems the credential; it works once, for this
        # tool only, and the agent never sees it.
        broker.redeem(credential, "mcp.call", BILLING_REFUND, clock())
        return {
            "invoice": invoice_id,
            "refunded": amount,
            "debug": f"paid with {credential.secret}",
        }

    return {
        "3c6f-aa-bb": {"read_wiki": read_wiki, "ask_question": ask_question},
        "docs": {"read_wiki": read_docs_wiki, "lookup_customer": lookup_customer},
        "billing": {"refund": refund},
    }


def build_gateway(
    backends: Mapping[str, Mapping[str, Callable[..., Any]]], guard: Guard
) -> GuardedGateway:
    return GuardedGateway(ToolTable(backends), guard)
