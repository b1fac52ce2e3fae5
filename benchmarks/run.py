"""Run every engine on the generated workload at each rule count, in one process.

For each engine and N: load time (cold, then an unchanged reload), p50/p99 per
decision after warm-up (`time.perf_counter_ns` around each `decide`), batch
throughput, memory (tracemalloc peak and retained during a separate load, plus
the resident-set growth of the timed load, which also sees native heaps), and
a check of every answer against the naive loop's meaning.

Slow engines get a time budget per phase rather than a fixed sample count, so
pycasbin at N = 10 000 is measured on the requests it reaches in that time; the
table says how many samples each cell has.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

import attrs

from benchmarks.check import CheckReport, compare
from benchmarks.peers import (
    SEMANTIC_DIFFERENCES,
    CasbinPeer,
    CedarPeer,
    NaivePeer,
    Outcome,
    Peer,
    PeerUnavailableError,
)
from benchmarks.ripl_peer import RiplPeer
from benchmarks.workload import Workload, generate_workload

PEERS: dict[str, type[Peer]] = {
    "ripl": RiplPeer,
    "cedarpy": CedarPeer,
    "pycasbin": CasbinPeer,
    "naive": NaivePeer,
}


@attrs.frozen
class Settings:
    sizes: tuple[int, ...]
    requests: int
    latency_budget_s: float
    batch_budget_s: float
    max_samples: int
    warmup: int
    seed: int
    engines: tuple[str, ...]


FULL = Settings(
    sizes=(10, 100, 1_000, 10_000),
    requests=2_000,
    latency_budget_s=10.0,
    batch_budget_s=5.0,
    max_samples=20_000,
    warmup=200,
    seed=7,
    engines=tuple(PEERS),
)
QUICK = attrs.evolve(
    FULL,
    sizes=(10, 100, 1_000),
    requests=500,
    latency_budget_s=3.0,
    batch_budget_s=1.5,
    max_samples=5_000,
    warmup=50,
)


@attrs.define
class Cell:
    engine: str
    rules: int
    skipped: str | None = None
    load_ms: float = 0.0
    reload_ms: float = 0.0
    rss_growth_kib: int = 0
    mem_peak_kib: float = 0.0
    mem_retained_kib: float = 0.0
    samples: int = 0
    p50_us: float = 0.0
    p99_us: float = 0.0
    mean_us: float = 0.0
    batch_size: int = 0
    batch_per_s: float = 0.0
    allow_rate: float = 0.0
    checked: int = 0
    mismatches: int = 0
    explained: dict[str, int] = attrs.Factory(dict)
    unexplained: list[int] = attrs.Factory(list)
    batch_disagrees: int = 0
    unstable: int = 0
    """Repeated decisions of one request that differ from its first (a cache
    that serves a stale answer would show here)."""


def _rss_kib() -> int:
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except OSError:
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _percentile(sorted_ns: Sequence[int], q: float) -> float:
    index = min(len(sorted_ns) - 1, int(q * len(sorted_ns)))
    return sorted_ns[index] / 1_000


def measure(
    peer_type: type[Peer],
    workload: Workload,
    reference: Sequence[Outcome],
    settings: Settings,
) -> Cell:
    cell = Cell(engine=peer_type.name, rules=len(workload.rules))
    peer = peer_type()
    try:
        peer.translate(workload)
    except PeerUnavailableError as exc:
        cell.skipped = str(exc)
        return cell

    gc.collect()
    rss_before = _rss_kib()
    start = time.perf_counter_ns()
    peer.load()
    cell.load_ms = (time.perf_counter_ns() - start) / 1e6
    cell.rss_growth_kib = _rss_kib() - rss_before
    start = time.perf_counter_ns()
    peer.load()
    cell.reload_ms = (time.perf_counter_ns() - start) / 1e6

    items = peer.prepare(workload.requests)
    answers = _time_decisions(peer, items, settings, cell)
    rows = _time_batch(peer, items, settings, cell)
    batch_answers, cell.batch_disagrees = _batch_answers(rows, len(items), answers)
    answers = {**batch_answers, **answers}
    cell.allow_rate = sum(answers.values()) / max(1, len(answers))
    _record_check(cell, compare(peer.name, reference, answers))
    _measure_memory(peer_type, workload, cell)
    return cell


def _time_decisions(
    peer: Peer, items: Sequence[Any], settings: Settings, cell: Cell
) -> dict[int, bool]:
    """Warm up, then walk the requests in order, round after round, until the
    sample count or the time budget runs out."""
    warm_deadline = time.perf_counter() + settings.latency_budget_s / 10
    for item in items[: settings.warmup]:
        peer.decide(item)
        if time.perf_counter() > warm_deadline:
            break

    gc.collect()
    answers: dict[int, bool] = {}
    samples: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(settings.latency_budget_s * 1e9)
    decide = peer.decide
    while len(samples) < settings.max_samples and clock() < deadline:
        for index, item in enumerate(items):
            start = clock()
            allowed = decide(item)
            end = clock()
            samples.append(end - start)
            if answers.setdefault(index, allowed) != allowed:
                cell.unstable += 1
            if len(samples) >= settings.max_samples or end > deadline:
                break

    samples.sort()
    cell.samples = len(samples)
    cell.p50_us = _percentile(samples, 0.50)
    cell.p99_us = _percentile(samples, 0.99)
    cell.mean_us = statistics.fmean(samples) / 1_000
    return answers


MAX_BATCH_ROWS = 50_000
"""The longest batch the harness builds, whatever the latency says fits."""


def batch_size(budget_s: float, mean_us: float, requests: int) -> int:
    """Rows of the timed batch: as many as the mean latency says fit in the
    budget, at most `MAX_BATCH_ROWS` (or the requests, when there are more),
    and at least one: a slow engine is timed on the rows it can reach."""
    fit = int(budget_s * 1e6 / max(mean_us, 0.001))
    return max(1, min(fit, max(MAX_BATCH_ROWS, requests)))


def _time_batch(
    peer: Peer, items: Sequence[Any], settings: Settings, cell: Cell
) -> list[bool]:
    """One batch of `batch_size` rows, a log built by cycling through the
    requests (row r is request r mod the request count), the same way for
    every engine; repeated while it stays inside the budget, keeping the
    best run. A peer with `prepare_batch` turns the batch into its own
    input (ripl: columns, as a decision log holds them) before the clock
    starts, so only the batch call is timed. Returns each row's answer."""
    size = batch_size(settings.batch_budget_s, cell.mean_us, len(items))
    batch: Any = [items[row % len(items)] for row in range(size)]
    cell.batch_size = size
    prepare = getattr(peer, "prepare_batch", None)
    if prepare is not None:
        batch = prepare(batch)

    gc.collect()
    best = float("inf")
    spent = 0.0
    answers: list[bool] = []
    while spent < settings.batch_budget_s:
        start = time.perf_counter()
        answers = peer.decide_batch(batch)
        elapsed = time.perf_counter() - start
        best = min(best, elapsed)
        spent += elapsed
        if elapsed * 2 > settings.batch_budget_s:
            break
    cell.batch_per_s = size / best if best > 0 else 0.0
    return answers


