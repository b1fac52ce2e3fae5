"""Rules, inline tests and options, and the run over a whole policy set."""

from __future__ import annotations

import logging
from pathlib import Path

from ripl import ast, ir
from ripl.check.base import (
    OPTIONS,
    REASON_CODES,
    ClauseError,
    Env,
    abandon,
    did_you_mean,
    policy_hash,
)
from ripl.check.exprs import ExprChecker
from ripl.check.types import comparable, fold
from ripl.errors import CheckError, Diagnostic
from ripl.source import Span

log = logging.getLogger(__name__)


class Checker(ExprChecker):
    # ---- rules ------------------------------------------------------------------

    def targets(self, names: tuple[ast.Ident, ...] | None) -> frozenset[str] | None:
        if names is None:
            return None
        found: set[str] = set()
        for ident in names:
            try:
                found |= self.entity_names(ident.name, ident.span)
            except ClauseError as bad:
                self.report(bad)
        return frozenset(found)

    def rule(self, mod: str, node: ast.Rule) -> ir.Rule | None:
        before = len(self.diagnostics)
        principal = self.targets(node.principal)
        for ident in node.principal or ():
            definition = self.entities.get(ident.name)
            if definition is not None and definition.kind is None:
                self.error(
                    "principal",
                    f"`{ident.name}` is not an identity, so it is never a principal",
                    ident.span,
                    f"give it a kind (`entity {ident.name}: service owner …`) or "
                    "test it as the resource",
                )
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
        env = Env(
            mod,
            principal if principal is not None else self.identities(),
            resource if resource is not None else everything,
        )
        parts: list[ir.Expr] = []
        for cond in node.when:
            try:
                parts.append(self.bool_expr(cond, env))
            except ClauseError as bad:
                self.report(bad)
        for cond in node.unless:
            try:
                parts.append(fold(ir.Not(self.bool_expr(cond, env))))
            except ClauseError as bad:
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
            except ClauseError as bad:
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
        self, mod: str, use: ast.ObligationUse, env: Env
    ) -> ir.ObligationArg:
        entry = self.obligations.get(use.name.name)
        if entry is None:
            abandon(
                f"unknown obligation `{use.name.name}`",
                use.name.span,
                did_you_mean(use.name.name, self.obligations)
                or "import `std.obligations`",
                "unknown-obligation",
            )
        owner, definition = entry
        if not self.sees(mod, owner, use.name.name):
            abandon(
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
                    abandon(
                        f"`{use.name.name}` takes `{typ.element}` values, found "
                        f"`{arg.type}`",
                        syntax.span,
                    )
        else:
            if len(args) != 1:
                abandon(f"`{use.name.name}` takes one value", use.span)
            if not comparable(args[0].type, typ):
                abandon(
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
            env = Env(mod, everything, everything)
            obligations = []
            for use in exp.obligations:
                try:
                    arg = self.obligation(mod, use, env)
                    obligations.append((use.name.name, arg.args))
                except ClauseError as bad:
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
                value = self.expr(item.value, Env(mod, everything, everything))
            except ClauseError as bad:
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
            except ClauseError as bad:
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
        test_names: dict[str, Span] = {}
        for mod, item in self.items(ast.Test):
            assert isinstance(item, ast.Test)
            if item.name in test_names:
                self.error(
                    "duplicate",
                    f"test `{item.name}` is defined twice",
                    item.span,
                    "name each test for the behaviour it checks",
                    notes=(("first defined here", test_names[item.name]),),
                )
            test_names.setdefault(item.name, item.span)
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
