"""Static analysis of a checked policy set: findings with witnesses, and the
drift between two versions (`ripl diff`).

    findings = analyze(policy)          # list[Finding], suppressions applied
    report = diff(old_policy, new_policy)

Every witness a finding or a diff carries has been run through the
reference engine and shows what the finding claims.
"""

from __future__ import annotations

from ripl import ir
from ripl.analyze.findings import KINDS, Finding, report_json
from ripl.analyze.run import Analysis, Progress, SolverCache
from ripl.analyze.suppress import apply_suppressions

__all__ = [
    "KINDS",
    "Analysis",
    "Finding",
    "Progress",
    "SolverCache",
    "analyze",
    "report_json",
]


def analyze(
    policy: ir.PolicySet,
    *,
    cache: SolverCache | None = None,
    progress: Progress | None = None,
) -> list[Finding]:
    """Every finding, sorted by location; suppressed ones carry their reason
    in `Finding.suppressed` and are still returned, so they can be listed."""
    findings = Analysis(policy, cache=cache, progress=progress).run()
    return apply_suppressions(policy, findings)
