"""One mutation run per target, restricted to its modules and the tests that can see them:

    python -m tests.mutation.run push        # activities/push.py + gateways/stripe/*
    python -m tests.mutation.run close       # workflows/close.py
    python -m tests.mutation.run ingest      # activities/ingest.py + services/ingest.py
    python -m tests.mutation.run billing     # billing/* (what `make mutation` runs)

The repository's code and tests are copied to ``.mutation/<target>/`` with ``[tool.mutmut]`` rewritten for
the target, mutmut runs there (``--max-children``, default 1: the machine is shared), and the score per
module is printed by ``tests.mutation.report``. Names after the target run only those mutants (globs)
in the existing copy: how a sample of a slow target is measured. Targets whose tests need Postgres start a database per
mutant: set ``DATABASE_URL`` to a running server (each run creates and drops its own database)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["billing", "models", "repositories", "services", "gateways", "capabilities", "activities",
            "workflows", "workers", "stripe_emulator", "migrations", "api", "tests"]
TARGETS = {
    "billing": (["billing/*"], ["tests/unit"]),
    "push": (["activities/push.py", "gateways/stripe/*"],
             ["tests/unit/test_stripe_gateway_rules.py", "tests/integration/test_stripe_ledger.py",
              "tests/integration/test_stripe_ledger_batch.py", "tests/integration/test_stripe_core.py",
              "tests/integration/test_stripe_customers.py"]),
    "close": (["workflows/close.py"], ["tests/integration/test_close_workflow.py"]),
    "ingest": (["activities/ingest.py", "services/ingest.py"], ["tests/integration/test_ingest.py"]),
}


def mutmut_section(only: list[str], tests: list[str]) -> str:
    q = lambda xs: "[" + ", ".join(f'"{x}"' for x in xs) + "]"  # noqa: E731
    return ("[tool.mutmut]\n"
            f'source_paths = ["billing", "models", "activities", "workflows", "gateways", "services"]\n'
            f"only_mutate = {q(only)}\n"
            f"pytest_add_cli_args_test_selection = {q(tests)}\n"
            'also_copy = ["migrations", "repositories", "capabilities", "workers", "api", "stripe_emulator"]\n'
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]\n')


def prepare(target: str) -> Path:
    only, tests = TARGETS[target]
    work = ROOT / ".mutation" / target
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, work / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pyproject = (ROOT / "pyproject.toml").read_text()
    start = pyproject.index("[tool.mutmut]")
    end = pyproject.find("\n[", start)
    pyproject = pyproject[:start] + mutmut_section(only, tests) + (pyproject[end + 1:] if end >= 0 else "")
    (work / "pyproject.toml").write_text(pyproject)
    return work


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.mutation.run", description=__doc__.split("\n")[0])
    ap.add_argument("target", choices=sorted(TARGETS))
    ap.add_argument("mutants", nargs="*", help="only these mutants (mutmut's name globs, e.g. "
                    "'gateways.stripe.core*'), in the existing run's copy and stats (a sample of a slow target)")
    ap.add_argument("--max-children", type=int, default=1)
    args = ap.parse_args(argv)
    work = ROOT / ".mutation" / args.target
    if not (args.mutants and (work / "mutants").is_dir()):
        work = prepare(args.target)
    mutmut = Path(sys.executable).parent / "mutmut"
    with open(work / "mutants.log", "a") as log:
        rc = subprocess.call([str(mutmut), "run", "--max-children", str(args.max_children), *args.mutants],
                             cwd=work, stdout=log, stderr=subprocess.STDOUT)
    if rc != 0:
        print((work / "mutants.log").read_text()[-3000:], file=sys.stderr)
    report = [sys.executable, "-m", "tests.mutation.report", "--mutants", str(work / "mutants"), "--survivors"]
    return subprocess.call(report + (["--ran-only"] if args.mutants else []), cwd=ROOT) or rc


if __name__ == "__main__":
    sys.exit(main())