def _batch_answers(
    rows: Sequence[bool], requests: int, decided: Mapping[int, bool]
) -> tuple[dict[int, bool], int]:
    """Each request's batch answer (its first row's) and how many rows
    disagree with the request's single decision, or, for a request the
    latency phase never reached, with the request's first row."""
    first: dict[int, bool] = {}
    disagrees = 0
    for row, got in enumerate(rows):
        index = row % requests
        want = decided.get(index, first.setdefault(index, got))
        disagrees += want != got
    return first, disagrees


def _record_check(cell: Cell, report: CheckReport) -> None:
    cell.checked = report.checked
    cell.mismatches = len(report.mismatches)
    cell.explained = report.explained
    cell.unexplained = [m.request for m in report.unexplained]


def _measure_memory(peer_type: type[Peer], workload: Workload, cell: Cell) -> None:
    """A fresh engine loads again under tracemalloc, so the timed load above is
    not slowed by tracing. ripl is told to bypass its compiled-set cache here,
    which the unchanged reload has just filled."""
    peer = peer_type()
    peer.translate(workload)
    peer.bust_cache()
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        peer.load()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    cell.mem_peak_kib = (peak - base) / 1024
    cell.mem_retained_kib = (current - base) / 1024


# ---- reporting --------------------------------------------------------------


