"""Static analysis of a checked policy set: findings with witnesses, and the
drift between two versions (`ripl diff`).

    findings = analyze(policy)          # list[Finding], suppressions applied
    report = diff(old_policy, new_policy)

Every witness a finding or a diff carries has been run through the
reference engine and shows what the finding claims.
"""

from __future__ import annotations

from ripl import ir
from ripl.analyze.cache import SolverCache
from ripl.analyze.diff import Change, DiffReport, diff_policies
from ripl.analyze.findings import KINDS, Finding, at_or_above, report_json
from ripl.analyze.run import Analysis, Progress
from ripl.analyze.sarif import report_sarif
from ripl.analyze.suppress import apply_suppressions

__all__ = [
    "KINDS",
    "Analysis",
    "Change",
    "DiffReport",
    "Finding",
    "Progress",
    "SolverCache",
    "analyze",
    "at_or_above",
    "diff",
    "report_json",
    "report_sarif",
]


def analyze(
    policy: ir.PolicySet,
    *,
    cache: SolverCache | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> list[Finding]:
    """Every finding, sorted by location; suppressed ones carry their reason
    in `Finding.suppressed` and are still returned, so they can be listed.
    Large policy sets are analyzed in up to `workers` processes (default:
    the cores available); the findings do not depend on how many."""
    findings = Analysis(policy, cache=cache, progress=progress, workers=workers).run()
    return apply_suppressions(policy, findings)


def diff(old: ir.PolicySet, new: ir.PolicySet) -> DiffReport:
    """Every class of requests whose decision changed from `old` to `new`."""
    return diff_policies(old, new)
