"""Print the mutation score per module from `mutmut results --all true` (run after `mutmut run`).

Killed (a test failed) and timeout (the mutant looped) count as caught; missed are those that survived
(or crashed the test run: "suspicious") and "no tests" (no selected test reaches the mutated function); "not checked" (the run was stopped before it)
is left out of the score and shown. The mutants not caught are listed by name, for `mutmut show <name>`, and so
are the timeouts: a survivor slowed past the time limit by a loaded machine would count as caught, so each is
there to be looked at.

A mutant that cannot change behaviour (an equivalent mutant) is listed with its reason in
`.ci/equivalent_mutants.txt`; when it survives it is counted apart and left out of the score. A listed
name that is caught or no longer exists is printed as stale, so the list cannot hide a mutant that matters.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

CAUGHT = {"killed", "timeout", "caught by type check"}
_LINE = re.compile(r"^\s*(?P<name>\S+): (?P<status>.+)$")
EQUIVALENT_LIST = Path(__file__).with_name("equivalent_mutants.txt")


def equivalent_mutants(path: Path = EQUIVALENT_LIST) -> dict[str, str]:
    """`name  # reason` per line; blank lines and lines starting with `#` are comments."""
    listed = {}
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, reason = line.partition("#")
            listed[name.strip()] = reason.strip()
    return listed


def main() -> int:
    listed = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                            capture_output=True, text=True, check=True).stdout
    equivalent = equivalent_mutants()
    by_module: dict[str, Counter] = defaultdict(Counter)
    missed: dict[str, list[str]] = defaultdict(list)
    timed_out: dict[str, list[str]] = defaultdict(list)
    still_equivalent = set()
    for line in listed.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        name, status = match["name"], match["status"].strip()
        module = _module(name)
        if name in equivalent and status in ("survived", "suspicious", "not checked"):
            still_equivalent.add(name)
            status = "equivalent" if status != "not checked" else status
        by_module[module][status] += 1
        if status not in CAUGHT | {"not checked", "equivalent"}:
            missed[module].append(f"{name} ({status})")
        if status == "timeout":
            timed_out[module].append(name)
    if not by_module:
        print("no mutation results: run `mutmut run` first")
        return 1
    print(f"{'module':34} {'mutants':>8} {'caught':>7} {'missed':>7} {'no tests':>9} {'equivalent':>11} "
          f"{'unchecked':>10} {'score':>7}")
    totals: Counter = Counter()
    for module, counts in sorted(by_module.items()):
        totals += counts
        print(_row(module, counts))
    print(_row("all", totals))
    for module, names in sorted(missed.items()):
        print(f"\n{module}: not caught")
        for name in names:
            print(f"  {name}")
    for module, names in sorted(timed_out.items()):
        print(f"\n{module}: stopped at the time limit (counted caught)")
        for name in names:
            print(f"  {name}")
    # Only of the modules this run made mutants of: `make mutate MUTATE=db` leaves the others out.
    stale = sorted(name for name in set(equivalent) - still_equivalent if _module(name) in by_module)
    if stale:
        print(f"\nstale in {EQUIVALENT_LIST.name} (caught, or no such mutant): remove them")
        for name in stale:
            print(f"  {name}")
    return 0


def _module(name: str) -> str:
    return re.split(r"\.x[_ǁ]", name, maxsplit=1)[0]


def _row(module: str, counts: Counter) -> str:
    """The score leaves out mutants not run and the equivalent ones: caught / (run - equivalent)."""
    total = sum(counts.values())
    judged = total - counts["not checked"] - counts["equivalent"]
    caught = sum(counts[s] for s in CAUGHT)
    score = f"{100 * caught / judged:6.1f}%" if judged else "      -"
    missed = judged - caught - counts["no tests"]
    return (f"{module:34} {total:8} {caught:7} {missed:7} {counts['no tests']:9} {counts['equivalent']:11} "
            f"{counts['not checked']:10} {score}")


if __name__ == "__main__":
    sys.exit(main())
