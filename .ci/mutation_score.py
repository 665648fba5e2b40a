"""Print the mutation score per module from `mutmut results --all true` (run after `mutmut run`).

Killed (a test failed) and timeout (the mutant looped) count as caught; missed are those that survived
(or crashed the test run: "suspicious") and "no tests" (no selected test reaches the mutated function); "not checked" (the run was stopped before it)
is left out of the score and shown. The mutants not caught are listed by name, for `mutmut show <name>`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter, defaultdict

CAUGHT = {"killed", "timeout", "caught by type check"}
_LINE = re.compile(r"^\s*(?P<name>\S+): (?P<status>.+)$")


def main() -> int:
    listed = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                            capture_output=True, text=True, check=True).stdout
    by_module: dict[str, Counter] = defaultdict(Counter)
    missed: dict[str, list[str]] = defaultdict(list)
    for line in listed.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        name, status = match["name"], match["status"].strip()
        module = re.split(r"\.x[_ǁ]", name, maxsplit=1)[0]
        by_module[module][status] += 1
        if status not in CAUGHT and status != "not checked":
            missed[module].append(f"{name} ({status})")
    if not by_module:
        print("no mutation results: run `mutmut run` first")
        return 1
    print(f"{'module':34} {'mutants':>8} {'caught':>7} {'missed':>7} {'no tests':>9} {'unchecked':>10} {'score':>7}")
    totals: Counter = Counter()
    for module, counts in sorted(by_module.items()):
        totals += counts
        print(_row(module, counts))
    print(_row("all", totals))
    for module, names in sorted(missed.items()):
        print(f"\n{module}: not caught")
        for name in names:
            print(f"  {name}")
    return 0


def _row(module: str, counts: Counter) -> str:
    total = sum(counts.values())
    checked = total - counts["not checked"]
    caught = sum(counts[s] for s in CAUGHT)
    score = f"{100 * caught / checked:6.1f}%" if checked else "      -"
    missed = checked - caught - counts["no tests"]
    return (f"{module:34} {total:8} {caught:7} {missed:7} {counts['no tests']:9} "
            f"{counts['not checked']:10} {score}")


if __name__ == "__main__":
    sys.exit(main())
