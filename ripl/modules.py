"""Policy paths → parsed modules, with their imports resolved.

A policy set is the files it is given (a folder means every `.ripl` file
under it) plus every module they import, transitively: `std.*` from the
shipped standard library, anything else from the policy folder. A missing
module, an import cycle, an unreadable file or an empty folder is an error;
nothing is ever silently left out of a policy set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from ripl import ast
from ripl.errors import CheckError, Diagnostic, ParseError, SourceError
from ripl.parse import data_dir, decode_source, parse_source
from ripl.source import Span

log = logging.getLogger(__name__)

STDLIB_PREFIX = "std"


@attrs.frozen
class LoadedModule:
    name: str
    file: str
    text: str
    root: Path | None  # where its own imports are looked up
    syntax: ast.Module
    explicit: bool  # given by the user, not only imported


def _file_span(file: str) -> Span:
    return Span(file, 0, 0, 1, 1, 1, 1)


def _io_error(file: str, message: str, hint: str | None = None) -> CheckError:
    return CheckError([Diagnostic("io", message, _file_span(file), hint=hint)])


def display_path(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("..") else str(path)


def read_policy_file(path: Path, file: str) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _io_error(file, "policy file not found", "check the path") from None
    except IsADirectoryError:
        raise _io_error(file, "expected a file, found a folder") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise _io_error(file, f"cannot read policy file: {reason.lower()}") from None
    return decode_source(data, file)


def _collect(paths: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(file, root folder) for every policy file named or found under a folder."""
    found: list[tuple[Path, Path]] = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.ripl"))
            if not files:
                raise _io_error(
                    display_path(path),
                    "no policy files found",
                    "a policy folder must hold at least one `.ripl` file",
                )
            found.extend((f, path) for f in files)
        elif path.exists() or path.is_symlink():
            found.append((path, path.parent))
        else:
            raise _io_error(display_path(path), "policy path not found")
    return found


def _module_span(module: LoadedModule) -> Span:
    for item in module.syntax.items:
        if isinstance(item, ast.ModuleDecl):
            return item.name.span
    return _file_span(module.file)


def _module_name(file: Path, root: Path, syntax: ast.Module) -> str:
    for item in syntax.items:
        if isinstance(item, ast.ModuleDecl):
            return item.name.text
    rel = file.relative_to(root) if file.is_relative_to(root) else Path(file.name)
    return ".".join(rel.with_suffix("").parts)


def _parse_file(
    path: Path, root: Path | None, file: str, explicit: bool
) -> LoadedModule:
    text = read_policy_file(path, file)
    syntax = parse_source(text, file)
    name = _module_name(path, root or path.parent, syntax)
    return LoadedModule(name, file, text, root, syntax, explicit)


def stdlib_file(module: str) -> Path:
    return data_dir("stdlib").joinpath(*module.split(".")).with_suffix(".ripl")


def load_modules(
    paths: Sequence[Path] = (), texts: Iterable[tuple[str, str]] = ()
) -> list[LoadedModule]:
    """Read, parse and resolve imports. Collects every error before raising."""
    errors: list[SourceError] = []
    modules: dict[str, LoadedModule] = {}

    def add(module: LoadedModule) -> None:
        reserved = module.name.split(".")[0] == STDLIB_PREFIX
        if reserved and module.explicit:
            # A policy folder must not be able to replace what `std.*` means.
            errors.append(
                CheckError(
                    [
                        Diagnostic(
                            "module-name",
                            f"module name `{module.name}` is reserved for the "
                            "standard library",
                            _module_span(module),
                            hint="give the module a name outside `std`",
                        )
                    ],
                    {module.file: module.text},
                )
            )
            return
        if module.name in modules:
            other = modules[module.name]
            errors.append(
                CheckError(
                    [
                        Diagnostic(
                            "duplicate-module",
                            f"module `{module.name}` is defined twice",
                            _file_span(module.file),
                            notes=(("first defined here", _file_span(other.file)),),
                        )
                    ]
                )
            )
        else:
            modules[module.name] = module

    try:
        collected = _collect(paths)
    except CheckError as exc:
        raise exc
    for path, root in collected:
        try:
            add(_parse_file(path, root, display_path(path), True))
        except SourceError as exc:
            errors.append(exc)
    for file, text in texts:
        try:
            syntax = parse_source(text, file)
            name = _module_name(Path(file), Path("."), syntax)
            add(LoadedModule(name, file, text, None, syntax, True))
        except SourceError as exc:
            errors.append(exc)

    pending = list(modules.values())
    while pending:
        module = pending.pop()
        for item in module.syntax.items:
            if not isinstance(item, ast.Import) or item.module.text in modules:
                continue
            try:
                found = _find_import(item, module)
            except SourceError as exc:
                errors.append(exc)
                continue
            add(found)
            pending.append(found)

    if not errors:
        _check_cycles(modules)
    if errors:
        raise _merge(errors)
    log.debug("loaded %d modules", len(modules))
    return sorted(modules.values(), key=lambda m: m.name)


def _find_import(item: ast.Import, importer: LoadedModule) -> LoadedModule:
    name = item.module.text
    if item.module.parts[0] == STDLIB_PREFIX:
        candidates: list[tuple[Path, Path | None, str]] = [
            (stdlib_file(name), None, f"<stdlib>/{name.replace('.', '/')}.ripl")
        ]
    else:
        folder = importer.root or Path(".")
        path = folder.joinpath(*item.module.parts).with_suffix(".ripl")
        candidates = [(path, folder, display_path(path))]
    for path, root, file in candidates:
        if path.is_file():
            module = _parse_file(path, root, file, False)
            if module.name != name:
                raise CheckError(
                    [
                        Diagnostic(
                            "module-name",
                            f"`{file}` declares module `{module.name}`, not `{name}`",
                            item.module.span,
                        )
                    ]
                )
            return module
    where = (
        "the standard library"
        if item.module.parts[0] == STDLIB_PREFIX
        else (f"`{candidates[0][2]}`")
    )
    raise CheckError(
        [
            Diagnostic(
                "unknown-module",
                f"module `{name}` not found",
                item.module.span,
                hint=f"looked in {where}",
            )
        ],
        {importer.file: importer.text},
    )


def _check_cycles(modules: dict[str, LoadedModule]) -> None:
    graph = {
        name: [(i.module.text, i) for i in m.syntax.items if isinstance(i, ast.Import)]
        for name, m in modules.items()
    }
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        # Iterative DFS keeping the path, so the cycle can be named.
        path: list[str] = [start]
        iters = [iter(graph[start])]
        state[start] = 1
        while iters:
            step = next(iters[-1], None)
            if step is None:
                state[path.pop()] = 2
                iters.pop()
                continue
            target, item = step
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                raise CheckError(
                    [
                        Diagnostic(
                            "import-cycle",
                            "import cycle: " + " → ".join(cycle),
                            item.span,
                            hint="move the shared declarations into a module "
                            "that both import",
                        )
                    ],
                    {m.file: m.text for m in modules.values()},
                )
            if not state.get(target):
                state[target] = 1
                path.append(target)
                iters.append(iter(graph[target]))


def _merge(errors: list[SourceError]) -> SourceError:
    diagnostics = [d for e in errors for d in e.diagnostics]
    sources: dict[str, str] = {}
    for e in errors:
        sources.update(e.sources)
    if all(isinstance(e, ParseError) for e in errors):
        return ParseError(diagnostics, sources)
    return CheckError(diagnostics, sources)
