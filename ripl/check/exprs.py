"""Expressions: names bound, types checked, constants folded."""

from __future__ import annotations

from decimal import Decimal

from ripl import ast, ir
from ripl.check.base import DELEGATION_FACTS, ClauseError, Env, abandon, did_you_mean
from ripl.check.schema import SchemaChecker
from ripl.check.types import comparable, fold, mismatch_hint, path_pattern
from ripl.source import Span


class ExprChecker(SchemaChecker):
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
            raise ClauseError(None)
        if name in self.risk_stack:
            cycle = self.risk_stack[self.risk_stack.index(name) :]
            self.broken_risks.update(cycle)
            abandon(
                f"risk `{name}` is defined in terms of itself: "
                + " → ".join((*cycle, name)),
                item.name.span,
                code="cycle",
            )
        self.risk_stack.append(name)
        try:
            everything = frozenset(self.entities)
            env = Env(owner, self.identities(), everything)
            expr = self.expr(item.expr, env)
        except ClauseError:
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
            abandon(
                "expected an action name", node.span, "write it like `payments.refund`"
            )
        name, span = found
        if name in self.actions:
            return name
        groups = self.schema_groups()
        if name in groups and not exact:
            return name
        if name in groups:
            abandon(
                f"`{name}` is a group of actions, not an action",
                span,
                f"to test the group, write `action in {name}`",
            )
        abandon(
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

    def expr(self, node: ast.Expr, env: Env) -> ir.Expr:
        method = getattr(self, "visit_" + type(node).__name__)
        result: ir.Expr = method(node, env)
        return result

    def bool_expr(self, node: ast.Expr, env: Env) -> ir.Expr:
        result = self.expr(node, env)
        if result.type != ir.BOOL:
            abandon(f"expected a condition (bool), found `{result.type}`", node.span)
        return result

    def visit_Literal(self, node: ast.Literal, env: Env) -> ir.Expr:
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

    def visit_Root(self, node: ast.Root, env: Env) -> ir.Expr:
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
        abandon(
            "`delegation` is not a value by itself",
            node.span,
            "use `delegation.depth`, `.purpose`, `.root`, `.grants(scope)`, "
            '`.via(Type)` or `.limit("name")`',
        )

    def visit_Var(self, node: ast.Var, env: Env) -> ir.Expr:
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
            abandon(
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
        abandon(
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

    def visit_GetAttr(self, node: ast.GetAttr, env: Env) -> ir.Expr:
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
            abandon(
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

    def _dotted_value(self, node: ast.GetAttr, name: str, env: Env) -> ir.Expr:
        head, _, rest = name.partition(".")
        if head in self.labels and "." not in rest:
            order = self.labels[head]
            if not self.sees(env.module, self.label_module[head], head):
                abandon(
                    f"label order `{head}` is not imported here",
                    node.span,
                    f"add `import {self.label_module[head]} ({head})`",
                    "scope",
                )
            label = order.label(rest)
            if label is None:
                abandon(
                    f"`{head}` has no label `{rest}`",
                    node.attr.span,
                    did_you_mean(rest, order.labels)
                    or "its labels are " + ", ".join(order.labels),
                    "unknown-label",
                )
            return ir.Const(label, ir.LabelType(head))
        if head in self.risk_syntax and self.visible_risk(env.module, head):
            abandon(f"risk `{head}` has no attributes", node.attr.span)
        return ir.Const(self.action_name(node), ir.ACTION)

    def schema_kinds(self, kind: str) -> frozenset[str]:
        return frozenset(n for n, e in self.entities.items() if e.kind == kind)

    def identities(self) -> frozenset[str]:
        """What `principal` can be: every type with an identity kind."""
        return frozenset(n for n, e in self.entities.items() if e.kind is not None)

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
                    abandon(
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
                abandon(
                    f"unknown attribute `{name}` on {shown}",
                    attr.span,
                    did_you_mean(name, known),
                    "unknown-attribute",
                )
            types = {s.type for s in found.values()}
            if len(types) > 1:
                abandon(
                    f"attribute `{name}` has different types on "
                    + ", ".join(f"`{t}`" for t in found),
                    attr.span,
                )
            return ir.GetAttr(obj, name, types.pop())
        if isinstance(typ, ir.RecordType):
            spec = typ.get(name)
            if spec is None:
                where = "context" if isinstance(obj, ir.RequestRoot) else "record"
                abandon(
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
        abandon(f"a value of type `{typ}` has no attribute `{name}`", attr.span)

    def visit_Call(self, node: ast.Call, env: Env) -> ir.Expr:
        func = node.func
        if not (
            isinstance(func, ast.GetAttr)
            and isinstance(func.obj, ast.Root)
            and func.obj.name == "delegation"
        ):
            abandon(
                "unknown function",
                func.span,
                "the functions are `delegation.grants(scope)`, "
                '`delegation.via(Type)` and `delegation.limit("name")`',
                "unknown-function",
            )
        name = func.attr.name
        if len(node.args) != 1:
            abandon(f"`delegation.{name}` takes one argument", node.span)
        arg = node.args[0]
        if name == "grants":
            return ir.Grants(self.action_name(arg))
        if name == "via":
            if not isinstance(arg, ast.Var):
                abandon("expected an entity type or identity kind", arg.span)
            return ir.Via(self.entity_names(arg.name, arg.span))
        if name == "limit":
            if isinstance(arg, ast.Literal) and isinstance(arg.value, str):
                return ir.DelegationFact("limit", ir.DECIMAL, arg.value)
            abandon(
                "expected the limit's name as a string",
                arg.span,
                'for example `delegation.limit("spend")`',
            )
        abandon(
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
        abandon(
            f"unknown entity type `{name}`",
            span,
            did_you_mean(name, [*self.entities, *ir.KINDS]),
            "unknown-type",
        )

    def visit_Not(self, node: ast.Not, env: Env) -> ir.Expr:
        return fold(ir.Not(self.bool_expr(node.operand, env)))

    def visit_Neg(self, node: ast.Neg, env: Env) -> ir.Expr:
        inner = self.expr(node.operand, env)
        if not (ir.is_numeric(inner.type) or inner.type == ir.DURATION):
            abandon(f"cannot negate a `{inner.type}`", node.span)
        return fold(ir.Neg(inner, inner.type))

    def visit_And(self, node: ast.And, env: Env) -> ir.Expr:
        return fold(ir.And(tuple(self.bool_expr(o, env) for o in node.operands)))

    def visit_Or(self, node: ast.Or, env: Env) -> ir.Expr:
        return fold(ir.Or(tuple(self.bool_expr(o, env) for o in node.operands)))

    def visit_Compare(self, node: ast.Compare, env: Env) -> ir.Expr:
        left = self.expr(node.left, env)
        right = self.expr(node.right, env)
        lt, rt = left.type, right.type
        if node.op in ("==", "!="):
            if not comparable(lt, rt):
                abandon(
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
                    abandon(
                        f"cannot order labels of two different orders `{lt}` "
                        f"and `{rt}`",
                        node.span,
                    )
                abandon(
                    f"cannot order `{lt}` and `{rt}` with `{node.op}`",
                    node.span,
                    mismatch_hint(lt, rt)
                    or "`<`, `<=`, `>`, `>=` order numbers, "
                    "durations and labels of one order",
                )
        return fold(ir.Compare(node.op, left, right))

    def visit_Arith(self, node: ast.Arith, env: Env) -> ir.Expr:
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
            abandon(
                f"cannot compute `{lt}` {node.op} `{rt}`",
                node.span,
                "arithmetic is on numbers (and durations: `+`, `-`, `* int`)",
            )
        return fold(ir.Arith(node.op, left, right, typ))

    def visit_In(self, node: ast.In, env: Env) -> ir.Expr:
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
            abandon(
                f"`in` needs a set on its right, found `{ct}`",
                node.container.span,
                hint,
            )
        if ct.element is not None and not comparable(element.type, ct.element):
            abandon(
                f"cannot look for `{element.type}` in `{ct}`",
                node.span,
                mismatch_hint(element.type, ct.element),
            )
        return fold(ir.In(element, container))

    def visit_SetLit(self, node: ast.SetLit, env: Env) -> ir.Expr:
        items = tuple(self.expr(i, env) for i in node.items)
        elem: ir.Type | None = None
        for item, syntax in zip(items, node.items, strict=True):
            if elem is None:
                elem = item.type
            elif ir.is_numeric(elem) and ir.is_numeric(item.type):
                elem = ir.DECIMAL if ir.DECIMAL in (elem, item.type) else ir.INT
            elif not comparable(elem, item.type):
                abandon(f"a set cannot mix `{elem}` and `{item.type}`", syntax.span)
        return fold(ir.SetLit(items, ir.SetType(elem)))

    def visit_Matches(self, node: ast.Matches, env: Env) -> ir.Expr:
        subject = self.expr(node.subject, env)
        if subject.type != ir.STRING:
            abandon(
                f"`matches` needs a string, found `{subject.type}`", node.subject.span
            )
        return ir.Matches(subject, path_pattern(node.pattern))

    def visit_Is(self, node: ast.Is, env: Env) -> ir.Expr:
        subject = self.expr(node.subject, env)
        if not isinstance(subject.type, ir.EntityType):
            abandon(f"`is` tests an entity, found `{subject.type}`", node.subject.span)
        names = frozenset().union(
            *(self.entity_names(t.name, t.span) for t in node.types)
        )
        return ir.Is(subject, names)

    def visit_Has(self, node: ast.Has, env: Env) -> ir.Expr:
        subject = self.expr(node.subject, env)
        self.attribute(subject, node.attr)  # the attribute must be declared
        return ir.Has(subject, node.attr.name)
