"""What `ripl check` and `ripl diff` print, and with which exit code.

Returns text for the CLI to write (only `cli.py` writes to the terminal).
Exit codes: 0 clean, 1 findings at or above the fail level (for `diff`:
something became more permissive), 2 an input could not be read, parsed or
checked. With `--format sarif` a SARIF log is written even then, carrying
the input errors as tool-execution notifications.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from ripl import ir
from ripl.analyze.diff import diff_policies
from ripl.analyze.findings import (
    SEVERITY_RANK,
    Finding,
    at_or_above,
    json_ready,
    report_json,
)
from ripl.analyze.run import Analysis, Progress
from ripl.analyze.sarif import report_sarif
from ripl.analyze.suppress import apply_suppressions
from ripl.engine import load_policy
from ripl.errors import Diagnostic, SourceError

EXIT_OK, EXIT_FINDINGS, EXIT_INPUT = 0, 1, 2


@attrs.frozen
class Output:
    stdout: str
    stderr: str
    exit_code: int


def _load(paths: Sequence[Path]) -> tuple[ir.PolicySet | None, SourceError | None]:
    try:
        return load_policy(*paths), None
    except SourceError as exc:
        return None, exc


def render_text(
    findings: Sequence[Finding],
    sources: Mapping[str, str],
    rules: int,
    *,
    show_info: bool = True,
) -> str:
    """Info findings (a deny that overrides an allow, a redundant rule) are
    facts about a policy rather than problems; they are counted, and shown
    when asked for."""
    active = [f for f in findings if f.suppressed is None]
    shown = [f for f in active if show_info or f.severity != "info"]
    blocks: list[str] = []
    for finding in shown:
        block = finding.diagnostic().render(sources)
        if finding.witness is not None:
            witness = json.dumps(
                json_ready(finding.witness), sort_keys=True, separators=(",", ":")
            )
            block += f"\n   = witness: {witness}"
        blocks.append(block)
    suppressed = [f for f in findings if f.suppressed is not None]
    if suppressed:
        lines = ["suppressed:"]
        for f in suppressed:
            lines.append(
                f"  {f.rule.span.location()}: {f.code} on rule `{f.rule.id}`: "
                f"{f.suppressed}"
            )
        blocks.append("\n".join(lines))
    counts = {s: sum(f.severity == s for f in active) for s in SEVERITY_RANK}
    if active:
        parts = [f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items() if n]
        summary = f"{len(active)} finding{'s' if len(active) != 1 else ''} (" + (
            ", ".join(parts) + f") in {rules} rules"
        )
    else:
        summary = f"ok: {rules} rules; no findings"
    if suppressed:
        summary += f"; {len(suppressed)} suppressed"
    if len(shown) < len(active):
        summary += " (info findings not shown; --show-info lists them)"
    blocks.append(summary)
    return "\n\n".join(blocks)


def check_output(
    paths: Sequence[Path],
    *,
    fmt: str = "text",
    fail_on: str = "error",
    progress: Progress | None = None,
    show_info: bool = True,
) -> Output:
    policy, error = _load(paths)
    files = [str(p) for p in paths]
    if policy is None:
        assert error is not None
        diagnostics = list(error.diagnostics)
        if fmt == "sarif":
            return Output(_dump(report_sarif([], errors=diagnostics)), "", EXIT_INPUT)
        if fmt == "json":
            data = report_json([], files=files, errors=diagnostics)
            return Output(_dump(data), "", EXIT_INPUT)
        text = error.render()
        count = len(diagnostics)
        return Output("", f"{text}\n\n{count} error{'s' * (count != 1)}", EXIT_INPUT)
    findings = apply_suppressions(policy, Analysis(policy, progress=progress).run())
    failing = at_or_above(findings, fail_on)
    code = EXIT_FINDINGS if failing else EXIT_OK
    if fmt == "sarif":
        return Output(_dump(report_sarif(findings)), "", code)
    if fmt == "json":
        data = report_json(findings, files=sorted(policy.sources))
        return Output(_dump(data), "", code)
    text = render_text(findings, policy.sources, len(policy.rules), show_info=show_info)
    return Output(text, "", code)


def diff_output(
    old: Sequence[Path], new: Sequence[Path], *, fmt: str = "text"
) -> Output:
    errors: list[Diagnostic] = []
    texts: list[str] = []
    policies: list[ir.PolicySet] = []
    for paths in (old, new):
        policy, error = _load(paths)
        if policy is None:
            assert error is not None
            errors.extend(error.diagnostics)
            texts.append(error.render())
        else:
            policies.append(policy)
    if errors:
        if fmt == "json":
            data = {"version": 1, "errors": [d.to_json() for d in errors]}
            return Output(_dump(data), "", EXIT_INPUT)
        return Output("", "\n\n".join(texts), EXIT_INPUT)
    report = diff_policies(policies[0], policies[1])
    code = EXIT_FINDINGS if report.more_permissive else EXIT_OK
    if fmt == "json":
        return Output(_dump(report.to_json()), "", code)
    return Output(report.render(), "", code)


def _dump(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=False)
