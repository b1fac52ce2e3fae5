"""The `ripl` command. The only module that writes to the terminal.

Exit codes: 0 clean (or a decision was made, whatever its effect); 1 findings
at or above the fail level, failed tests, or a more permissive diff; 2 a
usage or input error: a policy that does not parse or type-check, a
malformed request, a bad argument. Never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from ripl import ir
from ripl.decision import Decision, dumps, obligations_json
from ripl.engine import Engine, load_policy
from ripl.errors import Diagnostic, SourceError
from ripl.request import BadRequest, JsonError, load_json
from ripl.source import render_snippet, span_at

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FINDINGS, EXIT_INPUT = 0, 1, 2


class _Group(click.Group):
    """Turns click's own usage errors into exit 2 with a hint, and any
    unexpected exception into a message instead of a traceback."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("standalone_mode", True)
        try:
            return super().main(*args, **kwargs)
        except SystemExit:
            raise
        except Exception as exc:  # last resort: never show a traceback
            log.debug("unexpected error", exc_info=True)
            click.echo(f"error: internal error: {type(exc).__name__}: {exc}", err=True)
            click.echo(
                "   = hint: run with --verbose for details, and report it", err=True
            )
            sys.exit(EXIT_INPUT)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Log engine steps to stderr.")
@click.version_option(package_name="ripl", prog_name="ripl")
def main(verbose: bool) -> None:
    """ripl decides whether an AI agent's action may happen now."""
    if verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")


def fail(message: str, hint: str | None = None) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"   = hint: {hint}", err=True)
    sys.exit(EXIT_INPUT)


def format_option(*choices: str) -> Callable[[F], F]:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(choices),
        default=choices[0],
        show_default=True,
        help="Output format.",
    )


paths_argument = click.argument(
    "paths", nargs=-1, required=True, type=click.Path(path_type=Path)
)


def load_or_exit(paths: Sequence[Path], fmt: str = "text") -> ir.PolicySet:
    """Load a policy set; on errors print every diagnostic and exit 2."""
    try:
        return load_policy(*paths)
    except SourceError as exc:
        report_diagnostics(exc.diagnostics, exc.sources, fmt)
        sys.exit(EXIT_INPUT)


def report_diagnostics(
    diagnostics: Sequence[Diagnostic], sources: Mapping[str, str], fmt: str
) -> None:
    if fmt == "json":
        click.echo(
            json.dumps(
                {"ok": False, "diagnostics": [d.to_json() for d in diagnostics]},
                indent=2,
            )
        )
        return
    for d in diagnostics:
        click.echo(d.render(sources), err=True)
        click.echo("", err=True)
    errors = sum(d.severity == "error" for d in diagnostics)
    click.echo(f"{errors} error{'s' if errors != 1 else ''}", err=True)


# ---- check -------------------------------------------------------------------


@main.command()
@paths_argument
@format_option("text", "json", "sarif")
@click.option(
    "--fail-on",
    type=click.Choice(["error", "warning", "info"]),
    default="error",
    show_default=True,
    help="Exit 1 when a finding at or above this severity is reported.",
)
@click.option(
    "--show-info",
    is_flag=True,
    help="Also print info findings (conflicts, redundancy) in text output.",
)
def check(paths: tuple[Path, ...], fmt: str, fail_on: str, show_info: bool) -> None:
    """Parse, type-check and analyze a policy set (see docs/analyzer.md)."""
    from ripl.analyze.report import check_output

    show = show_info or fail_on == "info"
    with analysis_progress() as progress:
        out = check_output(
            paths, fmt=fmt, fail_on=fail_on, progress=progress, show_info=show
        )
    emit(out)


@main.command("diff")
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@format_option("text", "json")
def diff_command(old: Path, new: Path, fmt: str) -> None:
    """Show which requests a new policy version decides differently; exit 1
    when any became more permissive."""
    from ripl.analyze.report import diff_output

    emit(diff_output([old], [new], fmt=fmt))


