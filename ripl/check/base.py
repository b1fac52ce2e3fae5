"""What every part of the checker shares: its state, how it reports, and which
names a module can see.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import NoReturn

from ripl import ast, ir
from ripl.errors import Diagnostic
from ripl.modules import LoadedModule
from ripl.source import Span

log = logging.getLogger(__name__)

REASON_CODES = frozenset(
    "no_rule matched scope_not_delegated scope_not_declared expired_link "
    "revoked_link chain_widens "
    "broken_chain malformed_link root_not_human agent_without_delegation "
    "escalation error_in_rule root_not_found bad_request policy_not_loaded".split()
)
OPTIONS: dict[str, tuple[ir.Type, object, object]] = {
    # name: (type, lowest, highest)
    "clock_leeway": (ir.DURATION, ast.Duration(0), ast.Duration(300)),
}
DELEGATION_FACTS = {"depth": ir.INT, "purpose": ir.STRING}


class ClauseError(Exception):
    """Abandons one clause. `diagnostic` is None when the problem was already
    reported elsewhere (a broken risk used by many rules is reported once)."""

    def __init__(self, diagnostic: Diagnostic | None) -> None:
        super().__init__(diagnostic.message if diagnostic else "reported")
        self.diagnostic = diagnostic


def abandon(
    message: str, span: Span, hint: str | None = None, code: str = "type"
) -> NoReturn:
    raise ClauseError(Diagnostic(code, message, span, hint=hint))


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


def policy_hash(modules: Sequence[LoadedModule]) -> str:
    """Content hash over every module's exact text, in module-name order, so
    it does not depend on file order. Nothing inside the text is normalized:
    a string literal may span lines, so even trailing spaces and line endings
    can be meaning, and two policies that differ in meaning must never share
    a hash (compiled trees are cached by it)."""
    digest = hashlib.sha256()
    for module in sorted(modules, key=lambda m: m.name):
        name, text = module.name.encode(), module.text.encode("utf-8", "surrogatepass")
        digest.update(len(name).to_bytes(8, "big") + name)
        digest.update(len(text).to_bytes(8, "big") + text)
    return "sha256:" + digest.hexdigest()


class Env:
    """What an expression may refer to: the module's names and the rule's
    principal and resource types."""

    def __init__(
        self, module: str, principal: frozenset[str], resource: frozenset[str]
    ) -> None:
        self.module = module
        self.principal = principal
        self.resource = resource


class CheckerBase:
    """State and reporting; the stages below add one part of the language each."""

    def __init__(self, modules: Sequence[LoadedModule]) -> None:
        self.modules = {m.name: m for m in modules}
        self.diagnostics: list[Diagnostic] = []
        self.entities: dict[str, ir.EntityDef] = {}
        self.labels: dict[str, ir.LabelOrder] = {}
        self.label_module: dict[str, str] = {}
        self.actions: dict[str, Span] = {}
        self.context: dict[str, ir.AttrSpec] = {}
        self.obligations: dict[str, tuple[str, ir.ObligationDef]] = {}
        self.requirements: dict[str, tuple[str, Span]] = {}
        self.risk_syntax: dict[str, tuple[str, ast.RiskDecl]] = {}
        self.risks: dict[str, ir.RiskRef] = {}
        self.risk_stack: list[str] = []
        self.broken_risks: set[str] = set()
        self._import_cache: dict[str, list[tuple[str, frozenset[str] | None]]] = {}
        self._groups: set[str] | None = None
        self._under: dict[str, frozenset[str]] = {}
        self.visible: dict[str, set[str] | None] = {}

    # ---- reporting --------------------------------------------------------

    def report(self, bad: ClauseError) -> None:
        if bad.diagnostic is not None:
            self.diagnostics.append(bad.diagnostic)

    def error(
        self,
        code: str,
        message: str,
        span: Span,
        hint: str | None = None,
        notes: tuple[tuple[str, Span], ...] = (),
    ) -> None:
        self.diagnostics.append(Diagnostic(code, message, span, hint=hint, notes=notes))

    def items(self, kind: type[ast.Item]) -> Iterable[tuple[str, ast.Item]]:
        for name, module in self.modules.items():
            for item in module.syntax.items:
                if isinstance(item, kind):
                    yield name, item

    # ---- visibility --------------------------------------------------------

    def _imports(self, module: str) -> list[tuple[str, frozenset[str] | None]]:
        found = self._import_cache.get(module)
        if found is None:
            found = []
            for item in self.modules[module].syntax.items:
                if isinstance(item, ast.Import):
                    names = None
                    if item.names is not None:
                        names = frozenset(i.name for i in item.names)
                    found.append((item.module.text, names))
            self._import_cache[module] = found
        return found

    def sees(self, module: str, owner: str, name: str) -> bool:
        """Whether a name declared in module `owner` is visible in `module`."""
        if owner == module:
            return True
        return any(
            imported == owner and (names is None or name in names)
            for imported, names in self._imports(module)
        )

    def _check_import_names(self) -> None:
        declared: dict[str, set[str]] = {m: set() for m in self.modules}
        for name, order in self.labels.items():
            declared[self.label_module[name]].update((name, *order.labels))
        for name, (mod, _) in self.obligations.items():
            declared[mod].add(name)
        for name, (mod, _) in self.requirements.items():
            declared[mod].add(name)
        for name, (mod, _) in self.risk_syntax.items():
            declared[mod].add(name)
        for mod, item in self.items(ast.EntityDecl):
            assert isinstance(item, ast.EntityDecl)
            declared[mod].add(item.name.name)
        for _, item in self.items(ast.Import):
            assert isinstance(item, ast.Import)
            target = item.module.text
            if item.names is None or target not in declared:
                continue
            for ident in item.names:
                if ident.name not in declared[target]:
                    self.error(
                        "unknown-import",
                        f"module `{target}` has no declaration `{ident.name}`",
                        ident.span,
                        did_you_mean(ident.name, declared[target]),
                    )
