"""Time the static analyzer on the generated agent workload.

    python -m benchmarks.analyze_bench              # N = 1 000 and 10 000
    python -m benchmarks.analyze_bench --sizes 100,1000

Prints, per N: load time, analysis time, solver calls, the processes the
analysis ran in, findings by code. Targets (issue 4, 2-core machine):
1 000 rules < 5 s, 10 000 rules < 60 s. `RIPL_ANALYZE_WORKERS=1` measures
one process.
"""

from __future__ import annotations

import argparse
import collections
import time

from benchmarks.ripl_peer import ripl_source
from benchmarks.workload import generate_workload


def measure(n: int, seed: int) -> dict[str, object]:
    import ripl
    from ripl.analyze import Analysis
    from ripl.analyze.suppress import apply_suppressions

    text = ripl_source(generate_workload(n, 1, seed=seed))
    started = time.perf_counter()
    policy = ripl.load_policy(text=text, name="bench.ripl")
    loaded = time.perf_counter()
    analysis = Analysis(policy)
    findings = apply_suppressions(policy, analysis.run())
    done = time.perf_counter()
    return {
        "rules": len(policy.rules),
        "load_s": round(loaded - started, 2),
        "analyze_s": round(done - loaded, 2),
        "solver_calls": analysis.checks,
        "processes": analysis.processes,
        "unconfirmed": analysis.unconfirmed,
        "findings": dict(collections.Counter(f.code for f in findings)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    for n in (int(x) for x in args.sizes.split(",")):
        print(n, measure(n, args.seed), flush=True)  # noqa: T201 - a script


if __name__ == "__main__":
    main()
