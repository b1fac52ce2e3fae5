"""The schema: entity types and owners, actions, labels, context, obligations,
requirements and risks, collected from every module before any rule is read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ripl import ast, ir
from ripl.check.base import CheckerBase, ClauseError, abandon, did_you_mean
from ripl.source import Span

log = logging.getLogger(__name__)


class SchemaChecker(CheckerBase):
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
                    name, None, frozenset(), ir.RecordType(()), None, item.span
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
        except ClauseError as bad:
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
            self._declared_scopes(item, kind),
            item.span,
        )

    def _declared_scopes(
        self, item: ast.EntityDecl, kind: str | None
    ) -> frozenset[str] | None:
        """`scopes a, b` of an identity type: each a declared action or group."""
        if item.scopes is None:
            return None
        if kind is None and item.kind is None:
            self.error(
                "scopes",
                f"`{item.name.name}` is not an identity, so it has no scopes",
                item.scopes[0].span if item.scopes else item.span,
                "declare scopes on humans, agents, services, tools or connectors",
            )
            return None
        groups = {
            ".".join(parts[:i])
            for parts in (name.split(".") for name in self.actions)
            for i in range(1, len(parts) + 1)
        }
        found: set[str] = set()
        for dotted in item.scopes:
            name = dotted.text
            if name not in groups:
                self.error(
                    "unknown-action",
                    f"unknown action or group `{name}` in the scopes of "
                    f"`{item.name.name}`",
                    dotted.span,
                    did_you_mean(name, sorted(groups)),
                )
            elif name in found:
                self.error(
                    "duplicate",
                    f"scope `{name}` is listed twice for `{item.name.name}`",
                    dotted.span,
                )
            found.add(name)
        return frozenset(found & groups)

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
        except ClauseError as bad:
            self.report(bad)
            return None

    def resolve_type(self, mod: str, node: ast.TypeExpr) -> ir.Type:
        if isinstance(node, ast.SetType):
            element = self.resolve_type(mod, node.element)
            if isinstance(element, ir.RecordType):
                # A request's records cannot be set members; every request
                # carrying one would fail, so the schema is refused instead.
                abandon(
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
                abandon(
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
        abandon(f"unknown type `{name}`", node.span, hint, "unknown-type")

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
