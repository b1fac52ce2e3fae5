"""Inline tests: the example requests written next to the rules, each with the
decision it must get. Runs them through an engine and says, for each failure,
what was expected and what came back and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ripl import ir
from ripl.decision import Decision, dumps, obligations_json
from ripl.engine import Engine
from ripl.request import JsonError, load_json


@attrs.frozen
class TestResult:
    test: ir.InlineTest
    decision: Decision | None
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems


def load_test_request(test: ir.InlineTest) -> Mapping[str, Any]:
    """The test's request; raises `ValueError` with a readable message."""
    if test.request_file is None:
        if not isinstance(test.request, Mapping):
            raise ValueError("the inline request is not an object")
        return test.request
    try:
        text = Path(test.request_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read `{test.request_file}`: {exc.strerror}") from None
    try:
        data = load_json(text)
    except JsonError as exc:
        line = text.count("\n", 0, exc.pos) + 1
        column = exc.pos - (text.rfind("\n", 0, exc.pos) + 1) + 1
        raise ValueError(
            f"`{test.request_file}` is not valid JSON: {exc.message} at "
            f"line {line} column {column}"
        ) from None
    if not isinstance(data, Mapping):
        raise ValueError(f"`{test.request_file}` does not hold a JSON object")
    return data


def _describe(decision: Decision) -> str:
    text = decision.effect
    if decision.requirements:
        text += f" ({', '.join(decision.requirements)})"
    if decision.rules:
        names = ", ".join(f"`{r}`" for r in decision.rule_ids)
        text += f" from rule{'s' if len(decision.rules) > 1 else ''} {names}"
    elif decision.reasons:
        text += f" ({decision.reasons[0]})"
    return text


def _expected_obligations(expect: ir.Expect) -> dict[str, Any]:
    out: dict[str, ir.Value] = {}
    for name, args in expect.obligations or ():
        values = [a.value for a in args if isinstance(a, ir.Const)]
        if len(values) != len(args):
            raise ValueError("expected obligations must be constants")
        if values and isinstance(values[0], str) or len(values) > 1:
            out[name] = frozenset(values)
        else:
            out[name] = values[0]
    return obligations_json(out)


def check_expectation(expect: ir.Expect, decision: Decision) -> list[str]:
    problems = []
    if decision.effect != expect.effect:
        problems.append(f"expected {expect.effect}, got {_describe(decision)}")
    if expect.rules is not None and set(decision.rule_ids) != expect.rules:
        want = ", ".join(f"`{r}`" for r in sorted(expect.rules)) or "none"
        got = ", ".join(f"`{r}`" for r in decision.rule_ids) or "none"
        problems.append(f"expected rules {want}, got {got}")
    if expect.requirements is not None and set(decision.requirements) != (
        expect.requirements
    ):
        problems.append(
            f"expected requirements {sorted(expect.requirements)}, got "
            f"{list(decision.requirements)}"
        )
    if expect.reasons is not None:
        missing = expect.reasons - set(decision.reason_codes)
        if missing:
            problems.append(
                f"expected reason {', '.join(sorted(missing))}, got: "
                + "; ".join(decision.reasons)
            )
    if expect.obligations is not None:
        wanted = _expected_obligations(expect)
        actual = obligations_json(decision.obligations)
        for key, value in wanted.items():
            if actual.get(key) != value:
                problems.append(
                    f"expected obligation {key} = {dumps(value)}, "
                    f"got {dumps(actual.get(key))}"
                )
    return problems


def run_test(engine: Engine, test: ir.InlineTest) -> TestResult:
    try:
        request = load_test_request(test)
    except ValueError as exc:
        return TestResult(test, None, (str(exc),))
    decision = engine.decide(request)
    problems = check_expectation(test.expect, decision)
    if any(code == "bad_request" for code in decision.reason_codes) and (
        test.expect.effect != "deny"
        or test.expect.reasons != frozenset({"bad_request"})
    ):
        problems.insert(0, "the request is malformed: " + decision.reasons[0])
    return TestResult(test, decision, tuple(dict.fromkeys(problems)))


def run_tests(engine: Engine) -> list[TestResult]:
    tests = sorted(engine.policy.tests, key=lambda t: (t.span.file, t.span.line))
    return [run_test(engine, t) for t in tests]
