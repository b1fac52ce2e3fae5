"""The batch's answer: effect codes per row, the rules behind them as
compressed rows, and reason codes written only when asked for."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ripl.batch.chains import Chains
from ripl.batch.columns import IntArray
from ripl.batch.plan import EFFECTS


class ColumnResult:
    """Effect codes and the rules behind each decision, row by row (the
    layout is described in the docstring of `ripl.batch`)."""

    def __init__(
        self,
        effects: npt.NDArray[np.int8],
        rule_offsets: IntArray,
        rule_index: npt.NDArray[np.int32],
        rule_ids: tuple[str, ...],
        vectorized: int,
        fallback: int,
        reasons: _Reasons,
    ) -> None:
        self.effects = effects
        self.rule_offsets = rule_offsets
        self.rule_index = rule_index
        self.rule_ids = rule_ids
        self.vectorized = vectorized  # rows decided by the vectorized path
        self.fallback = fallback  # rows decided one by one
        self._reasons = reasons

    def __len__(self) -> int:
        return len(self.effects)

    def effect_names(self) -> npt.NDArray[np.object_]:
        names: npt.NDArray[np.object_] = np.array(EFFECTS, dtype=object)[self.effects]
        return names

    def rules_of(self, row: int) -> tuple[str, ...]:
        start, end = self.rule_offsets[row], self.rule_offsets[row + 1]
        ids = self.rule_ids
        return tuple([ids[k] for k in self.rule_index[start:end].tolist()])

    @functools.cached_property
    def rules(self) -> npt.NDArray[np.object_]:
        """A tuple of rule ids per row."""
        ids = np.array(self.rule_ids + ("",), dtype=object)
        names = ids[self.rule_index].tolist()
        bounds = self.rule_offsets.tolist()
        out = np.empty(len(self), dtype=object)
        out[:] = [tuple(names[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
        return out

    def reason_codes(self, row: int) -> tuple[str, ...]:
        """The reason codes of row's decision, as `Decision.reason_codes`."""
        return self._reasons.codes(row)


_RULES, _CHAIN, _AGENT, _CEILING, _ORPHAN, _ONE_BY_ONE = range(6)


class _Reasons:
    """What is needed to write a row's reason codes, kept until asked."""

    def __init__(self, n: int) -> None:
        self.stage = np.full(n, _ONE_BY_ONE, dtype=np.int8)
        self.escalated = np.zeros(n, dtype=bool)
        self.blocking = np.zeros(n, dtype=np.int64)
        self.winners = np.zeros(n, dtype=np.int64)
        self.undeclared = np.zeros(n, dtype=np.int64)
        self.chains: Chains | None = None
        self.decided: dict[int, tuple[str, ...]] = {}

    def codes(self, row: int) -> tuple[str, ...]:
        stage = int(self.stage[row])
        if stage == _ONE_BY_ONE:
            return self.decided[row]
        if stage in (_CHAIN, _AGENT, _CEILING):  # denied before any rule
            ceilings = ("scope_not_declared",) * int(self.undeclared[row])
            if stage == _CHAIN:
                assert self.chains is not None
                return self.chains.codes(int(self.chains.index[row])) + ceilings
            if stage == _AGENT:
                return ("agent_without_delegation", *ceilings)
            return ceilings
        if stage == _ORPHAN:
            return ("root_not_found",)
        if self.escalated[row]:
            return ("escalation",)
        if self.blocking[row]:
            return ("error_in_rule",) * int(self.blocking[row])
        if not self.winners[row]:
            return ("no_rule",)
        return ("matched",) * int(self.winners[row])


def _compress(
    n: int, rows: Sequence[IntArray], rules: Sequence[IntArray]
) -> tuple[IntArray, npt.NDArray[np.int32]]:
    """Row-sorted (row, rule) entries as offsets and rule indices; each part
    is sorted by row already, so parts only need merging."""
    all_rows = np.concatenate(rows)
    all_rules = np.concatenate(rules)
    if len(rows) > 1 and len(rows[-1]) and len(all_rows) > len(rows[-1]):
        order = np.argsort(all_rows, kind="stable")
        all_rows, all_rules = all_rows[order], all_rules[order]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(all_rows, minlength=n), out=offsets[1:])
    return offsets, all_rules.astype(np.int32)