def machine() -> dict[str, Any]:
    versions: dict[str, str] = {}
    for dist in ("cedarpy", "casbin", "ripl"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    if versions["ripl"] == "not installed":
        versions["ripl"] = f"source tree at {_git_revision()}"
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "versions": versions,
    }


def _git_revision() -> str:
    """The commit the working tree is on, with `+dirty` for local changes: the
    ripl numbers belong to that state of the engine."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        revision = subprocess.run(
            ["git", "describe", "--always", "--dirty=+dirty"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown revision"
    return revision or "unknown revision"


def render_table(cells: Sequence[Cell]) -> str:
    header = (
        "| N | engine | load ms | reload ms | p50 µs | p99 µs | samples "
        "| batch dec/s | mem peak KiB | retained KiB | RSS +KiB | allow % "
        "| checked | mismatches |"
    )
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for cell in cells:
        if cell.skipped:
            lines.append(f"| {cell.rules} | {cell.engine} | skipped: {cell.skipped} |")
            continue
        lines.append(
            f"| {cell.rules} | {cell.engine} "
            f"| {cell.load_ms:.1f} | {cell.reload_ms:.1f} "
            f"| {cell.p50_us:.1f} | {cell.p99_us:.1f} | {cell.samples} "
            f"| {cell.batch_per_s:,.0f} | {cell.mem_peak_kib:,.0f} "
            f"| {cell.mem_retained_kib:,.0f} | {cell.rss_growth_kib:,} "
            f"| {100 * cell.allow_rate:.1f} | {cell.checked} | {_mismatch_text(cell)} |"
        )
    return "\n".join(lines)


def _mismatch_text(cell: Cell) -> str:
    parts = [f"{count} {name}" for name, count in sorted(cell.explained.items())]
    if cell.unexplained:
        parts.append(f"**{len(cell.unexplained)} unexplained**")
    if cell.batch_disagrees:
        parts.append(f"**{cell.batch_disagrees} batch != decide**")
    if cell.unstable:
        parts.append(f"**{cell.unstable} repeats differ**")
    return f"{cell.mismatches}" + (f" ({', '.join(parts)})" if parts else "")


def render_targets(cells: Sequence[Cell]) -> list[str]:
    """The issue's targets, as ratios measured in this run (only when ripl ran)."""
    by = {(c.engine, c.rules): c for c in cells if not c.skipped}
    sizes = sorted({c.rules for c in cells})
    out: list[str] = []
    for n in sizes:
        ripl = by.get(("ripl", n))
        if ripl is None or ripl.p50_us <= 0:
            continue
        for peer, want in (("cedarpy", 15), ("pycasbin", 100)):
            other = by.get((peer, n))
            if other is not None:
                ratio = other.p50_us / ripl.p50_us
                out.append(_target(f"N={n}: {peer} p50 / ripl p50", ratio, ">=", want))
    ripl_lo, ripl_hi = by.get(("ripl", min(sizes))), by.get(("ripl", max(sizes)))
    naive_lo = by.get(("naive", min(sizes)))
    if ripl_lo and naive_lo and naive_lo.p50_us > 0:
        ratio = ripl_lo.p50_us / naive_lo.p50_us
        out.append(_target(f"N={min(sizes)}: ripl p50 / naive p50", ratio, "<=", 2))
    if ripl_lo and ripl_hi and ripl_lo.p50_us > 0 and ripl_hi is not ripl_lo:
        ratio = ripl_hi.p50_us / ripl_lo.p50_us
        label = f"ripl p50 at N={max(sizes)} / at N={min(sizes)}"
        out.append(_target(label, ratio, "<=", 2))
    if (ripl_1k := by.get(("ripl", 1_000))) is not None:
        label = "N=1000: ripl batch decisions/s"
        out.append(_target(label, ripl_1k.batch_per_s, ">=", 1_000_000))
    if (ripl_10k := by.get(("ripl", 10_000))) is not None:
        out.append(_target("N=10000: ripl load s", ripl_10k.load_ms / 1000, "<", 5))
        out.append(f"- N=10000: ripl unchanged reload {ripl_10k.reload_ms:.2f} ms")
    return out


