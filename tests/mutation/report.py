"""Mutation score per module from mutmut's results in ``mutants/`` (``make mutation`` prints it).

score = (killed + timed out) / (mutants - equivalent); raw = the same over all mutants. A mutant that
survived or that no test ran counts against both. Equivalent mutants (a change no test can observe, because the behaviour
is the same) are listed with their reason in ``tests/mutation/equivalent.txt`` and left out.

    python -m tests.mutation.report [--min 90]      # exit 1 if a module scores below --min
    python -m tests.mutation.report --survivors     # also list the mutants that were not killed
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EQUIVALENT = Path(__file__).resolve().parent / "equivalent.txt"
KILLED = {1, 3}  # mutmut: tests failed / pytest internal error
TIMEOUT = {36, 24, -24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}


def equivalent_mutants(path: Path = EQUIVALENT) -> dict[str, str]:
    """``mutant name  reason`` lines; ``#`` starts a comment."""
    out = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
        if not line:
            continue
        name, _, reason = line.partition(" ")
        if not reason.strip():
            raise SystemExit(f"{path}: {name}: say why the mutant is equivalent")
        out[name] = reason.strip()
    return out


def results(mutants_dir: Path) -> dict[str, dict[str, int | None]]:
    """module path (billing/money.py) -> {mutant name: exit code}."""
    out = {}
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        module = meta.relative_to(mutants_dir).as_posix()[: -len(".meta")]
        data = json.loads(meta.read_text())
        if data.get("exit_code_by_key"):
            out[module] = data["exit_code_by_key"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation.report", description=__doc__.split("\n")[0])
    parser.add_argument("--mutants", type=Path, default=ROOT / "mutants")
    parser.add_argument("--min", type=float, default=None, help="fail when a module scores below this (percent)")
    parser.add_argument("--survivors", action="store_true", help="list the mutants that were not killed")
    parser.add_argument("--ran-only", action="store_true",
                        help="count only the mutants that were run (a sample: `tests.mutation.run TARGET NAMES`)")
    args = parser.parse_args(argv)

    equivalent = equivalent_mutants()
    by_module = results(args.mutants)
    if not by_module:
        print(f"no mutmut results in {args.mutants}: run `make mutation` first", file=sys.stderr)
        return 2
    print(f"{'module':<28}{'mutants':>8}{'killed':>8}{'timeout':>8}{'survived':>9}{'no test':>8}"
          f"{'equiv.':>7}{'score':>8}{'raw':>8}")
    low, stale, left = [], [], []
    for module, codes in by_module.items():
        if args.ran_only:
            codes = {name: code for name, code in codes.items() if code is not None}
            if not codes:
                continue
        c = Counter()
        for name, code in codes.items():
            if name in equivalent:
                c["equivalent"] += 1
                if code in KILLED | TIMEOUT:
                    stale.append(name)
            elif code in KILLED:
                c["killed"] += 1
            elif code in TIMEOUT:
                c["timeout"] += 1
            elif code in NO_TESTS:
                c["no tests"] += 1
                left.append((name, "no tests"))
            elif code in SURVIVED:
                c["survived"] += 1
                left.append((name, "survived"))
            else:
                c["other"] += 1
                left.append((name, f"exit code {code}"))
        counted = len(codes) - c["equivalent"]
        score = 100.0 * (c["killed"] + c["timeout"]) / counted if counted else 100.0
        raw = 100.0 * (c["killed"] + c["timeout"]) / len(codes)  # equivalent mutants counted as survivors
        print(f"{module:<28}{len(codes):>8}{c['killed']:>8}{c['timeout']:>8}{c['survived']:>9}"
              f"{c['no tests']:>8}{c['equivalent']:>7}{score:>7.1f}%{raw:>7.1f}%")
        if args.min is not None and score < args.min:
            low.append(module)
    if args.survivors:
        for name, why in left:
            print(f"  {why:<9} {name}")
    for name in stale:
        print(f"listed as equivalent but killed now (remove it from {EQUIVALENT.name}): {name}", file=sys.stderr)
    if low:
        print(f"below {args.min}%: {', '.join(low)}", file=sys.stderr)
    return 1 if low or stale else 0


if __name__ == "__main__":
    sys.exit(main())
