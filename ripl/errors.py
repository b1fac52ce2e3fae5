"""One exception hierarchy for everything ripl raises.

`str(err)` is the one-line message; `err.render(text)` is the block a policy
author sees, with the location, the source line, carets and a hint.
Decision calls never raise these: they fail closed into a `Decision`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from ripl.source import Span, render_snippet


@attrs.frozen
class Diagnostic:
    """A problem in a policy set or an input, found by a stage that goes on."""

    code: str
    message: str
    span: Span
    severity: str = "error"
    hint: str | None = None
    notes: tuple[tuple[str, Span], ...] = ()

    def render(self, sources: Mapping[str, str] | None = None) -> str:
        text = sources.get(self.span.file) if sources else None
        head = f"{self.span.location()}: {self.severity}[{self.code}]: {self.message}"
        out = [head, *render_snippet(self.span, text)]
        for note, where in self.notes:
            out.append(f"   = note: {note} ({where.location()})")
        if self.hint:
            out.append(f"   = hint: {self.hint}")
        return "\n".join(out)

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            **self.span.to_json(),
        }
        if self.hint:
            data["hint"] = self.hint
        if self.notes:
            data["notes"] = [{"message": m, **s.to_json()} for m, s in self.notes]
        return data


class RiplError(Exception):
    """Root of every error ripl raises."""


class SourceError(RiplError):
    """An error with one or more diagnostics that point into source text."""

    def __init__(
        self,
        diagnostics: Sequence[Diagnostic],
        sources: Mapping[str, str] | None = None,
    ) -> None:
        if not diagnostics:
            raise ValueError("a SourceError needs at least one diagnostic")
        self.diagnostics = tuple(diagnostics)
        self.sources = dict(sources or {})
        first = self.diagnostics[0]
        super().__init__(f"{first.span.location()}: {first.message}")

    @property
    def span(self) -> Span:
        return self.diagnostics[0].span

    def render(self, sources: Mapping[str, str] | None = None) -> str:
        known = {**self.sources, **(sources or {})}
        return "\n\n".join(d.render(known) for d in self.diagnostics)


class ParseError(SourceError, ValueError):
    """Policy text that is not ripl (lexing, syntax, literals, nesting)."""


class CheckError(SourceError, ValueError):
    """Policy text that parses but is wrong: names, types, schema, modules."""


class CompileError(SourceError, ValueError):
    """A checked policy set the compiler cannot turn into a decision tree."""


class RequestError(SourceError, ValueError):
    """A request (JSON) that is malformed or does not fit the schema."""


class EvaluationError(RiplError, ValueError):
    """A request that cannot be evaluated; decision calls turn it into deny."""


class UsageError(RiplError, ValueError):
    """A wrong command-line argument."""