def emit(out: Any) -> None:
    if out.stdout:
        click.echo(out.stdout)
    if out.stderr:
        click.echo(out.stderr, err=True)
    sys.exit(out.exit_code)


class analysis_progress:  # noqa: N801 - used as a context manager
    """A progress bar on an interactive terminal; nothing in CI or a pipe."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __enter__(self) -> Callable[[int, int], None] | None:
        import os

        if not sys.stderr.isatty() or os.environ.get("CI"):
            return None
        return self.update

    def update(self, done: int, total: int) -> None:
        if total < 200:
            return
        if self.bar is None:
            self.bar = click.progressbar(
                length=total, label="analyzing", file=sys.stderr
            )
            self.bar.__enter__()
        self.bar.update(done - self.bar.pos)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


# ---- eval --------------------------------------------------------------------


def read_request(source: str) -> tuple[Any, str, str]:
    """The request data, its text and a display name; exits 2 when unreadable."""
    name = "<stdin>" if source == "-" else source
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except FileNotFoundError:
        fail(f"request file `{source}` not found")
    except IsADirectoryError:
        fail(f"request file `{source}` is a folder")
    except OSError as exc:
        fail(f"cannot read request file `{source}`: {exc.strerror}")
    if raw.startswith(b"\xef\xbb\xbf"):  # a byte-order mark some editors write
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = raw[: exc.start].decode("utf-8", errors="replace")
        request_error(
            name, good + "?", len(good), "request is not UTF-8 text", "save it as UTF-8"
        )
    try:
        data = load_json(text)
    except JsonError as exc:
        request_error(
            name,
            text,
            exc.pos,
            f"invalid JSON: {exc.message}",
            "check for a missing `}`, `]`, `,` or quote"
            if "expecting" in exc.message
            else None,
        )
    if not isinstance(data, dict):
        request_error(
            name,
            text,
            0,
            "a request must be a JSON object",
            'write `{"principal": …, "action": …, "resource": …}`',
        )
    return data, text, name


def _token_length(text: str, offset: int) -> int:
    """The length of the JSON token at offset: a whole string, a number or
    word, else one character."""
    if offset >= len(text):
        return 1
    if text[offset] == '"':
        end = offset + 1
        while end < len(text) and text[end] not in '"\n':
            end += 2 if text[end] == "\\" else 1
        return min(end, len(text) - 1) - offset + 1
    end = offset
    while end < len(text) and text[end] not in ",:}] \t\r\n{[":
        end += 1
    return max(1, end - offset)


def request_error(
    name: str, text: str, offset: int, message: str, hint: str | None
) -> NoReturn:
    span = span_at(name, text, offset, _token_length(text, offset))
    lines = [
        f"{span.location()}: error[request]: {message}",
        *render_snippet(span, text),
    ]
    if hint:
        lines.append(f"   = hint: {hint}")
    click.echo("\n".join(lines), err=True)
    sys.exit(EXIT_INPUT)


def locate(text: str, path: Sequence[str | int]) -> int:
    """Offset of the value at a JSON path in text (best effort: the deepest
    part of the path that is found)."""
    try:
        return _Locator(text).find(tuple(path))
    except (IndexError, ValueError):
        return 0


class _Locator:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.best = 0

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def find(self, path: tuple[str | int, ...]) -> int:
        self.skip()
        self.value(path)
        return self.best

    def string(self) -> str:
        end = self.pos + 1
        while self.text[end] != '"':
            end += 2 if self.text[end] == "\\" else 1
        raw = self.text[self.pos : end + 1]
        self.pos = end + 1
        return str(json.loads(raw))

    def value(self, path: tuple[str | int, ...]) -> None:
        """Scan one value; record where the path leads while inside it."""
        self.skip()
        if not path:
            self.best = self.pos
        char = self.text[self.pos]
        if char == "{":
            self.pos += 1
            while True:
                self.skip()
                if self.text[self.pos] == "}":
                    self.pos += 1
                    return
                key_at = self.pos
                key = self.string()
                self.skip()
                self.pos += 1  # the colon
                inside = bool(path) and path[0] == key
                if inside:
                    self.best = key_at
                self.value(path[1:] if inside else (None,))  # type: ignore[arg-type]
                self.skip()
                if self.text[self.pos] == ",":
                    self.pos += 1
        elif char == "[":
            self.pos += 1
            index = 0
            while True:
                self.skip()
                if self.text[self.pos] == "]":
                    self.pos += 1
                    return
                inside = bool(path) and path[0] == index
                self.value(path[1:] if inside else (None,))  # type: ignore[arg-type]
                index += 1
                self.skip()
                if self.text[self.pos] == ",":
                    self.pos += 1
        elif char == '"':
            self.string()
        else:
            while self.pos < len(self.text) and self.text[self.pos] not in ",}] \t\r\n":
                self.pos += 1


def explain(decision: Decision) -> str:
    lines = [f"effect: {decision.effect}"]
    if decision.rules:
        lines.append("rules:")
        lines.extend(f"  - {r.id} ({r.file}:{r.line}:{r.col})" for r in decision.rules)
    lines.append("reasons:")
    lines.extend(f"  - {r}" for r in decision.reasons)
    if decision.obligations:
        lines.append("obligations:")
        for key, value in obligations_json(decision.obligations).items():
            lines.append(f"  - {key}: {dumps(value)}")
    if decision.requirements:
        lines.append("requirements: " + ", ".join(decision.requirements))
    if decision.errors:
        lines.append("errors:")
        lines.extend(f"  - {e}" for e in decision.errors)
    lines.append(f"policy: {decision.policy_hash}")
    lines.append(f"evaluated at: {decision.to_json()['evaluated_at']}")
    return "\n".join(lines)


@main.command("eval")
@click.argument("path", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--request",
    "-r",
    "request_file",
    required=True,
    help="Request JSON file, or - for stdin.",
)
@format_option("text", "json")
def eval_command(path: tuple[Path, ...], request_file: str, fmt: str) -> None:
    """Decide one request and explain the decision."""
    policy = load_or_exit(path)
    engine = Engine(policy)
    data, text, name = read_request(request_file)
    try:
        engine.check_request(data)
    except BadRequest as exc:
        request_error(name, text, locate(text, exc.path), exc.message, exc.hint)
    decision = engine.decide(data)
    if fmt == "json":
        click.echo(decision.to_json_text(indent=2))
    else:
        click.echo(explain(decision))


# ---- test ----------------------------------------------------------------------


@main.command("test")
@paths_argument
@click.option("--verbose-pass", is_flag=True, help="Also list the tests that pass.")
def test_command(paths: tuple[Path, ...], verbose_pass: bool) -> None:
    """Run the inline tests of a policy set."""
    from ripl.testing import run_tests

    policy = load_or_exit(paths)
    results = run_tests(Engine(policy))
    failed = [r for r in results if not r.passed]
    for result in results:
        where = f"{result.test.span.file}:{result.test.span.line}"
        if result.passed:
            if verbose_pass:
                click.echo(f"PASS {where} {result.test.name}")
            continue
        click.echo(f"FAIL {where} {result.test.name}")
        for problem in result.problems:
            click.echo(f"     {problem}")
    click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if not results:
        click.echo("warning: the policy set has no inline tests", err=True)
    sys.exit(EXIT_FINDINGS if failed else EXIT_OK)


# ---- fmt -------------------------------------------------------------------------


@main.command("fmt")
@paths_argument
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Change nothing; exit 1 if a file is not formatted.",
)
def fmt_command(paths: tuple[Path, ...], check_only: bool) -> None:
    """Format policy files in place (atomically), or check that they are."""
    from ripl.fmt import (
        FormatError,
        format_source,
        is_formatted,
        policy_files,
        write_atomic,
    )
    from ripl.modules import display_path, read_policy_file

    changed, failed = [], False
    files = list(policy_files(paths))
    if not files:
        fail("no policy files found", "give `.ripl` files or folders holding them")
    for path in files:
        name = display_path(path)
        try:
            text = read_policy_file(path, name)
            formatted = format_source(text, name)
        except SourceError as exc:
            report_diagnostics(exc.diagnostics, exc.sources, "text")
            failed = True
            continue
        except FormatError as exc:
            click.echo(f"error: {exc}", err=True)
            failed = True
            continue
        if is_formatted(text, formatted):
            continue
        changed.append(name)
        if check_only:
            click.echo(f"would reformat {name}")
        else:
            write_atomic(path, formatted)
            click.echo(f"reformatted {name}")
    if failed:
        sys.exit(EXIT_INPUT)
    if check_only and changed:
        sys.exit(EXIT_FINDINGS)
    if not changed:
        click.echo(
            f"{len(files)} file{'s' if len(files) != 1 else ''} already formatted"
        )


@main.command("compile")
@paths_argument
@format_option("text", "json")
def compile_command(paths: tuple[Path, ...], fmt: str) -> None:
    """Show the decision tree: buckets by (action, principal type, resource
    type), the tests their rules share, and the leaves with rule ids."""
    from ripl.compile import compile_policy, describe_tree, render_tree

    policy = load_or_exit(paths, fmt)
    tree = describe_tree(compile_policy(policy))
    if fmt == "json":
        click.echo(json.dumps(tree, indent=2))
    else:
        click.echo(render_tree(tree))


# ---- audit ---------------------------------------------------------------------


@main.group("audit")
def audit_group() -> None:
    """Verify and read a decision audit log."""


def open_audit_or_exit(db: Path) -> Any:
    """Open an existing audit log; exit 2 when it is missing or is not one.

    The file is first looked at read-only, so a path that names some other
    SQLite file is reported, not turned into an empty audit log."""
    import sqlite3

    from ripl.runtime.audit import AuditLog

    if not db.is_file():
        fail(f"audit log `{db}` not found", "check the path")
    try:
        probe = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            found = probe.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table'"
                " AND name = 'audit_records'"
            ).fetchone()
        finally:
            probe.close()
    except sqlite3.Error as exc:
        fail(f"cannot read audit log `{db}`: {exc}")
    if found is None:
        fail(f"`{db}` is not a ripl audit log")
    try:
        return AuditLog(db)
    except sqlite3.Error as exc:
        fail(f"cannot open audit log `{db}`: {exc}")


@audit_group.command("verify")
@click.argument("db", type=click.Path(path_type=Path))
@click.option(
    "--public-key",
    "public_key_file",
    type=click.Path(path_type=Path),
    help="PEM Ed25519 public key: also check the signed checkpoints, which "
    "detect a log cut short.",
)
def audit_verify(db: Path, public_key_file: Path | None) -> None:
    """Check the hash chain; exit 1 naming the first bad record."""
    import sqlite3

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    public_key = None
    if public_key_file is not None:
        try:
            loaded = load_pem_public_key(public_key_file.read_bytes())
        except (OSError, ValueError) as exc:
            fail(f"cannot read public key `{public_key_file}`: {exc}")
        if not isinstance(loaded, Ed25519PublicKey):
            fail(f"`{public_key_file}` is not an Ed25519 public key")
        public_key = loaded
    log_file = open_audit_or_exit(db)
    try:
        result = log_file.verify(public_key=public_key)
    except sqlite3.Error as exc:
        fail(f"cannot read audit log `{db}`: {exc}")
    finally:
        log_file.close()
    if result.ok:
        click.echo(f"ok: {result.records} records, head {result.head_hash}")
        return
    click.echo(
        f"error: audit log `{db}` fails verification at record {result.first_bad}",
        err=True,
    )
    for _, problem in result.problems:
        click.echo(f"  - {problem}", err=True)
    sys.exit(EXIT_FINDINGS)


def parse_time_option(value: str | None, name: str) -> Any:
    from ripl.runtime.encoding import parse_time

    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        fail(f"`{name}` is not an RFC 3339 time", "e.g. 2026-12-04T09:00:00Z")


@audit_group.command("show")
@click.argument("db", type=click.Path(path_type=Path))
@click.option("--user", help="Root human id (the chain's first grantor).")
@click.option("--agent", help="Principal id.")
@click.option("--effect", type=click.Choice(["allow", "restrict", "step_up", "deny"]))
@click.option("--rule", help="A rule id among those that decided.")
@click.option("--tag", help="Record tag, e.g. guard, shadow, reload.")
@click.option("--since", help="RFC 3339 time, inclusive.")
@click.option("--until", help="RFC 3339 time, exclusive.")
@format_option("text", "json")
def audit_show(
    db: Path,
    user: str | None,
    agent: str | None,
    effect: str | None,
    rule: str | None,
    tag: str | None,
    since: str | None,
    until: str | None,
    fmt: str,
) -> None:
    """Print matching records, one per line, every value escaped."""
    import sqlite3

    from ripl.runtime.audit import render_record
    from ripl.runtime.encoding import canonical_json
    from ripl.runtime.errors import AuditError

    start = parse_time_option(since, "--since")
    end = parse_time_option(until, "--until")
    log_file = open_audit_or_exit(db)
    try:
        records = log_file.query(
            user=user,
            agent=agent,
            effect=effect,
            rule=rule,
            tag=tag,
            since=start,
            until=end,
        )
    except (AuditError, sqlite3.Error, TypeError, ValueError) as exc:
        fail(f"cannot read audit log `{db}`: {exc}", "run `ripl audit verify`")
    finally:
        log_file.close()
    damaged = 0
    for record in records:
        try:
            line = (
                canonical_json(audit_json(record))
                if fmt == "json"
                else render_record(record)
            )
        except (AuditError, TypeError, ValueError):
            # An edited column that cannot even be shown: say so and go on.
            damaged += 1
            click.echo(f"error: record {record.seq} cannot be shown", err=True)
            continue
        click.echo(line)
    if damaged:
        click.echo("   = hint: run `ripl audit verify`", err=True)
        sys.exit(EXIT_FINDINGS)


def audit_json(record: Any) -> dict[str, Any]:
    """One record as JSON data; `canonical_json` escapes every non-ASCII and
    control character, so each record stays on its own line."""
    return {
        "seq": record.seq,
        "time": record.time,
        "tag": record.tag,
        "effect": record.effect,
        "principal": record.principal.as_dict() if record.principal else None,
        "root": record.root.as_dict() if record.root else None,
        "organisation": record.organisation,
        "workflow": record.workflow,
        "delegation_ids": list(record.delegation_ids),
        "rules": list(record.rules),
        "policy_hash": record.policy_hash,
        "request_digest": record.request_digest,
        "decision": record.decision,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


# ---- bench -------------------------------------------------------------------------


@main.command(
    "bench",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.pass_context
def bench_command(ctx: click.Context) -> None:
    """Run the benchmarks against cedarpy, pycasbin and a naive loop (from a
    source checkout; takes the options of `python -m benchmarks`, e.g.
    `--quick`, `--json PATH`)."""
    import importlib

    try:
        run = importlib.import_module("benchmarks.run")
    except ImportError:
        fail(
            "the benchmark harness is not installed",
            "run `ripl bench` from a source checkout of ripl, with "
            "`pip install '.[bench]'` for the peers",
        )
    sys.exit(run.main(list(ctx.args)))