def _target(label: str, value: float, op: str, want: float) -> str:
    met = value >= want if op == ">=" else value <= want if op == "<=" else value < want
    return (
        f"- {label}: {value:,.2f} (target {op} {want:,}) {'met' if met else 'MISSED'}"
    )


def run(settings: Settings, log: Any = sys.stderr) -> list[Cell]:
    cells: list[Cell] = []
    for n in settings.sizes:
        workload = generate_workload(n, settings.requests, seed=settings.seed)
        naive = NaivePeer()
        naive.translate(workload)
        naive.load()
        reference = [naive.evaluate(request) for request in workload.requests]
        for name in settings.engines:
            started = time.perf_counter()
            cell = measure(PEERS[name], workload, reference, settings)
            cells.append(cell)
            took = time.perf_counter() - started
            status = cell.skipped or f"p50 {cell.p50_us:.1f} µs"
            print(f"N={n} {name}: {status} ({took:.1f} s)", file=log, flush=True)
    return cells


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="ripl against cedarpy, pycasbin and a naive loop",
    )
    parser.add_argument(
        "--quick", action="store_true", help="N up to 1000, fewer requests"
    )
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument(
        "--engines", help=f"comma-separated subset of {','.join(PEERS)} (default: all)"
    )
    parser.add_argument("--sizes", help="comma-separated rule counts, e.g. 10,1000")
    parser.add_argument("--requests", type=int, help="requests per workload")
    parser.add_argument("--seed", type=int, help="workload seed (default 7)")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    settings = QUICK if args.quick else FULL
    if args.engines:
        engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
        unknown = [e for e in engines if e not in PEERS]
        if unknown:
            raise SystemExit(f"unknown engine(s): {', '.join(unknown)}")
        settings = attrs.evolve(settings, engines=engines)
    if args.sizes:
        sizes = tuple(int(s) for s in args.sizes.split(","))
        settings = attrs.evolve(settings, sizes=sizes)
    if args.requests:
        settings = attrs.evolve(settings, requests=args.requests)
    if args.seed is not None:
        settings = attrs.evolve(settings, seed=args.seed)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    started = time.perf_counter()
    cells = run(settings)
    elapsed = time.perf_counter() - started

    info = machine()
    print(f"machine: {info['platform']}, {info['cpus']} CPUs, Python {info['python']}")
    print(f"versions: {info['versions']}; run took {elapsed:.0f} s\n")
    print(render_table(cells))
    targets = render_targets(cells)
    if targets:
        print("\ntargets:")
        print("\n".join(targets))
    if args.json:
        document = {
            "machine": info,
            "settings": attrs.asdict(settings),
            "elapsed_s": elapsed,
            "results": [attrs.asdict(cell) for cell in cells],
            "targets": targets,
            "semantic_differences": dict(SEMANTIC_DIFFERENCES),
        }
        with open(args.json, "w") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
    unexplained = any(
        cell.unexplained or cell.batch_disagrees or cell.unstable for cell in cells
    )
    return 1 if unexplained else 0
