"""Compare an engine's allow/deny answers with the naive loop's outcomes.

A mismatch is either explained by one of the documented semantic differences
(`benchmarks.peers.SEMANTIC_DIFFERENCES`), or it is unexplained, which means a
bug in a translator, in the reference loop, or in the engine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import attrs

from benchmarks.peers import Outcome


@attrs.frozen
class Mismatch:
    request: int
    expected: bool
    got: bool
    code: str
    """The reference outcome's reason code."""
    explanation: str | None


@attrs.frozen
class CheckReport:
    engine: str
    checked: int
    mismatches: tuple[Mismatch, ...]

    @property
    def unexplained(self) -> tuple[Mismatch, ...]:
        return tuple(m for m in self.mismatches if m.explanation is None)

    @property
    def explained(self) -> dict[str, int]:
        return dict(Counter(m.explanation for m in self.mismatches if m.explanation))


def explain(engine: str, outcome: Outcome, got: bool) -> str | None:
    """The documented difference that accounts for `got`, if there is one."""
    if engine == "cedarpy" and got and not outcome.allowed and outcome.erred_deny:
        return "cedar_skips_erroring_forbid"
    if engine == "pycasbin" and not got and outcome.allowed and outcome.read_missing:
        return "casbin_raises_on_missing_attribute"
    return None


def compare(
    engine: str, reference: Sequence[Outcome], answers: Mapping[int, bool]
) -> CheckReport:
    """`answers` maps request index to the engine's answer; engines too slow to
    answer every request are checked on those they answered."""
    mismatches = tuple(
        Mismatch(
            request=index,
            expected=reference[index].allowed,
            got=got,
            code=reference[index].code,
            explanation=explain(engine, reference[index], got),
        )
        for index, got in sorted(answers.items())
        if got != reference[index].allowed
    )
    return CheckReport(engine, len(answers), mismatches)
