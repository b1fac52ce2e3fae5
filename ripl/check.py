"""Parsed modules → a typed, resolved `PolicySet`.

Binds every name (entity types and actions are global; labels, risks,
requirements and obligations are visible where declared or imported), checks
types, expands rule targets to concrete sets of entity types and actions and
folds constants. Every problem becomes a diagnostic with a span and, where we
know one, a hint; all of them are reported together in one `CheckError`.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import NoReturn

import cachetools

from ripl import ast, ir, ops
from ripl.errors import CheckError, Diagnostic
from ripl.modules import LoadedModule
from ripl.source import Span

log = logging.getLogger(__name__)

REASON_CODES = frozenset(
    "no_rule matched scope_not_delegated expired_link revoked_link chain_widens "
    "broken_chain malformed_link root_not_human agent_without_delegation "
    "escalation error_in_rule root_not_found bad_request policy_not_loaded".split()
)
OPTIONS: dict[str, tuple[ir.Type, object, object]] = {
    # name: (type, lowest, highest)
    "clock_leeway": (ir.DURATION, ast.Duration(0), ast.Duration(300)),
}
DELEGATION_FACTS = {"depth": ir.INT, "purpose": ir.STRING}


class _Bad(Exception):
    """Abandons one clause. `diagnostic` is None when the problem was already
    reported elsewhere (a broken risk used by many rules is reported once)."""

    def __init__(self, diagnostic: Diagnostic | None) -> None:
        super().__init__(diagnostic.message if diagnostic else "reported")
        self.diagnostic = diagnostic


def _fail(
    message: str, span: Span, hint: str | None = None, code: str = "type"
) -> NoReturn:
    raise _Bad(Diagnostic(code, message, span, hint=hint))


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


def policy_hash(modules: Sequence[LoadedModule]) -> str:
    """Content hash over the normalized sources, independent of file order."""
    digest = hashlib.sha256()
    for module in sorted(modules, key=lambda m: m.name):
        lines = module.text.replace("\r\n", "\n").split("\n")
        text = "\n".join(line.rstrip() for line in lines).strip("\n")
        digest.update(module.name.encode() + b"\0" + text.encode() + b"\0")
    return "sha256:" + digest.hexdigest()


class _Env:
    """What an expression may refer to: the module's names and the rule's
    principal and resource types."""

    def __init__(
        self, module: str, principal: frozenset[str], resource: frozenset[str]
    ) -> None:
        self.module = module
        self.principal = principal
        self.resource = resource


class Checker:
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

    def report(self, bad: _Bad) -> None:
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

    # ---- schema -------------------------------------------------------------

    def collect_schema(self) -> None:
        for mod, item in self.items(ast.LabelsDecl):
            assert isinstance(item, ast.LabelsDecl)
            name = item.name.name
            names = [i.name for i in item.labels]
            if name in self.labels:
                self.error(
                    "duplicate",
                    f"label order `{name}` is declared twice",
                    item.name.span,
                    notes=(("first declared here", self.labels[name].span),),
                )
                continue
            for ident in item.labels:
                if names.count(ident.name) > 1:
                    self.error(
                        "duplicate",
                        f"label `{ident.name}` appears twice in `{name}`",
                        ident.span,
                    )
                    break
            self.labels[name] = ir.LabelOrder(
                name, tuple(dict.fromkeys(names)), item.span
            )
            self.label_module[name] = mod
        for _, item in self.items(ast.ActionsDecl):
            assert isinstance(item, ast.ActionsDecl)
            self._collect_actions(item.group.text, item.items)
        for _, item in self.items(ast.ActionDecl):
            assert isinstance(item, ast.ActionDecl)
            for dotted in item.names:
                self._declare_action(dotted.text, dotted.span)
        for mod, item in self.items(ast.RequirementsDecl):
            assert isinstance(item, ast.RequirementsDecl)
            for ident in item.names:
                if ident.name in self.requirements:
                    self.error(
                        "duplicate",
                        f"requirement `{ident.name}` is declared twice",
                        ident.span,
                    )
                self.requirements[ident.name] = (mod, ident.span)
        for mod, item in self.items(ast.ObligationDecl):
            assert isinstance(item, ast.ObligationDecl)
            self._collect_obligation(mod, item)
        for mod, item in self.items(ast.RiskDecl):
            assert isinstance(item, ast.RiskDecl)
            if item.name.name in self.risk_syntax:
                self.error(
                    "duplicate",
                    f"risk `{item.name.name}` is declared twice",
                    item.name.span,
                )
            self.risk_syntax[item.name.name] = (mod, item)
        entity_items = [(m, i) for m, i in self.items(ast.EntityDecl)]
        for _, item in entity_items:
            assert isinstance(item, ast.EntityDecl)
            name = item.name.name
            if name in self.entities:
                self.error(
                    "duplicate",
                    f"entity type `{name}` is declared twice",
                    item.name.span,
                    notes=(("first declared here", self.entities[name].span),),
                )
            elif name in ir.KINDS or name in ir.PRIMS:
                self.error(
                    "reserved",
                    f"`{name}` is reserved and cannot name an entity type",
                    item.name.span,
                )
            else:
                # Attributes are resolved once every type name is known.
                self.entities[name] = ir.EntityDef(
                    name, None, frozenset(), ir.RecordType(()), item.span
                )
        for mod, item in entity_items:
            assert isinstance(item, ast.EntityDecl)
            if self.entities.get(item.name.name, None) is not None and (
                self.entities[item.name.name].span == item.span
            ):
                self.entities[item.name.name] = self._entity(mod, item)
        self._check_owners()
        for mod, item in self.items(ast.ContextDecl):
            assert isinstance(item, ast.ContextDecl)
            for decl in item.attrs:
                spec = self._attr_spec(mod, decl)
                if spec is None:
                    continue
                old = self.context.get(decl.name.name)
                if old is not None and old != spec:
                    self.error(
                        "type",
                        f"context attribute `{decl.name.name}` is "
                        f"declared as both `{old.type}` and `{spec.type}`",
                        decl.span,
                    )
                self.context[decl.name.name] = spec
        self._check_import_names()

    def _declare_action(self, name: str, span: Span) -> None:
        if name in self.actions:
            self.error(
                "duplicate",
                f"action `{name}` is declared twice",
                span,
                notes=(("first declared here", self.actions[name]),),
            )
        self.actions[name] = span

    def _collect_actions(self, prefix: str, items: Sequence[ast.ActionItem]) -> None:
        for item in items:
            name = f"{prefix}.{item.name.name}"
            if item.children:
                self._collect_actions(name, item.children)
            else:
                self._declare_action(name, item.name.span)

    def _collect_obligation(self, mod: str, item: ast.ObligationDecl) -> None:
        name = item.name.name
        try:
            typ = self.resolve_type(mod, item.type)
        except _Bad as bad:
            self.report(bad)
            return
        merge = item.merge.name
        if merge not in ("union", "min"):
            self.error(
                "obligation",
                f"unknown merge `{merge}`",
                item.merge.span,
                "obligations merge by `union` (sets) or `min` (numbers, durations)",
            )
            return
        if (merge == "union") != isinstance(typ, ir.SetType):
            self.error(
                "obligation",
                f"`{merge}` does not fit an obligation of type `{typ}`",
                item.merge.span,
                "sets merge by `union`; numbers and durations by `min`",
            )
            return
        if name in self.obligations:
            self.error(
                "duplicate", f"obligation `{name}` is declared twice", item.name.span
            )
        self.obligations[name] = (mod, ir.ObligationDef(name, typ, merge, item.span))

    def _entity(self, mod: str, item: ast.EntityDecl) -> ir.EntityDef:
        kind = item.kind.name if item.kind else None
        if item.kind and kind not in ir.KINDS:
            self.error(
                "unknown-kind",
                f"unknown identity kind `{kind}`",
                item.kind.span,
                did_you_mean(kind or "", ir.KINDS)
                or "kinds are " + ", ".join(ir.KINDS),
            )
            kind = None
        owners = []
        for ident in item.owners:
            if ident.name not in self.entities:
                self.error(
                    "unknown-type",
                    f"unknown entity type `{ident.name}`",
                    ident.span,
                    did_you_mean(ident.name, self.entities),
                )
            else:
                owners.append(ident.name)
        if kind in ir.NON_HUMAN and not item.owners:
            self.error(
                "owner",
                f"{kind} `{item.name.name}` has no owner",
                item.name.span,
                f"every non-human identity has one: "
                f"`entity {item.name.name}: {kind} owner User`",
            )
        if kind == "human" and item.owners:
            self.error(
                "owner",
                f"human `{item.name.name}` cannot have an owner",
                item.owners[0].span,
            )
        fields = []
        seen: set[str] = set()
        for decl in item.attrs:
            if decl.name.name in seen:
                self.error(
                    "duplicate",
                    f"attribute `{decl.name.name}` is declared twice",
                    decl.name.span,
                )
            if decl.name.name in ("id", "owner"):
                self.error(
                    "reserved",
                    f"`{decl.name.name}` is built in and cannot be "
                    "declared as an attribute",
                    decl.name.span,
                )
            seen.add(decl.name.name)
            spec = self._attr_spec(mod, decl)
            if spec is not None:
                fields.append((decl.name.name, spec))
        return ir.EntityDef(
            item.name.name,
            kind,
            frozenset(owners),
            ir.RecordType(tuple(fields)),
            item.span,
        )

    def _check_owners(self) -> None:
        """Every non-human type must have some chain of owners that reaches a
        human. A type may list itself or another non-human type among its
        owners, as long as one of the ways leads to a human."""
        reach = {n for n, e in self.entities.items() if e.kind == "human"}
        for name in sorted(self.entities):
            for owner in sorted(self.entities[name].owners):
                if self.entities[owner].kind is None:
                    self.error(
                        "owner",
                        f"owner `{owner}` of `{name}` is not an identity",
                        self.entities[name].span,
                        "owners are humans or other non-human identities",
                    )
        grew = True
        while grew:
            grew = False
            for name, entity in self.entities.items():
                if name not in reach and entity.owners & reach:
                    reach.add(name)
                    grew = True
        stuck = sorted(
            n
            for n, e in self.entities.items()
            if e.kind in ir.NON_HUMAN and n not in reach and e.owners
        )
        reported: set[str] = set()
        for start in stuck:
            if start in reported:
                continue
            path = [start]
            while True:
                nxt = min(
                    (o for o in self.entities[path[-1]].owners if o in stuck),
                    default=None,
                )
                if nxt is None or nxt in path:
                    break
                path.append(nxt)
            span = self.entities[start].span
            if nxt is not None:
                cycle = path[path.index(nxt) :] + [nxt]
                reported.update(cycle)
                message = "ownership cycle: " + " → ".join(cycle)
            else:
                reported.add(start)
                message = f"no chain of owners from `{start}` reaches a human"
            self.error("owner", message, span, "some owner on the way must be a human")

    def _attr_spec(self, mod: str, decl: ast.AttrDecl) -> ir.AttrSpec | None:
        try:
            return ir.AttrSpec(self.resolve_type(mod, decl.type), decl.optional)
        except _Bad as bad:
            self.report(bad)
            return None

    def resolve_type(self, mod: str, node: ast.TypeExpr) -> ir.Type:
        if isinstance(node, ast.SetType):
            element = self.resolve_type(mod, node.element)
            if isinstance(element, ir.RecordType):
                # A request's records cannot be set members; every request
                # carrying one would fail, so the schema is refused instead.
                _fail(
                    "a set cannot hold records",
                    node.element.span,
                    "declare the fields a rule needs as attributes of their own",
                )
            return ir.SetType(element)
        if isinstance(node, ast.RecordType):
            fields = []
            for decl in node.attrs:
                fields.append(
                    (
                        decl.name.name,
                        ir.AttrSpec(self.resolve_type(mod, decl.type), decl.optional),
                    )
                )
            return ir.RecordType(tuple(fields))
        name = node.name.text
        if name in ir.PRIMS:
            return ir.PRIMS[name]
        if name in self.labels:
            if not self.sees(mod, self.label_module[name], name):
                _fail(
                    f"label order `{name}` is not imported here",
                    node.span,
                    f"add `import {self.label_module[name]} ({name})`",
                    "scope",
                )
            return ir.LabelType(name)
        if name in self.entities:
            return ir.EntityType(frozenset({name}))
        known = [*ir.PRIMS, *self.labels, *self.entities]
        hint = did_you_mean(name, known)
        if name in ("number", "float", "str", "boolean", "integer"):
            hint = (
                "types are bool, int, decimal, string, duration, set<T>, "
                "label orders and entity types"
            )
        _fail(f"unknown type `{name}`", node.span, hint, "unknown-type")

    def schema(self) -> ir.Schema:
        groups: set[str] = set()
        for name in self.actions:
            parts = name.split(".")
            groups.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        return ir.Schema(
            entities=dict(self.entities),
            actions=frozenset(self.actions),
            groups=frozenset(groups),
            labels=dict(self.labels),
            context=ir.RecordType(tuple(sorted(self.context.items()))),
            obligations={n: d for n, (_, d) in self.obligations.items()},
            requirements=frozenset(self.requirements),
        )

    # ---- expressions ----------------------------------------------------------

    def visible_labels(self, mod: str, name: str) -> list[ir.LabelOrder]:
        """Labels are visible where they or their order are imported."""
        return [
            order
            for order_name, order in self.labels.items()
            if name in order.labels
            and (
                self.sees(mod, self.label_module[order_name], name)
                or self.sees(mod, self.label_module[order_name], order_name)
            )
        ]

    def visible_risk(self, mod: str, name: str) -> ir.RiskRef | None:
        if name not in self.risk_syntax:
            return None
        owner, item = self.risk_syntax[name]
        if not self.sees(mod, owner, name):
            return None
        if name in self.risks:
            return self.risks[name]
        if name in self.broken_risks:
            raise _Bad(None)
        if name in self.risk_stack:
            cycle = self.risk_stack[self.risk_stack.index(name) :]
            self.broken_risks.update(cycle)
            _fail(
                f"risk `{name}` is defined in terms of itself: "
                + " → ".join((*cycle, name)),
                item.name.span,
                code="cycle",
            )
        self.risk_stack.append(name)
        try:
            everything = frozenset(self.entities)
            expr = self.expr(item.expr, _Env(owner, everything, everything))
        except _Bad:
            self.broken_risks.add(name)
            raise
        finally:
            self.risk_stack.pop()
        ref = ir.RiskRef(name, expr, expr.type)
        self.risks[name] = ref
        return ref

    @staticmethod
    def dotted_name(node: ast.Expr) -> tuple[str, Span] | None:
        parts: list[str] = []
        cur: ast.Expr = node
        while isinstance(cur, ast.GetAttr):
            parts.append(cur.attr.name)
            cur = cur.obj
        if not isinstance(cur, ast.Var):
            return None
        parts.append(cur.name)
        return ".".join(reversed(parts)), node.span

    def action_name(self, node: ast.Expr, *, exact: bool = False) -> str:
        found = self.dotted_name(node)
        if found is None:
            _fail(
                "expected an action name", node.span, "write it like `payments.refund`"
            )
        name, span = found
        if name in self.actions:
            return name
        groups = self.schema_groups()
        if name in groups and not exact:
            return name
        if name in groups:
            _fail(
                f"`{name}` is a group of actions, not an action",
                span,
                f"to test the group, write `action in {name}`",
            )
        _fail(
            f"unknown action `{name}`",
            span,
            did_you_mean(name, [*self.actions, *groups]),
            "unknown-action",
        )

    def actions_under(self, name: str) -> frozenset[str]:
        found = self._under.get(name)
        if found is None:
            found = self._under[name] = frozenset(
                a for a in self.actions if a == name or a.startswith(name + ".")
            )
        return found

    def schema_groups(self) -> set[str]:
        """Every declared action and every dotted prefix of one; computed once,
        after the schema is collected."""
        if self._groups is None:
            groups: set[str] = set()
            for name in self.actions:
                parts = name.split(".")
                groups.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            self._groups = groups
        return self._groups

    def expr(self, node: ast.Expr, env: _Env) -> ir.Expr:
        method = getattr(self, "visit_" + type(node).__name__)
        result: ir.Expr = method(node, env)
        return result

    def bool_expr(self, node: ast.Expr, env: _Env) -> ir.Expr:
        result = self.expr(node, env)
        if result.type != ir.BOOL:
            _fail(f"expected a condition (bool), found `{result.type}`", node.span)
        return result

    def visit_Literal(self, node: ast.Literal, env: _Env) -> ir.Expr:
        value = node.value
        if isinstance(value, bool):
            return ir.Const(value, ir.BOOL)
        if isinstance(value, int):
            return ir.Const(value, ir.INT)
        if isinstance(value, Decimal):
            return ir.Const(value, ir.DECIMAL)
        if isinstance(value, ast.Duration):
            return ir.Const(value, ir.DURATION)
        return ir.Const(value, ir.STRING)

    def visit_Root(self, node: ast.Root, env: _Env) -> ir.Expr:
        if node.name == "principal":
            return ir.RequestRoot("principal", ir.EntityType(env.principal))
        if node.name == "resource":
            return ir.RequestRoot("resource", ir.EntityType(env.resource))
        if node.name == "context":
            return ir.RequestRoot(
                "context", ir.RecordType(tuple(sorted(self.context.items())))
            )
        if node.name == "action":
            return ir.ActionValue()
        _fail(
            "`delegation` is not a value by itself",
            node.span,
            "use `delegation.depth`, `.purpose`, `.root`, `.grants(scope)`, "
            '`.via(Type)` or `.limit("name")`',
        )

    def visit_Var(self, node: ast.Var, env: _Env) -> ir.Expr:
        risk = self.visible_risk(env.module, node.name)
        if risk is not None:
            return risk
        orders = self.visible_labels(env.module, node.name)
        if len(orders) == 1:
            label = orders[0].label(node.name)
            assert label is not None
            return ir.Const(label, ir.LabelType(orders[0].name))
        if len(orders) > 1:
            names = ", ".join(f"`{o.name}.{node.name}`" for o in orders)
            _fail(
                f"label `{node.name}` belongs to several orders",
                node.span,
                f"write one of {names}",
                "ambiguous",
            )
        if node.name in self.schema_groups():
            return ir.Const(node.name, ir.ACTION)
        hidden = self._hidden_hint(env.module, node.name)
        candidates = [*self.risk_syntax, *self.schema_groups()]
        for order in self.labels.values():
            candidates.extend(order.labels)
        _fail(
            f"unknown name `{node.name}`",
            node.span,
            hidden or did_you_mean(node.name, candidates),
            "unknown-name",
        )

    def _hidden_hint(self, mod: str, name: str) -> str | None:
        for order_name, order in self.labels.items():
            if name in order.labels:
                owner = self.label_module[order_name]
                return (
                    f"`{name}` is a `{order_name}` label of module `{owner}`; "
                    f"add `import {owner} ({order_name})`"
                )
        if name in self.risk_syntax:
            owner = self.risk_syntax[name][0]
            return f"`{name}` is a risk of module `{owner}`; add `import {owner}`"
        return None

    def visit_GetAttr(self, node: ast.GetAttr, env: _Env) -> ir.Expr:
        name = node.attr.name
        if isinstance(node.obj, ast.Root) and node.obj.name == "delegation":
            if name in DELEGATION_FACTS:
                return ir.DelegationFact(name, DELEGATION_FACTS[name])
            if name == "root":
                humans = self.schema_kinds("human")
                return ir.DelegationFact("root", ir.EntityType(humans))
            hint = did_you_mean(
                name, [*DELEGATION_FACTS, "root", "grants", "via", "limit"]
            )
            if name in ("grants", "via", "limit"):
                hint = f"`{name}` takes an argument: `delegation.{name}(…)`"
            _fail(
                f"unknown delegation fact `{name}`",
                node.attr.span,
                hint,
                "unknown-attribute",
            )
        dotted = self.dotted_name(node)
        if dotted is not None:
            return self._dotted_value(node, dotted[0], env)
        obj = self.expr(node.obj, env)
        return self.attribute(obj, node.attr)

    def _dotted_value(self, node: ast.GetAttr, name: str, env: _Env) -> ir.Expr:
        head, _, rest = name.partition(".")
        if head in self.labels and "." not in rest:
            order = self.labels[head]
            if not self.sees(env.module, self.label_module[head], head):
                _fail(
                    f"label order `{head}` is not imported here",
                    node.span,
                    f"add `import {self.label_module[head]} ({head})`",
                    "scope",
                )
            label = order.label(rest)
            if label is None:
                _fail(
                    f"`{head}` has no label `{rest}`",
                    node.attr.span,
                    did_you_mean(rest, order.labels)
                    or "its labels are " + ", ".join(order.labels),
                    "unknown-label",
                )
            return ir.Const(label, ir.LabelType(head))
        if head in self.risk_syntax and self.visible_risk(env.module, head):
            _fail(f"risk `{head}` has no attributes", node.attr.span)
        return ir.Const(self.action_name(node), ir.ACTION)

    def schema_kinds(self, kind: str) -> frozenset[str]:
        return frozenset(n for n, e in self.entities.items() if e.kind == kind)

    def attribute(self, obj: ir.Expr, attr: ast.Ident) -> ir.Expr:
        name = attr.name
        typ = obj.type
        if isinstance(typ, ir.EntityType):
            if name == "id":
                return ir.EntityId(obj)
            if name == "owner":
                owners = frozenset().union(
                    *(self.entities[t].owners for t in typ.names)
                )
                if not owners:
                    _fail(
                        f"`{typ}` has no owner",
                        attr.span,
                        "only non-human identities have owners",
                    )
                return ir.Owner(obj, ir.EntityType(owners))
            specs = {t: self.entities[t].attrs.get(name) for t in sorted(typ.names)}
            found = {t: s for t, s in specs.items() if s is not None}
            if not found:
                known = {n for t in typ.names for n, _ in self.entities[t].attrs.fields}
                shown = " | ".join(sorted(typ.names)) if typ.names else "any entity"
                if len(typ.names) > 3:
                    shown = "the entity"
                _fail(
                    f"unknown attribute `{name}` on {shown}",
                    attr.span,
                    did_you_mean(name, known),
                    "unknown-attribute",
                )
            types = {s.type for s in found.values()}
            if len(types) > 1:
                _fail(
                    f"attribute `{name}` has different types on "
                    + ", ".join(f"`{t}`" for t in found),
                    attr.span,
                )
            return ir.GetAttr(obj, name, types.pop())
        if isinstance(typ, ir.RecordType):
            spec = typ.get(name)
            if spec is None:
                where = "context" if isinstance(obj, ir.RequestRoot) else "record"
                _fail(
                    f"unknown attribute `{name}` on {where}",
                    attr.span,
                    did_you_mean(name, [n for n, _ in typ.fields])
                    or (
                        f"declare it: `context {{ {name}: … }}`"
                        if where == "context"
                        else None
                    ),
                    "unknown-attribute",
                )
            return ir.GetAttr(obj, name, spec.type)
        _fail(f"a value of type `{typ}` has no attribute `{name}`", attr.span)

    def visit_Call(self, node: ast.Call, env: _Env) -> ir.Expr:
        func = node.func
        if not (
            isinstance(func, ast.GetAttr)
            and isinstance(func.obj, ast.Root)
            and func.obj.name == "delegation"
        ):
            _fail(
                "unknown function",
                func.span,
                "the functions are `delegation.grants(scope)`, "
                '`delegation.via(Type)` and `delegation.limit("name")`',
                "unknown-function",
            )
        name = func.attr.name
        if len(node.args) != 1:
            _fail(f"`delegation.{name}` takes one argument", node.span)
        arg = node.args[0]
        if name == "grants":
            return ir.Grants(self.action_name(arg))
        if name == "via":
            if not isinstance(arg, ast.Var):
                _fail("expected an entity type or identity kind", arg.span)
            return ir.Via(self.entity_names(arg.name, arg.span))
        if name == "limit":
            if isinstance(arg, ast.Literal) and isinstance(arg.value, str):
                return ir.DelegationFact("limit", ir.DECIMAL, arg.value)
            _fail(
                "expected the limit's name as a string",
                arg.span,
                'for example `delegation.limit("spend")`',
            )
        _fail(
            f"unknown delegation function `{name}`",
            func.attr.span,
            did_you_mean(name, ["grants", "via", "limit"]),
            "unknown-function",
        )

    def entity_names(self, name: str, span: Span) -> frozenset[str]:
        if name in ir.KINDS:
            return self.schema_kinds(name)
        if name in self.entities:
            return frozenset({name})
        _fail(
            f"unknown entity type `{name}`",
            span,
            did_you_mean(name, [*self.entities, *ir.KINDS]),
            "unknown-type",
        )

    def visit_Not(self, node: ast.Not, env: _Env) -> ir.Expr:
        return fold(ir.Not(self.bool_expr(node.operand, env)))

    def visit_Neg(self, node: ast.Neg, env: _Env) -> ir.Expr:
        inner = self.expr(node.operand, env)
        if not (ir.is_numeric(inner.type) or inner.type == ir.DURATION):
            _fail(f"cannot negate a `{inner.type}`", node.span)
        return fold(ir.Neg(inner, inner.type))

    def visit_And(self, node: ast.And, env: _Env) -> ir.Expr:
        return fold(ir.And(tuple(self.bool_expr(o, env) for o in node.operands)))

    def visit_Or(self, node: ast.Or, env: _Env) -> ir.Expr:
        return fold(ir.Or(tuple(self.bool_expr(o, env) for o in node.operands)))

    def visit_Compare(self, node: ast.Compare, env: _Env) -> ir.Expr:
        left = self.expr(node.left, env)
        right = self.expr(node.right, env)
        lt, rt = left.type, right.type
        if node.op in ("==", "!="):
            if not comparable(lt, rt):
                _fail(
                    f"cannot compare `{lt}` with `{rt}`",
                    node.span,
                    mismatch_hint(lt, rt),
                )
            if lt == ir.ACTION and isinstance(right, ir.Const):
                self.action_name(node.right, exact=True)
            if rt == ir.ACTION and isinstance(left, ir.Const):
                self.action_name(node.left, exact=True)
        else:
            ordered = (ir.is_numeric(lt) and ir.is_numeric(rt)) or (
                lt == rt and (lt == ir.DURATION or isinstance(lt, ir.LabelType))
            )
            if not ordered:
                if isinstance(lt, ir.LabelType) and isinstance(rt, ir.LabelType):
                    _fail(
                        f"cannot order labels of two different orders `{lt}` "
                        f"and `{rt}`",
                        node.span,
                    )
                _fail(
                    f"cannot order `{lt}` and `{rt}` with `{node.op}`",
                    node.span,
                    mismatch_hint(lt, rt)
                    or "`<`, `<=`, `>`, `>=` order numbers, "
                    "durations and labels of one order",
                )
        return fold(ir.Compare(node.op, left, right))

    def visit_Arith(self, node: ast.Arith, env: _Env) -> ir.Expr:
        left = self.expr(node.left, env)
        right = self.expr(node.right, env)
        lt, rt = left.type, right.type
        if ir.is_numeric(lt) and ir.is_numeric(rt):
            typ: ir.Type = ir.INT if lt == rt == ir.INT else ir.DECIMAL
        elif lt == rt == ir.DURATION and node.op in "+-":
            typ = ir.DURATION
        elif lt == ir.DURATION and rt == ir.INT and node.op == "*":
            typ = ir.DURATION
        else:
            _fail(
                f"cannot compute `{lt}` {node.op} `{rt}`",
                node.span,
                "arithmetic is on numbers (and durations: `+`, `-`, `* int`)",
            )
        return fold(ir.Arith(node.op, left, right, typ))

    def visit_In(self, node: ast.In, env: _Env) -> ir.Expr:
        if isinstance(node.element, ast.Root) and node.element.name == "action":
            items = (
                node.container.items
                if isinstance(node.container, ast.SetLit)
                else (node.container,)
            )
            return ir.ActionIn(frozenset(self.action_name(i) for i in items))
        element = self.expr(node.element, env)
        container = self.expr(node.container, env)
        ct = container.type
        if not isinstance(ct, ir.SetType):
            hint = None
            if ct == ir.STRING:
                hint = "`in` looks for an element in a set; ripl has no substring test"
            _fail(
                f"`in` needs a set on its right, found `{ct}`",
                node.container.span,
                hint,
            )
        if ct.element is not None and not comparable(element.type, ct.element):
            _fail(
                f"cannot look for `{element.type}` in `{ct}`",
                node.span,
                mismatch_hint(element.type, ct.element),
            )
        return fold(ir.In(element, container))

    def visit_SetLit(self, node: ast.SetLit, env: _Env) -> ir.Expr:
        items = tuple(self.expr(i, env) for i in node.items)
        elem: ir.Type | None = None
        for item, syntax in zip(items, node.items, strict=True):
            if elem is None:
                elem = item.type
            elif ir.is_numeric(elem) and ir.is_numeric(item.type):
                elem = ir.DECIMAL if ir.DECIMAL in (elem, item.type) else ir.INT
            elif not comparable(elem, item.type):
                _fail(f"a set cannot mix `{elem}` and `{item.type}`", syntax.span)
        return fold(ir.SetLit(items, ir.SetType(elem)))

    def visit_Matches(self, node: ast.Matches, env: _Env) -> ir.Expr:
        subject = self.expr(node.subject, env)
        if subject.type != ir.STRING:
            _fail(
                f"`matches` needs a string, found `{subject.type}`", node.subject.span
            )
        return ir.Matches(subject, path_pattern(node.pattern))

    def visit_Is(self, node: ast.Is, env: _Env) -> ir.Expr:
        subject = self.expr(node.subject, env)
        if not isinstance(subject.type, ir.EntityType):
            _fail(f"`is` tests an entity, found `{subject.type}`", node.subject.span)
        names = frozenset().union(
            *(self.entity_names(t.name, t.span) for t in node.types)
        )
        return ir.Is(subject, names)

    def visit_Has(self, node: ast.Has, env: _Env) -> ir.Expr:
        subject = self.expr(node.subject, env)
        self.attribute(subject, node.attr)  # the attribute must be declared
        return ir.Has(subject, node.attr.name)

    # ---- rules ------------------------------------------------------------------

    def targets(self, names: tuple[ast.Ident, ...] | None) -> frozenset[str] | None:
        if names is None:
            return None
        found: set[str] = set()
        for ident in names:
            try:
                found |= self.entity_names(ident.name, ident.span)
            except _Bad as bad:
                self.report(bad)
        return frozenset(found)

    def rule(self, mod: str, node: ast.Rule) -> ir.Rule | None:
        before = len(self.diagnostics)
        principal = self.targets(node.principal)
        resource = self.targets(node.resource)
        actions: frozenset[str] | None = None
        if node.actions is not None:
            found: set[str] = set()
            for dotted in node.actions:
                name = dotted.text
                if name in self.actions or name in self.schema_groups():
                    found |= self.actions_under(name)
                else:
                    self.error(
                        "unknown-action",
                        f"unknown action `{name}`",
                        dotted.span,
                        did_you_mean(name, [*self.actions, *self.schema_groups()]),
                    )
            actions = frozenset(found)
        everything = frozenset(self.entities)
        env = _Env(
            mod,
            principal if principal is not None else everything,
            resource if resource is not None else everything,
        )
        parts: list[ir.Expr] = []
        for cond in node.when:
            try:
                parts.append(self.bool_expr(cond, env))
            except _Bad as bad:
                self.report(bad)
        for cond in node.unless:
            try:
                parts.append(fold(ir.Not(self.bool_expr(cond, env))))
            except _Bad as bad:
                self.report(bad)
        condition = None
        if parts:
            condition = parts[0] if len(parts) == 1 else fold(ir.And(tuple(parts)))
        requirements = []
        for ident in node.requirements:
            if self._visible_requirement(mod, ident):
                requirements.append(ident.name)
        obligations = []
        for use in node.obligations:
            try:
                obligations.append(self.obligation(mod, use, env))
            except _Bad as bad:
                self.report(bad)
        if len(self.diagnostics) > before:
            return None
        annotations = tuple(
            (a.name.name, tuple(lit.value for lit in a.args)) for a in node.annotations
        )
        return ir.Rule(
            node.id.name,
            node.effect,
            principal,
            actions,
            resource,
            condition,
            tuple(obligations),
            tuple(dict.fromkeys(requirements)),
            annotations,
            mod,
            node.span,
        )

    def _visible_requirement(self, mod: str, ident: ast.Ident) -> bool:
        entry = self.requirements.get(ident.name)
        if entry is None:
            self.error(
                "unknown-requirement",
                f"unknown step-up requirement `{ident.name}`",
                ident.span,
                did_you_mean(ident.name, self.requirements)
                or "declare it with `requirements { … }` or import `std.stepup`",
            )
            return False
        if not self.sees(mod, entry[0], ident.name):
            self.error(
                "scope",
                f"requirement `{ident.name}` is not imported here",
                ident.span,
                f"add `import {entry[0]}`",
            )
            return False
        return True

    def obligation(
        self, mod: str, use: ast.ObligationUse, env: _Env
    ) -> ir.ObligationArg:
        entry = self.obligations.get(use.name.name)
        if entry is None:
            _fail(
                f"unknown obligation `{use.name.name}`",
                use.name.span,
                did_you_mean(use.name.name, self.obligations)
                or "import `std.obligations`",
                "unknown-obligation",
            )
        owner, definition = entry
        if not self.sees(mod, owner, use.name.name):
            _fail(
                f"obligation `{use.name.name}` is not imported here",
                use.name.span,
                f"add `import {owner}`",
                "scope",
            )
        args = tuple(self.expr(a, env) for a in use.args)
        typ = definition.type
        if isinstance(typ, ir.SetType):
            assert typ.element is not None
            for arg, syntax in zip(args, use.args, strict=True):
                if not (comparable(arg.type, typ.element) or comparable(arg.type, typ)):
                    _fail(
                        f"`{use.name.name}` takes `{typ.element}` values, found "
                        f"`{arg.type}`",
                        syntax.span,
                    )
        else:
            if len(args) != 1:
                _fail(f"`{use.name.name}` takes one value", use.span)
            if not comparable(args[0].type, typ):
                _fail(
                    f"`{use.name.name}` takes a `{typ}`, found `{args[0].type}`",
                    use.args[0].span,
                )
        return ir.ObligationArg(definition, args)

    # ---- tests and options --------------------------------------------------------

    def test(
        self, mod: str, node: ast.Test, rule_ids: set[str]
    ) -> ir.InlineTest | None:
        before = len(self.diagnostics)
        exp = node.expect
        if exp.effect.name not in ast.EFFECTS:
            self.error(
                "test",
                f"unknown effect `{exp.effect.name}`",
                exp.effect.span,
                did_you_mean(exp.effect.name, ast.EFFECTS),
            )
        for ident in exp.rules or ():
            if ident.name not in rule_ids:
                self.error(
                    "unknown-rule",
                    f"unknown rule `{ident.name}`",
                    ident.span,
                    did_you_mean(ident.name, rule_ids),
                )
        for ident in exp.requirements or ():
            if ident.name not in self.requirements:
                self.error(
                    "unknown-requirement",
                    f"unknown step-up requirement `{ident.name}`",
                    ident.span,
                    did_you_mean(ident.name, self.requirements),
                )
        for ident in exp.reasons or ():
            if ident.name not in REASON_CODES:
                self.error(
                    "test",
                    f"unknown reason code `{ident.name}`",
                    ident.span,
                    did_you_mean(ident.name, REASON_CODES),
                )
        obligations = None
        if exp.obligations is not None:
            everything = frozenset(self.entities)
            env = _Env(mod, everything, everything)
            obligations = []
            for use in exp.obligations:
                try:
                    arg = self.obligation(mod, use, env)
                    obligations.append((use.name.name, arg.args))
                except _Bad as bad:
                    self.report(bad)
        request_file = None
        if node.request_file is not None:
            base = Path(self.modules[mod].file).parent
            path = base / str(node.request_file.value)
            if not path.is_file():
                self.error(
                    "test",
                    f"request file `{node.request_file.value}` not found",
                    node.request_file.span,
                    f"paths are relative to the policy file: looked for `{path}`",
                )
            request_file = str(path)
        if len(self.diagnostics) > before:
            return None
        expect = ir.Expect(
            exp.effect.name,
            None if exp.rules is None else frozenset(i.name for i in exp.rules),
            None
            if exp.requirements is None
            else frozenset(i.name for i in exp.requirements),
            None if exp.reasons is None else frozenset(i.name for i in exp.reasons),
            None if obligations is None else tuple(obligations),
        )
        return ir.InlineTest(node.name, node.request, request_file, expect, node.span)

    def options(self) -> dict[str, ir.Value]:
        found: dict[str, ir.Value] = {}
        for mod, item in self.items(ast.OptionDecl):
            assert isinstance(item, ast.OptionDecl)
            name = item.name.name
            if name not in OPTIONS:
                self.error(
                    "option",
                    f"unknown option `{name}`",
                    item.name.span,
                    did_you_mean(name, OPTIONS),
                )
                continue
            if name in found:
                self.error("option", f"option `{name}` is set twice", item.name.span)
                continue
            typ, low, high = OPTIONS[name]
            everything = frozenset(self.entities)
            try:
                value = self.expr(item.value, _Env(mod, everything, everything))
            except _Bad as bad:
                self.report(bad)
                continue
            if not isinstance(value, ir.Const) or value.type != typ:
                self.error(
                    "option",
                    f"option `{name}` takes a constant `{typ}`",
                    item.value.span,
                )
                continue
            if not low <= value.value <= high:  # type: ignore[operator]
                self.error(
                    "option",
                    f"option `{name}` must lie between {low} and {high}",
                    item.value.span,
                )
                continue
            found[name] = value.value
        return found

    # ---- the whole set --------------------------------------------------------------

    def run(self) -> ir.PolicySet:
        self.collect_schema()
        for name in list(self.risk_syntax):
            owner, _ = self.risk_syntax[name]
            try:
                self.visible_risk(owner, name)
            except _Bad as bad:
                self.report(bad)
        rules: list[ir.Rule] = []
        seen: dict[str, Span] = {}
        for mod, item in self.items(ast.Rule):
            assert isinstance(item, ast.Rule)
            if item.id.name in seen:
                self.error(
                    "duplicate",
                    f"rule id `{item.id.name}` is used twice",
                    item.id.span,
                    "rule ids are unique across the policy set",
                    notes=(("first used here", seen[item.id.name]),),
                )
                self.rule(mod, item)  # still report what else is wrong in it
                continue
            seen[item.id.name] = item.id.span
            checked = self.rule(mod, item)
            if checked is not None:
                rules.append(checked)
        tests: list[ir.InlineTest] = []
        for mod, item in self.items(ast.Test):
            assert isinstance(item, ast.Test)
            test = self.test(mod, item, set(seen))
            if test is not None:
                tests.append(test)
        options = self.options()
        sources = {m.file: m.text for m in self.modules.values()}
        if self.diagnostics:
            raise CheckError(sorted(self.diagnostics, key=_diag_order), sources)
        rules.sort(key=lambda r: r.id)
        result = ir.PolicySet(
            self.schema(),
            tuple(rules),
            dict(self.risks),
            tuple(tests),
            options,
            sources,
            policy_hash(list(self.modules.values())),
        )
        log.debug(
            "checked %d modules: %d rules, %d entity types",
            len(self.modules),
            len(rules),
            len(self.entities),
        )
        return result


def _diag_order(d: Diagnostic) -> tuple[str, int, int]:
    return d.span.file, d.span.line, d.span.column


_checked: cachetools.LRUCache[tuple[tuple[str, str, str], ...], ir.PolicySet] = (
    cachetools.LRUCache(16)
)
_checked_lock = threading.Lock()


def check_modules(modules: Sequence[LoadedModule]) -> ir.PolicySet:
    """Raises `CheckError` with every problem found.

    A policy set is immutable, so the same modules (names, files and texts)
    are checked once; reloading an unchanged set costs a lookup."""
    key = tuple(sorted((m.name, m.file, m.text) for m in modules))
    with _checked_lock:
        found = _checked.get(key)
    if found is not None:
        return found
    policy = Checker(modules).run()
    with _checked_lock:
        _checked[key] = policy
    return policy


# ---- type relations -------------------------------------------------------------


def comparable(a: ir.Type, b: ir.Type) -> bool:
    if ir.is_numeric(a) and ir.is_numeric(b):
        return True
    if isinstance(a, ir.EntityType) and isinstance(b, ir.EntityType):
        return True
    if isinstance(a, ir.SetType) and isinstance(b, ir.SetType):
        if a.element is None or b.element is None:
            return True
        return comparable(a.element, b.element)
    return a == b


def mismatch_hint(a: ir.Type, b: ir.Type) -> str | None:
    pair = {type(a), type(b)}
    if ir.LabelType in pair and ir.STRING in (a, b):
        return "write the label as a name, without quotes"
    if ir.ActionType in pair and ir.STRING in (a, b):
        return "write the action as a name, without quotes"
    if ir.BOOL in (a, b) and (ir.is_numeric(a) or ir.is_numeric(b)):
        return "a bool never compares with a number"
    if ir.STRING in (a, b) and (ir.is_numeric(a) or ir.is_numeric(b)):
        return (
            "strings and numbers never compare; declare the attribute's type to match"
        )
    return None


def path_pattern(lit: ast.Literal) -> ir.PathPattern:
    text = str(lit.value)
    segments = tuple(text.split("/"))
    offset = 1
    for i, seg in enumerate(segments):
        col = lit.span.column + offset
        span = Span(
            lit.span.file,
            lit.span.start + offset,
            lit.span.start + offset + len(seg),
            lit.span.line,
            col,
            lit.span.line,
            col + len(seg),
        )
        if "{" in seg or "}" in seg:
            if seg == "{}":
                _fail(
                    "empty placeholder name",
                    span,
                    "name the segment, like `{id}`",
                    "pattern",
                )
            if not ir.PLACEHOLDER_RE.match(seg):
                where = seg.find("{")
                if where >= 0 and "}" not in seg[where:]:
                    _fail(
                        "unclosed placeholder",
                        span,
                        "close it with `}`; a placeholder is a whole segment, "
                        "like `{id}`",
                        "pattern",
                    )
                _fail(
                    "a placeholder must be a whole segment, like `{id}`",
                    span,
                    code="pattern",
                )
        if "**" in seg and (seg != "**" or i != len(segments) - 1):
            _fail("`**` is only allowed as the last segment", span, code="pattern")
        if "*" in seg and seg not in ("*", "**"):
            _fail(
                "`*` must be a whole segment",
                span,
                "`*` matches exactly one segment",
                "pattern",
            )
        offset += len(seg) + 1
    return ir.PathPattern(text, segments)


# ---- constant folding -------------------------------------------------------------


def fold(expr: ir.Expr) -> ir.Expr:
    """Fold what is constant, following the three-valued rules exactly: a
    sub-expression that would err at run time is left alone."""
    if isinstance(expr, ir.And | ir.Or):
        absorbing = isinstance(expr, ir.Or)
        kept: list[ir.Expr] = []
        for op in expr.operands:
            inner = op.operands if isinstance(op, type(expr)) else (op,)
            for x in inner:
                if isinstance(x, ir.Const):
                    if x.value is absorbing:
                        return ir.Const(absorbing, ir.BOOL)
                    continue
                kept.append(x)
        if not kept:
            return ir.Const(not absorbing, ir.BOOL)
        if len(kept) == 1:
            return kept[0]
        return type(expr)(tuple(kept))
    if isinstance(expr, ir.Not) and isinstance(expr.operand, ir.Const):
        return ir.Const(not expr.operand.value, ir.BOOL)
    try:
        if (
            isinstance(expr, ir.Compare)
            and isinstance(expr.left, ir.Const)
            and (isinstance(expr.right, ir.Const))
        ):
            return ir.Const(
                ops.compare(expr.op, expr.left.value, expr.right.value), ir.BOOL
            )
        if (
            isinstance(expr, ir.Arith)
            and isinstance(expr.left, ir.Const)
            and (isinstance(expr.right, ir.Const))
        ):
            return ir.Const(
                ops.arith(expr.op, expr.left.value, expr.right.value), expr.type
            )
        if isinstance(expr, ir.Neg) and isinstance(expr.operand, ir.Const):
            return ir.Const(ops.negate(expr.operand.value), expr.type)
        if isinstance(expr, ir.SetLit) and all(
            isinstance(i, ir.Const) for i in expr.items
        ):
            values = frozenset(i.value for i in expr.items)  # type: ignore[union-attr]
            return ir.Const(values, expr.type)
        if (
            isinstance(expr, ir.In)
            and isinstance(expr.element, ir.Const)
            and (isinstance(expr.container, ir.Const))
        ):
            return ir.Const(
                ops.contains(expr.container.value, expr.element.value), ir.BOOL
            )
    except ops.OpError:
        return expr
    return expr


def sources_of(modules: Mapping[str, LoadedModule]) -> dict[str, str]:
    return {m.file: m.text for m in modules.values()}
